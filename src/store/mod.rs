//! The switch's storage: one RocksDB database per data directory, one column family per
//! concept; or the same column families as ordered maps in memory, for tests.
//!
//! - [`backend`]: [`Store`], the one handle everything reads and writes through, and
//!   [`Batch`], the writes that land together.
//! - [`memory`]: the memory backend.

mod backend;
mod memory;
#[cfg(test)]
mod tests;

use std::path::Path;
use std::sync::Arc;

use rocksdb::{ColumnFamily, ColumnFamilyDescriptor, Options, DB};

pub use backend::{Batch, Store};
pub use memory::MemoryStore;

/// The column families, one per concept.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Cf {
    /// Append-only journal: sequence number → [`crate::journal::Entry`].
    Journal,
    /// Transactions and their legs: transaction key → record.
    Txns,
    /// Transactions not answered yet (what recovery looks at): transaction key → ().
    OpenTxns,
    /// Answers by request key, for retransmissions (F10) across restarts.
    Dedup,
    /// Store-and-forward queue: destination, sequence → item.
    Saf,
    /// Store-and-forward items that expired unacknowledged.
    SafDead,
    /// Card → linked wallets, keyed by HMAC of the card number.
    CardLinks,
    /// Hosted ledger: account id → account.
    LedgerAccounts,
    /// Hosted ledger: account, sequence → entry (the truth balances derive from).
    LedgerEntries,
    /// Hosted ledger: leg id → leg state (what makes postings idempotent).
    LedgerLegs,
    /// Hosted programs: card id → card (status, expiry, PIN hash, limits; no card number).
    HostedCards,
    /// Hosted programs: HMAC of the card number → card id.
    HostedCardRefs,
    /// Hosted programs: pre-registered purchase id → purchase (F15).
    HostedPrereg,
    /// Hosted programs: master account id → master (F16); master id, a zero byte, card
    /// id → () for each of its sub-account cards.
    HostedMasters,
    /// The switch's own counters that must never go back (the RRN watermark): name → value.
    Meta,
    /// What a refund may name its purchase by (F8): `rrn/terminal/RRN` and
    /// `auth/terminal/code/YYMMDD` → when (ms, 8 bytes big-endian) and the transaction key.
    TxnRefs,
    /// The books (F13), derived from the journal's steps and written with them: money
    /// events by business date and terminal (`f/DATE/TERMINAL/LINK/TXN/LEG/KIND`; before
    /// session 21 `e/DATE/LINK/TXN/LEG/KIND`, still read), what each leg has booked
    /// (`l/LINK/TXN/LEG/KIND`), the open business date and each closed day's reconciliation.
    Books,
    /// Every change to a card's links (F12, SPEC §10): HMAC of the card number, time (ms,
    /// 8 bytes big-endian), a random tie-breaker → who did what to which link. Written in
    /// the same synced batch as the change.
    LinkAudit,
    /// Mobile coupons (F18): `c/ID` → the coupon (no card number), `u/TXN` → the coupon a
    /// purchase used.
    Coupons,
    /// Virtual accounts (F17): pools (`p/…`), the bank index (`a/…`), orders (`o/…`),
    /// deposits seen (`d/…`), mismatches (`m/…`) and their indexes; see `va/keys.rs`.
    VirtualAccounts,
    /// Partner callbacks waiting or delivered (`i/ID`) and their time indexes, see
    /// [`crate::outbox`].
    Outbox,
}

impl Cf {
    pub const ALL: [Cf; 21] = [
        Cf::Journal,
        Cf::Txns,
        Cf::OpenTxns,
        Cf::Dedup,
        Cf::Saf,
        Cf::SafDead,
        Cf::CardLinks,
        Cf::LedgerAccounts,
        Cf::LedgerEntries,
        Cf::LedgerLegs,
        Cf::HostedCards,
        Cf::HostedCardRefs,
        Cf::HostedPrereg,
        Cf::HostedMasters,
        Cf::Meta,
        Cf::TxnRefs,
        Cf::Books,
        Cf::LinkAudit,
        Cf::Coupons,
        Cf::VirtualAccounts,
        Cf::Outbox,
    ];

    /// Keyed by a transaction's id and ordered by its transmission time first
    /// ([`time_then_key`]): read by key or scanned whole, never by prefix.
    pub fn keyed_by_time(self) -> bool {
        matches!(self, Cf::Txns | Cf::Dedup)
    }

    /// The column family's place in [`Cf::ALL`].
    pub fn index(self) -> usize {
        self as usize
    }

