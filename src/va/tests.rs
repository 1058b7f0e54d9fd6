//! The virtual accounts on a manual clock (expiry and the duplicate window follow it).

use super::*;
use crate::clock::ManualClock;
use crate::iso8583::ResponseCode;
use crate::journal::EntryKind;

struct Fixture {
    va: Arc<VirtualAccounts>,
    clock: Arc<ManualClock>,
}

fn fixture() -> Fixture {
    let text = format!(
        "data_dir = \"x\"\ncard_key = \"{}\"\n[limits]\nduplicate_window_s = 3600\n",
        "00".repeat(32)
    );
    let config = Arc::new(Config::from_toml(&text, std::path::Path::new("t.toml")).unwrap());
    let journal = Journal::open(
        crate::store::Store::memory(),
        crate::journal::Sealer::from_card_key(&[7u8; 32]),
        64,
    )
    .unwrap();
    let clock = Arc::new(ManualClock::new(chrono::Utc::now()));
    let outbox = Outbox::new(journal.clone(), clock.clone(), config.clone());
    let va = VirtualAccounts::new(journal, clock.clone(), config, outbox);
    Fixture { va, clock }
}

fn deposit(account: &str, amount: u64, key: &str) -> DepositMsg {
    DepositMsg {
        listener: "bank".into(),
        bank: "004".into(),
        mti: "0200".into(),
        advice: false,
        key: key.into(),
        account: account.into(),
        amount,
        stan: None,
        rrn: None,
        request: Entry::new(EntryKind::In, "t", "bank", "deposit".into()),
    }
}

/// On a clock of its own: the order expires exactly at its time, on read and by the
/// sweep; a deposit's outcome is remembered for the duplicate window, then forgotten.
#[tokio::test]
async fn expiry_and_the_duplicate_window_follow_the_clock() {
    let f = fixture();
    let accounts = vec!["A1".to_string()];
    f.va.pool_add("P", "004", "R", &accounts, "t")
        .await
        .unwrap();
    let o =
        f.va.assign("P", "004", "R", "O1", 500, Some(60))
            .await
            .unwrap();
    assert_eq!(o.account, "A1");
    f.clock.advance(chrono::Duration::seconds(59));
    assert_eq!(f.va.order("O1").unwrap().unwrap().status, OrderStatus::Open);
    f.clock.advance(chrono::Duration::seconds(1));
    assert_eq!(
        f.va.order("O1").unwrap().unwrap().status,
        OrderStatus::Expired
    );
    assert_eq!(f.va.sweep().await.unwrap(), 1);
    assert_eq!(f.va.sweep().await.unwrap(), 0, "swept once");

    f.va.assign("P", "004", "R", "O2", 700, None).await.unwrap();
    let d = deposit("A1", 700, "r-1");
    assert_eq!(f.va.deposit(&d).await.unwrap(), ResponseCode::Approved);
    assert_eq!(f.va.deposit(&d).await.unwrap(), ResponseCode::Approved);
    f.clock.advance(chrono::Duration::seconds(3_599));
    f.va.sweep().await.unwrap();
    assert_eq!(
        f.va.deposit(&d).await.unwrap(),
        ResponseCode::Approved,
        "still within the window"
    );
    f.clock.advance(chrono::Duration::seconds(2));
    f.va.sweep().await.unwrap();
    // Forgotten: asked afresh, the account has no open order now.
    assert_eq!(f.va.deposit(&d).await.unwrap(), ResponseCode::InvalidCard);
    let paid = f.va.order("O2").unwrap().unwrap();
    assert_eq!(paid.status, OrderStatus::Paid);
    assert_eq!(f.va.report("P", None, None).unwrap().collected, 700);
}
