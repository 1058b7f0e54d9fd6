//! The hosted ledger (SPEC §7): accounts, holds and entries in RocksDB, with two-phase
//! semantics. An authorization places a *pending* hold that reduces what is available;
//! completion *posts* it; a reversal *voids* it (or, once posted, refunds it); holds expire.
//!
//! - Entries are the truth. Balances are derived from them: replayed at open, then kept in
//!   memory as each committed entry is applied. Nothing stores a balance that could drift.
//! - Every operation is idempotent by its leg id: a repeat writes nothing and returns the
//!   account's balance as it stands.
//! - `available = posted credits − posted debits − pending holds ≥ 0` under any concurrency:
//!   operations on one account are serialised (check, commit, apply under the account's
//!   lock), and the invariant is asserted before each entry is written (replay at open
//!   reports a breach in stored data rather than refusing to start).
//! - Every entry is written through the journal (one synced step per operation), so a
//!   posting is durable before anyone is told of it, and it is in the journal.
//!
//! This file holds the [`Ledger`] itself, its errors and its replay at open. The rest:
//!
//! - `entries`: entries and the balances derived from them.
//! - `legs`: legs, what makes every operation idempotent.
//! - `accounts`: opening accounts and reading their balances.
//! - `immediate`: credits and debits posted at once.
//! - `holds`: two-phase holds — placed pending, then posted, voided or expired.
//! - `history`: an account's entries read back.
//! - `write`: the write path all of them share (lock, check, commit, apply).

mod accounts;
mod checkpoint;
mod entries;
mod history;
mod holds;
mod immediate;
mod legs;
mod refunds;
mod write;

pub use accounts::{Account, NewAccount};
pub use entries::{Balance, EntryType, LedgerEntry};
pub use legs::{Leg, LegState};

use std::collections::BTreeSet;
use std::ops::ControlFlow;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64};
use std::sync::Arc;
use std::time::Duration;

use dashmap::DashMap;

use crate::journal::Journal;
use crate::keylock::KeyLocks;
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
    #[error("the balance would leave the range the ledger can hold")]
    OutOfRange,
    /// A leg id already placed by another operation (another account, kind or amount): a
    /// refusal, never a silent repeat.
    #[error("leg {0} exists for another operation")]
    LegCollision(String),
    #[error("ledger storage: {0}")]
    Storage(String),
    /// The switch is stopping: the ledger wrote its checkpoint and takes no more writes.
    #[error("the hosted ledger is stopped")]
    Stopped,
}

pub struct Ledger {
    /// Itself, for the task that settles what a dropped write left in doubt.
    me: std::sync::Weak<Ledger>,
    journal: Arc<Journal>,
    balances: DashMap<String, Balance>,
    /// One lock per account: check, commit and apply happen under it.
    locks: KeyLocks,
    next_seq: AtomicU64,
    hold_ttl: Duration,
    /// Holds placed and not yet posted, voided or expired (derived from the entries at
    /// open, then kept with every entry recorded).
    open_holds: AtomicI64,
    /// Set by [`Ledger::checkpoint`] at a stop: every write is refused from then on.
    closed: AtomicBool,
    /// Changes of steps whose callers stopped waiting before they landed, by account: the
    /// next holder of the account's lock applies them first (`write::commit_and_apply`).
    in_doubt: DashMap<String, Arc<write::InDoubt>>,
    /// How the memory was built at open.
    start: Start,
    /// Pending holds by expiry: what the expiry sweep looks at (it read every leg ever
    /// placed before). Built from the legs at open, then kept with every entry recorded.
    pending: std::sync::Mutex<BTreeSet<(i64, String)>>,
    open_holds_gauge: metrics::Gauge,
    holds_expired: metrics::Counter,
    /// Entry times and hold expiries come from here (tests set it).
    clock: Arc<dyn crate::clock::Clock>,
}

fn storage(e: impl std::fmt::Display) -> LedgerError {
    LedgerError::Storage(e.to_string())
}

impl Ledger {
    /// Now, in ms since the epoch, by the ledger's clock.
    fn now_ms(&self) -> i64 {
        self.clock.now_ms()
    }

    /// Open the ledger over the journal's database: every account's balance is derived by
    /// replaying its entries.
    pub fn open(journal: Arc<Journal>, hold_ttl: Duration) -> Result<Arc<Ledger>, LedgerError> {
        Ledger::open_with_clock(journal, hold_ttl, Arc::new(crate::clock::SystemClock))
    }

