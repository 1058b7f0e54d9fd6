//! F17 virtual accounts: pools of bank virtual account numbers per partner × bank × region,
//! one assigned per order, deposits matched in real time on a bank listener ([`bank`]), the
//! partner told through the callback outbox ([`crate::outbox`]), a collection report per
//! partner and period ([`report`]).
//!
//! Every change (pool, assignment, payment, expiry, mismatch) is one synced journal step,
//! made under one lock: the state is small and changes are rare next to card traffic, and
//! one lock makes "unique while open" and "paid once" hold without reasoning about races.
//! The answer to a bank leaves only after the step that decided it is on disk.
//!
//! This file holds the records and the one lock; the operations on them, one concept a file:
//! [`pools`] (adding and retiring accounts), [`orders`] (assignment, expiry and its sweep),
//! [`deposits`] (matching a bank's deposit to an order, its reversal, the duplicate window),
//! [`mismatches`] (advices that matched nothing); the storage layout is in [`keys`].

pub mod bank;
mod deposits;
mod indexes;
mod keys;
mod mismatches;
mod orders;
mod pools;
pub mod report;

use std::ops::ControlFlow;
use std::sync::Arc;

use serde::{Deserialize, Serialize};
use tokio::sync::Mutex;

use crate::clock::Clock;
use crate::config::Config;
use crate::journal::{Entry, Journal};
use crate::outbox::Outbox;
use crate::store::Cf;

use keys::{acct_key, order_key};

/// The longest account number (field 103 is ans..28).
pub const ACCOUNT_MAX: usize = 28;
/// The longest order id.
pub const ORDER_MAX: usize = 64;
/// The largest amount (field 4 is n12).
pub const AMOUNT_MAX: u64 = 999_999_999_999;

#[derive(Debug, thiserror::Error)]
pub enum VaError {
    #[error("{0}")]
    Invalid(String),
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    Conflict(String),
    #[error("no free account in pool {0}")]
    Exhausted(String),
    #[error("storage: {0}")]
    Storage(String),
}

impl From<crate::journal::JournalError> for VaError {
    fn from(e: crate::journal::JournalError) -> VaError {
        VaError::Storage(e.to_string())
    }
}

/// An account of a pool.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PoolAccount {
    pub partner: String,
    pub bank: String,
    pub region: String,
    pub account: String,
    /// The order it is assigned to, while that order is open.
    pub order: Option<String>,
    /// Retired: out of the pool (if still assigned, once its order is paid or expires).
    pub retired: bool,
    pub added_ms: i64,
}

