//! The partner callback outbox: signed HTTP callbacks (F17 paid orders, F15 daily
//! statements), durable in RocksDB and retried with back-off until the partner answers 2xx.
//!
//! - An item is written in the same journal step as the change it reports ([`Outbox::put`]:
//!   an order paid and its callback land together or not at all), or on its own, synced
//!   ([`Outbox::enqueue`]). Ids are chosen by the caller and make enqueueing idempotent (a
//!   statement queued twice is one item).
//! - One worker ([`Outbox::run`]) delivers what is due, at most `outbox.concurrency` at once;
//!   a failure (no connection, a timeout, any status but 2xx) puts the item back with a
//!   doubled delay (`retry_min_ms` … `retry_max_ms`, jittered). Nothing is ever dropped: an
//!   item stays pending until delivered, visible in `cyberswitch api outbox`.
//! - Delivery is at least once: a crash between the partner's 2xx and the step that records
//!   it sends the item again; every attempt carries the same `X-Cyberswitch-Id`.
//! - An operator may send any item again ([`Outbox::resend`]), delivered or not.
//!
//! - Delivered items are removed `outbox.keep_delivered_days` after delivery
//!   ([`Outbox::prune_delivered`], hourly, oldest first); pending ones never are.
//!
//! Keys in [`Cf::Outbox`]: `i/ID` → the item (JSON); `p/ID` → () while it is pending.

use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio::sync::{Mutex, Notify};
use tokio_util::sync::CancellationToken;

use crate::callback::{self, HttpTarget};
use crate::clock::Clock;
use crate::config::Config;
use crate::journal::{Entry, EntryKind, Journal, Step};
use crate::store::Cf;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ItemStatus {
    Pending,
    Delivered,
}

/// One callback.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Item {
    pub id: String,
    pub partner: String,
    /// `va.paid`, `card.statement`.
    pub event: String,
    /// The JSON body, signed exactly as stored.
    pub body: String,
    pub created_ms: i64,
    pub status: ItemStatus,
    pub attempts: u32,
    pub next_at_ms: i64,
    #[serde(default)]
    pub last_status: Option<u16>,
    #[serde(default)]
    pub last_error: Option<String>,
    #[serde(default)]
    pub delivered_ms: Option<i64>,
    /// Times an operator asked for it again.
    #[serde(default)]
    pub resends: u32,
    /// Items of one group (one order) are delivered one at a time, oldest first: a partner
    /// hears `va.reversed` only after `va.paid`.
    #[serde(default)]
    pub group: Option<String>,
}

impl Item {
    pub fn new(
        id: String,
        partner: &str,
        event: &str,
        body: &serde_json::Value,
        now_ms: i64,
    ) -> Item {
        Item {
            id,
            partner: partner.to_string(),
            event: event.to_string(),
            body: body.to_string(),
            created_ms: now_ms,
            status: ItemStatus::Pending,
            attempts: 0,
            next_at_ms: now_ms,
            last_status: None,
            last_error: None,
            delivered_ms: None,
            resends: 0,
            group: None,
        }
    }

    /// In `group`: delivered after the group's older items.
    pub fn in_group(mut self, group: &str) -> Item {
        self.group = Some(group.to_string());
        self
    }
}

fn item_key(id: &str) -> Vec<u8> {
    format!("i/{id}").into_bytes()
}

fn pending_key(id: &str) -> Vec<u8> {
    format!("p/{id}").into_bytes()
}

/// Every item by creation time (`t/…`), and each partner's (`q/PARTNER/…`): what a listing
/// walks, from the oldest, stopping at its limit.
fn time_key(item: &Item) -> Vec<u8> {
    format!("t/{:020}/{}", item.created_ms.max(0), item.id).into_bytes()
}

/// A `t/` key's creation time and id.
fn parse_time_key(key: &[u8]) -> Option<(i64, &str)> {
    parse_cursor(std::str::from_utf8(key.strip_prefix(b"t/")?).ok()?)
}

