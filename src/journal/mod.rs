//! The journal: the switch's durable memory in RocksDB.
//!
//! Every step of a transaction (a message in or out, a leg's state change, a queued reversal,
//! the answer) is one [`Step`]: a list of writes to column families that lands as one atomic
//! `WriteBatch`. Steps that decide money are *synced* (the WAL is fsynced before the step is
//! reported done). Syncing costs one fsync, so steps are group-committed: one writer thread
//! takes every step waiting, writes them all as one batch with one sync, then releases every
//! waiter. Under concurrency many transactions share each fsync. On a memory store
//! ([`crate::store::Store::memory`], for tests) there is nothing to sync: each step is
//! written by the task committing it, at once, so that it is visible (and a submitted step's
//! callback has run) by the time the call returns.
//!
//! - [`entry`]: journal entries (append-only, masked card data) and how they print.
//! - [`read`]: reading it back for people.
//! - [`retention`]: deleting records past their time, and the store's size.
//! - [`seal`]: AEAD for the card data that must be kept (the PAN of a pending acquirer reversal).
//! - [`stored`]: the binary form of the switch's records.

// Entries and the stored form are records: readable without the store (see `crate::records`).
pub use crate::records::entry;
mod queue;
pub mod read;
pub mod retention;
pub mod seal;
pub use crate::records::stored;

#[cfg(test)]
mod on_memory;

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::oneshot;

pub use entry::{Entry, EntryKind};
pub use seal::Sealer;

pub use crate::config::Durability;
use crate::store::{Batch, Cf, Store};

/// One write of a step.
#[derive(Clone)]
enum Op {
    Put(Cf, Vec<u8>, Vec<u8>),
    Delete(Cf, Vec<u8>),
}

/// Writes that land together or not at all. The step's journal entries become one journal
/// record (one key, given at commit, so the journal's order is the commit order): a
/// transaction's messages of one step cost one insert, not one each.
#[derive(Default, Clone)]
pub struct Step {
    ops: Vec<Op>,
    entries: Vec<Entry>,
    sync: bool,
    /// A leg went upstream before this step landed ([`Step::sent_ahead`]).
    ahead: bool,
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

    /// A leg is sent upstream before this step (its record) is on disk (`[[link]]
    /// legs_ahead`, see [`crate::switch::legs_ahead`]). Two promises follow. Whoever is told
    /// the step landed is told only once it is *on disk* — synced by its own group or by
    /// the next group that syncs — since that is when the leg's place may be given to the
    /// next one. And nothing written after it may land without it: a write that fails with
    /// such a step pending halts the journal for good (every later step is refused), so
    /// that what is on disk is always a prefix of what was queued, which start-up recovery
    /// relies on to know which legs it must reverse blind.
    pub fn sent_ahead(&mut self) {
        self.ahead = true;
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
    /// A write failed while a leg sent ahead of its record was not on disk (nothing may land
    /// after it), or a landing callback panicked (its owner's memory may not match the
    /// disk): nothing is written any more. A restart recovers from the disk.
    #[error("journal halted; restart the switch")]
    Halted,
}

struct Pending {
    step: Step,
    /// The step's entries, serialised by the committing task (not the writer thread).
    record: Option<Vec<u8>>,
    done: Done,
    /// Test-only (`fault-injection`, point `ahead-record`): this step's write fails.
    doomed: bool,
}

/// Who hears that a step landed.
enum Done {
    /// A task waiting for it ([`Journal::commit`]).
    Wake(oneshot::Sender<Result<(), JournalError>>),
    /// Nobody waits ([`Journal::submit`]): this runs on the writer thread once the step is
    /// written (on a memory store, on the submitting task), so it must be short and must not
    /// block.
    Then(Box<dyn FnOnce(Result<(), JournalError>) + Send>),
}

impl Done {
    /// Tell the step's owner; false when its callback panicked.
    ///
    /// A callback that panics must not take the writer thread with it (every later step
    /// would wait for ever), nor the rest of its group (steps that landed would never hear
    /// it): the panic is caught. But its owner may now believe a landed step did not land
    /// (the hosted ledger's memory would fall behind its entries), so the caller halts the
    /// journal: nothing more is decided on what memory holds; a restart reads the disk.
    #[must_use]
    fn send(self, result: Result<(), JournalError>) -> bool {
        match self {
            Done::Wake(tx) => {
                let _ = tx.send(result);
                true
            }
            Done::Then(f) => {
                let ran = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| f(result)));
                if ran.is_err() {
                    tracing::error!("journal: a step's landing callback panicked");
                    metrics::counter!("cyberswitch_journal_callback_panics_total").increment(1);
                }
                ran.is_ok()
            }
        }
    }
}

