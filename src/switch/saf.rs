//! Compensation through store-and-forward: a leg that must be undone (credit declined, late
//! approval, timeout, terminal reversal) is queued here and sent as 0400, then repeated as
//! 0420 and 0421 with back-off, until the host acknowledges it (0410/0430 with 00, or 25:
//! the host has nothing to reverse). Order is kept per destination link.
//!
//! This queue lives in memory; the durability issue replaces its storage behind the same
//! `reverse` interface.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use crate::iso8583::{Mti, OriginalData, OwnedMessage};
use crate::net::link::{LateAnswers, Link};

/// Fields of a leg's request carried into its reversal.
const CARRIED: [u16; 12] = [2, 3, 4, 12, 13, 14, 22, 25, 41, 42, 49, 102];

struct Item {
    reversal: OwnedMessage,
    attempts: u32,
}

/// The reversal queue, one ordered lane per link.
pub struct Compensator {
    links: OnceLock<HashMap<String, Arc<Link>>>,
    lanes: Mutex<HashMap<String, VecDeque<Item>>>,
    wake: Notify,
    retry_min: Duration,
    retry_max: Duration,
    queued: std::sync::atomic::AtomicU64,
}

impl Compensator {
    pub fn new(retry_min: Duration, retry_max: Duration) -> Arc<Compensator> {
        Arc::new(Compensator {
            links: OnceLock::new(),
            lanes: Mutex::new(HashMap::new()),
            wake: Notify::new(),
            retry_min,
            retry_max,
            queued: std::sync::atomic::AtomicU64::new(0),
        })
    }

    /// Attach the links (they are created after the compensator, which they report late
    /// answers to) and start one worker per link.
    pub fn start(self: &Arc<Self>, links: HashMap<String, Arc<Link>>, stop: CancellationToken) {
        let names: Vec<String> = links.keys().cloned().collect();
        if self.links.set(links).is_err() {
            return; // already started
        }
        for name in names {
            tokio::spawn(worker(self.clone(), name, stop.clone()));
        }
    }

    /// Queue the reversal of a leg whose request was `leg` on link `link`.
    pub fn reverse(&self, link: &str, leg: &OwnedMessage) {
        let reversal = reversal_of(leg);
        self.queued
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        metrics::counter!("cyberswitch_reversals_queued_total", "link" => link.to_string())
            .increment(1);
        if let Ok(mut lanes) = self.lanes.lock() {
            let lane = lanes.entry(link.to_string()).or_default();
            lane.push_back(Item {
                reversal,
                attempts: 0,
            });
            metrics::gauge!("cyberswitch_saf_depth", "link" => link.to_string())
                .set(lane.len() as f64);
        }
        self.wake.notify_waiters();
    }

    /// Reversals queued since start.
    pub fn queued_total(&self) -> u64 {
        self.queued.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Reversals waiting, over all links.
    pub fn depth(&self) -> usize {
        self.lanes
            .lock()
            .map(|l| l.values().map(VecDeque::len).sum())
            .unwrap_or(0)
    }
}

/// Build the 0400 for a leg: the leg's own fields, a fresh transmission time, and field 90
/// naming the leg (MTI, STAN, transmission time). The STAN is the leg's, so the host matches
/// the answer by the same key.
fn reversal_of(leg: &OwnedMessage) -> OwnedMessage {
    let mut rev = OwnedMessage::new(Mti(*b"0400"));
    for n in CARRIED {
        if let Some(v) = leg.get(n) {
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
    if let Some(stan) = leg.get(11) {
        rev.set(11, stan);
    }
    rev.set_original_data(&OriginalData {
        mti: leg.mti(),
        stan: num(11) as u32, // ok: six digits
        transmission_time: num(7),
        acquirer_id: 0,
        forwarder_id: 0,
    });
    rev
}

async fn worker(saf: Arc<Compensator>, link_name: String, stop: CancellationToken) {
    let Some(link) = saf.links.get().and_then(|l| l.get(&link_name)).cloned() else {
        return;
    };
    let mut backoff = saf.retry_min;
    loop {
        let head = saf.lanes.lock().ok().and_then(|lanes| {
            lanes
                .get(&link_name)
                .and_then(|l| l.front().map(|i| (i.reversal.clone(), i.attempts)))
        });
        let Some((mut reversal, attempts)) = head else {
            tokio::select! {
                _ = stop.cancelled() => return,
                _ = saf.wake.notified() => {}
                _ = tokio::time::sleep(Duration::from_secs(1)) => {}
            }
            continue;
        };
        // First 0400, then advices: 0420, and 0421 for every repeat.
        let mti = match attempts {
            0 => *b"0400",
            1 => *b"0420",
            _ => *b"0421",
        };
        reversal.set_mti(Mti(mti));
        let acknowledged = link.is_up()
            && matches!(link.request(reversal).await,
                Ok(a) if matches!(a.get(39), Some(b"00") | Some(b"25")));
        if let Ok(mut lanes) = saf.lanes.lock() {
            if let Some(lane) = lanes.get_mut(&link_name) {
                if acknowledged {
                    lane.pop_front();
                } else if let Some(front) = lane.front_mut() {
                    front.attempts += 1;
                }
                metrics::gauge!("cyberswitch_saf_depth", "link" => link_name.clone())
                    .set(lane.len() as f64);
            }
        }
        if acknowledged {
            backoff = saf.retry_min;
            continue;
        }
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tokio::time::sleep(backoff) => {}
        }
        backoff = (backoff * 2).min(saf.retry_max);
    }
}

impl LateAnswers for Compensator {
    /// A late approval of a money request is reversed; anything else is only counted.
    fn late_answer(&self, link: &str, request: OwnedMessage, answer: OwnedMessage) {
        let money = matches!(request.mti().class(), 1 | 2)
            && request.get(3).is_some_and(|pc| !pc.starts_with(b"31"));
        if money && answer.get(39) == Some(b"00") {
            tracing::warn!(link, "late approval: reversing");
            self.reverse(link, &request);
        }
    }
}
