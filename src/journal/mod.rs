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
mod writer;
pub use crate::records::stored;

#[cfg(test)]
mod on_memory;

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::oneshot;

pub use entry::{Entry, EntryKind};
pub use seal::Sealer;

pub use crate::config::Durability;
use crate::store::{Cf, Store};
use writer::{halt, write_group, GroupWriter};

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

#[cfg(test)]
mod tests;
