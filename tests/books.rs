//! F13 (issue 22): business dates, cut-over with 0500/0510 reconciliation of every upstream
//! link, and settlement reports — over the demo's real switch and simulators, real TCP and
//! RocksDB in a temp dir. The report's figures are checked against the simulators' own
//! balances, not against the switch's idea of them.

mod common;

use common::{code, copy_dir, number, reversal_of};

use std::collections::HashMap;
use std::path::Path;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;
use std::time::Duration;

use cyberswitch::books::cutover::{cutover, Closing, Status};
use cyberswitch::books::{day, report};
use cyberswitch::demo::{self, Demo, DemoPorts};
use cyberswitch::iso8583::{OwnedMessage, Spec};
use tokio_util::sync::CancellationToken;

/// E-money E-1002 (5,000), the rest on credit at ACQ1.
const SPLIT_CARD: &str = "9410000000000039";
/// Gift G-3001, e-money E-1001, mileage M-2001 (2 points per won).
const THREE_WALLETS: &str = "9410000000000013";
/// No wallets: plain credit at ACQ1.
const CREDIT_CARD: &str = "9410000000000021";
/// ACQ1 declines it (05).
const DECLINED_CARD: &str = "9410000000000047";
const ISSUER_SIMS: [&str; 3] = ["EMONEY", "GIFT", "MILEAGE"];
const MERCHANT: &str = "MERCHANT0000001";

struct Env {
    demo: Option<Demo>,
    stop: CancellationToken,
    spec: Arc<Spec>,
    stan: AtomicU32,
}

impl Drop for Env {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

async fn env(dir: &Path) -> Env {
    common::init_logs();
    let (demo, stop) = common::start_demo(dir, "").await;
    Env {
        demo: Some(demo),
        stop,
        spec: common::terminal_spec(),
        stan: AtomicU32::new(300),
    }
}

impl Env {
    fn demo(&self) -> &Demo {
        self.demo.as_ref().unwrap()
    }

    fn message(&self, mti: &[u8; 4], pc: &str, amount: u64) -> OwnedMessage {
        let stan = self.stan.fetch_add(1, Ordering::Relaxed);
        common::terminal_request(mti, pc, amount, stan, "TERMBK01", MERCHANT)
    }

    fn purchase(&self, card: &str, amount: u64) -> OwnedMessage {
        let mut m = self.message(b"0200", "000000", amount);
        m.set(2, card.as_bytes());
        m
    }

    fn refund_by_90(&self, original: &OwnedMessage, amount: u64) -> OwnedMessage {
        let mut m = self.message(b"0200", "200000", amount);
        m.set_original_data(&common::original_data_of(original));
        m
    }

    fn reversal(&self, original: &OwnedMessage) -> OwnedMessage {
        let stan = self.stan.fetch_add(1, Ordering::Relaxed);
        reversal_of(
            original,
            u64::from(stan),
            &cyberswitch::clock::transmission_time(),
        )
    }

    async fn call(&self, m: &OwnedMessage) -> OwnedMessage {
        common::call(self.demo(), &self.spec, m).await
    }

    /// Every simulator's balances summed.
    fn holdings(&self) -> HashMap<&'static str, i64> {
        ISSUER_SIMS
            .into_iter()
            .chain(["ACQ1"])
            .map(|s| (s, self.demo().sim(s).unwrap().total_balance()))
            .collect()
    }

    async fn drained(&self) {
        common::drained(self.demo()).await
    }

    async fn cutover(&self) -> Vec<Closing> {
        let switch = &self.demo().running.switch;
        cutover(&switch.books, &switch.links).await.unwrap()
    }

    fn report(&self, date: chrono::NaiveDate) -> report::Settlement {
        let switch = &self.demo().running.switch;
        report::settlement(&switch.books, date, 410).unwrap()
    }

    /// Purchases, a reversal, a refund and a decline, their store-and-forward drained.
    async fn mixed_run(&self) {
        let split = self.purchase(SPLIT_CARD, 12_000);
        assert_eq!(code(&self.call(&split).await), "00");
        assert_eq!(
            code(&self.call(&self.purchase(THREE_WALLETS, 20_000)).await),
            "00"
        );
        let credit = self.purchase(CREDIT_CARD, 3_000);
        assert_eq!(code(&self.call(&credit).await), "00");
        assert_eq!(code(&self.call(&self.reversal(&credit)).await), "00");
        let refund = self.call(&self.refund_by_90(&split, 4_000)).await;
        assert_eq!(code(&refund), "00");
        assert_eq!(
            code(&self.call(&self.purchase(DECLINED_CARD, 1_000)).await),
            "05"
        );
        self.drained().await;
    }
}

fn line<'a>(lines: &'a [report::PartyLine], id: &str) -> &'a report::PartyLine {
    lines
        .iter()
        .find(|l| l.id == id)
        .unwrap_or_else(|| panic!("no line for {id}: {lines:?}"))
}

