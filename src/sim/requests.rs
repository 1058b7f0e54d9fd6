//! How a simulator answers (SPEC §6): inquiries, debits and credits (issuer), authorizations
//! and refunds (acquirer), completions and reversals, each request applied with its account
//! held, and a retransmitted leg answered as it was the first time.

use std::sync::Mutex;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::{Behaviour, SimKind, Simulator};
use crate::iso8583::{de, response, AdditionalAmount, Message, OwnedMessage, ResponseCode};

/// A money movement the simulator recorded, for reversals and duplicate requests.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(super) struct Leg {
    /// Issuer: the account; acquirer: SHA-256 of the card number.
    pub(super) target: String,
    /// Signed effect on the target: negative for a debit.
    pub(super) delta: i64,
    pub(super) reversed: bool,
    /// The answer given, replayed for a retransmission.
    response_code: String,
    auth_code: String,
}

impl Leg {
    /// Stored like the switch's records (a version byte, then postcard); simulator data from
    /// earlier versions holds JSON.
    fn to_bytes(&self) -> Vec<u8> {
        crate::journal::stored::to_bytes(self)
    }

    pub(super) fn from_bytes(raw: &[u8]) -> Option<Leg> {
        crate::journal::stored::from_bytes(raw)
            .unwrap_or_else(|| serde_json::from_slice(raw).map_err(|e| e.to_string()))
            .ok()
    }
}

/// What a request produced.
pub(super) struct Answered {
    /// None for a request that cannot be decoded.
    pub(super) message: Option<OwnedMessage>,
    /// How the request's account or card is treated (delay, silence, twice).
    pub(super) behaviour: Behaviour,
    /// A money request (debit, credit, authorization, completion, reversal): its answer,
    /// whatever it says, leaves only once the records it rests on are in the log.
    /// Inquiries and network management read nothing that must survive.
    pub(super) changes_money: bool,
}

impl Simulator {
    pub(super) fn answer(&self, request: &[u8]) -> Answered {
        let msg = match self.spec.decode(request) {
            Ok(m) => m,
            Err(e) => {
                tracing::warn!(simulator = %self.name, error = %e, "undecodable request");
                return Answered {
                    message: None,
                    behaviour: Behaviour::default(),
                    changes_money: false,
                };
            }
        };
        let mut resp = response::reply(&msg, &response::HOST_ECHOED);
        let target = match self.kind {
            SimKind::Issuer => msg.str(102).map(|s| s.into_owned()).unwrap_or_default(),
            SimKind::Acquirer => msg
                .pan()
                .ok()
                .flatten()
                .map(|p| p.expose().to_string())
                .unwrap_or_default(),
        };
        let behaviour = self
            .behaviours
            .get(&target)
            .filter(|b| b.applies_to(&msg))
            .cloned()
            .unwrap_or_default();
        let code = match msg.mti().class() {
            8 => code(ResponseCode::Approved),
            // An advice naming an authorization completes it; a refund's advice (20xxxx) is
            // the refund itself, repeated.
            2 if msg.mti().as_bytes()[2] == b'2' && msg.has(90) && !is_refund(&msg) => {
                self.completion(&msg)
            }
            1 | 2 => self.money(&msg, &target, &behaviour, &mut resp),
            4 => self.reversal(&msg, &mut resp),
            5 => self.reconcile(&msg, &mut resp),
            _ => code(ResponseCode::InvalidTransaction),
        };
        resp.set(de::RESPONSE_CODE, code.as_bytes());
        Answered {
            message: Some(resp),
            behaviour,
            changes_money: changes_money(&msg),
        }
    }

