//! The hand-off between the tasks committing steps and the journal's writer thread.
//!
//! A step somebody waits for (a synced step, or any [`super::Journal::commit`]) wakes the
//! writer at once. A step nobody waits for (a buffered [`super::Journal::submit`]: a
//! delivery marker, the sign of life, an inquiry's answer lines) does not: it waits in the
//! queue for the next step that does, and goes in the same group — or, when none comes, for
//! at most [`LINGER`]. At moderate load this spares the writer a wake-up and a write of its
//! own for most buffered steps (measured in docs/performance.md, session 17); the order of
//! steps is the order they were queued in either way, which is all the delivery markers
//! and the sign of life rely on (see [`crate::switch::delivery`]).

use std::collections::VecDeque;
use std::sync::{Condvar, Mutex};
use std::time::{Duration, Instant};

/// The longest a step nobody waits for stays queued before the writer takes it anyway.
pub const LINGER: Duration = Duration::from_millis(2);

/// A queue of `T` with one consumer (the writer) that is woken only for urgent items.
pub struct Queue<T> {
    state: Mutex<State<T>>,
    wake: Condvar,
}

struct State<T> {
    items: VecDeque<T>,
    /// Some item in `items` is urgent: the writer must take them now.
    urgent: bool,
    /// When the oldest item still queued was queued.
    oldest: Option<Instant>,
    closed: bool,
    /// What the writer is doing: only a waiting writer needs a wake-up (a busy one looks at
    /// the queue before it waits again), and a lingering one only for an urgent item.
    writer: WriterIs,
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum WriterIs {
    Busy,
    /// Waiting for lazy items' linger to pass.
    Lingering,
    /// Waiting with nothing queued.
    Sleeping,
}

/// The queue was closed: the item comes back.
pub struct Closed<T>(pub T);

impl<T> Queue<T> {
    pub fn new() -> Queue<T> {
        Queue {
            state: Mutex::new(State {
                items: VecDeque::new(),
                urgent: false,
                oldest: None,
                closed: false,
                writer: WriterIs::Busy,
            }),
            wake: Condvar::new(),
        }
    }

    /// Queue `item`. A waiting writer is woken by an urgent item, and a sleeping one by a lazy
    /// item too (to start its linger clock); a busy one is never woken (it looks before it
    /// waits), so a lazy item queued while a group is written costs no wake-up at all.
    pub fn push(&self, item: T, urgent: bool) -> Result<(), Closed<T>> {
        let Ok(mut s) = self.state.lock() else {
            return Err(Closed(item));
        };
        if s.closed {
            return Err(Closed(item));
        }
        let first = s.items.is_empty();
        s.items.push_back(item);
        if first {
            s.oldest = Some(Instant::now());
        }
        s.urgent |= urgent;
        let wake = match s.writer {
            WriterIs::Busy => false,
            WriterIs::Lingering => urgent,
            WriterIs::Sleeping => true,
        };
        if wake {
            // Woken once: later items find it busy.
            s.writer = WriterIs::Busy;
        }
        drop(s);
        if wake {
            self.wake.notify_one();
        }
        Ok(())
    }

    /// No more items: the writer takes what is left at once, then [`Queue::take`] says `None`.
    pub fn close(&self) {
        if let Ok(mut s) = self.state.lock() {
            s.closed = true;
            s.writer = WriterIs::Busy;
        }
        self.wake.notify_one();
    }