/// The journal's writer. Cheap to share (`Arc`).
pub struct Journal {
    store: Store,
    writer: Writer,
    sealer: Sealer,
    /// Places for steps handed over and not waited for ([`Journal::submit`]): past
    /// [`MAX_UNAWAITED`], submitting waits, so a writer held up (a slow disk) cannot make
    /// the queue grow without bound while answers go on leaving.
    unawaited: Arc<tokio::sync::Semaphore>,
    wait_synced: metrics::Histogram,
    wait_buffered: metrics::Histogram,
    /// Set once a write failed with a step sent ahead pending ([`JournalError::Halted`]).
    halted: Arc<std::sync::atomic::AtomicBool>,
    /// Test-only write failures by point name: how many times each is still to fail.
    #[cfg(feature = "fault-injection")]
    faults: Mutex<std::collections::HashMap<String, u32>>,
}

/// How the writer groups steps (`[limits]`): at most `batch_max` steps per write; under load,
/// a group with a synced step waits `sync_delay` for more (see [`writer`]).
#[derive(Clone, Copy, Debug)]
pub struct Grouping {
    pub batch_max: usize,
    pub sync_delay: Duration,
}

/// At most this many steps submitted and not yet written (a few kilobytes each).
pub const MAX_UNAWAITED: usize = 4096;

/// `meta` key: when the last [`Journal::sync`] was asked for (ms since the epoch).
const SYNCED_AT: &[u8] = b"synced_at";

fn now_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}

/// Who writes the steps.
enum Writer {
    /// RocksDB: the group-commit thread, fed through `queue`.
    Thread {
        queue: Arc<queue::Queue<Pending>>,
        thread: Option<std::thread::JoinHandle<()>>,
    },
    /// A memory store: the committing task, one step at a time (nothing to sync, so
    /// nothing to gain from groups; written at once, so tests are deterministic).
    Inline { next_seq: Mutex<u64> },
}

/// What the writer does with a group: sync it when asked (the product), or, for benchmarks
/// only, never sync / write no WAL ([`Durability`]).
#[derive(Clone, Copy)]
struct Disk {
    durability: Durability,
}

impl Disk {
    const SYNCED: Disk = Disk {
        durability: Durability::Synced,
    };

    fn sync(self, asked: bool) -> bool {
        asked && self.durability == Durability::Synced
    }

    fn wal(self) -> bool {
        self.durability != Durability::Off
    }
}

impl Drop for Journal {
    /// Close the queue and wait for the writer to finish its last group, so that the
    /// database is closed (and its lock released) when the journal is gone.
    fn drop(&mut self) {
        if let Writer::Thread { queue, thread } = &mut self.writer {
            queue.close();
            if let Some(w) = thread.take() {
                let _ = w.join();
            }
        }
    }
}

impl Journal {
    /// Start the group-commit writer over `store` (on a memory store, steps are written
    /// by their callers). `batch_max` bounds how many steps share one write (and so how long
    /// the first waiter of a group can be held up).
    pub fn open(store: Store, sealer: Sealer, batch_max: usize) -> Result<Arc<Journal>, String> {
        let grouping = Grouping {
            batch_max,
            sync_delay: Duration::ZERO,
        };
        Journal::open_with(store, sealer, grouping, Durability::Synced)
    }

