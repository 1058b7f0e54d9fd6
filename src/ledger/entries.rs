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
        self.posted.saturating_sub(self.pending)
    }

    /// What `entries` change, applied in order from nothing.
    pub fn change_of(entries: &[LedgerEntry]) -> Result<Balance, super::LedgerError> {
        let mut change = Balance::default();
        for e in entries {
            e.apply_to(&mut change)?;
        }
        Ok(change)
    }

    /// The balance before `change` was applied to it.
    pub fn less(&self, change: &Balance) -> Result<Balance, super::LedgerError> {
        match (
            self.posted.checked_sub(change.posted),
            self.pending.checked_sub(change.pending),
        ) {
            (Some(posted), Some(pending)) => Ok(Balance { posted, pending }),
            _ => Err(super::LedgerError::OutOfRange),
        }
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
    /// Taken back whether or not it is still there: earned points (their purchase reversed
    /// or refunded), a refund's money (the refund reversed). The balance may go below zero,
    /// a debt that later earnings, recharges or refunds pay down and that refuses spending
    /// meanwhile.
    Clawback,
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
            EntryType::Credit
            | EntryType::Refund
            | EntryType::Debit
            | EntryType::Release
            | EntryType::Clawback => 0,
        }
    }

    /// Does the entry take money that must be there (checked against what is available)?
    pub fn takes_money(self) -> bool {
        matches!(self, EntryType::Debit | EntryType::Hold)
    }
}

impl LedgerEntry {
    /// The entry's effect on a balance; `Err` (the balance unchanged) when a sum would leave
    /// the range of its type: a ledger that wrapped around would create money.
    pub fn apply_to(&self, b: &mut Balance) -> Result<(), super::LedgerError> {
        let a = self.amount;
        let (posted, pending) = match self.kind {
            EntryType::Credit | EntryType::Refund => (b.posted.checked_add(a), Some(b.pending)),
            EntryType::Debit | EntryType::Clawback => (b.posted.checked_sub(a), Some(b.pending)),
            EntryType::Hold => (Some(b.posted), b.pending.checked_add(a)),
            EntryType::Post => (b.posted.checked_sub(a), b.pending.checked_sub(a)),
            EntryType::Void | EntryType::Expire | EntryType::Release => {
                (Some(b.posted), b.pending.checked_sub(a))
            }
        };
        match (posted, pending) {
            (Some(posted), Some(pending)) if posted.checked_sub(pending).is_some() => {
                *b = Balance { posted, pending };
                Ok(())
            }
            _ => Err(super::LedgerError::OutOfRange),
        }
    }
}