/// A listing's cursor (`CREATED/ID`, as the time indexes hold it): creation time and id.
pub fn parse_cursor(text: &str) -> Option<(i64, &str)> {
    let (created, id) = text.split_once('/')?;
    Some((created.parse().ok()?, id))
}

/// How often delivered items past their keeping are looked for, and at most how many go
/// in one step.
const PRUNE_EVERY_MS: i64 = 3_600_000;
const PRUNE_MAX: usize = 10_000;

fn partner_time_key(item: &Item) -> Vec<u8> {
    format!(
        "q/{}/{:020}/{}",
        item.partner,
        item.created_ms.max(0),
        item.id
    )
    .into_bytes()
}

/// In `Cf::Outbox`: the time indexes hold every item (written once, by the first start
/// that has them, for the items queued before).
const INDEXED: &[u8] = b"m/time-indexed";

pub struct Outbox {
    journal: Arc<Journal>,
    clock: Arc<dyn Clock>,
    config: Arc<Config>,
    wake: Notify,
    /// Changes of an item one at a time (the worker's outcome against an operator's resend).
    lock: Mutex<()>,
    /// When each pending item is due, kept with every change (the store is the truth; this
    /// is read from it at start).
    schedule: std::sync::Mutex<Schedule>,
}

impl Outbox {
    pub fn new(journal: Arc<Journal>, clock: Arc<dyn Clock>, config: Arc<Config>) -> Arc<Outbox> {
        let mut schedule = Schedule::default();
        match journal.scan(Cf::Outbox, b"p/") {
            Ok(pending) => {
                for (k, _) in pending {
                    let id = String::from_utf8_lossy(k.get(2..).unwrap_or_default()).into_owned();
                    match journal
                        .get(Cf::Outbox, &item_key(&id))
                        .map(|raw| raw.and_then(|raw| serde_json::from_slice::<Item>(&raw).ok()))
                    {
                        Ok(Some(item)) => schedule.set(&item),
                        _ => tracing::error!(id, "outbox: a pending item cannot be read"),
                    }
                }
            }
            Err(e) => tracing::error!(error = %e, "outbox: the pending items cannot be read"),
        }
        index_items_queued_before(&journal);
        Arc::new(Outbox {
            journal,
            clock,
            config,
            wake: Notify::new(),
            lock: Mutex::new(()),
            schedule: std::sync::Mutex::new(schedule),
        })
    }

    fn schedule<T>(&self, f: impl FnOnce(&mut Schedule) -> T) -> T {
        // Every change is a few map operations that leave it whole: a panicking holder
        // cannot have left it half-changed.
        let mut s = self.schedule.lock().unwrap_or_else(|p| p.into_inner());
        f(&mut s)
    }

    /// Add `item` to `step` (pending). The caller commits the step, then hands the items
    /// it queued to [`Outbox::queued`].
    pub fn put(step: &mut Step, item: &Item) {
        step.put(
            Cf::Outbox,
            item_key(&item.id),
            serde_json::to_vec(item).unwrap_or_default(),
        );
        step.put(Cf::Outbox, pending_key(&item.id), Vec::new());
        step.put(Cf::Outbox, time_key(item), Vec::new());
        step.put(Cf::Outbox, partner_time_key(item), Vec::new());
        step.append(Entry::new(
            EntryKind::Txn,
            &format!("outbox/{}", item.id),
            "outbox",
            format!("callback {} to {} queued", item.event, item.partner),
        ));
    }

    /// Items put in a step that is now committed: scheduled, and the worker looks now.
    pub fn queued(&self, items: &[Item]) {
        self.schedule(|s| items.iter().for_each(|i| s.set(i)));
        self.wake.notify_one();
    }