    /// Inquiry, debit, credit or (acquirer) authorization.
    fn money(
        &self,
        msg: &Message<'_>,
        target: &str,
        b: &Behaviour,
        resp: &mut OwnedMessage,
    ) -> String {
        let pc = msg.transaction_type().unwrap_or(99);
        let amount = msg.amount().unwrap_or(0) as i64; // ok: 12 digits fit
        let target_key = match self.kind {
            SimKind::Issuer => target.to_string(),
            SimKind::Acquirer => card_target(target),
        };
        // The account is held until its leg is written: requests on one account, and
        // retransmissions of one leg (which name the same account), are applied one at a
        // time; requests on other accounts go on meanwhile.
        let account = match self.kind {
            SimKind::Issuer => match self.account(&target_key) {
                Some(a) => a,
                None => return code(ResponseCode::InvalidCard),
            },
            SimKind::Acquirer => self.account_or_new(&target_key),
        };
        let mut account = lock(&account);
        let key = leg_key(msg);
        if let Some(leg) = self.leg(&key) {
            // A retransmission: the same answer, no second effect.
            resp.set(38, leg.auth_code.as_bytes());
            return leg.response_code;
        }
        // A leg sent ahead (field 37 an identity) is indexed by it, for a blind reversal;
        // held from the check to the write, so a blind reversal cannot slip in between.
        let identity = msg
            .str(de::RRN)
            .map(|r| r.into_owned())
            .filter(|r| crate::switch::legs_ahead::is_identity(r));
        let _identity_held = identity.as_deref().map(|r| self.identity_lock(r));
        if let Some(r) = &identity {
            match self.db.get(identity_key(r)) {
                // Reversed before it came (its sender lost it): it must not take money now.
                Ok(Some(v)) if v == UNSEEN => return code(ResponseCode::InvalidTransaction),
                Ok(_) => {}
                Err(_) => return code(ResponseCode::SystemMalfunction),
            }
        }
        let inquiry = pc == INQUIRY;
        if let Some(code) = &b.decline {
            let applies = (!inquiry || b.inquiries)
                && b.decline_above.is_none_or(|limit| amount as u64 > limit);
            if applies {
                return code.clone();
            }
        }
        let delta = match self.kind {
            SimKind::Issuer => {
                if inquiry {
                    set_balance(resp, msg, *account);
                    return code(ResponseCode::Approved);
                }
                let delta = match pc {
                    0 => -amount,
                    20 | 21 => amount,
                    _ => return code(ResponseCode::InvalidTransaction),
                };
                if *account + delta < 0 {
                    return code(ResponseCode::InsufficientFunds);
                }
                delta
            }
            SimKind::Acquirer => {
                if self.approve_limit.is_some_and(|l| amount as u64 > l) {
                    return code(ResponseCode::InsufficientFunds);
                }
                if pc == 20 {
                    -amount
                } else {
                    amount
                }
            }
        };
        let auth = format!(
            "{:06}",
            self.auth_counter
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed)
                % 1_000_000
        );
        let refunded = match self.refund_room(msg, &target_key, amount) {
            Ok(r) => r,
            Err(code) => return code,
        };
        let after = *account + delta;
        let leg = Leg {
            target: target_key.clone(),
            delta,
            reversed: false,
            response_code: code(ResponseCode::Approved),
            auth_code: auth.clone(),
        };
        let mut batch = rocksdb::WriteBatch::default();
        batch.put(account_key(&target_key), after.to_be_bytes());
        batch.put(&key, leg.to_bytes());
        let tag = if self.takes(delta) { "D" } else { "C" };
        batch.put(event_key(msg, &key, tag), amount.to_be_bytes());
        if let Some((original, total)) = refunded {
            batch.put(refunded_key(&original), total.to_be_bytes());
            batch.put(refund_leg_key(&key), original.as_bytes());
        }
        if let Some(r) = &identity {
            batch.put(identity_key(r), key.as_bytes());
        }
        if self.db.write(batch).is_err() {
            return code(ResponseCode::SystemMalfunction);
        }
        *account = after;
        resp.set(38, auth.as_bytes());
        if self.kind == SimKind::Issuer {
            set_balance(resp, msg, after);
        }
        code(ResponseCode::Approved)
    }

    /// A refund (20xxxx) naming the leg it refunds in field 90, as a real host checks it:
    /// the leg must be this target's, approved and not reversed (12; unknown 25), and refunds
    /// of it together never above what it moved (13). Returns the leg's key and its refunded
    /// total with this one, to be written with the refund; `None` for a credit naming no leg.
    fn refund_room(
        &self,
        msg: &Message<'_>,
        target: &str,
        amount: i64,
    ) -> Result<Option<(String, i64)>, String> {
        if !is_refund(msg) || !msg.has(90) {
            return Ok(None);
        }
        let original = original_leg_key(msg).ok_or_else(|| code(ResponseCode::FormatError))?;
        let leg = self
            .leg(&original)
            .ok_or_else(|| code(ResponseCode::OriginalNotFound))?;
        let approved = leg.response_code == ResponseCode::Approved.as_str();
        if leg.target != target || leg.reversed || !approved {
            return Err(code(ResponseCode::InvalidTransaction));
        }
        let before = self.refunded(&original)?;
        let total = before.saturating_add(amount);
        if total > leg.delta.saturating_abs() {
            return Err(code(ResponseCode::InvalidAmount));
        }
        Ok(Some((original, total)))
    }

    /// What refunds gave back of a leg so far.
    fn refunded(&self, original: &str) -> Result<i64, String> {
        match self.db.get(refunded_key(original)) {
            Ok(Some(raw)) => Ok(raw.first_chunk::<8>().map_or(0, |b| i64::from_be_bytes(*b))),
            Ok(None) => Ok(0),
            Err(_) => Err(code(ResponseCode::SystemMalfunction)),
        }
    }

    /// 0220/0221: take the amount of field 4 for the authorization named in field 90 and
    /// give back the rest; the leg's effect becomes the completed amount (what a later
    /// reversal undoes). Unknown: 25; reversed or declined: 12; more than authorized: 13;
    /// already completed: 00 again, nothing moved.
    fn completion(&self, msg: &Message<'_>) -> String {
        let Some(key) = original_leg_key(msg) else {
            return code(ResponseCode::FormatError);
        };
        let Some(target) = self.leg(&key).map(|l| l.target) else {
            return code(ResponseCode::OriginalNotFound);
        };
        let account = self.account_or_new(&target);
        let mut account = lock(&account);
        let Some(mut leg) = self.leg(&key) else {
            return code(ResponseCode::SystemMalfunction);
        };
        let done = format!("done/{key}");
        match self.db.get(&done) {
            Ok(Some(_)) => return code(ResponseCode::Approved),
            Ok(None) => {}
            Err(_) => return code(ResponseCode::SystemMalfunction),
        }
        if leg.reversed || leg.response_code != ResponseCode::Approved.as_str() {
            return code(ResponseCode::InvalidTransaction);
        }
        let completed = msg.amount().unwrap_or(0) as i64; // ok: 12 digits fit
        if completed <= 0 || completed > leg.delta.abs() {
            return code(ResponseCode::InvalidAmount);
        }
        let delta = completed * leg.delta.signum();
        let after = *account - leg.delta + delta;
        let given_back = leg.delta.abs() - completed;
        leg.delta = delta;
        let mut batch = rocksdb::WriteBatch::default();
        if given_back > 0 {
            // A completion for less gives the rest back: a partial reversal in the day's totals.
            batch.put(event_key(msg, &key, "p"), given_back.to_be_bytes());
        }
        batch.put(account_key(&leg.target), after.to_be_bytes());
        batch.put(&key, leg.to_bytes());
        batch.put(&done, completed.to_be_bytes());
        if self.db.write(batch).is_err() {
            return code(ResponseCode::SystemMalfunction);
        }
        *account = after;
        code(ResponseCode::Approved)
    }

    /// 0400/0420/0421: undo the leg named in field 90. Unknown: 25; already reversed: 00.
    /// A blind reversal (field 90's STAN and time zero) names the leg by its identity in
    /// field 37 alone; its answer says in fields 3 and 4 what the leg was.
    fn reversal(&self, msg: &Message<'_>, resp: &mut OwnedMessage) -> String {
        let key = match blind_identity(msg) {
            Some(identity) => match self.blind_leg(&identity) {
                Ok(Some(key)) => key,
                Ok(None) => return code(ResponseCode::OriginalNotFound),
                Err(()) => return code(ResponseCode::SystemMalfunction),
            },
            None => match original_leg_key(msg) {
                Some(key) => key,
                None => return code(ResponseCode::FormatError),
            },
        };
        let Some(target) = self.leg(&key).map(|l| l.target) else {
            return code(ResponseCode::OriginalNotFound);
        };
        // Read the leg again with its account held: a concurrent repeat of this reversal
        // finds it reversed.
        let account = self.account_or_new(&target);
        let mut account = lock(&account);
        let Some(mut leg) = self.leg(&key) else {
            return code(ResponseCode::SystemMalfunction);
        };
        if blind_identity(msg).is_some() {
            let pc: &[u8] = if self.takes(leg.delta) {
                b"000000"
            } else {
                b"200000"
            };
            resp.set(de::PROCESSING_CODE, pc);
            resp.set_number(de::AMOUNT, leg.delta.unsigned_abs(), 12);
        }
        if leg.reversed || leg.response_code != ResponseCode::Approved.as_str() {
            return code(ResponseCode::Approved);
        }
        leg.reversed = true;
        let after = *account - leg.delta;
        let mut batch = rocksdb::WriteBatch::default();
        let tag = if self.takes(leg.delta) { "d" } else { "c" };
        batch.put(event_key(msg, &key, tag), leg.delta.abs().to_be_bytes());
        batch.put(account_key(&leg.target), after.to_be_bytes());
        batch.put(&key, leg.to_bytes());
        // A reversed refund may be refunded again.
        if let Ok(Some(original)) = self.db.get(refund_leg_key(&key)) {
            let original = String::from_utf8_lossy(&original).into_owned();
            let Ok(before) = self.refunded(&original) else {
                return code(ResponseCode::SystemMalfunction);
            };
            let left = before.saturating_sub(leg.delta.saturating_abs()).max(0);
            batch.put(refunded_key(&original), left.to_be_bytes());
        }
        if self.db.write(batch).is_err() {
            return code(ResponseCode::SystemMalfunction);
        }
        *account = after;
        code(ResponseCode::Approved)
    }

    /// Does a leg with this effect take the cardholder's money? An issuer's debit lowers the
    /// account; an acquirer's charge raises what the card owes.
    fn takes(&self, delta: i64) -> bool {
        match self.kind {
            SimKind::Issuer => delta < 0,
            SimKind::Acquirer => delta > 0,
        }
    }

    /// 0500: the switch's totals for a business date (field 15) against this host's own,
    /// summed from the events it wrote with each change. 00 when they agree; 95 (reconcile
    /// error) when not. Either way the answer carries this host's figures.
    fn reconcile(&self, msg: &Message<'_>, resp: &mut OwnedMessage) -> String {
        let date = msg.str(de::SETTLEMENT_DATE).unwrap_or_default();
        let prefix = format!("ev/{}/", date.trim());
        let mut ours = crate::books::Totals::default();
        for item in self.db.prefix_iterator(prefix.as_bytes()) {
            let Ok((k, v)) = item else {
                return code(ResponseCode::SystemMalfunction);
            };
            if !k.starts_with(prefix.as_bytes()) {
                break;
            }
            let amount = v
                .first_chunk::<8>()
                .map_or(0, |b| i64::from_be_bytes(*b).unsigned_abs());
            let kind = match k.last() {
                Some(b'D') => crate::books::EventKind::Debit,
                Some(b'C') => crate::books::EventKind::Credit,
                Some(b'd' | b'p') => crate::books::EventKind::DebitReversal,
                Some(b'c') => crate::books::EventKind::CreditReversal,
                _ => continue,
            };
            ours.add(kind, amount);
        }
        let skew = self.skew.load(std::sync::atomic::Ordering::Relaxed);
        ours.debits_amount = ours.debits_amount.saturating_add_signed(skew);
        ours.set_fields(resp);
        resp.set(de::SETTLEMENT_DATE, date.trim().as_bytes());
        let theirs = crate::books::Totals::from_fields(|f| msg.str(f).map(|v| v.into_owned()));
        if theirs == Some(ours) {
            code(ResponseCode::Approved)
        } else {
            RECONCILE_ERROR.to_string()
        }
    }

    /// The lock of an identity's stripe.
    fn identity_lock(&self, identity: &str) -> std::sync::MutexGuard<'_, ()> {
        let stripe = identity.bytes().fold(0usize, |h, b| {
            h.wrapping_mul(31).wrapping_add(usize::from(b))
        });
        self.identity_locks[stripe % self.identity_locks.len()]
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// The leg a blind reversal names by its identity, if this host ever took it. One it
    /// never saw is remembered as reversed unseen, so that the leg, should it still come
    /// (its sender lost it), is declined.
    fn blind_leg(&self, identity: &str) -> Result<Option<String>, ()> {
        let _held = self.identity_lock(identity);
        match self.db.get(identity_key(identity)) {
            Ok(Some(v)) if v == UNSEEN => Ok(None),
            Ok(Some(v)) => Ok(Some(String::from_utf8_lossy(&v).into_owned())),
            Ok(None) => {
                self.db
                    .put(identity_key(identity), UNSEEN)
                    .map_err(|_| ())?;
                Ok(None)
            }
            Err(_) => Err(()),
        }
    }

    pub(super) fn leg(&self, key: &str) -> Option<Leg> {
        self.db
            .get(key)
            .ok()
            .flatten()
            .and_then(|raw| Leg::from_bytes(&raw))
    }
}

