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

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use crate::iso8583::{Mti, OriginalData, OwnedMessage, ResponseCode};
use crate::journal::{Entry, EntryKind, Journal, Step};
use crate::net::link::{LateAnswers, Link};
use crate::store::Cf;

/// Fields of a leg's request carried into its reversal (never track data, CVV or PIN block).
const CARRIED: [u16; 14] = [2, 3, 4, 7, 11, 12, 13, 14, 22, 25, 41, 42, 49, 102];

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

/// One queued reversal.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Item {
    /// The transaction key (also the sealing context of `sealed`).
    txn: String,
    leg: usize,
    queued_ms: i64,
    attempts: u32,
    /// Hex of the sealed leg request.
    sealed: String,
    /// A completion of the leg (an authorization) for this amount, instead of its reversal.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    complete: Option<u64>,
    /// Not before this moment (its back-off). Kept in memory only, on the runtime's clock
    /// (which tests can pause): after a restart every item is due at once.
    #[serde(skip)]
    next: Option<tokio::time::Instant>,
    /// The leg's amount in currency (what an operator weighs a dead letter by).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    amount: Option<u64>,
    /// Why it is a dead letter.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    reason: Option<String>,
}

impl Item {
    fn kind(&self) -> &'static str {
        match self.complete {
            None => "reversal",
            Some(_) => "completion",
        }
    }
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

/// Items per link, in key (= queueing) order.
type Lanes = HashMap<String, BTreeMap<Vec<u8>, Item>>;

pub struct Saf {
    /// Itself, for the tasks it spawns (a late approval's reversal).
    me: std::sync::Weak<Saf>,
    journal: Arc<Journal>,
    links: OnceLock<HashMap<String, Arc<Link>>>,
    wake: Notify,
    next_seq: AtomicU64,
    timing: SafTiming,
    lanes: Mutex<Lanes>,
    queued: AtomicU64,
}

impl Saf {
    /// Open the queue over the journal's database (items left by an earlier run included).
    pub fn open(journal: Arc<Journal>, timing: SafTiming) -> Result<Arc<Saf>, String> {
        let existing = journal.scan(Cf::Saf, b"")?;
        let mut lanes = Lanes::new();
        let mut max_seq = 0;
        for (k, v) in existing {
            let link = lane_of(&k);
            if let Some(seq) = k.last_chunk::<8>() {
                max_seq = max_seq.max(u64::from_be_bytes(*seq));
            }
            let item = serde_json::from_slice::<Item>(&v).unwrap_or_else(|e| {
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
            journal,
            links: OnceLock::new(),
            wake: Notify::new(),
            next_seq: AtomicU64::new(max_seq + 1),
            timing,
            lanes: Mutex::new(lanes),
            queued: AtomicU64::new(0),
        }))
    }