    /// Queue `item` on its own, synced; `false` when an item with its id exists already.
    pub async fn enqueue(&self, item: Item) -> Result<bool, String> {
        let _one = self.lock.lock().await;
        if self.get(&item.id)?.is_some() {
            return Ok(false);
        }
        let mut step = Step::new();
        Outbox::put(&mut step, &item);
        step.synced();
        self.journal.commit(step).await.map_err(|e| e.to_string())?;
        self.queued(std::slice::from_ref(&item));
        Ok(true)
    }

    pub fn get(&self, id: &str) -> Result<Option<Item>, String> {
        match self.journal.get(Cf::Outbox, &item_key(id))? {
            Some(raw) => serde_json::from_slice(&raw)
                .map(Some)
                .map_err(|e| format!("outbox item {id}: {e}")),
            None => Ok(None),
        }
    }

    /// Every item (of one partner, in one status), oldest first, at most `max`.
    pub fn list(
        &self,
        partner: Option<&str>,
        status: Option<ItemStatus>,
        max: usize,
    ) -> Result<Vec<Item>, String> {
        Ok(self.page(partner, status, None, max)?.0)
    }

    /// A page of the items (of one partner, in one status), oldest first: at most `max`
    /// after the cursor `after`, and the cursor of the next page when more follow
    /// (`CREATED/ID`, the item's place in the time indexes). Pending ones come from the
    /// schedule; the others from the time indexes, read from the cursor until the page is
    /// full and one more is found.
    pub fn page(
        &self,
        partner: Option<&str>,
        status: Option<ItemStatus>,
        after: Option<&str>,
        max: usize,
    ) -> Result<(Vec<Item>, Option<String>), String> {
        let after = match after {
            Some(text) => Some(parse_cursor(text).ok_or("after: the `next` of a listing")?),
            None => None,
        };
        if status == Some(ItemStatus::Pending) {
            let mut found = self.schedule(|s| s.oldest(partner, after, max.saturating_add(1)));
            let more = found.len() > max;
            found.truncate(max);
            let next = more
                .then(|| found.last().map(|(at, id)| format!("{at:020}/{id}")))
                .flatten();
            let mut out = Vec::with_capacity(found.len());
            for (_, id) in found {
                if let Some(item) = self.get(&id)? {
                    out.push(item);
                }
            }
            return Ok((out, next));
        }
        let prefix = match partner {
            Some(p) => format!("q/{p}/"),
            None => "t/".to_string(),
        };
        let mut start = prefix.clone().into_bytes();
        if let Some((at, id)) = after {
            start.extend_from_slice(format!("{at:020}/{id}").as_bytes());
            start.push(0);
        }
        let mut out = Vec::new();
        let (mut more, mut next) = (false, None);
        let mut failed = None;
        self.journal
            .store()
            .for_each_under(Cf::Outbox, prefix.as_bytes(), &start, |key, _| {
                // …/CREATED/ID: the id is what follows the time's fixed width.
                let rest = key.get(prefix.len()..).unwrap_or_default();
                let Some((created, id)) = std::str::from_utf8(rest).ok().and_then(parse_cursor)
                else {
                    return std::ops::ControlFlow::Continue(());
                };
                match self.get(id) {
                    // The key of an item written again at another time since (the pruning
                    // walk removes it): the item is listed at its own time.
                    Ok(Some(item)) if item.created_ms.max(0) != created => {}
                    Ok(Some(item))
                        if partner.is_none_or(|p| p == item.partner)
                            && status.is_none_or(|s| s == item.status) =>
                    {
                        if out.len() == max {
                            more = true;
                            return std::ops::ControlFlow::Break(());
                        }
                        // The cursor is the key read (the item's place in this index).
                        next = Some(String::from_utf8_lossy(rest).into_owned());
                        out.push(item)
                    }
                    Ok(_) => {}
                    Err(e) => {
                        failed = Some(e);
                        return std::ops::ControlFlow::Break(());
                    }
                }
                std::ops::ControlFlow::Continue(())
            })?;
        match failed {
            Some(e) => Err(e),
            None => Ok((out, if more { next } else { None })),
        }
    }

