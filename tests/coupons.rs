//! F18 mobile coupons (issue 23), over the demo's real switch, admin API and acquirer
//! simulator: real TCP, RocksDB in a temp dir. What the card was charged is read at the
//! acquirer simulator (its own books), not from the switch's answer.

mod common;

use common::{code, copy_dir, reversal_of, with_tags};

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;
use std::time::Duration;

use cyberswitch::admin::client::ApiClient;
use cyberswitch::books::report;
use cyberswitch::coupons::token::{Keys, Terms};
use cyberswitch::demo::{self, Demo, DemoPorts};
use cyberswitch::iso8583::{OwnedMessage, Spec};
use serde_json::{json, Value};
use tokio_util::sync::CancellationToken;

/// No wallets: charged at ACQ1.
const CARD: &str = "9410000000000021";
const MERCHANT: &str = "MERCHANT0000001";
const OTHER_MERCHANT: &str = "MERCHANT0000002";
/// Fees of the coupon chain (basis points).
const EXTRA: &str = "
[books.coupon_fees_bp]
card_company = 150
pg = 50
operator = 100
";

struct Env {
    demo: Option<Demo>,
    stop: CancellationToken,
    dir: tempfile::TempDir,
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
    let (demo, stop) = common::start_demo(dir.path(), EXTRA).await;
    Env {
        demo: Some(demo),
        stop,
        dir,
        spec: common::terminal_spec(),
        stan: AtomicU32::new(500),
    }
}

impl Env {
    fn demo(&self) -> &Demo {
        self.demo.as_ref().unwrap()
    }

    fn operator(&self) -> ApiClient {
        common::api_client(self.demo(), "operator.token")
    }

    /// Issue a coupon through the admin API: (id, token, auth_code).
    async fn issue(&self, discount: u64, merchant: Option<&str>) -> (String, String, String) {
        let expires = chrono::Utc::now().date_naive() + chrono::Days::new(30);
        let body = json!({
            "card_number": CARD,
            "registration": "REG-0001",
            "discount": discount,
            "expires": expires.format("%Y-%m-%d").to_string(),
            "merchant": merchant,
        });
        let r = self
            .operator()
            .call("post", "/v1/coupons", Some(&body))
            .await
            .unwrap();
        assert_eq!(r.status, 201, "{:?}", r.body);
        let text = |k: &str| r.body[k].as_str().unwrap().to_string();
        (text("id"), text("token"), text("auth_code"))
    }

    async fn coupon(&self, id: &str) -> Value {
        let r = self
            .operator()
            .call("get", &format!("/v1/coupons/{id}"), None)
            .await
            .unwrap();
        assert_eq!(r.status, 200, "{:?}", r.body);
        r.body
    }

    fn message(&self, pc: &str, amount: u64, merchant: &str) -> OwnedMessage {
        let stan = self.stan.fetch_add(1, Ordering::Relaxed);
        common::terminal_request(b"0200", pc, amount, stan, "TERMCP01", merchant)
    }

    /// A 0200 paid with a coupon: its token in tag `CP`, no card fields.
    fn use_coupon(&self, token: &str, amount: u64, merchant: &str) -> OwnedMessage {
        with_tags(self.message("000000", amount, merchant), &[("CP", token)])
    }

    fn refund(&self, purchase_answer: &OwnedMessage, amount: u64) -> OwnedMessage {
        let rrn = String::from_utf8(purchase_answer.get(37).unwrap().to_vec()).unwrap();
        with_tags(
            self.message("200000", amount, MERCHANT),
            &[("OR", rrn.as_str())],
        )
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

    /// What ACQ1 holds against the card: approved and not reversed or refunded.
    fn charged(&self) -> i64 {
        self.demo().sim("ACQ1").unwrap().card_total(CARD)
    }

    async fn drained(&self) {
        common::drained(self.demo()).await
    }

    /// A token sealed under the switch's own coupon key with these terms (what the switch
    /// itself would issue, without the issue's checks): expired ones, for instance.
    fn sealed(&self, terms: &Terms) -> String {
        let config = &self.demo().running.switch.config;
        Keys::new(&config.coupons).seal(terms).unwrap()
    }
}

fn legs(answer: &OwnedMessage) -> Vec<String> {
    let mut sd = Vec::new();
    let raw = answer.get(48).unwrap();
    let mut rest = raw;
    while rest.len() >= 5 {
        let tag = std::str::from_utf8(&rest[..2]).unwrap();
        let len: usize = std::str::from_utf8(&rest[2..5]).unwrap().parse().unwrap();
        let value = std::str::from_utf8(&rest[5..5 + len]).unwrap();
        if tag == "LG" {
            sd.push(value.to_string());
        }
        rest = &rest[5 + len..];
    }
    sd
}

fn amount(m: &OwnedMessage) -> u64 {
    std::str::from_utf8(m.get(4).unwrap())
        .unwrap()
        .parse()
        .unwrap()
}

/// Issue → use: the card is charged the amount less the discount at the acquirer, the answer
/// says so (field 4, a discount leg and a credit leg in `LG`); a retransmission gets the same
/// answer and charges nothing more; a second use is refused 05; the switch's data directory
/// holds the card number nowhere (ASCII or BCD); after a restart the coupon is still used.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_coupon_pays_once_for_the_amount_less_its_discount() {
    let mut e = env().await;
    let (id, token, auth_code) = e.issue(3_000, None).await;
    assert!(token
        .bytes()
        .all(|b| b.is_ascii_uppercase() || b.is_ascii_digit()));
    assert!(!token.contains(CARD));
    assert_eq!(auth_code.len(), 6);
    let issued = e.coupon(&id).await;
    assert_eq!(issued["status"], "unused");
    assert_eq!(issued["card"], "941000******0021");

