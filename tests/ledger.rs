//! The hosted ledger over a real RocksDB in a temporary directory: two-phase holds, idempotent
//! legs, expiry, balances derived from entries across a reopen, and the invariant
//! `available ≥ 0` under many concurrent debits of one account.

use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use cyberswitch::journal::{Journal, Sealer};
use cyberswitch::ledger::{Balance, Ledger, LedgerError};

fn open(dir: &std::path::Path, ttl: Duration) -> Arc<Ledger> {
    let db = cyberswitch::store::open(dir).unwrap();
    let journal = Journal::open(db, Sealer::from_card_key(&[3; 32]), 1024).unwrap();
    Ledger::open(journal, ttl).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_holds_never_take_more_than_the_balance() {
    let dir = tempfile::tempdir().unwrap();
    let ledger = open(dir.path(), Duration::from_secs(600));
    ledger.open_account("A", "KRW").await.unwrap();
    ledger.credit("A", 100_000, "load-1").await.unwrap();
    let approved = Arc::new(AtomicI64::new(0));
    let tasks: Vec<_> = (0..64)
        .map(|t| {
            let (ledger, approved) = (ledger.clone(), approved.clone());
            tokio::spawn(async move {
                for i in 0..25 {
                    let amount = 100 + (t * 37 + i * 101) % 900;
                    match ledger.hold("A", amount, &format!("h-{t}-{i}")).await {
                        Ok(b) => {
                            assert!(b.available() >= 0);
                            approved.fetch_add(amount, Ordering::SeqCst);
                        }
                        Err(LedgerError::Insufficient { available }) => assert!(available < amount),
                        Err(e) => panic!("{e}"),
                    }
                }
            })
        })
        .collect();
    for t in tasks {
        t.await.unwrap();
    }
    let approved = approved.load(Ordering::SeqCst);
    let b = ledger.balance("A").unwrap();
    assert!(approved <= 100_000, "approved {approved} of 100,000");
    assert!(
        approved > 90_000,
        "the account should be nearly drained: {approved}"
    );
    assert_eq!(
        b,
        Balance {
            posted: 100_000,
            pending: approved
        }
    );
    assert_eq!(ledger.derive("A").unwrap(), b, "derived from entries");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn holds_post_void_refund_and_repeat_without_second_effects() {
    let dir = tempfile::tempdir().unwrap();
    {
        let ledger = open(dir.path(), Duration::from_secs(600));
        ledger.open_account("A", "KRW").await.unwrap();
        assert!(matches!(
            ledger.open_account("A", "KRW").await,
            Err(LedgerError::AccountExists(_))
        ));
        ledger.credit("A", 10_000, "c1").await.unwrap();
        ledger.credit("A", 10_000, "c1").await.unwrap(); // repeat: no second credit
        assert_eq!(ledger.balance("A").unwrap().available(), 10_000);

        let b = ledger.hold("A", 4_000, "h1").await.unwrap();
        assert_eq!(
            b,
            Balance {
                posted: 10_000,
                pending: 4_000
            }
        );
        ledger.hold("A", 4_000, "h1").await.unwrap(); // repeat
        assert_eq!(ledger.balance("A").unwrap().pending, 4_000);
        assert_eq!(ledger.open_holds(), 1, "a repeated hold is one hold");
        assert!(matches!(
            ledger.hold("A", 7_000, "h2").await,
            Err(LedgerError::Insufficient { available: 6_000 })
        ));
        let b = ledger.post("h1").await.unwrap();
        assert_eq!(
            b,
            Balance {
                posted: 6_000,
                pending: 0
            }
        );
        ledger.post("h1").await.unwrap(); // repeat
        assert_eq!(ledger.open_holds(), 0, "a posted hold is closed");
        ledger.hold("A", 1_000, "h3").await.unwrap();
        ledger.hold("A", 500, "h4").await.unwrap();
        assert_eq!(ledger.open_holds(), 2);
        let b = ledger.void("h3").await.unwrap();
        assert_eq!(
            b,
            Balance {
                posted: 6_000,
                pending: 500
            }
        );
        assert!(matches!(
            ledger.post("h3").await,
            Err(LedgerError::WrongState { .. })
        ));
        assert_eq!(ledger.open_holds(), 1, "a voided hold is closed");
        // Reversal after completion: refunded.
        let b = ledger.void("h1").await.unwrap();
        assert_eq!(b.available(), 9_500);
        ledger.void("h1").await.unwrap(); // repeat
        assert_eq!(ledger.balance("A").unwrap().available(), 9_500);
        assert!(matches!(
            ledger.hold("B", 1, "x").await,
            Err(LedgerError::UnknownAccount(_))
        ));
        assert!(matches!(
            ledger.void("nope").await,
            Err(LedgerError::UnknownLeg(_))
        ));
        assert!(matches!(
            ledger.hold("A", 0, "z").await,
            Err(LedgerError::BadAmount)
        ));
        ledger.debit("A", 2_500, "refund-1").await.unwrap();
        use cyberswitch::ledger::EntryType::*;
        let kinds: Vec<_> = ledger
            .history("A")
            .unwrap()
            .iter()
            .map(|e| e.kind)
            .collect();
        assert_eq!(
            kinds,
            vec![Credit, Hold, Post, Hold, Hold, Void, Refund, Debit]
        );
        assert_eq!(ledger.open_holds(), 1, "refunds and debits touch no hold");
    }
    // Reopened: the balance is derived again from the entries, the legs still idempotent.
    let ledger = open(dir.path(), Duration::from_secs(600));
    assert_eq!(
        ledger.balance("A").unwrap(),
        Balance {
            posted: 7_500,
            pending: 500
        }
    );
    assert_eq!(
        ledger.open_holds(),
        1,
        "open holds derived from the entries"
    );
    ledger.credit("A", 10_000, "c1").await.unwrap();
    assert_eq!(ledger.balance("A").unwrap().available(), 7_000);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn holds_expire_when_never_completed() {
    let dir = tempfile::tempdir().unwrap();
    let ledger = open(dir.path(), Duration::from_millis(0));
    ledger.open_account("A", "P").await.unwrap();
    ledger.credit("A", 500, "c").await.unwrap();
    ledger.hold("A", 300, "h").await.unwrap();
    assert_eq!(ledger.balance("A").unwrap().available(), 200);
    tokio::time::sleep(Duration::from_millis(5)).await;
    assert_eq!(ledger.open_holds(), 1);
    assert_eq!(ledger.expire_holds().await.unwrap(), 1);
    assert_eq!(ledger.open_holds(), 0, "an expired hold is closed");
    assert_eq!(ledger.balance("A").unwrap().available(), 500);
    assert!(matches!(
        ledger.post("h").await,
        Err(LedgerError::WrongState { .. })
    ));
    assert_eq!(ledger.expire_holds().await.unwrap(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn holds_still_pending_at_a_restart_expire_after_it_and_only_they() {
    let dir = tempfile::tempdir().unwrap();
    {
        let ledger = open(dir.path(), Duration::from_millis(0));
        ledger.open_account("A", "P").await.unwrap();
        ledger.credit("A", 1_000, "c").await.unwrap();
        ledger.hold("A", 100, "posted").await.unwrap();
        ledger.post("posted").await.unwrap();
        ledger.hold("A", 200, "voided").await.unwrap();
        ledger.void("voided").await.unwrap();
        ledger.hold("A", 300, "left").await.unwrap();
    }
    tokio::time::sleep(Duration::from_millis(5)).await;
    let ledger = open(dir.path(), Duration::from_secs(600));
    assert_eq!(ledger.open_holds(), 1);
    // A hold placed after the restart is not due yet.
    ledger.hold("A", 50, "fresh").await.unwrap();
    assert_eq!(
        ledger.expire_holds().await.unwrap(),
        1,
        "only the hold left open"
    );
    assert_eq!(
        ledger.leg_state("left").unwrap().unwrap().state,
        cyberswitch::ledger::LegState::Expired
    );
    assert_eq!(ledger.open_holds(), 1, "the fresh hold is still open");
    assert_eq!(ledger.balance("A").unwrap().available(), 1_000 - 100 - 50);
    assert_eq!(ledger.expire_holds().await.unwrap(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn recent_history_reads_back_only_what_came_after_and_matches_the_full_history() {
    let dir = tempfile::tempdir().unwrap();
    let ledger = open(dir.path(), Duration::from_secs(600));
    for account in ["A", "B"] {
        ledger.open_account(account, "P").await.unwrap();
    }
    ledger.credit("A", 1_000, "a1").await.unwrap();
    ledger.credit("B", 1_000, "b1").await.unwrap();
    ledger.hold("A", 100, "a2").await.unwrap();
    tokio::time::sleep(Duration::from_millis(5)).await;
    let since = chrono::Utc::now().timestamp_millis();
    ledger.post("a2").await.unwrap();
    ledger.debit("A", 50, "a3").await.unwrap();
    ledger.credit("B", 7, "b2").await.unwrap();

    let recent: Vec<_> = ledger
        .history_since("A", since)
        .unwrap()
        .into_iter()
        .map(|e| e.leg)
        .collect();
    assert_eq!(recent, ["a2", "a3"], "oldest first, this account only");
    let filtered: Vec<_> = ledger
        .history("A")
        .unwrap()
        .into_iter()
        .filter(|e| e.at_ms >= since)
        .map(|e| e.leg)
        .collect();
    assert_eq!(recent, filtered);
    assert_eq!(ledger.history_since("A", 0).unwrap().len(), 4);
    assert!(ledger.history_since("A", i64::MAX).unwrap().is_empty());
    assert!(ledger.history_since("nobody", 0).unwrap().is_empty());
}

/// A day's statement read from the balance now and the entries since the day began (not
/// the whole past) gives what the whole past gives: the same opening, the same entries,
/// for every day, while other legs land on the same account today.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_days_statement_from_the_balance_now_matches_the_one_from_all_history() {
    use cyberswitch::clock::ManualClock;
    const DAY: i64 = 86_400_000;
    let dir = tempfile::tempdir().unwrap();
    let db = cyberswitch::store::open(dir.path()).unwrap();
    let journal = Journal::open(db, Sealer::from_card_key(&[3; 32]), 1024).unwrap();
    let t0 = chrono::DateTime::parse_from_rfc3339("2026-03-01T00:00:00Z")
        .unwrap()
        .with_timezone(&chrono::Utc);
    let clock = Arc::new(ManualClock::new(t0));
    let ledger = Ledger::open_with_clock(journal, Duration::from_secs(600), clock.clone()).unwrap();
    ledger.open_account("A", "P").await.unwrap();
    // Four days of every kind of entry, a few hours apart.
    for day in 0..4 {
        let p = |n: &str| format!("d{day}-{n}");
        ledger.credit("A", 10_000, &p("in")).await.unwrap();
        clock.advance(chrono::Duration::hours(3));
        ledger.hold("A", 1_200, &p("h1")).await.unwrap();
        ledger.hold("A", 800, &p("h2")).await.unwrap();
        ledger.post(&p("h1")).await.unwrap();
        clock.advance(chrono::Duration::hours(3));
        ledger.void(&p("h2")).await.unwrap();
        ledger
            .debit("A", 2_500 + day * 10, &p("out"))
            .await
            .unwrap();
        ledger.hold("A", 300, &p("open")).await.unwrap();
        clock.advance(chrono::Duration::hours(18));
    }
    let start0 = t0.timestamp_millis();
    // What the whole past says about day `d`.
    let from_all = |d: i64| {
        let (start, end) = (start0 + d * DAY, start0 + (d + 1) * DAY);
        let mut opening = Balance::default();
        let mut entries = Vec::new();
        for e in ledger.history("A").unwrap() {
            if e.at_ms < start {
                e.apply_to(&mut opening).unwrap();
            } else if e.at_ms < end {
                entries.push(e.leg);
            }
        }
        (opening, entries)
    };
    let days: Vec<_> = (0..5).map(from_all).collect();
    assert_eq!(days[0].0, Balance::default());
    assert_eq!(days[2].1.len(), 7, "{:?}", days[2].1);
    // Legs landing today (day 4) while the earlier days are read.
    let writer = {
        let ledger = ledger.clone();
        tokio::spawn(async move {
            for i in 0..200 {
                ledger.credit("A", 5, &format!("late-{i}")).await.unwrap();
                ledger.hold("A", 3, &format!("late-h-{i}")).await.unwrap();
            }
        })
    };
    for round in 0..20 {
        for d in 0..4 {
            let (start, end) = (start0 + d * DAY, start0 + (d + 1) * DAY);
            let (opening, entries) = ledger.day("A", start, end).await.unwrap();
            let legs: Vec<_> = entries.into_iter().map(|e| e.leg).collect();
            assert_eq!(
                (opening, legs),
                days[d as usize].clone(),
                "day {d}, round {round}"
            );
        }
    }
    writer.await.unwrap();
    let today = ledger
        .day("A", start0 + 4 * DAY, start0 + 5 * DAY)
        .await
        .unwrap();
    assert_eq!(today.0, days[4].0, "today's opening");
    assert_eq!(today.1.len(), 400, "today's entries");
    assert!(matches!(
        ledger.day("nobody", 0, DAY).await,
        Err(LedgerError::UnknownAccount(_))
    ));
}

/// Accounts opened with an opening credit and the caller's own writes are one step: when any
/// part is refused, nothing is written, and what was written survives a reopen whole.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn accounts_open_with_their_opening_credit_all_or_nothing() {
    use cyberswitch::journal::Step;
    use cyberswitch::ledger::NewAccount;
    use cyberswitch::store::Cf;
    let dir = tempfile::tempdir().unwrap();
    let with_marker = |key: &str| {
        let mut step = Step::new();
        step.put(Cf::HostedMasters, key.as_bytes(), b"marker".to_vec());
        step
    };
    {
        let ledger = open(dir.path(), Duration::from_secs(600));
        ledger.open_account("A", "KRW").await.unwrap();
        ledger.credit("A", 1_000, "L-1").await.unwrap();
        // B's opening leg is taken already (by A's credit): nothing of the step is written.
        let refused = ledger
            .open_accounts(
                with_marker("refused"),
                &[
                    NewAccount {
                        id: "C",
                        unit: "P",
                        opening: None,
                    },
                    NewAccount {
                        id: "B",
                        unit: "KRW",
                        opening: Some((500, "L-1")),
                    },
                ],
            )
            .await;
        assert!(
            matches!(refused, Err(LedgerError::WrongState { .. })),
            "{refused:?}"
        );
        // An account opened twice in one step, or one that exists: refused likewise.
        let twice = [
            NewAccount {
                id: "D",
                unit: "KRW",
                opening: None,
            },
            NewAccount {
                id: "D",
                unit: "KRW",
                opening: None,
            },
        ];
        assert!(matches!(
            ledger.open_accounts(with_marker("twice"), &twice).await,
            Err(LedgerError::AccountExists(_))
        ));
        let exists = [NewAccount {
            id: "A",
            unit: "KRW",
            opening: Some((5, "L-9")),
        }];
        assert!(matches!(
            ledger.open_accounts(with_marker("exists"), &exists).await,
            Err(LedgerError::AccountExists(_))
        ));
        for id in ["B", "C", "D"] {
            assert_eq!(ledger.balance(id), None, "{id}");
        }
        assert_eq!(ledger.balance("A").unwrap().posted, 1_000);
        let opened = [
            NewAccount {
                id: "B",
                unit: "KRW",
                opening: Some((500, "open-B")),
            },
            NewAccount {
                id: "C",
                unit: "P",
                opening: None,
            },
        ];
        ledger
            .open_accounts(with_marker("opened"), &opened)
            .await
            .unwrap();
        assert_eq!(ledger.balance("B").unwrap().posted, 500);
        assert_eq!(ledger.balance("C"), Some(Balance::default()));
    }
    let ledger = open(dir.path(), Duration::from_secs(600));
    assert_eq!(
        ledger.balance("B").unwrap().posted,
        500,
        "derived at reopen"
    );
    assert_eq!(ledger.derive("B").unwrap().posted, 500);
    assert_eq!(ledger.balance("C"), Some(Balance::default()));
    assert_eq!(ledger.balance("D"), None);
    drop(ledger);
    let db = cyberswitch::store::open(dir.path()).unwrap();
    let journal = Journal::open(db, Sealer::from_card_key(&[3; 32]), 1024).unwrap();
    for (key, written) in [
        ("refused", false),
        ("twice", false),
        ("exists", false),
        ("opened", true),
    ] {
        let got = journal.get(Cf::HostedMasters, key.as_bytes()).unwrap();
        assert_eq!(got.is_some(), written, "{key}");
    }
}

/// A debit and the credit it earns (points) are one step: refused together, written together,
/// repeated as one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_debit_and_the_credit_it_earns_are_both_or_neither() {
    use cyberswitch::journal::Step;
    let dir = tempfile::tempdir().unwrap();
    let ledger = open(dir.path(), Duration::from_secs(600));
    ledger.open_account("card", "KRW").await.unwrap();
    ledger.open_account("points", "P").await.unwrap();
    ledger.credit("card", 10_000, "load").await.unwrap();
    // Not enough money: no points either.
    let r = ledger
        .debit_crediting(
            Step::new(),
            "card",
            20_000,
            "buy-1",
            ("points", 200, "buy-1:p"),
        )
        .await;
    assert!(matches!(r, Err(LedgerError::Insufficient { .. })), "{r:?}");
    assert_eq!(ledger.balance("points").unwrap(), Balance::default());
    assert!(ledger.leg_state("buy-1:p").unwrap().is_none());
    // No such points account: no debit either.
    let r = ledger
        .debit_crediting(
            Step::new(),
            "card",
            5_000,
            "buy-2",
            ("nowhere", 50, "buy-2:p"),
        )
        .await;
    assert!(matches!(r, Err(LedgerError::UnknownAccount(_))), "{r:?}");
    assert_eq!(ledger.balance("card").unwrap().posted, 10_000);
    assert!(ledger.leg_state("buy-2").unwrap().is_none());
    // Both, once, however often asked.
    for _ in 0..3 {
        let b = ledger
            .debit_crediting(
                Step::new(),
                "card",
                5_000,
                "buy-3",
                ("points", 50, "buy-3:p"),
            )
            .await
            .unwrap();
        assert_eq!(b.posted, 5_000);
    }
    assert_eq!(ledger.balance("points").unwrap().posted, 50);
    assert_eq!(ledger.derive("card").unwrap().posted, 5_000);
    assert_eq!(ledger.derive("points").unwrap().posted, 50);
    // Voided apart (a reversal takes the points back on its own).
    ledger.void("buy-3").await.unwrap();
    ledger.void("buy-3:p").await.unwrap();
    assert_eq!(ledger.balance("card").unwrap().posted, 10_000);
    assert_eq!(ledger.balance("points").unwrap().posted, 0);
}

/// A completion posts what it names of a hold and releases the rest, in one step; again is a
/// no-op; a refund then gives back what was posted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_completion_posts_part_of_a_hold_and_releases_the_rest() {
    let dir = tempfile::tempdir().unwrap();
    {
        let ledger = open(dir.path(), Duration::from_secs(600));
        ledger.open_account("A", "KRW").await.unwrap();
        ledger.credit("A", 10_000, "load").await.unwrap();
        ledger.hold("A", 5_000, "auth-1").await.unwrap();
        assert_eq!(ledger.open_holds(), 1);
        assert!(matches!(
            ledger.complete("auth-1", 6_000).await,
            Err(LedgerError::BadAmount)
        ));
        assert!(matches!(
            ledger.complete("nope", 1).await,
            Err(LedgerError::UnknownLeg(_))
        ));
        let b = ledger.complete("auth-1", 4_000).await.unwrap();
        assert_eq!(
            b,
            Balance {
                posted: 6_000,
                pending: 0
            }
        );
        assert_eq!(ledger.open_holds(), 0, "the hold is closed once");
        assert_eq!(ledger.complete("auth-1", 4_000).await.unwrap(), b);
        assert_eq!(ledger.derive("A").unwrap(), b);
        // An expired or voided hold cannot be completed.
        ledger.hold("A", 1_000, "auth-2").await.unwrap();
        ledger.void("auth-2").await.unwrap();
        assert!(matches!(
            ledger.complete("auth-2", 1_000).await,
            Err(LedgerError::WrongState { .. })
        ));
    }
    let ledger = open(dir.path(), Duration::from_secs(600));
    assert_eq!(ledger.open_holds(), 0, "counted the same at replay");
    assert_eq!(ledger.balance("A").unwrap().available(), 6_000);
    // Reversed after completion: the posted 4,000 comes back, not the 5,000 held.
    ledger.void("auth-1").await.unwrap();
    assert_eq!(ledger.balance("A").unwrap().available(), 10_000);
    assert_eq!(ledger.derive("A").unwrap().posted, 10_000);
}

type Memory = (
    std::collections::HashMap<String, Balance>,
    i64,
    Vec<(i64, String)>,
);

fn memory(ledger: &Ledger) -> Memory {
    (
        ledger.balances(),
        ledger.open_holds(),
        ledger.pending_holds(),
    )
}

fn open_at(dir: &std::path::Path, clock: Arc<cyberswitch::clock::ManualClock>) -> Arc<Ledger> {
    let db = cyberswitch::store::open(dir).unwrap();
    let journal = Journal::open(db, Sealer::from_card_key(&[3; 32]), 1024).unwrap();
    Ledger::open_with_clock(journal, Duration::from_secs(3_600), clock).unwrap()
}

/// The checkpoint written at a stop gives the next start what replaying every entry gives
/// (balances, open holds, the pending holds by expiry, sequence numbers going on), after a
/// random history of every kind of operation; it is used once; once the ledger has stopped
/// it takes no write; and an entry written behind its back (a build that does not know
/// checkpoints) or an account opened since sends the start back to the full replay.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stops_checkpoint_gives_what_the_full_replay_gives_and_only_while_true() {
    use cyberswitch::ledger::Start;
    let dir = tempfile::tempdir().unwrap();
    let t0 = chrono::DateTime::parse_from_rfc3339("2026-03-01T00:00:00Z")
        .unwrap()
        .with_timezone(&chrono::Utc);
    let clock = Arc::new(cyberswitch::clock::ManualClock::new(t0));
    let accounts = ["A", "B", "C", "D"];
    let expected = {
        let ledger = open_at(dir.path(), clock.clone());
        assert_eq!(ledger.started_from(), Start::Replay);
        for a in accounts {
            ledger.open_account(a, "P").await.unwrap();
            ledger
                .credit(a, 50_000, &format!("load-{a}"))
                .await
                .unwrap();
        }
        let mut seed: u64 = 0x5eed;
        let mut holds: Vec<String> = Vec::new();
        for i in 0..600 {
            seed = seed
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            let r = (seed >> 33) as usize;
            let a = accounts[r % accounts.len()];
            let amount = 1 + (r % 700) as i64;
            let leg = format!("leg-{i}");
            match (r >> 8) % 8 {
                0 => drop(ledger.credit(a, amount, &leg).await),
                1 => drop(ledger.debit(a, amount, &leg).await),
                2 | 3 => {
                    if ledger.hold(a, amount, &leg).await.is_ok() {
                        holds.push(leg);
                    }
                }
                4 if !holds.is_empty() => {
                    let h = holds.swap_remove(r % holds.len());
                    drop(ledger.post(&h).await);
                }
                5 if !holds.is_empty() => {
                    let h = holds.swap_remove(r % holds.len());
                    drop(ledger.complete(&h, 1).await);
                }
                6 if !holds.is_empty() => {
                    let h = holds.swap_remove(r % holds.len());
                    drop(ledger.void(&h).await);
                }
                _ => clock.advance(chrono::Duration::minutes(20)),
            }
            if i == 300 {
                // Some holds expire on the way.
                ledger.expire_holds().await.unwrap();
            }
        }
        let expected = memory(&ledger);
        assert!(expected.1 > 0, "some holds still pending");
        assert_eq!(expected.2.len() as i64, expected.1);
        assert_eq!(ledger.checkpoint().await.unwrap(), accounts.len());
        assert!(matches!(
            ledger.credit("A", 1, "after-stop").await,
            Err(LedgerError::Stopped)
        ));
        assert!(matches!(
            ledger.hold("B", 1, "after-stop-2").await,
            Err(LedgerError::Stopped)
        ));
        assert_eq!(memory(&ledger), expected, "nothing moved after the stop");
        expected
    };
    tokio::time::sleep(Duration::from_millis(5)).await;
    {
        let ledger = open_at(dir.path(), clock.clone());
        assert_eq!(ledger.started_from(), Start::Checkpoint);
        assert_eq!(memory(&ledger), expected);
    }
    tokio::time::sleep(Duration::from_millis(5)).await;
    let last_seq = {
        let ledger = open_at(dir.path(), clock.clone());
        assert_eq!(ledger.started_from(), Start::Replay, "used once");
        assert_eq!(memory(&ledger), expected);
        ledger.checkpoint().await.unwrap();
        accounts
            .iter()
            .flat_map(|a| ledger.history(a).unwrap())
            .map(|e| e.seq)
            .max()
            .unwrap()
    };
    tokio::time::sleep(Duration::from_millis(5)).await;
    {
        // Sequence numbers go on past every entry after a start from the checkpoint.
        let ledger = open_at(dir.path(), clock.clone());
        assert_eq!(ledger.started_from(), Start::Checkpoint);
        assert_eq!(
            memory(&ledger),
            expected,
            "the second checkpoint, written over the first"
        );
        ledger.credit("A", 10, "next").await.unwrap();
        let next = ledger.history("A").unwrap().pop().unwrap();
        assert_eq!(next.leg, "next");
        assert!(next.seq > last_seq);
        ledger.checkpoint().await.unwrap();
    }
    tokio::time::sleep(Duration::from_millis(5)).await;
    // An entry written behind the checkpoint's back.
    {
        let entry = cyberswitch::ledger::LedgerEntry {
            seq: last_seq + 1_000,
            account: "C".into(),
            kind: cyberswitch::ledger::EntryType::Credit,
            amount: 777,
            leg: "behind".into(),
            at_ms: 0,
        };
        put_behind_its_back(
            dir.path(),
            cyberswitch::store::Cf::LedgerEntries,
            &cyberswitch::store::seq_key("C", entry.seq),
            &serde_json::to_vec(&entry).unwrap(),
        );
    }
    tokio::time::sleep(Duration::from_millis(5)).await;
    {
        let ledger = open_at(dir.path(), clock.clone());
        assert_eq!(
            ledger.started_from(),
            Start::Replay,
            "an entry written since"
        );
        assert_eq!(
            ledger.balance("C").unwrap().posted,
            expected.0["C"].posted + 777
        );
        assert_eq!(ledger.derive("C").unwrap(), ledger.balance("C").unwrap());
        ledger.checkpoint().await.unwrap();
    }
    tokio::time::sleep(Duration::from_millis(5)).await;
    // An account opened behind its back.
    {
        put_behind_its_back(
            dir.path(),
            cyberswitch::store::Cf::LedgerAccounts,
            b"E",
            b"{}",
        );
    }
    tokio::time::sleep(Duration::from_millis(5)).await;
    let ledger = open_at(dir.path(), clock.clone());
    assert_eq!(
        ledger.started_from(),
        Start::Replay,
        "an account opened since"
    );
    assert!(ledger.balance("E").is_some());
}

/// A stop while legs are being written: each write either lands before the walk reads its
/// account or is refused, so the checkpoint equals what the entries say.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_checkpoint_taken_under_load_equals_the_entries() {
    use cyberswitch::ledger::Start;
    let dir = tempfile::tempdir().unwrap();
    let clock = Arc::new(cyberswitch::clock::ManualClock::new(chrono::Utc::now()));
    let accounts = ["A", "B", "C"];
    let expected = {
        let ledger = open_at(dir.path(), clock.clone());
        for a in accounts {
            ledger.open_account(a, "P").await.unwrap();
            ledger
                .credit(a, 1_000_000, &format!("load-{a}"))
                .await
                .unwrap();
        }
        let writers: Vec<_> = (0..6)
            .map(|t| {
                let ledger = ledger.clone();
                tokio::spawn(async move {
                    for i in 0.. {
                        let a = ["A", "B", "C"][(t + i) % 3];
                        let leg = format!("w{t}-{i}");
                        let done = if i % 2 == 0 {
                            ledger.hold(a, 7, &leg).await
                        } else {
                            ledger.debit(a, 3, &leg).await
                        };
                        match done {
                            Ok(_) => {}
                            Err(LedgerError::Stopped) => return i,
                            Err(e) => panic!("{e}"),
                        }
                    }
                    unreachable!()
                })
            })
            .collect();
        tokio::time::sleep(Duration::from_millis(100)).await;
        ledger.checkpoint().await.unwrap();
        for w in writers {
            w.await.unwrap();
        }
        for a in accounts {
            assert_eq!(ledger.derive(a).unwrap(), ledger.balance(a).unwrap(), "{a}");
        }
        memory(&ledger)
    };
    tokio::time::sleep(Duration::from_millis(5)).await;
    {
        let ledger = open_at(dir.path(), clock.clone());
        assert_eq!(ledger.started_from(), Start::Checkpoint);
        assert_eq!(memory(&ledger), expected);
    }
    tokio::time::sleep(Duration::from_millis(5)).await;
    let ledger = open_at(dir.path(), clock);
    assert_eq!(ledger.started_from(), Start::Replay);
    assert_eq!(memory(&ledger), expected, "the replay agrees");
}

/// A caller that stops waiting (a client gone, a deadline) after its step was handed to the
/// journal: the step lands, and memory still takes it before the account's lock is let go —
/// balances, open holds and pending holds stay what the entries say.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_write_whose_caller_stops_waiting_still_reaches_memory() {
    use futures::FutureExt;
    let dir = tempfile::tempdir().unwrap();
    let clock = Arc::new(cyberswitch::clock::ManualClock::new(chrono::Utc::now()));
    let expected = {
        let ledger = open_at(dir.path(), clock.clone());
        ledger.open_account("A", "P").await.unwrap();
        ledger.credit("A", 100_000, "load").await.unwrap();
        for i in 0..150 {
            // Polled once, then dropped: most are waiting for the writer by then.
            match i % 3 {
                0 => drop(ledger.credit("A", 11, &format!("c{i}")).now_or_never()),
                1 => drop(ledger.debit("A", 7, &format!("d{i}")).now_or_never()),
                _ => drop(ledger.hold("A", 5, &format!("h{i}")).now_or_never()),
            }
            // The next write on the account first settles what the dropped one left.
            ledger.credit("A", 1, &format!("s{i}")).await.unwrap();
            assert_eq!(
                ledger.derive("A").unwrap(),
                ledger.balance("A").unwrap(),
                "after call {i}"
            );
        }
        let b = ledger.balance("A").unwrap();
        assert_eq!(
            ledger.derive("A").unwrap(),
            b,
            "memory is what the entries say"
        );
        // A call dropped before it took the lock did nothing; every other one is in both.
        let holds = ledger
            .history("A")
            .unwrap()
            .iter()
            .filter(|e| e.kind == cyberswitch::ledger::EntryType::Hold)
            .count();
        assert!(holds > 0);
        assert_eq!(b.pending, 5 * holds as i64);
        assert_eq!(ledger.open_holds(), holds as i64);
        assert_eq!(ledger.pending_holds().len(), holds);
        // Without a further write: a settled read sees a dropped write at once, and it is
        // settled on its own soon after (a task waits for the step).
        drop(ledger.credit("A", 13, "alone-0").now_or_never());
        assert_eq!(
            ledger.settled_balance("A").await.unwrap(),
            ledger.derive("A").unwrap()
        );
        let landed = dropped_and_landed(&ledger).await;
        assert!(
            landed.is_some(),
            "no call was dropped after its step was queued"
        );
        let mut settled = false;
        for _ in 0..500 {
            if ledger.balance("A").unwrap() == ledger.derive("A").unwrap() {
                settled = true;
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        assert!(settled, "the dropped write was settled on its own");
        let b = ledger.balance("A").unwrap();
        assert_eq!(ledger.derive("A").unwrap(), b);
        // The next write checks the balance the entries give.
        ledger.debit("A", b.available(), "all").await.unwrap();
        assert!(matches!(
            ledger.debit("A", 1, "one-more").await,
            Err(LedgerError::Insufficient { available: 0 })
        ));
        memory(&ledger)
    };
    tokio::time::sleep(Duration::from_millis(5)).await;
    let ledger = open_at(dir.path(), clock);
    assert_eq!(memory(&ledger), expected, "a full replay agrees");
}

/// Two partial refunds of one purchase at once: together they take back exactly the points
/// the purchase earned, never more (each reads what the other took back under the locks).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_partial_refunds_take_back_the_earned_points_once() {
    let dir = tempfile::tempdir().unwrap();
    let ledger = open(dir.path(), Duration::from_secs(600));
    ledger.open_account("M", "KRW").await.unwrap();
    ledger.open_account("P", "PTS").await.unwrap();
    ledger.credit("M", 10_000_000, "load").await.unwrap();
    for round in 0..40 {
        let (buy, pts) = (format!("buy-{round}"), format!("pts-{round}"));
        ledger
            .debit_crediting(
                cyberswitch::journal::Step::new(),
                "M",
                10_000,
                &buy,
                ("P", 1_000, &pts),
            )
            .await
            .unwrap();
        let refunds: Vec<_> = (0..2)
            .map(|i| {
                let (ledger, buy, pts) = (ledger.clone(), buy.clone(), pts.clone());
                tokio::spawn(async move {
                    ledger
                        .refund_leg(&buy, &format!("{buy}-r{i}"), 5_000, Some(&pts))
                        .await
                        .unwrap()
                })
            })
            .collect();
        for r in refunds {
            r.await.unwrap();
        }
        assert_eq!(
            ledger.balance("P").unwrap().posted,
            0,
            "round {round}: the points earned, taken back once"
        );
    }
    assert_eq!(ledger.balance("M").unwrap().posted, 10_000_000);
    assert_eq!(ledger.derive("P").unwrap(), ledger.balance("P").unwrap());
}

/// A wall clock set back across midnight: an entry of the day written before one that looks
/// older is still the day's, and the opening is still what the entries before the day add up to.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_clock_set_back_hides_no_entry_from_its_days_statement() {
    const DAY: i64 = 86_400_000;
    let dir = tempfile::tempdir().unwrap();
    let t0 = chrono::DateTime::parse_from_rfc3339("2026-03-01T23:00:00Z")
        .unwrap()
        .with_timezone(&chrono::Utc);
    let clock = Arc::new(cyberswitch::clock::ManualClock::new(t0));
    let ledger = open_at(dir.path(), clock.clone());
    ledger.open_account("A", "P").await.unwrap();
    ledger.credit("A", 1_000, "before").await.unwrap();
    clock.advance(chrono::Duration::minutes(65)); // 00:05 of the next day
    ledger.credit("A", 20, "of-the-day").await.unwrap();
    clock.advance(chrono::Duration::minutes(-10)); // set back to 23:55
    ledger.credit("A", 300, "looks-older").await.unwrap();
    let start = t0.timestamp_millis() + DAY / 24; // midnight
    let (opening, entries) = ledger.day("A", start, start + DAY).await.unwrap();
    let legs: Vec<_> = entries.iter().map(|e| e.leg.as_str()).collect();
    assert_eq!(legs, ["of-the-day"]);
    assert_eq!(
        opening.posted,
        1_000 + 300,
        "the entries dated before the day"
    );
}

/// A completion whose points go to the leg's own account: memory keeps both the posting and
/// the points (each change applied on top of the other, as the entries are).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_completion_crediting_its_own_account_keeps_both_in_memory() {
    let dir = tempfile::tempdir().unwrap();
    let ledger = open(dir.path(), Duration::from_secs(600));
    ledger.open_account("A", "P").await.unwrap();
    ledger.credit("A", 1_000, "load").await.unwrap();
    ledger.hold("A", 400, "h").await.unwrap();
    let b = ledger
        .complete_crediting("h", 300, Some(("A", 20, "pts")))
        .await
        .unwrap();
    assert_eq!(b, ledger.balance("A").unwrap());
    assert_eq!(ledger.derive("A").unwrap(), ledger.balance("A").unwrap());
    assert_eq!(ledger.balance("A").unwrap().posted, 1_000 - 300 + 20);
    assert_eq!(ledger.balance("A").unwrap().pending, 0);
}

/// A checkpoint record that does not decode is not used: the start replays the entries.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_damaged_checkpoint_is_not_used() {
    use cyberswitch::ledger::Start;
    let dir = tempfile::tempdir().unwrap();
    let clock = Arc::new(cyberswitch::clock::ManualClock::new(chrono::Utc::now()));
    {
        let ledger = open_at(dir.path(), clock.clone());
        ledger.open_account("A", "P").await.unwrap();
        ledger.credit("A", 500, "in").await.unwrap();
        ledger.checkpoint().await.unwrap();
    }
    tokio::time::sleep(Duration::from_millis(5)).await;
    {
        put_behind_its_back(
            dir.path(),
            cyberswitch::store::Cf::Meta,
            b"ledger-checkpoint/a/A",
            b"\xff\xff\xff",
        );
    }
    tokio::time::sleep(Duration::from_millis(5)).await;
    let ledger = open_at(dir.path(), clock);
    assert_eq!(ledger.started_from(), Start::Replay);
    assert_eq!(ledger.balance("A").unwrap().posted, 500);
}

/// A credit of 17 to "A" polled once and dropped after its step was queued (one dropped
/// before it took the lock writes nothing: tried again), once its step has landed; its leg.
async fn dropped_and_landed(ledger: &Ledger) -> Option<String> {
    use futures::FutureExt;
    for i in 0..100 {
        let leg = format!("alone-{i}");
        if ledger.credit("A", 17, &leg).now_or_never().is_some() {
            continue; // landed within its first poll: not dropped
        }
        for _ in 0..100 {
            if ledger.leg_state(&leg).unwrap().is_some() {
                return Some(leg);
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
    None
}

/// One record written straight into a stopped ledger's store, as a build or tool that knows
/// nothing of the ledger's memory would.
fn put_behind_its_back(
    dir: &std::path::Path,
    cf: cyberswitch::store::Cf,
    key: &[u8],
    value: &[u8],
) {
    let store = cyberswitch::store::open(dir).unwrap();
    let mut batch = store.batch();
    batch.put(cf, key, value).unwrap();
    store.write(batch, true).unwrap();
}
