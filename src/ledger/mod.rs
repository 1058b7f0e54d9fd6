//! The hosted ledger (SPEC §7): accounts, holds and entries in RocksDB, with two-phase
//! semantics. An authorization places a *pending* hold that reduces what is available;
//! completion *posts* it; a reversal *voids* it (or, once posted, refunds it); holds expire.
//!
//! - Entries are the truth. Balances are derived from them: replayed at open, then kept in
//!   memory as each committed entry is applied. Nothing stores a balance that could drift.
//! - Every operation is idempotent by its leg id: a repeat returns the first outcome.
//! - `available = posted credits − posted debits − pending holds ≥ 0` under any concurrency:
//!   operations on one account are serialised (check, commit, apply under the account's
//!   lock), and the invariant is asserted whenever an entry is applied.
//! - Every entry is written through the journal (one synced step per operation), so a
//!   posting is durable before anyone is told of it, and it is in the journal.

use std::collections::{BTreeSet, HashMap};
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use dashmap::DashMap;
use serde::{Deserialize, Serialize};

use crate::journal::{Entry, EntryKind, Journal, Step};
use crate::keylock::{KeyGuard, KeyLocks};
use crate::store::Cf;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LedgerError {
    #[error("account {0} does not exist")]
    UnknownAccount(String),
    #[error("account {0} exists already")]
    AccountExists(String),
    #[error("insufficient funds: {available} available")]
    Insufficient { available: i64 },
    #[error("leg {0} is unknown")]
    UnknownLeg(String),
    #[error("leg {leg} is {state:?}: {what} is not possible")]
    WrongState {
        leg: String,
        state: LegState,
        what: &'static str,
    },
    #[error("amounts must be positive")]
    BadAmount,
    #[error("ledger storage: {0}")]
    Storage(String),
}

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

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Account {
    pub id: String,
    /// Unit of the balance (KRW, P …).
    pub unit: String,
    pub created_ms: i64,
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
    fn open_holds_delta(self) -> i64 {
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
}

fn hold_kind() -> EntryType {
    EntryType::Hold
}

/// An account to open with [`Ledger::open_accounts`].
pub struct NewAccount<'a> {
    pub id: &'a str,
    pub unit: &'a str,
    /// A credit posted with the opening: amount and leg id.
    pub opening: Option<(i64, &'a str)>,
}

pub struct Ledger {
    journal: Arc<Journal>,
    balances: DashMap<String, Balance>,
    /// One lock per account: check, commit and apply happen under it.
    locks: KeyLocks,
    next_seq: AtomicU64,
    hold_ttl: Duration,
    /// Holds placed and not yet posted, voided or expired (derived from the entries at
    /// open, then kept with every entry recorded).
    open_holds: AtomicI64,
    /// Pending holds by expiry: what the expiry sweep looks at (it read every leg ever
    /// placed before). Built from the legs at open, then kept with every entry recorded.
    pending: std::sync::Mutex<BTreeSet<(i64, String)>>,
    open_holds_gauge: metrics::Gauge,
    holds_expired: metrics::Counter,
}

fn now_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}

fn storage(e: impl std::fmt::Display) -> LedgerError {
    LedgerError::Storage(e.to_string())
}

impl Ledger {
    /// Open the ledger over the journal's database: every account's balance is derived by
    /// replaying its entries.
    pub fn open(journal: Arc<Journal>, hold_ttl: Duration) -> Result<Arc<Ledger>, LedgerError> {
        let balances = DashMap::new();
        for (k, _) in journal.scan(Cf::LedgerAccounts, b"").map_err(storage)? {
            balances.insert(String::from_utf8_lossy(&k).into_owned(), Balance::default());
        }
        let mut max_seq = 0;
        let mut open_holds = 0;
        for (_, v) in journal.scan(Cf::LedgerEntries, b"").map_err(storage)? {
            let e: LedgerEntry = serde_json::from_slice(&v).map_err(storage)?;
            max_seq = max_seq.max(e.seq);
            open_holds += e.kind.open_holds_delta();
            let mut b = balances.entry(e.account.clone()).or_default();
            e.apply_to(&mut b);
            if b.available() < 0 {
                tracing::error!(account = %e.account, "ledger replay: available below zero");
            }
        }
        let mut pending = BTreeSet::new();
        for (k, v) in journal.scan(Cf::LedgerLegs, b"").map_err(storage)? {
            let leg: Leg = serde_json::from_slice(&v).map_err(storage)?;
            if leg.state == LegState::Pending {
                pending.insert((leg.expires_ms, String::from_utf8_lossy(&k).into_owned()));
            }
        }
        // Written in the same steps, so they agree unless the data was damaged.
        if pending.len() as i64 != open_holds {
            tracing::error!(
                pending_legs = pending.len(),
                open_holds,
                "ledger: pending legs and hold entries disagree"
            );
        }
        let open_holds_gauge = metrics::gauge!("cyberswitch_ledger_open_holds");
        open_holds_gauge.set(open_holds as f64);
        Ok(Arc::new(Ledger {
            journal,
            balances,
            locks: KeyLocks::new(),
            next_seq: AtomicU64::new(max_seq + 1),
            hold_ttl,
            open_holds: AtomicI64::new(open_holds),
            pending: std::sync::Mutex::new(pending),
            open_holds_gauge,
            holds_expired: metrics::counter!("cyberswitch_ledger_holds_expired_total"),
        }))
    }

