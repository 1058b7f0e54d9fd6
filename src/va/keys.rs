//! Where virtual accounts live in [`Cf::VirtualAccounts`](crate::store::Cf::VirtualAccounts):
//! - `a/BANK/ACCOUNT` → [`PoolAccount`](super::PoolAccount): whose pool it is in and the open
//!   order it carries (an account number is unique within its bank: that is what field 103
//!   names).
//! - `p/PARTNER/BANK/REGION/ACCOUNT` → (): a pool's members (retired accounts leave it).
//! - `o/ORDER` → [`Order`](super::Order) (order ids are unique across partners).
//! - `x/EXPIRES(16 hex ms)/ORDER` → (): open orders by expiry, for the sweep.
//! - `d/LISTENER/KEY` → [`Seen`](super::Seen): each deposit message's outcome, so a
//!   retransmission gets the same answer and pays nothing twice.
//! - `v/LISTENER/KEY` → the time: the bank reversed that deposit.
//! - `t/AT(16 hex ms)/d|v/LISTENER/KEY` → (): when a `d/` or `v/` key was first written.
//! - `m/AT(16 hex ms)-KEY` → [`Mismatch`](super::Mismatch): advices that matched no open order.
//!
//! Indexes, so that what a partner can ask for costs what it returns, not what was ever kept
//! (written with the records they index; `z/indexed` says a store written before them has
//! been indexed, see `indexes.rs`):
//! - `c/PARTNER/CREATED(16 hex ms)/ORDER` → (): a partner's orders by creation time (the
//!   collection report reads its period only).
//! - `n/PARTNER/AT(16 hex ms)-KEY` → (): a partner's mismatches (`m/` has them all).
//! - `f/PARTNER/BANK/REGION/ACCOUNT` → (): a pool's free accounts (an assignment takes the
//!   first; it reads the account to be sure).

pub(super) fn acct_key(bank: &str, account: &str) -> Vec<u8> {
    format!("a/{bank}/{account}").into_bytes()
}
pub(super) fn pool_prefix(partner: &str, bank: &str, region: &str) -> String {
    format!("p/{partner}/{bank}/{region}/")
}
pub(super) fn member_key(partner: &str, bank: &str, region: &str, account: &str) -> Vec<u8> {
    format!("{}{account}", pool_prefix(partner, bank, region)).into_bytes()
}
/// Where the orders start.
pub(super) const ORDERS: &[u8] = b"o/";
pub(super) fn order_key(order: &str) -> Vec<u8> {
    format!("o/{order}").into_bytes()
}
pub(super) fn expiry_key(expires_ms: i64, order: &str) -> Vec<u8> {
    format!("x/{:016x}/{order}", expires_ms.max(0)).into_bytes()
}
/// An `x/` key's expiry and order.
pub(super) fn parse_expiry_key(key: &[u8]) -> Option<(i64, String)> {
    let text = std::str::from_utf8(key.strip_prefix(b"x/")?).ok()?;
    let (at, order) = text.split_once('/')?;
    Some((i64::from_str_radix(at, 16).ok()?, order.to_string()))
}
pub(super) fn seen_key(listener: &str, key: &str) -> Vec<u8> {
    format!("d/{listener}/{key}").into_bytes()
}
pub(super) fn reversed_key(listener: &str, key: &str) -> Vec<u8> {
    format!("v/{listener}/{key}").into_bytes()
}
/// When a deposit's outcome (`d/`) or reversal marker (`v/`) was first written, for pruning
/// them once past the duplicate window: `t/AT(16 hex ms)/d|v/LISTENER/KEY`.
pub(super) fn seen_time_key(at_ms: i64, key: &[u8]) -> Vec<u8> {
    let mut k = format!("t/{:016x}/", at_ms.max(0)).into_bytes();
    k.extend_from_slice(key);
    k
}
/// Where the mismatches start.
pub(super) const MISMATCHES: &[u8] = b"m/";
pub(super) fn mismatch_key(id: &str) -> Vec<u8> {
    format!("m/{id}").into_bytes()
}
pub(super) fn order_time_key(partner: &str, created_ms: i64, order: &str) -> Vec<u8> {
    format!("c/{partner}/{:016x}/{order}", created_ms.max(0)).into_bytes()
}
/// A partner's orders from `created_ms` on.
pub(super) fn order_times_from(partner: &str, created_ms: i64) -> (String, Vec<u8>) {
    let prefix = format!("c/{partner}/");
    let start = format!("{prefix}{:016x}", created_ms.max(0)).into_bytes();
    (prefix, start)
}
/// Where a partner's mismatches start.
pub(super) fn partner_mismatches(partner: &str) -> String {
    format!("n/{partner}/")
}
pub(super) fn partner_mismatch_key(partner: &str, id: &str) -> Vec<u8> {
    format!("n/{partner}/{id}").into_bytes()
}
pub(super) fn free_prefix(partner: &str, bank: &str, region: &str) -> String {
    format!("f/{partner}/{bank}/{region}/")
}
pub(super) fn free_key(partner: &str, bank: &str, region: &str, account: &str) -> Vec<u8> {
    format!("{}{account}", free_prefix(partner, bank, region)).into_bytes()
}
/// The indexes above hold every record (written once, by the first start that has them).
pub(super) const INDEXED: &[u8] = b"z/indexed";
