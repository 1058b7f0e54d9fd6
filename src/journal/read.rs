//! Reading the journal back, for `cyberswitch journal show|tail|find`. Entries are stored
//! masked, so what is printed is masked too.

use rocksdb::{IteratorMode, DB};

use super::Entry;
use crate::store::{self, Cf};

/// A journal entry with its sequence number.
pub type Numbered = (u64, Entry);

fn decode(k: &[u8], v: &[u8]) -> Result<Numbered, String> {
    let seq = <[u8; 8]>::try_from(k)
        .map(u64::from_be_bytes)
        .map_err(|_| "journal key is not a sequence number".to_string())?;
    Ok((seq, Entry::from_bytes(v)?))
}

/// Up to `limit` entries from sequence `from` on.
pub fn from(db: &DB, start: u64, limit: usize) -> Result<Vec<Numbered>, String> {
    let cf = store::handle(db, Cf::Journal)?;
    let key = start.to_be_bytes();
    let mode = IteratorMode::From(&key, rocksdb::Direction::Forward);
    db.iterator_cf(cf, mode)
        .take(limit)
        .map(|r| {
            r.map_err(|e| e.to_string())
                .and_then(|(k, v)| decode(&k, &v))
        })
        .collect()
}

/// The last `n` entries, oldest first.
pub fn tail(db: &DB, n: usize) -> Result<Vec<Numbered>, String> {
    let cf = store::handle(db, Cf::Journal)?;
    let mut out: Vec<Numbered> = db
        .iterator_cf(cf, IteratorMode::End)
        .take(n)
        .map(|r| {
            r.map_err(|e| e.to_string())
                .and_then(|(k, v)| decode(&k, &v))
        })
        .collect::<Result<_, _>>()?;
    out.reverse();
    Ok(out)
}

/// Every entry of the transactions whose messages carry this retrieval reference number (a
/// full scan: the journal is not indexed by RRN).
pub fn find_rrn(db: &DB, rrn: &str) -> Result<Vec<Numbered>, String> {
    let all = from(db, 0, usize::MAX)?;
    let txns: std::collections::HashSet<&str> = all
        .iter()
        .filter(|(_, e)| e.rrn == rrn && !e.txn.is_empty())
        .map(|(_, e)| e.txn.as_str())
        .collect();
    Ok(all
        .iter()
        .filter(|(_, e)| e.rrn == rrn || txns.contains(e.txn.as_str()))
        .cloned()
        .collect())
}
