//! The transactions the switch knows in memory, by key: F10 duplicates and the ordering of
//! follow-ups, in one place.
//!
//! One entry per transaction key (listener, MTI class, STAN, terminal, transmission time)
//! says where the transaction stands:
//! - *in flight*: a repeat waits for the original's answer (F10); a follow-up naming it (a
//!   reversal, a completion, an undelivered approval being undone) waits until it is
//!   answered, since its outcome decides what there is to undo;
//! - *answered*: a repeat gets the same bytes from memory until the answer is in the
//!   journal's duplicate index, which answers from then on, across restarts too;
//! - *idle*: only follow-ups hold it; they change an answered transaction one at a time.
//!
//! An entry goes once nobody holds it and its answer is in the index (or there was none).
//! In-flight entries are never swept: a request is answered however long its legs take.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use dashmap::DashMap;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use crate::clock::Clock;
use crate::iso8583::{de, Message};
use crate::journal::Journal;
use crate::store::Cf;

/// A transaction's key: what F10 calls a repeat, and what a follow-up names in field 90.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct TxnId {
    listener: Arc<str>,
    class: u8,
    stan: u32,
    terminal: String,
    transmission_time: u64,
}

impl TxnId {
    /// The key of a request; `None` when it lacks the fields (it is then not deduplicated, and
    /// the flow answers it with a format error). Repeats (0201, 0401, 0421) share the class
    /// of their original, so they match it.
    pub fn of(listener: &str, msg: &Message<'_>) -> Option<TxnId> {
        Some(TxnId {
            listener: listener.into(),
            class: msg.mti().class(),
            stan: msg.stan()?,
            terminal: msg.str(de::TERMINAL_ID)?.trim().to_string(),
            transmission_time: msg.transmission_time()?,
        })
    }

    /// The original a follow-up names: its class, STAN and transmission time from field 90,
    /// on the follow-up's own listener and terminal.
    pub fn original(listener: &str, terminal: &str, od: &crate::iso8583::OriginalData) -> TxnId {
        TxnId {
            listener: listener.into(),
            class: od.mti.class(),
            stan: od.stan,
            terminal: terminal.trim().to_string(),
            transmission_time: od.transmission_time,
        }
    }

    /// The id a stored record's key stands for (see [`TxnId::record_key`]): listener names
    /// hold no `|`; a terminal id might, so it is what is left between STAN and time.
    pub fn from_record_key(key: &str) -> Option<TxnId> {
        let mut head = key.splitn(4, '|');
        let (listener, class, stan, rest) =
            (head.next()?, head.next()?, head.next()?, head.next()?);
        let (terminal, time) = rest.rsplit_once('|')?;
        Some(TxnId {
            listener: listener.into(),
            class: class.parse().ok()?,
            stan: stan.parse().ok()?,
            terminal: terminal.to_string(),
            transmission_time: time.parse().ok()?,
        })
    }

    /// The key of an answer the switch gave (for undoing an undelivered one).
    pub fn of_answer(listener: &str, msg: &Message<'_>) -> Option<TxnId> {
        TxnId::of(listener, msg)
    }

    /// The listener the request came in on.
    pub fn listener(&self) -> &str {
        &self.listener
    }

    /// The terminal's STAN of the request.
    pub fn stan(&self) -> u32 {
        self.stan
    }

    /// The key as stored in the journal's duplicate index.
    pub fn to_bytes(&self) -> Vec<u8> {
        // `LISTENER|CLASS|STAN(6)|TERMINAL|TIME(10)`, built by hand: made several times for
        // every request, and `format!` costs more than the bytes.
        use crate::iso8583::padded_digits;
        let mut key = Vec::with_capacity(self.listener.len() + self.terminal.len() + 24);
        key.extend_from_slice(self.listener.as_bytes());
        key.push(b'|');
        key.extend_from_slice(&padded_digits(u64::from(self.class), 1));
        key.push(b'|');
        key.extend_from_slice(&padded_digits(u64::from(self.stan), 6));
        key.push(b'|');
        key.extend_from_slice(self.terminal.as_bytes());
        key.push(b'|');
        key.extend_from_slice(&padded_digits(self.transmission_time, 10));
        key
    }

    /// The key of the transaction's stored record: the same as the duplicate index's, so
    /// that a 0100 and a 0200 (or two listeners) with the same terminal, STAN and time are
    /// two transactions, never one record overwriting the other.
    pub fn record_key(&self) -> String {
        String::from_utf8_lossy(&self.to_bytes()).into_owned()
    }
}

