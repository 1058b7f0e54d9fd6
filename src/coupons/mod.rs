//! Mobile coupons (SPEC F18): an operator issues a coupon for a pre-registered customer and
//! card; the customer's phone shows its token as a barcode; a merchant terminal sends the
//! token in tag `CP` instead of a card, and the switch charges the card the amount less the
//! discount (`switch/coupon.rs`).
//!
//! - [`token`]: the sealed, authenticated token text (the card lives only in there).
//! - Here: the coupon's record, keyed by its id in [`Cf::Coupons`] (`c/ID`): its terms
//!   without the card (masked, and the card's keyed hash), its approval number, and which
//!   purchase holds its single use; the purchases that used a coupon (`u/TXN`: coupon,
//!   gross, discount, charged, merchant), what reversals, refunds and the settlement report
//!   read. Every change is a journaled step: the issue on its own (synced before the token is
//!   handed out), a use with the answer that approves it, a use given back with the reversal
//!   or refund that gives it back.

pub mod token;

use std::collections::HashSet;
use std::sync::{Arc, Mutex};

use chrono::NaiveDate;
use serde::{Deserialize, Serialize};

use crate::clock::Clock;
use crate::config::Config;
use crate::directory::CardKey;
use crate::iso8583::Pan;
use crate::journal::{Entry, EntryKind, Journal, Step};
use crate::store::Cf;

pub use token::Terms;

/// Writes that go with another step (column family, key, value).
pub type Writes = Vec<(Cf, Vec<u8>, Vec<u8>)>;

/// Longest registration and merchant id accepted at issue (what fits a report line).
const MAX_TEXT: usize = 40;

/// A coupon as stored: no card number, only its masked form and keyed hash.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Coupon {
    pub id: String,
    pub registration: String,
    /// First 6 and last 4 digits.
    pub card: String,
    /// HMAC-SHA-256 of the card number under the card key (hex): what a look-up by card
    /// would match, never the number.
    pub card_ref: String,
    pub discount: u64,
    /// Last day of validity, `YYYY-MM-DD`.
    pub expires: String,
    pub merchant: Option<String>,
    /// The coupon's approval number (printed with it).
    pub auth_code: String,
    /// The key version its token was sealed under.
    pub key_version: u8,
    pub issued_at_ms: i64,
    /// The purchase (transaction key) holding the coupon's single use, if used.
    pub used_by: Option<String>,
    /// The follow-up (reversal or refund) that last gave the use back.
    pub restored_by: Option<String>,
    /// What happened to it, oldest first.
    pub history: Vec<CouponEvent>,
    /// The partner that issued it (`None`: an operator); a partner sees only its own.
    #[serde(default)]
    pub owner: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CouponEvent {
    pub at_ms: i64,
    /// `issued`, `used`, `restored`, `used again` (a refund that had restored it reversed).
    pub what: String,
    /// The transaction that did it.
    pub txn: String,
}

/// A purchase paid with a coupon (`u/TXN`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CouponUse {
    pub coupon: String,
    /// The amount the terminal asked (field 4 of the request).
    pub gross: u64,
    pub discount: u64,
    /// What the card was charged (field 4 of the answer).
    pub charged: u64,
    pub merchant: String,
}

/// What an operator asks for.
pub struct IssueRequest {
    pub registration: String,
    pub card: Pan,
    pub discount: u64,
    pub expires: NaiveDate,
    pub merchant: Option<String>,
    pub owner: Option<String>,
}

/// An issued coupon and its token.
pub struct Issued {
    pub coupon: Coupon,
    pub token: String,
}

/// Why a coupon was not issued.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum IssueError {
    /// The request is wrong (the message names the field).
    Invalid(String),
    /// The switch could not seal or journal it.
    Storage(String),
}

/// Why a token is not honoured, and the code the terminal gets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refused {
    /// Forged, altered, another switch's, or no record of it: 14.
    Invalid,
    /// Past its last day: 54.
    Expired,
    /// Restricted to another merchant: 57.
    OtherMerchant,
}

pub struct Coupons {
    journal: Arc<Journal>,
    keys: token::Keys,
    card_key: CardKey,
    clock: Arc<dyn Clock>,
    time_zone: chrono_tz::Tz,
    /// Coupons being used by a purchase in flight: a second one at the same time is refused
    /// (05) rather than both sent to the acquirer.
    in_use: Arc<Mutex<HashSet<String>>>,
}

/// A coupon held by one purchase until its transaction is done (answer journaled or not).
pub struct Claim {
    id: String,
    in_use: Arc<Mutex<HashSet<String>>>,
}

impl Drop for Claim {
    fn drop(&mut self) {
        let mut set = self.in_use.lock().unwrap_or_else(|p| p.into_inner());
        set.remove(&self.id);
    }
}