    /// Wait until there is something to write — an urgent item, a lazy one queued for
    /// [`LINGER`], more than `max` items, or the queue closed — and take up to `max` items in
    /// their order. `None` once the queue is closed and empty.
    pub fn take(&self, max: usize) -> Option<Vec<T>> {
        let mut s = self.state.lock().ok()?;
        loop {
            let due = match s.oldest {
                Some(at) if !(s.urgent || s.closed || s.items.len() >= max) => {
                    let waited = at.elapsed();
                    (waited < LINGER).then(|| LINGER - waited)
                }
                _ => None,
            };
            match due {
                Some(left) => {
                    s.writer = WriterIs::Lingering;
                    s = self.wake.wait_timeout(s, left).ok()?.0;
                }
                None if s.items.is_empty() && !s.closed => {
                    s.writer = WriterIs::Sleeping;
                    s = self.wake.wait(s).ok()?;
                }
                None => break,
            }
            s.writer = WriterIs::Busy;
        }
        if s.items.is_empty() {
            return None;
        }
        let n = s.items.len().min(max.max(1));
        let group: Vec<T> = s.items.drain(..n).collect();
        // What stays (more than `max` were queued) is taken next, without waiting: it may
        // hold the urgent item.
        s.urgent = !s.items.is_empty();
        if s.items.is_empty() {
            s.oldest = None;
        }
        Some(group)
    }
}

impl<T> Queue<T> {
    /// Wait `delay` without being woken, then add to `group` what was queued meanwhile (up to
    /// `max` in all): more steps share the sync the group is about to make.
    pub fn gather(&self, group: &mut Vec<T>, max: usize, delay: Duration) {
        let Ok(mut s) = self.state.lock() else {
            return;
        };
        let until = Instant::now() + delay;
        while !s.closed {
            let now = Instant::now();
            if now >= until {
                break;
            }
            s.writer = WriterIs::Busy;
            s = match self.wake.wait_timeout(s, until - now) {
                Ok((s, _)) => s,
                Err(_) => return,
            };
        }
        let n = s.items.len().min(max.saturating_sub(group.len()));
        group.extend(s.items.drain(..n));
        // As in `take`: what stays is taken next, without waiting.
        s.urgent = !s.items.is_empty();
        if s.items.is_empty() {
            s.oldest = None;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    #[test]
    fn an_urgent_item_takes_the_lazy_ones_before_it_in_order() {
        let q = Queue::new();
        assert!(q.push(1, false).is_ok());
        assert!(q.push(2, false).is_ok());
        assert!(q.push(3, true).is_ok());
        assert_eq!(q.take(10), Some(vec![1, 2, 3]));
    }

    #[test]
    fn a_lazy_item_alone_is_taken_after_the_linger() {
        let q = Arc::new(Queue::new());
        let started = Instant::now();
        assert!(q.push(7, false).is_ok());
        assert_eq!(q.take(10), Some(vec![7]));
        assert!(started.elapsed() >= LINGER, "taken before its linger");
    }

    #[test]
    fn more_than_max_are_taken_in_groups_without_waiting() {
        let q = Queue::new();
        for i in 0..5 {
            assert!(q.push(i, i == 0).is_ok());
        }
        assert_eq!(q.take(2), Some(vec![0, 1]));
        let started = Instant::now();
        assert_eq!(q.take(2), Some(vec![2, 3]));
        assert_eq!(q.take(2), Some(vec![4]));
        assert!(started.elapsed() < LINGER * 100);
    }

    #[test]
    fn gathering_adds_what_is_queued_meanwhile_up_to_max() {
        let q = Arc::new(Queue::new());
        assert!(q.push(1, true).is_ok());
        let mut group = q.take(3).unwrap_or_default();
        let pusher = {
            let q = q.clone();
            std::thread::spawn(move || {
                for i in 2..6 {
                    let _ = q.push(i, true);
                }
            })
        };
        assert!(pusher.join().is_ok());
        q.gather(&mut group, 3, Duration::from_millis(1));
        assert_eq!(group, vec![1, 2, 3]);
        assert_eq!(q.take(10), Some(vec![4, 5]));
    }

    #[test]
    fn closing_hands_over_what_is_left_then_ends() {
        let q = Arc::new(Queue::new());
        assert!(q.push(1, false).is_ok());
        let writer = {
            let q = q.clone();
            std::thread::spawn(move || {
                let mut seen = Vec::new();
                while let Some(g) = q.take(10) {
                    seen.extend(g);
                }
                seen
            })
        };
        q.close();
        assert!(matches!(q.push(2, true), Err(Closed(2))));
        assert_eq!(writer.join().ok(), Some(vec![1]));
    }

    #[test]
    fn a_waiting_writer_is_woken_by_an_urgent_item_from_another_thread() {
        let q = Arc::new(Queue::new());
        let writer = {
            let q = q.clone();
            std::thread::spawn(move || q.take(10))
        };
        std::thread::sleep(Duration::from_millis(20));
        assert!(q.push(9, true).is_ok());
        assert_eq!(writer.join().ok().flatten(), Some(vec![9]));
    }
}