    /// Items not delivered yet.
    pub fn pending_count(&self) -> usize {
        self.schedule(|s| s.len())
    }

    /// An operator sends an item again (delivered or not), now. `None`: no such item.
    pub async fn resend(&self, id: &str, who: &str) -> Result<Option<Item>, String> {
        let _one = self.lock.lock().await;
        let Some(mut item) = self.get(id)? else {
            return Ok(None);
        };
        item.status = ItemStatus::Pending;
        item.next_at_ms = self.clock.now_ms();
        item.resends += 1;
        let mut step = Step::new();
        step.put(
            Cf::Outbox,
            item_key(id),
            serde_json::to_vec(&item).unwrap_or_default(),
        );
        step.put(Cf::Outbox, pending_key(id), Vec::new());
        step.append(Entry::new(
            EntryKind::Txn,
            &format!("outbox/{id}"),
            "outbox",
            format!("callback sent again by {who}"),
        ));
        step.synced();
        self.journal.commit(step).await.map_err(|e| e.to_string())?;
        self.queued(std::slice::from_ref(&item));
        Ok(Some(item))
    }

    /// Deliver what is due until `stop`; once an hour, remove what is past its keeping.
    pub async fn run(self: Arc<Self>, stop: CancellationToken) {
        let gauge = metrics::gauge!("cyberswitch_outbox_pending");
        let mut pruned_at = i64::MIN;
        loop {
            let now = self.clock.now_ms();
            if now.saturating_sub(pruned_at) >= PRUNE_EVERY_MS {
                pruned_at = now;
                match self.prune_delivered().await {
                    Ok(0) => {}
                    Ok(n) => tracing::info!(
                        removed = n,
                        "outbox: delivered callbacks past their keeping removed"
                    ),
                    Err(e) => tracing::error!(error = %e, "outbox: delivered callbacks not pruned"),
                }
            }
            let (due, next) = self.due(now);
            gauge.set(self.pending_count() as f64);
            if !due.is_empty() {
                let attempts = due.into_iter().map(|item| {
                    let me = self.clone();
                    async move { me.attempt(item).await }
                });
                futures::future::join_all(attempts).await;
                continue;
            }
            // Nothing due: wait for the next one (at most a second: resends and items queued
            // by a step wake the worker, a clock jump does not).
            let wait = next
                .map(|at| Duration::from_millis(u64::try_from(at - now).unwrap_or(0)))
                .unwrap_or(Duration::from_secs(1))
                .min(Duration::from_secs(1));
            tokio::select! {
                _ = stop.cancelled() => return,
                _ = self.wake.notified() => {}
                _ = tokio::time::sleep(wait) => {}
            }
        }
    }