    let purchase = e.use_coupon(&token, 10_000, MERCHANT);
    let paid = e.call(&purchase).await;
    assert_eq!(code(&paid), "00");
    assert_eq!(amount(&paid), 7_000, "field 4: what the card was charged");
    assert_eq!(
        legs(&paid),
        [
            format!("coupon|{id}|3000|3000|{auth_code}|00|"),
            format!(
                "credit|acq1|7000|7000|{}|00|",
                String::from_utf8_lossy(paid.get(38).unwrap()).trim()
            ),
        ]
    );
    assert_eq!(e.charged(), 7_000, "the acquirer took amount − discount");
    let used = e.coupon(&id).await;
    assert_eq!(used["status"], "used");

    // The same request again (a retransmission): the same answer, nothing more taken.
    let again = e.call(&purchase).await;
    assert_eq!(code(&again), "00");
    assert_eq!(again.get(38), paid.get(38));
    assert_eq!(again.get(48), paid.get(48));
    assert_eq!(e.charged(), 7_000);

    // A second use (a new request): refused, nothing taken.
    let second = e.call(&e.use_coupon(&token, 10_000, MERCHANT)).await;
    assert_eq!(code(&second), "05");
    assert_eq!(e.charged(), 7_000);

    e.drained().await;
    let files = common::scan_for_card_numbers(&e.demo().dir.join("switch"), &[CARD], "").unwrap();
    assert!(files > 3, "scanned {files} files only");

    // Restart on what a kill would have left: still used.
    e.stop.cancel();
    drop(e.demo.take());
    tokio::time::sleep(Duration::from_millis(200)).await;
    let copy = tempfile::tempdir().unwrap();
    copy_dir(e.dir.path(), copy.path());
    let stop = CancellationToken::new();
    let d = demo::start_with(
        copy.path(),
        DemoPorts::ephemeral(),
        stop.clone(),
        |_| {},
        EXTRA,
    )
    .await
    .expect("the demo restarts on its data directory");
    e.demo = Some(d);
    e.stop = stop;
    let after = e.call(&e.use_coupon(&token, 10_000, MERCHANT)).await;
    assert_eq!(code(&after), "05", "used survives a restart");
    let files = common::scan_for_card_numbers(&copy.path().join("switch"), &[CARD], "").unwrap();
    assert!(files > 3);
}

