//! Hosted cards (F14 prepaid, F15 anonymous, F16 sub-accounts) and the operations partners
//! run on them. A card record never holds its number: it is found by the HMAC of the number
//! (`hosted_card_refs`), shows itself masked, and keeps its PIN only as an Argon2id hash.
//!
//! This file holds the card record and how it is read and written. The operations:
//!
//! - `issuing`: new cards — number checks, records and ledger accounts, F14/F15 issue.
//! - `lifecycle`: a card's state after issue — activation, suspension and closure, expiry,
//!   PIN tries.
//! - `funds`: money onto a card (recharge) and off it (refund and close).
//! - `history`: a card's own entries, daily statements, what it spent today.
//! - `prereg`: purchases registered in advance (F15).
//! - `masters`: master accounts and their sub-account cards (F16), with the index of them.
//! - `calendar`: card months (`YYMM`) and local days.

mod calendar;
mod funds;
mod history;
mod issuing;
mod lifecycle;
mod masters;
mod prereg;

pub use calendar::{current_yymm, day_bounds};
pub use history::Statement;
pub use issuing::{luhn_valid, IssueRequest};
pub(crate) use masters::index_subs;
pub use masters::{Master, SubRequest};
pub use prereg::Prereg;

use serde::{Deserialize, Serialize};

use super::{storage, Hosted, HostedError};
use crate::config::{ProgramConfig, ProgramKind};
use crate::iso8583::Pan;
use crate::journal::{Entry, EntryKind, Step};
use crate::ledger::Balance;
use crate::pin::ClearPin;
use crate::store::Cf;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum CardStatus {
    /// Issued, not activated yet: cannot pay.
    Issued,
    Active,
    Suspended,
    /// Closed for good (its balance refunded).
    Closed,
}

impl CardStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            CardStatus::Issued => "issued",
            CardStatus::Active => "active",
            CardStatus::Suspended => "suspended",
            CardStatus::Closed => "closed",
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Card {
    pub id: String,
    pub program: String,
    pub kind: ProgramKind,
    /// First six and last four digits.
    pub masked: String,
    pub status: CardStatus,
    /// `YYMM`, the last month the card is valid.
    pub expiry: String,
    /// Argon2id PHC string; never shown.
    pub pin_hash: Option<String>,
    /// Wrong PINs in a row.
    pub pin_failures: u32,
    /// The ledger account it pays from (its own, or its master's).
    pub account: String,
    pub points_account: Option<String>,
    /// The partner that issued it.
    pub owner: Option<String>,
    /// Personal data (prepaid only; anonymous cards have none).
    pub holder: Option<String>,
    pub master: Option<String>,
    pub per_txn_limit: Option<u64>,
    pub daily_limit: Option<u64>,
    pub issued_ms: i64,
}

impl Card {
    /// The card as the API shows it: no PIN hash.
    pub fn view(&self, balance: Option<Balance>, points: Option<Balance>) -> serde_json::Value {
        serde_json::json!({
            "id": self.id,
            "program": self.program,
            "kind": self.kind,
            "card_number": self.masked,
            "status": self.status,
            "expiry": self.expiry,
            "pin_set": self.pin_hash.is_some(),
            "pin_failures": self.pin_failures,
            "owner": self.owner,
            "holder": self.holder,
            "master": self.master,
            "per_txn_limit": self.per_txn_limit,
            "daily_limit": self.daily_limit,
            "balance": balance.map(|b| b.posted),
            "available": balance.map(|b| b.available()),
            "points": points.map(|b| b.available()),
        })
    }

    /// Past its expiry month (local time)?
    pub fn expired(&self) -> bool {
        self.expiry < current_yymm()
    }
}

fn now_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}

fn random_id(prefix: &str) -> String {
    let n: u64 = rand::random();
    format!("{prefix}{n:016x}")
}

/// Hash a PIN off the async threads (Argon2id is slow on purpose).
async fn hash(pin: &str) -> Result<String, HostedError> {
    let pin = ClearPin::new(pin).map_err(|e| HostedError::Invalid(e.to_string()))?;
    crate::pin::hash_pin_bounded(pin).await.map_err(storage)
}

impl Hosted {
    pub(crate) fn program(&self, id: &str) -> Result<&ProgramConfig, HostedError> {
        self.config
            .hosted
            .programs
            .iter()
            .find(|p| p.id == id)
            .ok_or_else(|| HostedError::NotFound(format!("program {id}")))
    }

    pub fn card(&self, id: &str) -> Result<Card, HostedError> {
        let raw = self
            .journal
            .get(Cf::HostedCards, id.as_bytes())
            .map_err(storage)?
            .ok_or_else(|| HostedError::NotFound(format!("card {id}")))?;
        serde_json::from_slice(&raw).map_err(storage)
    }

    /// The card with this number, if the switch issued it.
    pub fn card_by_pan(&self, pan: &Pan) -> Result<Option<Card>, HostedError> {
        // The current key version first, then the older ones (a store not yet rotated).
        // With older versions a miss reads them all once more, as `Directory::read_any`
        // does: a rotation may move the reference between two reads of one pass (and
        // issuing would then take a number that exists).
        let refs = self.card_key.stored_refs(pan);
        let passes = if refs.len() > 1 { 2 } else { 1 };
        for _ in 0..passes {
            for r in &refs {
                if let Some(id) = self.journal.get(Cf::HostedCardRefs, r).map_err(storage)? {
                    return self.card(&String::from_utf8_lossy(&id)).map(Some);
                }
            }
        }
        Ok(None)
    }

    /// Write a card record (and what else the step holds), synced and journaled.
    pub(crate) async fn save_card(
        &self,
        mut step: Step,
        card: &Card,
        what: &str,
    ) -> Result<(), HostedError> {
        Self::card_writes(&mut step, card, what)?;
        step.synced();
        self.journal.commit(step).await.map_err(storage)
    }

    /// A card record and its journal entry, added to a step.
    fn card_writes(step: &mut Step, card: &Card, what: &str) -> Result<(), HostedError> {
        step.put(
            Cf::HostedCards,
            card.id.as_bytes(),
            serde_json::to_vec(card).map_err(storage)?,
        );
        step.append(Entry::new(
            EntryKind::Ledger,
            &card.id,
            &card.account,
            format!("card {} {what}", card.masked),
        ));
        Ok(())
    }

    /// The card's balance (and points), derived from the ledger.
    pub fn view(&self, card: &Card) -> serde_json::Value {
        let points = card
            .points_account
            .as_ref()
            .and_then(|a| self.ledger.balance(a));
        card.view(self.ledger.balance(&card.account), points)
    }
}
