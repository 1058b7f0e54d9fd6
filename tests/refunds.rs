//! F8 refunds and 0410 leg lists (issue 22): the demo's real switch and simulators over real
//! TCP, RocksDB in a temp dir. Every test checks the money where it lives: the issuer
//! simulators' accounts and the acquirer simulator's card totals.

mod common;

use common::{code, tags, with_tags};

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;

use cyberswitch::demo::{self, Demo};
use cyberswitch::iso8583::{OwnedMessage, Spec};
use tokio_util::sync::CancellationToken;

/// Linked to e-money E-1002 (5,000); the rest goes to the acquirer as credit.
const SPLIT_CARD: &str = "9410000000000039";
/// Linked to gift G-3001, e-money E-1001 and mileage M-2001 (2 points per won).
const THREE_WALLETS: &str = "9410000000000013";

struct Env {
    demo: Demo,
    stop: CancellationToken,
    _dir: tempfile::TempDir,
    spec: Arc<Spec>,
    stan: AtomicU32,
}

impl Drop for Env {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

async fn env() -> Env {
    common::init_logs();
    let dir = tempfile::tempdir().unwrap();
    let (demo, stop) = common::start_demo(dir.path(), "").await;
    Env {
        demo,
        stop,
        _dir: dir,
        spec: common::terminal_spec(),
        stan: AtomicU32::new(100),
    }
}

impl Env {
    fn message(&self, mti: &[u8; 4], pc: &str, amount: u64) -> OwnedMessage {
        let stan = self.stan.fetch_add(1, Ordering::Relaxed);
        common::terminal_request(mti, pc, amount, stan, "TERMREF1", "MERCHANT0000001")
    }

    fn purchase(&self, card: &str, amount: u64) -> OwnedMessage {
        let mut m = self.message(b"0200", "000000", amount);
        m.set(2, card.as_bytes());
        m
    }

    /// A refund naming `original` in field 90.
    fn refund_by_90(&self, original: &OwnedMessage, amount: u64) -> OwnedMessage {
        let mut m = self.message(b"0200", "200000", amount);
        m.set_original_data(&common::original_data_of(original));
        m
    }

    /// A refund naming its original by RRN (`OR`).
    fn refund_by_rrn(&self, rrn: &str, amount: u64) -> OwnedMessage {
        with_tags(self.message(b"0200", "200000", amount), &[("OR", rrn)])
    }

    /// A refund naming its original by approval code and date (`OA`).
    fn refund_by_approval(&self, answer: &OwnedMessage, amount: u64) -> OwnedMessage {
        let auth = String::from_utf8_lossy(answer.get(38).unwrap())
            .trim()
            .to_string();
        let oa = format!("{auth}|261206");
        with_tags(self.message(b"0200", "200000", amount), &[("OA", &oa)])
    }

    async fn call(&self, m: &OwnedMessage) -> OwnedMessage {
        common::call(&self.demo, &self.spec, m).await
    }

    fn wallet(&self, issuer: &str, account: &str) -> i64 {
        self.demo.sim(issuer).unwrap().balance(account).unwrap()
    }

    fn credit(&self, card: &str) -> i64 {
        self.demo.sim("ACQ1").unwrap().card_total(card)
    }

    /// Until the store-and-forward queue is empty.
    async fn drained(&self) {
        common::drained(&self.demo).await
    }
}

fn rrn(m: &OwnedMessage) -> String {
    String::from_utf8_lossy(m.get(37).unwrap())
        .trim()
        .to_string()
}

/// The walk-through: a split purchase of 12,000 (5,000 e-money, 7,000 credit)
/// refunded whole by field 90 gives each part back where it came from, lists both legs, and
/// cannot be refunded a second time.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_split_refund_restores_wallet_and_credit_exactly() {
    let e = env().await;
    let purchase = e.purchase(SPLIT_CARD, 12_000);
    let paid = e.call(&purchase).await;
    assert_eq!(code(&paid), "00");
    assert_eq!(e.wallet("EMONEY", "E-1002"), 0);
    assert_eq!(e.credit(SPLIT_CARD), 7_000);