/// The issue's acceptance: after purchases, a reversal, a refund and a decline, the cut-over
/// finds every upstream link in agreement; the closed day's report nets each issuer and the
/// acquirer exactly to what the simulators' own balances moved; the terminal's 0500 gets the
/// switch's totals; and the report of the closed day stays the same after more traffic and
/// after a restart.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_mixed_day_reconciles_and_its_report_equals_the_simulators_to_the_unit() {
    let dir = tempfile::tempdir().unwrap();
    let mut e = env(dir.path()).await;
    let before = e.holdings();
    let date = e.demo().running.switch.books.open_date();

    // Answers name the business date in field 15.
    let paid = e.call(&e.purchase(THREE_WALLETS, 1_000)).await;
    assert_eq!(code(&paid), "00");
    assert_eq!(paid.get(15), Some(day::mmdd(date).as_bytes()));
    e.mixed_run().await;

    // The terminal asks for its own totals: 4 purchases (one reversed), one refund.
    let mut ask = e.message(b"0500", "000000", 0);
    ask.set(15, day::mmdd(date).as_bytes());
    let totals = e.call(&ask).await;
    assert_eq!(totals.mti().as_bytes(), b"0510");
    assert_eq!(code(&totals), "00");
    assert_eq!(number(&totals, 76), 4, "debits");
    assert_eq!(number(&totals, 88), 1_000 + 12_000 + 20_000 + 3_000);
    assert_eq!((number(&totals, 77), number(&totals, 89)), (1, 3_000));
    assert_eq!((number(&totals, 74), number(&totals, 86)), (1, 4_000));

    let closed = e.cutover().await;
    assert_eq!(closed.len(), 1);
    assert_eq!(closed[0].business_date, day::iso(date));
    let mut reconciled: Vec<&str> = closed[0].links.iter().map(|l| l.link.as_str()).collect();
    reconciled.sort();
    assert_eq!(reconciled, ["acq1", "emoney", "gift", "mileage"]);
    for l in &closed[0].links {
        assert_eq!(l.status, Status::Matched, "{l:?}");
        assert_eq!(l.theirs, Some(l.ours), "{l:?}");
    }
    assert_eq!(
        e.demo().running.switch.books.open_date(),
        date.succ_opt().unwrap()
    );

    let after = e.holdings();
    let closed_report = e.report(date);
    assert!(closed_report.closed);
    for sim in ISSUER_SIMS {
        let net = line(&closed_report.issuers, &sim.to_lowercase()).units.net;
        assert_eq!(
            net,
            before[sim] - after[sim],
            "{sim}: the day took what its accounts lost"
        );
    }
    let acq = line(&closed_report.acquirers, "acq1");
    assert_eq!(acq.units.net, after["ACQ1"] - before["ACQ1"]);
    assert_eq!(
        acq.net,
        12_000 - 5_000 - 4_000,
        "credit leg of the split less its refund"
    );
    let merchant = closed_report
        .merchants
        .iter()
        .find(|m| m.id == MERCHANT)
        .unwrap();
    assert_eq!(merchant.gross, 1_000 + 12_000 + 20_000 - 4_000);
    assert_eq!(merchant.net, merchant.gross - merchant.fees);
    // Transactions, not events: the reversed purchase's two events count once.
    assert_eq!(merchant.count, 5, "four purchases and a refund");
    assert_eq!(closed_report.terminals.len(), 1);
    assert_eq!(closed_report.terminals[0].count, 5);
    let frozen = serde_json::to_string(&closed_report).unwrap();

    // More traffic goes to the next day; the closed one does not move.
    assert_eq!(code(&e.call(&e.purchase(THREE_WALLETS, 2_000)).await), "00");
    e.drained().await;
    assert_eq!(serde_json::to_string(&e.report(date)).unwrap(), frozen);
    let next = e.report(date.succ_opt().unwrap());
    assert!(!next.closed);
    assert_eq!(next.merchants[0].gross, 2_000);

    // A restart reads the same closed day back. This process keeps the stopped demo's
    // databases locked until its runtime ends, so the restart runs on a copy of the data
    // directory taken after the stop: what a kill -9 would have left on disk.
    e.stop.cancel();
    drop(e.demo.take());
    tokio::time::sleep(Duration::from_millis(200)).await;
    let copy = tempfile::tempdir().unwrap();
    copy_dir(dir.path(), copy.path());
    let stop = CancellationToken::new();
    let d = demo::start(copy.path(), DemoPorts::ephemeral(), stop.clone())
        .await
        .expect("the demo restarts on its data directory");
    e.demo = Some(d);
    e.stop = stop;
    assert_eq!(
        e.demo().running.switch.books.open_date(),
        date.succ_opt().unwrap()
    );
    assert_eq!(serde_json::to_string(&e.report(date)).unwrap(), frozen);
}

/// A host that keeps different figures is reported mismatched — with its own figures — and
/// the others still match.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_skewed_simulator_is_reported_mismatched_with_its_own_figures() {
    let dir = tempfile::tempdir().unwrap();
    let e = env(dir.path()).await;
    e.mixed_run().await;
    e.demo().sim("GIFT").unwrap().skew_reconciliation(7);
    let closed = e.cutover().await;
    for l in &closed[0].links {
        if l.link == "gift" {
            assert_eq!(l.status, Status::Mismatched, "{l:?}");
            let theirs = l.theirs.expect("the host sends its figures");
            assert_eq!(theirs.debits_amount, l.ours.debits_amount + 7);
            assert_eq!(theirs.debits, l.ours.debits);
        } else {
            assert_eq!(l.status, Status::Matched, "{l:?}");
        }
    }
    // The mismatch is kept with the closed day and shows in its report.
    let date = day::parse_iso(&closed[0].business_date).unwrap();
    let reconciliation = e.report(date).reconciliation.unwrap();
    let gift = reconciliation.iter().find(|l| l.link == "gift").unwrap();
    assert_eq!(gift.status, Status::Mismatched);
}