    /// As [`Journal::open`], with the benchmark-only `durability` of `[bench]` (anything but
    /// [`Durability::Synced`] breaks SPEC §9; `run` refuses it unless told).
    pub fn open_with(
        store: Store,
        sealer: Sealer,
        grouping: Grouping,
        durability: Durability,
    ) -> Result<Arc<Journal>, String> {
        if durability != Durability::Synced {
            tracing::warn!(
                durability = durability.name(),
                "journal: benchmark-only durability, steps are not safe on disk"
            );
        }
        let disk = Disk { durability };
        let next_seq = last_seq(&store)?.map_or(0, |s| s + 1);
        let halted = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let writer = match &store {
            Store::Memory(_) => Writer::Inline {
                next_seq: Mutex::new(next_seq),
            },
            Store::Rocks(_) => {
                let queue = Arc::new(queue::Queue::new());
                let writer_store = store.clone();
                let rx = queue.clone();
                let writer_halted = halted.clone();
                let thread = std::thread::Builder::new()
                    .name("journal-writer".into())
                    .spawn(move || {
                        let mut w = GroupWriter {
                            store: writer_store,
                            next_seq,
                            disk,
                            halted: writer_halted,
                            awaiting_sync: Vec::new(),
                        };
                        w.run(&rx, grouping)
                    })
                    .map_err(|e| format!("cannot start the journal writer: {e}"))?;
                Writer::Thread {
                    queue,
                    thread: Some(thread),
                }
            }
        };
        Ok(Arc::new(Journal {
            store,
            writer,
            sealer,
            unawaited: Arc::new(tokio::sync::Semaphore::new(MAX_UNAWAITED)),
            wait_synced: metrics::histogram!("cyberswitch_journal_commit_seconds", "mode" => "synced"),
            wait_buffered: metrics::histogram!("cyberswitch_journal_commit_seconds", "mode" => "buffered"),
            halted,
            #[cfg(feature = "fault-injection")]
            faults: Mutex::default(),
        }))
    }

    /// Test-only (`fault-injection`): the next `count` writes at the named point fail as if
    /// the disk refused them (points: `answer`, a transaction's answer step; `answer-retry`,
    /// its retries in the background; `ahead-record`, the write of a leg's record sent
    /// ahead of it, which then halts the journal).
    #[cfg(feature = "fault-injection")]
    pub fn inject_fault(&self, point: &str, count: u32) {
        if let Ok(mut f) = self.faults.lock() {
            f.insert(point.to_string(), count);
        }
    }

    /// Does the write at this point fail (test-only; always `Ok` without `fault-injection`)?
    pub fn fault(&self, point: &str) -> Result<(), JournalError> {
        #[cfg(feature = "fault-injection")]
        if let Ok(mut f) = self.faults.lock() {
            if let Some(left) = f.get_mut(point).filter(|n| **n > 0) {
                *left -= 1;
                return Err(JournalError::Write(format!("injected fault at {point}")));
            }
        }
        let _ = point;
        Ok(())
    }

    pub fn store(&self) -> &Store {
        &self.store
    }

    pub fn sealer(&self) -> &Sealer {
        &self.sealer
    }

    /// Commit a step; resolves once it is written (and, for a synced step, on disk).
    pub async fn commit(&self, step: Step) -> Result<(), JournalError> {
        if step.is_empty() {
            return Ok(());
        }
        let (done, wait) = oneshot::channel();
        let started = Instant::now();
        let synced = step.sync;
        self.enqueue(step, Done::Wake(done))?;
        let result = wait.await.map_err(|_| JournalError::Stopped)?;
        // What a transaction waits for its step: the queue, the group's write and sync.
        self.wait_histogram(synced)
            .record(started.elapsed().as_secs_f64());
        result
    }

    /// Hand a step to the writer without waiting for it to be written: `landed` runs once,
    /// with the outcome — on the writer thread once the step is written (on a memory store,
    /// before this returns), or at once when it cannot be queued (that error is also
    /// returned). For steps nobody has to wait for:
    /// buffered steps that decide no money. An unsynced one is written with the next step
    /// somebody awaits, or within [`queue::LINGER`] (it does not wake the writer). Waits only
    /// while [`MAX_UNAWAITED`] steps are outstanding.
    pub async fn submit(
        &self,
        step: Step,
        landed: impl FnOnce(Result<(), JournalError>) + Send + 'static,
    ) -> Result<(), JournalError> {
        if step.is_empty() {
            landed(Ok(()));
            return Ok(());
        }
        let Ok(place) = self.unawaited.clone().acquire_owned().await else {
            landed(Err(JournalError::Stopped));
            return Err(JournalError::Stopped);
        };
        self.commit_then(step, move |result| {
            drop(place);
            landed(result);
        })
    }

