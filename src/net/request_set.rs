//! The requests in flight on one connection, each polled only when it was woken — what
//! `futures`' `FuturesUnordered` does, without its habit of waking the whole task again
//! after it polled every future once. With one request in flight (the usual case below
//! saturation) that habit costs a second poll of the connection per poll, and the runtime
//! often wakes another worker thread for it: measured, about one more context switch per
//! transaction in the switch (session 25).

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, Wake, Waker};

use futures::task::AtomicWaker;

/// A set of futures of one output type, polled when woken.
pub(super) struct RequestSet<F> {
    /// The futures by slot; a finished one leaves its slot to the next.
    slots: Vec<Option<F>>,
    /// Each slot's waker, made once and kept for whichever future holds the slot (a late
    /// wake meant for an earlier one costs the new one a poll, nothing more).
    wakers: Vec<(Arc<SlotWaker>, Waker)>,
    free: Vec<usize>,
    len: usize,
    woken: Arc<Woken>,
    /// The slots to poll in this pass (kept to reuse its allocation).
    pass: Vec<usize>,
}

/// What the slots' wakers share: which slots were woken, and the task to wake.
#[derive(Default)]
struct Woken {
    slots: Mutex<Vec<usize>>,
    task: AtomicWaker,
}

struct SlotWaker {
    woken: Arc<Woken>,
    slot: usize,
    /// Already in `Woken::slots`: a slot is listed once however often it is woken.
    listed: AtomicBool,
}

impl Wake for SlotWaker {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref()
    }

    fn wake_by_ref(self: &Arc<Self>) {
        self.list();
        self.woken.task.wake();
    }
}

impl<F: Future + Unpin> RequestSet<F> {
    pub(super) fn new() -> RequestSet<F> {
        RequestSet {
            slots: Vec::new(),
            wakers: Vec::new(),
            free: Vec::new(),
            len: 0,
            woken: Arc::new(Woken::default()),
            pass: Vec::new(),
        }
    }

    pub(super) fn len(&self) -> usize {
        self.len
    }

    pub(super) fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Add a future; it is polled first by the next [`RequestSet::poll_done`].
    pub(super) fn push(&mut self, future: F) {
        let slot = match self.free.pop() {
            Some(slot) => slot,
            None => {
                let slot = self.slots.len();
                let waker = Arc::new(SlotWaker {
                    woken: self.woken.clone(),
                    slot,
                    listed: AtomicBool::new(false),
                });
                self.wakers.push((waker.clone(), Waker::from(waker)));
                self.slots.push(None);
                slot
            }
        };
        self.slots[slot] = Some(future);
        self.len += 1;
        // Listed without waking the task: the caller polls the set next.
        self.wakers[slot].0.list();
    }

    /// Poll every future woken since the last pass (once each) and hand each finished one's
    /// output to `done`. A future woken during this pass is polled by the next one: the
    /// task is woken for it, so a future that keeps waking itself (a yield, the runtime's
    /// budget spent) cannot hold this pass for ever.
    pub(super) fn poll_done(&mut self, cx: &mut Context<'_>, mut done: impl FnMut(F::Output)) {
        self.woken.task.register(cx.waker());
        {
            // Slots a panicking pass left unvisited are still in `pass`: kept, not lost.
            let mut woken = self.woken.lock();
            match self.pass.is_empty() {
                true => std::mem::swap(&mut self.pass, &mut woken),
                false => self.pass.append(&mut woken),
            }
        }
        while let Some(slot) = self.pass.pop() {
            let (flag, waker) = &self.wakers[slot];
            // A read-modify-write, not a store: either a waker that set the flag again is
            // seen (and what it published with it), or it sees the flag clear and lists the
            // slot for the next pass. A plain store could let the poll below read the
            // future's state from before that wake while the wake skips the listing.
            flag.listed.swap(false, Ordering::AcqRel);
            let Some(future) = self.slots[slot].as_mut() else {
                continue;
            };
            if let Poll::Ready(output) = Pin::new(future).poll(&mut Context::from_waker(waker)) {
                self.slots[slot] = None;
                self.free.push(slot);
                self.len -= 1;
                done(output);
            }
        }
    }

    /// Resolves once every future has finished, each output handed to `done`.
    pub(super) async fn finish(mut self, mut done: impl FnMut(F::Output)) {
        std::future::poll_fn(|cx| {
            self.poll_done(cx, &mut done);
            match self.is_empty() {
                true => Poll::Ready(()),
                false => Poll::Pending,
            }
        })
        .await
    }
}