impl Coupons {
    pub fn new(journal: Arc<Journal>, clock: Arc<dyn Clock>, config: &Config) -> Coupons {
        Coupons {
            journal,
            keys: token::Keys::new(&config.coupons),
            card_key: CardKey::new(config.card_key.expose().to_vec()),
            clock,
            time_zone: config.books.time_zone,
            in_use: Arc::default(),
        }
    }

    /// Today in the books' time zone: what a coupon's last day is compared with.
    pub fn today(&self) -> NaiveDate {
        self.clock.now().with_timezone(&self.time_zone).date_naive()
    }

    /// Issue a coupon: its record is journaled (synced) before the token is returned, so a
    /// token in a customer's hands always has its record.
    pub async fn issue(&self, req: IssueRequest) -> Result<Issued, IssueError> {
        use IssueError::Invalid;
        let registration = req.registration.trim().to_string();
        if registration.is_empty() || registration.len() > MAX_TEXT {
            return Err(Invalid(format!("registration: 1 to {MAX_TEXT} characters")));
        }
        if !registration.bytes().all(|b| b.is_ascii_graphic()) {
            return Err(Invalid(
                "registration: printable characters without spaces".into(),
            ));
        }
        if req.discount == 0 {
            return Err(Invalid("discount: above zero".into()));
        }
        if req.expires < self.today() {
            return Err(Invalid("expires: already past".into()));
        }
        let merchant = match req.merchant.as_deref().map(str::trim) {
            None | Some("") => None,
            Some(m) if m.len() <= 15 && m.bytes().all(|b| b.is_ascii_graphic()) => {
                Some(m.to_string())
            }
            Some(_) => {
                return Err(Invalid(
                    "merchant: a merchant id (field 42), 1 to 15 characters".into(),
                ))
            }
        };
        let id_bytes: [u8; 10] = rand::random();
        let id = data_encoding::BASE32_NOPAD.encode(&id_bytes);
        let terms = Terms {
            id: id.clone(),
            registration: registration.clone(),
            card: req.card.expose().to_string(),
            discount: req.discount,
            expires: crate::books::day::iso(req.expires),
            merchant: merchant.clone(),
        };
        let token = self.keys.seal(&terms).map_err(IssueError::Storage)?;
        let now = self.clock.now_ms();
        let coupon = Coupon {
            id: id.clone(),
            registration,
            card: req.card.masked(),
            card_ref: hex::encode(self.card_key.card_ref(&req.card)),
            discount: req.discount,
            expires: terms.expires.clone(),
            merchant,
            auth_code: format!("{:06}", rand::random::<u32>() % 1_000_000),
            key_version: self.keys.current_version(),
            issued_at_ms: now,
            used_by: None,
            restored_by: None,
            history: vec![CouponEvent {
                at_ms: now,
                what: "issued".into(),
                txn: String::new(),
            }],
            owner: req.owner,
        };
        let mut step = Step::new();
        step.put(Cf::Coupons, record_key(&id), to_bytes(&coupon));
        step.append(Entry::new(
            EntryKind::Txn,
            "",
            "coupons",
            format!(
                "coupon {id} issued: card {}, discount {}, expires {}",
                coupon.card, coupon.discount, coupon.expires
            ),
        ));
        step.synced();
        self.journal
            .commit(step)
            .await
            .map_err(|e| IssueError::Storage(e.to_string()))?;
        Ok(Issued { coupon, token })
    }

    /// A coupon's record.
    pub fn get(&self, id: &str) -> Result<Option<Coupon>, String> {
        get(&self.journal, id)
    }

    /// The terms of a token presented by a terminal, if the switch honours it today at this
    /// merchant (its single use is checked apart, under a [`Claim`]).
    pub fn verify(&self, text: &str, merchant: &str) -> Result<Terms, Refused> {
        let terms = self.keys.open(text).map_err(|why| {
            tracing::info!(why, "coupon token refused");
            Refused::Invalid
        })?;
        let last_day = crate::books::day::parse_iso(&terms.expires).ok_or(Refused::Invalid)?;
        if self.today() > last_day {
            return Err(Refused::Expired);
        }
        if let Some(only) = &terms.merchant {
            if only.trim() != merchant.trim() {
                return Err(Refused::OtherMerchant);
            }
        }
        Ok(terms)
    }

    /// Hold coupon `id` for one purchase; `None` when another purchase holds it now.
    pub fn claim(&self, id: &str) -> Option<Claim> {
        let mut set = self.in_use.lock().unwrap_or_else(|p| p.into_inner());
        set.insert(id.to_string()).then(|| Claim {
            id: id.to_string(),
            in_use: self.in_use.clone(),
        })
    }

