//! Money safety under faults (issue 20): the demo's real switch, hosted ledger and
//! simulators over real TCP and HTTP, RocksDB in a temp dir.

mod common;

use common::code;

use std::sync::Arc;
use std::time::Duration;

use cyberswitch::admin::client::ApiClient;
use cyberswitch::demo::{self, Demo, DEMO_PREPAID};
use cyberswitch::iso8583::{Mti, OwnedMessage, Spec};
use cyberswitch::pin::{encrypt_block, ClearPin, PinKey};
use serde_json::json;
use tokio_util::sync::CancellationToken;

const PREPAID: &str = DEMO_PREPAID.0;
const PIN: &str = DEMO_PREPAID.1;

struct Env {
    demo: Demo,
    stop: CancellationToken,
    _dir: tempfile::TempDir,
    spec: Arc<Spec>,
    pin_key: PinKey,
    stan: std::sync::atomic::AtomicU32,
}

impl Drop for Env {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

async fn env() -> Env {
    let dir = tempfile::tempdir().unwrap();
    let (demo, stop) = common::start_demo(dir.path(), "").await;
    let pin_key = PinKey::from_hex(&demo::secret(dir.path(), "terminal-pin.key").unwrap()).unwrap();
    Env {
        demo,
        stop,
        _dir: dir,
        spec: common::terminal_spec(),
        pin_key,
        stan: std::sync::atomic::AtomicU32::new(300),
    }
}

impl Env {
    fn operator(&self) -> ApiClient {
        common::api_client(&self.demo, "operator.token")
    }

    fn request(&self, mti: &[u8; 4], card: &str, pc: &str, amount: u64, pin: bool) -> OwnedMessage {
        let stan = self.stan.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let mut m = OwnedMessage::new(Mti::new(mti).unwrap());
        m.set(2, card.as_bytes())
            .set(3, pc.as_bytes())
            .set_number(4, amount, 12)
            .set(7, b"1206120000")
            .set_number(11, u64::from(stan), 6)
            .set(12, b"120000")
            .set(13, b"1206")
            .set(41, b"TERMSAF1")
            .set(42, b"MERCHANT0000001")
            .set(49, b"410");
        if pin {
            let block = encrypt_block(&self.pin_key, &ClearPin::new(PIN).unwrap(), card).unwrap();
            m.set(52, &block);
        }
        m
    }

    async fn call(&self, m: &OwnedMessage) -> OwnedMessage {
        common::call(&self.demo, &self.spec, m).await
    }

    fn reversal(&self, original: &OwnedMessage) -> OwnedMessage {
        let stan = self.stan.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        common::reversal_of(original, u64::from(stan), "1206120500")
    }

    async fn drained(&self) {
        common::drained(&self.demo).await
    }

    /// The prepaid card as the admin API shows it.
    async fn card(&self) -> serde_json::Value {
        let r = self
            .operator()
            .call(
                "post",
                "/v1/cards/lookup",
                Some(&json!({"card_number": PREPAID})),
            )
            .await
            .unwrap();
        r.body
    }

    async fn balance(&self) -> i64 {
        self.card().await["balance"].as_i64().unwrap()
    }

    async fn card_id(&self) -> String {
        self.card().await["id"].as_str().unwrap().to_string()
    }
}

/// The walk-through: a recharge reversed after its money was spent is refused by the
/// hosted ledger (51). That refusal is final: the item goes to the dead letters at once, with
/// its reason and amount, and the purchase reversed after it on the same card (same queue
/// lane) is not held up behind it. An operator lists it and resolves it.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_refused_reversal_goes_to_the_dead_letters_and_does_not_block_its_lane() {
    let env = env().await;
    assert_eq!(env.balance().await, 20_000);
    let recharge = env.request(b"0200", PREPAID, "210000", 10_000, false);
    let a = env.call(&recharge).await;
    assert_eq!(code(&a), "00", "{a:?}");
    let spend = env.request(b"0200", PREPAID, "000000", 30_000, true);
    assert_eq!(code(&env.call(&spend).await), "00");
    assert_eq!(env.balance().await, 0);

