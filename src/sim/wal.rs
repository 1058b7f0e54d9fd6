//! The simulator's flush barrier (SPEC §6): an answer to a money request leaves only after the
//! change it speaks for has been written to the operating system, and requests answered
//! meanwhile share one write.
//!
//! RocksDB buffers the log in memory (`manual_wal_flush`), so a write is cheap and a crash of
//! the process loses what is still buffered. A request that changed (or read) recorded state
//! takes a *ticket* once its write is done; one flusher task hands the buffer to the operating
//! system (`flush_wal(false)`: no fsync, a host elsewhere would not be killed with us) and
//! publishes the last ticket that flush covers; the answers of every ticket up to it go out.
//! Tickets taken while a flush is running wait for the next one, which covers them all: under
//! load a flush serves many requests, alone a request waits for one system call.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use tokio::sync::{watch, Notify};
use tokio_util::sync::CancellationToken;

use super::Simulator;

/// Where the flusher has got to.
#[derive(Debug, Clone, Copy, Default)]
struct Flushed {
    /// Every ticket up to this one is in the operating system's hands.
    reached: u64,
    /// The last flush attempted for tickets up to this one failed.
    failed: u64,
    /// The simulator has stopped: no flush will follow.
    closed: bool,
}

/// Tickets for the log, and the flusher's progress.
#[derive(Debug)]
pub(super) struct WalBarrier {
    /// The last ticket handed out.
    issued: AtomicU64,
    /// Flushes made: with `issued`, how many answers a flush released on average.
    flushes: AtomicU64,
    /// Wakes the flusher when a ticket is taken (a permit is kept if it is busy flushing).
    wake: Notify,
    state: watch::Sender<Flushed>,
}

impl WalBarrier {
    pub(super) fn new() -> WalBarrier {
        WalBarrier {
            issued: AtomicU64::new(0),
            flushes: AtomicU64::new(0),
            wake: Notify::new(),
            state: watch::Sender::new(Flushed::default()),
        }
    }

    /// A ticket covering every write this thread has completed: the flush that releases it
    /// starts after the ticket was taken, so after those writes reached the log's buffer.
    /// Taken after a request's write (or, for a retransmission, after reading the record it
    /// replays, which may itself still be buffered).
    pub(super) fn ticket(&self) -> u64 {
        let ticket = self.issued.fetch_add(1, Ordering::SeqCst) + 1;
        self.wake.notify_one();
        ticket
    }

    /// Wait until `ticket` is flushed: true once it is, false if its flush failed or the
    /// simulator stopped first (the answer must then not be given: nothing vouches for it).
    pub(super) async fn flushed(&self, ticket: u64) -> bool {
        let mut progress = self.state.subscribe();
        let settled = progress
            .wait_for(|f| f.reached >= ticket || f.failed >= ticket || f.closed)
            .await;
        settled.is_ok_and(|f| f.reached >= ticket)
    }

    fn reached(&self) -> u64 {
        self.state.borrow().reached
    }

    /// (tickets, flushes) so far.
    pub(super) fn counts(&self) -> (u64, u64) {
        (
            self.issued.load(Ordering::Relaxed),
            self.flushes.load(Ordering::Relaxed),
        )
    }
}

/// The flusher: one flush at a time, each covering every ticket taken before it started;
/// one last flush when the simulator stops.
pub(super) async fn run_flusher(sim: Arc<Simulator>, stop: CancellationToken) {
    let wal = sim.wal.clone();
    loop {
        tokio::select! {
            _ = stop.cancelled() => break,
            _ = wal.wake.notified() => {}
        }
        // Read before the flush starts: every write of these tickets is in the buffer.
        let target = wal.issued.load(Ordering::SeqCst);
        if target <= wal.reached() {
            continue;
        }
        // A write system call: off the runtime's threads, which serve the other requests.
        let flushing = sim.clone();
        let result = tokio::task::spawn_blocking(move || flushing.db.flush_wal(false)).await;
        wal.flushes.fetch_add(1, Ordering::Relaxed);
        match result {
            Ok(Ok(())) => wal.state.send_modify(|f| f.reached = target),
            Ok(Err(e)) => {
                tracing::warn!(simulator = %sim.name, error = %e, "log flush failed; answers withheld");
                wal.state.send_modify(|f| f.failed = target);
            }
            Err(e) => {
                tracing::warn!(simulator = %sim.name, error = %e, "log flush task failed; answers withheld");
                wal.state.send_modify(|f| f.failed = target);
            }
        }
    }
    let target = wal.issued.load(Ordering::SeqCst);
    let flushed = sim.db.flush_wal(false);
    if let Err(e) = &flushed {
        tracing::warn!(simulator = %sim.name, error = %e, "last log flush failed");
    }
    wal.state.send_modify(|f| {
        if flushed.is_ok() {
            f.reached = f.reached.max(target);
        }
        f.closed = true;
    });
    let (tickets, flushes) = wal.counts();
    tracing::info!(simulator = %sim.name, tickets, flushes, "log closed");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_ticket_waits_for_the_flush_that_covers_it() {
        let wal = WalBarrier::new();
        let first = wal.ticket();
        let second = wal.ticket();
        wal.state.send_modify(|f| f.reached = first);
        assert!(wal.flushed(first).await);
        let waiting =
            tokio::time::timeout(std::time::Duration::from_millis(50), wal.flushed(second)).await;
        assert!(waiting.is_err(), "released before its flush");
        wal.state.send_modify(|f| f.failed = second);
        assert!(
            !wal.flushed(second).await,
            "a failed flush releases no answer"
        );
        let third = wal.ticket();
        wal.state.send_modify(|f| f.closed = true);
        assert!(!wal.flushed(third).await, "nothing flushes after a stop");
    }
}
