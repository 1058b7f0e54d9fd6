//! Store-and-forward: reversals of legs that must be undone (credit declined, no answer in
//! time, a terminal's reversal, an approval that could not be delivered, recovery after a
//! crash), and completions of authorization legs (see [`super::completion`]). The queue
//! lives in the journal's database, so it survives restarts:
//!
//! - ordered per destination link (key: link, sequence number);
//! - the first attempt is a 0400, then 0420, then 0421 repeats, with exponential back-off
//!   (a completion: 0220, then 0221 repeats);
//! - paused while the link is down (attempts are not spent on a link that is not there);
//! - an item leaves the queue only on an acknowledging answer (00, or for a reversal 25: the
//!   host has nothing to reverse), or after the configured expiry into the dead-letter family
//!   with an alarm metric.
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
    /// Unacknowledged this long: dead letter.
    pub expiry: Duration,
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
            let split = k.len().saturating_sub(9);
            let link = String::from_utf8_lossy(&k[..split]).into_owned();
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
        Ok(Arc::new(Saf {
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
        leg: usize,
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
        self.queue(step, link, txn, leg, sealed, Some(amount))
    }

    fn queue(
        &self,
        step: &mut Step,
        link: &str,
        txn: &str,
        leg: usize,
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

    /// The oldest item for a link.
    fn head(&self, link: &str) -> Option<(Vec<u8>, Item)> {
        let lanes = self.lanes.lock().ok()?;
        let (k, v) = lanes.get(link)?.first_key_value()?;
        Some((k.clone(), v.clone()))
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
    Refused,
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
        _ => Attempt::Refused,
    }
}

async fn worker(saf: Arc<Saf>, link_name: String, stop: CancellationToken) {
    let Some(link) = saf.links.get().and_then(|l| l.get(&link_name)).cloned() else {
        return;
    };
    let timing = saf.timing;
    let mut backoff = timing.retry_min;
    loop {
        let Some((key, mut item)) = saf.head(&link_name) else {
            metrics::gauge!("cyberswitch_saf_oldest_age_seconds", "link" => link_name.clone())
                .set(0.0);
            if !pause(&saf, &stop, Duration::from_secs(1)).await {
                return;
            }
            continue;
        };
        let age_ms = now_ms().saturating_sub(item.queued_ms).max(0);
        metrics::gauge!("cyberswitch_saf_oldest_age_seconds", "link" => link_name.clone())
            .set(age_ms as f64 / 1000.0);
        if item.attempts == u32::MAX {
            dead_letter(&saf, &link_name, key, &item, "unreadable item").await;
            continue;
        }
        if age_ms as u128 > timing.expiry.as_millis() {
            dead_letter(&saf, &link_name, key, &item, "expired unacknowledged").await;
            continue;
        }
        if !link.is_up() {
            // Paused: the link is down; no attempt is spent.
            if !pause(&saf, &stop, timing.retry_min).await {
                return;
            }
            continue;
        }
        match attempt(&saf, &link, &item).await {
            Attempt::Acknowledged => {
                super::testhooks::crash_point("saf-acked").await;
                let mut step = Step::new();
                step.delete(Cf::Saf, key.clone());
                step.append(Entry::new(
                    EntryKind::Saf,
                    &item.txn,
                    &link_name,
                    format!("leg {} {} acknowledged", item.leg, item.kind()),
                ));
                // The next item goes without waiting for this deletion to be written: until
                // it is, a restart sends the item again, and a host answers a repeated
                // reversal or completion as the first (delivery is at least once anyway).
                // Waiting held a lane to one item per journal write.
                saf.update(&link_name, &key, None);
                if let Err(e) = saf.journal.submit(step, |_| {}).await {
                    tracing::error!(link = %link_name, error = %e, "acknowledged item not removed from the store; sent again at the next start");
                }
                let acknowledged = match item.complete {
                    None => "cyberswitch_reversals_acknowledged_total",
                    Some(_) => "cyberswitch_completions_acknowledged_total",
                };
                metrics::counter!(acknowledged, "link" => link_name.clone()).increment(1);
                backoff = timing.retry_min;
            }
            Attempt::Unsendable(why) => {
                dead_letter(&saf, &link_name, key, &item, &why).await;
            }
            Attempt::Refused => {
                item.attempts = item.attempts.saturating_add(1);
                let mut step = Step::new();
                step.put(Cf::Saf, key.clone(), to_bytes(&item));
                if saf.journal.commit(step).await.is_ok() {
                    saf.update(&link_name, &key, Some(&item));
                }
                if !pause(&saf, &stop, backoff).await {
                    return;
                }
                backoff = (backoff * 2).min(timing.retry_max);
            }
        }
    }
}

/// Wait `d` (or until woken). False when the switch is stopping.
async fn pause(saf: &Saf, stop: &CancellationToken, d: Duration) -> bool {
    tokio::select! {
        _ = stop.cancelled() => false,
        _ = saf.wake.notified() => true,
        _ = tokio::time::sleep(d) => true,
    }
}

async fn dead_letter(saf: &Saf, link: &str, key: Vec<u8>, item: &Item, why: &str) {
    tracing::error!(link, txn = %item.txn, leg = item.leg, kind = item.kind(), why, "moved to the dead-letter list");
    let key_for_lane = key.clone();
    let mut step = Step::new();
    step.delete(Cf::Saf, key.clone());
    step.put(Cf::SafDead, key, to_bytes(item));
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
}

impl LateAnswers for Saf {
    /// A late answer to a money request: its leg was already queued for reversal when it timed
    /// out, so here it is only reported.
    fn late_answer(&self, link: &str, request: OwnedMessage, answer: OwnedMessage) {
        let money = matches!(request.mti().class(), 1 | 2)
            && request.get(3).is_some_and(|pc| !pc.starts_with(b"31"));
        if money && answer.code() == Some(ResponseCode::Approved) {
            tracing::warn!(
                link,
                "late approval: its reversal was queued at the timeout"
            );
            metrics::counter!("cyberswitch_late_approvals_total", "link" => link.to_string())
                .increment(1);
        }
    }
}
