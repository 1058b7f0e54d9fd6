//! The journal's tests on RocksDB (the memory store's are in `on_memory.rs`).

use super::*;

fn journal(dir: &std::path::Path) -> Arc<Journal> {
    let db = crate::store::open(dir).unwrap();
    Journal::open(db, Sealer::from_card_key(&[7u8; 32]), 64).unwrap()
}

fn grouping(delay_us: u64) -> Grouping {
    Grouping {
        batch_max: 64,
        sync_delay: Duration::from_micros(delay_us),
    }
}

fn step(key: &str) -> Step {
    let mut s = Step::new();
    s.put(Cf::Dedup, key.as_bytes().to_vec(), b"answer".to_vec());
    s.append(Entry::new(EntryKind::Txn, key, "", "answered".into()));
    s
}

#[tokio::test]
async fn a_submitted_step_lands_and_then_says_so_once() {
    let dir = tempfile::tempdir().unwrap();
    let j = journal(dir.path());
    let (tx, rx) = std::sync::mpsc::channel();
    j.submit(step("k1"), move |r| tx.send(r).unwrap())
        .await
        .unwrap();
    let landed = rx.recv_timeout(std::time::Duration::from_secs(10)).unwrap();
    assert!(landed.is_ok());
    // Written by the time it said so.
    assert_eq!(
        j.get(Cf::Dedup, b"k1").unwrap().as_deref(),
        Some(&b"answer"[..])
    );
    assert!(rx.try_recv().is_err(), "told twice");
}

/// A step sent ahead, written by a group that did not sync, is told it landed only once
/// a later group syncs: its leg's place must not be given back while a power cut could
/// still lose it.
#[test]
fn a_step_sent_ahead_hears_it_landed_only_once_a_sync_covers_it() {
    let dir = tempfile::tempdir().unwrap();
    let store = crate::store::open(dir.path()).unwrap();
    let rx = queue::Queue::new();
    let mut w = GroupWriter {
        store,
        next_seq: 0,
        disk: Disk::SYNCED,
        halted: Arc::default(),
        awaiting_sync: Vec::new(),
    };
    let told = Arc::new(Mutex::new(Vec::new()));
    let pending = |key: &str, ahead: bool, sync: bool| {
        let mut s = step(key);
        if ahead {
            s.sent_ahead();
        }
        if sync {
            s.synced();
        }
        let (told, key) = (told.clone(), key.to_string());
        Pending {
            step: s,
            record: None,
            done: Done::Then(Box::new(move |r| {
                told.lock().unwrap().push((key, r.is_ok()))
            })),
            doomed: false,
        }
    };
    w.release(
        vec![
            pending("ahead", true, false),
            pending("other", false, false),
        ],
        false,
        Ok(()),
        &rx,
    );
    assert_eq!(*told.lock().unwrap(), [("other".to_string(), true)]);
    w.release(vec![pending("synced", false, true)], true, Ok(()), &rx);
    assert_eq!(
        *told.lock().unwrap(),
        [
            ("other".to_string(), true),
            ("ahead".to_string(), true),
            ("synced".to_string(), true)
        ]
    );
    // A failure with one still waiting halts: it is told so, and so is its group.
    w.release(vec![pending("ahead2", true, false)], false, Ok(()), &rx);
    w.release(
        vec![pending("plain", false, true)],
        true,
        Err(JournalError::Write("disk".into())),
        &rx,
    );
    let told = told.lock().unwrap();
    assert_eq!(
        told[3..],
        [("ahead2".to_string(), false), ("plain".to_string(), false)]
    );
    assert!(w.halted.load(std::sync::atomic::Ordering::Acquire));
}

/// A write that fails with a step sent ahead halts the journal: what is on disk stays a
/// prefix of what was queued (start-up recovery's blind reversals rely on it).
#[cfg(feature = "fault-injection")]
#[tokio::test]
async fn a_failed_write_with_a_step_sent_ahead_halts_the_journal() {
    let dir = tempfile::tempdir().unwrap();
    let j = journal(dir.path());
    j.inject_fault("ahead-record", 1);
    let (tx, rx) = std::sync::mpsc::channel();
    let mut ahead = step("ahead");
    ahead.sent_ahead();
    j.commit_then(ahead, move |r| tx.send(r).unwrap()).unwrap();
    let mut after = step("after");
    after.synced();
    let later = j.commit(after).await;
    let landed = rx.recv_timeout(std::time::Duration::from_secs(10)).unwrap();
    assert!(matches!(landed, Err(JournalError::Halted)), "{landed:?}");
    assert!(matches!(later, Err(JournalError::Halted)), "{later:?}");
    assert!(j.is_halted());
    assert!(j.get(Cf::Dedup, b"ahead").unwrap().is_none());
    assert!(j.get(Cf::Dedup, b"after").unwrap().is_none());
    // Everything from now on is refused.
    assert!(matches!(
        j.commit(step("next")).await,
        Err(JournalError::Halted)
    ));
}

