//! F10: a request whose key (listener, MTI class, STAN, terminal, transmission time) was seen
//! within the window gets the original answer again and has no second effect; one that
//! arrives while the original is in flight waits for the original's answer. Repeats (0201,
//! 0401, 0421) share the class of their original, so they match it.
//!
//! In memory: only requests in flight. Answered requests are found in the journal's
//! duplicate index (written with the answer, before it leaves), across restarts too.

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
