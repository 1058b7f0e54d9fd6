//! Store-and-forward: reversals of legs that must be undone (credit declined, no answer in
//! time, a terminal's reversal, an approval that could not be delivered, recovery after a
//! crash), and completions of authorization legs (see [`super::completion`]). The queue
//! lives in the journal's database, so it survives restarts:
//!
//! - one lane per destination link (key: link, sequence number), but each item scheduled on
//!   its own (its attempt count, its next time): an item the host keeps refusing never holds
//!   up the others. Order is kept only where the host needs it: items of one leg (a
//!   completion, then its reversal) go in the order they were queued;
//! - the first attempt is a 0400, then 0420, then 0421 repeats, with exponential back-off
//!   (a completion: 0220, then 0221 repeats);
//! - paused while the link is down: attempts are not spent, and items do not age, on a link
//!   that is not there;
//! - an item leaves the queue on an acknowledging answer (00, or for a reversal 25: the host
//!   has nothing to reverse); on a definite refusal (any other code than 91/96, which say
//!   "try later") it goes at once to the dead-letter list with an alarm, since repeating it
//!   cannot help; and it goes there too once it has used up its attempts (`saf_expiry_s`
//!   worth of retries at `saf_retry_max_ms` while the link is up);
//! - dead letters are listed, re-queued and resolved by an operator (admin API,
//!   `cyberswitch saf …`), with their count, amount and age in metrics.
//!
//! The leg's request is kept sealed (it may hold the card number); it is opened only to build
//! the reversal.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use crate::iso8583::OwnedMessage;
use crate::journal::{Entry, EntryKind, Journal, Step};
use crate::net::link::Link;
use crate::store::Cf;

mod dead_letters;
pub mod lane;
mod late;
mod worker;

use lane::Lane;

pub use dead_letters::DeadLetter;
use dead_letters::DeadTotals;

// An item's stored form lives with the other records (readable without the store).
use crate::records::saf::{to_bytes, Item};

/// Fields of a leg's request carried into its reversal (never track data, CVV or PIN block);
/// a refund leg's advice is the leg itself, so the original it names (90, and 48 on the
/// hosted links: the original leg's RRN) goes too.
const CARRIED: [u16; 17] = [
    2, 3, 4, 7, 11, 12, 13, 14, 22, 25, 37, 41, 42, 48, 49, 90, 102,
];

/// The part of a leg's request that is kept: what its reversal needs.
pub fn leg_fields(request: &OwnedMessage) -> OwnedMessage {
    let mut kept = OwnedMessage::new(request.mti());
    for n in CARRIED {
        if let Some(v) = request.get(n) {
            kept.set(n, v);
        }
    }
    kept
}

/// Queue timing.
#[derive(Debug, Clone, Copy)]
pub struct SafTiming {
    pub retry_min: Duration,
    pub retry_max: Duration,
    /// Retried this long while its link is up without an acknowledgement: dead letter.
    pub expiry: Duration,
}

impl SafTiming {
    /// The back-off after `attempts` attempts: doubling from `retry_min` up to `retry_max`.
    fn backoff(&self, attempts: u32) -> Duration {
        let doubled = self
            .retry_min
            .saturating_mul(1u32.checked_shl(attempts.min(31)).unwrap_or(u32::MAX));
        doubled.min(self.retry_max).max(self.retry_min)
    }

    /// How many attempts an item gets: what its back-off schedule makes in `expiry` (at least
    /// one, so an expiry shorter than the first back-off still tries once).
    pub fn max_attempts(&self) -> u32 {
        let mut spent = Duration::ZERO;
        let mut attempts = 0u32;
        while spent < self.expiry && attempts < u32::MAX - 1 {
            spent = spent.saturating_add(self.backoff(attempts));
            attempts += 1;
            if self.backoff(attempts) == self.retry_max {
                // Constant from here on: the rest in one division.
                let left = self.expiry.saturating_sub(spent).as_millis();
                let step = self.retry_max.as_millis().max(1);
                let more = u32::try_from(left.div_ceil(step)).unwrap_or(u32::MAX / 2);
                return attempts.saturating_add(more).max(1);
            }
        }
        attempts.max(1)
    }
}

/// A reversal added to a step, to [`Saf::publish`] once that step is committed.
pub struct Queued {
    link: String,
    key: Vec<u8>,
    item: Item,
}

/// Each link's lane.
type Lanes = HashMap<String, Lane>;