impl SlotWaker {
    /// List the slot for the next pass (once, however often it is woken meanwhile).
    fn list(&self) {
        if !self.listed.swap(true, Ordering::AcqRel) {
            self.woken.lock().push(self.slot);
        }
    }
}

impl Woken {
    /// The woken slots. Nothing panics while holding the lock; were it poisoned anyway, the
    /// list is still whole.
    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<usize>> {
        self.slots.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl<F: Future + Unpin> Default for RequestSet<F> {
    fn default() -> Self {
        RequestSet::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicUsize;

    /// Counts the task's wake-ups.
    #[derive(Default)]
    struct Task(AtomicUsize);
    impl Wake for Task {
        fn wake(self: Arc<Self>) {
            self.0.fetch_add(1, Ordering::SeqCst);
        }
    }

    /// Pending until `ready`, counting its polls; wakes itself during a poll when `yields`.
    struct Probe {
        polls: Arc<AtomicUsize>,
        ready: Arc<AtomicBool>,
        yields: bool,
        waker: Arc<Mutex<Option<Waker>>>,
    }
    impl Future for Probe {
        type Output = usize;
        fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<usize> {
            let n = self.polls.fetch_add(1, Ordering::SeqCst) + 1;
            if self.ready.load(Ordering::SeqCst) {
                return Poll::Ready(n);
            }
            *self.waker.lock().unwrap() = Some(cx.waker().clone());
            if self.yields {
                cx.waker().wake_by_ref();
            }
            Poll::Pending
        }
    }

    /// What a test watches of a probe: its polls, its readiness, its last waker.
    struct Watch {
        polls: Arc<AtomicUsize>,
        ready: Arc<AtomicBool>,
        waker: Arc<Mutex<Option<Waker>>>,
    }

    fn probe(yields: bool) -> (Probe, Watch) {
        let watch = Watch {
            polls: Arc::default(),
            ready: Arc::default(),
            waker: Arc::default(),
        };
        let p = Probe {
            polls: Arc::clone(&watch.polls),
            ready: Arc::clone(&watch.ready),
            yields,
            waker: Arc::clone(&watch.waker),
        };
        (p, watch)
    }

    #[test]
    fn a_future_is_polled_only_when_woken_and_the_task_woken_only_for_it() {
        let task = Arc::new(Task::default());
        let waker = Waker::from(task.clone());
        let mut cx = Context::from_waker(&waker);
        let mut set = RequestSet::new();
        let (
            p,
            Watch {
                polls,
                ready,
                waker: its_waker,
            },
        ) = probe(false);
        set.push(p);
        let mut out = Vec::new();
        set.poll_done(&mut cx, |o| out.push(o));
        assert_eq!(
            polls.load(Ordering::SeqCst),
            1,
            "a new future is polled at once"
        );
        // Polled again without a wake: nothing is polled and the task is not woken (what
        // `FuturesUnordered` does after polling every future once).
        set.poll_done(&mut cx, |o| out.push(o));
        set.poll_done(&mut cx, |o| out.push(o));
        assert_eq!(polls.load(Ordering::SeqCst), 1);
        assert_eq!(task.0.load(Ordering::SeqCst), 0);
        // Woken (twice): the task is woken, the future polled once, its output handed over.
        ready.store(true, Ordering::SeqCst);
        let w = its_waker.lock().unwrap().take().unwrap();
        w.wake_by_ref();
        w.wake();
        assert!(task.0.load(Ordering::SeqCst) >= 1);
        set.poll_done(&mut cx, |o| out.push(o));
        assert_eq!(out, vec![2]);
        assert!(set.is_empty());
        // Its slot serves the next future.
        let (p, Watch { polls: polls2, .. }) = probe(false);
        set.push(p);
        set.poll_done(&mut cx, |o| out.push(o));
        assert_eq!(polls2.load(Ordering::SeqCst), 1);
        assert_eq!(set.len(), 1);
        assert_eq!(set.slots.len(), 1);
    }

    #[test]
    fn a_future_that_wakes_itself_is_polled_once_per_pass_and_the_task_woken() {
        let task = Arc::new(Task::default());
        let waker = Waker::from(task.clone());
        let mut cx = Context::from_waker(&waker);
        let mut set = RequestSet::new();
        let (p, Watch { polls, .. }) = probe(true);
        set.push(p);
        set.poll_done(&mut cx, |_| {});
        assert_eq!(
            polls.load(Ordering::SeqCst),
            1,
            "not polled again within the pass"
        );
        assert_eq!(
            task.0.load(Ordering::SeqCst),
            1,
            "the task is woken for the next pass"
        );
        set.poll_done(&mut cx, |_| {});
        assert_eq!(polls.load(Ordering::SeqCst), 2);
    }
}
