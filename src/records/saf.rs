//! A store-and-forward item's stored form (column family `saf`, and `saf_dead` for dead
//! letters): JSON, so that an operator's tools read it as it is. What the queue does with it
//! is [`crate::switch::saf`]'s business.

use serde::{Deserialize, Serialize};

/// One queued item: a leg's reversal, an authorization leg's completion, or a refund leg's
/// advice.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Item {
    /// The transaction key (also the sealing context of `sealed`).
    pub txn: String,
    pub leg: usize,
    pub queued_ms: i64,
    pub attempts: u32,
    /// Hex of the sealed leg request.
    pub sealed: String,
    /// A completion of the leg (an authorization) for this amount, instead of its reversal.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub complete: Option<u64>,
    /// Not before this moment (its back-off). Kept in memory only, on the runtime's clock
    /// (which tests can pause): after a restart every item is due at once.
    #[serde(skip)]
    pub next: Option<tokio::time::Instant>,
    /// The leg's amount in currency (what an operator weighs a dead letter by).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub amount: Option<u64>,
    /// Why it is a dead letter.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// A refund leg that got no answer, pushed through as an advice (0220, 0221 repeats)
    /// instead of being reversed.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub advice: bool,
    /// A blind reversal: the identity (field 37) of a leg sent ahead of its record, which
    /// may have been lost with it (see `switch::legs_ahead`). Nothing else of the leg is
    /// known: `sealed` is empty and the host finds the leg by this alone.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub blind: Option<String>,
}

impl Item {
    pub fn kind(&self) -> &'static str {
        match (self.complete, self.advice) {
            (_, true) => "refund advice",
            (None, false) => "reversal",
            (Some(_), false) => "completion",
        }
    }

    /// Stands for an item whose bytes could not be read (it goes to the dead letters).
    pub fn unreadable() -> Item {
        Item {
            txn: String::new(),
            leg: 0,
            queued_ms: 0,
            attempts: u32::MAX,
            sealed: String::new(),
            complete: None,
            next: None,
            amount: None,
            reason: None,
            advice: false,
            blind: None,
        }
    }

    /// An item as stored; an error for bytes that are not one (the queue then treats it as
    /// unreadable: a dead letter, never a blocked lane).
    pub fn from_bytes(raw: &[u8]) -> Result<Item, String> {
        serde_json::from_slice(raw).map_err(|e| e.to_string())
    }
}

pub fn to_bytes(item: &Item) -> Vec<u8> {
    serde_json::to_vec(item).unwrap_or_default()
}