pub struct Saf {
    /// Itself, for the tasks it spawns (a late approval's reversal).
    me: std::sync::Weak<Saf>,
    /// Queueing times, ages and reversals' field 7 come from here (tests set it).
    clock: Arc<dyn crate::clock::Clock>,
    journal: Arc<Journal>,
    /// Acknowledged items are booked (F13); each attempt carries the open business date.
    books: Arc<crate::books::Books>,
    links: OnceLock<HashMap<String, Arc<Link>>>,
    wake: Notify,
    /// Told whenever an item leaves a lane (acknowledged or dead-lettered).
    removed: Notify,
    /// Late approvals whose reversal is being queued (a graceful stop waits for them).
    pub late_reversals: crate::net::server::WorkCount,
    next_seq: AtomicU64,
    timing: SafTiming,
    lanes: Mutex<Lanes>,
    /// The dead letters' gauges, kept up to date (the list itself is in the store).
    dead: Mutex<dead_letters::DeadTotals>,
    queued: AtomicU64,
}

impl Saf {
    /// Open the queue over the journal's database (items left by an earlier run included).
    pub fn open(
        journal: Arc<Journal>,
        clock: Arc<dyn crate::clock::Clock>,
        books: Arc<crate::books::Books>,
        timing: SafTiming,
    ) -> Result<Arc<Saf>, String> {
        let existing = journal.scan(Cf::Saf, b"")?;
        // Dead letters keep their queue keys (a retry puts them back under them): new items
        // are numbered past them too.
        let mut dead_max = 0;
        let mut dead = DeadTotals::default();
        for (k, v) in journal.scan(Cf::SafDead, b"")? {
            if let Some(seq) = k.last_chunk::<8>() {
                dead_max = dead_max.max(u64::from_be_bytes(*seq));
            }
            dead.add(
                &lane_of(&k),
                &Item::from_bytes(&v).unwrap_or_else(|_| Item::unreadable()),
            );
        }
        let mut lanes = Lanes::new();
        let mut max_seq = 0;
        for (k, v) in existing {
            let link = lane_of(&k);
            if let Some(seq) = k.last_chunk::<8>() {
                max_seq = max_seq.max(u64::from_be_bytes(*seq));
            }
            let item = Item::from_bytes(&v).unwrap_or_else(|e| {
                // Not ours to interpret: it goes to the dead letters rather than block the lane.
                tracing::error!(link, error = %e, "unreadable store-and-forward item");
                Item::unreadable()
            });
            lanes.entry(link).or_default().insert(k, item);
        }
        for (link, lane) in &lanes {
            tracing::info!(
                link,
                items = lane.len(),
                "store-and-forward items from an earlier run"
            );
            metrics::gauge!("cyberswitch_saf_depth", "link" => link.clone()).set(lane.len() as f64);
        }
        Ok(Arc::new_cyclic(|me| Saf {
            me: me.clone(),
            clock,
            journal,
            books,
            links: OnceLock::new(),
            wake: Notify::new(),
            removed: Notify::new(),
            late_reversals: Default::default(),
            next_seq: AtomicU64::new(max_seq.max(dead_max) + 1),
            timing,
            lanes: Mutex::new(lanes),
            dead: Mutex::new(dead),
            queued: AtomicU64::new(0),
        }))
    }

    /// The books the queue's acknowledged items are booked in.
    pub fn books(&self) -> &Arc<crate::books::Books> {
        &self.books
    }

    /// Attach the links (created after the queue, which they report late answers to) and
    /// start one worker per link.
    pub fn start(self: &Arc<Self>, links: HashMap<String, Arc<Link>>, stop: CancellationToken) {
        let names: Vec<String> = links.keys().cloned().collect();
        if self.links.set(links).is_err() {
            return; // already started
        }
        self.refresh_dead_letter_metrics();
        for name in names {
            tokio::spawn(worker::worker(self.clone(), name, stop.clone()));
        }
    }

    /// Add the reversal of leg `leg` of transaction `txn` (its request sealed in `sealed`) to
    /// `step`. Once the step is committed, [`Saf::publish`] hands it to the workers.
    pub fn enqueue(
        &self,
        step: &mut Step,
        link: &str,
        txn: &str,
        leg: (usize, u64),
        sealed: &[u8],
    ) -> Queued {
        self.queue(step, link, txn, leg, sealed, (None, false))
    }