    let refund = e.call(&e.refund_by_90(&purchase, 12_000)).await;
    assert_eq!(code(&refund), "00");
    assert_eq!(refund.mti().as_bytes(), b"0210");
    let legs = tags(&refund, "LG");
    assert_eq!(legs.len(), 2, "{legs:?}");
    assert!(legs[0].starts_with("credit|acq1|7000|7000|"), "{legs:?}");
    assert!(legs[1].starts_with("emoney|EMONEY|5000|5000|"), "{legs:?}");
    assert_eq!(e.wallet("EMONEY", "E-1002"), 5_000);
    assert_eq!(e.credit(SPLIT_CARD), 0);

    // Nothing is left to give back.
    let again = e.call(&e.refund_by_90(&purchase, 1)).await;
    assert_eq!(code(&again), "13");
    assert_eq!(e.wallet("EMONEY", "E-1002"), 5_000);
    assert_eq!(e.credit(SPLIT_CARD), 0);
}

/// Partial refunds by RRN and by approval code add up, credit first then the wallet, and
/// are refused (13) beyond what the purchase has left.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn partial_refunds_add_up_and_never_pass_what_each_leg_took() {
    let e = env().await;
    let paid = e.call(&e.purchase(SPLIT_CARD, 12_000)).await;
    assert_eq!(code(&paid), "00");

    let first = e.call(&e.refund_by_rrn(&rrn(&paid), 4_000)).await;
    assert_eq!(code(&first), "00");
    assert_eq!(tags(&first, "LG").len(), 1);
    assert_eq!(
        (e.credit(SPLIT_CARD), e.wallet("EMONEY", "E-1002")),
        (3_000, 0)
    );

    let second = e.call(&e.refund_by_approval(&paid, 4_000)).await;
    assert_eq!(code(&second), "00");
    assert_eq!(tags(&second, "LG").len(), 2, "{:?}", tags(&second, "LG"));
    assert_eq!(
        (e.credit(SPLIT_CARD), e.wallet("EMONEY", "E-1002")),
        (0, 1_000)
    );

    let too_much = e.call(&e.refund_by_rrn(&rrn(&paid), 4_001)).await;
    assert_eq!(code(&too_much), "13");
    assert_eq!(
        (e.credit(SPLIT_CARD), e.wallet("EMONEY", "E-1002")),
        (0, 1_000)
    );

    let rest = e.call(&e.refund_by_rrn(&rrn(&paid), 4_000)).await;
    assert_eq!(code(&rest), "00");
    assert_eq!(
        (e.credit(SPLIT_CARD), e.wallet("EMONEY", "E-1002")),
        (0, 5_000)
    );
    let past = e.call(&e.refund_by_rrn(&rrn(&paid), 1)).await;
    assert_eq!(code(&past), "13");
}

/// A refund naming nothing this switch approved is answered 25 and never relayed: the
/// acquirer sees nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_unknown_original_is_answered_25_and_never_relayed() {
    let e = env().await;
    let plain_card = demo::plain_card(0);
    let plain_card = plain_card.as_str();
    let before = e.demo.sim("ACQ1").unwrap().card_legs(plain_card).len();
    let mut by_rrn = e.refund_by_rrn("999999999999", 1_000);
    by_rrn.set(2, plain_card.as_bytes());
    assert_eq!(code(&e.call(&by_rrn).await), "25");
    let never_sent = e.purchase(plain_card, 1_000);
    let mut by_90 = e.refund_by_90(&never_sent, 1_000);
    by_90.set(2, plain_card.as_bytes());
    assert_eq!(code(&e.call(&by_90).await), "25");
    let bad_oa = with_tags(
        e.message(b"0200", "200000", 1_000),
        &[("OA", "ABC123|261206")],
    );
    assert_eq!(code(&e.call(&bad_oa).await), "25");
    assert_eq!(
        e.demo.sim("ACQ1").unwrap().card_legs(plain_card).len(),
        before
    );
    assert_eq!(e.credit(plain_card), 0);
}