    /// Hand a step to the writer now (no waiting for a place) with what to run once it has
    /// landed: on the writer thread once written (on a memory store, before this returns),
    /// or at once with the error when it cannot be queued (that error is also returned). For
    /// a caller whose follow-up must happen whether or not it is still waiting (the hosted
    /// ledger's memory, `ledger::write`).
    pub fn commit_then(
        &self,
        step: Step,
        landed: impl FnOnce(Result<(), JournalError>) + Send + 'static,
    ) -> Result<(), JournalError> {
        if step.is_empty() {
            landed(Ok(()));
            return Ok(());
        }
        // Counted as a committing task's wait is (see `commit`). The histogram, not the
        // journal: the last handle on the journal must never be dropped on its own writer
        // thread (dropping joins that thread).
        let started = Instant::now();
        let waited = self.wait_histogram(step.sync).clone();
        self.enqueue(
            step,
            Done::Then(Box::new(move |result| {
                waited.record(started.elapsed().as_secs_f64());
                landed(result);
            })),
        )
    }

    /// Hand a step to the writer at once, never waiting for a place and never told how it
    /// went: for tiny steps whose place in the writer's order matters more than their fate
    /// (a delivery marker must be queued before any step made after its answer was written,
    /// see [`crate::switch::delivery`]). Losing one costs only a doubt at the next start.
    /// Written as [`Journal::submit`]'s steps are: in its place, with the next awaited step
    /// or within [`queue::LINGER`].
    pub fn submit_now(&self, step: Step) {
        if step.is_empty() {
            return;
        }
        let _ = self.enqueue(
            step,
            Done::Then(Box::new(|result| {
                if let Err(e) = result {
                    tracing::warn!(error = %e, "journal: a buffered step did not land");
                }
            })),
        );
    }

    /// Everything handed to the writer before this call is on disk once it returns (a
    /// synced step written after them: the writer keeps their order).
    pub async fn sync(&self) -> Result<(), JournalError> {
        let mut step = Step::new();
        step.put(Cf::Meta, SYNCED_AT, now_ms().to_be_bytes().to_vec());
        step.synced();
        self.commit(step).await
    }

    /// Queue a step for the writer (or, on a memory store, write it now); when it cannot
    /// be queued, `done` hears so at once.
    fn enqueue(&self, step: Step, done: Done) -> Result<(), JournalError> {
        if self.is_halted() {
            self.tell(done, Err(JournalError::Halted));
            return Err(JournalError::Halted);
        }
        let record = (!step.entries.is_empty()).then(|| entry::record_bytes(&step.entries));
        // Somebody waits for it: the writer takes it now (with every step queued before it).
        let urgent = step.sync || matches!(done, Done::Wake(_));
        let doomed = step.ahead && self.fault("ahead-record").is_err();
        let pending = Pending {
            record,
            step,
            done,
            doomed,
        };
        let refused = match &self.writer {
            Writer::Thread { queue, .. } => match queue.push(pending, urgent) {
                Ok(()) => return Ok(()),
                Err(queue::Closed(p)) => p,
            },
            Writer::Inline { next_seq } => return self.write_now(next_seq, pending),
        };
        let error = if self.is_halted() {
            JournalError::Halted
        } else {
            JournalError::Stopped
        };
        self.tell(refused.done, Err(error.clone()));
        Err(error)
    }

    /// Tell a step's owner how it went; a callback that panicked halts the journal (see
    /// [`Done::send`]).
    fn tell(&self, done: Done, result: Result<(), JournalError>) {
        if !done.send(result) {
            halt(&self.halted);
            if let Writer::Thread { queue, .. } = &self.writer {
                queue.close();
            }
        }
    }

    /// Has a failed write halted the journal ([`JournalError::Halted`])?
    pub fn is_halted(&self) -> bool {
        self.halted.load(std::sync::atomic::Ordering::Acquire)
    }

    /// Write one step on the caller's thread; `done` hears the outcome once the sequence
    /// lock is released (so that what it runs may commit again).
    fn write_now(&self, next_seq: &Mutex<u64>, pending: Pending) -> Result<(), JournalError> {
        let result = match next_seq.lock() {
            Ok(mut seq) => write_group(
                &self.store,
                std::slice::from_ref(&pending),
                &mut seq,
                Disk::SYNCED,
                pending.step.sync,
            ),
            Err(_) => Err(JournalError::Write("journal sequence lock poisoned".into())),
        };
        if result.is_err() && pending.step.ahead {
            halt(&self.halted);
        }
        self.tell(pending.done, result);
        Ok(())
    }