    // The terminal reverses the recharge: acknowledged to it, but the ledger cannot take
    // back money already spent.
    assert_eq!(code(&env.call(&env.reversal(&recharge)).await), "00");
    let saf = &env.demo.running.switch.saf;
    for _ in 0..200 {
        if saf.dead_letters() == 1 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(
        saf.dead_letters(),
        1,
        "a definite refusal is a dead letter at once"
    );

    // Money comes back by the operator; a purchase and its reversal go through the same lane.
    let op = env.operator();
    let id = env.card_id().await;
    let r = op
        .call(
            "post",
            &format!("/v1/cards/{id}/recharge"),
            Some(&json!({"amount": 10_000, "reference": "saf-test"})),
        )
        .await
        .unwrap();
    assert_eq!(r.status, 200, "{:?}", r.body);
    let purchase = env.request(b"0200", PREPAID, "000000", 4_000, true);
    assert_eq!(code(&env.call(&purchase).await), "00");
    assert_eq!(env.balance().await, 6_000);
    assert_eq!(code(&env.call(&env.reversal(&purchase)).await), "00");
    env.drained().await;
    assert_eq!(env.balance().await, 10_000, "the purchase's reversal ran");

    // The operator sees the dead letter (amount, reason; no card number) and resolves it.
    let list = op.call("get", "/v1/saf/dead-letters", None).await.unwrap();
    assert_eq!(list.status, 200, "{:?}", list.body);
    let dead = list.body["dead_letters"].as_array().unwrap();
    assert_eq!(dead.len(), 1);
    assert_eq!(dead[0]["amount"], 10_000);
    assert_eq!(dead[0]["kind"], "reversal");
    assert!(
        dead[0]["reason"].as_str().unwrap().contains("51"),
        "{:?}",
        dead[0]
    );
    assert!(!list.body.to_string().contains(PREPAID));
    let id = dead[0]["id"].as_str().unwrap();
    let r = op
        .call(
            "post",
            &format!("/v1/saf/dead-letters/{id}/resolve"),
            Some(&json!({"note": "recharge taken back by hand, ticket 42"})),
        )
        .await
        .unwrap();
    assert_eq!(r.status, 200, "{:?}", r.body);
    assert_eq!(saf.dead_letters(), 0);
    let again = op
        .call(
            "post",
            &format!("/v1/saf/dead-letters/{id}/resolve"),
            Some(&json!({"note": "twice"})),
        )
        .await
        .unwrap();
    assert_eq!(again.status, 404);
}

/// A dead letter re-queued by an operator is tried again (and, the host still refusing, comes
/// back to the list with its reason).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_dead_letter_can_be_requeued_by_an_operator() {
    let env = env().await;
    let recharge = env.request(b"0200", PREPAID, "210000", 10_000, false);
    assert_eq!(code(&env.call(&recharge).await), "00");
    let spend = env.request(b"0200", PREPAID, "000000", 30_000, true);
    assert_eq!(code(&env.call(&spend).await), "00");
    assert_eq!(code(&env.call(&env.reversal(&recharge)).await), "00");
    let saf = &env.demo.running.switch.saf;
    let op = env.operator();
    let mut id = String::new();
    for _ in 0..200 {
        let list = op.call("get", "/v1/saf/dead-letters", None).await.unwrap();
        if let Some(d) = list.body["dead_letters"].as_array().and_then(|a| a.first()) {
            id = d["id"].as_str().unwrap().to_string();
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(!id.is_empty(), "the refused reversal became a dead letter");
    // A partner or issuer may not touch the queue; nor may anyone without a token.
    let anonymous =
        ApiClient::new(&format!("http://{}", env.demo.running.admin.unwrap()), None).unwrap();
    let r = anonymous
        .call("get", "/v1/saf/dead-letters", None)
        .await
        .unwrap();
    assert_eq!(r.status, 401);

    // The card is topped up outside the switch's queue; the re-queued reversal now succeeds.
    let card = env.card_id().await;
    op.call(
        "post",
        &format!("/v1/cards/{card}/recharge"),
        Some(&json!({"amount": 10_000, "reference": "top-up"})),
    )
    .await
    .unwrap();
    assert_eq!(env.balance().await, 10_000);
    let r = op
        .call("post", &format!("/v1/saf/dead-letters/{id}/retry"), None)
        .await
        .unwrap();
    assert_eq!(r.status, 200, "{:?}", r.body);
    env.drained().await;
    assert_eq!(saf.dead_letters(), 0);
    assert_eq!(env.balance().await, 0, "the recharge is taken back at last");
}

/// A 0200 without field 4 on the plain-credit path was approved (the acquirer was asked for
/// nothing); now every path checks one table before routing: 30, and nothing relayed. A
/// purchase for no money is 13.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_purchase_without_an_amount_is_refused_on_every_path() {
    let env = env().await;
    let acquirer = env.demo.sim("ACQ1").unwrap();
    let gift = env.demo.sim("GIFT").unwrap();
    for card in ["9410000000000021", "9410000000000013", PREPAID] {
        let mut m = env.request(b"0200", card, "000000", 1, false);
        m.remove(4);
        assert_eq!(code(&env.call(&m).await), "30", "card {}", &card[12..]);
        let zero = env.request(b"0200", card, "000000", 0, false);
        assert_eq!(code(&env.call(&zero).await), "13", "card {}", &card[12..]);
    }
    for card in ["9410000000000021", "9410000000000013"] {
        assert!(acquirer.card_legs(card).is_empty(), "nothing was relayed");
    }
    assert_eq!(
        gift.balance("G-3001"),
        Some(50_000),
        "no wallet was touched"
    );
    assert_eq!(env.balance().await, 20_000);
}

/// A reversal that arrives before its original has started was answered 25 and forgotten;
/// the original then approved, and nobody reversed it. Now the reversal is remembered and the
/// original, arriving after it, is declined (12) without moving money.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_original_arriving_after_its_reversal_is_declined() {
    let env = env().await;
    let purchase = env.request(b"0200", "9410000000000021", "000000", 7_000, false);
    let reversal = env.reversal(&purchase);
    assert_eq!(code(&env.call(&reversal).await), "25");
    let a = env.call(&purchase).await;
    assert_eq!(code(&a), "12", "{a:?}");
    let acquirer = env.demo.sim("ACQ1").unwrap();
    assert!(
        acquirer.card_legs("9410000000000021").is_empty(),
        "nothing relayed"
    );
    // A purchase of its own (another STAN) goes through as usual.
    let other = env.request(b"0200", "9410000000000021", "000000", 7_000, false);
    assert_eq!(code(&env.call(&other).await), "00");
}

