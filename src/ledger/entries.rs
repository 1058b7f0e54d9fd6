//! Ledger entries and the balances derived from them. An entry is the only thing the
//! ledger stores about money; a [`Balance`] is what applying an account's entries in order
//! gives, so both the replay at open and a statement's running balance use
//! [`LedgerEntry::apply_to`].

use serde::{Deserialize, Serialize};

/// An account's balance, derived from its entries.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct Balance {
    /// Posted credits − posted debits.
    pub posted: i64,
    /// Open holds.
    pub pending: i64,
}

impl Balance {
    pub fn available(&self) -> i64 {
        self.posted - self.pending
    }
}

/// What an entry did.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EntryType {
    /// Money in (recharge, refund of a balance): posted at once.
    Credit,
    /// A pending hold placed.
    Hold,
    /// A hold completed: the money leaves.
    Post,
    /// A hold released (reversal, decline of another leg).
    Void,
    /// A hold released because it was never completed in time.
    Expire,
    /// A posted debit given back (reversal after completion).
    Refund,
    /// Money out at once (balance refund to the holder).
    Debit,
    /// What a hold kept beyond the amount its completion posted, given back (the hold itself
    /// is closed by the `Post` beside it).
    Release,
}

/// One ledger entry (stored per account, in order).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct LedgerEntry {
    pub seq: u64,
    pub account: String,
    pub kind: EntryType,
    pub amount: i64,
    pub leg: String,
    pub at_ms: i64,
}

impl EntryType {
    /// The entry's effect on the number of open holds: a hold opens one; posting, voiding
    /// and expiring close one (refunds and immediate entries touch none).
    pub(super) fn open_holds_delta(self) -> i64 {
        match self {
            EntryType::Hold => 1,
            EntryType::Post | EntryType::Void | EntryType::Expire => -1,
            EntryType::Credit | EntryType::Refund | EntryType::Debit | EntryType::Release => 0,
        }
    }
}

impl LedgerEntry {
    /// The entry's effect on a balance.
    pub fn apply_to(&self, b: &mut Balance) {
        match self.kind {
            EntryType::Credit | EntryType::Refund => b.posted += self.amount,
            EntryType::Debit => b.posted -= self.amount,
            EntryType::Hold => b.pending += self.amount,
            EntryType::Post => {
                b.pending -= self.amount;
                b.posted -= self.amount;
            }
            EntryType::Void | EntryType::Expire | EntryType::Release => b.pending -= self.amount,
        }
    }
}
