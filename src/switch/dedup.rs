//! F10: a request whose key (listener, MTI class, STAN, terminal, transmission time) was seen
//! within the window gets the original answer again and has no second effect; one that
//! arrives while the original is in flight waits for the original's answer. Repeats (0201,
//! 0401, 0421) share the class of their original, so they match it.
//!
//! In memory: requests in flight, and answered ones until their answer is in the journal's
//! duplicate index (written with the answer; a synced answer before it leaves, a buffered
//! one possibly after). From then on the index answers, across restarts too.

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use dashmap::mapref::entry::Entry;
use dashmap::DashMap;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use crate::iso8583::{de, Message};

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct DedupKey {
    listener: Arc<str>,
    class: u8,
    stan: u32,
    terminal: String,
    transmission_time: u64,
}

impl DedupKey {
    /// The key of a request; `None` when it lacks the fields (it is then not deduplicated, and
    /// the flow answers it with a format error).
    pub fn of(listener: &str, msg: &Message<'_>) -> Option<DedupKey> {
        Some(DedupKey {
            listener: listener.into(),
            class: msg.mti().class(),
            stan: msg.stan()?,
            terminal: msg.str(de::TERMINAL_ID)?.trim().to_string(),
            transmission_time: msg.transmission_time()?,
        })
    }

    /// The key as stored in the journal's duplicate index.
    pub fn to_bytes(&self) -> Vec<u8> {
        format!(
            "{}|{}|{:06}|{}|{:010}",
            self.listener, self.class, self.stan, self.terminal, self.transmission_time
        )
        .into_bytes()
    }
}

type Slot = watch::Sender<Option<Bytes>>;

struct Seen {
    answer: watch::Receiver<Option<Bytes>>,
    at: Instant,
}

pub enum Claim {
    /// First time: process it, then `complete` the slot.
    Fresh(Option<Slot>),
    /// Seen and answered: the answer's bytes.
    Done(Bytes),
    /// Seen, still in flight: wait on this.
    InFlight(watch::Receiver<Option<Bytes>>),
}

pub struct Dedup {
    seen: DashMap<DedupKey, Seen>,
    window: Duration,
}

impl Dedup {
    pub fn new(window: Duration) -> Dedup {
        Dedup {
            seen: DashMap::new(),
            window,
        }
    }

    pub fn claim(&self, key: DedupKey) -> Claim {
        match self.seen.entry(key) {
            Entry::Occupied(e) => {
                let rx = e.get().answer.clone();
                let done = rx.borrow().clone();
                match done {
                    Some(bytes) => Claim::Done(bytes),
                    None => Claim::InFlight(rx),
                }
            }
            Entry::Vacant(e) => {
                let (tx, rx) = watch::channel(None);
                e.insert(Seen {
                    answer: rx,
                    at: Instant::now(),
                });
                Claim::Fresh(Some(tx))
            }
        }
    }

    /// Hand the answer to the duplicates waiting for it, and forget the key: the answer is in
    /// the journal's duplicate index by now, which answers later retransmissions. (None:
    /// nothing could be answered, and a retransmission is processed again.) Memory holds
    /// only requests in flight.
    pub fn complete(&self, key: DedupKey, slot: Slot, answer: Option<Bytes>) {
        let _ = slot.send(answer);
        self.seen.remove(&key);
    }

    /// Hand the answer to the duplicates waiting for it; the key stays, answering repeats
    /// from memory, until [`Dedup::forget`] (once the answer is in the journal's duplicate
    /// index). With no answer the key goes at once: a repeat is processed again.
    pub fn answered(&self, key: &DedupKey, slot: Slot, answer: Option<Bytes>) {
        let none = answer.is_none();
        let _ = slot.send(answer);
        if none {
            self.seen.remove(key);
        }
    }

    /// The answer to `key` is in the journal's duplicate index (or could not be written):
    /// memory need not hold it any more.
    pub fn forget(&self, key: &DedupKey) {
        self.seen.remove(key);
    }

    fn sweep(&self) {
        let window = self.window;
        self.seen.retain(|_, s| s.at.elapsed() < window);
    }

    pub fn len(&self) -> usize {
        self.seen.len()
    }

    pub fn is_empty(&self) -> bool {
        self.seen.is_empty()
    }
}

/// Forget keys older than the in-memory window (the journal's duplicate index remembers
/// them for the whole configured window).
pub async fn sweeper(switch: Arc<super::Switch>, stop: CancellationToken) {
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tokio::time::sleep(Duration::from_secs(10)) => {}
        }
        switch.dedup.sweep();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(stan: u32) -> DedupKey {
        DedupKey {
            listener: "terminals".into(),
            class: 1,
            stan,
            terminal: "T1".into(),
            transmission_time: 1122040012,
        }
    }

    fn fresh(d: &Dedup, k: DedupKey) -> Slot {
        match d.claim(k) {
            Claim::Fresh(Some(slot)) => slot,
            _ => panic!("expected a fresh claim"),
        }
    }

    #[test]
    fn an_answer_is_repeated_from_memory_until_it_is_in_the_index() {
        let d = Dedup::new(Duration::from_secs(60));
        let slot = fresh(&d, key(1));
        let Claim::InFlight(mut waiting) = d.claim(key(1)) else {
            panic!("expected in flight");
        };
        d.answered(&key(1), slot, Some(Bytes::from_static(b"0110 answer")));
        assert_eq!(
            waiting.borrow_and_update().as_deref(),
            Some(&b"0110 answer"[..])
        );
        // Not in the journal's index yet: memory answers.
        match d.claim(key(1)) {
            Claim::Done(b) => assert_eq!(&b[..], b"0110 answer"),
            _ => panic!("a repeat before the write landed must get the original answer"),
        }
        d.forget(&key(1));
        assert!(d.is_empty());
        // From now on the index answers; memory treats the key as new.
        fresh(&d, key(1));
    }

    #[test]
    fn without_an_answer_the_key_goes_at_once() {
        let d = Dedup::new(Duration::from_secs(60));
        let slot = fresh(&d, key(2));
        d.answered(&key(2), slot, None);
        fresh(&d, key(2));
    }
}