    /// A leg's state, if the ledger knows it.
    pub fn leg_state(&self, leg: &str) -> Result<Option<Leg>, LedgerError> {
        self.leg(leg)
    }

    pub fn balance(&self, account: &str) -> Option<Balance> {
        self.balances.get(account).map(|b| *b)
    }

    /// Holds placed and not yet posted, voided or expired.
    pub fn open_holds(&self) -> i64 {
        self.open_holds.load(Ordering::Relaxed)
    }

    async fn lock(&self, account: &str) -> KeyGuard<'_> {
        self.locks.lock(account).await
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
            _guards.push(self.lock(id).await);
        }
        let mut credits = Vec::new();
        for a in accounts {
            if self.balances.contains_key(a.id) {
                return Err(LedgerError::AccountExists(a.id.into()));
            }
            let record = Account {
                id: a.id.into(),
                unit: a.unit.into(),
                created_ms: now_ms(),
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
                let leg = Leg {
                    account: a.id.into(),
                    amount,
                    state: LegState::Done,
                    expires_ms: 0,
                    kind: EntryType::Credit,
                };
                let entry = self.write_entry(&mut step, EntryType::Credit, leg_id, &leg)?;
                credits.push((leg_id, leg, entry));
            }
        }
        step.synced();
        self.journal.commit(step).await.map_err(storage)?;
        for a in accounts {
            self.balances.insert(a.id.into(), Balance::default());
        }
        for (leg_id, leg, entry) in credits {
            let mut after = Balance::default();
            entry.apply_to(&mut after);
            self.applied(after, leg_id, &leg, entry.kind);
        }
        Ok(())
    }

    fn leg(&self, leg: &str) -> Result<Option<Leg>, LedgerError> {
        match self
            .journal
            .get(Cf::LedgerLegs, leg.as_bytes())
            .map_err(storage)?
        {
            Some(raw) => serde_json::from_slice(&raw).map(Some).map_err(storage),
            None => Ok(None),
        }
    }

    /// Write an entry and the leg's new state (with the caller's writes, if any) as one
    /// synced step, then apply the entry.
    /// Called with the account's lock held.
    async fn record(
        &self,
        mut step: Step,
        kind: EntryType,
        leg_id: &str,
        leg: &Leg,
    ) -> Result<Balance, LedgerError> {
        let (account, amount) = (leg.account.as_str(), leg.amount);
        let entry = self.write_entry(&mut step, kind, leg_id, leg)?;
        let mut after = self.balance(account).unwrap_or_default();
        entry.apply_to(&mut after);
        // The invariant, checked before anything is written.
        assert!(
            after.available() >= 0 || matches!(kind, EntryType::Credit | EntryType::Refund),
            "ledger: {kind:?} of {amount} would leave {account} at {}",
            after.available()
        );
        step.synced();
        self.journal.commit(step).await.map_err(storage)?;
        self.applied(after, leg_id, leg, kind);
        Ok(after)
    }

    /// Add a new entry on the leg's account (of the leg's amount), and the leg's new state,
    /// to a step.
    fn write_entry(
        &self,
        step: &mut Step,
        kind: EntryType,
        leg_id: &str,
        leg: &Leg,
    ) -> Result<LedgerEntry, LedgerError> {
        self.write_entry_of(step, kind, leg.amount, leg_id, leg)
    }

    /// As [`Ledger::write_entry`], of `amount`.
    fn write_entry_of(
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
            at_ms: now_ms(),
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
    fn applied(&self, after: Balance, leg_id: &str, leg: &Leg, kind: EntryType) {
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

    /// Money in, posted at once (recharge). Idempotent by `leg`.
    pub async fn credit(
        &self,
        account: &str,
        amount: i64,
        leg: &str,
    ) -> Result<Balance, LedgerError> {
        self.immediate(Step::new(), account, amount, leg, EntryType::Credit)
            .await
    }

    /// Money out at once (balance refund to the holder). Idempotent by `leg`.
    pub async fn debit(
        &self,
        account: &str,
        amount: i64,
        leg: &str,
    ) -> Result<Balance, LedgerError> {
        self.immediate(Step::new(), account, amount, leg, EntryType::Debit)
            .await
    }

    /// As [`Ledger::debit`], in one step with the caller's writes (a card closed by the
    /// refund of its balance, say). A repeat of the leg writes nothing, not even those.
    pub async fn debit_with(
        &self,
        step: Step,
        account: &str,
        amount: i64,
        leg: &str,
    ) -> Result<Balance, LedgerError> {
        self.immediate(step, account, amount, leg, EntryType::Debit)
            .await
    }

    /// As [`Ledger::debit_with`], with a credit to another account in the same step (the
    /// points a purchase earns): both or neither. `credit` is (account, amount, leg).
    pub async fn debit_crediting(
        &self,
        step: Step,
        account: &str,
        amount: i64,
        leg_id: &str,
        credit: (&str, i64, &str),
    ) -> Result<Balance, LedgerError> {
        let (credit_account, credit_amount, credit_leg) = credit;
        let immediate = |account: &str, amount, kind| Leg {
            account: account.into(),
            amount,
            state: LegState::Done,
            expires_ms: 0,
            kind,
        };
        let legs = [
            (leg_id, immediate(account, amount, EntryType::Debit)),
            (
                credit_leg,
                immediate(credit_account, credit_amount, EntryType::Credit),
            ),
        ];
        self.place_all(step, &legs).await
    }

    async fn immediate(
        &self,
        step: Step,
        account: &str,
        amount: i64,
        leg_id: &str,
        kind: EntryType,
    ) -> Result<Balance, LedgerError> {
        let leg = Leg {
            account: account.into(),
            amount,
            state: LegState::Done,
            expires_ms: 0,
            kind,
        };
        self.place(step, leg_id, leg).await
    }

    /// Place a pending hold (an authorization). Idempotent by `leg`: a repeat returns the
    /// balance without a second hold. Refused when less than `amount` is available.
    pub async fn hold(
        &self,
        account: &str,
        amount: i64,
        leg_id: &str,
    ) -> Result<Balance, LedgerError> {
        self.hold_with(Step::new(), account, amount, leg_id).await
    }

    /// As [`Ledger::hold`], in one step with the caller's writes. A repeat of the leg writes
    /// nothing, not even those.
    pub async fn hold_with(
        &self,
        step: Step,
        account: &str,
        amount: i64,
        leg_id: &str,
    ) -> Result<Balance, LedgerError> {
        let ttl = i64::try_from(self.hold_ttl.as_millis()).unwrap_or(i64::MAX);
        let expires = now_ms().saturating_add(ttl);
        let leg = Leg {
            account: account.into(),
            amount,
            state: LegState::Pending,
            expires_ms: expires,
            kind: EntryType::Hold,
        };
        self.place(step, leg_id, leg).await
    }

    /// A new leg on an account: checked (amount, account, repeat, funds for what takes money
    /// out) and recorded under the account's lock.
    async fn place(&self, step: Step, leg_id: &str, leg: Leg) -> Result<Balance, LedgerError> {
        self.place_all(step, &[(leg_id, leg)]).await
    }

    /// New legs, on one or more accounts, checked as [`Ledger::place`] does and recorded in
    /// one step under all their accounts' locks: all of them or none. Returns the first
    /// leg's account balance; when the first leg is a repeat nothing is written (it was
    /// done, with the others, already).
    async fn place_all(
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
            _guards.push(self.lock(account).await);
        }
        if self.leg(first_id)?.is_some() {
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
            if self.leg(leg_id)?.is_some() {
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
            entry.apply_to(&mut balance);
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
        step.synced();
        self.journal.commit(step).await.map_err(storage)?;
        for (leg_id, leg) in recorded {
            if let Some(balance) = after.get(leg.account.as_str()) {
                self.applied(*balance, leg_id, leg, leg.kind);
            }
        }
        Ok(after
            .get(first.account.as_str())
            .copied()
            .unwrap_or_default())
    }

    /// Complete a hold. Posting a posted leg again is a no-op.
    pub async fn post(&self, leg_id: &str) -> Result<Balance, LedgerError> {
        self.settle(leg_id, EntryType::Post).await
    }

    /// Complete a hold for `amount` (at most what it holds): that much is posted and the
    /// rest released, in one step; the leg then stands for the posted amount (what a refund
    /// gives back). Completing a completed leg again is a no-op.
    pub async fn complete(&self, leg_id: &str, amount: i64) -> Result<Balance, LedgerError> {
        self.complete_crediting(leg_id, amount, None).await
    }

    /// As [`Ledger::complete`], with a credit to another account in the same step (the
    /// points the completed spend earns): `credit` is (account, amount, leg).
    pub async fn complete_crediting(
        &self,
        leg_id: &str,
        amount: i64,
        credit: Option<(&str, i64, &str)>,
    ) -> Result<Balance, LedgerError> {
        let Some(first) = self.leg(leg_id)? else {
            return Err(LedgerError::UnknownLeg(leg_id.into()));
        };
        let mut accounts = vec![first.account.as_str()];
        accounts.extend(credit.map(|(account, _, _)| account));
        accounts.sort_unstable();
        accounts.dedup();
        let mut _guards = Vec::with_capacity(accounts.len());
        for account in &accounts {
            _guards.push(self.lock(account).await);
        }
        // Read again under the lock: another task may have settled it meanwhile.
        let mut leg = self
            .leg(leg_id)?
            .ok_or_else(|| LedgerError::UnknownLeg(leg_id.into()))?;
        let current = self.balance(&leg.account).unwrap_or_default();
        match leg.state {
            LegState::Pending => {}
            LegState::Posted => return Ok(current),
            state => {
                return Err(LedgerError::WrongState {
                    leg: leg_id.into(),
                    state,
                    what: "completion",
                })
            }
        }
        if amount <= 0 || amount > leg.amount {
            return Err(LedgerError::BadAmount);
        }
        let released = leg.amount - amount;
        leg.state = LegState::Posted;
        leg.amount = amount;
        let mut step = Step::new();
        let mut after = current;
        self.write_entry(&mut step, EntryType::Post, leg_id, &leg)?
            .apply_to(&mut after);
        if released > 0 {
            self.write_entry_of(&mut step, EntryType::Release, released, leg_id, &leg)?
                .apply_to(&mut after);
        }
        assert!(
            after.available() >= 0,
            "ledger: completion of {leg_id} below zero"
        );
        let mut credited = None;
        if let Some((account, points, credit_leg)) = credit.filter(|&(_, p, _)| p > 0) {
            let mut balance = self
                .balance(account)
                .ok_or_else(|| LedgerError::UnknownAccount(account.into()))?;
            let earned = Leg {
                account: account.into(),
                amount: points,
                state: LegState::Done,
                expires_ms: 0,
                kind: EntryType::Credit,
            };
            self.write_entry(&mut step, EntryType::Credit, credit_leg, &earned)?
                .apply_to(&mut balance);
            credited = Some((balance, credit_leg, earned));
        }
        step.synced();
        self.journal.commit(step).await.map_err(storage)?;
        self.applied(after, leg_id, &leg, EntryType::Post);
        if let Some((balance, credit_leg, earned)) = credited {
            self.applied(balance, credit_leg, &earned, EntryType::Credit);
        }
        Ok(after)
    }

    /// Release a hold, refund a posted leg or an immediate debit, take back an immediate
    /// credit (if it is still there to take). Voiding twice is a no-op.
    pub async fn void(&self, leg_id: &str) -> Result<Balance, LedgerError> {
        self.settle(leg_id, EntryType::Void).await
    }

    async fn settle(&self, leg_id: &str, want: EntryType) -> Result<Balance, LedgerError> {
        let Some(first) = self.leg(leg_id)? else {
            return Err(LedgerError::UnknownLeg(leg_id.into()));
        };
        let _guard = self.lock(&first.account).await;
        // Read again under the lock: another task may have settled it meanwhile.
        let mut leg = self
            .leg(leg_id)?
            .ok_or_else(|| LedgerError::UnknownLeg(leg_id.into()))?;
        let current = self.balance(&leg.account).unwrap_or_default();
        let (kind, state) = match (want, leg.state) {
            (EntryType::Post, LegState::Pending) => (EntryType::Post, LegState::Posted),
            (EntryType::Post, LegState::Posted) => return Ok(current),
            (EntryType::Void, LegState::Pending) => (EntryType::Void, LegState::Voided),
            (EntryType::Void, LegState::Posted) => (EntryType::Refund, LegState::Refunded),
            (EntryType::Void, LegState::Voided | LegState::Refunded | LegState::Expired) => {
                return Ok(current)
            }
            (EntryType::Void, LegState::Done) if leg.kind == EntryType::Debit => {
                (EntryType::Refund, LegState::Refunded)
            }
            (EntryType::Void, LegState::Done) if leg.kind == EntryType::Credit => {
                if current.available() < leg.amount {
                    return Err(LedgerError::Insufficient {
                        available: current.available(),
                    });
                }
                (EntryType::Debit, LegState::Refunded)
            }
            (EntryType::Expire, LegState::Pending) => (EntryType::Expire, LegState::Expired),
            (_, state) => {
                return Err(LedgerError::WrongState {
                    leg: leg_id.into(),
                    state,
                    what: match want {
                        EntryType::Post => "posting",
                        EntryType::Expire => "expiry",
                        _ => "voiding",
                    },
                })
            }
        };
        leg.state = state;
        self.record(Step::new(), kind, leg_id, &leg).await
    }

    /// Release every pending hold past its expiry. Returns how many.
    pub async fn expire_holds(&self) -> Result<usize, LedgerError> {
        let now = now_ms();
        let due: Vec<String> = match self.pending.lock() {
            Ok(pending) => pending
                .iter()
                .take_while(|(expires, _)| *expires <= now)
                .map(|(_, id)| id.clone())
                .collect(),
            Err(_) => return Err(storage("pending holds lock poisoned")),
        };
        let mut expired = 0;
        for id in due {
            match self.settle(&id, EntryType::Expire).await {
                Ok(_) => {
                    expired += 1;
                    self.holds_expired.increment(1);
                }
                // Posted or voided since the list was taken.
                Err(LedgerError::WrongState { .. }) => {}
                Err(e) => return Err(e),
            }
        }
        Ok(expired)
    }

    /// An account's entries, oldest first.
    pub fn history(&self, account: &str) -> Result<Vec<LedgerEntry>, LedgerError> {
        let mut prefix = account.as_bytes().to_vec();
        prefix.push(0);
        self.journal
            .scan(Cf::LedgerEntries, &prefix)
            .map_err(storage)?
            .into_iter()
            .map(|(_, v)| serde_json::from_slice(&v).map_err(storage))
            .collect()
    }

    /// An account's entries made at or after `since_ms`, oldest first. Read backwards from
    /// the newest: an account's entries are keyed in the order they were recorded (under
    /// its lock), so this reads today's entries, not the account's whole past.
    pub fn history_since(
        &self,
        account: &str,
        since_ms: i64,
    ) -> Result<Vec<LedgerEntry>, LedgerError> {
        let mut prefix = account.as_bytes().to_vec();
        prefix.push(0);
        let mut recent = Vec::new();
        let mut damaged = None;
        let store = self.journal.store();
        store
            .for_each_rev(Cf::LedgerEntries, &prefix, |_, v| {
                match serde_json::from_slice::<LedgerEntry>(v) {
                    Ok(e) if e.at_ms >= since_ms => {
                        recent.push(e);
                        return std::ops::ControlFlow::Continue(());
                    }
                    Ok(_) => {}
                    Err(e) => damaged = Some(e),
                }
                std::ops::ControlFlow::Break(())
            })
            .map_err(storage)?;
        if let Some(e) = damaged {
            return Err(storage(e));
        }
        recent.reverse();
        Ok(recent)
    }

    /// Balances derived afresh from the stored entries (for checks: must equal
    /// [`Ledger::balance`]).
    pub fn derive(&self, account: &str) -> Result<Balance, LedgerError> {
        let mut b = Balance::default();
        for e in self.history(account)? {
            e.apply_to(&mut b);
        }
        Ok(b)
    }

    /// Every account with its balance.
    pub fn balances(&self) -> HashMap<String, Balance> {
        self.balances
            .iter()
            .map(|e| (e.key().clone(), *e.value()))
            .collect()
    }
}
