//! The write path every operation shares: take the accounts' locks (in sorted order, so
//! two operations never wait on each other), check the leg, add its entry and new state to
//! one step, check the invariant, commit the step synced, and only then update what memory
//! keeps (balances, pending holds by expiry, the open-holds count).

use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};

use super::{storage, Balance, EntryType, Ledger, LedgerEntry, LedgerError, Leg, LegState};
use crate::journal::{Entry, EntryKind, JournalError, Step};
use crate::keylock::KeyGuard;
use crate::store::Cf;

impl Ledger {
    /// The account's lock, to write (with what a dropped write left in doubt on the account
    /// settled first): refused once the ledger is stopped
    /// ([`Ledger::checkpoint`]), checked under the lock so that no write can begin after the
    /// stop's walk has passed the account.
    pub(super) async fn lock(&self, account: &str) -> Result<KeyGuard<'_>, LedgerError> {
        let guard = self.locks.lock(account).await;
        if self.closed.load(Ordering::Acquire) {
            return Err(LedgerError::Stopped);
        }
        self.settle_doubt(account).await;
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
    /// Commit `step` (synced), then apply `changes` to memory before the accounts' locks go
    /// — even if the caller stops waiting (a client gone, a deadline that drops the
    /// request): a step that landed with its changes left unapplied would leave memory
    /// behind the entries, and the next operation on the account would check a stale
    /// balance (a debit that already took the money, not seen). Dropped before the step has
    /// landed, the changes are left *in doubt* on their accounts, and the next holder of any
    /// of those accounts' locks waits for the step and applies them before it reads
    /// anything ([`Ledger::settle_doubt`]): no thread ever blocks on the disk for it.
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

    /// With the account's lock held, before anything of it is read: the changes of a step
    /// whose caller stopped waiting, applied once it has landed (by whichever holder of one
    /// of its accounts' locks comes first; the others find them applied).
    pub(super) async fn settle_doubt(&self, account: &str) {
        let Some(doubt) = self.in_doubt.get(account).map(|d| d.value().clone()) else {
            return;
        };
        let landed = doubt.landing.wait().await;
        let mut changes = doubt.changes.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(changes) = changes.take() {
            if landed.is_ok() {
                for change in changes {
                    self.apply(change);
                }
            }
        }
        drop(changes);
        for a in &doubt.accounts {
            self.in_doubt.remove_if(a, |_, d| Arc::ptr_eq(d, &doubt));
        }
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

impl Change {
    fn account(&self) -> &str {
        match self {
            Change::Opened(account) => account,
            Change::Leg { leg, .. } => &leg.account,
        }
    }
}

/// The outcome of a step handed to the writer, told once, to any number of waiters.
#[derive(Default)]
struct Landing {
    outcome: Mutex<Option<Result<(), JournalError>>>,
    notify: tokio::sync::Notify,
}

impl Landing {
    fn outcome(&self) -> Option<Result<(), JournalError>> {
        self.outcome
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    fn set(&self, landed: Result<(), JournalError>) {
        let mut outcome = self.outcome.lock().unwrap_or_else(|p| p.into_inner());
        if outcome.is_none() {
            *outcome = Some(landed);
        }
        drop(outcome);
        self.notify.notify_waiters();
    }

    async fn wait(&self) -> Result<(), JournalError> {
        loop {
            // Registered before the outcome is looked at: a `set` in between still wakes it.
            let notified = self.notify.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            if let Some(landed) = self.outcome() {
                return landed;
            }
            notified.await;
        }
    }
}

/// Tells the landing when the writer runs the callback — or, if the callback is dropped
/// without running (a writer that stopped), that the step did not land: nobody is left
/// waiting for a callback that will not come.
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

/// The changes of a step whose caller stopped waiting before it landed, left on each of
/// their accounts (`Ledger::in_doubt`) for the next holder of its lock.
pub(super) struct InDoubt {
    landing: Arc<Landing>,
    changes: Mutex<Option<Vec<Change>>>,
    accounts: Vec<String>,
}

/// Changes to apply once their step has landed. Dropped before (the caller stopped
/// waiting), it leaves them in doubt on their accounts — while the accounts' locks, dropped
/// after it, are still held, so no one reads those accounts before they are settled.
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
        let Some(changes) = self.changes.take() else {
            return;
        };
        let mut accounts: Vec<String> = changes.iter().map(|c| c.account().to_string()).collect();
        accounts.sort_unstable();
        accounts.dedup();
        let doubt = Arc::new(InDoubt {
            landing: self.landing.clone(),
            changes: Mutex::new(Some(changes)),
            accounts,
        });
        for account in &doubt.accounts {
            self.ledger.in_doubt.insert(account.clone(), doubt.clone());
        }
        // Settled as soon as the step lands, not only at the account's next write: a task
        // that takes one of the locks once the dropped write lets them go (settling one
        // account applies the changes of all).
        let (Some(ledger), Ok(runtime)) = (
            self.ledger.me.upgrade(),
            tokio::runtime::Handle::try_current(),
        ) else {
            return;
        };
        let Some(account) = doubt.accounts.first().cloned() else {
            return;
        };
        runtime.spawn(async move {
            let _held = ledger.locks.lock(&account).await;
            ledger.settle_doubt(&account).await;
        });
    }
}