    fn wait_histogram(&self, synced: bool) -> &metrics::Histogram {
        if synced {
            &self.wait_synced
        } else {
            &self.wait_buffered
        }
    }

    /// Read one value.
    pub fn get(&self, cf: Cf, key: &[u8]) -> Result<Option<Vec<u8>>, String> {
        self.store.get(cf, key)
    }

    /// Every (key, value) of a column family whose key starts with `prefix`, in key order.
    pub fn scan(&self, cf: Cf, prefix: &[u8]) -> Result<Vec<crate::store::KeyValue>, String> {
        self.store.scan(cf, prefix)
    }
}

/// The last journal sequence number written, if any.
fn last_seq(store: &Store) -> Result<Option<u64>, String> {
    Ok(store
        .last_key(Cf::Journal)?
        .and_then(|k| <[u8; 8]>::try_from(k).ok())
        .map(u64::from_be_bytes))
}

/// Under load means: the last sync ended less than this long before the next group was taken.
const UNDER_LOAD: Duration = Duration::from_millis(1);

/// Group commit: take every step waiting (up to `batch_max`) once one of them is awaited (or
/// the others have lingered, see [`queue`]), write them as one batch, sync once if any of
/// them asked for it, release them all. Under load, a group that will sync first waits
/// `sync_delay` for more steps to share that sync; an idle switch never waits.
struct GroupWriter {
    store: Store,
    next_seq: u64,
    disk: Disk,
    halted: Arc<std::sync::atomic::AtomicBool>,
    /// Steps sent ahead ([`Step::sent_ahead`]) written by a group that did not sync: told
    /// they landed once a later group syncs.
    awaiting_sync: Vec<Done>,
}

impl GroupWriter {
    fn run(&mut self, rx: &queue::Queue<Pending>, grouping: Grouping) {
        let batch_max = grouping.batch_max.max(1);
        let mut last_sync_end: Option<Instant> = None;
        while let Some(mut group) = rx.take(batch_max) {
            if self.halted.load(std::sync::atomic::Ordering::Acquire) {
                for p in group {
                    self.tell(p.done, Err(JournalError::Halted), rx);
                }
                continue;
            }
            let under_load = last_sync_end.is_some_and(|end| end.elapsed() < UNDER_LOAD);
            let room = group.len() < batch_max;
            if under_load
                && room
                && !grouping.sync_delay.is_zero()
                && group.iter().any(|p| p.step.sync)
            {
                rx.gather(&mut group, batch_max, grouping.sync_delay);
            }
            let ahead = group.iter().any(|p| p.step.ahead);
            if ahead {
                // Test-only: a crash with a leg sent ahead of a record that never lands.
                crate::switch::testhooks::crash_point_blocking("ahead-record-write");
            }
            let synced = group.iter().any(|p| p.step.sync);
            let result = write_group(&self.store, &group, &mut self.next_seq, self.disk, synced);
            if synced {
                last_sync_end = Some(Instant::now());
            }
            self.release(group, synced, result, rx);
        }
        // Closed: what was written without a sync is synced now, then told.
        if !self.awaiting_sync.is_empty() {
            let result = self.sync_now();
            for done in std::mem::take(&mut self.awaiting_sync) {
                self.tell(done, result.clone(), rx);
            }
        }
    }

    /// Tell a step's owner how it went; a callback that panicked halts the journal (see
    /// [`Done::send`]).
    fn tell(&self, done: Done, result: Result<(), JournalError>, rx: &queue::Queue<Pending>) {
        if !done.send(result) {
            halt(&self.halted);
            rx.close();
        }
    }