/// A reversed purchase cannot be refunded (12); the 0410 of its reversal lists the legs
/// it undid.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_reversed_purchase_is_not_refunded_and_its_0410_lists_the_legs() {
    let e = env().await;
    let purchase = e.purchase(SPLIT_CARD, 6_000);
    assert_eq!(code(&e.call(&purchase).await), "00");
    let stan = e.stan.fetch_add(1, Ordering::Relaxed);
    let reversal = common::reversal_of(
        &purchase,
        u64::from(stan),
        &cyberswitch::clock::transmission_time(),
    );
    let reversed = e.call(&reversal).await;
    assert_eq!(
        (reversed.mti().as_bytes(), code(&reversed).as_str()),
        (b"0410", "00")
    );
    let legs = tags(&reversed, "LG");
    assert_eq!(legs.len(), 2, "{legs:?}");
    assert!(legs
        .iter()
        .any(|l| l.starts_with("emoney|EMONEY|5000|5000|")));
    assert!(legs.iter().any(|l| l.starts_with("credit|acq1|1000|1000|")));
    e.drained().await;
    assert_eq!(
        (e.credit(SPLIT_CARD), e.wallet("EMONEY", "E-1002")),
        (0, 5_000)
    );

    assert_eq!(code(&e.call(&e.refund_by_90(&purchase, 1_000)).await), "12");
    assert_eq!(
        (e.credit(SPLIT_CARD), e.wallet("EMONEY", "E-1002")),
        (0, 5_000)
    );
}

/// Points go back as points (2 per won here), and a plain credit purchase is refunded
/// through its acquirer.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn points_go_back_as_points_and_plain_credit_through_the_acquirer() {
    let e = env().await;
    let purchase = with_tags(e.purchase(THREE_WALLETS, 1_500), &[("WS", "M-2001")]);
    assert_eq!(code(&e.call(&purchase).await), "00");
    assert_eq!(e.wallet("MILEAGE", "M-2001"), 10_000 - 3_000);
    let refund = e.call(&e.refund_by_90(&purchase, 500)).await;
    assert_eq!(code(&refund), "00");
    assert!(tags(&refund, "LG")[0].starts_with("points|MILEAGE|500|1000|"));
    assert_eq!(e.wallet("MILEAGE", "M-2001"), 10_000 - 2_000);

    let plain_card = demo::plain_card(0);
    let plain = e.purchase(&plain_card, 3_000);
    assert_eq!(code(&e.call(&plain).await), "00");
    assert_eq!(e.credit(&plain_card), 3_000);
    let refund = e.call(&e.refund_by_90(&plain, 3_000)).await;
    assert_eq!(code(&refund), "00");
    assert_eq!(e.credit(&plain_card), 0);
}

/// A purchase refunds gave part of back is not reversed (the reversal would give that part
/// twice); a refund reversed makes what it gave refundable again.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn reversals_and_refunds_never_give_the_same_money_twice() {
    let e = env().await;
    let purchase = e.purchase(SPLIT_CARD, 12_000);
    assert_eq!(code(&e.call(&purchase).await), "00");
    let refund = e.refund_by_90(&purchase, 7_000);
    assert_eq!(code(&e.call(&refund).await), "00");
    assert_eq!(e.credit(SPLIT_CARD), 0);

    let stan = u64::from(e.stan.fetch_add(1, Ordering::Relaxed));
    let now = cyberswitch::clock::transmission_time();
    let reverse_purchase = common::reversal_of(&purchase, stan, &now);
    assert_eq!(code(&e.call(&reverse_purchase).await), "12");

    let stan = u64::from(e.stan.fetch_add(1, Ordering::Relaxed));
    let reverse_refund = common::reversal_of(&refund, stan, &now);
    assert_eq!(code(&e.call(&reverse_refund).await), "00");
    e.drained().await;
    assert_eq!(e.credit(SPLIT_CARD), 7_000);
    // The whole purchase is refundable again.
    assert_eq!(
        code(&e.call(&e.refund_by_90(&purchase, 12_000)).await),
        "00"
    );
    assert_eq!(
        (e.credit(SPLIT_CARD), e.wallet("EMONEY", "E-1002")),
        (0, 5_000)
    );
}