    /// As [`Saf::enqueue`], the completion of an authorization leg for `amount` (0220, then
    /// 0221 repeats; acknowledged by 00 only): it goes in the same lane, so a reversal
    /// queued after it is sent after it.
    pub fn enqueue_completion(
        &self,
        step: &mut Step,
        link: &str,
        txn: &str,
        leg: usize,
        sealed: &[u8],
        amount: u64,
    ) -> Queued {
        self.queue(
            step,
            link,
            txn,
            (leg, amount),
            sealed,
            (Some(amount), false),
        )
    }

    /// As [`Saf::enqueue`], a refund leg's advice: the leg's request again as 0220 (0221
    /// repeats) until the host acknowledges it with 00 (see [`super::refund`]).
    pub fn enqueue_advice(
        &self,
        step: &mut Step,
        link: &str,
        txn: &str,
        leg: (usize, u64),
        sealed: &[u8],
    ) -> Queued {
        self.queue(step, link, txn, leg, sealed, (None, true))
    }

    fn queue(
        &self,
        step: &mut Step,
        link: &str,
        txn: &str,
        (leg, amount): (usize, u64),
        sealed: &[u8],
        (complete, advice): (Option<u64>, bool),
    ) -> Queued {
        let seq = self.next_seq.fetch_add(1, Ordering::Relaxed);
        let item = Item {
            txn: txn.to_string(),
            leg,
            queued_ms: self.clock.now_ms(),
            attempts: 0,
            sealed: hex::encode(sealed),
            complete,
            next: None,
            amount: Some(amount),
            reason: None,
            advice,
            blind: None,
        };
        let key = crate::store::seq_key(link, seq);
        step.put(Cf::Saf, key.clone(), to_bytes(&item));
        step.append(Entry::new(
            EntryKind::Saf,
            txn,
            link,
            format!("leg {leg} queued for {}", item.kind()),
        ));
        Queued {
            link: link.to_string(),
            key,
            item,
        }
    }

    /// The blind reversal of the leg sent ahead on `link` with field 37 `identity`, whose
    /// record may have been lost (see [`super::legs_ahead`]): only its identity is known.
    pub fn enqueue_blind(&self, step: &mut Step, link: &str, identity: &str) -> Queued {
        let seq = self.next_seq.fetch_add(1, Ordering::Relaxed);
        let item = Item {
            txn: format!("blind/{identity}"),
            queued_ms: self.clock.now_ms(),
            attempts: 0,
            blind: Some(identity.to_string()),
            // Nothing else of the leg is known: no sealed request, no amount.
            ..Item::unreadable()
        };
        let key = crate::store::seq_key(link, seq);
        step.put(Cf::Saf, key.clone(), to_bytes(&item));
        Queued {
            link: link.to_string(),
            key,
            item,
        }
    }

    /// Add an item queued in a step that did not land to another step (the same key and
    /// item: published once that one is committed).
    pub fn restage(&self, step: &mut Step, q: &Queued) {
        step.put(Cf::Saf, q.key.clone(), to_bytes(&q.item));
        step.append(Entry::new(
            EntryKind::Saf,
            &q.item.txn,
            &q.link,
            format!("leg {} queued for {}", q.item.leg, q.item.kind()),
        ));
    }

    /// Reversals whose step is committed: the workers may send them.
    pub fn publish(&self, queued: Vec<Queued>) {
        if queued.is_empty() {
            return;
        }
        if let Ok(mut lanes) = self.lanes.lock() {
            for q in queued {
                self.queued.fetch_add(1, Ordering::Relaxed);
                if q.item.kind() == "reversal" {
                    metrics::counter!("cyberswitch_reversals_queued_total", "link" => q.link.clone())
                        .increment(1);
                }
                let lane = lanes.entry(q.link.clone()).or_default();
                lane.insert(q.key, q.item);
                metrics::gauge!("cyberswitch_saf_depth", "link" => q.link).set(lane.len() as f64);
            }
        }
        self.wake.notify_waiters();
    }

    /// Reversals queued since start.
    pub fn queued_total(&self) -> u64 {
        self.queued.load(Ordering::Relaxed)
    }

    /// Reversals waiting, over all links.
    pub fn depth(&self) -> usize {
        self.lanes
            .lock()
            .map_or(0, |l| l.values().map(Lane::len).sum())
    }

    /// Dead letters, over all links (the count the gauges show; the list itself is read
    /// from the store by [`Saf::dead_letter_page`]).
    pub fn dead_letters(&self) -> usize {
        self.dead_totals(|t| t.count())
    }

