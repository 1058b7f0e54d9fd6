//! The write path every operation shares: take the accounts' locks (in sorted order, so
//! two operations never wait on each other), check the leg, add its entry and new state to
//! one step, check the invariant, commit the step synced, and only then update what memory
//! keeps (balances, pending holds by expiry, the open-holds count).

use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Condvar, Mutex, MutexGuard};

use super::{storage, Balance, EntryType, Ledger, LedgerEntry, LedgerError, Leg, LegState};
use crate::journal::{Entry, EntryKind, JournalError, Step};
use crate::keylock::KeyGuard;
use crate::store::Cf;

impl Ledger {
    /// The account's lock, to write: refused once the ledger is stopped
    /// ([`Ledger::checkpoint`]), checked under the lock so that no write can begin after the
    /// stop's walk has passed the account.
    pub(super) async fn lock(&self, account: &str) -> Result<KeyGuard<'_>, LedgerError> {
        let guard = self.locks.lock(account).await;
        if self.closed.load(Ordering::Acquire) {
            return Err(LedgerError::Stopped);
        }
        Ok(guard)
    }

    /// A new leg on an account: checked (amount, account, repeat, funds for what takes money
    /// out) and recorded under the account's lock.
    pub(super) async fn place(
        &self,
        step: Step,
        leg_id: &str,
        leg: Leg,
    ) -> Result<Balance, LedgerError> {
        self.place_all(step, &[(leg_id, leg)]).await
    }

    /// New legs, on one or more accounts, checked as [`Ledger::place`] does and recorded in
    /// one step under all their accounts' locks: all of them or none. Returns the first
    /// leg's account balance; when the first leg is a repeat nothing is written (it was
    /// done, with the others, already).
    pub(super) async fn place_all(
        &self,
        mut step: Step,
        legs: &[(&str, Leg)],
    ) -> Result<Balance, LedgerError> {
        let Some((first_id, first)) = legs.first() else {
            return Err(LedgerError::BadAmount);
        };
        let mut accounts: Vec<&str> = legs.iter().map(|(_, l)| l.account.as_str()).collect();
        accounts.sort_unstable();
        accounts.dedup();
        // Locks taken in one order (sorted), so two placements cannot wait on each other.
        let mut _guards = Vec::with_capacity(accounts.len());
        for account in &accounts {
            _guards.push(self.lock(account).await?);
        }
        if let Some(placed) = self.leg(first_id)? {
            if !placed.repeated_by(first) {
                return Err(LedgerError::LegCollision((*first_id).to_string()));
            }
            return self
                .balance(&first.account)
                .ok_or_else(|| LedgerError::UnknownAccount(first.account.clone()));
        }
        let mut after: HashMap<&str, Balance> = HashMap::new();
        let mut recorded = Vec::with_capacity(legs.len());
        for (leg_id, leg) in legs {
            if leg.amount <= 0 {
                return Err(LedgerError::BadAmount);
            }
            let current = match after.get(leg.account.as_str()) {
                Some(b) => *b,
                None => self
                    .balance(&leg.account)
                    .ok_or_else(|| LedgerError::UnknownAccount(leg.account.clone()))?,
            };
            if let Some(placed) = self.leg(leg_id)? {
                if !placed.repeated_by(leg) {
                    return Err(LedgerError::LegCollision((*leg_id).to_string()));
                }
                continue; // done already (by an earlier attempt of its own)
            }
            let takes_money = matches!(leg.kind, EntryType::Debit | EntryType::Hold);
            if takes_money && current.available() < leg.amount {
                return Err(LedgerError::Insufficient {
                    available: current.available(),
                });
            }
            let entry = self.write_entry(&mut step, leg.kind, leg_id, leg)?;
            let mut balance = current;
            entry.apply_to(&mut balance)?;
            // The invariant, checked before anything is written.
            assert!(
                balance.available() >= 0 || !takes_money,
                "ledger: {:?} of {} would leave {} at {}",
                leg.kind,
                leg.amount,
                leg.account,
                balance.available()
            );
            after.insert(leg.account.as_str(), balance);
            recorded.push((*leg_id, leg));
        }
        let changes = recorded
            .into_iter()
            .filter_map(|(leg_id, leg)| {
                let balance = after.get(leg.account.as_str())?;
                Some(Change::leg(*balance, leg_id, leg, leg.kind))
            })
            .collect();
        self.commit_and_apply(step, changes).await?;
        Ok(after
            .get(first.account.as_str())
            .copied()
            .unwrap_or_default())
    }

    /// Write an entry of `amount` and the leg's new state (with the caller's writes, if
    /// any) as one synced step, then apply it; of nothing (a leg refunds gave all of back,
    /// voided), only the leg's new state. Called with the account's lock held.
    pub(super) async fn record_amount(
        &self,
        mut step: Step,
        kind: EntryType,
        amount: i64,
        leg_id: &str,
        leg: &Leg,
    ) -> Result<Balance, LedgerError> {
        let account = leg.account.as_str();
        let mut after = self.balance(account).unwrap_or_default();
        if amount == 0 {
            self.put_leg(&mut step, leg_id, leg)?;
        } else {
            self.write_entry_of(&mut step, kind, amount, leg_id, leg)?
                .apply_to(&mut after)?;
        }
        // The invariant, checked before anything is written.
        assert!(
            after.available() >= 0
                || matches!(
                    kind,
                    EntryType::Credit | EntryType::Refund | EntryType::Clawback
                ),
            "ledger: {kind:?} of {amount} would leave {account} at {}",
            after.available()
        );
        self.commit_and_apply(step, vec![Change::leg(after, leg_id, leg, kind)])
            .await?;
        Ok(after)
    }

    /// A leg's new state (no entry), to a step.
    pub(super) fn put_leg(
        &self,
        step: &mut Step,
        leg_id: &str,
        leg: &Leg,
    ) -> Result<(), LedgerError> {
        step.put(
            Cf::LedgerLegs,
            leg_id.as_bytes(),
            serde_json::to_vec(leg).map_err(storage)?,
        );
        Ok(())
    }

    /// Add a new entry on the leg's account (of the leg's amount), and the leg's new state,
    /// to a step.
    pub(super) fn write_entry(
        &self,
        step: &mut Step,
        kind: EntryType,
        leg_id: &str,
        leg: &Leg,
    ) -> Result<LedgerEntry, LedgerError> {
        self.write_entry_of(step, kind, leg.amount, leg_id, leg)
    }

    /// As [`Ledger::write_entry`], of `amount`.
    pub(super) fn write_entry_of(
        &self,
        step: &mut Step,
        kind: EntryType,
        amount: i64,
        leg_id: &str,
        leg: &Leg,
    ) -> Result<LedgerEntry, LedgerError> {
        let entry = LedgerEntry {
            seq: self.next_seq.fetch_add(1, Ordering::Relaxed),
            account: leg.account.clone(),
            kind,
            amount,
            leg: leg_id.into(),
            at_ms: self.now_ms(),
        };
        step.put(
            Cf::LedgerEntries,
            crate::store::seq_key(&leg.account, entry.seq),
            serde_json::to_vec(&entry).map_err(storage)?,
        );
        step.put(
            Cf::LedgerLegs,
            leg_id.as_bytes(),
            serde_json::to_vec(leg).map_err(storage)?,
        );
        step.append(Entry::new(
            EntryKind::Ledger,
            leg_id,
            &leg.account,
            format!("{kind:?} {amount}"),
        ));
        Ok(entry)
    }

    /// What the memory keeps once an entry is durable: the account's balance, the pending
    /// holds by expiry, the open-holds count.
    pub(super) fn applied(&self, after: Balance, leg_id: &str, leg: &Leg, kind: EntryType) {
        self.balances.insert(leg.account.clone(), after);
        if let Ok(mut pending) = self.pending.lock() {
            let key = (leg.expires_ms, leg_id.to_string());
            if leg.state == LegState::Pending {
                pending.insert(key);
            } else {
                pending.remove(&key);
            }
        }
        let delta = kind.open_holds_delta();
        if delta != 0 {
            let open = self.open_holds.fetch_add(delta, Ordering::Relaxed) + delta;
            debug_assert!(open >= 0, "ledger: {open} open holds");
            self.open_holds_gauge.set(open as f64);
        }
    }
}

