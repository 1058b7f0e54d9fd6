//! The journal on a memory store: what the flows' tests rely on (a step visible when its
//! call returns, sequence numbers going on), and the same steps giving the same store as on
//! RocksDB.

use std::sync::Arc;

use super::read;
use super::{Entry, EntryKind, Journal, Sealer, Step};
use crate::store::{Cf, Store};

fn journal(store: Store) -> Arc<Journal> {
    Journal::open(store, Sealer::from_card_key(&[7u8; 32]), 64).unwrap()
}

/// A step answering transaction `txn`: its record, its answer, its journal line at a fixed
/// time (so that records compare byte for byte).
fn answered(txn: &str, sync: bool) -> Step {
    let mut s = Step::new();
    s.put(
        Cf::Txns,
        txn.as_bytes(),
        format!("record of {txn}").into_bytes(),
    );
    s.put(Cf::Dedup, txn.as_bytes(), b"answer".to_vec());
    s.delete(Cf::OpenTxns, txn.as_bytes());
    let mut e = Entry::new(EntryKind::Txn, txn, "terminals", "answered".into());
    e.at_ms = 1_700_000_000_000;
    s.append(e);
    if sync {
        s.synced();
    }
    s
}

fn opened(txn: &str) -> Step {
    let mut s = Step::new();
    s.put(Cf::OpenTxns, txn.as_bytes(), Vec::new());
    s
}

/// The journal's record keys.
fn seqs(store: &Store) -> Vec<u64> {
    store
        .scan(Cf::Journal, b"")
        .unwrap()
        .into_iter()
        .map(|(k, _)| u64::from_be_bytes(k.try_into().unwrap()))
        .collect()
}

#[tokio::test]
async fn synced_and_buffered_steps_are_readable_when_commit_returns() {
    let store = Store::memory();
    let j = journal(store.clone());
    j.commit(opened("T1")).await.unwrap();
    j.commit(opened("T2")).await.unwrap();
    assert_eq!(j.scan(Cf::OpenTxns, b"T").unwrap().len(), 2);
    j.commit(answered("T1", true)).await.unwrap();
    assert_eq!(
        j.get(Cf::Dedup, b"T1").unwrap().as_deref(),
        Some(&b"answer"[..])
    );
    assert_eq!(
        j.scan(Cf::OpenTxns, b"").unwrap(),
        [(b"T2".to_vec(), vec![])]
    );
    j.commit(answered("T2", false)).await.unwrap();
    assert!(j.scan(Cf::OpenTxns, b"").unwrap().is_empty());
    let txns: Vec<_> = j
        .scan(Cf::Txns, b"")
        .unwrap()
        .into_iter()
        .map(|(k, v)| (String::from_utf8(k).unwrap(), String::from_utf8(v).unwrap()))
        .collect();
    assert_eq!(
        txns,
        [
            ("T1".to_string(), "record of T1".to_string()),
            ("T2".to_string(), "record of T2".to_string())
        ]
    );
    // Only steps with journal entries take a record; an empty step writes nothing.
    j.commit(Step::new()).await.unwrap();
    assert_eq!(seqs(&store), [0, 1]);
    // Read back for people as from disk.
    let lines: Vec<_> = read::from(&store, 0, 10)
        .unwrap()
        .into_iter()
        .map(|(seq, _, e)| (seq, e.txn))
        .collect();
    assert_eq!(lines, [(0, "T1".to_string()), (1, "T2".to_string())]);
    assert_eq!(read::tail(&store, 1).unwrap()[0].2.txn, "T2");
    assert_eq!(read::find_rrn(&store, "none").unwrap(), Vec::new());
}

#[tokio::test]
async fn a_submitted_step_is_written_and_told_before_submit_returns() {
    let store = Store::memory();
    let j = journal(store.clone());
    let (tx, rx) = std::sync::mpsc::channel();
    let seen = store.clone();
    j.submit(answered("T1", false), move |r| {
        // Written by the time it says so.
        let written = seen.get(Cf::Dedup, b"T1").unwrap().is_some();
        tx.send((r.is_ok(), written)).unwrap();
    })
    .await
    .unwrap();
    // No writer thread to wait for: told already, once.
    assert_eq!(rx.try_recv().unwrap(), (true, true));
    assert!(rx.try_recv().is_err(), "told twice");
    // An empty step is told at once too.
    let (tx, rx) = std::sync::mpsc::channel();
    j.submit(Step::new(), move |r| tx.send(r.is_ok()).unwrap())
        .await
        .unwrap();
    assert!(rx.try_recv().unwrap());
}

#[tokio::test]
async fn sequence_numbers_go_on_from_the_last_record_when_opened_again() {
    let store = Store::memory();
    {
        let j = journal(store.clone());
        j.commit(answered("T1", true)).await.unwrap();
        j.commit(answered("T2", false)).await.unwrap();
    }
    let j = journal(store.clone());
    j.commit(answered("T3", true)).await.unwrap();
    assert_eq!(seqs(&store), [0, 1, 2]);
    assert_eq!(read::tail(&store, 1).unwrap()[0].2.txn, "T3");
}

/// Everything in every column family.
fn contents(store: &Store) -> Vec<(&'static str, Vec<crate::store::KeyValue>)> {
    Cf::ALL
        .iter()
        .map(|&cf| (cf.name(), store.scan(cf, b"").unwrap()))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_same_steps_leave_the_same_store_on_memory_and_on_rocksdb() {
    let dir = tempfile::tempdir().unwrap();
    let rocks = crate::store::open(dir.path()).unwrap();
    let memory = Store::memory();
    for store in [&rocks, &memory] {
        let j = journal(store.clone());
        for i in 0..5 {
            j.commit(opened(&format!("T{i}"))).await.unwrap();
        }
        for i in 0..4 {
            j.commit(answered(&format!("T{i}"), i % 2 == 0))
                .await
                .unwrap();
        }
        let (tx, rx) = tokio::sync::oneshot::channel();
        j.submit(answered("T9", false), move |r| {
            let _ = tx.send(r);
        })
        .await
        .unwrap();
        rx.await.unwrap().unwrap();
    }
    let expected = contents(&rocks);
    assert_eq!(contents(&memory), expected);
    assert_eq!(seqs(&memory), [0, 1, 2, 3, 4]);
    assert_eq!(
        memory.scan(Cf::OpenTxns, b"").unwrap(),
        [(b"T4".to_vec(), vec![])]
    );
    assert_eq!(
        read::tail(&memory, 2).unwrap(),
        read::tail(&rocks, 2).unwrap()
    );
}
