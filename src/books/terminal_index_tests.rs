//! The books' terminal index: a terminal's totals read from its own events, the same as
//! going through every event of the date, and a store from before the index still summed.

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
    let mut step = Step::new();
    let at = LegAt {
        link: "acq1",
        txn,
        leg: 0,
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
    assert_eq!(
        books.terminal_index_from, date,
        "a fresh store indexes from its first day"
    );
    book(&books, "T1|000001|1207030000", "T1", 100).await;
    book(&books, "T1|000002|1207030000", "T1", 250).await;
    book(&books, "T1/X|000001|1207030000", "T1/X", 7).await;
    book(&books, "T2|000001|1207030000", "T2", 40).await;
    let t1 = books.terminal_totals(date, "T1").unwrap();
    assert_eq!((t1.debits, t1.debits_amount), (2, 350));
    let slash = books.terminal_totals(date, "T1/X").unwrap();
    assert_eq!((slash.debits, slash.debits_amount), (1, 7));
    let none = books.terminal_totals(date, "T3").unwrap();
    assert_eq!(none.debits, 0);
    // Only the terminal's own keys are read.
    let own = books
        .journal
        .scan(Cf::Books, format!("t/{}/T2/", day::iso(date)).as_bytes())
        .unwrap();
    assert_eq!(own.len(), 1);
}

#[tokio::test]
async fn books_from_before_the_index_are_summed_from_every_event_of_their_dates() {
    let store = Store::memory();
    let first = books(store.clone()).await;
    let date = first.open_date();
    book(&first, "T1|000001|1207030000", "T1", 100).await;
    // As a store written before the index: no terminal keys, no index date.
    let mut step = Step::new();
    for (key, _) in first.journal.scan(Cf::Books, b"t/").unwrap() {
        step.delete(Cf::Books, key);
    }
    step.delete(Cf::Meta, TERMINAL_INDEX_KEY);
    first.journal.commit(step).await.unwrap();
    drop(first);

    let reopened = books(store).await;
    assert_eq!(reopened.terminal_index_from, date.succ_opt().unwrap());
    let t1 = reopened.terminal_totals(date, "T1").unwrap();
    assert_eq!(
        (t1.debits, t1.debits_amount),
        (1, 100),
        "the open date summed the old way"
    );
}