/// Issue 22, hosted card refund: a refund of a purchase paid with a hosted prepaid card
/// credits the card back exactly (a refund entry on the hosted ledger, no acquirer), partial
/// refunds add up and never pass what the purchase took (13), and the points the purchase
/// earned are taken back in proportion (the rule of a reversed purchase: kept points are what
/// the rest of the spend earns, rounded down). Reversing a refund takes its money back and
/// gives its points back.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn hosted_card_refund_credits_the_card_back_exactly_and_takes_points_back_in_proportion() {
    use cyberswitch::iso8583::Pan;
    use cyberswitch::pin::{encrypt_block, ClearPin, PinKey};
    let (card, pin) = (demo::DEMO_PREPAID.0, demo::DEMO_PREPAID.1);
    let env = env().await;
    let pin_key =
        PinKey::from_hex(&demo::secret(env._dir.path(), "terminal-pin.key").unwrap()).unwrap();
    let hosted = &env.demo.running.switch.hosted;
    let found = hosted
        .card_by_pan(&Pan::parse(card.as_bytes()).unwrap())
        .unwrap()
        .unwrap();
    let points_account = found.points_account.clone().unwrap();
    let money = || hosted.ledger.balance(&found.account).unwrap().available();
    let points = || hosted.ledger.balance(&points_account).unwrap().available();
    let (opening, credit_before) = (money(), env.credit(card));

    let mut purchase = env.purchase(card, 10_000);
    let block = encrypt_block(&pin_key, &ClearPin::new(pin).unwrap(), card).unwrap();
    purchase.set(52, &block);
    let a = env.call(&purchase).await;
    assert_eq!(code(&a), "00", "{a:?}");
    assert_eq!((money(), points()), (opening - 10_000, 100));
    let rrn = String::from_utf8_lossy(a.get(37).unwrap()).into_owned();

    let r = env.call(&env.refund_by_rrn(&rrn, 4_000)).await;
    assert_eq!(code(&r), "00", "{r:?}");
    assert_eq!(tags(&r, "LG").len(), 1, "{r:?}");
    assert_eq!((money(), points()), (opening - 6_000, 60));

    let too_much = env.call(&env.refund_by_90(&purchase, 7_000)).await;
    assert_eq!(code(&too_much), "13");
    assert_eq!((money(), points()), (opening - 6_000, 60));

    let rest = env.refund_by_approval(&a, 6_000);
    let r = env.call(&rest).await;
    assert_eq!(code(&r), "00", "{r:?}");
    assert_eq!((money(), points()), (opening, 0));
    assert_eq!(code(&env.call(&env.refund_by_rrn(&rrn, 1)).await), "13");

    // The last refund reversed: its money taken back, its points given back.
    let stan = env.stan.fetch_add(1, Ordering::Relaxed);
    let rev = common::reversal_of(
        &rest,
        u64::from(stan),
        &cyberswitch::clock::transmission_time(),
    );
    assert_eq!(code(&env.call(&rev).await), "00");
    env.drained().await;
    assert_eq!((money(), points()), (opening - 6_000, 60));

    // The ledger's balances are what its entries say; no acquirer saw any of it.
    for account in [&found.account, &points_account] {
        assert_eq!(
            hosted.ledger.derive(account).unwrap(),
            hosted.ledger.balance(account).unwrap()
        );
    }
    assert_eq!(env.credit(card), credit_before);
}

/// A refund the card spent before the terminal reversed it (an unanswered refund, reversed
/// as terminals do): its money is taken back as a recorded debt, never left given (found by
/// the crash harness: the hosted ledger refused that reversal 51, the reversal went to the
/// dead letters, and the refund stood while its merchant was told it never happened).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_reversed_hosted_refund_takes_its_money_back_even_once_spent() {
    use cyberswitch::iso8583::Pan;
    use cyberswitch::pin::{encrypt_block, ClearPin, PinKey};
    let (card, pin) = (demo::DEMO_PREPAID.0, demo::DEMO_PREPAID.1);
    let env = env().await;
    let pin_key =
        PinKey::from_hex(&demo::secret(env._dir.path(), "terminal-pin.key").unwrap()).unwrap();
    let with_pin = |mut m: OwnedMessage| {
        let block = encrypt_block(&pin_key, &ClearPin::new(pin).unwrap(), card).unwrap();
        m.set(52, &block);
        m
    };
    let hosted = &env.demo.running.switch.hosted;
    let found = hosted
        .card_by_pan(&Pan::parse(card.as_bytes()).unwrap())
        .unwrap()
        .unwrap();
    let points_account = found.points_account.clone().unwrap();
    let money = || hosted.ledger.balance(&found.account).unwrap().available();
    let points = || hosted.ledger.balance(&points_account).unwrap().available();

    let a = env.call(&with_pin(env.purchase(card, 10_000))).await;
    assert_eq!(code(&a), "00", "{a:?}");
    let refund = env.refund_by_rrn(&rrn(&a), 4_000);
    assert_eq!(code(&env.call(&refund).await), "00");
    // The card spends everything it has, the refund included.
    let all = u64::try_from(money()).unwrap();
    let spent = env.call(&with_pin(env.purchase(card, all))).await;
    assert_eq!(code(&spent), "00", "{spent:?}");
    assert_eq!(money(), 0);
    let points_before = points();

    let stan = env.stan.fetch_add(1, Ordering::Relaxed);
    let rev = common::reversal_of(
        &refund,
        u64::from(stan),
        &cyberswitch::clock::transmission_time(),
    );
    assert_eq!(code(&env.call(&rev).await), "00");
    env.drained().await;
    assert_eq!(money(), -4_000, "the refund taken back as a debt");
    assert_eq!(
        points(),
        points_before + 40,
        "the points it took back given back"
    );
    // The debt refuses spending until paid down.
    let refused = env.call(&with_pin(env.purchase(card, 1))).await;
    assert_eq!(code(&refused), "51", "{refused:?}");
    for account in [&found.account, &points_account] {
        assert_eq!(
            hosted.ledger.derive(account).unwrap(),
            hosted.ledger.balance(account).unwrap()
        );
    }
}

