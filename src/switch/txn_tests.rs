//! Tests of [`super`] (the transaction record's steps and retention).

use super::*;
use crate::store::{self, Expiry};
use std::time::Duration;

fn record(state: TxnState, at_ms: i64) -> Vec<u8> {
    TxnRecord {
        state,
        code: "00".into(),
        legs: Vec::new(),
        summary: Some(TxnSummary {
            at_ms,
            ..TxnSummary::default()
        }),
        refund_of: None,
    }
    .to_bytes()
}

#[test]
fn compactions_drop_answered_transactions_past_retention_and_keep_open_ones() {
    let dir = tempfile::tempdir().unwrap();
    let day = Duration::from_secs(86_400);
    let opened = store::open_with(
        dir.path(),
        Expiry {
            dedup_window: None,
            txns: Some((day, ended_at_ms)),
        },
    )
    .unwrap();
    let db = opened.rocks().unwrap();
    let now = chrono::Utc::now().timestamp_millis();
    let two_days_ago = now - 2 * 86_400_000;
    let cf = store::handle(db, Cf::Txns).unwrap();
    db.put_cf(
        cf,
        b"old-answered",
        record(TxnState::Answered, two_days_ago),
    )
    .unwrap();
    db.put_cf(
        cf,
        b"old-reversed",
        record(TxnState::Reversed, two_days_ago),
    )
    .unwrap();
    db.put_cf(cf, b"old-open", record(TxnState::Open, two_days_ago))
        .unwrap();
    db.put_cf(cf, b"recent", record(TxnState::Answered, now))
        .unwrap();
    db.put_cf(cf, b"unreadable", b"\x09?").unwrap();
    db.compact_range_cf(cf, None::<&[u8]>, None::<&[u8]>);
    let mut left: Vec<String> = store::scan(&opened, Cf::Txns, b"")
        .unwrap()
        .into_iter()
        .map(|(k, _)| String::from_utf8(k).unwrap())
        .collect();
    left.sort();
    assert_eq!(left, ["old-open", "recent", "unreadable"]);
}