/// Where a transaction stands (see the module doc).
#[derive(Debug, Clone)]
enum Stage {
    InFlight,
    /// Answered with these bytes (`None`: nothing could be answered; a repeat is processed
    /// again).
    Answered(Option<Bytes>),
    Idle,
}

struct Entry {
    stage: watch::Sender<Stage>,
    /// Follow-ups of this transaction go one at a time.
    follow_ups: Arc<tokio::sync::Mutex<()>>,
    /// The answer is in the journal's duplicate index.
    in_index: AtomicBool,
    /// The answer's write to the index failed: memory answers repeats for the duplicate
    /// window (a repeat must never be processed a second time), then forgets.
    index_failed: AtomicBool,
    since: Mutex<Instant>,
}

impl Entry {
    fn new(stage: Stage) -> Arc<Entry> {
        Arc::new(Entry {
            stage: watch::Sender::new(stage),
            follow_ups: Arc::default(),
            in_index: AtomicBool::new(false),
            index_failed: AtomicBool::new(false),
            since: Mutex::new(Instant::now()),
        })
    }

    /// Nothing in memory is needed any more: not in flight, and any answer is in the index
    /// (or, its write failed, the duplicate `window` has passed).
    fn settled(&self, window: Duration) -> bool {
        match &*self.stage.borrow() {
            Stage::InFlight => false,
            Stage::Answered(Some(_)) => {
                self.in_index.load(Ordering::Acquire)
                    || (self.index_failed.load(Ordering::Acquire) && self.age() >= window)
            }
            Stage::Answered(None) | Stage::Idle => true,
        }
    }

    fn age(&self) -> Duration {
        self.since
            .lock()
            .map(|at| at.elapsed())
            .unwrap_or(Duration::ZERO)
    }
}

/// What a request finds when it claims its key.
pub enum Claim<'a> {
    /// First time: process it, then hand the answer to the ticket.
    Fresh(Ticket<'a>),
    /// Answered already (in memory or, before a restart, in the journal's index).
    Answered(Bytes),
    /// The original is in flight: wait for its answer.
    InFlight(Pending),
}

/// A repeat waiting for its original's answer.
pub struct Pending(watch::Receiver<Stage>);

impl Pending {
    /// The original's answer (`None` if it got none).
    pub async fn answer(mut self) -> Option<Bytes> {
        let stage = self
            .0
            .wait_for(|s| !matches!(s, Stage::InFlight))
            .await
            .ok()?;
        match &*stage {
            Stage::Answered(bytes) => bytes.clone(),
            _ => None,
        }
    }
}

pub struct Registry {
    entries: DashMap<TxnId, Arc<Entry>>,
    journal: Arc<Journal>,
    clock: Arc<dyn Clock>,
    /// How long the journal's duplicate index answers repeats.
    window: Duration,
}

impl Registry {
    pub fn new(journal: Arc<Journal>, clock: Arc<dyn Clock>, window: Duration) -> Registry {
        Registry {
            entries: DashMap::new(),
            journal,
            clock,
            window,
        }
    }