    pub fn name(self) -> &'static str {
        match self {
            Cf::Journal => "journal",
            Cf::Txns => "txns_by_time",
            Cf::OpenTxns => "open_txns",
            Cf::Dedup => "dedup_by_time",
            Cf::Saf => "saf",
            Cf::SafDead => "saf_dead",
            Cf::CardLinks => "card_links",
            Cf::LedgerAccounts => "ledger_accounts",
            Cf::LedgerEntries => "ledger_entries",
            Cf::LedgerLegs => "ledger_legs",
            Cf::HostedCards => "hosted_cards",
            Cf::HostedCardRefs => "hosted_card_refs",
            Cf::HostedPrereg => "hosted_prereg",
            Cf::HostedMasters => "hosted_masters",
            Cf::Meta => "meta",
            Cf::TxnRefs => "txn_refs",
            Cf::Books => "books",
            Cf::LinkAudit => "link_audit",
            Cf::Coupons => "coupons",
            Cf::VirtualAccounts => "virtual_accounts",
            Cf::Outbox => "outbox",
        }
    }
}

/// When a stored value's record ended (ms since the epoch); `None`: it has not, or cannot be
/// read, and is kept.
pub type EndedAt = fn(&[u8]) -> Option<i64>;

/// What compactions may drop: records past their time.
#[derive(Default, Clone, Copy)]
pub struct Expiry {
    /// Remembered answers older than this (look-ups check the age themselves, so this only
    /// reclaims space).
    pub dedup_window: Option<std::time::Duration>,
    /// Transaction records: how long they are kept once ended, and when one ended.
    pub txns: Option<(std::time::Duration, EndedAt)>,
}

/// Open (creating if needed) the database under `dir`.
pub fn open(dir: &Path) -> Result<Store, String> {
    open_with(dir, Expiry::default())
}