/// Approval codes repeat: every host numbers its own. The acquirer's first approval (the
/// credit part of a split purchase) and the gift issuer's first (a purchase the gift wallet
/// pays alone) carry the same code, at one terminal on one day. A refund naming that code is
/// given to neither (25) unless its card picks one; before, it went to the later purchase
/// (found by the crash harness: money given back on a purchase the merchant did not name).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_approval_code_two_purchases_share_is_never_guessed() {
    let e = env().await;
    let split = e.purchase(SPLIT_CARD, 12_000);
    let a1 = e.call(&split).await;
    let gift = with_tags(e.purchase(THREE_WALLETS, 1_000), &[("WS", "G-3001")]);
    let a2 = e.call(&gift).await;
    assert_eq!((code(&a1), code(&a2)), ("00".to_string(), "00".to_string()));
    assert_eq!(
        a1.get(38),
        a2.get(38),
        "both answered with one approval code"
    );
    let r = e.call(&e.refund_by_approval(&a1, 1_000)).await;
    assert_eq!(code(&r), "25", "the code names two purchases");
    assert_eq!(e.wallet("GIFT", "G-3001"), 49_000, "nothing given back");
    assert_eq!(e.wallet("EMONEY", "E-1002"), 0);
    assert_eq!(e.credit(SPLIT_CARD), 7_000);
    // With the card, the refund names the split purchase: credit first, then the e-money.
    let mut with_card = e.refund_by_approval(&a1, 12_000);
    with_card.set(2, SPLIT_CARD.as_bytes());
    assert_eq!(code(&e.call(&with_card).await), "00");
    e.drained().await;
    assert_eq!(e.credit(SPLIT_CARD), 0);
    assert_eq!(e.wallet("EMONEY", "E-1002"), 5_000);
    assert_eq!(e.wallet("GIFT", "G-3001"), 49_000);
}

/// An authorization once completed is refundable by its RRN and approval code, as a purchase
/// is; before, only field 90 found it (found by the crash harness: 25).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_completed_authorization_is_refundable_by_its_references() {
    let e = env().await;
    let mut auth = e.message(b"0100", "000000", 12_000);
    auth.set(2, SPLIT_CARD.as_bytes());
    let a = e.call(&auth).await;
    assert_eq!(code(&a), "00");
    // Completed for 10,000: the e-money's 5,000 and 5,000 of the credit's 7,000.
    let stan = e.stan.fetch_add(1, Ordering::Relaxed);
    let completion = common::completion_of(&auth, 10_000, stan);
    assert_eq!(code(&e.call(&completion).await), "00");
    e.drained().await;
    assert_eq!(e.credit(SPLIT_CARD), 5_000);
    let r = e.call(&e.refund_by_rrn(&rrn(&a), 4_000)).await;
    assert_eq!(code(&r), "00", "by RRN");
    let r = e.call(&e.refund_by_approval(&a, 6_000)).await;
    assert_eq!(code(&r), "00", "by approval code");
    e.drained().await;
    assert_eq!(e.credit(SPLIT_CARD), 0);
    assert_eq!(e.wallet("EMONEY", "E-1002"), 5_000);
    assert_eq!(code(&e.call(&e.refund_by_rrn(&rrn(&a), 1)).await), "13");
}