/// Whether a request moves money (or repeats a request that did): everything but network
/// management and balance inquiries.
fn changes_money(msg: &Message<'_>) -> bool {
    match msg.mti().class() {
        1 | 2 => msg.transaction_type() != Some(INQUIRY),
        4 => true,
        _ => false,
    }
}

/// A blind reversal's identity: field 37, when field 90 names no STAN and no time.
fn blind_identity(msg: &Message<'_>) -> Option<String> {
    let od = msg.original_data().ok().flatten()?;
    if od.stan != 0 || od.transmission_time != 0 {
        return None;
    }
    msg.str(de::RRN)
        .map(|r| r.into_owned())
        .filter(|r| crate::switch::legs_ahead::is_identity(r))
}

/// What an identity reversed before its leg came is remembered as.
const UNSEEN: &[u8] = b"-";

fn identity_key(identity: &str) -> Vec<u8> {
    format!("id/{identity}").into_bytes()
}

/// ISO 8583:1987 response code 95: reconcile error.
const RECONCILE_ERROR: &str = "95";

/// A money event of the business date the request carries (field 15, MMDD): `D`/`C` a debit
/// or credit, `d`/`c` their reversals, `p` what a completion gave back. Written with the
/// change itself, so the day's totals are what was applied.
fn event_key(msg: &Message<'_>, leg: &str, tag: &str) -> Vec<u8> {
    let date = msg.str(de::SETTLEMENT_DATE).unwrap_or_default();
    format!("ev/{}/{leg}/{tag}", date.trim()).into_bytes()
}