/// What a committed step changes in the ledger's memory.
pub(super) enum Change {
    /// An account opened (its balance starts at nothing).
    Opened(String),
    /// An account's balance after the step, and a leg's new state.
    Leg {
        after: Balance,
        leg_id: String,
        leg: Leg,
        kind: EntryType,
    },
}

impl Change {
    pub(super) fn leg(after: Balance, leg_id: &str, leg: &Leg, kind: EntryType) -> Change {
        Change::Leg {
            after,
            leg_id: leg_id.to_string(),
            leg: leg.clone(),
            kind,
        }
    }
}

impl Ledger {
    /// Commit `step` (synced), then apply `changes` to memory — while the caller still holds
    /// the accounts' locks, and even if the caller stops waiting (a client gone, a deadline
    /// that drops the request): a step that landed with its changes left unapplied would
    /// leave memory behind the entries, and the next operation on the account would check
    /// a stale balance (a debit that already took the money, not seen). Dropped before the
    /// step has landed, the wait finishes on the dropping thread (the writer's group commit,
    /// milliseconds) before the locks are let go.
    pub(super) async fn commit_and_apply(
        &self,
        mut step: Step,
        changes: Vec<Change>,
    ) -> Result<(), LedgerError> {
        step.synced();
        let landing = Arc::new(Landing::default());
        let mut applying = Applying {
            ledger: self,
            landing: landing.clone(),
            changes: Some(changes),
        };
        let signal = Signal(landing.clone());
        // When the step cannot be queued, the callback has said so already.
        let _ = self
            .journal
            .commit_then(step, move |landed| signal.set(landed));
        let landed = landing.wait().await;
        applying.finish(&landed);
        landed.map_err(storage)
    }

