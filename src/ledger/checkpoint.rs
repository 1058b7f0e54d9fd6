//! What the ledger's memory holds, written at a clean stop, so that the next start need not
//! replay all history.
//!
//! Balances are derived from entries (SPEC §7), and deriving them at open replays every entry
//! ever written (~0.6 s per million) and reads every leg ever placed for the pending holds:
//! a start-up that grows with the ledger's age. At a graceful stop, once no write can begin
//! any more, the ledger writes what that replay would give: each account's balance with the
//! sequence number of its last entry, the pending holds, the next sequence number.
//!
//! The checkpoint is a cache of derived state, never a second truth: the next open uses it
//! only if every account's last entry is still the one it names (one backwards seek per
//! account) and every account of the ledger is in it. Any entry written since — by a build
//! that does not know checkpoints, a tool, anything — sends the open back to the full
//! replay. Its header is removed at open, before the ledger can write, and a checkpoint is
//! complete only once its header (written last, synced) is there: a stop killed half-way
//! leaves none. The records without a header are cleared by the next stop before it writes.

use std::collections::{BTreeSet, HashSet};
use std::ops::ControlFlow;
use std::sync::atomic::Ordering;

use dashmap::DashMap;
use serde::{Deserialize, Serialize};

use super::{storage, Balance, Ledger, LedgerError, State};
use crate::store::{Cf, Store};

/// Every key of the checkpoint starts with this (in `Cf::Meta`).
const PREFIX: &[u8] = b"ledger-checkpoint/";
/// The header, written last: without it there is no checkpoint.
const HEADER: &[u8] = b"ledger-checkpoint/h";
/// `PREFIX` + `a/` + account → [`AccountAt`].
const ACCOUNTS: &[u8] = b"ledger-checkpoint/a/";
/// `PREFIX` + `p/` + leg → its expiry (ms, big-endian): the pending holds.
const PENDING: &[u8] = b"ledger-checkpoint/p/";
/// Writes per batch while the checkpoint is written or removed.
const CHUNK: usize = 10_000;
/// The layout of what is written here; another one is not read.
const VERSION: u32 = 1;

#[derive(Serialize, Deserialize)]
struct Header {
    version: u32,
    next_seq: u64,
    open_holds: i64,
    accounts: u64,
    pending: u64,
}

/// One account at the stop (postcard: there is one per account, read at every start).
#[derive(Serialize, Deserialize)]
struct AccountAt {
    posted: i64,
    pending: i64,
    /// The sequence number of its last entry (none: it has none).
    last_seq: Option<u64>,
}

fn key(prefix: &[u8], name: &[u8]) -> Vec<u8> {
    let mut k = prefix.to_vec();
    k.extend_from_slice(name);
    k
}

/// The sequence number of each account's last entry in the store (none: it has none).
fn last_seqs<'a>(
    store: &Store,
    accounts: impl Iterator<Item = &'a str>,
) -> Result<Vec<Option<u64>>, String> {
    let prefixes: Vec<Vec<u8>> = accounts
        .map(|a| {
            let mut p = a.as_bytes().to_vec();
            p.push(0);
            p
        })
        .collect();
    let last = store.last_keys(Cf::LedgerEntries, &prefixes)?;
    Ok(prefixes
        .iter()
        .zip(last)
        .map(|(prefix, key)| {
            key.as_deref()
                .and_then(|k| k.get(prefix.len()..))
                .and_then(|s| <[u8; 8]>::try_from(s).ok())
                .map(u64::from_be_bytes)
        })
        .collect())
}

