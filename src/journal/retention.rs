//! Journal retention and the store's size: what keeps the data directory from growing for
//! ever, and what tells an operator how big it is.
//!
//! Journal keys are sequence numbers in commit order, so the records older than a cutoff are
//! one range at the start: found by a binary search on the records' times (about 30 reads
//! for a billion records) and deleted as one range tombstone, which compactions then turn
//! into free space. The last record is always kept, so sequence numbers go on from it after
//! a restart. The range is taken whole: a damaged record inside it goes with it. With an
//! archive directory the range is first written there, and deleted only once the file is
//! on disk. Answered transaction records expire in compactions (see
//! [`crate::store::Expiry`]); the hosted ledger is never deleted (balances derive from it).
//!
//! All of this is RocksDB's (range deletes, compactions, size properties): on a memory store
//! ([`crate::store::Store::memory`], for tests) housekeeping does nothing.

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::time::Duration;

use rocksdb::DB;
use tokio_util::sync::CancellationToken;

use crate::store::{self, Cf, Store};

/// How long the journal is kept, and where what goes is copied first.
#[derive(Debug, Clone)]
pub struct Retention {
    pub kept: Duration,
    pub archive: Option<PathBuf>,
}

/// Delete the journal records older than `cutoff_ms` (ms since the epoch), keeping the last
/// record; with `archive`, write them there first (see [`archive_range`]) and delete nothing
/// if that fails. Returns how many sequence numbers the deleted range spans.
pub fn purge_before(db: &DB, cutoff_ms: i64, archive: Option<&Path>) -> Result<u64, String> {
    let Some((first, recent)) = older_than(db, cutoff_ms)? else {
        return Ok(0);
    };
    if let Some(dir) = archive {
        archive_range(db, first, recent, dir)?;
    }
    let cf = store::handle(db, Cf::Journal)?;
    db.delete_range_cf(cf, first.to_be_bytes(), recent.to_be_bytes())
        .map_err(|e| e.to_string())?;
    Ok(recent - first)
}

/// The records older than `cutoff_ms`, as the range `[first, recent)`; `None` when there
/// are none (or only the last record is).
fn older_than(db: &DB, cutoff_ms: i64) -> Result<Option<(u64, u64)>, String> {
    let cf = store::handle(db, Cf::Journal)?;
    let (Some(first), Some(last)) = (edge(db, true)?, edge(db, false)?) else {
        return Ok(None);
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
        return Ok(None);
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
    Ok(Some((first, recent)))
}

/// Write the journal records `[from, to)` to `dir/journal-<from>-<to − 1>.jsonl.lz4`: one
/// JSON object per entry (`record`, `entry`, `at`, `kind`, `link`, `txn`, `rrn`, `text`,
/// messages masked as the journal holds them; a record that cannot be read is kept as
/// `damaged` with its bytes in hex), in LZ4 frames (`lz4 -dc FILE`). Written under a
/// `.partial` name, synced, then renamed, so a file with the final name is complete.
pub fn archive_range(db: &DB, from: u64, to: u64, dir: &Path) -> Result<PathBuf, String> {
    let name = format!("journal-{from:020}-{:020}.jsonl.lz4", to.saturating_sub(1));
    let path = dir.join(&name);
    let partial = dir.join(format!("{name}.partial"));
    let failed = |what: &str, e: std::io::Error| format!("{}: {what}: {e}", partial.display());
    let file = std::fs::File::create(&partial).map_err(|e| failed("cannot create", e))?;
    let mut out = lz4_flex::frame::FrameEncoder::new(std::io::BufWriter::new(file));
    let cf = store::handle(db, Cf::Journal)?;
    let mut it = db.raw_iterator_cf(cf);
    it.seek(from.to_be_bytes());
    while let (Some(k), Some(v)) = (it.key(), it.value()) {
        let Some(seq) = <[u8; 8]>::try_from(k).ok().map(u64::from_be_bytes) else {
            break;
        };
        if seq >= to {
            break;
        }
        for line in archive_lines(seq, v) {
            writeln!(out, "{line}").map_err(|e| failed("cannot write", e))?;
        }
        it.next();
    }
    it.status().map_err(|e| e.to_string())?;
    let file = out
        .finish()
        .map_err(|e| failed("cannot write", e.into()))?
        .into_inner()
        .map_err(|e| failed("cannot write", e.into_error()))?;
    file.sync_all().map_err(|e| failed("cannot sync", e))?;
    std::fs::rename(&partial, &path).map_err(|e| failed("cannot rename", e))?;
    // The rename itself must survive a crash before the range is deleted.
    std::fs::File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| format!("{}: cannot sync: {e}", dir.display()))?;
    Ok(path)
}

