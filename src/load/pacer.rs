//! Open-loop pacing: one schedule for the whole run, request `k` due at `start + k / rate`,
//! request `k` sent by connection `k mod N`. Arrivals are spread evenly over the run, not in
//! bursts of one request per connection at the same instant.
//!
//! Each connection's writer waits for its requests' due times on a timer of its own, a Linux
//! timerfd woken through the runtime's epoll. The runtime's own timer has a resolution of a
//! millisecond and rounds up: a request would leave up to two milliseconds after it was due,
//! and since latency is measured from the due time, that lateness of the load tool would be
//! counted against the switch. (A pacing thread handing due times to the writers costs a
//! cross-thread wake-up per request, which on a small machine takes CPU from the switch.)
//! How late the writers woke is measured and reported.

use std::time::{Duration, Instant};

use hdrhistogram::Histogram;

/// When each request of an open-loop run is due, and which connection sends it.
#[derive(Debug, Clone, Copy)]
pub struct Schedule {
    pub start: Instant,
    pub until: Instant,
    /// Requests per second over all connections.
    pub rate: f64,
    pub connections: usize,
}

impl Schedule {
    /// When request `k` of the run is due (`None`: the run is over by then).
    pub fn due(&self, k: u64) -> Option<Instant> {
        // A rate so low that `k / rate` is beyond any duration: past the end of the run.
        let offset = Duration::try_from_secs_f64(k as f64 / self.rate).ok()?;
        let due = self.start.checked_add(offset)?;
        (due < self.until).then_some(due)
    }

    /// The `n`-th request of connection `c`: request `n × N + c` of the run (connection
    /// `k mod N` sends request `k`).
    pub fn due_for(&self, c: usize, n: u64) -> Option<Instant> {
        let k = n
            .checked_mul(self.connections.max(1) as u64)?
            .checked_add(c as u64)?;
        self.due(k)
    }
}

/// One connection's share of the schedule.
pub struct Pacer {
    schedule: Schedule,
    connection: usize,
    next: u64,
    timer: Timer,
    /// How late the writer woke for each request, in microseconds.
    pub lateness: Histogram<u64>,
}

impl Pacer {
    pub fn new(schedule: Schedule, connection: usize) -> Pacer {
        Pacer {
            schedule,
            connection,
            next: 0,
            timer: Timer::new(),
            lateness: super::conn::histogram(),
        }
    }

    /// Wait until this connection's next request is due; its due time, or `None` once the
    /// run is over.
    pub async fn next_due(&mut self) -> Option<Instant> {
        let due = self.schedule.due_for(self.connection, self.next)?;
        self.next += 1;
        self.timer.sleep_until(due).await;
        let late = Instant::now().saturating_duration_since(due);
        let _ = self.lateness.record((late.as_micros() as u64).max(1));
        Some(due)
    }
}

/// A sleep with a sub-millisecond deadline: a timerfd where there is one, the runtime's timer
/// otherwise.
struct Timer {
    #[cfg(target_os = "linux")]
    fd: Option<tokio::io::unix::AsyncFd<std::os::fd::OwnedFd>>,
}

impl Timer {
    fn new() -> Timer {
        Timer {
            #[cfg(target_os = "linux")]
            fd: timerfd::create(),
        }
    }

    async fn sleep_until(&mut self, due: Instant) {
        let wait = due.saturating_duration_since(Instant::now());
        if wait.is_zero() {
            return;
        }
        #[cfg(target_os = "linux")]
        if let Some(fd) = &self.fd {
            if timerfd::wait(fd, wait).await.is_ok() {
                return;
            }
        }
        tokio::time::sleep_until(due.into()).await;
    }
}

#[cfg(target_os = "linux")]
mod timerfd {
    use std::os::fd::OwnedFd;
    use std::time::Duration;

    use rustix::time::{Itimerspec, TimerfdClockId, TimerfdFlags, TimerfdTimerFlags, Timespec};
    use tokio::io::unix::AsyncFd;
    use tokio::io::Interest;

