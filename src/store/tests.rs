//! The two backends answer alike: the same writes read back the same way from both.

use std::ops::ControlFlow;

use super::{Cf, KeyValue, Store};

#[test]
fn column_families_index_in_the_order_of_all() {
    for (i, cf) in Cf::ALL.iter().enumerate() {
        assert_eq!(cf.index(), i, "{}", cf.name());
    }
}

/// Puts and deletes in two batches, with keys at the edges of prefixes (`0xff` bytes, a key
/// equal to the prefix, a key just past it).
fn fill(store: &Store) {
    let mut batch = store.batch();
    for key in [
        &b"a"[..],
        b"a\x00\x01",
        b"a\x00\x02",
        b"a\x00\xff",
        b"a\x01",
        b"b",
        b"\xff",
        b"\xff\xff\x00",
    ] {
        batch.put(Cf::Saf, key, &[key, b"=v"].concat()).unwrap();
    }
    batch.put(Cf::Txns, b"other", b"cf").unwrap();
    // Transactions' keys end in their transmission time: a later time sorts later,
    // whatever comes before it.
    for key in [
        &b"POS|2|000009|T1|1206235959"[..],
        b"POS|2|000001|T2|1207000001",
        b"ATM|2|000005|T1|1207000000",
        b"POS|2|000001|T1|1207000000",
    ] {
        batch.put(Cf::Txns, key, b"txn").unwrap();
    }
    store.write(batch, true).unwrap();
    let mut batch = store.batch();
    batch.delete(Cf::Saf, b"b").unwrap();
    batch.put(Cf::Saf, b"a\x00\x01", b"replaced").unwrap();
    batch.delete(Cf::Saf, b"never-there").unwrap();
    store.write(batch, false).unwrap();
}

/// Everything a backend answers about the filled store.
fn answers(store: &Store) -> Vec<(String, Vec<KeyValue>)> {
    let rev = |prefix: &[u8], limit: usize| {
        let mut out = Vec::new();
        store
            .for_each_rev(Cf::Saf, prefix, |k, v| {
                out.push((k.to_vec(), v.to_vec()));
                if out.len() >= limit {
                    ControlFlow::Break(())
                } else {
                    ControlFlow::Continue(())
                }
            })
            .unwrap();
        out
    };
    let from = |start: &[u8]| {
        let mut out = Vec::new();
        store
            .for_each_from(Cf::Saf, start, |k, v| {
                out.push((k.to_vec(), v.to_vec()));
                ControlFlow::Continue(())
            })
            .unwrap();
        out
    };
    let mut out = Vec::new();
    for prefix in [&b""[..], b"a", b"a\x00", b"\xff", b"c"] {
        out.push((
            format!("scan {prefix:?}"),
            store.scan(Cf::Saf, prefix).unwrap(),
        ));
        out.push((format!("rev {prefix:?}"), rev(prefix, usize::MAX)));
        out.push((format!("rev 2 {prefix:?}"), rev(prefix, 2)));
        out.push((format!("from {prefix:?}"), from(prefix)));
    }
    out.push(("txns".into(), store.scan(Cf::Txns, b"").unwrap()));
    out.push(("empty cf".into(), store.scan(Cf::Dedup, b"").unwrap()));
    let one = |cf, key: &[u8]| {
        let value = store.get(cf, key).unwrap();
        assert_eq!(store.get_with(cf, key, <[u8]>::to_vec).unwrap(), value);
        value.map(|v| (key.to_vec(), v)).into_iter().collect()
    };
    out.push(("get".into(), one(Cf::Saf, b"a\x00\x01")));
    out.push(("get deleted".into(), one(Cf::Saf, b"b")));
    out.push(("get other cf".into(), one(Cf::Dedup, b"a")));
    let last = |cf| store.last_key(cf).unwrap().map(|k| (k, Vec::new()));
    out.push(("last".into(), last(Cf::Saf).into_iter().collect()));
    out.push((
        "last of empty".into(),
        last(Cf::Dedup).into_iter().collect(),
    ));
    out
}

#[test]
fn memory_and_rocksdb_read_the_same_writes_back_alike() {
    let dir = tempfile::tempdir().unwrap();
    let rocks = super::open(dir.path()).unwrap();
    let memory = Store::memory();
    fill(&rocks);
    fill(&memory);
    let expected = answers(&rocks);
    assert_eq!(answers(&memory), expected);
    // Spot checks that the answers are the ones meant, not merely equal.
    let keys = |name: &str| -> Vec<Vec<u8>> {
        let (_, kvs) = expected.iter().find(|(n, _)| n == name).unwrap();
        kvs.iter().map(|(k, _)| k.clone()).collect()
    };
    assert_eq!(
        keys("scan [97, 0]"),
        [&b"a\x00\x01"[..], b"a\x00\x02", b"a\x00\xff"]
    );
    assert_eq!(keys("rev 2 [97]"), [&b"a\x01"[..], b"a\x00\xff"]);
    assert_eq!(keys("last"), [b"\xff\xff\x00"]);
    assert_eq!(
        keys("txns"),
        [
            &b"POS|2|000009|T1|1206235959"[..],
            b"ATM|2|000005|T1|1207000000",
            b"POS|2|000001|T1|1207000000",
            b"POS|2|000001|T2|1207000001",
            b"other",
        ]
    );
    assert_eq!(keys("get deleted"), Vec::<Vec<u8>>::new());
}