/// Ledger balances added without a check: funding a master twice with i64::MAX wrapped the
/// balance around. Now the second funding is refused (422 bad_amount) and the balance stays.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_balance_that_would_overflow_is_refused() {
    let env = env().await;
    let op = env.operator();
    let r = op
        .call("post", "/v1/masters", Some(&json!({"id": "overflow-1"})))
        .await
        .unwrap();
    assert_eq!(r.status, 201, "{:?}", r.body);
    let body = |reference: &str| json!({"amount": i64::MAX as u64, "reference": reference});
    let path = "/v1/masters/overflow-1/fund";
    let first = op.call("post", path, Some(&body("f1"))).await.unwrap();
    assert_eq!(first.status, 200, "{:?}", first.body);
    let second = op.call("post", path, Some(&body("f2"))).await.unwrap();
    assert_eq!(second.status, 422, "{:?}", second.body);
    assert_eq!(second.error_code(), Some("bad_amount"));
    let shown = op
        .call("get", "/v1/masters/overflow-1", None)
        .await
        .unwrap();
    assert_eq!(shown.body["balance"], json!(i64::MAX), "{:?}", shown.body);
}

/// The transaction key left out the MTI class: a 0100 and a 0200 with the same terminal,
/// STAN and time shared one record, the second overwriting the first, and a reversal of the
/// 0200 undid the 0100's legs instead. Now they are two transactions.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_authorization_and_a_purchase_with_the_same_stan_are_two_transactions() {
    let env = env().await;
    let card = "9410000000000013";
    let with_ws = |mut m: OwnedMessage, wallet: &str| {
        let tag = format!("WS{:03}{wallet}", wallet.len());
        m.set(48, tag.as_bytes());
        m
    };
    let purchase = with_ws(
        env.request(b"0200", card, "000000", 10_000, false),
        "E-1001",
    );
    let mut authorization = with_ws(env.request(b"0100", card, "000000", 5_000, false), "G-3001");
    authorization.set(11, purchase.get(11).unwrap());
    assert_eq!(code(&env.call(&purchase).await), "00");
    assert_eq!(code(&env.call(&authorization).await), "00");
    let emoney = env.demo.sim("EMONEY").unwrap();
    let gift = env.demo.sim("GIFT").unwrap();
    assert_eq!(emoney.balance("E-1001"), Some(20_000));
    assert_eq!(gift.balance("G-3001"), Some(45_000));
    // Reversing the purchase gives back the purchase's money, and only that.
    assert_eq!(code(&env.call(&env.reversal(&purchase)).await), "00");
    env.drained().await;
    assert_eq!(emoney.balance("E-1001"), Some(30_000));
    assert_eq!(
        gift.balance("G-3001"),
        Some(45_000),
        "the authorization stands"
    );
}

/// A follow-up naming itself in field 90 waited for its own answer for ever (and every
/// repeat of it too). It is a format error now.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_follow_up_naming_itself_is_refused_not_left_waiting() {
    let env = env().await;
    let reversal = env.request(b"0400", "9410000000000021", "000000", 1_000, false);
    let mut itself = reversal.clone();
    let stan = std::str::from_utf8(reversal.get(11).unwrap())
        .unwrap()
        .to_string();
    itself.set(
        90,
        format!("0400{stan}1206120000{}", "0".repeat(22)).as_bytes(),
    );
    assert_eq!(code(&env.call(&itself).await), "30");
    assert_eq!(code(&env.call(&itself).await), "30", "its repeat too");
}