    /// As [`Ledger::open`], reading the time from `clock`.
    pub fn open_with_clock(
        journal: Arc<Journal>,
        hold_ttl: Duration,
        clock: Arc<dyn crate::clock::Clock>,
    ) -> Result<Arc<Ledger>, LedgerError> {
        let store = journal.store();
        let began = std::time::Instant::now();
        let (state, start) = match checkpoint::load(store) {
            Ok(Some(state)) => (state, Start::Checkpoint),
            Ok(None) => (replay(store)?, Start::Replay),
            Err(why) => {
                tracing::warn!(reason = %why, "hosted ledger: the stop's checkpoint is not used");
                (replay(store)?, Start::Replay)
            }
        };
        // Gone before the ledger can write: a checkpoint describes one stop, never a later one.
        if let Err(e) = checkpoint::consume(store) {
            tracing::error!(error = %e, "hosted ledger: the stop's checkpoint not removed");
        }
        tracing::info!(
            from = ?start,
            accounts = state.balances.len(),
            open_holds = state.open_holds,
            ms = began.elapsed().as_millis() as u64,
            "hosted ledger opened"
        );
        let State {
            balances,
            next_seq,
            open_holds,
            pending,
        } = state;
        let open_holds_gauge = metrics::gauge!("cyberswitch_ledger_open_holds");
        open_holds_gauge.set(open_holds as f64);
        Ok(Arc::new_cyclic(|me| Ledger {
            me: me.clone(),
            clock,
            journal,
            balances,
            locks: KeyLocks::new(),
            next_seq: AtomicU64::new(next_seq),
            closed: AtomicBool::new(false),
            in_doubt: DashMap::new(),
            start,
            hold_ttl,
            open_holds: AtomicI64::new(open_holds),
            pending: std::sync::Mutex::new(pending),
            open_holds_gauge,
            holds_expired: metrics::counter!("cyberswitch_ledger_holds_expired_total"),
        }))
    }
}

/// How the ledger's memory was built at open.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Start {
    /// Every entry and leg replayed.
    Replay,
    /// Read from the checkpoint of a clean stop, found still true.
    Checkpoint,
}

/// What the ledger keeps in memory, derived from the entries.
struct State {
    balances: DashMap<String, Balance>,
    next_seq: u64,
    open_holds: i64,
    pending: BTreeSet<(i64, String)>,
}

/// Every account's balance from all its entries, the pending holds from all legs: read a
/// record at a time (the entries and legs of all history need not fit in memory at once).
fn replay(store: &crate::store::Store) -> Result<State, LedgerError> {
    let balances: DashMap<String, Balance> = DashMap::new();
    store
        .for_each(Cf::LedgerAccounts, b"", |k, _| {
            balances.insert(String::from_utf8_lossy(k).into_owned(), Balance::default());
            ControlFlow::Continue(())
        })
        .map_err(storage)?;
    let mut max_seq = 0;
    let mut open_holds = 0;
    let mut damaged = None;
    store
        .for_each(Cf::LedgerEntries, b"", |_, v| {
            let e: LedgerEntry = match serde_json::from_slice(v) {
                Ok(e) => e,
                Err(e) => {
                    damaged = Some(storage(e));
                    return ControlFlow::Break(());
                }
            };
            max_seq = max_seq.max(e.seq);
            open_holds += e.kind.open_holds_delta();
            let mut b = balances.entry(e.account.clone()).or_default();
            if e.apply_to(&mut b).is_err() {
                tracing::error!(account = %e.account, seq = e.seq, "ledger replay: entry out of range, skipped");
            }
            // Only an entry that takes money must leave something available: a clawback
            // of earned points may leave a recorded debt (see `holds`).
            if b.available() < 0 && e.kind.takes_money() {
                tracing::error!(account = %e.account, "ledger replay: available below zero");
            }
            ControlFlow::Continue(())
        })
        .map_err(storage)?;
    if let Some(e) = damaged {
        return Err(e);
    }
    let mut pending = BTreeSet::new();
    store
        .for_each(Cf::LedgerLegs, b"", |k, v| {
            match serde_json::from_slice::<Leg>(v) {
                Ok(leg) if leg.state == LegState::Pending => {
                    pending.insert((leg.expires_ms, String::from_utf8_lossy(k).into_owned()));
                }
                Ok(_) => {}
                Err(e) => {
                    damaged = Some(storage(e));
                    return ControlFlow::Break(());
                }
            }
            ControlFlow::Continue(())
        })
        .map_err(storage)?;
    if let Some(e) = damaged {
        return Err(e);
    }
    // Written in the same steps, so they agree unless the data was damaged.
    if pending.len() as i64 != open_holds {
        tracing::error!(
            pending_legs = pending.len(),
            open_holds,
            "ledger: pending legs and hold entries disagree"
        );
    }
    Ok(State {
        balances,
        next_seq: max_seq + 1,
        open_holds,
        pending,
    })
}