/// Processing code 31xxxx: balance inquiry.
const INQUIRY: u8 = 31;

/// Processing code 20xxxx: a refund (credit back to the card or account).
fn is_refund(msg: &Message<'_>) -> bool {
    msg.transaction_type() == Some(20)
}

fn refunded_key(original: &str) -> Vec<u8> {
    format!("refunded/{original}").into_bytes()
}

/// A refund leg → the leg it refunded.
fn refund_leg_key(refund: &str) -> Vec<u8> {
    format!("refund-of/{refund}").into_bytes()
}

/// Field 54 with the available balance (amount type 02) in the account's units.
fn set_balance(resp: &mut OwnedMessage, msg: &Message<'_>, balance: i64) {
    let block = AdditionalAmount {
        account_type: *b"60",
        amount_type: *b"02",
        currency: msg.currency().unwrap_or(410),
        amount: balance,
    };
    resp.set(54, &AdditionalAmount::encode_all(&[block]));
}

/// A balance's lock. A thread that panicked holding it left the balance as it was before its
/// write (the balance is set only after the database write succeeded), so it is still right.
pub(super) fn lock(account: &Mutex<i64>) -> std::sync::MutexGuard<'_, i64> {
    account
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// The key of the leg a reversal or completion names in field 90.
fn original_leg_key(msg: &Message<'_>) -> Option<String> {
    let od = msg.original_data().ok().flatten()?;
    Some(leg_key_of(msg, od.stan.into(), od.transmission_time))
}

pub(super) fn account_key(id: &str) -> Vec<u8> {
    format!("acct/{id}").into_bytes()
}

/// The acquirer keeps card totals under a hash of the card number, never the number.
pub(super) fn card_target(pan: &str) -> String {
    let digest = Sha256::digest(pan.as_bytes());
    format!("card-{}", hex::encode(&digest[..12]))
}

fn leg_key(msg: &Message<'_>) -> String {
    leg_key_of(
        msg,
        msg.stan().unwrap_or(0).into(),
        msg.transmission_time().unwrap_or(0),
    )
}

/// A leg is known by its terminal, STAN and transmission time.
fn leg_key_of(msg: &Message<'_>, stan: u64, transmission_time: u64) -> String {
    format!(
        "leg/{}/{stan:06}/{transmission_time:010}",
        msg.str(41).unwrap_or_default().trim(),
    )
}

/// A response code as the simulator keeps it (a configured decline may be any code).
fn code(c: ResponseCode) -> String {
    c.as_str().to_string()
}
