//! What the admin API (SPEC §8) reads from a caller before it touches the switch: the JSON
//! request bodies and query strings of its routes, and the checks each route makes of them
//! (card numbers, references, dates, notes). Kept apart from the routes, and from the store,
//! so that whatever a caller sends can be tried without a switch (the `admin_bodies` fuzz
//! target); the routes in [`crate::admin`] act on what these give them.
//!
//! Every body refuses fields it does not know (a misspelt optional field must not pass
//! silently as its default).

use serde::Deserialize;

use crate::iso8583::Pan;

/// A card number from a body: an error naming the field, never echoing the number.
pub fn card_number(text: &str) -> Result<Pan, String> {
    Pan::parse(text.trim().as_bytes()).map_err(|e| format!("card_number: {e}"))
}

/// `POST /v1/links`: link a wallet to a card (F12).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LinkBody {
    pub card_number: String,
    pub issuer: String,
    pub account: String,
    #[serde(default = "default_priority")]
    pub priority: u32,
    #[serde(default)]
    pub label: String,
}

/// A link's priority when the body gives none (the directory's default).
fn default_priority() -> u32 {
    1
}

impl LinkBody {
    /// The account, trimmed; an error when nothing is left.
    pub fn account(&self) -> Result<&str, String> {
        let account = self.account.trim();
        if account.is_empty() {
            return Err("account is empty".into());
        }
        Ok(account)
    }
}

/// `DELETE /v1/links`: one link, by card, issuer and account.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LinkKey {
    pub card_number: String,
    pub issuer: String,
    pub account: String,
}

/// A body naming a card only (`/v1/links/query`, issuer look-ups, `/v1/cards/lookup`).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CardNumber {
    pub card_number: String,
}

/// `POST /v1/cards`: issue a hosted card (F14, F15).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IssueRequest {
    pub program: String,
    pub denomination: u64,
    /// The number to issue, from the card bureau (within the program's BIN range). The API
    /// never shows a full number (SPEC §10), so the switch does not make numbers up.
    pub card_number: String,
    pub holder: Option<String>,
    #[serde(skip)]
    pub owner: Option<String>,
}

/// `POST /v1/coupons`: issue a mobile coupon (F18).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CouponBody {
    pub card_number: String,
    pub registration: String,
    /// In currency minor units.
    pub discount: u64,
    /// Last day of validity, `YYYY-MM-DD`.
    pub expires: String,
    /// The only merchant (field 42) that may take it.
    pub merchant: Option<String>,
}

/// `POST /v1/cards/{id}/activate`.
#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct ActivateBody {
    pub pin: Option<String>,
}

/// `POST /v1/cards/{id}/recharge`, `POST /v1/masters/{id}/fund`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AmountBody {
    pub amount: u64,
    /// The caller's reference: a repeat with the same reference has no second effect.
    pub reference: String,
}

impl AmountBody {
    /// The ledger leg this call stands for on `id`: the caller's reference (1–64
    /// bytes), so that a repeat is the same leg.
    pub fn leg(&self, id: &str) -> Result<String, String> {
        let r = self.reference.trim();
        if r.is_empty() || r.len() > 64 {
            return Err("reference must be 1–64 characters".into());
        }
        Ok(format!("api:{r}:{id}"))
    }
}

/// `POST /v1/cards/{id}/expiry`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExpiryBody {
    /// `YYMM`.
    pub expiry: String,
}

/// `GET /v1/cards/{id}/statement?date=`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DateQuery {
    /// `YYYY-MM-DD`; default: yesterday.
    pub date: Option<String>,
}

impl DateQuery {
    /// The day asked for (local time), yesterday when none is.
    pub fn day(&self) -> Result<chrono::NaiveDate, String> {
        match &self.date {
            Some(d) => chrono::NaiveDate::parse_from_str(d, "%Y-%m-%d")
                .map_err(|e| format!("date {d:?}: {e}")),
            None => {
                let today = chrono::Local::now().date_naive();
                Ok(today.pred_opt().unwrap_or(today))
            }
        }
    }
}