    /// Remove the delivered items delivered more than `outbox.keep_delivered_days` ago, at
    /// most [`PRUNE_MAX`] per call, oldest first (through the time index, which stops at the
    /// first item created after the cutoff: nothing delivered later is read). Returns how
    /// many.
    pub async fn prune_delivered(&self) -> Result<usize, String> {
        let days = self.config.outbox.keep_delivered_days;
        if days == 0 {
            return Ok(0);
        }
        let _one = self.lock.lock().await;
        let cutoff = self
            .clock
            .now_ms()
            .saturating_sub(i64::try_from(days.saturating_mul(86_400_000)).unwrap_or(i64::MAX));
        let mut step = Step::new();
        let (mut removed, mut stale) = (0usize, 0usize);
        let mut failed = None;
        crate::store::for_each(self.journal.store(), Cf::Outbox, b"t/", |k, _| {
            let Some((created, id)) = parse_time_key(k) else {
                return std::ops::ControlFlow::Continue(());
            };
            if created >= cutoff || removed + stale >= PRUNE_MAX {
                return std::ops::ControlFlow::Break(());
            }
            match self.get(id) {
                // An index key of an item written again since under the same id (at another
                // time): it names nothing now.
                Ok(Some(item)) if item.created_ms.max(0) != created => {
                    step.delete(Cf::Outbox, k.to_vec());
                    let mut was = item.clone();
                    was.created_ms = created;
                    step.delete(Cf::Outbox, partner_time_key(&was));
                    stale += 1;
                }
                Ok(Some(item))
                    if item.status == ItemStatus::Delivered
                        && item.delivered_ms.is_some_and(|d| d < cutoff) =>
                {
                    step.delete(Cf::Outbox, item_key(&item.id));
                    step.delete(Cf::Outbox, time_key(&item));
                    step.delete(Cf::Outbox, partner_time_key(&item));
                    removed += 1;
                }
                // Gone: its index key names nothing.
                Ok(None) => {
                    step.delete(Cf::Outbox, k.to_vec());
                    stale += 1;
                }
                // Pending (kept until delivered), or delivered since the cutoff.
                Ok(Some(_)) => {}
                Err(e) => {
                    failed = Some(e);
                    return std::ops::ControlFlow::Break(());
                }
            }
            std::ops::ControlFlow::Continue(())
        })?;
        if let Some(e) = failed {
            return Err(e);
        }
        if !step.is_empty() {
            step.append(Entry::new(
                EntryKind::Txn,
                "outbox/prune",
                "outbox",
                format!("{removed} delivered callbacks removed, {days} days after delivery; {stale} stale index keys"),
            ));
            self.journal.commit(step).await.map_err(|e| e.to_string())?;
        }
        Ok(removed)
    }

    /// Pending items due by `now` (earliest first, at most `concurrency`), and when the next
    /// one not yet due is. An item the store no longer holds as pending is dropped from the
    /// schedule.
    fn due(&self, now: i64) -> (Vec<Item>, Option<i64>) {
        let max = self.config.outbox.concurrency.max(1);
        let (ids, next) = self.schedule(|s| s.due(now, max));
        let mut due = Vec::with_capacity(ids.len());
        for id in ids {
            match self.get(&id) {
                Ok(Some(item)) if item.status == ItemStatus::Pending => due.push(item),
                Ok(_) => self.schedule(|s| s.remove(&id)),
                Err(e) => {
                    tracing::error!(id, error = %e, "outbox: an item cannot be read; tried later");
                    self.schedule(|s| s.retry_at(&id, now + self.backoff_ms(1)));
                }
            }
        }
        (due, next)
    }

    /// One delivery attempt of `item`, and its outcome recorded.
    async fn attempt(&self, item: Item) {
        let outcome = self.send(&item).await;
        let result = match &outcome {
            Ok(_) => "delivered",
            Err(_) => "failed",
        };
        metrics::counter!("cyberswitch_outbox_attempts_total", "result" => result).increment(1);
        let _one = self.lock.lock().await;
        // Read again: an operator may have resent it meanwhile (then it stays pending).
        let Ok(Some(mut now_item)) = self.get(&item.id) else {
            return;
        };
        let now = self.clock.now_ms();
        now_item.attempts += 1;
        let mut step = Step::new();
        match outcome {
            Ok(status) => {
                now_item.last_status = Some(status);
                now_item.last_error = None;
                if now_item.resends == item.resends {
                    now_item.status = ItemStatus::Delivered;
                    now_item.delivered_ms = Some(now);
                    step.delete(Cf::Outbox, pending_key(&item.id));
                }
                step.append(Entry::new(
                    EntryKind::Txn,
                    &format!("outbox/{}", item.id),
                    "outbox",
                    format!(
                        "callback delivered ({status}) after {} attempts",
                        now_item.attempts
                    ),
                ));
            }
            Err((status, why)) => {
                now_item.last_status = status;
                tracing::info!(id = %item.id, partner = %item.partner, attempts = now_item.attempts, error = %why, "outbox: callback not delivered, retried later");
                now_item.last_error = Some(why);
                now_item.next_at_ms = now + self.backoff_ms(now_item.attempts);
            }
        }
        step.put(
            Cf::Outbox,
            item_key(&item.id),
            serde_json::to_vec(&now_item).unwrap_or_default(),
        );
        if let Err(e) = self.journal.commit(step).await {
            // Not recorded: it is sent again, which the id lets the partner recognise.
            tracing::error!(id = %item.id, error = %e, "outbox: outcome not recorded");
            self.schedule(|s| s.retry_at(&item.id, now + self.backoff_ms(now_item.attempts)));
            return;
        }
        self.schedule(|s| s.set(&now_item));
    }