    /// A non-blocking monotonic timerfd registered with the runtime (`None`: not available,
    /// the runtime's timer is used).
    pub fn create() -> Option<AsyncFd<OwnedFd>> {
        let fd = rustix::time::timerfd_create(
            TimerfdClockId::Monotonic,
            TimerfdFlags::NONBLOCK | TimerfdFlags::CLOEXEC,
        )
        .ok()?;
        // SAFETY: the `OwnedFd` is a valid, open descriptor owned by the `AsyncFd` for its whole
        // life; nothing else can close or replace it.
        unsafe { AsyncFd::register_with_interest(fd, Interest::READABLE) }.ok()
    }

    /// Arm the timer `wait` from now and wait for it to fire.
    pub async fn wait(fd: &AsyncFd<OwnedFd>, wait: Duration) -> std::io::Result<()> {
        let value = Itimerspec {
            it_interval: Timespec {
                tv_sec: 0,
                tv_nsec: 0,
            },
            it_value: Timespec {
                tv_sec: wait.as_secs().try_into().unwrap_or(i64::MAX),
                tv_nsec: wait.subsec_nanos().into(),
            },
        };
        rustix::time::timerfd_settime(fd.get_ref(), TimerfdTimerFlags::empty(), &value)?;
        loop {
            let mut ready = fd.readable().await?;
            // The expiry count (8 bytes); "would block" until the timer has fired.
            let mut expirations = [0u8; 8];
            match rustix::io::read(fd.get_ref(), &mut expirations) {
                Ok(_) => return Ok(()),
                Err(rustix::io::Errno::AGAIN) => ready.clear_ready(),
                Err(e) => return Err(e.into()),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn schedule(run: Duration, rate: f64, connections: usize) -> Schedule {
        let start = Instant::now();
        Schedule {
            start,
            until: start + run,
            rate,
            connections,
        }
    }

    #[test]
    fn requests_are_spread_evenly_over_the_run_and_the_connections() {
        let s = schedule(Duration::from_secs(2), 1000.0, 16);
        let start = s.start;
        // 1,000/s for 2 s: requests 0..2000, one every millisecond.
        assert_eq!(s.due(0), Some(start));
        assert_eq!(s.due(1), Some(start + Duration::from_millis(1)));
        assert_eq!(s.due(1999), Some(start + Duration::from_millis(1999)));
        assert_eq!(s.due(2000), None);
        // Consecutive requests go to different connections, each connection in turn: a
        // connection's own requests are every N-th of the run's, in order.
        assert_eq!(s.due_for(0, 0), s.due(0));
        assert_eq!(s.due_for(1, 0), s.due(1));
        assert_eq!(s.due_for(2, 0), s.due(2));
        assert_eq!(s.due_for(0, 1), s.due(16));
        assert_eq!(s.due_for(1, 1), s.due(17));
        assert_eq!(s.due_for(15, 124), s.due(1999));
        assert_eq!(s.due_for(0, 125), None);
        // A rate too low for any second request to fall in the run: one request, no panic.
        let slow = schedule(Duration::from_secs(2), 1e-300, 1);
        assert_eq!(slow.due(0), Some(slow.start));
        assert_eq!(slow.due(1), None);
    }

    #[tokio::test]
    async fn a_pacer_gives_each_of_its_due_times_once_it_has_come_then_stops() {
        let s = schedule(Duration::from_millis(50), 200.0, 2);
        // 200/s for 50 ms over 2 connections: connection 1 sends requests 1, 3, 5, 7, 9.
        let mut pacer = Pacer::new(s, 1);
        let mut got = Vec::new();
        while let Some(due) = pacer.next_due().await {
            assert!(Instant::now() >= due, "woken before the due time");
            got.push(due);
        }
        let expected: Vec<Instant> = [1, 3, 5, 7, 9].iter().filter_map(|&k| s.due(k)).collect();
        assert_eq!(got, expected);
        assert_eq!(pacer.lateness.len(), 5);
    }
}
