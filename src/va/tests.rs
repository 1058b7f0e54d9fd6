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
    let va = VirtualAccounts::new(journal, clock.clone(), config, outbox).unwrap();
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

/// What the free-account index must hold: exactly the accounts with no order that are not
/// retired, under their pool (read from the accounts themselves, as assignments did before
/// the index).
fn check_free_index(va: &VirtualAccounts) {
    let store = va.journal.store();
    let mut free = std::collections::BTreeSet::new();
    for (_, raw) in store.scan(Cf::VirtualAccounts, b"a/").unwrap() {
        let pa: PoolAccount = serde_json::from_slice(&raw).unwrap();
        if pa.order.is_none() && !pa.retired {
            free.insert(keys::free_key(
                &pa.partner,
                &pa.bank,
                &pa.region,
                &pa.account,
            ));
        }
    }
    let indexed: std::collections::BTreeSet<Vec<u8>> = store
        .scan(Cf::VirtualAccounts, b"f/")
        .unwrap()
        .into_iter()
        .map(|(k, _)| k)
        .collect();
    assert_eq!(indexed, free, "the free-account index");
}

/// Every open order owns its account, and that account is in the order's pool.
fn check_open_orders_own_their_accounts(va: &VirtualAccounts) {
    for (_, raw) in va.journal.scan(Cf::VirtualAccounts, keys::ORDERS).unwrap() {
        let o: Order = serde_json::from_slice(&raw).unwrap();
        if o.status != OrderStatus::Open {
            continue;
        }
        let pa = va.account(&o.bank, &o.account).unwrap().unwrap();
        assert_eq!(pa.order.as_deref(), Some(o.order.as_str()), "{o:?} {pa:?}");
        assert_eq!(
            (&pa.partner, &pa.region),
            (&o.partner, &o.region),
            "{o:?} {pa:?}"
        );
    }
}

/// Whether an assignment in the pool can succeed: an account of it free, or carrying an
/// open order past its time (the walk assignments made before the index).
fn assignable(va: &VirtualAccounts, partner: &str, region: &str) -> bool {
    let now = va.now_ms();
    let prefix = keys::pool_prefix(partner, "004", region);
    va.journal
        .scan(Cf::VirtualAccounts, prefix.as_bytes())
        .unwrap()
        .into_iter()
        .any(|(k, _)| {
            let account = String::from_utf8_lossy(&k[prefix.len()..]);
            let pa = va.account("004", &account).unwrap().unwrap();
            !pa.retired
                && pa.order.is_none_or(|o| {
                    let o = va.order_stored(&o).unwrap().unwrap();
                    o.status == OrderStatus::Open && o.status_at(now) == OrderStatus::Expired
                })
        })
}