/// One record's archive lines.
fn archive_lines(seq: u64, raw: &[u8]) -> Vec<serde_json::Value> {
    match super::entry::record_from_bytes(raw) {
        Ok(entries) => entries
            .iter()
            .enumerate()
            .map(|(i, e)| {
                let at = chrono::DateTime::from_timestamp_millis(e.at_ms)
                    .map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Millis, true));
                serde_json::json!({
                    "record": seq,
                    "entry": i,
                    "at": at,
                    "kind": format!("{:?}", e.kind).to_lowercase(),
                    "link": e.link,
                    "txn": e.txn,
                    "rrn": e.rrn,
                    "text": e.text(),
                })
            })
            .collect(),
        Err(reason) => vec![serde_json::json!({
            "record": seq,
            "damaged": reason,
            "hex": hex::encode(raw),
        })],
    }
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
/// journal past it once an hour (`cyberswitch_journal_purged_records_total`). On a memory
/// store there is nothing to measure or purge: returns at once.
pub async fn housekeeping(
    store: Store,
    retention: Option<Retention>,
    every: Duration,
    stop: CancellationToken,
) {
    let Store::Rocks(db) = store else {
        return;
    };
    let purge_every = Duration::from_secs(3600);
    let mut last_purge: Option<std::time::Instant> = None;
    loop {
        let purge = retention
            .clone()
            .filter(|_| last_purge.is_none_or(|t| t.elapsed() >= purge_every));
        let db2 = db.clone();
        let done = tokio::task::spawn_blocking(move || {
            publish_sizes(&db2);
            purge.map(|r| {
                let cutoff = chrono::Utc::now().timestamp_millis()
                    - i64::try_from(r.kept.as_millis()).unwrap_or(i64::MAX);
                purge_before(&db2, cutoff, r.archive.as_deref())
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

    fn seqs(store: &Store) -> Vec<u64> {
        store::scan(store, Cf::Journal, b"")
            .unwrap()
            .into_iter()
            .map(|(k, _)| u64::from_be_bytes(k.try_into().unwrap()))
            .collect()
    }

    #[test]
    fn records_older_than_the_cutoff_go_and_the_rest_stay() {
        let dir = tempfile::tempdir().unwrap();
        let opened = store::open(dir.path()).unwrap();
        let db = opened.rocks().unwrap().clone();
        assert_eq!(purge_before(&db, 1_000, None).unwrap(), 0, "empty journal");
        // Sequences 0..100 at times 0, 10, 20, …; a gap 40..50 (an earlier purge or batch).
        for seq in (0..100).filter(|s| !(40..50).contains(s)) {
            put_record(&db, seq, seq as i64 * 10);
        }
        // Everything before time 555 (sequence 55.5) goes.
        assert_eq!(purge_before(&db, 555, None).unwrap(), 56);
        assert_eq!(seqs(&opened), (56..100).collect::<Vec<_>>());
        // Nothing older: nothing goes.
        assert_eq!(purge_before(&db, 555, None).unwrap(), 0);
        assert_eq!(purge_before(&db, 10, None).unwrap(), 0);
        // Everything old: the last record stays (sequence numbers go on from it).
        assert_eq!(purge_before(&db, i64::MAX, None).unwrap(), 43);
        assert_eq!(seqs(&opened), vec![99]);
    }

    fn archived(path: &Path) -> Vec<serde_json::Value> {
        use std::io::BufRead as _;
        let file = std::fs::File::open(path).unwrap();
        std::io::BufReader::new(lz4_flex::frame::FrameDecoder::new(file))
            .lines()
            .map(|l| serde_json::from_str(&l.unwrap()).unwrap())
            .collect()
    }

    #[test]
    fn with_an_archive_what_goes_is_written_there_first_and_nothing_goes_if_it_cannot_be() {
        let dir = tempfile::tempdir().unwrap();
        let opened = store::open(&dir.path().join("db")).unwrap();
        let db = opened.rocks().unwrap().clone();
        for seq in 0..20 {
            put_record(&db, seq, seq as i64 * 10);
        }
        // A damaged record in the range is archived as it is.
        let cf = store::handle(&db, Cf::Journal).unwrap();
        db.put_cf(cf, 3u64.to_be_bytes(), b"\x07garbage").unwrap();
        // An archive directory that is not there: nothing is deleted.
        let missing = dir.path().join("missing");
        let refused = purge_before(&db, 105, Some(&missing));
        assert!(refused.unwrap_err().contains("cannot create"));
        assert_eq!(seqs(&opened), (0..20).collect::<Vec<_>>());

        let archive = dir.path().join("archive");
        std::fs::create_dir(&archive).unwrap();
        assert_eq!(purge_before(&db, 105, Some(&archive)).unwrap(), 11);
        assert_eq!(seqs(&opened), (11..20).collect::<Vec<_>>());
        let files: Vec<_> = std::fs::read_dir(&archive)
            .unwrap()
            .map(|f| f.unwrap().file_name().into_string().unwrap())
            .collect();
        let name = "journal-00000000000000000000-00000000000000000010.jsonl.lz4";
        assert_eq!(files, [name], "no partial file left");
        let lines = archived(&archive.join(name));
        assert_eq!(lines.len(), 11);
        for (seq, line) in lines.iter().enumerate() {
            assert_eq!(line["record"], seq as u64);
            if seq == 3 {
                assert!(line["damaged"].as_str().unwrap().contains("corrupt"));
                assert_eq!(line["hex"], hex::encode(b"\x07garbage"));
            } else {
                assert_eq!(line["entry"], 0);
                assert_eq!(line["txn"], "T|000001|0000000001");
                assert_eq!(line["text"], "x");
                assert_eq!(line["kind"], "txn");
            }
        }
        assert_eq!(lines[1]["at"], "1970-01-01T00:00:00.010Z");
        // The next purge writes the next file.
        assert_eq!(purge_before(&db, 155, Some(&archive)).unwrap(), 5);
        let next = "journal-00000000000000000011-00000000000000000015.jsonl.lz4";
        assert_eq!(archived(&archive.join(next)).len(), 5);
    }
}