/// As [`open`], with records dropped by compactions once past their time.
pub fn open_with(dir: &Path, expiry: Expiry) -> Result<Store, String> {
    std::fs::create_dir_all(dir).map_err(|e| format!("{}: cannot create: {e}", dir.display()))?;
    let mut opts = Options::default();
    opts.create_if_missing(true);
    opts.create_missing_column_families(true);
    // RocksDB's own info log would sit in the data directory; it holds no card data, but it
    // grows without bound unless capped.
    opts.set_keep_log_file_num(4);
    opts.set_max_log_file_size(8 << 20);
    // Memtables of all column families together stay under 64 MiB (RocksDB's default is
    // 64 MiB per column family, twice): the switch's memory is bounded whatever the traffic.
    opts.set_db_write_buffer_size(64 << 20);
    // Write-ahead log files are not recycled (RocksDB's `recycle_log_file_num`), although
    // appending over a recycled file's blocks makes each fsync cheaper (110 against 155 µs
    // here, docs/performance.md): recovering a database whose recycled logs hold an old tail
    // has had holes in what it replays (RocksDB's own crash test runs without recycling for
    // that reason), and a hole here is an approval sent whose step is gone — recovery would
    // then reverse it. An acknowledged step must come back after a kill, whatever it costs.
    // A column family written rarely would otherwise keep every log file since its last
    // flush alive (hundreds of megabytes under load): past this total
    // its memtable is flushed and the old logs go.
    opts.set_max_total_wal_size(128 << 20);
    // Table files open at once are bounded: descriptors are budgeted against the process's
    // limit with the connections (`crate::fds`), and an unbounded table cache could take
    // the one a WAL rotation needs.
    opts.set_max_open_files(i32::try_from(crate::fds::ROCKSDB_OPEN_FILES).unwrap_or(512));
    // Table files written by flushes and compactions go to disk a megabyte at a time rather
    // than as a burst when the kernel's dirty-page timer fires: a burst of hundreds of
    // megabytes holds the disk, and the journal's next sync, for tens of milliseconds.
    opts.set_bytes_per_sync(1 << 20);
    // The WAL is compressed (RocksDB's streaming ZSTD, record by record): a synced group is
    // a few kilobytes, and each fsync writes its last 4 KiB page again, so fewer bytes per
    // group is fewer pages per sync. Measured: 3.0 → 1.1 KB of WAL per transaction, no
    // change in throughput or latency (docs/performance.md, session 18).
    opts.set_wal_compression_type(rocksdb::DBCompressionType::Zstd);
    // Background work sized so that it cannot hold a synced step (issue 24): with RocksDB's
    // default (one flush thread, two memtables per column family) a flush triggered for
    // several column families at once (the WAL total, the shared write buffer) queued them on
    // one thread, and `open_txns`, written at every step, filled its second memtable
    // meanwhile: "Stopping writes because we have 2 immutable memtables" in the LOG, every
    // synced step held until the flush ended. Eight background jobs (RocksDB gives a quarter,
    // two, to flushes; compactions run at a low CPU priority, below) and room for four
    // memtables per column family (their total is still capped by `db_write_buffer_size`
    // above, which flushes the largest when it is reached).
    opts.set_max_background_jobs(8);
    // One thread (the journal's group-commit writer) writes; the journal's memtable is a
    // vector, which takes no concurrent inserts.
    opts.set_allow_concurrent_memtable_write(false);
    // On a small machine a compaction holds a core for tens of milliseconds: at a low CPU
    // priority it runs in the time the request path leaves idle instead of delaying answers.
    if let Ok(mut env) = rocksdb::Env::new() {
        env.lower_thread_pool_cpu_priority();
        opts.set_env(&env);
    }
    let cfs = Cf::ALL.iter().map(|&cf| {
        let mut o = Options::default();
        o.set_write_buffer_size(if cf == Cf::Journal { 32 << 20 } else { 8 << 20 });
        o.set_max_write_buffer_number(4);
        // Table files are LZ4-compressed by the background threads (at their low priority):
        // a third fewer bytes flushed and compacted on the disk that carries the journal's
        // fsyncs. The journal's records are compressed by the switch already.
        o.set_compression_type(if cf == Cf::Journal {
            rocksdb::DBCompressionType::None
        } else {
            rocksdb::DBCompressionType::Lz4
        });
        if matches!(cf, Cf::Journal | Cf::OpenTxns) {
            // Written at every step, never looked up by key while running (the journal is
            // read back by people, open transactions by recovery at start-up): a vector
            // memtable appends in constant time (a skip list searches for every insert) and
            // sorts only when read.
            o.set_memtable_factory(rocksdb::MemtableFactory::Vector);
        }
        if cf.keyed_by_time() {
            time_ordered(&mut o);
        }
        if matches!(cf, Cf::Dedup | Cf::Txns | Cf::CardLinks | Cf::LedgerLegs) {
            // Point look-ups, mostly of keys that are not there (every new request is looked
            // up in the duplicate index): bloom filters in the memtable and the tables.
            point_lookup_filters(&mut o);
        }
        if let (Cf::Dedup, Some(window)) = (cf, expiry.dedup_window) {
            expire_by_age(&mut o, "dedup-expiry", window, |value| {
                Some(
                    value
                        .first_chunk::<8>()
                        .map_or(0, |b| i64::from_be_bytes(*b)),
                )
            });
        }
        if let (Cf::Txns, Some((kept, ended_at))) = (cf, expiry.txns) {
            expire_by_age(&mut o, "txns-retention", kept, ended_at);
        }
        if let (Cf::TxnRefs, Some((kept, _))) = (cf, expiry.txns) {
            // A reference outlives its transaction by at most the time a compaction takes:
            // a refund naming it then finds no transaction (25).
            expire_by_age(&mut o, "txn-refs-retention", kept, |value| {
                value.first_chunk::<8>().map(|b| i64::from_be_bytes(*b))
            });
        }
        ColumnFamilyDescriptor::new(cf.name(), o)
    });
    // A database of an earlier version has these in byte order: opened as they are, then
    // moved into their successors before anything else reads or writes.
    let present = DB::list_cf(&opts, dir).unwrap_or_default();
    let earlier: Vec<(&str, Cf)> = BYTE_ORDERED
        .into_iter()
        .filter(|(name, _)| present.iter().any(|p| p == name))
        .collect();
    let cfs = cfs.chain(
        earlier
            .iter()
            .map(|(name, _)| ColumnFamilyDescriptor::new(*name, Options::default())),
    );
    let cannot = |e: String| format!("{}: cannot open database: {e}", dir.display());
    let mut db = DB::open_cf_descriptors(&opts, dir, cfs).map_err(|e| cannot(e.to_string()))?;
    for (name, cf) in earlier {
        move_into(&mut db, name, cf).map_err(cannot)?;
    }
    Ok(Store::Rocks(Arc::new(db)))
}

/// The byte-ordered column families of versions before the time order ([`time_ordered`]),
/// and what replaced each.
const BYTE_ORDERED: [(&str, Cf); 2] = [("txns", Cf::Txns), ("dedup", Cf::Dedup)];

