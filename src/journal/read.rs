//! Reading the journal back, for `cyberswitch journal show|tail|find`. Entries are stored
//! masked, so what is printed is masked too.

use std::ops::ControlFlow;

use super::entry::{record_from_bytes, Entry};
use crate::store::{Cf, Store};

/// A journal entry with its record's sequence number and its place in the record.
pub type Numbered = (u64, usize, Entry);

/// The entries of one record.
fn decode(k: &[u8], v: &[u8]) -> Result<Vec<Numbered>, String> {
    let seq = <[u8; 8]>::try_from(k)
        .map(u64::from_be_bytes)
        .map_err(|_| "journal key is not a sequence number".to_string())?;
    Ok(record_from_bytes(v)?
        .into_iter()
        .enumerate()
        .map(|(i, e)| (seq, i, e))
        .collect())
}

/// Up to `limit` records, from record `start` on, or (`None`) the last ones, newest first.
fn records(store: &Store, start: Option<u64>, limit: usize) -> Result<Vec<Vec<Numbered>>, String> {
    let mut out = Vec::new();
    if limit == 0 {
        return Ok(out);
    }
    let mut damaged = None;
    let take = |k: &[u8], v: &[u8]| match decode(k, v) {
        Ok(record) => {
            out.push(record);
            if out.len() < limit {
                ControlFlow::Continue(())
            } else {
                ControlFlow::Break(())
            }
        }
        Err(e) => {
            damaged = Some(e);
            ControlFlow::Break(())
        }
    };
    match start {
        Some(start) => store.for_each_from(Cf::Journal, &start.to_be_bytes(), take)?,
        None => store.for_each_rev(Cf::Journal, b"", take)?,
    }
    damaged.map_or(Ok(out), Err)
}

/// The entries of up to `limit` records from record `start` on.
pub fn from(store: &Store, start: u64, limit: usize) -> Result<Vec<Numbered>, String> {
    Ok(records(store, Some(start), limit)?
        .into_iter()
        .flatten()
        .collect())
}

/// The entries of the last `n` records, oldest first.
pub fn tail(store: &Store, n: usize) -> Result<Vec<Numbered>, String> {
    let mut out = records(store, None, n)?;
    out.reverse();
    Ok(out.into_iter().flatten().collect())
}

/// Every entry of the transactions whose messages carry this retrieval reference number (a
/// full scan: the journal is not indexed by RRN).
pub fn find_rrn(store: &Store, rrn: &str) -> Result<Vec<Numbered>, String> {
    let all = from(store, 0, usize::MAX)?;
    let txns: std::collections::HashSet<&str> = all
        .iter()
        .filter(|(_, _, e)| e.rrn == rrn && !e.txn.is_empty())
        .map(|(_, _, e)| e.txn.as_str())
        .collect();
    Ok(all
        .iter()
        .filter(|(_, _, e)| e.rrn == rrn || txns.contains(e.txn.as_str()))
        .cloned()
        .collect())
}