impl Ledger {
    /// Stop the ledger and write its checkpoint (at a graceful stop, once nothing else should
    /// write). From the call on every write is refused ([`LedgerError::Stopped`]); the walk
    /// takes each account's lock in turn, so a write that began before is finished (or
    /// refused) before its account is read. Returns how many accounts were written.
    pub async fn checkpoint(&self) -> Result<usize, LedgerError> {
        self.closed.store(true, Ordering::Release);
        let store = self.journal.store();
        // What an earlier checkpoint left (its header went at the open that read it).
        remove_records(store).map_err(storage)?;
        // The accounts memory knows, and those a dropped write is opening (in doubt).
        let mut accounts: Vec<String> = self.balances.iter().map(|e| e.key().clone()).collect();
        accounts.extend(self.in_doubt.iter().map(|e| e.key().clone()));
        // In key order, so the look-ups of their last entries go forward.
        accounts.sort_unstable();
        accounts.dedup();
        // Each account read under its lock: a write that took it before the stop finishes
        // first, and none can begin after.
        let mut balances = Vec::with_capacity(accounts.len());
        for account in &accounts {
            let _held = self.locks.lock(account).await;
            self.settle_doubt(account).await;
            balances.push(self.balance(account).unwrap_or_default());
        }
        // Nothing writes any more: each account's last entry is the one its balance is of.
        let last = last_seqs(store, accounts.iter().map(String::as_str)).map_err(storage)?;
        let mut records = Records::new(store);
        for ((account, b), last_seq) in accounts.iter().zip(balances).zip(last) {
            let at = AccountAt {
                posted: b.posted,
                pending: b.pending,
                last_seq,
            };
            let value = postcard::to_allocvec(&at).map_err(storage)?;
            records.put(&key(ACCOUNTS, account.as_bytes()), &value)?;
        }
        // Every write has finished or been refused: what is pending is what stays pending.
        let pending: Vec<(i64, String)> = match self.pending.lock() {
            Ok(p) => p.iter().cloned().collect(),
            Err(_) => return Err(storage("pending holds: lock poisoned")),
        };
        for (expires, leg) in &pending {
            records.put(&key(PENDING, leg.as_bytes()), &expires.to_be_bytes())?;
        }
        let header = Header {
            version: VERSION,
            next_seq: self.next_seq.load(Ordering::Acquire),
            open_holds: self.open_holds.load(Ordering::Acquire),
            accounts: accounts.len() as u64,
            pending: pending.len() as u64,
        };
        let value = serde_json::to_vec(&header).map_err(storage)?;
        // Synced: the header lands after every record before it (one log, in order).
        records.finish(HEADER, &value)?;
        Ok(accounts.len())
    }

    /// How the memory was built at open.
    pub fn started_from(&self) -> super::Start {
        self.start
    }
}

/// The ledger's state from the checkpoint, if there is one and it still describes the
/// store; `Err` says why one that is there cannot be used.
pub(super) fn load(store: &Store) -> Result<Option<State>, String> {
    let Some(raw) = store.get(Cf::Meta, HEADER)? else {
        return Ok(None);
    };
    let header: Header = serde_json::from_slice(&raw).map_err(|e| format!("header: {e}"))?;
    if header.version != VERSION {
        return Err(format!(
            "layout {} (this build reads {VERSION})",
            header.version
        ));
    }
    // In key order (as read), so the look-ups of their last entries go forward.
    let saved = records(store, ACCOUNTS, |v| {
        postcard::from_bytes::<AccountAt>(v).ok()
    })?;
    if saved.len() as u64 != header.accounts {
        return Err(format!(
            "{} accounts of {} written",
            saved.len(),
            header.accounts
        ));
    }
    // Every account of the ledger is in it…
    let names: HashSet<&str> = saved.iter().map(|(a, _)| a.as_str()).collect();
    let mut missing = None;
    store.for_each(Cf::LedgerAccounts, b"", |k, _| {
        let name = String::from_utf8_lossy(k);
        if names.contains(name.as_ref()) {
            return ControlFlow::Continue(());
        }
        missing = Some(name.into_owned());
        ControlFlow::Break(())
    })?;
    if let Some(account) = missing {
        return Err(format!("account {account} opened since"));
    }
    // …and no entry was written to any of them since.
    let now = last_seqs(store, saved.iter().map(|(a, _)| a.as_str()))?;
    for ((account, at), now) in saved.iter().zip(now) {
        if now != at.last_seq {
            return Err(format!(
                "account {account}: last entry {now:?}, the checkpoint's {:?}",
                at.last_seq
            ));
        }
    }
    let pending: BTreeSet<(i64, String)> = records(store, PENDING, |v| {
        <[u8; 8]>::try_from(v).ok().map(i64::from_be_bytes)
    })?
    .into_iter()
    .map(|(leg, expires)| (expires, leg))
    .collect();
    if pending.len() as u64 != header.pending {
        return Err(format!(
            "{} pending holds of {} written",
            pending.len(),
            header.pending
        ));
    }
    let balances: DashMap<String, Balance> = saved
        .into_iter()
        .map(|(name, at)| {
            let b = Balance {
                posted: at.posted,
                pending: at.pending,
            };
            (name, b)
        })
        .collect();
    Ok(Some(State {
        balances,
        next_seq: header.next_seq,
        open_holds: header.open_holds,
        pending,
    }))
}

