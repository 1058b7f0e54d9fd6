//! Reading the journal back, for `cyberswitch journal show|tail|find`. Entries are stored
//! masked, so what is printed is masked too.

use rocksdb::{IteratorMode, DB};

use super::entry::{record_from_bytes, Entry};
use crate::store::{self, Cf};

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

fn records(db: &DB, mode: IteratorMode<'_>, limit: usize) -> Result<Vec<Vec<Numbered>>, String> {
    let cf = store::handle(db, Cf::Journal)?;
    db.iterator_cf(cf, mode)
        .take(limit)
        .map(|r| {
            r.map_err(|e| e.to_string())
                .and_then(|(k, v)| decode(&k, &v))
        })
        .collect()
}

/// The entries of up to `limit` records from record `start` on.
pub fn from(db: &DB, start: u64, limit: usize) -> Result<Vec<Numbered>, String> {
    let key = start.to_be_bytes();
    let mode = IteratorMode::From(&key, rocksdb::Direction::Forward);
    Ok(records(db, mode, limit)?.into_iter().flatten().collect())
}

/// The entries of the last `n` records, oldest first.
pub fn tail(db: &DB, n: usize) -> Result<Vec<Numbered>, String> {
    let mut out = records(db, IteratorMode::End, n)?;
    out.reverse();
    Ok(out.into_iter().flatten().collect())
}

/// Every entry of the transactions whose messages carry this retrieval reference number (a
/// full scan: the journal is not indexed by RRN).
pub fn find_rrn(db: &DB, rrn: &str) -> Result<Vec<Numbered>, String> {
    let all = from(db, 0, usize::MAX)?;
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
