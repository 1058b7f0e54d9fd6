//! The simulator's flush barrier (SPEC §6): an answer to a money request leaves only after the
//! change it speaks for has been written to the operating system, and requests answered
//! meanwhile share one write.
//!
//! RocksDB buffers the log in memory (`manual_wal_flush`), so a write is cheap and a crash of
//! the process loses what is still buffered. A request that changed (or read) recorded state
//! takes a *ticket* once its write is done. The first request to wait finds no flush running
//! and makes one itself (a leader): it hands the buffer to the operating system
//! (`flush_wal(false)`: no fsync, a host elsewhere would not be killed with us) and publishes
//! the last ticket that flush covers; the answers of every ticket up to it go out. Tickets
//! taken while a flush is running wait for it to end, and one of them leads the next, which
//! covers them all: under load a flush serves many requests, alone a request makes one
//! system call on its own thread and no hand-off at all (a flusher task woken per request
//! and a blocking-pool thread per flush cost four context switches a request at 2,000/s,
//! session 17).

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;

use tokio::sync::watch;
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
    /// A leader is flushing: the others wait for its outcome.
    flushing: AtomicBool,
    state: watch::Sender<Flushed>,
}

impl WalBarrier {
    pub(super) fn new() -> WalBarrier {
        WalBarrier {
            issued: AtomicU64::new(0),
            flushes: AtomicU64::new(0),
            flushing: AtomicBool::new(false),
            state: watch::Sender::new(Flushed::default()),
        }
    }

    /// A ticket covering every write this thread has completed: the flush that releases it
    /// starts after the ticket was taken, so after those writes reached the log's buffer.
    /// Taken after a request's write (or, for a retransmission, after reading the record it
    /// replays, which may itself still be buffered).
    pub(super) fn ticket(&self) -> u64 {
        self.issued.fetch_add(1, Ordering::SeqCst) + 1
    }

    /// Wait until `ticket` is flushed — leading a flush with `flush` when none is running:
    /// true once it is, false if its flush failed or the simulator stopped first (the answer
    /// must then not be given: nothing vouches for it).
    pub(super) async fn flushed(
        &self,
        ticket: u64,
        flush: impl Fn() -> Result<(), String>,
    ) -> bool {
        let mut progress = self.state.subscribe();
        loop {
            let now = *progress.borrow_and_update();
            if now.reached >= ticket {
                return true;
            }
            if now.failed >= ticket || now.closed {
                return false;
            }
            if self
                .flushing
                .compare_exchange(false, true, Ordering::AcqRel, Ordering::Acquire)
                .is_ok()
            {
                self.lead(&flush);
                continue;
            }
            // The leader clears `flushing` before it publishes, so its publication (after
            // our subscription) is still to come and wakes us.
            if progress.changed().await.is_err() {
                return false;
            }
        }
    }

    /// One flush covering every ticket taken before it starts, published to the waiters.
    fn lead(&self, flush: &impl Fn() -> Result<(), String>) {
        // Whatever happens in the flush (even a panic), the next waiter can lead.
        struct Release<'a>(&'a AtomicBool);
        impl Drop for Release<'_> {
            fn drop(&mut self) {
                self.0.store(false, Ordering::Release);
            }
        }
        let leading = Release(&self.flushing);
        // Read before the flush starts: every write of these tickets is in the buffer.
        let target = self.issued.load(Ordering::SeqCst);
        let result = if target <= self.reached() {
            Ok(())
        } else {
            self.flushes.fetch_add(1, Ordering::Relaxed);
            flush()
        };
        drop(leading);
        self.state.send_modify(|f| match &result {
            Ok(()) => f.reached = f.reached.max(target),
            Err(_) => f.failed = f.failed.max(target),
        });
        if let Err(e) = result {
            tracing::warn!(error = %e, "log flush failed; answers withheld");
        }
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

/// At a stop: one last flush, then no answer waiting for a flush is given (nothing more will
/// be flushed for it).
pub(super) async fn close_at_stop(sim: Arc<Simulator>, stop: CancellationToken) {
    stop.cancelled().await;
    let wal = sim.wal.clone();
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

    use std::sync::atomic::AtomicUsize;

    fn no_flush() -> Result<(), String> {
        panic!("flushed although nothing was left to flush")
    }

    #[tokio::test]
    async fn the_first_waiter_flushes_for_every_ticket_taken_before() {
        let wal = WalBarrier::new();
        let first = wal.ticket();
        let second = wal.ticket();
        let flushes = AtomicUsize::new(0);
        let count = || {
            flushes.fetch_add(1, Ordering::SeqCst);
            Ok(())
        };
        assert!(wal.flushed(first, count).await);
        assert_eq!(flushes.load(Ordering::SeqCst), 1);
        assert!(
            wal.flushed(second, no_flush).await,
            "covered by the first flush"
        );
        assert_eq!(wal.counts(), (2, 1));
    }

    #[tokio::test]
    async fn a_ticket_taken_during_a_flush_waits_for_the_next() {
        let wal = WalBarrier::new();
        let first = wal.ticket();
        let during = AtomicU64::new(0);
        let flush_taking_one = || {
            during.store(wal.ticket(), Ordering::SeqCst);
            Ok(())
        };
        assert!(wal.flushed(first, flush_taking_one).await);
        let during = during.load(Ordering::SeqCst);
        assert!(
            wal.reached() < during,
            "covered by a flush that began before it"
        );
        assert!(wal.flushed(during, || Ok(())).await);
        assert_eq!(wal.counts(), (2, 2));
    }

    #[tokio::test]
    async fn a_failed_flush_or_a_stop_releases_no_answer() {
        let wal = WalBarrier::new();
        let first = wal.ticket();
        assert!(!wal.flushed(first, || Err("disk full".into())).await);
        let second = wal.ticket();
        wal.state.send_modify(|f| f.closed = true);
        assert!(
            !wal.flushed(second, no_flush).await,
            "nothing flushes after a stop"
        );
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn waiters_share_the_flush_that_covers_them() {
        let wal = Arc::new(WalBarrier::new());
        let flushes = Arc::new(AtomicUsize::new(0));
        let tickets: Vec<u64> = (0..16).map(|_| wal.ticket()).collect();
        let waiters: Vec<_> = tickets
            .into_iter()
            .map(|ticket| {
                let (wal, flushes) = (wal.clone(), flushes.clone());
                tokio::spawn(async move {
                    let slow = || {
                        flushes.fetch_add(1, Ordering::SeqCst);
                        std::thread::sleep(std::time::Duration::from_millis(5));
                        Ok(())
                    };
                    let released = wal.flushed(ticket, slow).await;
                    // Released only once a flush that began after the ticket was taken ended.
                    (released, wal.reached() >= ticket)
                })
            })
            .collect();
        for w in futures::future::join_all(waiters).await {
            assert_eq!(w.unwrap(), (true, true));
        }
        // Every ticket was taken before the first flush began: that flush covered them all.
        assert_eq!(flushes.load(Ordering::SeqCst), 1);
    }
}