/// `GET /v1/cards/{id}/history?from=YYYYMM&to=YYYYMM`: a card's history for whole months
/// (local time), both ends included; either end open.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PeriodQuery {
    pub from: Option<String>,
    pub to: Option<String>,
}

impl PeriodQuery {
    /// The first day of each month named: `from`'s, and the one after `to`'s (the end is
    /// exclusive). A `from` after `to` is refused.
    pub fn months(&self) -> Result<(Option<chrono::NaiveDate>, Option<chrono::NaiveDate>), String> {
        let from = self.from.as_deref().map(|m| month("from", m)).transpose()?;
        let to = self.to.as_deref().map(|m| month("to", m)).transpose()?;
        if let (Some(f), Some(t)) = (from, to) {
            if f > t {
                return Err("from: after to".into());
            }
        }
        let after = to
            .map(|t| {
                t.checked_add_months(chrono::Months::new(1))
                    .ok_or_else(|| "to: out of range".to_string())
            })
            .transpose()?;
        Ok((from, after))
    }
}

/// The first day of month `text` (`YYYYMM`).
fn month(name: &str, text: &str) -> Result<chrono::NaiveDate, String> {
    let t = text.trim();
    let bad = || format!("{name}: expected YYYYMM, got {t:?}");
    if t.len() != 6 || !t.bytes().all(|b| b.is_ascii_digit()) {
        return Err(bad());
    }
    let year: i32 = t[..4].parse().map_err(|_| bad())?;
    let month: u32 = t[4..].parse().map_err(|_| bad())?;
    chrono::NaiveDate::from_ymd_opt(year, month, 1).ok_or_else(bad)
}

/// `POST /v1/preregistrations` (F15).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PreregBody {
    pub card_id: String,
    pub merchant_id: String,
    pub amount: u64,
    /// RFC 3339.
    pub valid_until: String,
}

impl PreregBody {
    /// `valid_until` in milliseconds since the epoch.
    pub fn valid_until_ms(&self) -> Result<i64, String> {
        chrono::DateTime::parse_from_rfc3339(&self.valid_until)
            .map(|t| t.timestamp_millis())
            .map_err(|e| format!("valid_until: {e}"))
    }
}

/// `POST /v1/masters` (F16).
#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct MasterBody {
    pub id: Option<String>,
}

/// `POST /v1/masters/{id}/subs`: a sub-account card under a master (F16).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SubRequest {
    pub card_number: String,
    pub pin: Option<String>,
    pub per_txn_limit: u64,
    pub daily_limit: u64,
    pub holder: Option<String>,
}

/// `GET /v1/transactions`: disputes search.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TxnQuery {
    pub rrn: Option<String>,
    pub stan: Option<u32>,
    /// `YYYY-MM-DD` (local).
    pub date: Option<String>,
    pub limit: Option<usize>,
}

impl TxnQuery {
    /// The day asked for, if any.
    pub fn day(&self) -> Result<Option<chrono::NaiveDate>, String> {
        match &self.date {
            Some(_) => DateQuery {
                date: self.date.clone(),
            }
            .day()
            .map(Some),
            None => Ok(None),
        }
    }

    /// How many transactions to answer: 100 unless asked, never above 1,000.
    pub fn limit(&self) -> usize {
        self.limit.unwrap_or(100).min(1000)
    }
}

/// `POST /v1/saf/dead-letters/{id}/resolve`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Resolution {
    /// How it was settled (a reference an auditor can follow).
    pub note: String,
}

impl Resolution {
    /// The note, trimmed: 1 to 500 bytes.
    pub fn note(&self) -> Result<&str, String> {
        let note = self.note.trim();
        if note.is_empty() || self.note.len() > 500 {
            return Err("note: say how it was settled (1 to 500 characters)".into());
        }
        Ok(note)
    }
}

#[cfg(all(test, feature = "storage"))]
mod tests {
    #[test]
    fn a_link_without_a_priority_gets_the_directorys_default() {
        let b: super::LinkBody =
            serde_json::from_str(r#"{"card_number": "1", "issuer": "X", "account": "A"}"#).unwrap();
        assert_eq!(b.priority, crate::directory::DEFAULT_PRIORITY);
    }
}