    /// Tell a written group's steps how it went. A step sent ahead hears only once it is on
    /// disk; a failure while any such step is not halts the journal.
    fn release(
        &mut self,
        group: Vec<Pending>,
        synced: bool,
        result: Result<(), JournalError>,
        rx: &queue::Queue<Pending>,
    ) {
        let ahead = group.iter().any(|p| p.step.ahead) || !self.awaiting_sync.is_empty();
        if result.is_err() && ahead {
            halt(&self.halted);
            rx.close();
            for done in std::mem::take(&mut self.awaiting_sync) {
                self.tell(done, Err(JournalError::Halted), rx);
            }
            for p in group {
                self.tell(p.done, Err(JournalError::Halted), rx);
            }
            return;
        }
        if synced && result.is_ok() {
            for done in std::mem::take(&mut self.awaiting_sync) {
                self.tell(done, Ok(()), rx);
            }
        }
        for p in group {
            if p.step.ahead && !synced && result.is_ok() {
                self.awaiting_sync.push(p.done);
            } else {
                self.tell(p.done, result.clone(), rx);
            }
        }
    }

    /// One synced write of the sync time: everything written before it is on disk after it.
    fn sync_now(&self) -> Result<(), JournalError> {
        let mut batch = self.store.batch();
        batch
            .put(Cf::Meta, SYNCED_AT, &now_ms().to_be_bytes())
            .map_err(JournalError::Write)?;
        self.store
            .write_with(batch, self.disk.sync(true), self.disk.wal())
            .map_err(JournalError::Write)
    }
}

/// Refuse every write from now on ([`JournalError::Halted`]).
fn halt(halted: &std::sync::atomic::AtomicBool) {
    if !halted.swap(true, std::sync::atomic::Ordering::AcqRel) {
        tracing::error!(
            "journal halted (a write failed while a leg sent ahead of its record was not on disk, \
             or a landing callback panicked): every later write is refused; restart the switch \
             (its recovery reverses what must be)"
        );
        metrics::gauge!("cyberswitch_journal_halted").set(1.0);
    }
}

/// Write the steps as one batch, synced if `sync` (any of them asked for it, or the writer
/// decided so); on success `next_seq` goes past the records written.
fn write_group(
    store: &Store,
    group: &[Pending],
    next_seq: &mut u64,
    disk: Disk,
    sync: bool,
) -> Result<(), JournalError> {
    // The metrics keep the asked mode (a synced step counts as one even when a benchmark
    // setting skips its fsync), so steps per group compare across settings.
    let started = Instant::now();
    let mut seq = *next_seq;
    let result = build(store, group, &mut seq).and_then(|batch| {
        store
            .write_with(batch, disk.sync(sync), disk.wal())
            .map_err(JournalError::Write)
    });
    match &result {
        Ok(()) => *next_seq = seq,
        // The batch did not land: its sequence numbers are given again.
        Err(e) => tracing::error!(error = %e, "journal write failed"),
    }
    let mode = if sync { "synced" } else { "buffered" };
    metrics::histogram!("cyberswitch_journal_write_seconds", "mode" => mode)
        .record(started.elapsed().as_secs_f64());
    metrics::histogram!("cyberswitch_journal_batch_steps").record(group.len() as f64);
    result
}