/// Forged or altered tokens 14, expired 54, another merchant's 57, an amount not above the
/// discount 13, a coupon beside a card 30 — and none of them takes anything.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn bad_coupons_are_refused_with_their_codes() {
    let e = env().await;
    let (id, token, _) = e.issue(2_000, None).await;

    // Altered: one character changed in the middle (the sealed card or discount).
    let mut altered = token.clone().into_bytes();
    let mid = altered.len() / 2;
    altered[mid] = if altered[mid] == b'A' { b'B' } else { b'A' };
    let altered = String::from_utf8(altered).unwrap();
    assert_eq!(
        code(&e.call(&e.use_coupon(&altered, 10_000, MERCHANT)).await),
        "14"
    );
    // Forged: well-formed, sealed under another key.
    let terms = Terms {
        id: id.clone(),
        registration: "REG-0001".into(),
        card: CARD.into(),
        discount: 9_000,
        expires: "2099-12-31".into(),
        merchant: None,
    };
    let forged = Keys::new(&cyberswitch::config::CouponsConfig {
        current: 1,
        keys: vec![(1, cyberswitch::config::SecretBytes::new(vec![7; 32]))],
    })
    .seal(&terms)
    .unwrap();
    assert_eq!(
        code(&e.call(&e.use_coupon(&forged, 10_000, MERCHANT)).await),
        "14"
    );
    assert_eq!(
        code(&e.call(&e.use_coupon("NOTATOKEN", 10_000, MERCHANT)).await),
        "14"
    );
    // Expired: the switch's own seal, last day yesterday.
    let yesterday = chrono::Utc::now().date_naive() - chrono::Days::new(2);
    let expired = e.sealed(&Terms {
        expires: yesterday.format("%Y-%m-%d").to_string(),
        ..terms.clone()
    });
    assert_eq!(
        code(&e.call(&e.use_coupon(&expired, 10_000, MERCHANT)).await),
        "54"
    );
    // Restricted to another merchant: 57 here, 00 there.
    let (_, only_other, _) = e.issue(1_000, Some(OTHER_MERCHANT)).await;
    assert_eq!(
        code(&e.call(&e.use_coupon(&only_other, 10_000, MERCHANT)).await),
        "57"
    );
    // Not above the discount.
    assert_eq!(
        code(&e.call(&e.use_coupon(&token, 2_000, MERCHANT)).await),
        "13"
    );
    // A coupon and a card: which to charge?
    let mut both = e.use_coupon(&token, 10_000, MERCHANT);
    both.set(2, CARD.as_bytes());
    assert_eq!(code(&e.call(&both).await), "30");
    assert_eq!(e.charged(), 0, "nothing refused took anything");
    assert_eq!(e.coupon(&id).await["status"], "unused");

    let there = e
        .call(&e.use_coupon(&only_other, 10_000, OTHER_MERCHANT))
        .await;
    assert_eq!(code(&there), "00");
    assert_eq!(e.charged(), 9_000);
    // The coupon refused above for its amount is still good.
    assert_eq!(
        code(&e.call(&e.use_coupon(&token, 10_000, MERCHANT)).await),
        "00"
    );
    assert_eq!(e.charged(), 9_000 + 8_000);
}

/// A reversal gives the acquirer's money and the coupon's use back: the coupon pays again.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_reversal_gives_the_money_and_the_use_back() {
    let e = env().await;
    let (id, token, _) = e.issue(3_000, None).await;
    let purchase = e.use_coupon(&token, 10_000, MERCHANT);
    assert_eq!(code(&e.call(&purchase).await), "00");
    assert_eq!(e.charged(), 7_000);
    let reversed = e.call(&e.reversal(&purchase)).await;
    assert_eq!(code(&reversed), "00");
    e.drained().await;
    assert_eq!(
        e.charged(),
        0,
        "the credit leg was reversed at the acquirer"
    );
    let coupon = e.coupon(&id).await;
    assert_eq!(coupon["status"], "unused", "{coupon}");

    let again = e.call(&e.use_coupon(&token, 10_000, MERCHANT)).await;
    assert_eq!(code(&again), "00");
    assert_eq!(e.charged(), 7_000);
    assert_eq!(e.coupon(&id).await["status"], "used");
}

/// A partial refund gives money back and keeps the coupon used; the refund of the rest gives
/// the use back too; a reversal of that refund takes the use again.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_full_refund_gives_the_use_back_and_a_partial_one_does_not() {
    let e = env().await;
    let (id, token, _) = e.issue(3_000, None).await;
    let paid = e.call(&e.use_coupon(&token, 10_000, MERCHANT)).await;
    assert_eq!(code(&paid), "00");

    let partial = e.call(&e.refund(&paid, 2_000)).await;
    assert_eq!(code(&partial), "00");
    e.drained().await;
    assert_eq!(e.charged(), 5_000);
    assert_eq!(e.coupon(&id).await["status"], "used");
    assert_eq!(
        code(&e.call(&e.use_coupon(&token, 10_000, MERCHANT)).await),
        "05"
    );

    // More than is left: 13; the rest: the use comes back.
    assert_eq!(code(&e.call(&e.refund(&paid, 5_001)).await), "13");
    let rest_request = e.refund(&paid, 5_000);
    let rest = e.call(&rest_request).await;
    assert_eq!(code(&rest), "00");
    e.drained().await;
    assert_eq!(e.charged(), 0);
    assert_eq!(e.coupon(&id).await["status"], "unused");

    // That refund reversed: the purchase stands again, its coupon used again.
    assert_eq!(code(&e.call(&e.reversal(&rest_request)).await), "00");
    e.drained().await;
    assert_eq!(e.charged(), 5_000);
    assert_eq!(e.coupon(&id).await["status"], "used");
    assert_eq!(
        code(&e.call(&e.use_coupon(&token, 10_000, MERCHANT)).await),
        "05"
    );
}

