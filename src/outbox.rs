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

    /// Every item (of one partner, in one status), oldest first, at most `max`. Pending
    /// ones come from the schedule; the others from the time indexes, read from the oldest
    /// until `max` are found (the store keeps every callback ever sent).
    pub fn list(
        &self,
        partner: Option<&str>,
        status: Option<ItemStatus>,
        max: usize,
    ) -> Result<Vec<Item>, String> {
        if status == Some(ItemStatus::Pending) {
            let ids = self.schedule(|s| s.oldest(partner, max));
            let mut out = Vec::with_capacity(ids.len());
            for id in ids {
                if let Some(item) = self.get(&id)? {
                    out.push(item);
                }
            }
            return Ok(out);
        }
        let prefix = match partner {
            Some(p) => format!("q/{p}/"),
            None => "t/".to_string(),
        };
        let mut out = Vec::new();
        let mut failed = None;
        crate::store::for_each(
            self.journal.store(),
            Cf::Outbox,
            prefix.as_bytes(),
            |key, _| {
                if out.len() >= max {
                    return std::ops::ControlFlow::Break(());
                }
                // …/CREATED/ID: the id is what follows the time's fixed width.
                let rest = key.get(prefix.len()..).unwrap_or_default();
                let id = String::from_utf8_lossy(rest.get(21..).unwrap_or_default());
                match self.get(&id) {
                    Ok(Some(item))
                        if partner.is_none_or(|p| p == item.partner)
                            && status.is_none_or(|s| s == item.status) =>
                    {
                        out.push(item)
                    }
                    Ok(_) => {}
                    Err(e) => {
                        failed = Some(e);
                        return std::ops::ControlFlow::Break(());
                    }
                }
                std::ops::ControlFlow::Continue(())
            },
        )?;
        match failed {
            Some(e) => Err(e),
            None => Ok(out),
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

    /// Deliver what is due until `stop`.
    pub async fn run(self: Arc<Self>, stop: CancellationToken) {
        let gauge = metrics::gauge!("cyberswitch_outbox_pending");
        loop {
            let now = self.clock.now_ms();
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

/// When each pending item may be tried: items by id, each group's items oldest first (only
/// a group's oldest may go: a partner hears `va.reversed` after `va.paid`), and the items
/// that may go — ungrouped ones and each group's oldest — by when they are due. The worker
/// read and parsed every pending item from the store for every batch it sent, so a partner
/// away for a day made its backlog cost in proportion to its square.
#[derive(Default)]
struct Schedule {
    items: std::collections::HashMap<String, Slot>,
    groups: std::collections::HashMap<String, std::collections::BTreeSet<(i64, String)>>,
    ready: std::collections::BTreeSet<(i64, i64, String)>,
}

#[derive(Clone)]
struct Slot {
    created_ms: i64,
    next_at_ms: i64,
    group: Option<String>,
    partner: String,
}

impl Schedule {
    fn len(&self) -> usize {
        self.items.len()
    }

    /// Take in an item as the store now holds it: pending (when it is due next) or not.
    fn set(&mut self, item: &Item) {
        self.remove(&item.id);
        if item.status != ItemStatus::Pending {
            return;
        }
        let slot = Slot {
            created_ms: item.created_ms,
            next_at_ms: item.next_at_ms,
            group: item.group.clone(),
            partner: item.partner.clone(),
        };
        let group = slot.group.clone();
        self.change_group(group.as_deref(), |s| {
            if let Some(g) = &slot.group {
                s.groups
                    .entry(g.clone())
                    .or_default()
                    .insert((slot.created_ms, item.id.clone()));
            }
            s.items.insert(item.id.clone(), slot);
        });
        if group.is_none() {
            self.make_ready(&item.id);
        }
    }

    fn remove(&mut self, id: &str) {
        let Some(slot) = self.items.get(id).cloned() else {
            return;
        };
        if slot.group.is_none() {
            self.ready
                .remove(&(slot.next_at_ms, slot.created_ms, id.to_string()));
            self.items.remove(id);
            return;
        }
        self.change_group(slot.group.as_deref(), |s| {
            if let Some(members) = slot.group.as_ref().and_then(|g| s.groups.get_mut(g)) {
                members.remove(&(slot.created_ms, id.to_string()));
                if members.is_empty() {
                    if let Some(g) = &slot.group {
                        s.groups.remove(g);
                    }
                }
            }
            s.items.remove(id);
        });
    }

    /// Not before `at` (a failed attempt whose outcome could not be written).
    fn retry_at(&mut self, id: &str, at: i64) {
        let Some(slot) = self.items.get(id).cloned() else {
            return;
        };
        let was_ready = self
            .ready
            .remove(&(slot.next_at_ms, slot.created_ms, id.to_string()));
        if let Some(s) = self.items.get_mut(id) {
            s.next_at_ms = at;
        }
        if was_ready {
            self.make_ready(id);
        }
    }

    /// The `max` oldest pending items (of one partner).
    fn oldest(&self, partner: Option<&str>, max: usize) -> Vec<String> {
        let mut found: Vec<(i64, &String)> = self
            .items
            .iter()
            .filter(|(_, s)| partner.is_none_or(|p| p == s.partner))
            .map(|(id, s)| (s.created_ms, id))
            .collect();
        found.sort();
        found
            .into_iter()
            .take(max)
            .map(|(_, id)| id.clone())
            .collect()
    }

    /// Up to `max` ids due by `now`, soonest first, and when the next one falls due.
    fn due(&self, now: i64, max: usize) -> (Vec<String>, Option<i64>) {
        let mut due = Vec::new();
        for (at, _, id) in &self.ready {
            if *at > now {
                return (due, Some(*at));
            }
            if due.len() == max {
                return (due, None);
            }
            due.push(id.clone());
        }
        (due, None)
    }

    /// Change a group's members: its oldest leaves `ready` before, the (maybe new) oldest
    /// enters it after.
    fn change_group(&mut self, group: Option<&str>, change: impl FnOnce(&mut Schedule)) {
        let head = |s: &Schedule| {
            group
                .and_then(|g| s.groups.get(g))
                .and_then(|m| m.first())
                .map(|(_, id)| id.clone())
        };
        if let Some(id) = head(self) {
            if let Some(slot) = self.items.get(&id) {
                self.ready
                    .remove(&(slot.next_at_ms, slot.created_ms, id.clone()));
            }
        }
        change(self);
        if let Some(id) = head(self) {
            self.make_ready(&id);
        }
    }

    fn make_ready(&mut self, id: &str) {
        if let Some(slot) = self.items.get(id) {
            self.ready
                .insert((slot.next_at_ms, slot.created_ms, id.to_string()));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::{Rng, SeedableRng};

    fn item(id: u32, created_ms: i64, next_at_ms: i64, group: Option<u32>) -> Item {
        let mut i = Item::new(
            format!("cb-{id}"),
            "P1",
            "va.paid",
            &serde_json::json!({}),
            created_ms,
        );
        i.next_at_ms = next_at_ms;
        i.group = group.map(|g| format!("order-{g}"));
        i
    }

    /// What the worker did before the schedule: every pending item, oldest first, each
    /// group's oldest only, those due soonest first.
    fn walk(pending: &[Item], now: i64, max: usize) -> (Vec<String>, Option<i64>) {
        let mut pending = pending.to_vec();
        pending.sort_by_key(|i| (i.created_ms, i.id.clone()));
        let mut groups = std::collections::HashSet::new();
        let (mut due, mut next) = (Vec::new(), None::<i64>);
        for item in pending {
            if let Some(g) = &item.group {
                if !groups.insert(g.clone()) {
                    continue;
                }
            }
            if item.next_at_ms <= now {
                due.push(item);
            } else {
                next = Some(next.map_or(item.next_at_ms, |n| n.min(item.next_at_ms)));
            }
        }
        due.sort_by_key(|i| (i.next_at_ms, i.created_ms, i.id.clone()));
        due.truncate(max);
        (due.into_iter().map(|i| i.id).collect(), next)
    }

    fn outbox(store: crate::store::Store) -> Arc<Outbox> {
        let config = Config::from_toml(
            "data_dir = \"x\"\n\
             card_key = \"000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f\"\n\
             [[link]]\nname = \"acq1\"\nkind = \"acquirer\"\nhosts = [\"127.0.0.1:1\"]\n",
            std::path::Path::new("t.toml"),
        )
        .unwrap();
        let sealer = crate::journal::Sealer::from_card_key(&[7u8; 32]);
        let journal = Journal::open(store, sealer, 64).unwrap();
        Outbox::new(
            journal,
            Arc::new(crate::clock::SystemClock),
            Arc::new(config),
        )
    }

    fn ids(items: &[Item]) -> Vec<&str> {
        items.iter().map(|i| i.id.as_str()).collect()
    }

    /// A listing reads the time indexes from the oldest and stops at its limit (it read
    /// and parsed every callback ever sent, for every call); items from before the indexes
    /// are indexed at the first start that has them.
    #[tokio::test]
    async fn listings_go_by_time_per_partner_and_stop_at_their_limit() {
        let store = crate::store::Store::memory();
        let o = outbox(store.clone());
        for (id, partner, at) in [(3, "P1", 30), (1, "P1", 10), (2, "P2", 20), (4, "P1", 40)] {
            let mut i = item(id, at, at, None);
            i.partner = partner.into();
            assert!(o.enqueue(i).await.unwrap());
        }
        // cb-3 delivered.
        let mut done = o.get("cb-3").unwrap().unwrap();
        done.status = ItemStatus::Delivered;
        let mut step = Step::new();
        step.put(
            Cf::Outbox,
            item_key("cb-3"),
            serde_json::to_vec(&done).unwrap(),
        );
        step.delete(Cf::Outbox, pending_key("cb-3"));
        o.journal.commit(step).await.unwrap();
        o.queued(&[done]);

        let check = |o: &Outbox| {
            let list = |p, s, max| o.list(p, s, max).unwrap();
            assert_eq!(ids(&list(Some("P1"), None, 10)), ["cb-1", "cb-3", "cb-4"]);
            assert_eq!(ids(&list(Some("P1"), None, 2)), ["cb-1", "cb-3"]);
            assert_eq!(ids(&list(None, None, 2)), ["cb-1", "cb-2"]);
            let delivered = list(Some("P1"), Some(ItemStatus::Delivered), 10);
            assert_eq!(ids(&delivered), ["cb-3"]);
            let pending = list(Some("P1"), Some(ItemStatus::Pending), 10);
            assert_eq!(ids(&pending), ["cb-1", "cb-4"]);
            assert_eq!(ids(&list(None, Some(ItemStatus::Pending), 1)), ["cb-1"]);
            assert_eq!(o.pending_count(), 3);
        };
        check(&o);

        // A store from before the indexes: they are written at the next start.
        let mut step = Step::new();
        for prefix in [&b"t/"[..], b"q/"] {
            for (k, _) in o.journal.scan(Cf::Outbox, prefix).unwrap() {
                step.delete(Cf::Outbox, k);
            }
        }
        step.delete(Cf::Outbox, INDEXED);
        o.journal.commit(step).await.unwrap();
        assert!(o.list(Some("P1"), None, 10).unwrap().is_empty());
        drop(o);
        check(&outbox(store));
    }

    #[test]
    fn the_schedule_picks_what_a_walk_through_every_pending_item_picks() {
        let mut rng = rand::rngs::StdRng::seed_from_u64(17);
        let mut schedule = Schedule::default();
        let mut pending: Vec<Item> = Vec::new();
        for round in 0..2_000u32 {
            let now = i64::from(round) * 10;
            match rng.random_range(0..5) {
                0 | 1 => {
                    let group = rng.random_bool(0.6).then(|| rng.random_range(0..15));
                    let i = item(round, now, now + rng.random_range(0..300), group);
                    schedule.set(&i);
                    pending.push(i);
                }
                2 if !pending.is_empty() => {
                    // A failed attempt: later.
                    let k = rng.random_range(0..pending.len());
                    pending[k].next_at_ms = now + rng.random_range(1..500);
                    schedule.set(&pending[k]);
                }
                3 if !pending.is_empty() => {
                    // Delivered.
                    let k = rng.random_range(0..pending.len());
                    let mut done = pending.swap_remove(k);
                    done.status = ItemStatus::Delivered;
                    schedule.set(&done);
                }
                _ if !pending.is_empty() => {
                    let k = rng.random_range(0..pending.len());
                    let at = now + rng.random_range(1..500);
                    pending[k].next_at_ms = at;
                    schedule.retry_at(&pending[k].id, at);
                }
                _ => {}
            }
            let max = rng.random_range(1..10);
            let (due, next) = schedule.due(now, max);
            let (want, want_next) = walk(&pending, now, max);
            assert_eq!(due, want, "round {round}");
            if due.len() < max {
                assert_eq!(next, want_next, "round {round}");
            }
            assert_eq!(schedule.len(), pending.len());
        }
    }
}
