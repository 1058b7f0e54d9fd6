//! The journal: the switch's durable memory in RocksDB.
//!
//! Every step of a transaction (a message in or out, a leg's state change, a queued reversal,
//! the answer) is one [`Step`]: a list of writes to column families that lands as one atomic
//! `WriteBatch`. Steps that decide money are *synced* (the WAL is fsynced before the step is
//! reported done). Syncing costs one fsync, so steps are group-committed: one writer thread
//! takes every step waiting, writes them all as one batch with one sync, then releases every
//! waiter. Under concurrency many transactions share each fsync.
//!
//! - [`entry`]: journal entries (append-only, masked card data) and how they print.
//! - [`read`]: reading it back for people.
//! - [`seal`]: AEAD for the card data that must be kept (the PAN of a pending acquirer reversal).
//! - [`stored`]: the binary form of the switch's records.

pub mod entry;
pub mod read;
pub mod seal;
pub mod stored;

use std::sync::{mpsc, Arc};
use std::time::Instant;

use rocksdb::{WriteBatch, WriteOptions, DB};
use tokio::sync::oneshot;

pub use entry::{Entry, EntryKind};
pub use seal::Sealer;

use crate::store::Cf;

/// One write of a step.
enum Op {
    Put(Cf, Vec<u8>, Vec<u8>),
    Delete(Cf, Vec<u8>),
}

/// Writes that land together or not at all. The step's journal entries become one journal
/// record (one key, given at commit, so the journal's order is the commit order): a
/// transaction's messages of one step cost one insert, not one each.
#[derive(Default)]
pub struct Step {
    ops: Vec<Op>,
    entries: Vec<Entry>,
    sync: bool,
}

impl Step {
    pub fn new() -> Step {
        Step::default()
    }

    pub fn put(&mut self, cf: Cf, key: impl Into<Vec<u8>>, value: impl Into<Vec<u8>>) {
        self.ops.push(Op::Put(cf, key.into(), value.into()));
    }

    pub fn delete(&mut self, cf: Cf, key: impl Into<Vec<u8>>) {
        self.ops.push(Op::Delete(cf, key.into()));
    }

    pub fn append(&mut self, entry: Entry) {
        self.entries.push(entry);
    }

    /// The step decides money: it must be on disk before anyone acts on it.
    pub fn synced(&mut self) {
        self.sync = true;
    }

    pub fn is_synced(&self) -> bool {
        self.sync
    }

    pub fn is_empty(&self) -> bool {
        self.ops.is_empty() && self.entries.is_empty()
    }
}

#[derive(Debug, Clone, thiserror::Error)]
pub enum JournalError {
    #[error("journal write failed: {0}")]
    Write(String),
    #[error("journal writer stopped")]
    Stopped,
}

struct Pending {
    step: Step,
    /// The step's entries, serialised by the committing task (not the writer thread).
    record: Option<Vec<u8>>,
    done: oneshot::Sender<Result<(), JournalError>>,
}

/// The journal's writer. Cheap to share (`Arc`).
pub struct Journal {
    db: Arc<DB>,
    /// `None` only while dropping.
    queue: Option<mpsc::Sender<Pending>>,
    writer: Option<std::thread::JoinHandle<()>>,
    sealer: Sealer,
    wait_synced: metrics::Histogram,
    wait_buffered: metrics::Histogram,
}

impl Drop for Journal {
    /// Close the queue and wait for the writer to finish its last group, so that the
    /// database is closed (and its lock released) when the journal is gone.
    fn drop(&mut self) {
        self.queue.take();
        if let Some(w) = self.writer.take() {
            let _ = w.join();
        }
    }
}

impl Journal {
    /// Start the group-commit writer over `db`. `batch_max` bounds how many steps share one
    /// write (and so how long the first waiter of a group can be held up).
    pub fn open(db: Arc<DB>, sealer: Sealer, batch_max: usize) -> Result<Arc<Journal>, String> {
        let next_seq = last_seq(&db)?.map_or(0, |s| s + 1);
        let (queue, rx) = mpsc::channel();
        let writer_db = db.clone();
        let writer = std::thread::Builder::new()
            .name("journal-writer".into())
            .spawn(move || writer(writer_db, rx, next_seq, batch_max.max(1)))
            .map_err(|e| format!("cannot start the journal writer: {e}"))?;
        Ok(Arc::new(Journal {
            db,
            queue: Some(queue),
            writer: Some(writer),
            sealer,
            wait_synced: metrics::histogram!("cyberswitch_journal_commit_seconds", "mode" => "synced"),
            wait_buffered: metrics::histogram!("cyberswitch_journal_commit_seconds", "mode" => "buffered"),
        }))
    }