    /// The next item of a link's lane to try at `now`: the first in queueing order that is
    /// due and not behind an earlier item of the same leg. Otherwise, when the next one falls
    /// due (`Err(Some(at))`), or nothing is queued (`Err(None)`).
    fn next_due(
        &self,
        link: &str,
        now: tokio::time::Instant,
    ) -> Result<(Vec<u8>, Item), Option<tokio::time::Instant>> {
        let mut lanes = self.lanes.lock().map_err(|_| None)?;
        lanes.get_mut(link).ok_or(None)?.next_due(now)
    }

    /// The age of the oldest item of a link's lane, in seconds.
    fn oldest_age_s(&self, link: &str, now_ms: i64) -> f64 {
        let Ok(lanes) = self.lanes.lock() else {
            return 0.0;
        };
        lanes
            .get(link)
            .and_then(Lane::oldest_queued_ms)
            .map_or(0.0, |q| now_ms.saturating_sub(q).max(0) as f64 / 1000.0)
    }

    /// Is an item of leg `leg` of transaction `txn` still queued for `link`?
    fn queued_for(&self, link: &str, txn: &str, leg: usize) -> bool {
        self.lanes
            .lock()
            .is_ok_and(|lanes| lanes.get(link).is_some_and(|lane| lane.holds_leg(txn, leg)))
    }

    /// Wait, at most `within`, until nothing is queued any more for leg `leg` of `txn` on
    /// `link`: a request the host must see after what is queued (a refund of what a queued
    /// completion takes) goes then. True when nothing is left queued for it.
    pub async fn settled(&self, link: &str, txn: &str, leg: usize, within: Duration) -> bool {
        let deadline = tokio::time::Instant::now() + within;
        loop {
            let removed = self.removed.notified();
            tokio::pin!(removed);
            removed.as_mut().enable();
            if !self.queued_for(link, txn, leg) {
                return true;
            }
            if tokio::time::timeout_at(deadline, removed).await.is_err() {
                return !self.queued_for(link, txn, leg);
            }
        }
    }

    /// Change (`Some`) or remove (`None`) an item in its lane.
    fn update(&self, link: &str, key: &[u8], item: Option<&Item>) {
        if let Ok(mut lanes) = self.lanes.lock() {
            let lane = lanes.entry(link.to_string()).or_default();
            match item {
                Some(i) => {
                    lane.insert(key.to_vec(), i.clone());
                }
                None => {
                    lane.remove(key);
                }
            }
            metrics::gauge!("cyberswitch_saf_depth", "link" => link.to_string())
                .set(lane.len() as f64);
        }
        if item.is_none() {
            self.removed.notify_waiters();
        }
    }
}

/// The link of a queue key (`link`, a zero byte, the sequence number).
fn lane_of(key: &[u8]) -> String {
    String::from_utf8_lossy(&key[..key.len().saturating_sub(9)]).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn timing(min_ms: u64, max_ms: u64, expiry_ms: u64) -> SafTiming {
        SafTiming {
            retry_min: Duration::from_millis(min_ms),
            retry_max: Duration::from_millis(max_ms),
            expiry: Duration::from_millis(expiry_ms),
        }
    }

    #[test]
    fn backoff_doubles_up_to_its_maximum_and_never_overflows() {
        let t = timing(200, 30_000, 0);
        let got: Vec<u128> = (0..9).map(|a| t.backoff(a).as_millis()).collect();
        assert_eq!(got, [200, 400, 800, 1600, 3200, 6400, 12800, 25600, 30000]);
        assert_eq!(t.backoff(u32::MAX).as_millis(), 30_000);
    }

    #[test]
    fn attempts_are_what_the_backoff_makes_in_the_expiry() {
        // 50 + 100 + 100 + … : 1 s is 50 ms, then ten 100 ms waits (rounded up).
        assert_eq!(timing(50, 100, 1_000).max_attempts(), 11);
        // The first back-off alone passes the expiry: one attempt.
        assert_eq!(timing(5_000, 5_000, 1_000).max_attempts(), 1);
        // 50 + 100 + 200 + 400 + 800 passes 1 s: five.
        assert_eq!(timing(50, 1_000, 1_000).max_attempts(), 5);
        // The defaults (200 ms … 30 s, a week): about 20,000 attempts while the link is up.
        let week = timing(200, 30_000, 7 * 86_400_000).max_attempts();
        assert!((20_000..20_200).contains(&week), "{week}");
    }
}