    /// A request arrives: is it new, answered, or in flight? A request whose key a
    /// follow-up holds (a reversal that arrived before it) waits until the follow-up is done:
    /// what the follow-up decided (e.g. "reversed before it was seen") must be on disk before
    /// the request is processed.
    pub async fn claim(&self, id: TxnId) -> Claim<'_> {
        let entry = self
            .entries
            .entry(id.clone())
            .or_insert_with(|| Entry::new(Stage::Idle))
            .clone();
        // Answered and remembered in memory: a repeat gets it at once, even while a
        // follow-up holds the transaction (an answer whose journal write is being retried
        // in the background, see [`Ticket::pin`]).
        if let Stage::Answered(Some(bytes)) = &*entry.stage.borrow() {
            return Claim::Answered(bytes.clone());
        }
        // A stage becomes in flight only under the follow-up lock, so a follow-up holding it
        // never sees its transaction start meanwhile (see [`Registry::hold`]).
        let _no_follow_up = entry.follow_ups.clone().lock_owned().await;
        let stage = entry.stage.borrow().clone();
        match stage {
            Stage::InFlight => return Claim::InFlight(Pending(entry.stage.subscribe())),
            Stage::Answered(Some(bytes)) => return Claim::Answered(bytes),
            Stage::Answered(None) | Stage::Idle => {
                entry.stage.send_replace(Stage::InFlight);
                entry.in_index.store(false, Ordering::Release);
                if let Ok(mut at) = entry.since.lock() {
                    *at = Instant::now();
                }
            }
        }
        let ticket = Ticket {
            registry: self,
            id,
            entry: Some(entry),
        };
        // Answered before a restart: the journal remembers.
        match self.remembered(&ticket.id) {
            Some(bytes) => {
                ticket.answered(Some(bytes.clone()), true);
                Claim::Answered(bytes)
            }
            None => Claim::Fresh(ticket),
        }
    }

    /// Hold the transaction `id` for a follow-up: once it is no longer in flight, and one
    /// follow-up at a time.
    pub async fn hold(&self, id: &TxnId) -> Hold<'_> {
        let (guard, entry) = self.acquire(id).await;
        Hold {
            registry: self,
            id: id.clone(),
            _guard: guard,
            entry: Some(entry),
        }
    }

    /// As [`Registry::hold`], kept by whoever owns it (a transaction that must keep the
    /// original held until its own answer step has landed: a refund, whose step writes the
    /// original's refunded amounts).
    pub async fn hold_owned(self: &Arc<Self>, id: &TxnId) -> OwnedHold {
        let (guard, entry) = self.acquire(id).await;
        OwnedHold {
            registry: self.clone(),
            id: id.clone(),
            _guard: guard,
            entry: Some(entry),
        }
    }

    /// Wait until `id` is not in flight and no other follow-up holds it, then hold it.
    async fn acquire(&self, id: &TxnId) -> (tokio::sync::OwnedMutexGuard<()>, Arc<Entry>) {
        let entry = self
            .entries
            .entry(id.clone())
            .or_insert_with(|| Entry::new(Stage::Idle))
            .clone();
        let guard = loop {
            let mut stage = entry.stage.subscribe();
            let _ = stage.wait_for(|s| !matches!(s, Stage::InFlight)).await;
            let guard = entry.follow_ups.clone().lock_owned().await;
            // It may have started again before the lock was ours; under the lock it cannot.
            if !matches!(*entry.stage.borrow(), Stage::InFlight) {
                break guard;
            }
        };
        (guard, entry)
    }

    /// The answer the journal's duplicate index holds for `id`, if inside the window.
    fn remembered(&self, id: &TxnId) -> Option<Bytes> {
        match self.journal.get(Cf::Dedup, &id.to_bytes()) {
            Ok(raw) => raw.and_then(|r| remembered_answer(&r, self.now_ms(), self.window)),
            Err(e) => {
                tracing::error!(error = %e, "duplicate index read failed");
                None
            }
        }
    }

    /// The value the duplicate index keeps for an answer given now.
    pub fn index_value(&self, answer: &[u8]) -> Vec<u8> {
        let mut v = Vec::with_capacity(8 + answer.len());
        v.extend_from_slice(&self.now_ms().to_be_bytes());
        v.extend_from_slice(answer);
        v
    }

    fn now_ms(&self) -> i64 {
        self.clock.now_ms()
    }

    /// Drop `id` if nothing needs it in memory any more and nobody holds it.
    fn release(&self, id: &TxnId) {
        self.entries.remove_if(id, |_, e| {
            Arc::strong_count(e) == 1 && e.settled(self.window)
        });
    }

    /// Forget settled entries older than `max_age` that nobody holds (a safety net: they go
    /// as soon as they settle). In-flight ones stay, however old.
    fn sweep(&self, max_age: Duration) {
        // An answer not in the journal's index yet (its write is being retried) is what
        // answers repeats meanwhile: kept however old. One whose write failed is kept for
        // the duplicate window.
        let window = self.window;
        self.entries
            .retain(|_, e| Arc::strong_count(e) > 1 || !e.settled(window) || e.age() < max_age);
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
}

/// The one request processing a transaction. Dropped without an answer (its task ended),
/// the transaction counts as answered with nothing: repeats are processed again and
/// follow-ups go on.
pub struct Ticket<'a> {
    registry: &'a Registry,
    id: TxnId,
    entry: Option<Arc<Entry>>,
}