/// Copy column family `from` into `to`, then drop it. A crash before the drop copies it
/// again at the next open: the same values over themselves, since nothing else writes to
/// `to` before the open returns.
fn move_into(db: &mut DB, from: &str, to: Cf) -> Result<(), String> {
    let fail = |e: rocksdb::Error| format!("moving column family {from} to {}: {e}", to.name());
    let mut moved = 0usize;
    {
        let source = db
            .cf_handle(from)
            .ok_or_else(|| format!("column family {from} missing"))?;
        let target = handle(db, to)?;
        let mut batch = rocksdb::WriteBatch::default();
        for item in db.iterator_cf(source, rocksdb::IteratorMode::Start) {
            let (key, value) = item.map_err(fail)?;
            batch.put_cf(target, key, value);
            moved += 1;
            if batch.len() >= 4096 {
                db.write(std::mem::take(&mut batch)).map_err(fail)?;
            }
        }
        let mut synced = rocksdb::WriteOptions::default();
        synced.set_sync(true);
        db.write_opt(batch, &synced).map_err(fail)?;
    }
    db.drop_cf(from).map_err(fail)?;
    tracing::info!(
        from,
        to = to.name(),
        moved,
        "column family moved to time order"
    );
    Ok(())
}

/// A compaction filter dropping values whose time (`at`, ms since the epoch; `None`: keep)
/// is more than `kept` ago.
fn expire_by_age(
    o: &mut Options,
    name: &str,
    kept: std::time::Duration,
    at: impl Fn(&[u8]) -> Option<i64> + Send + 'static,
) {
    let kept_ms = i64::try_from(kept.as_millis()).unwrap_or(i64::MAX);
    o.set_compaction_filter(name, move |_level: u32, _key: &[u8], value: &[u8]| {
        let expired = at(value)
            .is_some_and(|at| chrono::Utc::now().timestamp_millis().saturating_sub(at) > kept_ms);
        if expired {
            rocksdb::CompactionDecision::Remove
        } else {
            rocksdb::CompactionDecision::Keep
        }
    });
}

/// The order of the column families keyed by a transaction's id ([`Cf::keyed_by_time`]):
/// by the key's last ten bytes (the transmission time, `MMDDhhmmss`), then the whole key.
/// A total order (the whole key breaks ties), so RocksDB may use it like its own.
pub fn time_then_key(a: &[u8], b: &[u8]) -> std::cmp::Ordering {
    fn time(k: &[u8]) -> &[u8] {
        &k[k.len().saturating_sub(10)..]
    }
    time(a).cmp(time(b)).then_with(|| a.cmp(b))
}

/// The comparator's name is stored with the column family: RocksDB refuses to open one
/// written under another order.
const TIME_THEN_KEY: &str = "cyberswitch.time-then-key";

/// A column family in [`time_then_key`] order, its table files small.
///
/// Why: keyed `LISTENER|CLASS|STAN|TERMINAL|TIME` in byte order, every flush of these
/// column families spans their whole key range, so each compaction into the last level
/// rewrote all of it — on a store grown past 1 GB, 200 MB of `txns` and 116 MB of `dedup`
/// every few flushes, 7× the bytes flushed, and the disk that carries the journal's fsyncs
/// busy with it (docs/performance.md, session 19). Ordered by time, a flush overlaps only
/// the newest table file or two of the last level: a compaction rewrites what is recent.
/// Small table files keep that overlap small. Records past their time are still dropped:
/// a periodic compaction (daily) visits the old files no write overlaps any more.
fn time_ordered(o: &mut Options) {
    o.set_comparator(TIME_THEN_KEY, Box::new(time_then_key));
    o.set_target_file_size_base(8 << 20);
    o.set_periodic_compaction_seconds(24 * 3600);
}

/// Bloom filters in the memtable and the table files, for point look-ups of keys that are
/// mostly absent.
pub fn point_lookup_filters(o: &mut Options) {
    o.set_memtable_prefix_bloom_ratio(0.05);
    o.set_memtable_whole_key_filtering(true);
    let mut table = rocksdb::BlockBasedOptions::default();
    table.set_bloom_filter(10.0, false);
    o.set_block_based_table_factory(&table);
}

/// Open an existing database read-only (for `journal` commands next to a running switch, use
/// a copy or stop it first: RocksDB allows one writer). Writing to it fails.
pub fn open_read_only(dir: &Path) -> Result<Store, String> {
    let opts = Options::default();
    // A database written by an earlier version lacks the column families added since: open
    // those it has (reading a missing one then fails with its name, not the whole open).
    let present = DB::list_cf(&opts, dir).unwrap_or_default();
    // (One an earlier version wrote in byte order, `txns` or `dedup`, is not opened: its
    // successor is missing until the switch has started once on the directory.)
    let cfs = Cf::ALL
        .iter()
        .filter(|cf| present.is_empty() || present.iter().any(|p| p == cf.name()))
        .map(|&cf| {
            let mut o = Options::default();
            if cf.keyed_by_time() {
                time_ordered(&mut o);
            }
            ColumnFamilyDescriptor::new(cf.name(), o)
        });
    DB::open_cf_descriptors_read_only(&opts, dir, cfs, false)
        .map(|db| Store::Rocks(Arc::new(db)))
        .map_err(|e| format!("{}: cannot open database: {e}", dir.display()))
}