/// The checkpoint's records, written a chunk at a time (unsynced), then the header, synced.
struct Records<'s> {
    store: &'s Store,
    batch: crate::store::Batch<'s>,
    in_batch: usize,
}

impl<'s> Records<'s> {
    fn new(store: &'s Store) -> Records<'s> {
        Records {
            store,
            batch: store.batch(),
            in_batch: 0,
        }
    }

    fn put(&mut self, key: &[u8], value: &[u8]) -> Result<(), LedgerError> {
        self.batch.put(Cf::Meta, key, value).map_err(storage)?;
        self.in_batch += 1;
        if self.in_batch == CHUNK {
            let full = std::mem::replace(&mut self.batch, self.store.batch());
            self.store.write(full, false).map_err(storage)?;
            self.in_batch = 0;
        }
        Ok(())
    }

    fn finish(mut self, header: &[u8], value: &[u8]) -> Result<(), LedgerError> {
        self.batch.put(Cf::Meta, header, value).map_err(storage)?;
        self.store.write(self.batch, true).map_err(storage)
    }
}

/// Every record under `prefix` (its name, what it decodes to), in key order; `Err` names the
/// first that does not decode.
fn records<T>(
    store: &Store,
    prefix: &[u8],
    decode: impl Fn(&[u8]) -> Option<T>,
) -> Result<Vec<(String, T)>, String> {
    let mut out = Vec::new();
    let mut damaged = None;
    store.for_each(Cf::Meta, prefix, |k, v| {
        let name = String::from_utf8_lossy(k.strip_prefix(prefix).unwrap_or(k)).into_owned();
        match decode(v) {
            Some(record) => {
                out.push((name, record));
                ControlFlow::Continue(())
            }
            None => {
                damaged = Some(name);
                ControlFlow::Break(())
            }
        }
    })?;
    match damaged {
        Some(name) => Err(format!("record {name:?} is damaged")),
        None => Ok(out),
    }
}

/// Remove the checkpoint's header: what is left is no checkpoint (its records are
/// cleared by the next [`Ledger::checkpoint`]).
pub(super) fn consume(store: &Store) -> Result<(), String> {
    if store.get(Cf::Meta, HEADER)?.is_none() {
        return Ok(());
    }
    let mut batch = store.batch();
    batch.delete(Cf::Meta, HEADER)?;
    store.write(batch, true)
}

/// Remove every record of the checkpoint, a chunk at a time.
fn remove_records(store: &Store) -> Result<(), String> {
    loop {
        let mut keys = Vec::new();
        store.for_each(Cf::Meta, PREFIX, |k, _| {
            keys.push(k.to_vec());
            if keys.len() == CHUNK {
                ControlFlow::Break(())
            } else {
                ControlFlow::Continue(())
            }
        })?;
        if keys.is_empty() {
            return Ok(());
        }
        let mut batch = store.batch();
        for k in &keys {
            batch.delete(Cf::Meta, k)?;
        }
        // Not synced: the header that follows is, and lands after them (one log, in order).
        store.write(batch, false)?;
    }
}
