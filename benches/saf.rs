//! The store-and-forward worker's loop over a backlog: find the next item due, then put it
//! back on its back-off (a host answering "not now"), with every other item waiting. The
//! indexed lane against the walk through every item it replaced.
//!
//! `cargo bench --bench saf`.

use std::collections::BTreeMap;
use std::time::Duration;

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion};
use cyberswitch::records::saf::Item;
use cyberswitch::switch::saf::lane::{walk_every_item, Key, Lane};
use tokio::time::Instant;

/// `n` items of `n` legs, each waiting for its back-off somewhere in the next ten minutes.
fn backlog(n: u64, start: Instant) -> Vec<(Key, Item)> {
    (0..n)
        .map(|seq| {
            let item = Item {
                txn: format!("TERM0001|{:06}|1207120000", seq % 1_000_000),
                leg: 0,
                queued_ms: 1_700_000_000_000,
                attempts: 3,
                sealed: "00".repeat(150),
                complete: None,
                // Spread by a multiplicative hash: not in queueing order.
                next: Some(start + Duration::from_millis((seq * 7_919) % 600_000 + 1)),
                amount: Some(10_000),
                reason: None,
                advice: false,
                blind: None,
            };
            (seq.to_be_bytes().to_vec(), item)
        })
        .collect()
}

fn worker_loop(c: &mut Criterion) {
    let mut group = c.benchmark_group("saf_next_due_then_back_off");
    group.sample_size(10);
    for n in [1_000u64, 10_000, 100_000] {
        let start = Instant::now();
        let mut lane = Lane::default();
        let mut plain = BTreeMap::new();
        for (k, i) in backlog(n, start) {
            lane.insert(k.clone(), i.clone());
            plain.insert(k, i);
        }
        // The clock moves on 1 ms per attempt: one item falls due about every 6 ms.
        let mut now = start;
        group.bench_function(BenchmarkId::new("indexed", n), |b| {
            b.iter(|| {
                now += Duration::from_millis(1);
                if let Ok((k, mut i)) = lane.next_due(now) {
                    i.next = Some(now + Duration::from_secs(600));
                    lane.insert(k, i);
                }
            })
        });
        let mut now = start;
        group.bench_function(BenchmarkId::new("walk", n), |b| {
            b.iter(|| {
                now += Duration::from_millis(1);
                if let Ok(k) = walk_every_item(&plain, now) {
                    if let Some(i) = plain.get_mut(&k) {
                        i.next = Some(now + Duration::from_secs(600));
                    }
                }
            })
        });
    }
    group.finish();
}

criterion_group!(benches, worker_loop);
criterion_main!(benches);
