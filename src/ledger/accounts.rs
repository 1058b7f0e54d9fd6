//! Accounts: opening them (alone, or with opening credits and the caller's own writes in
//! one step) and reading the balances kept for them in memory.

use std::collections::HashMap;

use serde::{Deserialize, Serialize};

use super::write::Change;
use super::{storage, Balance, EntryType, Ledger, LedgerError, Leg, LegState};
use crate::journal::{Entry, EntryKind, Step};
use crate::store::Cf;

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Account {
    pub id: String,
    /// Unit of the balance (KRW, P …).
    pub unit: String,
    pub created_ms: i64,
}

/// An account to open with [`Ledger::open_accounts`].
pub struct NewAccount<'a> {
    pub id: &'a str,
    pub unit: &'a str,
    /// A credit posted with the opening: amount and leg id.
    pub opening: Option<(i64, &'a str)>,
}

impl Ledger {
    /// An account's balance as memory holds it: for display. A write whose caller stopped
    /// waiting may not be in it yet (for milliseconds, see `write::commit_and_apply`); a
    /// decision about money reads [`Ledger::settled_balance`].
    pub fn balance(&self, account: &str) -> Option<Balance> {
        self.balances.get(account).map(|b| *b)
    }

    /// An account's balance with every write that has landed on it applied, read under its
    /// lock: what a decision about the account's money outside the ledger reads (a card
    /// refunded and closed, a recharge's ceiling).
    pub async fn settled_balance(&self, account: &str) -> Option<Balance> {
        let _held = self.locks.lock(account).await;
        self.settle_doubt(account).await;
        self.balance(account)
    }

    /// The holds still pending, by expiry (ms) and leg id.
    pub fn pending_holds(&self) -> Vec<(i64, String)> {
        match self.pending.lock() {
            Ok(p) => p.iter().cloned().collect(),
            Err(p) => p.into_inner().iter().cloned().collect(),
        }
    }

    /// Every account with its balance.
    pub fn balances(&self) -> HashMap<String, Balance> {
        self.balances
            .iter()
            .map(|e| (e.key().clone(), *e.value()))
            .collect()
    }

    pub async fn open_account(&self, id: &str, unit: &str) -> Result<(), LedgerError> {
        let account = NewAccount {
            id,
            unit,
            opening: None,
        };
        self.open_accounts(Step::new(), &[account]).await
    }

    /// Open accounts, with their opening credits, in one synced step together with the
    /// caller's own writes (a card record, say): after a crash either all of it is there or
    /// none, never an account without its card or a card without the money it was sold with.
    pub async fn open_accounts(
        &self,
        mut step: Step,
        accounts: &[NewAccount<'_>],
    ) -> Result<(), LedgerError> {
        let mut ids: Vec<&str> = accounts.iter().map(|a| a.id).collect();
        ids.sort_unstable();
        if let Some(twice) = ids.windows(2).find(|w| w[0] == w[1]) {
            return Err(LedgerError::AccountExists(twice[0].into()));
        }
        // Locks taken in one order (sorted), so two openings cannot wait on each other.
        let mut _guards = Vec::with_capacity(ids.len());
        for id in &ids {
            _guards.push(self.lock(id).await?);
        }
        let mut credits = Vec::new();
        for a in accounts {
            if self.balances.contains_key(a.id) {
                return Err(LedgerError::AccountExists(a.id.into()));
            }
            let record = Account {
                id: a.id.into(),
                unit: a.unit.into(),
                created_ms: self.now_ms(),
            };
            step.put(
                Cf::LedgerAccounts,
                a.id.as_bytes(),
                serde_json::to_vec(&record).map_err(storage)?,
            );
            step.append(Entry::new(
                EntryKind::Ledger,
                "",
                a.id,
                format!("account opened ({})", a.unit),
            ));
            if let Some((amount, leg_id)) = a.opening {
                if amount <= 0 {
                    return Err(LedgerError::BadAmount);
                }
                if self.leg(leg_id)?.is_some() {
                    return Err(LedgerError::WrongState {
                        leg: leg_id.into(),
                        state: LegState::Done,
                        what: "opening",
                    });
                }
                let leg = Leg::immediate(a.id, amount, EntryType::Credit);
                let entry = self.write_entry(&mut step, EntryType::Credit, leg_id, &leg)?;
                credits.push((leg_id, leg, entry));
            }
        }
        let mut changes: Vec<Change> = accounts
            .iter()
            .map(|a| Change::Opened(a.id.to_string()))
            .collect();
        for (leg_id, leg, entry) in credits {
            let mut after = Balance::default();
            entry.apply_to(&mut after)?;
            changes.push(Change::leg(after, leg_id, &leg, entry.kind));
        }
        self.commit_and_apply(step, changes).await
    }
}
