//! The writer thread: group commit of the queued steps, the sync a step sent ahead waits
//! for, and the halt after a failed write with one pending.

use std::sync::Arc;
use std::time::{Duration, Instant};

use super::{now_ms, queue, Disk, Done, Grouping, JournalError, Op, Pending, SYNCED_AT};
use crate::store::{Batch, Cf, Store};

/// Under load means: the last sync ended less than this long before the next group was taken.
const UNDER_LOAD: Duration = Duration::from_millis(1);

/// Group commit: take every step waiting (up to `batch_max`) once one of them is awaited (or
/// the others have lingered, see [`queue`]), write them as one batch, sync once if any of
/// them asked for it, release them all. Under load, a group that will sync first waits
/// `sync_delay` for more steps to share that sync; an idle switch never waits.
pub(super) struct GroupWriter {
    pub(super) store: Store,
    pub(super) next_seq: u64,
    pub(super) disk: Disk,
    pub(super) halted: Arc<std::sync::atomic::AtomicBool>,
    /// Steps sent ahead ([`Step::sent_ahead`]) written by a group that did not sync: told
    /// they landed once a later group syncs.
    pub(super) awaiting_sync: Vec<Done>,
}

impl GroupWriter {
    pub(super) fn run(&mut self, rx: &queue::Queue<Pending>, grouping: Grouping) {
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
    pub(super) fn release(
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
pub(super) fn halt(halted: &std::sync::atomic::AtomicBool) {
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
pub(super) fn write_group(
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