impl Ticket<'_> {
    pub fn id(&self) -> &TxnId {
        &self.id
    }

    /// Runs once the answer's write to the journal's duplicate index is done (`true`) or
    /// failed (`false`): from then on the index answers repeats and memory may forget the
    /// transaction — or, the write failed, memory answers them for the duplicate window
    /// (an entry left waiting for a write that will never come stayed for ever).
    pub fn on_indexed(&self, registry: &Arc<Registry>) -> impl FnOnce(bool) + Send + 'static {
        let (registry, id) = (registry.clone(), self.id.clone());
        let entry = self.entry.clone();
        move |indexed| {
            if let Some(e) = entry {
                let flag = if indexed {
                    &e.in_index
                } else {
                    &e.index_failed
                };
                flag.store(true, Ordering::Release);
            }
            registry.release(&id);
        }
    }

    /// Hold the transaction against follow-ups (a reversal waits) from before its answer is
    /// published until the returned guard goes, while repeats get the answer at once: for an
    /// answer whose journal write is retried in the background.
    pub async fn pin(&self) -> Pinned {
        let entry = self.entry.clone();
        let guard = match &entry {
            Some(e) => Some(e.follow_ups.clone().lock_owned().await),
            None => None,
        };
        Pinned {
            _guard: guard,
            _entry: entry,
        }
    }

    /// The transaction is answered with these bytes: repeats waiting get them. `indexed`:
    /// the answer is in the journal's duplicate index already.
    pub fn answered(mut self, answer: Option<Bytes>, indexed: bool) {
        self.publish(answer, indexed);
    }

    fn publish(&mut self, answer: Option<Bytes>, indexed: bool) {
        let Some(entry) = self.entry.take() else {
            return;
        };
        if indexed {
            entry.in_index.store(true, Ordering::Release);
        }
        if let Ok(mut at) = entry.since.lock() {
            *at = Instant::now();
        }
        entry.stage.send_replace(Stage::Answered(answer));
        drop(entry);
        self.registry.release(&self.id);
    }
}

impl Drop for Ticket<'_> {
    fn drop(&mut self) {
        self.publish(None, false);
    }
}

/// A transaction held against follow-ups by its own request (see [`Ticket::pin`]). The
/// entry is kept while it is held (a new entry would have a lock of its own); it goes at
/// its next release or sweep.
pub struct Pinned {
    _guard: Option<tokio::sync::OwnedMutexGuard<()>>,
    _entry: Option<Arc<Entry>>,
}

/// A follow-up's hold on a transaction (see [`Registry::hold`]).
pub struct Hold<'a> {
    registry: &'a Registry,
    id: TxnId,
    _guard: tokio::sync::OwnedMutexGuard<()>,
    entry: Option<Arc<Entry>>,
}

impl Drop for Hold<'_> {
    fn drop(&mut self) {
        drop(self.entry.take());
        self.registry.release(&self.id);
    }
}

/// A [`Hold`] that owns its registry handle (see [`Registry::hold_owned`]).
pub struct OwnedHold {
    registry: Arc<Registry>,
    id: TxnId,
    _guard: tokio::sync::OwnedMutexGuard<()>,
    entry: Option<Arc<Entry>>,
}

impl Drop for OwnedHold {
    fn drop(&mut self) {
        drop(self.entry.take());
        self.registry.release(&self.id);
    }
}

/// An answer the duplicate index holds (when it was given, then its bytes), if still inside
/// the window at `now_ms`.
fn remembered_answer(raw: &[u8], now_ms: i64, window: Duration) -> Option<Bytes> {
    let (at, answer) = raw.split_first_chunk::<8>()?;
    let window_ms = i64::try_from(window.as_millis()).unwrap_or(i64::MAX);
    let age = now_ms.saturating_sub(i64::from_be_bytes(*at));
    (age <= window_ms).then(|| Bytes::copy_from_slice(answer))
}