    pub fn db(&self) -> &Arc<DB> {
        &self.db
    }

    pub fn sealer(&self) -> &Sealer {
        &self.sealer
    }

    /// Commit a step; resolves once it is written (and, for a synced step, on disk).
    pub async fn commit(&self, step: Step) -> Result<(), JournalError> {
        if step.is_empty() {
            return Ok(());
        }
        let record = (!step.entries.is_empty()).then(|| entry::record_bytes(&step.entries));
        let (done, wait) = oneshot::channel();
        let started = Instant::now();
        let synced = step.sync;
        self.queue
            .as_ref()
            .ok_or(JournalError::Stopped)?
            .send(Pending { record, step, done })
            .map_err(|_| JournalError::Stopped)?;
        let result = wait.await.map_err(|_| JournalError::Stopped)?;
        // What a transaction waits for its step: the queue, the group's write and sync.
        let waited = if synced {
            &self.wait_synced
        } else {
            &self.wait_buffered
        };
        waited.record(started.elapsed().as_secs_f64());
        result
    }

    /// Read one value.
    pub fn get(&self, cf: Cf, key: &[u8]) -> Result<Option<Vec<u8>>, String> {
        let handle = crate::store::handle(&self.db, cf)?;
        self.db.get_cf(handle, key).map_err(|e| e.to_string())
    }

    /// Every (key, value) of a column family whose key starts with `prefix`, in key order.
    pub fn scan(&self, cf: Cf, prefix: &[u8]) -> Result<Vec<crate::store::KeyValue>, String> {
        crate::store::scan(&self.db, cf, prefix)
    }
}

/// The last journal sequence number written, if any.
fn last_seq(db: &DB) -> Result<Option<u64>, String> {
    let handle = crate::store::handle(db, Cf::Journal)?;
    let mut it = db.raw_iterator_cf(handle);
    it.seek_to_last();
    Ok(it
        .key()
        .and_then(|k| <[u8; 8]>::try_from(k).ok())
        .map(u64::from_be_bytes))
}

/// Group commit: take a step, then every step already waiting (up to `batch_max`), write them
/// as one batch, sync once if any of them asked for it, release them all.
fn writer(db: Arc<DB>, rx: mpsc::Receiver<Pending>, mut next_seq: u64, batch_max: usize) {
    while let Ok(first) = rx.recv() {
        let mut group = vec![first];
        while group.len() < batch_max {
            match rx.try_recv() {
                Ok(p) => group.push(p),
                Err(_) => break,
            }
        }
        let sync = group.iter().any(|p| p.step.sync);
        let started = Instant::now();
        let mut seq = next_seq;
        let result = build(&db, &group, &mut seq).and_then(|batch| {
            let mut opts = WriteOptions::default();
            opts.set_sync(sync);
            db.write_opt(batch, &opts)
                .map_err(|e| JournalError::Write(e.to_string()))
        });
        match &result {
            Ok(()) => next_seq = seq,
            // The batch did not land: its sequence numbers are given again.
            Err(e) => tracing::error!(error = %e, "journal write failed"),
        }
        let mode = if sync { "synced" } else { "buffered" };
        metrics::histogram!("cyberswitch_journal_write_seconds", "mode" => mode)
            .record(started.elapsed().as_secs_f64());
        metrics::histogram!("cyberswitch_journal_batch_steps").record(group.len() as f64);
        for p in group {
            let _ = p.done.send(result.clone());
        }
    }
}

fn build(db: &DB, group: &[Pending], next_seq: &mut u64) -> Result<WriteBatch, JournalError> {
    let mut batch = WriteBatch::default();
    for pending in group {
        for op in &pending.step.ops {
            match op {
                Op::Put(cf, k, v) => batch.put_cf(handle(db, *cf)?, k, v),
                Op::Delete(cf, k) => batch.delete_cf(handle(db, *cf)?, k),
            }
        }
        if let Some(record) = &pending.record {
            batch.put_cf(handle(db, Cf::Journal)?, next_seq.to_be_bytes(), record);
            *next_seq += 1;
        }
    }
    Ok(batch)
}

fn handle(db: &DB, cf: Cf) -> Result<&rocksdb::ColumnFamily, JournalError> {
    crate::store::handle(db, cf).map_err(JournalError::Write)
}