    /// The writes that record `coupon` used by purchase `txn`: they go with the step that
    /// journals its approving answer, and with no other.
    pub fn use_writes(&self, coupon: &Coupon, txn: &str, paid: &CouponUse) -> Writes {
        let mut c = coupon.clone();
        c.used_by = Some(txn.to_string());
        c.history.push(CouponEvent {
            at_ms: self.clock.now_ms(),
            what: "used".into(),
            txn: txn.to_string(),
        });
        vec![
            (Cf::Coupons, record_key(&c.id), to_bytes(&c)),
            (Cf::Coupons, use_key(txn), to_bytes(paid)),
        ]
    }
}

fn record_key(id: &str) -> Vec<u8> {
    format!("c/{id}").into_bytes()
}

fn use_key(txn: &str) -> Vec<u8> {
    format!("u/{txn}").into_bytes()
}

fn to_bytes<T: Serialize>(value: &T) -> Vec<u8> {
    // Plain structs of strings and numbers: serialising cannot fail.
    serde_json::to_vec(value).unwrap_or_default()
}

/// Coupon `id`'s record.
pub fn get(journal: &Journal, id: &str) -> Result<Option<Coupon>, String> {
    journal
        .get(Cf::Coupons, &record_key(id))?
        .map(|raw| serde_json::from_slice(&raw).map_err(|e| format!("coupon {id}: {e}")))
        .transpose()
}

/// The coupon purchase `txn` is, if it is one.
pub fn use_of(journal: &Journal, txn: &str) -> Result<Option<CouponUse>, String> {
    journal
        .get(Cf::Coupons, &use_key(txn))?
        .map(|raw| serde_json::from_slice(&raw).map_err(|e| format!("coupon use {txn}: {e}")))
        .transpose()
}

/// Purchase `txn` is undone (reversed, or refunded in full) by `by`: if it holds a coupon's
/// use, the writes that give the use back, to go with the step that undoes the purchase.
pub fn give_back(journal: &Journal, txn: &str, by: &str, now_ms: i64) -> Result<Writes, String> {
    let Some(paid) = use_of(journal, txn)? else {
        return Ok(Vec::new());
    };
    let Some(mut c) = get(journal, &paid.coupon)? else {
        return Ok(Vec::new());
    };
    if c.used_by.as_deref() != Some(txn) {
        return Ok(Vec::new());
    }
    c.used_by = None;
    c.restored_by = Some(by.to_string());
    c.history.push(CouponEvent {
        at_ms: now_ms,
        what: "restored".into(),
        txn: by.to_string(),
    });
    tracing::info!(coupon = %c.id, "coupon use given back");
    Ok(vec![(Cf::Coupons, record_key(&c.id), to_bytes(&c))])
}

/// Refund `refund`, which had given back purchase `txn`'s coupon use, is itself reversed:
/// the purchase stands again, so does its use — if the coupon is still unused (a coupon
/// used again meanwhile is not taken from that purchase; logged).
pub fn take_again(
    journal: &Journal,
    step: &mut Step,
    txn: &str,
    refund: &str,
    now_ms: i64,
) -> Result<(), String> {
    let Some(paid) = use_of(journal, txn)? else {
        return Ok(());
    };
    let Some(mut c) = get(journal, &paid.coupon)? else {
        return Ok(());
    };
    if c.restored_by.as_deref() != Some(refund) {
        return Ok(());
    }
    if c.used_by.is_some() {
        tracing::warn!(coupon = %c.id, "a refund that restored a coupon is reversed, but the coupon was used again");
        return Ok(());
    }
    c.used_by = Some(txn.to_string());
    c.restored_by = None;
    c.history.push(CouponEvent {
        at_ms: now_ms,
        what: "used again".into(),
        txn: refund.to_string(),
    });
    step.put(Cf::Coupons, record_key(&c.id), to_bytes(&c));
    Ok(())
}

/// A QR code of `token` as a PNG file (what a phone shows, or a printer prints).
pub fn write_qr_png(token: &str, path: &std::path::Path) -> Result<(), String> {
    let code = qrcode::QrCode::new(token.as_bytes()).map_err(|e| format!("QR code: {e}"))?;
    let image = code
        .render::<image::Luma<u8>>()
        .min_dimensions(256, 256)
        .build();
    image
        .save_with_format(path, image::ImageFormat::Png)
        .map_err(|e| format!("{}: {e}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_qr_png_is_written() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c.png");
        write_qr_png("ABCDEFGHIJKLMNOPQRSTUVWXYZ234567", &path).unwrap();
        let bytes = std::fs::read(&path).unwrap();
        assert_eq!(&bytes[..8], b"\x89PNG\r\n\x1a\n");
    }
}