/// Sweep settled entries every few seconds (see [`Registry::sweep`]).
pub async fn sweeper(registry: Arc<Registry>, max_age: Duration, stop: CancellationToken) {
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tokio::time::sleep(Duration::from_secs(10)) => {}
        }
        registry.sweep(max_age);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clock::SystemClock;
    use crate::journal::Sealer;

    fn id(stan: u32) -> TxnId {
        TxnId {
            listener: "terminals".into(),
            class: 2,
            stan,
            terminal: "T1".into(),
            transmission_time: 1122040012,
        }
    }

    fn registry() -> (tempfile::TempDir, Arc<Registry>) {
        let dir = tempfile::tempdir().unwrap();
        let db = crate::store::open(dir.path()).unwrap();
        let journal = Journal::open(db, Sealer::from_card_key(&[7u8; 32]), 8).unwrap();
        let registry = Registry::new(journal, Arc::new(SystemClock), Duration::from_secs(60));
        (dir, Arc::new(registry))
    }

    async fn fresh(r: &Registry, id: TxnId) -> Ticket<'_> {
        match r.claim(id).await {
            Claim::Fresh(t) => t,
            _ => panic!("expected a fresh claim"),
        }
    }

    #[tokio::test]
    async fn a_repeat_waits_for_the_original_then_memory_answers_until_the_index_does() {
        let (_dir, r) = registry();
        let ticket = fresh(&r, id(1)).await;
        let Claim::InFlight(waiting) = r.claim(id(1)).await else {
            panic!("expected in flight");
        };
        let indexed = ticket.on_indexed(&r);
        ticket.answered(Some(Bytes::from_static(b"0210 answer")), false);
        assert_eq!(waiting.answer().await.as_deref(), Some(&b"0210 answer"[..]));
        // Not in the journal's index yet: memory answers.
        match r.claim(id(1)).await {
            Claim::Answered(b) => assert_eq!(&b[..], b"0210 answer"),
            _ => panic!("a repeat before the write landed must get the original answer"),
        }
        indexed(true);
        assert!(r.is_empty(), "memory forgets once the index has the answer");
    }

    /// An answer whose write to the index failed stayed in memory for ever (nothing was
    /// left to mark it indexed): one entry per such answer during a disk failure, never
    /// freed. It answers repeats for the duplicate window, then goes.
    #[tokio::test]
    async fn an_answer_whose_index_write_failed_answers_repeats_for_the_window_then_goes() {
        let (_dir, long) = registry();
        let window = Duration::from_millis(200);
        let r = Arc::new(Registry::new(
            long.journal.clone(),
            Arc::new(SystemClock),
            window,
        ));
        let ticket = fresh(&r, id(5)).await;
        let failed = ticket.on_indexed(&r);
        ticket.answered(Some(Bytes::from_static(b"0210 declined")), false);
        failed(false);
        match r.claim(id(5)).await {
            Claim::Answered(b) => assert_eq!(&b[..], b"0210 declined"),
            _ => panic!("inside the window a repeat gets the answer"),
        }
        r.sweep(Duration::ZERO);
        assert_eq!(r.len(), 1, "kept for the window");
        tokio::time::sleep(window).await;
        r.sweep(Duration::ZERO);
        assert!(r.is_empty(), "forgotten after it");
    }

    #[tokio::test]
    async fn an_original_that_ends_without_an_answer_lets_its_repeat_be_processed() {
        let (_dir, r) = registry();
        let ticket = fresh(&r, id(2)).await;
        let Claim::InFlight(waiting) = r.claim(id(2)).await else {
            panic!("expected in flight");
        };
        drop(ticket);
        assert_eq!(waiting.answer().await, None);
        drop(fresh(&r, id(2)).await);
        assert!(r.is_empty());
    }

    #[tokio::test]
    async fn a_follow_up_waits_for_the_original_and_follow_ups_go_one_at_a_time() {
        let (_dir, r) = registry();
        let ticket = fresh(&r, id(3)).await;
        let r2 = r.clone();
        let follow_up = tokio::spawn(async move {
            let _held = r2.hold(&id(3)).await;
        });
        tokio::task::yield_now().await;
        assert!(!follow_up.is_finished(), "the original is still in flight");
        ticket.answered(None, false);
        follow_up.await.unwrap();
        let held = r.hold(&id(3)).await;
        let r3 = r.clone();
        let second = tokio::spawn(async move {
            let _held = r3.hold(&id(3)).await;
        });
        tokio::task::yield_now().await;
        assert!(!second.is_finished(), "one follow-up at a time");
        drop(held);
        second.await.unwrap();
        assert!(r.is_empty());
    }

    #[tokio::test]
    async fn the_sweep_never_drops_a_request_in_flight() {
        let (_dir, r) = registry();
        let ticket = fresh(&r, id(4)).await;
        r.sweep(Duration::ZERO);
        assert!(matches!(r.claim(id(4)).await, Claim::InFlight(_)));
        drop(ticket);
    }

    #[test]
    fn keys_read_as_they_always_did_and_back() {
        for (class, stan, terminal, time) in [
            (2u8, 42u32, "TERM0001", 1_207_004_512u64),
            (4, 0, "T|WITH|BARS", 0),
            (1, 1_234_567, "", 99_999_999_999),
        ] {
            let id = TxnId {
                listener: "terminals".into(),
                class,
                stan,
                terminal: terminal.to_string(),
                transmission_time: time,
            };
            let before = format!("terminals|{class}|{stan:06}|{terminal}|{time:010}");
            assert_eq!(id.to_bytes(), before.as_bytes());
            assert_eq!(TxnId::from_record_key(&id.record_key()), Some(id));
        }
    }

    #[test]
    fn the_index_answers_only_inside_the_window() {
        let mut raw = 1_000i64.to_be_bytes().to_vec();
        raw.extend_from_slice(b"answer");
        let window = Duration::from_secs(1);
        assert!(remembered_answer(&raw, 2_000, window).is_some());
        assert!(remembered_answer(&raw, 2_001, window).is_none());
        assert!(remembered_answer(b"short", 0, window).is_none());
    }
}
