//! One link's lane of the store-and-forward queue, indexed so that what the worker and the
//! request path ask of it costs the same with ten items as with a hundred thousand.
//!
//! A lane fills when its host is away (a link down for an hour at a few thousand
//! completions a minute). Going through every item to find the next one due — once per
//! attempt, under the queue's mutex, which the request path takes to publish what it queues
//! — made a backlog cost the switch in proportion to its square. So the lane keeps:
//!
//! - its items in queueing order (their keys: link, sequence number);
//! - each leg's items in that order: only a leg's first item may be tried (a completion
//!   then its reversal reach the host in that order);
//! - the legs' first items that may be tried now (`ready`, in queueing order) and those
//!   waiting for their back-off (`waiting`, by when). An item's `next` only ever changes
//!   through [`Lane::insert`], so the two sets are kept exact on every change.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use tokio::time::Instant;

use crate::records::saf::Item;

pub type Key = Vec<u8>;

/// A leg of a transaction: `(transaction key, leg index)`.
type LegId = (String, usize);

#[derive(Default)]
pub struct Lane {
    items: BTreeMap<Key, Item>,
    legs: HashMap<LegId, BTreeSet<Key>>,
    ready: BTreeSet<Key>,
    waiting: BTreeSet<(Instant, Key)>,
}

impl Lane {
    pub fn len(&self) -> usize {
        self.items.len()
    }

    pub fn is_empty(&self) -> bool {
        self.items.is_empty()
    }

    /// Add an item, or change the one under `key`.
    pub fn insert(&mut self, key: Key, item: Item) {
        if let Some(old) = self.items.get(&key) {
            let leg = leg_of(old);
            self.change_leg(&leg, |lane| {
                lane.forget(&key);
            });
        }
        let leg = leg_of(&item);
        self.change_leg(&leg, |lane| {
            lane.legs
                .entry(leg.clone())
                .or_default()
                .insert(key.clone());
            lane.items.insert(key, item);
        });
    }

    /// Take the item under `key` out of the lane.
    pub fn remove(&mut self, key: &[u8]) -> Option<Item> {
        let leg = leg_of(self.items.get(key)?);
        let mut removed = None;
        self.change_leg(&leg, |lane| removed = lane.forget(key));
        removed
    }

    /// The next item to try at `now`: the first in queueing order that is due and first of
    /// its leg. Otherwise when the next one falls due (`Err(Some(at))`), or `Err(None)`
    /// when the lane is empty.
    pub fn next_due(&mut self, now: Instant) -> Result<(Key, Item), Option<Instant>> {
        while let Some(first) = self.waiting.first() {
            if first.0 > now {
                break;
            }
            if let Some((_, key)) = self.waiting.pop_first() {
                self.ready.insert(key);
            }
        }
        if let Some(key) = self.ready.first() {
            if let Some(item) = self.items.get(key) {
                return Ok((key.clone(), item.clone()));
            }
        }
        Err(self.waiting.first().map(|(at, _)| *at))
    }

    /// Is an item of this leg still queued?
    pub fn holds_leg(&self, txn: &str, leg: usize) -> bool {
        self.legs.contains_key(&(txn.to_string(), leg))
    }

    /// When the first item still queued was queued (ms since the epoch).
    pub fn oldest_queued_ms(&self) -> Option<i64> {
        self.items.values().next().map(|i| i.queued_ms)
    }

    /// Change what leg `leg` holds: its first item is taken out of the schedule before and
    /// the (maybe new) first item put back after, so `ready` and `waiting` hold exactly the
    /// legs' first items.
    fn change_leg(&mut self, leg: &LegId, change: impl FnOnce(&mut Lane)) {
        if let Some(head) = self.head_of(leg) {
            self.unschedule(&head);
        }
        change(self);
        if let Some(head) = self.head_of(leg) {
            self.schedule(head);
        }
        debug_assert_eq!(
            self.ready.len() + self.waiting.len(),
            self.legs.len(),
            "every leg in the lane has exactly its first item scheduled"
        );
    }

    /// Drop `key` from the items and from its leg (not from the schedule).
    fn forget(&mut self, key: &[u8]) -> Option<Item> {
        let item = self.items.remove(key)?;
        let leg = leg_of(&item);
        if let Some(keys) = self.legs.get_mut(&leg) {
            keys.remove(key);
            if keys.is_empty() {
                self.legs.remove(&leg);
            }
        }
        Some(item)
    }

    fn head_of(&self, leg: &LegId) -> Option<Key> {
        self.legs.get(leg)?.first().cloned()
    }

    fn schedule(&mut self, key: Key) {
        match self.items.get(&key).and_then(|i| i.next) {
            Some(at) => {
                self.waiting.insert((at, key));
            }
            None => {
                self.ready.insert(key);
            }
        }
    }

    fn unschedule(&mut self, key: &Key) {
        if !self.ready.remove(key) {
            if let Some(at) = self.items.get(key).and_then(|i| i.next) {
                self.waiting.remove(&(at, key.clone()));
            }
        }
    }
}

