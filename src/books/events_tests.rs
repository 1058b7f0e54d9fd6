//! The books' events kept by date then terminal: a terminal's totals read from its own
//! events only, and a store from before (events by date then link) still read.

use std::path::Path;
use std::sync::Arc;

use chrono::TimeZone;

use super::*;
use crate::clock::ManualClock;
use crate::journal::Sealer;
use crate::store::Store;

async fn books(store: Store) -> Arc<Books> {
    let config = Config::from_toml(
        "data_dir = \"x\"\n\
         card_key = \"000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f\"\n\
         [[link]]\nname = \"acq1\"\nkind = \"acquirer\"\nhosts = [\"127.0.0.1:1\"]\n",
        Path::new("t.toml"),
    )
    .unwrap();
    let journal = Journal::open(store, Sealer::from_card_key(&[7u8; 32]), 64).unwrap();
    let clock = Arc::new(ManualClock::new(
        chrono::Utc.with_ymd_and_hms(2026, 12, 7, 3, 0, 0).unwrap(),
    ));
    Books::open(journal, clock, &config).await.unwrap()
}

fn debit(terminal: &str, amount: u64) -> Event {
    Event {
        kind: EventKind::Debit,
        units: amount,
        amount,
        merchant: "M1".into(),
        terminal: terminal.into(),
    }
}

async fn book(books: &Books, txn: &str, terminal: &str, amount: u64) {
    book_leg(books, txn, 0, terminal, amount).await
}

async fn book_leg(books: &Books, txn: &str, leg: usize, terminal: &str, amount: u64) {
    let mut step = Step::new();
    let at = LegAt {
        link: "acq1",
        txn,
        leg,
    };
    books.book(
        &mut step,
        books.open_date(),
        at,
        'D',
        &debit(terminal, amount),
        None,
    );
    books.journal.commit(step).await.unwrap();
}

#[tokio::test]
async fn a_terminals_totals_are_its_own_events_whatever_its_id_holds() {
    let books = books(Store::memory()).await;
    let date = books.open_date();
    book(&books, "TERMINAL01|000001|1207030000", "TERMINAL01", 100).await;
    book(&books, "TERMINAL01|000002|1207030000", "TERMINAL01", 250).await;
    // A second leg of a transaction: one debit to the terminal.
    book_leg(&books, "TERMINAL01|000002|1207030000", 1, "TERMINAL01", 50).await;
    book(&books, "TERMINAL01/X|000001|1207030000", "TERMINAL01/X", 7).await;
    book(&books, "T2|000001|1207030000", "T2", 40).await;
    let t1 = books.terminal_totals(date, "TERMINAL01").unwrap();
    assert_eq!((t1.debits, t1.debits_amount), (2, 400));
    let slash = books.terminal_totals(date, "TERMINAL01/X").unwrap();
    assert_eq!((slash.debits, slash.debits_amount), (1, 7));
    let none = books.terminal_totals(date, "T3").unwrap();
    assert_eq!(none.debits, 0);
    // Only the terminal's own keys are read.
    let own = books
        .journal
        .scan(Cf::Books, format!("f/{}/T2/", day::iso(date)).as_bytes())
        .unwrap();
    assert_eq!(own.len(), 1);
    // Every event of the date, each with its link and transaction.
    let mut all: Vec<(String, String)> = books
        .events(date)
        .unwrap()
        .into_iter()
        .map(|(link, txn, _)| (link, txn))
        .collect();
    all.sort();
    let txns: Vec<&str> = all.iter().map(|(_, t)| t.as_str()).collect();
    assert_eq!(
        txns,
        [
            "T2|000001|1207030000",
            "TERMINAL01/X|000001|1207030000",
            "TERMINAL01|000001|1207030000",
            "TERMINAL01|000002|1207030000",
            "TERMINAL01|000002|1207030000",
        ]
    );
    assert!(all.iter().all(|(link, _)| link == "acq1"));
}

/// Events as a store from before kept them: by date, then link.
#[tokio::test]
async fn events_of_a_store_from_before_are_still_read() {
    let books = books(Store::memory()).await;
    let date = books.open_date();
    let mut step = Step::new();
    for (txn, terminal, amount) in [
        ("TERMINAL01|000009|1207020000", "TERMINAL01", 30),
        ("T2|000009|1207020000", "T2", 5),
    ] {
        step.put(
            Cf::Books,
            format!("e/{}/acq1/{txn}/000/D", day::iso(date)),
            stored::to_bytes(&debit(terminal, amount)),
        );
    }
    books.journal.commit(step).await.unwrap();
    book(&books, "TERMINAL01|000010|1207030000", "TERMINAL01", 100).await;
    let t1 = books.terminal_totals(date, "TERMINAL01").unwrap();
    assert_eq!((t1.debits, t1.debits_amount), (2, 130));
    let links = books.link_totals(date).unwrap();
    assert_eq!(links["acq1"].debits_amount, 135);
    let txns: Vec<String> = books
        .events(date)
        .unwrap()
        .into_iter()
        .map(|e| e.1)
        .collect();
    assert!(
        txns.contains(&"T2|000009|1207020000".to_string()),
        "{txns:?}"
    );
}