/// Random pool changes (accounts retired from one pool and added to another), assignments,
/// payments, reversals, expiries and sweeps: after every one the free-account index holds
/// exactly the free accounts, every open order owns an account of its own pool, and an
/// assignment fails (exhausted) exactly when no account of its pool is free or past its
/// order's time.
#[tokio::test]
async fn the_free_index_follows_every_change_and_assigns_as_the_walk_did() {
    let f = fixture();
    let mut seed: u64 = 0x9e37_79b9_7f4a_7c15;
    let mut next = |n: u64| {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed % n
    };
    let pools = [("P", "R"), ("P", "S"), ("Q", "R")];
    let (mut assigned, mut exhausted, mut paid, mut reversed, mut moved) = (0, 0, 0, 0, 0);
    let mut payments: Vec<String> = Vec::new();
    for step in 0..3_000 {
        let (partner, region) = pools[next(3) as usize];
        match next(8) {
            0 => {
                let add: Vec<String> = (0..1 + next(3)).map(|_| format!("A{}", next(8))).collect();
                let before: Vec<_> = add
                    .iter()
                    .map(|a| f.va.account("004", a).unwrap())
                    .collect();
                if f.va
                    .pool_add(partner, "004", region, &add, "t")
                    .await
                    .is_ok()
                {
                    moved += before
                        .iter()
                        .flatten()
                        .filter(|pa| pa.partner != partner || pa.region != region)
                        .count();
                }
            }
            1 => {
                let one = vec![format!("A{}", next(8))];
                let _ = f.va.pool_retire(partner, "004", region, &one, "t").await;
            }
            2 | 3 => {
                let could = assignable(&f.va, partner, region);
                let order = format!("O{step}");
                let got =
                    f.va.assign(
                        partner,
                        "004",
                        region,
                        &order,
                        100 + next(900),
                        Some(30 + next(600)),
                    )
                    .await;
                match got {
                    Ok(o) => {
                        assert!(could, "assigned {} where the walk found nothing", o.account);
                        assigned += 1;
                    }
                    Err(VaError::Exhausted(_)) => {
                        assert!(!could, "exhausted where the walk found an account");
                        exhausted += 1;
                    }
                    Err(e) => panic!("{e}"),
                }
            }
            4 | 5 => {
                let a = format!("A{}", next(8));
                let Some(pa) = f.va.account("004", &a).unwrap() else {
                    continue;
                };
                let Some(o) = pa.order.and_then(|o| f.va.order(&o).unwrap()) else {
                    continue;
                };
                let key = format!("k{step}");
                let mut d = deposit(&a, o.amount, &key);
                d.advice = next(2) == 0;
                if f.va.deposit(&d).await.unwrap() == ResponseCode::Approved
                    && f.va.order(&o.order).unwrap().unwrap().status == OrderStatus::Paid
                {
                    paid += 1;
                    payments.push(key);
                }
            }
            6 if !payments.is_empty() => {
                let key = payments.swap_remove(next(payments.len() as u64) as usize);
                let request = Entry::new(EntryKind::In, "t", "bank", "reversal".into());
                f.va.reverse_deposit("bank", &key, request).await.unwrap();
                reversed += 1;
            }
            _ => {
                f.clock.advance(chrono::Duration::seconds(next(90) as i64));
                if next(3) == 0 {
                    f.va.sweep().await.unwrap();
                }
            }
        }
        check_free_index(&f.va);
        check_open_orders_own_their_accounts(&f.va);
    }
    // The sequence went through every kind of change.
    assert!(
        assigned > 200 && exhausted > 20 && paid > 50 && reversed > 20 && moved > 10,
        "{assigned} {exhausted} {paid} {reversed} {moved}"
    );
}

/// A store written before the indexes (no `c/`, `n/`, `f/` keys, no marker) is indexed at
/// the next start: assignments, the report and the listings read it as before.
#[tokio::test]
async fn records_kept_before_the_indexes_are_indexed_at_start() {
    let f = fixture();
    let accounts: Vec<String> = (0..4).map(|i| format!("A{i}")).collect();
    f.va.pool_add("P", "004", "R", &accounts, "t")
        .await
        .unwrap();
    for i in 0..3 {
        f.va.assign("P", "004", "R", &format!("O{i}"), 1_000, None)
            .await
            .unwrap();
    }
    let mut unmatched = deposit("A3", 9, "m-1");
    unmatched.advice = true;
    f.va.deposit(&unmatched).await.unwrap();
    let report = f.va.report("P", None, None).unwrap();
    let store = f.va.journal.store();
    let mut batch = store.batch();
    let mut dropped = 0;
    for prefix in [&b"c/"[..], b"n/", b"f/", b"z/"] {
        for (k, _) in store.scan(Cf::VirtualAccounts, prefix).unwrap() {
            batch.delete(Cf::VirtualAccounts, &k).unwrap();
            dropped += 1;
        }
    }
    store.write(batch, true).unwrap();
    assert_eq!(
        dropped,
        3 + 1 + 1 + 1,
        "three orders, a mismatch, a free account, the marker"
    );

    let config = f.va.config.clone();
    let outbox = f.va.outbox.clone();
    let again =
        VirtualAccounts::new(f.va.journal.clone(), f.clock.clone(), config, outbox).unwrap();
    check_free_index(&again);
    let after = again.report("P", None, None).unwrap();
    assert_eq!((after.orders.count, after.mismatches.count), (3, 1));
    assert_eq!(
        (report.orders, report.mismatches),
        (after.orders, after.mismatches)
    );
    assert_eq!(again.mismatches(Some("P"), None, 10).unwrap().0.len(), 1);
    let o = again.assign("P", "004", "R", "O9", 5, None).await.unwrap();
    assert_eq!(o.account, "A3");
}

