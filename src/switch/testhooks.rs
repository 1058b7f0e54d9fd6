//! Test-only fault injection, used by the crash harness (`tests/crash.rs`). Compiled only
//! with the `fault-injection` cargo feature (which `scripts/test.sh` turns on); without it
//! every hook is an empty function and the binary holds no trace of them. With it, both hooks
//! are off unless their environment variable is set, and the switch says so loudly at start.
//!
//! - `CYBERSWITCH_TESTONLY_CRASH_POINT=name:n` — the n-th time a flow reaches the named
//!   point, the switch prints `crash point <name> reached` on stderr and that flow stops
//!   there (it never continues), so the harness can `kill -9` the process at exactly that
//!   point. Points: `leg-sent` (a leg recorded — on a link with legs ahead, its record
//!   queued —, its request not sent), `ahead-record-write` (the journal's writer about to
//!   write a record of a leg sent ahead: the writer stops, so the leg goes upstream and its
//!   record never lands), `wallet-credit`
//!   (wallet legs approved, the credit leg not asked), `journal-answer` (the answer recorded,
//!   not sent), `saf-acked` (a reversal or completion acknowledged upstream, not yet removed
//!   from the queue), `completion-queued` (a terminal's completion queued durably, not yet
//!   acknowledged to it), `refund-leg-given` (a refund leg given back or pushed through as
//!   an advice, the refund not answered), `refund-answered` (an approved refund recorded,
//!   its answer not sent), `saf-advice-acked` (a refund leg's advice acknowledged upstream,
//!   not yet removed from the queue).
//! - `CYBERSWITCH_TESTONLY_SKIP_RECOVERY=1` — start without recovery, to prove the harness
//!   notices.
//! - Pauses an in-process test arms for one request's STAN ([`arm_pause`]):
//!   `refund-decided` (a refund decided, its answer step not written), `completion-attempt`
//!   (a queued completion about to be sent upstream; the STAN is its authorization's).

#[cfg(feature = "fault-injection")]
pub use armed::*;

#[cfg(not(feature = "fault-injection"))]
mod disarmed {
    /// Without the `fault-injection` feature: nothing.
    #[inline(always)]
    pub async fn crash_point(_name: &str) {}

    #[inline(always)]
    pub fn crash_point_blocking(_name: &str) {}

    #[inline(always)]
    pub fn skip_recovery() -> bool {
        false
    }

    #[inline(always)]
    pub fn warn_if_armed() {}

    #[inline(always)]
    pub async fn pause_point(_name: &str, _stan: Option<u32>) {}
}
#[cfg(not(feature = "fault-injection"))]
pub use disarmed::*;

#[cfg(feature = "fault-injection")]
mod armed {
    use std::sync::atomic::{AtomicU64, Ordering};
    use std::sync::OnceLock;

    pub const CRASH_POINT_VAR: &str = "CYBERSWITCH_TESTONLY_CRASH_POINT";
    pub const SKIP_RECOVERY_VAR: &str = "CYBERSWITCH_TESTONLY_SKIP_RECOVERY";

    struct Armed {
        name: String,
        countdown: AtomicU64,
    }

    fn armed() -> Option<&'static Armed> {
        static ARMED: OnceLock<Option<Armed>> = OnceLock::new();
        ARMED
            .get_or_init(|| {
                let value = std::env::var(CRASH_POINT_VAR).ok()?;
                let (name, n) = value.split_once(':').unwrap_or((value.as_str(), "1"));
                Some(Armed {
                    name: name.to_string(),
                    countdown: AtomicU64::new(n.parse().unwrap_or(1)),
                })
            })
            .as_ref()
    }

    /// Stop this flow here forever when the armed point is reached.
    pub async fn crash_point(name: &str) {
        let Some(a) = armed() else { return };
        if a.name != name {
            return;
        }
        if a.countdown.fetch_sub(1, Ordering::SeqCst) == 1 {
            eprintln!("crash point {name} reached");
            std::future::pending::<()>().await;
        }
    }

    /// As [`crash_point`], on a thread of its own (the journal's writer): the thread stops
    /// there for good, and with it everything it would have written.
    pub fn crash_point_blocking(name: &str) {
        let Some(a) = armed() else { return };
        if a.name != name {
            return;
        }
        if a.countdown.fetch_sub(1, Ordering::SeqCst) == 1 {
            eprintln!("crash point {name} reached");
            loop {
                std::thread::park();
            }
        }
    }

    /// A pause armed by an in-process test ([`arm_pause`]): the task that reaches it waits
    /// until the test releases it, once.
    #[derive(Default)]
    pub struct Pause {
        reached: std::sync::atomic::AtomicBool,
        release: tokio::sync::Notify,
    }

    impl Pause {
        pub fn reached(&self) -> bool {
            self.reached.load(Ordering::SeqCst)
        }

        pub fn release(&self) {
            self.release.notify_one();
        }
    }

    fn pauses(
    ) -> &'static std::sync::Mutex<std::collections::HashMap<String, std::sync::Arc<Pause>>> {
        static PAUSES: OnceLock<
            std::sync::Mutex<std::collections::HashMap<String, std::sync::Arc<Pause>>>,
        > = OnceLock::new();
        PAUSES.get_or_init(Default::default)
    }

    /// Arm the pause `name` for the request with STAN `stan` (tests of one process run side
    /// by side: the STAN keeps one test's pause out of the others' requests).
    pub fn arm_pause(name: &str, stan: u32) -> std::sync::Arc<Pause> {
        let pause = std::sync::Arc::new(Pause::default());
        if let Ok(mut p) = pauses().lock() {
            p.insert(format!("{name}/{stan}"), pause.clone());
        }
        pause
    }

    pub async fn pause_point(name: &str, stan: Option<u32>) {
        let Some(stan) = stan else { return };
        let armed = pauses()
            .lock()
            .ok()
            .and_then(|mut p| p.remove(&format!("{name}/{stan}")));
        if let Some(pause) = armed {
            pause.reached.store(true, Ordering::SeqCst);
            pause.release.notified().await;
        }
    }

    pub fn skip_recovery() -> bool {
        std::env::var(SKIP_RECOVERY_VAR).is_ok_and(|v| v == "1")
    }

    /// Warn when a hook is set: a production switch must never run with them.
    pub fn warn_if_armed() {
        if let Ok(v) = std::env::var(CRASH_POINT_VAR) {
            tracing::warn!(point = %v, "TEST-ONLY crash point armed");
        }
        if skip_recovery() {
            tracing::warn!("TEST-ONLY: start-up recovery is disabled");
        }
    }
}
