//! Legs: every operation names a leg id, and the ledger keeps each leg's state by id. That
//! record is what makes a repeat harmless (it finds the leg done) and what a later
//! completion, reversal or expiry of a hold works on.

use serde::{Deserialize, Serialize};

use super::{storage, EntryType, Ledger, LedgerError};
use crate::store::Cf;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LegState {
    Pending,
    Posted,
    Voided,
    Expired,
    Refunded,
    /// A credit or direct debit: final at once.
    Done,
}

/// A leg the ledger knows, by id: what makes every operation idempotent.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Leg {
    pub account: String,
    pub amount: i64,
    pub state: LegState,
    /// Pending holds: when they expire.
    pub expires_ms: i64,
    /// What placed the leg: a hold, or an immediate credit or debit.
    #[serde(default = "hold_kind")]
    pub kind: EntryType,
    /// Of a leg that took money: how much refunds have given back of it; of earned points
    /// (a credit beside a purchase): how many have been taken back.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub refunded: i64,
    /// Of a refund leg: the leg it gives money back to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub of: Option<String>,
}

fn is_zero(n: &i64) -> bool {
    *n == 0
}

impl Leg {
    /// A leg placed at once (no hold): a credit or debit, final.
    pub fn immediate(account: &str, amount: i64, kind: EntryType) -> Leg {
        Leg {
            account: account.into(),
            amount,
            state: LegState::Done,
            expires_ms: 0,
            kind,
            refunded: 0,
            of: None,
        }
    }

    /// Is `new`, asked under this leg's id, a repeat of it (the same account, kind and
    /// amount — a completed hold stands for less than it held)? Otherwise the id collides.
    pub fn repeated_by(&self, new: &Leg) -> bool {
        let amount = self.amount == new.amount
            || (self.state == LegState::Posted && self.amount <= new.amount);
        self.account == new.account && self.kind == new.kind && amount
    }
}

fn hold_kind() -> EntryType {
    EntryType::Hold
}

impl Ledger {
    /// A leg's state, if the ledger knows it.
    pub fn leg_state(&self, leg: &str) -> Result<Option<Leg>, LedgerError> {
        self.leg(leg)
    }

    pub(super) fn leg(&self, leg: &str) -> Result<Option<Leg>, LedgerError> {
        match self
            .journal
            .get(Cf::LedgerLegs, leg.as_bytes())
            .map_err(storage)?
        {
            Some(raw) => serde_json::from_slice(&raw).map(Some).map_err(storage),
            None => Ok(None),
        }
    }
}