/// A landing callback that panics takes neither the writer nor its group's other steps
/// with it; it halts the journal (its owner may now be wrong about what landed), and
/// every step after is refused, none left waiting.
#[tokio::test]
async fn a_callback_that_panics_halts_the_journal_and_leaves_nobody_waiting() {
    let dir = tempfile::tempdir().unwrap();
    let j = journal(dir.path());
    j.commit_then(step("first"), |_| panic!("a callback's bug"))
        .unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    // Queued with the first or after it: told either way.
    let _ = j.commit_then(step("second"), move |r| tx.send(r).unwrap());
    let mut third = step("third");
    third.synced();
    let wait = std::time::Duration::from_secs(30);
    let third = tokio::time::timeout(wait, j.commit(third)).await;
    assert!(
        third.is_ok(),
        "left waiting: the writer died with the callback"
    );
    assert!(
        rx.recv_timeout(wait).is_ok(),
        "the second step was never told"
    );
    assert!(j.is_halted());
    let fourth = tokio::time::timeout(wait, j.commit(step("fourth"))).await;
    assert!(
        matches!(fourth, Ok(Err(JournalError::Halted))),
        "{fourth:?}"
    );
}

#[tokio::test]
async fn benchmark_durability_still_writes_every_step() {
    for durability in [Durability::Unsynced, Durability::Off] {
        let dir = tempfile::tempdir().unwrap();
        let db = crate::store::open_with(dir.path(), Default::default()).unwrap();
        let j = Journal::open_with(
            db,
            Sealer::from_card_key(&[7u8; 32]),
            grouping(0),
            durability,
        )
        .unwrap();
        let mut s = step("k1");
        s.synced();
        j.commit(s).await.unwrap();
        assert_eq!(
            j.get(Cf::Dedup, b"k1").unwrap().as_deref(),
            Some(&b"answer"[..])
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn steps_waiting_for_company_under_load_all_land_in_order() {
    let dir = tempfile::tempdir().unwrap();
    let db = crate::store::open(dir.path()).unwrap();
    let j = Journal::open_with(
        db,
        Sealer::from_card_key(&[7u8; 32]),
        grouping(2_000),
        Durability::Synced,
    )
    .unwrap();
    let commits = (0..64).map(|i| {
        let j = j.clone();
        tokio::spawn(async move {
            let mut s = step(&format!("k{i:02}"));
            s.synced();
            j.commit(s).await
        })
    });
    for c in futures::future::join_all(commits).await {
        assert!(c.unwrap().is_ok());
    }
    // A buffered step behind them lands too (taken with the next group or after its
    // linger), and the journal's records are numbered without a gap.
    let (tx, rx) = std::sync::mpsc::channel();
    j.submit(step("last"), move |r| tx.send(r).unwrap())
        .await
        .unwrap();
    assert!(rx
        .recv_timeout(std::time::Duration::from_secs(10))
        .unwrap()
        .is_ok());
    for i in 0..64 {
        let key = format!("k{i:02}");
        assert!(j.get(Cf::Dedup, key.as_bytes()).unwrap().is_some());
    }
    let seqs: Vec<u64> = j
        .scan(Cf::Journal, b"")
        .unwrap()
        .iter()
        .map(|(k, _)| u64::from_be_bytes(k.as_slice().try_into().unwrap()))
        .collect();
    assert_eq!(seqs, (0..65).collect::<Vec<u64>>());
}

#[tokio::test]
async fn a_step_the_writer_cannot_take_is_refused_and_told() {
    let dir = tempfile::tempdir().unwrap();
    let mut j = journal(dir.path());
    // Stop the writer as dropping does.
    let inner = Arc::get_mut(&mut j).unwrap();
    let Writer::Thread { queue, thread } = &mut inner.writer else {
        panic!("a RocksDB journal writes on its thread");
    };
    queue.close();
    if let Some(w) = thread.take() {
        w.join().unwrap();
    }
    let (tx, rx) = std::sync::mpsc::channel();
    let refused = j.submit(step("k2"), move |r| tx.send(r).unwrap()).await;
    assert!(matches!(refused, Err(JournalError::Stopped)));
    assert!(matches!(rx.try_recv(), Ok(Err(JournalError::Stopped))));
    assert!(matches!(
        j.commit(step("k3")).await,
        Err(JournalError::Stopped)
    ));
}