fn build<'s>(
    store: &'s Store,
    group: &[Pending],
    next_seq: &mut u64,
) -> Result<Batch<'s>, JournalError> {
    let mut batch = store.batch();
    for pending in group {
        if pending.doomed {
            return Err(JournalError::Write("injected fault at ahead-record".into()));
        }
        for op in &pending.step.ops {
            match op {
                Op::Put(cf, k, v) => batch.put(*cf, k, v),
                Op::Delete(cf, k) => batch.delete(*cf, k),
            }
            .map_err(JournalError::Write)?;
        }
        if let Some(record) = &pending.record {
            batch
                .put(Cf::Journal, &next_seq.to_be_bytes(), record)
                .map_err(JournalError::Write)?;
            *next_seq += 1;
        }
    }
    Ok(batch)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn journal(dir: &std::path::Path) -> Arc<Journal> {
        let db = crate::store::open(dir).unwrap();
        Journal::open(db, Sealer::from_card_key(&[7u8; 32]), 64).unwrap()
    }

    fn grouping(delay_us: u64) -> Grouping {
        Grouping {
            batch_max: 64,
            sync_delay: Duration::from_micros(delay_us),
        }
    }

    fn step(key: &str) -> Step {
        let mut s = Step::new();
        s.put(Cf::Dedup, key.as_bytes().to_vec(), b"answer".to_vec());
        s.append(Entry::new(EntryKind::Txn, key, "", "answered".into()));
        s
    }

    #[tokio::test]
    async fn a_submitted_step_lands_and_then_says_so_once() {
        let dir = tempfile::tempdir().unwrap();
        let j = journal(dir.path());
        let (tx, rx) = std::sync::mpsc::channel();
        j.submit(step("k1"), move |r| tx.send(r).unwrap())
            .await
            .unwrap();
        let landed = rx.recv_timeout(std::time::Duration::from_secs(10)).unwrap();
        assert!(landed.is_ok());
        // Written by the time it said so.
        assert_eq!(
            j.get(Cf::Dedup, b"k1").unwrap().as_deref(),
            Some(&b"answer"[..])
        );
        assert!(rx.try_recv().is_err(), "told twice");
    }

    /// A step sent ahead, written by a group that did not sync, is told it landed only once
    /// a later group syncs: its leg's place must not be given back while a power cut could
    /// still lose it.
    #[test]
    fn a_step_sent_ahead_hears_it_landed_only_once_a_sync_covers_it() {
        let dir = tempfile::tempdir().unwrap();
        let store = crate::store::open(dir.path()).unwrap();
        let rx = queue::Queue::new();
        let mut w = GroupWriter {
            store,
            next_seq: 0,
            disk: Disk::SYNCED,
            halted: Arc::default(),
            awaiting_sync: Vec::new(),
        };
        let told = Arc::new(Mutex::new(Vec::new()));
        let pending = |key: &str, ahead: bool, sync: bool| {
            let mut s = step(key);
            if ahead {
                s.sent_ahead();
            }
            if sync {
                s.synced();
            }
            let (told, key) = (told.clone(), key.to_string());
            Pending {
                step: s,
                record: None,
                done: Done::Then(Box::new(move |r| {
                    told.lock().unwrap().push((key, r.is_ok()))
                })),
                doomed: false,
            }
        };
        w.release(
            vec![
                pending("ahead", true, false),
                pending("other", false, false),
            ],
            false,
            Ok(()),
            &rx,
        );
        assert_eq!(*told.lock().unwrap(), [("other".to_string(), true)]);
        w.release(vec![pending("synced", false, true)], true, Ok(()), &rx);
        assert_eq!(
            *told.lock().unwrap(),
            [
                ("other".to_string(), true),
                ("ahead".to_string(), true),
                ("synced".to_string(), true)
            ]
        );
        // A failure with one still waiting halts: it is told so, and so is its group.
        w.release(vec![pending("ahead2", true, false)], false, Ok(()), &rx);
        w.release(
            vec![pending("plain", false, true)],
            true,
            Err(JournalError::Write("disk".into())),
            &rx,
        );
        let told = told.lock().unwrap();
        assert_eq!(
            told[3..],
            [("ahead2".to_string(), false), ("plain".to_string(), false)]
        );
        assert!(w.halted.load(std::sync::atomic::Ordering::Acquire));
    }

    /// A write that fails with a step sent ahead halts the journal: what is on disk stays a
    /// prefix of what was queued (start-up recovery's blind reversals rely on it).
    #[cfg(feature = "fault-injection")]
    #[tokio::test]
    async fn a_failed_write_with_a_step_sent_ahead_halts_the_journal() {
        let dir = tempfile::tempdir().unwrap();
        let j = journal(dir.path());
        j.inject_fault("ahead-record", 1);
        let (tx, rx) = std::sync::mpsc::channel();
        let mut ahead = step("ahead");
        ahead.sent_ahead();
        j.commit_then(ahead, move |r| tx.send(r).unwrap()).unwrap();
        let mut after = step("after");
        after.synced();
        let later = j.commit(after).await;
        let landed = rx.recv_timeout(std::time::Duration::from_secs(10)).unwrap();
        assert!(matches!(landed, Err(JournalError::Halted)), "{landed:?}");
        assert!(matches!(later, Err(JournalError::Halted)), "{later:?}");
        assert!(j.is_halted());
        assert!(j.get(Cf::Dedup, b"ahead").unwrap().is_none());
        assert!(j.get(Cf::Dedup, b"after").unwrap().is_none());
        // Everything from now on is refused.
        assert!(matches!(
            j.commit(step("next")).await,
            Err(JournalError::Halted)
        ));
    }

    /// A landing callback that panics takes neither the writer nor its group's other steps
    /// with it; it halts the journal (its owner may now be wrong about what landed), and
    /// every step after is refused, none left waiting.
    #[tokio::test]
    async fn a_callback_that_panics_halts_the_journal_and_leaves_nobody_waiting() {
        let dir = tempfile::tempdir().unwrap();
        let j = journal(dir.path());
        j.commit_then(step("first"), |_| panic!("a callback's bug"))
            .unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        // Queued with the first or after it: told either way.
        let _ = j.commit_then(step("second"), move |r| tx.send(r).unwrap());
        let mut third = step("third");
        third.synced();
        let wait = std::time::Duration::from_secs(30);
        let third = tokio::time::timeout(wait, j.commit(third)).await;
        assert!(
            third.is_ok(),
            "left waiting: the writer died with the callback"
        );
        assert!(
            rx.recv_timeout(wait).is_ok(),
            "the second step was never told"
        );
        assert!(j.is_halted());
        let fourth = tokio::time::timeout(wait, j.commit(step("fourth"))).await;
        assert!(
            matches!(fourth, Ok(Err(JournalError::Halted))),
            "{fourth:?}"
        );
    }

    #[tokio::test]
    async fn benchmark_durability_still_writes_every_step() {
        for durability in [Durability::Unsynced, Durability::Off] {
            let dir = tempfile::tempdir().unwrap();
            let db = crate::store::open_with(dir.path(), Default::default()).unwrap();
            let j = Journal::open_with(
                db,
                Sealer::from_card_key(&[7u8; 32]),
                grouping(0),
                durability,
            )
            .unwrap();
            let mut s = step("k1");
            s.synced();
            j.commit(s).await.unwrap();
            assert_eq!(
                j.get(Cf::Dedup, b"k1").unwrap().as_deref(),
                Some(&b"answer"[..])
            );
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn steps_waiting_for_company_under_load_all_land_in_order() {
        let dir = tempfile::tempdir().unwrap();
        let db = crate::store::open(dir.path()).unwrap();
        let j = Journal::open_with(
            db,
            Sealer::from_card_key(&[7u8; 32]),
            grouping(2_000),
            Durability::Synced,
        )
        .unwrap();
        let commits = (0..64).map(|i| {
            let j = j.clone();
            tokio::spawn(async move {
                let mut s = step(&format!("k{i:02}"));
                s.synced();
                j.commit(s).await
            })
        });
        for c in futures::future::join_all(commits).await {
            assert!(c.unwrap().is_ok());
        }
        // A buffered step behind them lands too (taken with the next group or after its
        // linger), and the journal's records are numbered without a gap.
        let (tx, rx) = std::sync::mpsc::channel();
        j.submit(step("last"), move |r| tx.send(r).unwrap())
            .await
            .unwrap();
        assert!(rx
            .recv_timeout(std::time::Duration::from_secs(10))
            .unwrap()
            .is_ok());
        for i in 0..64 {
            let key = format!("k{i:02}");
            assert!(j.get(Cf::Dedup, key.as_bytes()).unwrap().is_some());
        }
        let seqs: Vec<u64> = j
            .scan(Cf::Journal, b"")
            .unwrap()
            .iter()
            .map(|(k, _)| u64::from_be_bytes(k.as_slice().try_into().unwrap()))
            .collect();
        assert_eq!(seqs, (0..65).collect::<Vec<u64>>());
    }

    #[tokio::test]
    async fn a_step_the_writer_cannot_take_is_refused_and_told() {
        let dir = tempfile::tempdir().unwrap();
        let mut j = journal(dir.path());
        // Stop the writer as dropping does.
        let inner = Arc::get_mut(&mut j).unwrap();
        let Writer::Thread { queue, thread } = &mut inner.writer else {
            panic!("a RocksDB journal writes on its thread");
        };
        queue.close();
        if let Some(w) = thread.take() {
            w.join().unwrap();
        }
        let (tx, rx) = std::sync::mpsc::channel();
        let refused = j.submit(step("k2"), move |r| tx.send(r).unwrap()).await;
        assert!(matches!(refused, Err(JournalError::Stopped)));
        assert!(matches!(rx.try_recv(), Ok(Err(JournalError::Stopped))));
        assert!(matches!(
            j.commit(step("k3")).await,
            Err(JournalError::Stopped)
        ));
    }
}
