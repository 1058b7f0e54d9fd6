//! Journal retention and the store's size: what keeps the data directory from growing for
//! ever, and what tells an operator how big it is.
//!
//! Journal keys are sequence numbers in commit order, so the records older than a cutoff are
//! one range at the start: found by a binary search on the records' times (about 30 reads
//! for a billion records) and deleted as one range tombstone, which compactions then turn
//! into free space. The last record is always kept, so sequence numbers go on from it after
//! a restart. The range is taken whole: a damaged record inside it goes with it. Answered
//! transaction records expire in compactions (see
//! [`crate::store::Expiry`]); the hosted ledger is never deleted (balances derive from it).

use std::time::Duration;

use rocksdb::DB;
use tokio_util::sync::CancellationToken;

use crate::store::{self, Cf};

/// Delete the journal records older than `cutoff_ms` (ms since the epoch), keeping the last
/// record. Returns how many sequence numbers the deleted range spans.
pub fn purge_before(db: &DB, cutoff_ms: i64) -> Result<u64, String> {
    let cf = store::handle(db, Cf::Journal)?;
    let (Some(first), Some(last)) = (edge(db, true)?, edge(db, false)?) else {
        return Ok(0);
    };
    // Is everything from sequence `s` on recent? Records are in commit order, so one look
    // answers for all that follow. A record the search cannot read counts as recent: the
    // purge stops before it rather than guess.
    let recent_from = |s: u64| -> Result<bool, String> {
        let mut it = db.raw_iterator_cf(cf);
        it.seek(s.to_be_bytes());
        let at = it.value().and_then(record_time);
        it.status().map_err(|e| e.to_string())?;
        Ok(at.is_none_or(|at| at >= cutoff_ms))
    };
    if recent_from(first)? {
        return Ok(0);
    }
    // The first sequence from which everything is recent, the last record at the latest.
    let (mut old, mut recent) = (first, last);
    if !recent_from(last)? {
        recent = last;
    } else {
        while recent - old > 1 {
            let mid = old + (recent - old) / 2;
            if recent_from(mid)? {
                recent = mid;
            } else {
                old = mid;
            }
        }
    }
    debug_assert!(first < recent && recent <= last);
    db.delete_range_cf(cf, first.to_be_bytes(), recent.to_be_bytes())
        .map_err(|e| e.to_string())?;
    Ok(recent - first)
}

/// The first or last journal sequence number.
fn edge(db: &DB, first: bool) -> Result<Option<u64>, String> {
    let cf = store::handle(db, Cf::Journal)?;
    let mut it = db.raw_iterator_cf(cf);
    if first {
        it.seek_to_first();
    } else {
        it.seek_to_last();
    }
    let seq = it
        .key()
        .and_then(|k| <[u8; 8]>::try_from(k).ok())
        .map(u64::from_be_bytes);
    it.status().map_err(|e| e.to_string())?;
    Ok(seq)
}

/// When a record's first entry was made.
fn record_time(raw: &[u8]) -> Option<i64> {
    super::entry::record_from_bytes(raw)
        .ok()?
        .first()
        .map(|e| e.at_ms)
}

/// Every `every`: publish the store's size per column family
/// (`cyberswitch_store_bytes{cf}`: table files plus memtables); with a retention, delete the
/// journal past it once an hour (`cyberswitch_journal_purged_records_total`).
pub async fn housekeeping(
    db: std::sync::Arc<DB>,
    retention: Option<Duration>,
    every: Duration,
    stop: CancellationToken,
) {
    let purge_every = Duration::from_secs(3600);
    let mut last_purge: Option<std::time::Instant> = None;
    loop {
        let purge = retention.filter(|_| last_purge.is_none_or(|t| t.elapsed() >= purge_every));
        let db2 = db.clone();
        let done = tokio::task::spawn_blocking(move || {
            publish_sizes(&db2);
            purge.map(|kept| {
                let cutoff = chrono::Utc::now().timestamp_millis()
                    - i64::try_from(kept.as_millis()).unwrap_or(i64::MAX);
                purge_before(&db2, cutoff)
            })
        })
        .await;
        match done {
            Ok(Some(Ok(n))) => {
                last_purge = Some(std::time::Instant::now());
                metrics::counter!("cyberswitch_journal_purged_records_total").increment(n);
                if n > 0 {
                    tracing::info!(records = n, "journal records past retention deleted");
                }
            }
            Ok(Some(Err(e))) => tracing::error!(error = %e, "journal retention failed"),
            Ok(None) => {}
            Err(e) => tracing::error!(error = %e, "housekeeping task failed"),
        }
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tokio::time::sleep(every) => {}
        }
    }
}

fn publish_sizes(db: &DB) {
    for cf in Cf::ALL {
        let Ok(handle) = store::handle(db, cf) else {
            continue;
        };
        let size = |p: &str| {
            db.property_int_value_cf(handle, p)
                .ok()
                .flatten()
                .unwrap_or(0)
        };
        let bytes = size("rocksdb.total-sst-files-size") + size("rocksdb.cur-size-all-mem-tables");
        metrics::gauge!("cyberswitch_store_bytes", "cf" => cf.name()).set(bytes as f64);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::journal::{Entry, EntryKind};

    fn put_record(db: &DB, seq: u64, at_ms: i64) {
        let mut e = Entry::new(EntryKind::Txn, "T|000001|0000000001", "", "x".into());
        e.at_ms = at_ms;
        let cf = store::handle(db, Cf::Journal).unwrap();
        db.put_cf(
            cf,
            seq.to_be_bytes(),
            crate::journal::entry::record_bytes(&[e]),
        )
        .unwrap();
    }

    fn seqs(db: &DB) -> Vec<u64> {
        store::scan(db, Cf::Journal, b"")
            .unwrap()
            .into_iter()
            .map(|(k, _)| u64::from_be_bytes(k.try_into().unwrap()))
            .collect()
    }

    #[test]
    fn records_older_than_the_cutoff_go_and_the_rest_stay() {
        let dir = tempfile::tempdir().unwrap();
        let db = store::open(dir.path()).unwrap();
        assert_eq!(purge_before(&db, 1_000).unwrap(), 0, "empty journal");
        // Sequences 0..100 at times 0, 10, 20, …; a gap 40..50 (an earlier purge or batch).
        for seq in (0..100).filter(|s| !(40..50).contains(s)) {
            put_record(&db, seq, seq as i64 * 10);
        }
        // Everything before time 555 (sequence 55.5) goes.
        assert_eq!(purge_before(&db, 555).unwrap(), 56);
        assert_eq!(seqs(&db), (56..100).collect::<Vec<_>>());
        // Nothing older: nothing goes.
        assert_eq!(purge_before(&db, 555).unwrap(), 0);
        assert_eq!(purge_before(&db, 10).unwrap(), 0);
        // Everything old: the last record stays (sequence numbers go on from it).
        assert_eq!(purge_before(&db, i64::MAX).unwrap(), 43);
        assert_eq!(seqs(&db), vec![99]);
    }
}