/// The collection report counts the orders and mismatches of its period only, by their
/// date in the books' time zone, through the partner's indexes (days on either side left
/// out, as are other partners').
#[tokio::test]
async fn the_report_counts_its_period_through_the_indexes() {
    let f = fixture();
    for (partner, n) in [("P", 5), ("Q", 5)] {
        let accounts: Vec<String> = (0..n).map(|i| format!("{partner}{i}")).collect();
        f.va.pool_add(partner, "004", "R", &accounts, "t")
            .await
            .unwrap();
    }
    let mut days = Vec::new();
    for day in 0..5u64 {
        let date = f
            .clock
            .now()
            .with_timezone(&f.va.config.books.time_zone)
            .date_naive();
        days.push(date);
        for partner in ["P", "Q"] {
            let order = format!("{partner}-{day}");
            f.va.assign(partner, "004", "R", &order, 100 * (day + 1), Some(3_600))
                .await
                .unwrap();
        }
        let mut unmatched = deposit("P0", 7, &format!("m-{day}"));
        unmatched.advice = true;
        f.va.deposit(&unmatched).await.unwrap();
        f.clock.advance(chrono::Duration::days(1));
        f.va.sweep().await.unwrap();
    }
    let r = f.va.report("P", Some(days[1]), Some(days[3])).unwrap();
    assert_eq!(
        r.orders,
        report::CountAmount {
            count: 3,
            amount: 200 + 300 + 400
        }
    );
    assert_eq!(r.expired.count, 3);
    assert_eq!(
        r.mismatches,
        report::CountAmount {
            count: 3,
            amount: 21
        }
    );
    let all = f.va.report("P", None, None).unwrap();
    assert_eq!((all.orders.count, all.mismatches.count), (5, 5));
    let one = f.va.report("P", Some(days[4]), Some(days[4])).unwrap();
    assert_eq!(one.orders.amount, 500);
}

/// Mismatches are listed a page at a time: the pages together are the whole list, oldest
/// first, each a partner's own when one is named.
#[tokio::test]
async fn mismatches_are_listed_a_page_at_a_time() {
    let f = fixture();
    f.va.pool_add("P", "004", "R", &["PA".to_string()], "t")
        .await
        .unwrap();
    f.va.pool_add("Q", "004", "R", &["QA".to_string()], "t")
        .await
        .unwrap();
    for i in 0..7u64 {
        let account = if i % 3 == 0 { "QA" } else { "PA" };
        let mut d = deposit(account, i + 1, &format!("m-{i}"));
        d.advice = true;
        f.va.deposit(&d).await.unwrap();
        f.clock.advance(chrono::Duration::seconds(1));
    }
    let pages = |partner: Option<&'static str>| {
        let mut all = Vec::new();
        let mut after: Option<String> = None;
        let mut pages = 0;
        loop {
            let (page, next) = f.va.mismatches(partner, after.as_deref(), 2).unwrap();
            assert!(page.len() <= 2);
            all.extend(page.into_iter().map(|m| m.amount));
            pages += 1;
            match next {
                Some(n) => after = Some(n),
                None => return (all, pages),
            }
        }
    };
    assert_eq!(pages(None), ((1..=7).collect::<Vec<u64>>(), 4));
    assert_eq!(
        pages(Some("P")),
        (vec![2, 3, 5, 6], 2),
        "no empty page at the end"
    );
    assert_eq!(pages(Some("Q")).0, vec![1, 4, 7]);
}

/// Each payment of an order has a callback of its own: one after a bank reversal (the order
/// reopened) does not reuse the first payment's id.
#[tokio::test]
async fn a_payment_after_a_reversal_gets_a_callback_of_its_own() {
    let f = fixture();
    f.va.pool_add("P", "004", "R", &["A1".to_string()], "t")
        .await
        .unwrap();
    f.va.assign("P", "004", "R", "O1", 500, Some(3_600))
        .await
        .unwrap();
    assert_eq!(
        f.va.deposit(&deposit("A1", 500, "k1")).await.unwrap(),
        ResponseCode::Approved
    );
    let request = Entry::new(EntryKind::In, "t", "bank", "reversal".into());
    f.va.reverse_deposit("bank", "k1", request).await.unwrap();
    assert_eq!(f.va.order("O1").unwrap().unwrap().status, OrderStatus::Open);
    assert_eq!(
        f.va.deposit(&deposit("A1", 500, "k2")).await.unwrap(),
        ResponseCode::Approved
    );
    let ids: Vec<String> =
        f.va.outbox
            .list(Some("P"), None, 10)
            .unwrap()
            .into_iter()
            .map(|i| i.id)
            .collect();
    let paid: Vec<&String> = ids.iter().filter(|i| i.starts_with("va-paid-O1")).collect();
    assert_eq!(paid.len(), 2, "{ids:?}");
    assert_eq!(paid[0], "va-paid-O1");
    assert!(
        ids.iter().any(|i| i.starts_with("va-reversed-O1")),
        "{ids:?}"
    );
}