/// A journal write failure while answering (issue 20): the answer step never lands, so the
/// approval must not leave. The terminal gets 96; in the background the 96 and the reversal
/// of every leg are written, retried until they land (here the first retries fail too).
/// Meanwhile a repeat gets the same 96, and a reversal waits for the write and is answered
/// 00. Every wallet and the acquirer end where they began.
#[cfg(feature = "fault-injection")]
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_journal_failure_while_answering_answers_96_and_undoes_every_leg() {
    const CARD: &str = "9410000000000013"; // GIFT G-3001, EMONEY E-1001, MILEAGE M-2001
    let env = env().await;
    let gift = env.demo.sim("GIFT").unwrap();
    let acquirer = env.demo.sim("ACQ1").unwrap();
    let (gift_before, credit_before) = (gift.balance("G-3001").unwrap(), acquirer.card_total(CARD));
    let journal = &env.demo.running.switch.journal;
    journal.inject_fault("answer", 1);
    journal.inject_fault("answer-retry", 3);

    // 3,000 from the gift wallet, the rest by credit.
    let purchase = common::with_tags(
        env.request(b"0200", CARD, "000000", 8_000, false),
        &[("WS", "G-3001"), ("WC", "3000")],
    );
    let a = env.call(&purchase).await;
    assert_eq!(code(&a), "96", "{a:?}");
    assert!(a.get(38).is_none(), "no approval code on a 96");
    // A repeat gets the same answer, and is not processed again.
    let mut repeat = purchase.clone();
    repeat.set_mti(Mti::new(b"0201").unwrap());
    let again = env.call(&repeat).await;
    assert_eq!((code(&again), again.get(37)), (code(&a), a.get(37)));
    // The terminal's reversal waits for the 96 to be written, then finds its legs undone.
    let r = env.call(&env.reversal(&purchase)).await;
    assert_eq!(code(&r), "00", "{r:?}");
    env.drained().await;
    assert_eq!(gift.balance("G-3001"), Some(gift_before));
    assert_eq!(acquirer.card_total(CARD), credit_before);
    // Written: the duplicate index answers the 96 from now on too.
    let again = env.call(&repeat).await;
    assert_eq!(code(&again), "96");
}

/// A bounded number of legs per transaction (issue 20, `limits.max_legs`): here two. A
/// selection of more wallets than that is refused (57) before anything is sent; a purchase
/// whose wallet ran short (a declined debit, then a smaller one) and would need a credit leg
/// as a third is declined 57, the wallet leg it took given back.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_transaction_needing_more_legs_than_allowed_is_declined_cleanly() {
    const THREE_WALLETS: &str = "9410000000000013"; // GIFT G-3001, EMONEY E-1001, MILEAGE M-2001
    const SMALL: &str = "9410000000000039"; // EMONEY E-1002 (5,000)
    let dir = tempfile::tempdir().unwrap();
    let (demo, stop) = common::start_demo(dir.path(), "\n[limits]\nmax_legs = 2\n").await;
    let env = Env {
        pin_key: PinKey::from_hex(&demo::secret(dir.path(), "terminal-pin.key").unwrap()).unwrap(),
        demo,
        stop,
        _dir: dir,
        spec: common::terminal_spec(),
        stan: std::sync::atomic::AtomicU32::new(600),
    };
    let emoney = env.demo.sim("EMONEY").unwrap();
    let acquirer = env.demo.sim("ACQ1").unwrap();
    let before = (
        emoney.balance("E-1002").unwrap(),
        acquirer.card_total(SMALL),
    );

    let three = common::with_tags(
        env.request(b"0200", THREE_WALLETS, "000000", 1_000, false),
        &[("WS", "G-3001,E-1001,M-2001")],
    );
    assert_eq!(code(&env.call(&three).await), "57");

    // 51 for the whole 12,000, then 5,000 (two legs): the credit leg would be a third.
    let a = env
        .call(&env.request(b"0200", SMALL, "000000", 12_000, false))
        .await;
    assert_eq!(code(&a), "57", "{a:?}");
    env.drained().await;
    assert_eq!(
        (
            emoney.balance("E-1002").unwrap(),
            acquirer.card_total(SMALL)
        ),
        before,
        "nothing taken"
    );
    // Within the bound, the same card pays as before.
    let a = env
        .call(&env.request(b"0200", SMALL, "000000", 3_000, false))
        .await;
    assert_eq!(code(&a), "00", "{a:?}");
}