    fn apply(&self, change: Change) {
        match change {
            Change::Opened(account) => {
                self.balances.insert(account, Balance::default());
            }
            Change::Leg {
                after,
                leg_id,
                leg,
                kind,
            } => self.applied(after, &leg_id, &leg, kind),
        }
    }
}

/// The outcome of a step handed to the writer, told once.
#[derive(Default)]
struct Landing {
    outcome: Mutex<Option<Result<(), JournalError>>>,
    /// For a waiter that is a thread ([`Applying`]'s drop).
    told: Condvar,
    /// For a waiter that is a task.
    notify: tokio::sync::Notify,
}

impl Landing {
    fn outcome(&self) -> MutexGuard<'_, Option<Result<(), JournalError>>> {
        self.outcome.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn set(&self, landed: Result<(), JournalError>) {
        let mut outcome = self.outcome();
        if outcome.is_none() {
            *outcome = Some(landed);
        }
        drop(outcome);
        self.told.notify_all();
        // Kept as a permit when the task is not waiting yet.
        self.notify.notify_one();
    }

    async fn wait(&self) -> Result<(), JournalError> {
        loop {
            if let Some(landed) = self.outcome().clone() {
                return landed;
            }
            self.notify.notified().await;
        }
    }

    fn wait_blocking(&self) -> Result<(), JournalError> {
        let mut outcome = self.outcome();
        loop {
            if let Some(landed) = outcome.clone() {
                return landed;
            }
            outcome = self.told.wait(outcome).unwrap_or_else(|p| p.into_inner());
        }
    }
}

/// Tells the landing when the writer runs the callback — or, if the callback is dropped
/// without running (a writer that stopped), that the step did not land: a waiter is never
/// left waiting for a callback that will not come.
struct Signal(Arc<Landing>);

impl Signal {
    fn set(&self, landed: Result<(), JournalError>) {
        self.0.set(landed);
    }
}

impl Drop for Signal {
    fn drop(&mut self) {
        // A no-op once told.
        self.0.set(Err(JournalError::Stopped));
    }
}

/// Changes to apply once their step has landed; dropped before (the caller stopped
/// waiting), it waits for the landing itself and applies them, so the locks held around it
/// (dropped after it) are let go only with memory and entries agreeing.
struct Applying<'a> {
    ledger: &'a Ledger,
    landing: Arc<Landing>,
    changes: Option<Vec<Change>>,
}

impl Applying<'_> {
    fn finish(&mut self, landed: &Result<(), JournalError>) {
        let Some(changes) = self.changes.take() else {
            return;
        };
        if landed.is_ok() {
            for change in changes {
                self.ledger.apply(change);
            }
        }
    }
}

impl Drop for Applying<'_> {
    fn drop(&mut self) {
        if self.changes.is_some() {
            let landed = self.landing.wait_blocking();
            self.finish(&landed);
        }
    }
}
