//! The journal's synced write path: one writer, 64 concurrent writers (group commit), and raw
//! RocksDB synced WriteBatches for comparison, all on the same disk in the same run.
//!
//! `cargo bench --bench journal`. Each commit is a realistic step: one journal entry (a masked
//! 0200 of ~200 bytes) and one transaction record (~300 bytes), WAL synced.

use std::sync::Arc;
use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use cyberswitch::iso8583::{Mti, OwnedMessage};
use cyberswitch::journal::{Entry, EntryKind, Journal, Sealer, Step};
use cyberswitch::store::Cf;

fn sample_step(i: u64) -> Step {
    let mut m = OwnedMessage::new(Mti::new(b"0200").expect("mti"));
    m.set(2, b"9410000000000013")
        .set(3, b"000000")
        .set(4, b"000000010000")
        .set(7, b"1121120000")
        .set_number(11, i % 1_000_000, 6)
        .set(41, b"TERM0001")
        .set(42, b"MERCHANT0000001")
        .set(49, b"410");
    let mut step = Step::new();
    step.append(Entry::message(
        EntryKind::In,
        "TERM0001|000001|1121120000",
        "terminals",
        &m,
    ));
    step.put(
        Cf::Txns,
        format!("TERM0001|{i:06}|1121120000"),
        vec![b'x'; 300],
    );
    step.synced();
    step
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime")
}

fn journal_in(dir: &std::path::Path) -> Arc<Journal> {
    let db = cyberswitch::store::open(dir).expect("open");
    Journal::open(db, Sealer::from_card_key(&[1; 32]), 1024).expect("journal")
}

/// `writers` tasks commit synced steps concurrently until `iters` commits are done.
fn concurrent_commits(
    rt: &tokio::runtime::Runtime,
    journal: &Arc<Journal>,
    writers: u64,
    iters: u64,
) -> Duration {
    let per_writer = iters.div_ceil(writers);
    rt.block_on(async {
        let started = Instant::now();
        let tasks: Vec<_> = (0..writers)
            .map(|w| {
                let j = journal.clone();
                tokio::spawn(async move {
                    for i in 0..per_writer {
                        j.commit(sample_step(w * per_writer + i))
                            .await
                            .expect("commit");
                    }
                })
            })
            .collect();
        for t in tasks {
            t.await.expect("writer");
        }
        started.elapsed()
    })
}

fn bench(c: &mut Criterion) {
    let rt = runtime();
    let dir = tempfile::tempdir().expect("tempdir");
    let journal = journal_in(&dir.path().join("journal"));

    let mut g = c.benchmark_group("journal");
    g.throughput(Throughput::Elements(1));
    g.sample_size(20);
    g.measurement_time(Duration::from_secs(8));
    g.bench_function("commit-synced/1-writer", |b| {
        b.iter_custom(|iters| concurrent_commits(&rt, &journal, 1, iters))
    });
    g.bench_function("commit-synced/64-writers", |b| {
        b.iter_custom(|iters| concurrent_commits(&rt, &journal, 64, iters))
    });
    g.finish();

    // Raw RocksDB: the same two writes per batch, WAL synced, written by one thread.
    let raw_dir = tempfile::tempdir().expect("tempdir");
    let opened = cyberswitch::store::open(raw_dir.path()).expect("open");
    let db = opened.rocks().expect("a RocksDB store");
    let mut g = c.benchmark_group("rocksdb");
    g.throughput(Throughput::Elements(1));
    g.sample_size(20);
    g.measurement_time(Duration::from_secs(8));
    g.bench_function("raw-synced-batch/1-writer", |b| {
        let journal_cf = cyberswitch::store::handle(db, Cf::Journal).expect("cf");
        let txns_cf = cyberswitch::store::handle(db, Cf::Txns).expect("cf");
        let mut opts = rocksdb::WriteOptions::default();
        opts.set_sync(true);
        let entry = vec![b'e'; 200];
        let record = vec![b'x'; 300];
        let mut seq = 0u64;
        b.iter(|| {
            seq += 1;
            let mut batch = rocksdb::WriteBatch::default();
            batch.put_cf(journal_cf, seq.to_be_bytes(), &entry);
            batch.put_cf(txns_cf, seq.to_le_bytes(), &record);
            db.write_opt(batch, &opts).expect("write");
        })
    });
    // Raw RocksDB with 64 threads writing at once: RocksDB's own write-group batching.
    g.bench_function("raw-synced-batch/64-writers", |b| {
        b.iter_custom(|iters| {
            let per_thread = iters.div_ceil(64);
            let started = Instant::now();
            std::thread::scope(|s| {
                for t in 0..64u64 {
                    let db = &db;
                    s.spawn(move || {
                        let journal_cf = cyberswitch::store::handle(db, Cf::Journal).expect("cf");
                        let txns_cf = cyberswitch::store::handle(db, Cf::Txns).expect("cf");
                        let mut opts = rocksdb::WriteOptions::default();
                        opts.set_sync(true);
                        for i in 0..per_thread {
                            let key = (t << 40 | i).to_be_bytes();
                            let mut batch = rocksdb::WriteBatch::default();
                            batch.put_cf(journal_cf, key, [b'e'; 200]);
                            batch.put_cf(txns_cf, key, [b'x'; 300]);
                            db.write_opt(batch, &opts).expect("write");
                        }
                    });
                }
            });
            started.elapsed()
        })
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