impl PoolAccount {
    fn state(&self) -> &'static str {
        match (&self.order, self.retired) {
            (None, false) => "free",
            (Some(_), false) => "assigned",
            (Some(_), true) => "retiring",
            (None, true) => "retired",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OrderStatus {
    Open,
    Paid,
    Expired,
}

/// The deposit that paid an order.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Deposit {
    pub listener: String,
    pub mti: String,
    pub stan: Option<u32>,
    pub rrn: Option<String>,
    pub amount: u64,
    pub at_ms: i64,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct HistoryEvent {
    pub at_ms: i64,
    pub event: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Order {
    pub order: String,
    pub partner: String,
    pub bank: String,
    pub region: String,
    pub account: String,
    pub amount: u64,
    pub created_ms: i64,
    pub expires_ms: i64,
    pub status: OrderStatus,
    pub paid_ms: Option<i64>,
    pub deposit: Option<Deposit>,
    pub history: Vec<HistoryEvent>,
}

impl Order {
    /// Open but past its expiry: expired, whether or not the sweep has written so yet.
    pub fn status_at(&self, now_ms: i64) -> OrderStatus {
        match self.status {
            OrderStatus::Open if now_ms >= self.expires_ms => OrderStatus::Expired,
            s => s,
        }
    }

    /// As stored, with the status as of `now_ms`.
    pub fn as_of(mut self, now_ms: i64) -> Order {
        if self.status_at(now_ms) == OrderStatus::Expired && self.status == OrderStatus::Open {
            self.status = OrderStatus::Expired;
            self.history.push(HistoryEvent {
                at_ms: self.expires_ms,
                event: "expired".into(),
            });
        }
        self
    }
}

/// What a deposit message got (kept for its retransmissions).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Seen {
    pub code: String,
    pub order: Option<String>,
    pub advice: bool,
    pub at_ms: i64,
    /// The bank reversed it (0400/0420) since.
    #[serde(default)]
    pub reversed: bool,
    /// The deposit's account and amount: a message reusing its reference with others is
    /// not a retransmission (empty for outcomes kept before they were).
    #[serde(default)]
    pub account: String,
    #[serde(default)]
    pub amount: u64,
}

/// An advice (0220: the bank booked the deposit already) that matched no open order.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Mismatch {
    pub id: String,
    pub at_ms: i64,
    pub listener: String,
    pub bank: String,
    pub account: String,
    pub amount: u64,
    pub rrn: Option<String>,
    pub stan: Option<u32>,
    /// `unknown account`, `unassigned`, `expired`, `wrong amount`.
    pub reason: String,
    /// The pool's partner, when the account is in one.
    pub partner: Option<String>,
    pub order: Option<String>,
}

/// A deposit question or advice, as the bank listener read it.
#[derive(Debug, Clone)]
pub struct DepositMsg {
    pub listener: String,
    pub bank: String,
    pub mti: String,
    /// 0220/0221: booked at the bank already.
    pub advice: bool,
    /// What retransmissions of this deposit share (see [`bank`]).
    pub key: String,
    pub account: String,
    pub amount: u64,
    pub stan: Option<u32>,
    pub rrn: Option<String>,
    /// The message itself, masked, journaled with the step that decides it.
    pub request: Entry,
}

/// A record as stored: these are plain structs of strings and numbers (no map with non-string
/// keys, no custom `Serialize`), for which serde_json cannot fail; the default is unreachable.
fn to_json<T: Serialize>(v: &T) -> Vec<u8> {
    serde_json::to_vec(v).unwrap_or_default()
}

pub struct VirtualAccounts {
    journal: Arc<Journal>,
    clock: Arc<dyn Clock>,
    config: Arc<Config>,
    outbox: Arc<Outbox>,
    /// Every change, one at a time (see the module's comment).
    lock: Mutex<()>,
}

impl VirtualAccounts {
    pub fn new(
        journal: Arc<Journal>,
        clock: Arc<dyn Clock>,
        config: Arc<Config>,
        outbox: Arc<Outbox>,
    ) -> Result<Arc<VirtualAccounts>, String> {
        indexes::index_records_kept_before(&journal)?;
        Ok(Arc::new(VirtualAccounts {
            journal,
            clock,
            config,
            outbox,
            lock: Mutex::new(()),
        }))
    }

    pub fn now_ms(&self) -> i64 {
        self.clock.now_ms()
    }

    fn raw(&self, key: &[u8]) -> Result<Option<Vec<u8>>, VaError> {
        self.journal
            .get(Cf::VirtualAccounts, key)
            .map_err(VaError::Storage)
    }

    fn read<T: serde::de::DeserializeOwned>(&self, key: &[u8]) -> Result<Option<T>, VaError> {
        match self.raw(key)? {
            Some(raw) => serde_json::from_slice(&raw)
                .map(Some)
                .map_err(|e| VaError::Storage(format!("{}: {e}", String::from_utf8_lossy(key)))),
            None => Ok(None),
        }
    }

    /// Visit the records under `prefix`, in key order from `start` (`prefix` itself: all)
    /// on, until `visit` says stop or fails: a listing reads what it returns, not the rest.
    fn visit(
        &self,
        prefix: &[u8],
        start: &[u8],
        mut visit: impl FnMut(&[u8], &[u8]) -> Result<ControlFlow<()>, VaError>,
    ) -> Result<(), VaError> {
        let mut failed = None;
        self.journal
            .store()
            .for_each_under(Cf::VirtualAccounts, prefix, start, |k, v| {
                visit(k, v).unwrap_or_else(|e| {
                    failed = Some(e);
                    ControlFlow::Break(())
                })
            })
            .map_err(VaError::Storage)?;
        failed.map_or(Ok(()), Err)
    }

    fn account(&self, bank: &str, account: &str) -> Result<Option<PoolAccount>, VaError> {
        self.read(&acct_key(bank, account))
    }

    /// An order as stored (status as stored).
    fn order_stored(&self, order: &str) -> Result<Option<Order>, VaError> {
        self.read(&order_key(order))
    }

    pub fn outbox(&self) -> &Arc<Outbox> {
        &self.outbox
    }
}

#[cfg(test)]
mod tests;