/// The settlement report splits the day's coupon purchases along card company → PG →
/// operator → merchant by the configured fees; the chain sums to what the cards were charged
/// (a reversed purchase counts nothing), and that equals the acquirer's own figure.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_settlement_report_splits_coupon_purchases_along_the_fee_chain() {
    let e = env().await;
    let (_, first, _) = e.issue(3_000, None).await;
    let (_, second, _) = e.issue(1_500, None).await;
    let (_, third, _) = e.issue(500, Some(OTHER_MERCHANT)).await;
    assert_eq!(
        code(&e.call(&e.use_coupon(&first, 10_000, MERCHANT)).await),
        "00"
    );
    let reversed = e.use_coupon(&second, 20_000, MERCHANT);
    assert_eq!(code(&e.call(&reversed).await), "00");
    assert_eq!(code(&e.call(&e.reversal(&reversed)).await), "00");
    assert_eq!(
        code(&e.call(&e.use_coupon(&third, 33_333, OTHER_MERCHANT)).await),
        "00"
    );
    e.drained().await;
    let switch = &e.demo().running.switch;
    let date = switch.books.open_date();
    let r = report::settlement(&switch.books, date, 410).unwrap();
    let c = &r.coupons;
    assert_eq!(c.gross, 7_000 + 32_833);
    assert_eq!(c.gross, e.charged(), "what the acquirer holds");
    assert_eq!(c.discounts, 3_000 + 500);
    let chain: Vec<(&str, i64)> = c
        .chain
        .iter()
        .map(|l| (l.party.as_str(), l.amount))
        .collect();
    let parties: Vec<&str> = chain.iter().map(|(p, _)| *p).collect();
    assert_eq!(parties, ["card_company", "pg", "operator", "merchant"]);
    assert_eq!(chain.iter().map(|(_, a)| a).sum::<i64>(), c.gross);
    let m = c.merchants.iter().find(|m| m.id == MERCHANT).unwrap();
    assert_eq!(m.gross, 7_000);
    assert_eq!(m.count, 2, "the reversed purchase moved money this day too");
    assert_eq!(
        (m.card_company, m.pg, m.operator),
        (105, 35, 70),
        "150, 50, 100 bp"
    );
    assert_eq!(m.net, 7_000 - 105 - 35 - 70);
    let o = c.merchants.iter().find(|m| m.id == OTHER_MERCHANT).unwrap();
    assert_eq!(
        o.card_company + o.pg + o.operator + o.net,
        32_833,
        "rounding leaves nothing out"
    );
    let csv = r.to_csv();
    assert!(csv.contains(",coupon_chain,merchant,"), "{csv}");
}

/// Coupons are the admin API's: no token, no coupon; a discount of zero or a past last day is
/// refused at issue.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn issuing_needs_a_token_and_sound_terms() {
    let e = env().await;
    let (id, _, _) = e.issue(1_000, None).await;
    let url = format!("http://{}", e.demo().running.admin.unwrap());
    let anonymous = ApiClient::new(&url, None).unwrap();
    let r = anonymous
        .call("get", &format!("/v1/coupons/{id}"), None)
        .await
        .unwrap();
    assert_eq!(r.status, 401);
    let r = e
        .operator()
        .call(
            "post",
            "/v1/coupons",
            Some(&json!({"card_number": CARD, "registration": "R", "discount": 0, "expires": "2099-01-01"})),
        )
        .await
        .unwrap();
    assert_eq!(r.status, 400, "{:?}", r.body);
    let r = e
        .operator()
        .call(
            "post",
            "/v1/coupons",
            Some(&json!({"card_number": CARD, "registration": "R", "discount": 10, "expires": "2001-01-01"})),
        )
        .await
        .unwrap();
    assert_eq!(r.status, 400, "{:?}", r.body);
}

/// Two terminals present one coupon at the same moment: one is approved, the other refused
/// 05, and the card is charged once.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn one_coupon_presented_twice_at_once_pays_once() {
    let e = env().await;
    let (_, token, _) = e.issue(3_000, None).await;
    for _ in 0..5 {
        let (a, b) = (
            e.use_coupon(&token, 10_000, MERCHANT),
            e.use_coupon(&token, 10_000, MERCHANT),
        );
        let (ra, rb) = tokio::join!(e.call(&a), e.call(&b));
        let mut codes = [code(&ra), code(&rb)];
        codes.sort();
        assert!(codes == ["00", "05"] || codes == ["05", "05"], "{codes:?}");
    }
    assert_eq!(e.charged(), 7_000, "charged once");
}