    /// POST the item to its partner; the 2xx status, or the status (if any) and why not.
    async fn send(&self, item: &Item) -> Result<u16, (Option<u16>, String)> {
        let partner = self
            .config
            .partner(&item.partner)
            .ok_or((None, format!("partner {} is not configured", item.partner)))?;
        let url = partner
            .callback_url
            .as_deref()
            .ok_or((None, "the partner has no callback_url".to_string()))?;
        let secret = partner
            .secret
            .as_ref()
            .ok_or((None, "the partner has no secret".to_string()))?;
        let target = HttpTarget::parse(url).map_err(|e| (None, e))?;
        let timeout = Duration::from_millis(self.config.outbox.timeout_ms);
        match callback::post(
            &target,
            secret.expose().as_bytes(),
            &item.id,
            &item.event,
            item.body.as_bytes(),
            timeout,
        )
        .await
        {
            Ok(s) if (200..300).contains(&s) => Ok(s),
            Ok(s) => Err((Some(s), format!("the partner answered {s}"))),
            Err(e) => Err((None, e)),
        }
    }

    /// The wait after the `attempts`-th failure: doubled each time, capped, ±20 % jitter
    /// (so that a partner coming back is not hit by every item at once).
    fn backoff_ms(&self, attempts: u32) -> i64 {
        let o = &self.config.outbox;
        let base = o
            .retry_min_ms
            .saturating_mul(1u64 << attempts.saturating_sub(1).min(30))
            .min(o.retry_max_ms);
        let jitter = rand::random_range(0.8..1.2);
        i64::try_from((base as f64 * jitter) as u64).unwrap_or(i64::MAX) // ok: a delay in ms
    }
}

/// Write the time indexes of the items queued before the store had them, once.
fn index_items_queued_before(journal: &Journal) {
    match journal.get(Cf::Outbox, INDEXED) {
        Ok(Some(_)) => return,
        Ok(None) => {}
        Err(e) => {
            tracing::error!(error = %e, "outbox: cannot read the index marker");
            return;
        }
    }
    let mut step = Step::new();
    let mut indexed = 0usize;
    let visited = crate::store::for_each(journal.store(), Cf::Outbox, b"i/", |_, raw| {
        if let Ok(item) = serde_json::from_slice::<Item>(raw) {
            step.put(Cf::Outbox, time_key(&item), Vec::new());
            step.put(Cf::Outbox, partner_time_key(&item), Vec::new());
            indexed += 1;
            if indexed.is_multiple_of(10_000) {
                // In steps of a bounded size (a store may hold millions).
                journal.submit_now(std::mem::take(&mut step));
            }
        }
        std::ops::ControlFlow::Continue(())
    });
    if let Err(e) = visited {
        tracing::error!(error = %e, "outbox: items not indexed by time");
        return;
    }
    step.put(Cf::Outbox, INDEXED, Vec::new());
    if indexed > 0 {
        tracing::info!(
            items = indexed,
            "outbox: items queued before indexed by time"
        );
    }
    // In the writer's order, before anything queued after it; lost with a crash, it is
    // written again at the next start.
    journal.submit_now(step);
}

#[path = "outbox_schedule.rs"]
mod schedule;
use schedule::Schedule;

#[cfg(test)]
#[path = "outbox_tests.rs"]
mod tests;