#[test]
fn a_batch_is_written_only_to_the_store_that_made_it() {
    let memory = Store::memory();
    let other = Store::memory();
    let dir = tempfile::tempdir().unwrap();
    let rocks = super::open(dir.path()).unwrap();
    let mut batch = memory.batch();
    batch.put(Cf::Txns, b"k", b"v").unwrap();
    assert!(rocks.write(batch, false).is_err());
    let mut batch = rocks.batch();
    batch.put(Cf::Txns, b"k", b"v").unwrap();
    assert!(other.write(batch, false).is_err());
    let mut batch = memory.batch();
    batch.put(Cf::Txns, b"k", b"v").unwrap();
    assert!(other.write(batch, false).is_err());
    // A clone is the same store.
    let mut batch = memory.batch();
    batch.put(Cf::Txns, b"k", b"v").unwrap();
    memory.clone().write(batch, false).unwrap();
    assert_eq!(
        memory.get(Cf::Txns, b"k").unwrap().as_deref(),
        Some(&b"v"[..])
    );
    assert_eq!(other.get(Cf::Txns, b"k").unwrap(), None);
}

#[test]
fn a_memory_scan_is_a_snapshot_its_visitor_may_write_during() {
    let store = Store::memory();
    let mut batch = store.batch();
    batch.put(Cf::Saf, b"q\x001", b"1").unwrap();
    store.write(batch, false).unwrap();
    let mut seen = Vec::new();
    store
        .for_each(Cf::Saf, b"q\x00", |k, _| {
            seen.push(k.to_vec());
            let mut batch = store.batch();
            batch.put(Cf::Saf, b"q\x002", b"2").unwrap();
            store.write(batch, false).unwrap();
            ControlFlow::Continue(())
        })
        .unwrap();
    assert_eq!(seen, [b"q\x001"]);
    assert_eq!(store.scan(Cf::Saf, b"q\x00").unwrap().len(), 2);
}

#[test]
fn a_column_family_ordered_by_time_is_not_scanned_by_key_range() {
    let dir = tempfile::tempdir().unwrap();
    for store in [Store::memory(), super::open(dir.path()).unwrap()] {
        let err = store.scan(Cf::Txns, b"POS|").unwrap_err();
        assert!(err.contains("ordered by time"), "{err}");
        assert!(store
            .for_each_from(Cf::Dedup, b"a", |_, _| ControlFlow::Continue(()))
            .is_err());
        assert!(store.scan(Cf::Txns, b"").is_ok());
    }
}

/// A data directory of a version before the time order: `txns` and `dedup` in byte order.
/// Opened, their records are in their successors, read by key as before, and they are gone.
#[test]
fn byte_ordered_column_families_of_an_earlier_version_move_at_open() {
    let dir = tempfile::tempdir().unwrap();
    let records: Vec<(String, String)> = (0..10_000)
        .map(|i| {
            (
                format!("POS|2|{:06}|T{}|12{:08}", 999_999 - i, i % 7, i),
                format!("r{i}"),
            )
        })
        .collect();
    {
        let mut opts = rocksdb::Options::default();
        opts.create_if_missing(true);
        opts.create_missing_column_families(true);
        let db = rocksdb::DB::open_cf(&opts, dir.path(), ["journal", "txns", "dedup"]).unwrap();
        for name in ["txns", "dedup"] {
            let cf = db.cf_handle(name).unwrap();
            for (k, v) in &records {
                db.put_cf(cf, k, v).unwrap();
            }
        }
    }
    let store = super::open(dir.path()).unwrap();
    for cf in [Cf::Txns, Cf::Dedup] {
        for (k, v) in records.iter().step_by(997) {
            assert_eq!(
                store.get(cf, k.as_bytes()).unwrap().as_deref(),
                Some(v.as_bytes())
            );
        }
        let all = store.scan(cf, b"").unwrap();
        assert_eq!(all.len(), records.len(), "{}", cf.name());
        // In time order now (the records were made with rising times, falling STANs).
        assert!(all
            .iter()
            .zip(records.iter())
            .all(|((k, _), (r, _))| k == r.as_bytes()));
    }
    drop(store);
    let names = rocksdb::DB::list_cf(&rocksdb::Options::default(), dir.path()).unwrap();
    assert!(
        !names.iter().any(|n| n == "txns" || n == "dedup"),
        "{names:?}"
    );
    // Opened again, nothing is left to move and nothing was lost.
    let store = super::open(dir.path()).unwrap();
    assert_eq!(store.scan(Cf::Txns, b"").unwrap().len(), records.len());
    drop(store);
    // The tools' read-only open knows the order too.
    let read_only = super::open_read_only(dir.path()).unwrap();
    assert_eq!(read_only.scan(Cf::Dedup, b"").unwrap().len(), records.len());
}