    /// Attach the links (created after the queue, which they report late answers to) and
    /// start one worker per link.
    pub fn start(self: &Arc<Self>, links: HashMap<String, Arc<Link>>, stop: CancellationToken) {
        let names: Vec<String> = links.keys().cloned().collect();
        if self.links.set(links).is_err() {
            return; // already started
        }
        for name in names {
            tokio::spawn(worker(self.clone(), name, stop.clone()));
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
        self.queue(step, link, txn, leg, sealed, None)
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
        self.queue(step, link, txn, (leg, amount), sealed, Some(amount))
    }

    fn queue(
        &self,
        step: &mut Step,
        link: &str,
        txn: &str,
        (leg, amount): (usize, u64),
        sealed: &[u8],
        complete: Option<u64>,
    ) -> Queued {
        let seq = self.next_seq.fetch_add(1, Ordering::Relaxed);
        let item = Item {
            txn: txn.to_string(),
            leg,
            queued_ms: now_ms(),
            attempts: 0,
            sealed: hex::encode(sealed),
            complete,
            next: None,
            amount: Some(amount),
            reason: None,
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

    /// Reversals whose step is committed: the workers may send them.
    pub fn publish(&self, queued: Vec<Queued>) {
        if queued.is_empty() {
            return;
        }
        if let Ok(mut lanes) = self.lanes.lock() {
            for q in queued {
                self.queued.fetch_add(1, Ordering::Relaxed);
                if q.item.complete.is_none() {
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
            .map_or(0, |l| l.values().map(BTreeMap::len).sum())
    }

    /// Items that expired unacknowledged.
    pub fn dead_letters(&self) -> usize {
        self.journal.scan(Cf::SafDead, b"").map_or(0, |v| v.len())
    }

    /// The dead-letter list, oldest first by link.
    pub fn dead_letter_list(&self) -> Result<Vec<DeadLetter>, String> {
        let now = now_ms();
        Ok(self
            .journal
            .scan(Cf::SafDead, b"")?
            .into_iter()
            .map(|(k, v)| DeadLetter::of(&k, &v, now))
            .collect())
    }

    /// Put a dead letter back in its lane, its attempts counted afresh (the operator fixed
    /// what made the host refuse it). False: no such dead letter.
    pub async fn retry_dead_letter(&self, id: &str, who: &str) -> Result<bool, String> {
        let Some((key, mut item)) = self.dead_letter(id)? else {
            return Ok(false);
        };
        let link = lane_of(&key);
        item.attempts = 0;
        item.next = None;
        item.reason = None;
        let mut step = Step::new();
        step.delete(Cf::SafDead, key.clone());
        step.put(Cf::Saf, key.clone(), to_bytes(&item));
        step.append(Entry::new(
            EntryKind::Saf,
            &item.txn,
            &link,
            format!("leg {} dead letter re-queued by {who}", item.leg),
        ));
        step.synced();
        self.journal.commit(step).await.map_err(|e| e.to_string())?;
        self.publish(vec![Queued { link, key, item }]);
        self.refresh_dead_letter_metrics();
        Ok(true)
    }

    /// Close a dead letter the operator settled outside the switch (`note` says how); it is
    /// journaled and leaves the list. False: no such dead letter.
    pub async fn resolve_dead_letter(
        &self,
        id: &str,
        who: &str,
        note: &str,
    ) -> Result<bool, String> {
        let Some((key, item)) = self.dead_letter(id)? else {
            return Ok(false);
        };
        let mut step = Step::new();
        step.delete(Cf::SafDead, key.clone());
        step.append(Entry::new(
            EntryKind::Saf,
            &item.txn,
            &lane_of(&key),
            format!("leg {} dead letter resolved by {who}: {note}", item.leg),
        ));
        step.synced();
        self.journal.commit(step).await.map_err(|e| e.to_string())?;
        self.refresh_dead_letter_metrics();
        Ok(true)
    }

    fn dead_letter(&self, id: &str) -> Result<Option<(Vec<u8>, Item)>, String> {
        let Ok(key) = hex::decode(id) else {
            return Ok(None);
        };
        let Some(raw) = self.journal.get(Cf::SafDead, &key)? else {
            return Ok(None);
        };
        let item = serde_json::from_slice::<Item>(&raw).unwrap_or_else(|_| Item::unreadable());
        Ok(Some((key, item)))
    }

    /// Dead letters per link: how many, how much money, how old the oldest.
    pub fn refresh_dead_letter_metrics(&self) {
        let Ok(list) = self.dead_letter_list() else {
            return;
        };
        let mut per_link: HashMap<String, (usize, u64, f64)> = HashMap::new();
        for d in &list {
            let e = per_link.entry(d.link.clone()).or_default();
            e.0 += 1;
            e.1 = e.1.saturating_add(d.amount.unwrap_or(0));
            e.2 = e.2.max(d.age_s);
        }
        let known: Vec<String> = self
            .links
            .get()
            .map(|l| l.keys().cloned().collect())
            .unwrap_or_default();
        for link in known.iter().chain(per_link.keys()) {
            let (count, amount, age) = per_link.get(link).copied().unwrap_or_default();
            metrics::gauge!("cyberswitch_saf_dead_letters", "link" => link.clone())
                .set(count as f64);
            metrics::gauge!("cyberswitch_saf_dead_letter_amount", "link" => link.clone())
                .set(amount as f64);
            metrics::gauge!("cyberswitch_saf_dead_letter_oldest_age_seconds", "link" => link.clone()).set(age);
        }
    }

    /// The next item of a link's lane to try at `now`: the first in queueing order that is
    /// due and not behind an earlier item of the same leg. Otherwise, when the next one falls
    /// due (`Err(Some(at))`), or nothing is queued (`Err(None)`).
    fn next_due(
        &self,
        link: &str,
        now: tokio::time::Instant,
    ) -> Result<(Vec<u8>, Item), Option<tokio::time::Instant>> {
        let lanes = self.lanes.lock().map_err(|_| None)?;
        let lane = lanes.get(link).ok_or(None)?;
        let mut legs_seen = std::collections::HashSet::new();
        let mut soonest: Option<tokio::time::Instant> = None;
        for (k, item) in lane {
            if !legs_seen.insert((item.txn.as_str(), item.leg)) {
                continue; // behind an earlier item of its leg
            }
            match item.next {
                Some(at) if at > now => soonest = Some(soonest.map_or(at, |s| s.min(at))),
                _ => return Ok((k.clone(), item.clone())),
            }
        }
        Err(soonest)
    }

    /// The age of the oldest item of a link's lane, in seconds.
    fn oldest_age_s(&self, link: &str, now_ms: i64) -> f64 {
        let Ok(lanes) = self.lanes.lock() else {
            return 0.0;
        };
        lanes
            .get(link)
            .and_then(|l| l.values().map(|i| i.queued_ms).min())
            .map_or(0.0, |q| now_ms.saturating_sub(q).max(0) as f64 / 1000.0)
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
    }
}

/// A dead letter as an operator sees it (no card data: the leg's request stays sealed).
#[derive(Debug, Clone, Serialize)]
pub struct DeadLetter {
    /// What `retry` and `resolve` name it by.
    pub id: String,
    pub link: String,
    pub txn: String,
    pub leg: usize,
    pub kind: &'static str,
    pub amount: Option<u64>,
    pub attempts: u32,
    pub age_s: f64,
    pub reason: String,
}

impl DeadLetter {
    fn of(key: &[u8], raw: &[u8], now_ms: i64) -> DeadLetter {
        let item = serde_json::from_slice::<Item>(raw).unwrap_or_else(|_| Item::unreadable());
        DeadLetter {
            id: hex::encode(key),
            link: lane_of(key),
            kind: item.kind(),
            age_s: now_ms.saturating_sub(item.queued_ms).max(0) as f64 / 1000.0,
            reason: item.reason.clone().unwrap_or_default(),
            txn: item.txn,
            leg: item.leg,
            amount: item.amount,
            attempts: item.attempts,
        }
    }
}

/// The link of a queue key (`link`, a zero byte, the sequence number).
fn lane_of(key: &[u8]) -> String {
    String::from_utf8_lossy(&key[..key.len().saturating_sub(9)]).into_owned()
}

impl Item {
    /// Stands for an item whose bytes could not be read (it goes to the dead letters).
    fn unreadable() -> Item {
        Item {
            txn: String::new(),
            leg: 0,
            queued_ms: 0,
            attempts: u32::MAX,
            sealed: String::new(),
            complete: None,
            next: None,
            amount: None,
            reason: None,
        }
    }
}

fn to_bytes(item: &Item) -> Vec<u8> {
    serde_json::to_vec(item).unwrap_or_default()
}

fn now_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}

/// Build the reversal of a leg: the leg's own fields, a fresh transmission time, and field 90
/// naming the leg (MTI, STAN, transmission time). The STAN is the leg's, so the host matches
/// the answer by the same key.
fn reversal_of(leg: &OwnedMessage, mti: [u8; 4]) -> OwnedMessage {
    let mut rev = OwnedMessage::new(Mti(mti));
    for (n, v) in leg.fields() {
        if n != 7 {
            rev.set(n, v);
        }
    }
    let num = |n: u16| {
        leg.get(n)
            .and_then(|v| std::str::from_utf8(v).ok())
            .and_then(|s| s.parse::<u64>().ok())
            .unwrap_or(0)
    };
    rev.set(7, crate::clock::transmission_time().as_bytes());
    rev.set_original_data(&OriginalData {
        mti: leg.mti(),
        stan: num(11) as u32, // ok: six digits
        transmission_time: num(7),
        acquirer_id: 0,
        forwarder_id: 0,
    });
    rev
}

enum Attempt {
    Acknowledged,
    /// No answer, or an answer that says "not now" (91, 96): try again after the back-off.
    Later,
    /// A definite answer that is not an acknowledgement: repeating it cannot help.
    Refused(String),
    /// The item cannot be sent at all (its sealed request does not open).
    Unsendable(String),
}

async fn attempt(saf: &Saf, link: &Link, item: &Item) -> Attempt {
    let sealed = match hex::decode(&item.sealed) {
        Ok(s) => s,
        Err(e) => return Attempt::Unsendable(format!("sealed request is not hex: {e}")),
    };
    let leg = match saf
        .journal
        .sealer()
        .open(&sealed, item.txn.as_bytes())
        .and_then(|plain| OwnedMessage::unpack(&plain))
    {
        Ok(m) => m,
        Err(e) => return Attempt::Unsendable(e),
    };
    let (message, acknowledged): (_, &[ResponseCode]) = match item.complete {
        // First a reversal, then advices: 0420, and 0421 for every repeat. 25: the host has
        // nothing to reverse, which is what was asked.
        None => {
            let mti = match item.attempts {
                0 => *b"0400",
                1 => *b"0420",
                _ => *b"0421",
            };
            (
                reversal_of(&leg, mti),
                &[ResponseCode::Approved, ResponseCode::OriginalNotFound],
            )
        }
        // A completion advice, 0221 for every repeat. Only 00 will do: anything else leaves
        // the money untaken, so it is retried and, past the expiry, a dead letter.
        Some(amount) => {
            let mti = if item.attempts == 0 {
                *b"0220"
            } else {
                *b"0221"
            };
            let mut completion = reversal_of(&leg, mti);
            completion.set_number(4, amount, 12);
            (completion, &[ResponseCode::Approved])
        }
    };
    match link.request(message).await {
        Ok(a) if a.code().is_some_and(|c| acknowledged.contains(&c)) => Attempt::Acknowledged,
        Ok(a) => match a.code() {
            Some(ResponseCode::IssuerInoperative | ResponseCode::SystemMalfunction) => {
                Attempt::Later
            }
            _ => {
                let code = a.get(39).map(String::from_utf8_lossy).unwrap_or_default();
                Attempt::Refused(format!("refused by the host with {code}"))
            }
        },
        Err(_) => Attempt::Later,
    }
}

async fn worker(saf: Arc<Saf>, link_name: String, stop: CancellationToken) {
    let Some(link) = saf.links.get().and_then(|l| l.get(&link_name)).cloned() else {
        return;
    };
    let timing = saf.timing;
    let max_attempts = timing.max_attempts();
    loop {
        metrics::gauge!("cyberswitch_saf_oldest_age_seconds", "link" => link_name.clone())
            .set(saf.oldest_age_s(&link_name, now_ms()));
        let now = tokio::time::Instant::now();
        let (key, item) = match saf.next_due(&link_name, now) {
            Ok(due) => due,
            Err(soonest) => {
                // Nothing due: sleep until the next one is (or something new is queued).
                let wait = soonest.map_or(Duration::from_secs(1), |at| at - now);
                if !pause(&saf, &stop, wait.min(Duration::from_secs(1))).await {
                    return;
                }
                continue;
            }
        };
        if item.attempts == u32::MAX {
            dead_letter(&saf, &link_name, key, item, "unreadable item").await;
            continue;
        }
        if !link.is_up() {
            // Paused: the link is down; no attempt is spent and nothing ages.
            if !pause(&saf, &stop, timing.retry_min).await {
                return;
            }
            continue;
        }
        match attempt(&saf, &link, &item).await {
            Attempt::Acknowledged => acknowledged(&saf, &link_name, key, &item).await,
            Attempt::Unsendable(why) | Attempt::Refused(why) => {
                dead_letter(&saf, &link_name, key, item, &why).await;
            }
            Attempt::Later => {
                let mut item = item;
                item.attempts = item.attempts.saturating_add(1);
                if item.attempts >= max_attempts {
                    let why = format!("unacknowledged after {} attempts", item.attempts);
                    dead_letter(&saf, &link_name, key, item, &why).await;
                    continue;
                }
                let backoff = timing.backoff(item.attempts - 1);
                item.next = Some(tokio::time::Instant::now() + backoff);
                let mut step = Step::new();
                step.put(Cf::Saf, key.clone(), to_bytes(&item));
                if saf.journal.commit(step).await.is_ok() {
                    saf.update(&link_name, &key, Some(&item));
                } else if !pause(&saf, &stop, backoff).await {
                    return;
                }
            }
        }
    }
}

/// An item the host acknowledged leaves the queue.
async fn acknowledged(saf: &Saf, link_name: &str, key: Vec<u8>, item: &Item) {
    super::testhooks::crash_point("saf-acked").await;
    let mut step = Step::new();
    step.delete(Cf::Saf, key.clone());
    step.append(Entry::new(
        EntryKind::Saf,
        &item.txn,
        link_name,
        format!("leg {} {} acknowledged", item.leg, item.kind()),
    ));
    // The next item goes without waiting for this deletion to be written: until it is, a
    // restart sends the item again, and a host answers a repeated reversal or completion as
    // the first (delivery is at least once anyway). Waiting held a lane to one item per
    // journal write.
    saf.update(link_name, &key, None);
    if let Err(e) = saf.journal.submit(step, |_| {}).await {
        tracing::error!(link = %link_name, error = %e, "acknowledged item not removed from the store; sent again at the next start");
    }
    let acknowledged = match item.complete {
        None => "cyberswitch_reversals_acknowledged_total",
        Some(_) => "cyberswitch_completions_acknowledged_total",
    };
    metrics::counter!(acknowledged, "link" => link_name.to_string()).increment(1);
}

/// Wait `d` (or until woken). False when the switch is stopping.
async fn pause(saf: &Saf, stop: &CancellationToken, d: Duration) -> bool {
    tokio::select! {
        _ = stop.cancelled() => false,
        _ = saf.wake.notified() => true,
        _ = tokio::time::sleep(d) => true,
    }
}

async fn dead_letter(saf: &Saf, link: &str, key: Vec<u8>, mut item: Item, why: &str) {
    tracing::error!(link, txn = %item.txn, leg = item.leg, kind = item.kind(), why, "moved to the dead-letter list");
    item.reason = Some(why.to_string());
    let key_for_lane = key.clone();
    let mut step = Step::new();
    step.delete(Cf::Saf, key.clone());
    step.put(Cf::SafDead, key, to_bytes(&item));
    step.append(Entry::new(
        EntryKind::Saf,
        &item.txn,
        link,
        format!("leg {} dead letter: {why}", item.leg),
    ));
    step.synced();
    if saf.journal.commit(step).await.is_ok() {
        saf.update(link, &key_for_lane, None);
    }
    metrics::counter!("cyberswitch_saf_dead_letters_total", "link" => link.to_string())
        .increment(1);
    saf.refresh_dead_letter_metrics();
}

impl LateAnswers for Saf {
    /// A late answer to a money request. Its leg was queued for reversal at the timeout, but
    /// that reversal may have been acknowledged with 25 (the host had not applied the leg
    /// yet) before the late approval was applied: so a late approval gets a reversal of its
    /// own. A host answers a repeated reversal as the first, so if the first one did undo the
    /// leg this one changes nothing.
    fn late_answer(&self, link: &str, request: OwnedMessage, answer: OwnedMessage) {
        let money = matches!(request.mti().class(), 1 | 2)
            && request.get(3).is_some_and(|pc| !pc.starts_with(b"31"));
        if !money || answer.code() != Some(ResponseCode::Approved) {
            return;
        }
        metrics::counter!("cyberswitch_late_approvals_total", "link" => link.to_string())
            .increment(1);
        let Some(saf) = self.me.upgrade() else { return };
        let link = link.to_string();
        tokio::spawn(async move {
            if let Err(e) = saf.reverse_late_approval(&link, &request).await {
                tracing::error!(link, error = %e, "late approval: its reversal could not be queued");
            }
        });
    }
}

impl Saf {
    /// Queue (durably) the reversal of a leg approved after its timeout.
    async fn reverse_late_approval(
        &self,
        link: &str,
        request: &OwnedMessage,
    ) -> Result<(), String> {
        let stan = request
            .get(11)
            .map(String::from_utf8_lossy)
            .unwrap_or_default();
        let time = request
            .get(7)
            .map(String::from_utf8_lossy)
            .unwrap_or_default();
        // The leg's own key, under which its reversal is sealed and journaled.
        let txn = format!("late|{link}|{stan}|{time}");
        let amount = request
            .get(4)
            .and_then(|v| std::str::from_utf8(v).ok()?.parse().ok())
            .unwrap_or(0);
        let sealed = self
            .journal
            .sealer()
            .seal(&leg_fields(request).pack(), txn.as_bytes());
        let mut step = Step::new();
        let queued = self.enqueue(&mut step, link, &txn, (0, amount), &sealed);
        step.append(Entry::new(
            EntryKind::Saf,
            &txn,
            link,
            "late approval: reversed again".to_string(),
        ));
        step.synced();
        self.journal.commit(step).await.map_err(|e| e.to_string())?;
        tracing::warn!(link, "late approval: a reversal of its own is queued");
        self.publish(vec![queued]);
        Ok(())
    }
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
