//! Tests of [`super`] (the outbox's schedule and listings).

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

/// Delivered callbacks go `keep_delivered_days` (90 by default) after their delivery, with
/// their index keys; pending ones stay however old, as do those delivered since the cutoff.
#[tokio::test]
async fn delivered_callbacks_go_after_their_keeping_and_pending_ones_stay() {
    let o = outbox(crate::store::Store::memory());
    let day = 86_400_000;
    let now = o.clock.now_ms();
    // (id, created days ago, delivered days ago)
    let cases = [
        (1, 200, Some(199)),
        (2, 120, None),
        (3, 100, Some(80)),
        (4, 95, Some(91)),
        (5, 10, Some(9)),
    ];
    for (id, created, delivered) in cases {
        let mut i = item(id, now - created * day, now, None);
        i.partner = if id % 2 == 0 {
            "P2".into()
        } else {
            "P1".into()
        };
        assert!(o.enqueue(i.clone()).await.unwrap());
        if let Some(d) = delivered {
            i.status = ItemStatus::Delivered;
            i.delivered_ms = Some(now - d * day);
            let mut step = Step::new();
            step.put(Cf::Outbox, item_key(&i.id), serde_json::to_vec(&i).unwrap());
            step.delete(Cf::Outbox, pending_key(&i.id));
            o.journal.commit(step).await.unwrap();
            o.queued(&[i]);
        }
    }
    assert_eq!(o.prune_delivered().await.unwrap(), 2);
    assert_eq!(
        o.prune_delivered().await.unwrap(),
        0,
        "nothing more to remove"
    );
    let left: Vec<String> = o
        .list(None, None, 10)
        .unwrap()
        .into_iter()
        .map(|i| i.id)
        .collect();
    assert_eq!(left, ["cb-2", "cb-3", "cb-5"]);
    assert!(o.get("cb-1").unwrap().is_none() && o.get("cb-4").unwrap().is_none());
    // The partner index went with them.
    assert_eq!(ids(&o.list(Some("P2"), None, 10).unwrap()), ["cb-2"]);
    assert_eq!(o.journal.scan(Cf::Outbox, b"q/").unwrap().len(), 3);
    assert_eq!(o.journal.scan(Cf::Outbox, b"t/").unwrap().len(), 3);
    assert_eq!(o.pending_count(), 1);
}

/// An item written again under its id at another time (a `put` replaces) leaves index keys
/// under its first time: the pruning walk removes them and keeps the item.
#[tokio::test]
async fn index_keys_of_an_item_written_again_are_removed_by_the_pruning_walk() {
    let o = outbox(crate::store::Store::memory());
    let day = 86_400_000;
    let now = o.clock.now_ms();
    let first = item(1, now - 200 * day, now, None);
    let mut step = Step::new();
    Outbox::put(&mut step, &first);
    o.journal.commit(step).await.unwrap();
    let again = item(1, now - 100 * day, now, None);
    let mut step = Step::new();
    Outbox::put(&mut step, &again);
    o.journal.commit(step).await.unwrap();
    let between = item(2, now - 150 * day, now, None);
    assert!(o.enqueue(between).await.unwrap());
    assert_eq!(o.journal.scan(Cf::Outbox, b"t/").unwrap().len(), 3);
    // Listed a page of one at a time, each item once, at its own time (the stale key of
    // cb-1 neither lists it early nor moves the cursor past cb-2).
    let (mut seen, mut after) = (Vec::new(), None::<String>);
    loop {
        let (page, next) = o.page(None, None, after.as_deref(), 1).unwrap();
        seen.extend(page.into_iter().map(|i| i.id));
        match next {
            Some(n) => after = Some(n),
            None => break,
        }
    }
    assert_eq!(seen, ["cb-2", "cb-1"]);
    assert!(o.page(None, None, Some("not a cursor"), 1).is_err());
    assert_eq!(
        o.prune_delivered().await.unwrap(),
        0,
        "the items are pending"
    );
    let between = o.get("cb-2").unwrap().unwrap();
    assert_eq!(
        o.journal.scan(Cf::Outbox, b"t/").unwrap(),
        vec![(time_key(&between), vec![]), (time_key(&again), vec![])]
    );
    assert_eq!(
        o.journal.scan(Cf::Outbox, b"q/").unwrap(),
        vec![
            (partner_time_key(&between), vec![]),
            (partner_time_key(&again), vec![])
        ]
    );
    assert_eq!(o.get("cb-1").unwrap().unwrap().created_ms, again.created_ms);
}

/// Listings come a page at a time, pending ones (from the schedule) and the rest (from the
/// time indexes) alike: the pages together are the whole listing, and `next` is given only
/// while more follow.
#[tokio::test]
async fn listings_come_a_page_at_a_time() {
    let o = outbox(crate::store::Store::memory());
    for id in 0..7u32 {
        let mut i = item(id, 1_000 + i64::from(id % 3) * 10, 0, None);
        i.partner = if id % 2 == 0 {
            "P1".into()
        } else {
            "P2".into()
        };
        assert!(o.enqueue(i).await.unwrap());
    }
    let all = |partner: Option<&str>, status: Option<ItemStatus>| {
        let (mut got, mut after, mut pages) = (Vec::new(), None::<String>, 0);
        loop {
            let (page, next) = o.page(partner, status, after.as_deref(), 3).unwrap();
            assert!(page.len() <= 3);
            got.extend(page.into_iter().map(|i| i.id));
            pages += 1;
            match next {
                Some(n) => after = Some(n),
                None => return (got, pages),
            }
        }
    };
    let whole: Vec<String> = o
        .list(None, None, 100)
        .unwrap()
        .into_iter()
        .map(|i| i.id)
        .collect();
    assert_eq!(whole.len(), 7);
    assert_eq!(all(None, None), (whole.clone(), 3));
    assert_eq!(all(None, Some(ItemStatus::Pending)), (whole, 3));
    let p1: Vec<String> = o
        .list(Some("P1"), None, 100)
        .unwrap()
        .into_iter()
        .map(|i| i.id)
        .collect();
    assert_eq!(all(Some("P1"), None), (p1.clone(), 2));
    assert_eq!(all(Some("P1"), Some(ItemStatus::Pending)), (p1, 2));
}