pub fn handle(db: &DB, cf: Cf) -> Result<&ColumnFamily, String> {
    db.cf_handle(cf.name())
        .ok_or_else(|| format!("column family {} missing", cf.name()))
}

/// `name`, a zero byte, `seq` big-endian: the keys of per-name sequences (one queue lane per
/// link, one entry list per account), so that a prefix scan of `name\0` reads them in order.
pub fn seq_key(name: &str, seq: u64) -> Vec<u8> {
    let mut k = Vec::with_capacity(name.len() + 9);
    k.extend_from_slice(name.as_bytes());
    k.push(0);
    k.extend_from_slice(&seq.to_be_bytes());
    k
}

/// A stored key and its value.
pub type KeyValue = (Vec<u8>, Vec<u8>);

/// Visit every (key, value) of a column family whose key starts with `prefix`, in key
/// order, until `visit` says stop (see [`Store::for_each`]).
pub fn for_each(
    store: &Store,
    cf: Cf,
    prefix: &[u8],
    visit: impl FnMut(&[u8], &[u8]) -> std::ops::ControlFlow<()>,
) -> Result<(), String> {
    store.for_each(cf, prefix, visit)
}

/// Every (key, value) of a column family whose key starts with `prefix`, in key order.
pub fn scan(store: &Store, cf: Cf, prefix: &[u8]) -> Result<Vec<KeyValue>, String> {
    store.scan(cf, prefix)
}

/// RocksDB's own view of its background work, for `/metrics` (issue 24: a compaction that
/// falls behind stalls writes, and with them every synced step).
#[derive(Debug, Default, Clone, Copy, PartialEq)]
pub struct RocksStats {
    /// Time writes were stalled or stopped since the database opened (`Cumulative stall`).
    pub stall_s: f64,
    pub running_compactions: u64,
    pub running_flushes: u64,
    /// Bytes compactions are behind by, over every column family.
    pub pending_compaction_bytes: u64,
}

/// Read [`RocksStats`] from the database's properties.
pub fn rocks_stats(db: &DB) -> RocksStats {
    let int = |name: &str| db.property_int_value(name).ok().flatten().unwrap_or(0);
    let pending = Cf::ALL
        .iter()
        .filter_map(|&cf| handle(db, cf).ok())
        .filter_map(|h| {
            db.property_int_value_cf(h, "rocksdb.estimate-pending-compaction-bytes")
                .ok()
                .flatten()
        })
        .sum();
    let stall_s = db
        .property_value("rocksdb.dbstats")
        .ok()
        .flatten()
        .as_deref()
        .and_then(cumulative_stall_s)
        .unwrap_or(0.0);
    RocksStats {
        stall_s,
        running_compactions: int("rocksdb.num-running-compactions"),
        running_flushes: int("rocksdb.num-running-flushes"),
        pending_compaction_bytes: pending,
    }
}

/// `Cumulative stall: 00:00:1.250 H:M:S, 0.3 percent` → 1.25 (seconds).
fn cumulative_stall_s(dbstats: &str) -> Option<f64> {
    let line = dbstats
        .lines()
        .find(|l| l.trim_start().starts_with("Cumulative stall:"))?;
    let hms = line.split_whitespace().nth(2)?;
    let mut parts = hms.split(':');
    let h: f64 = parts.next()?.parse().ok()?;
    let m: f64 = parts.next()?.parse().ok()?;
    let s: f64 = parts.next()?.parse().ok()?;
    Some(h * 3600.0 + m * 60.0 + s)
}

#[cfg(test)]
mod stats_tests {
    #[test]
    fn the_cumulative_stall_reads_as_seconds() {
        let text = "** DB Stats **\nUptime(secs): 10.0 total\nCumulative stall: 00:01:2.500 H:M:S, 0.3 percent\nInterval stall: 00:00:0.000 H:M:S, 0.0 percent\n";
        assert_eq!(super::cumulative_stall_s(text), Some(62.5));
        assert_eq!(super::cumulative_stall_s("nothing"), None);
    }
}