fn leg_of(item: &Item) -> LegId {
    (item.txn.clone(), item.leg)
}

/// What the lane answered before it was indexed, by going through every item in order: the
/// oracle the lane is tested against, and the baseline of `benches/saf.rs`.
#[doc(hidden)]
pub fn walk_every_item(items: &BTreeMap<Key, Item>, now: Instant) -> Result<Key, Option<Instant>> {
    let mut seen = std::collections::HashSet::new();
    let mut soonest: Option<Instant> = None;
    for (k, i) in items {
        if !seen.insert((i.txn.as_str(), i.leg)) {
            continue; // behind an earlier item of its leg
        }
        match i.next {
            Some(at) if at > now => soonest = Some(soonest.map_or(at, |s| s.min(at))),
            _ => return Ok(k.clone()),
        }
    }
    Err(soonest)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn item(txn: &str, leg: usize) -> Item {
        Item {
            txn: txn.into(),
            leg,
            queued_ms: 1_000,
            attempts: 0,
            ..Item::unreadable()
        }
    }

    fn key(seq: u64) -> Key {
        seq.to_be_bytes().to_vec()
    }

    fn later(mut i: Item, at: Instant) -> Item {
        i.next = Some(at);
        i
    }

    #[test]
    fn items_go_in_queueing_order_and_a_legs_second_item_waits_for_its_first() {
        let now = Instant::now();
        let mut lane = Lane::default();
        lane.insert(key(1), item("a", 0));
        lane.insert(key(2), item("a", 0)); // behind key 1 (the same leg)
        lane.insert(key(3), item("b", 0));
        assert_eq!(lane.next_due(now).map(|d| d.0), Ok(key(1)));
        // Key 1 on its back-off: key 2 is still behind it, key 3 goes.
        let t = now + Duration::from_secs(5);
        lane.insert(key(1), later(item("a", 0), t));
        assert_eq!(lane.next_due(now).map(|d| d.0), Ok(key(3)));
        lane.remove(&key(3));
        assert_eq!(lane.next_due(now).map(|d| d.0), Err(Some(t)));
        // Due again once its time has come.
        assert_eq!(lane.next_due(t).map(|d| d.0), Ok(key(1)));
        lane.remove(&key(1));
        assert_eq!(lane.next_due(now).map(|d| d.0), Ok(key(2)));
        assert!(lane.holds_leg("a", 0));
        lane.remove(&key(2));
        assert!(!lane.holds_leg("a", 0));
        assert_eq!(lane.next_due(now).map(|d| d.0), Err(None));
        assert_eq!(lane.len(), 0);
    }

    #[test]
    fn among_items_due_the_first_queued_goes_first() {
        let now = Instant::now();
        let mut lane = Lane::default();
        lane.insert(key(1), later(item("a", 0), now + Duration::from_secs(2)));
        lane.insert(key(2), later(item("b", 0), now + Duration::from_secs(1)));
        lane.insert(key(3), item("c", 0));
        let at = now + Duration::from_secs(3);
        let mut order = Vec::new();
        while let Ok((k, _)) = lane.next_due(at) {
            order.push(k.clone());
            lane.remove(&k);
        }
        assert_eq!(order, vec![key(1), key(2), key(3)]);
    }

    /// The indexed lane against the plain walk it replaced, over random changes.
    #[test]
    fn the_lane_answers_as_a_walk_through_every_item_would() {
        use rand::{Rng, SeedableRng};
        let mut rng = rand::rngs::StdRng::seed_from_u64(24);
        let start = Instant::now();
        let mut lane = Lane::default();
        let mut plain: BTreeMap<Key, Item> = BTreeMap::new();
        let mut seq = 0u64;
        for round in 0..5_000u64 {
            let now = start + Duration::from_millis(round * 10);
            match rng.random_range(0..4) {
                0 | 1 => {
                    seq += 1;
                    let mut i = item(&format!("t{}", rng.random_range(0..20)), 0);
                    if rng.random_bool(0.5) {
                        i.next = Some(now + Duration::from_millis(rng.random_range(0..200)));
                    }
                    lane.insert(key(seq), i.clone());
                    plain.insert(key(seq), i);
                }
                2 => {
                    if let Ok((k, mut i)) = lane.next_due(now) {
                        i.next = Some(now + Duration::from_millis(rng.random_range(1..300)));
                        lane.insert(k.clone(), i.clone());
                        plain.insert(k, i);
                    }
                }
                _ => {
                    if let Ok((k, _)) = lane.next_due(now) {
                        lane.remove(&k);
                        plain.remove(&k);
                    }
                }
            }
            assert_eq!(
                lane.next_due(now).map(|d| d.0),
                walk_every_item(&plain, now),
                "round {round}"
            );
            assert_eq!(lane.len(), plain.len());
        }
    }
}
