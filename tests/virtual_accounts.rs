//! F17 (issue 23): virtual accounts over the demo's real switch — the admin API over HTTP,
//! the bank listener over TCP, RocksDB in a temp dir, the partner callbacks over HTTP to a
//! real receiver that checks their signatures — and the anonymous card's daily statement
//! pushed through the same outbox. No timing is asserted: what takes time is polled for,
//! with a generous bound.

mod common;

use std::path::Path;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;
use std::time::Duration;

use cyberswitch::admin::client::{ApiClient, ApiResponse};
use cyberswitch::demo::{self, Demo, DemoPorts};
use cyberswitch::iso8583::{OwnedMessage, Spec};
use cyberswitch::net::client::Client;
use cyberswitch::net::framing::Framing;
use cyberswitch::sim::bank::deposit_message;
use cyberswitch::sim::partner::PartnerSim;
use serde_json::{json, Value};
use tokio_util::sync::CancellationToken;

use common::{code, copy_dir};

const WAIT: Duration = Duration::from_secs(10);
/// How long anything polled for may take before the test gives up (not an assertion of
/// speed: retries back off up to 2 s in the demo).
const PATIENCE: Duration = Duration::from_secs(60);
const PARTNER: &str = "DEMOMALL";
const BANK: &str = "004";
const REGION: &str = "SEOUL";

struct Env {
    demo: Option<Demo>,
    stop: CancellationToken,
    spec: Arc<Spec>,
    stan: AtomicU32,
    rrn: AtomicU32,
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
        stan: AtomicU32::new(1),
        rrn: AtomicU32::new(1),
    }
}

impl Env {
    fn demo(&self) -> &Demo {
        self.demo.as_ref().unwrap()
    }

    fn api(&self, token_file: &str) -> ApiClient {
        common::api_client(self.demo(), token_file)
    }

    /// The partner's own token.
    fn partner(&self) -> ApiClient {
        self.api("partner.token")
    }

    fn operator(&self) -> ApiClient {
        self.api("operator.token")
    }

    async fn call(
        &self,
        c: &ApiClient,
        method: &str,
        path: &str,
        body: Option<Value>,
    ) -> ApiResponse {
        c.call(method, path, body.as_ref()).await.unwrap()
    }

    async fn ok(&self, c: &ApiClient, method: &str, path: &str, body: Option<Value>) -> Value {
        let r = self.call(c, method, path, body).await;
        assert!(r.ok(), "{method} {path}: {} {:?}", r.status, r.body);
        r.body
    }

    /// Assign an account to an order (by the partner's own token).
    async fn assign(
        &self,
        region: &str,
        order: &str,
        amount: u64,
        expires_s: Option<u64>,
    ) -> String {
        let body = json!({"bank": BANK, "region": region, "order": order, "amount": amount, "expires_s": expires_s});
        let o = self
            .ok(&self.partner(), "post", "/v1/va/orders", Some(body))
            .await;
        assert_eq!(o["status"], "open");
        o["account"].as_str().unwrap().to_string()
    }

    async fn order(&self, order: &str) -> Value {
        self.ok(
            &self.partner(),
            "get",
            &format!("/v1/va/orders/{order}"),
            None,
        )
        .await
    }

    fn next_rrn(&self) -> String {
        format!("VA{:010}", self.rrn.fetch_add(1, Ordering::Relaxed))
    }

    fn deposit(&self, account: &str, amount: u64, rrn: &str, advice: bool) -> OwnedMessage {
        let stan = self.stan.fetch_add(1, Ordering::Relaxed);
        deposit_message(account, amount, stan, rrn, advice)
    }

    /// Send to the bank listener, over a connection of its own.
    async fn bank(&self, m: &OwnedMessage) -> OwnedMessage {
        let addr = self.demo().bank_addr().unwrap().to_string();
        let mut c = Client::connect(&addr, self.spec.clone(), Framing::default())
            .await
            .unwrap();
        c.call(m, WAIT).await.unwrap()
    }

    async fn outbox_item(&self, id: &str) -> Option<Value> {
        let list = self.ok(&self.operator(), "get", "/v1/outbox", None).await;
        list["items"]
            .as_array()
            .unwrap()
            .iter()
            .find(|i| i["id"] == id)
            .cloned()
    }

    /// Poll until `f` holds of the outbox item `id` (or give up).
    async fn until_item(&self, id: &str, what: &str, f: impl Fn(&Value) -> bool) -> Value {
        let deadline = tokio::time::Instant::now() + PATIENCE;
        loop {
            if let Some(i) = self.outbox_item(id).await {
                if f(&i) {
                    return i;
                }
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "outbox item {id}: never {what}: {:?}",
                self.outbox_item(id).await
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

/// Poll until the receiver has the callback `id`.
async fn received(partner: &PartnerSim, id: &str) -> cyberswitch::sim::partner::Received {
    let deadline = tokio::time::Instant::now() + PATIENCE;
    loop {
        if let Some(r) = partner.received().into_iter().find(|r| r.id == id) {
            return r;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "callback {id} never received; got {:?}",
            partner.received()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn account_state(pools: &Value, account: &str) -> String {
    pools["pools"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|p| p["accounts"].as_array().unwrap().iter())
        .find(|a| a["account"] == account)
        .map(|a| a["state"].as_str().unwrap().to_string())
        .unwrap_or_else(|| panic!("{account} in no pool: {pools}"))
}

/// The issue's main path: assign → deposit 00 → order paid → callback received by a real
/// HTTP receiver that accepts only a valid signature → account back in the pool. A
/// retransmission of the deposit gets the same answer and pays nothing twice.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_matching_deposit_pays_the_order_and_the_partner_gets_a_signed_callback() {
    let dir = tempfile::tempdir().unwrap();
    let e = env(dir.path()).await;

    let account = e.assign(REGION, "ORD-1", 25_000, None).await;
    assert!(demo::demo_va_accounts().contains(&account));
    let pools = e.ok(&e.partner(), "get", "/v1/va/pools", None).await;
    assert_eq!(account_state(&pools, &account), "assigned");
    // Unique while open: the next order gets another account.
    let other = e.assign(REGION, "ORD-2", 10_000, None).await;
    assert_ne!(other, account);

    let rrn = e.next_rrn();
    let deposit = e.deposit(&account, 25_000, &rrn, false);
    let answer = e.bank(&deposit).await;
    assert_eq!(answer.mti().as_str(), "0210");
    assert_eq!(code(&answer), "00");
    assert_eq!(answer.get(103), Some(account.as_bytes()));
    let auth = answer.get(38).unwrap().to_vec();

    let order = e.order("ORD-1").await;
    assert_eq!(order["status"], "paid");
    assert_eq!(order["deposit"]["amount"], 25_000);
    assert_eq!(order["deposit"]["rrn"], rrn.as_str());
    assert!(order["history"].as_array().unwrap().len() >= 2);

    // The callback, signed, at the demo's receiver (which answers 401 to a bad signature).
    let partner = &e.demo().partner;
    let cb = received(partner, "va-paid-ORD-1").await;
    assert_eq!(cb.event, "va.paid");
    assert_eq!(cb.body["order"], "ORD-1");
    assert_eq!(cb.body["amount"], 25_000);
    assert_eq!(cb.body["account"], account.as_str());
    assert_eq!(partner.refused(), 0);
    e.until_item("va-paid-ORD-1", "delivered", |i| i["status"] == "delivered")
        .await;

    // The receiver does check: a callback signed with another secret is refused.
    let target =
        cyberswitch::callback::HttpTarget::parse(&format!("http://{}/callbacks", partner.addr))
            .unwrap();
    let status = cyberswitch::callback::post(
        &target,
        b"not-the-partner-secret",
        "forged",
        "va.paid",
        br#"{"order":"ORD-1"}"#,
        WAIT,
    )
    .await
    .unwrap();
    assert_eq!(status, 401);
    assert_eq!(partner.refused(), 1);

    // The account is back in the pool.
    let pools = e.ok(&e.partner(), "get", "/v1/va/pools", None).await;
    assert_eq!(account_state(&pools, &account), "free");

    // The bank retransmits the deposit (0200 and 0201): the same answer, paid once.
    let again = e.bank(&deposit).await;
    assert_eq!(code(&again), "00");
    assert_eq!(again.get(38), Some(&auth[..]));
    let mut repeat = deposit.clone();
    repeat.set_mti(cyberswitch::iso8583::Mti::new(b"0201").unwrap());
    assert_eq!(code(&e.bank(&repeat).await), "00");
    let report = e
        .ok(
            &e.partner(),
            "get",
            &format!("/v1/va/report?partner={PARTNER}"),
            None,
        )
        .await;
    assert_eq!(report["paid"]["count"], 1);
    assert_eq!(report["collected"], 25_000);
    assert_eq!(report["orders"]["count"], 2);
    assert_eq!(report["open"]["count"], 1);
    // The freed account, deposited to again (a new deposit): no open order there now, 14.
    let late = e.deposit(&account, 25_000, &e.next_rrn(), false);
    assert_eq!(code(&e.bank(&late).await), "14");
    let items = e
        .ok(&e.operator(), "get", "/v1/outbox?status=delivered", None)
        .await;
    let paid_callbacks = items["items"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|i| i["event"] == "va.paid")
        .count();
    assert_eq!(paid_callbacks, 1, "one callback per paid order");
}

/// Wrong amount 13 (the order stays open); unknown account 14; an expired order 14, and its
/// account reused by a new order.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn wrong_amount_is_13_unknown_and_expired_are_14_and_an_expired_account_is_reused() {
    let dir = tempfile::tempdir().unwrap();
    let e = env(dir.path()).await;
    // A pool of one account, so that reuse is visible.
    let body = json!({"bank": BANK, "region": "BUSAN", "accounts": ["00499900000001"]});
    let added = e.ok(&e.partner(), "post", "/v1/va/pools", Some(body)).await;
    assert_eq!(added["added"].as_array().unwrap().len(), 1);

    let account = e.assign("BUSAN", "ORD-W", 30_000, None).await;
    let wrong_rrn = e.next_rrn();
    let wrong = e.deposit(&account, 29_999, &wrong_rrn, false);
    assert_eq!(code(&e.bank(&wrong).await), "13");
    assert_eq!(e.order("ORD-W").await["status"], "open");
    // The refused deposit's reference reused for the right amount (a bank numbering badly,
    // or two tools in one second): not a retransmission answered 13 again, nor a payment
    // under another deposit's reference, but 94; the order stays open.
    let reused = e.deposit(&account, 30_000, &wrong_rrn, false);
    assert_eq!(code(&e.bank(&reused).await), "94");
    assert_eq!(e.order("ORD-W").await["status"], "open");
    // The pool has no other account: a second order is refused while this one is open.
    let r = e
        .call(
            &e.partner(),
            "post",
            "/v1/va/orders",
            Some(json!({"bank": BANK, "region": "BUSAN", "order": "ORD-X", "amount": 1_000})),
        )
        .await;
    assert_eq!(r.status, 409);
    assert_eq!(r.error_code(), Some("pool_exhausted"));

    let unknown = e.deposit("00400000000000", 30_000, &e.next_rrn(), false);
    assert_eq!(code(&e.bank(&unknown).await), "14");

    // Pay ORD-W, so that the account is free for an order that will expire.
    let right = e.deposit(&account, 30_000, &e.next_rrn(), false);
    assert_eq!(code(&e.bank(&right).await), "00");
    let same = e.assign("BUSAN", "ORD-E", 5_000, Some(1)).await;
    assert_eq!(same, account);
    // Expired as soon as its second has passed (on read, before any sweep).
    let deadline = tokio::time::Instant::now() + PATIENCE;
    while e.order("ORD-E").await["status"] != "expired" {
        assert!(
            tokio::time::Instant::now() < deadline,
            "ORD-E never expired"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let too_late = e.deposit(&account, 5_000, &e.next_rrn(), false);
    assert_eq!(code(&e.bank(&too_late).await), "14");
    // The expired order's account goes to the next order.
    assert_eq!(e.assign("BUSAN", "ORD-N", 7_000, None).await, account);
    assert_eq!(e.order("ORD-E").await["status"], "expired");
    let ok = e.deposit(&account, 7_000, &e.next_rrn(), false);
    assert_eq!(code(&e.bank(&ok).await), "00");

    let report = e
        .ok(
            &e.operator(),
            "get",
            &format!("/v1/va/report?partner={PARTNER}"),
            None,
        )
        .await;
    assert_eq!(report["orders"]["count"], 3);
    assert_eq!(report["paid"]["count"], 2);
    assert_eq!(report["paid"]["amount"], 37_000);
    assert_eq!(report["expired"]["count"], 1);
    assert_eq!(report["expired"]["amount"], 5_000);
    assert_eq!(report["collected"], 37_000);
}

/// 0220 advices are always acknowledged: one matching an open order pays it (the bank has
/// booked the money), one matching nothing is recorded as a mismatch for the operator and in
/// the partner's report. A partner sees only its own mismatches.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn advices_are_acknowledged_and_unmatched_ones_listed_as_mismatches() {
    let dir = tempfile::tempdir().unwrap();
    let e = env(dir.path()).await;
    let account = e.assign(REGION, "ORD-A", 12_000, None).await;

    let booked = e.deposit(&account, 12_000, &e.next_rrn(), true);
    let ack = e.bank(&booked).await;
    assert_eq!(ack.mti().as_str(), "0230");
    assert_eq!(code(&ack), "00");
    assert_eq!(e.order("ORD-A").await["status"], "paid");

    // On a pool account with no open order now: acknowledged, recorded.
    let stray = e.deposit(&account, 4_000, &e.next_rrn(), true);
    assert_eq!(code(&e.bank(&stray).await), "00");
    // On no account at all.
    let nowhere = e.deposit("00411111111111", 9_000, &e.next_rrn(), true);
    assert_eq!(code(&e.bank(&nowhere).await), "00");
    // Its retransmission is acknowledged again and recorded once.
    assert_eq!(code(&e.bank(&nowhere).await), "00");

    let all = e.ok(&e.operator(), "get", "/v1/va/mismatches", None).await;
    let all = all["mismatches"].as_array().unwrap();
    assert_eq!(all.len(), 2, "{all:?}");
    let reasons: Vec<&str> = all.iter().map(|m| m["reason"].as_str().unwrap()).collect();
    assert!(reasons.contains(&"unassigned"), "{reasons:?}");
    assert!(reasons.contains(&"unknown account"), "{reasons:?}");
    // A page at a time: the first page's `next` leads to the rest.
    let first = e
        .ok(&e.operator(), "get", "/v1/va/mismatches?limit=1", None)
        .await;
    assert_eq!(first["mismatches"].as_array().unwrap().len(), 1);
    let next = first["next"].as_str().unwrap();
    let rest = format!("/v1/va/mismatches?limit=1&after={next}");
    let second = e.ok(&e.operator(), "get", &rest, None).await;
    assert_eq!(second["mismatches"][0], all[1]);
    assert!(second["next"].is_null(), "{second}");
    let r = e
        .call(&e.operator(), "get", "/v1/va/mismatches?limit=0", None)
        .await;
    assert_eq!(r.status, 400);
    // The partner sees the one on its account, and its report counts it.
    let own = e.ok(&e.partner(), "get", "/v1/va/mismatches", None).await;
    assert_eq!(own["mismatches"].as_array().unwrap().len(), 1);
    assert_eq!(own["mismatches"][0]["amount"], 4_000);
    let report = e.ok(&e.partner(), "get", "/v1/va/report", None).await;
    assert_eq!(report["mismatches"]["count"], 1);
    assert_eq!(report["mismatches"]["amount"], 4_000);
    assert_eq!(report["collected"], 12_000);
    // Another partner's records are not this partner's business.
    let r = e
        .call(&e.partner(), "get", "/v1/va/mismatches?partner=OTHER", None)
        .await;
    assert_eq!(r.status, 403);
}

/// The bank reverses a deposit it was answered 00 for (it did not book it after all): the
/// order is open again on its account, the partner hears `va.reversed` after `va.paid`, a
/// repeat of the reversed deposit is refused 12; a reversal that arrives before its deposit
/// makes the deposit refused when it comes.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_bank_reversal_unpays_the_order_and_the_partner_hears_it_after_the_payment() {
    let dir = tempfile::tempdir().unwrap();
    let e = env(dir.path()).await;
    let account = e.assign(REGION, "ORD-V", 20_000, None).await;
    let rrn = e.next_rrn();
    let deposit = e.deposit(&account, 20_000, &rrn, false);
    assert_eq!(code(&e.bank(&deposit).await), "00");
    assert_eq!(e.order("ORD-V").await["status"], "paid");

    let mut reversal = deposit.clone();
    reversal.set_mti(cyberswitch::iso8583::Mti::new(b"0400").unwrap());
    let answer = e.bank(&reversal).await;
    assert_eq!(answer.mti().as_str(), "0410");
    assert_eq!(code(&answer), "00");
    let order = e.order("ORD-V").await;
    assert_eq!(order["status"], "open", "{order}");
    assert!(order["deposit"].is_null());
    let pools = e.ok(&e.partner(), "get", "/v1/va/pools", None).await;
    assert_eq!(account_state(&pools, &account), "assigned");
    // Repeats: the reversal acknowledged again, the reversed deposit refused.
    assert_eq!(code(&e.bank(&reversal).await), "00");
    assert_eq!(code(&e.bank(&deposit).await), "12");
    assert_eq!(e.order("ORD-V").await["status"], "open");

    // The partner hears of the payment, then of its reversal.
    let partner = &e.demo().partner;
    received(partner, "va-paid-ORD-V").await;
    let deadline = tokio::time::Instant::now() + PATIENCE;
    let rev_id = loop {
        if let Some(r) = partner.received().iter().find(|r| r.event == "va.reversed") {
            break r.id.clone();
        }
        assert!(tokio::time::Instant::now() < deadline, "no va.reversed");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let ids: Vec<String> = partner.received().iter().map(|r| r.id.clone()).collect();
    let paid_at = ids.iter().position(|i| i == "va-paid-ORD-V").unwrap();
    let rev_at = ids.iter().position(|i| *i == rev_id).unwrap();
    assert!(paid_at < rev_at, "{ids:?}");

    // A new deposit pays it again.
    let again = e.deposit(&account, 20_000, &e.next_rrn(), false);
    assert_eq!(code(&e.bank(&again).await), "00");
    assert_eq!(e.order("ORD-V").await["status"], "paid");

    // Reversed before it arrived: refused when it does, the order untouched.
    let other = e.assign(REGION, "ORD-V2", 6_000, None).await;
    let early = e.deposit(&other, 6_000, &e.next_rrn(), false);
    let mut early_rev = early.clone();
    early_rev.set_mti(cyberswitch::iso8583::Mti::new(b"0420").unwrap());
    assert_eq!(code(&e.bank(&early_rev).await), "00");
    assert_eq!(code(&e.bank(&early).await), "12");
    assert_eq!(e.order("ORD-V2").await["status"], "open");

    let report = e.ok(&e.partner(), "get", "/v1/va/report", None).await;
    assert_eq!(report["paid"]["count"], 1);
    assert_eq!(report["collected"], 20_000);
}

/// The receiver is down: the callback is retried (visible in the outbox with its error) and
/// delivered once it is back; an operator can send it again.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_callback_is_retried_until_the_receiver_is_back() {
    let dir = tempfile::tempdir().unwrap();
    let e = env(dir.path()).await;
    let addr = e.demo().partner.addr;
    e.demo().partner.shut();
    // Wait until the port refuses connections.
    let deadline = tokio::time::Instant::now() + PATIENCE;
    while tokio::net::TcpStream::connect(addr).await.is_ok() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the receiver never closed"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    let account = e.assign(REGION, "ORD-R", 8_000, None).await;
    assert_eq!(
        code(
            &e.bank(&e.deposit(&account, 8_000, &e.next_rrn(), false))
                .await
        ),
        "00"
    );
    let item = e
        .until_item("va-paid-ORD-R", "retried", |i| {
            i["attempts"].as_u64().unwrap_or(0) >= 2
        })
        .await;
    assert_eq!(item["status"], "pending");
    assert!(item["last_error"].as_str().is_some(), "{item}");
    let pending = e
        .ok(&e.partner(), "get", "/v1/outbox?status=pending", None)
        .await;
    assert_eq!(pending["items"].as_array().unwrap().len(), 1);

    // Back on the same port (the secret is the demo's).
    let secret = demo::secret(&e.demo().dir, "partner.secret").unwrap();
    let back = PartnerSim::start(addr, &secret, false, e.stop.clone())
        .await
        .unwrap();
    let cb = received(&back, "va-paid-ORD-R").await;
    assert_eq!(cb.body["amount"], 8_000);
    e.until_item("va-paid-ORD-R", "delivered", |i| i["status"] == "delivered")
        .await;

    // An operator sends it again; a partner may not.
    let r = e
        .call(
            &e.partner(),
            "post",
            "/v1/outbox/va-paid-ORD-R/resend",
            None,
        )
        .await;
    assert_eq!(r.status, 403);
    e.ok(
        &e.operator(),
        "post",
        "/v1/outbox/va-paid-ORD-R/resend",
        None,
    )
    .await;
    let deadline = tokio::time::Instant::now() + PATIENCE;
    while back
        .received()
        .iter()
        .find(|r| r.id == "va-paid-ORD-R")
        .map(|r| r.times)
        != Some(2)
    {
        assert!(tokio::time::Instant::now() < deadline, "never sent again");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    e.until_item("va-paid-ORD-R", "delivered again", |i| {
        i["status"] == "delivered" && i["resends"] == 1
    })
    .await;
}

/// Orders and the outbox survive a restart: a callback still pending when the switch stops
/// is delivered after it starts again, and the paid order is still paid (a repeat of its
/// deposit still 00, nothing paid twice).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_restart_keeps_orders_and_the_outbox() {
    let dir = tempfile::tempdir().unwrap();
    let mut e = env(dir.path()).await;
    e.demo().partner.shut();
    let account = e.assign(REGION, "ORD-S", 15_000, None).await;
    let open_account = e.assign(REGION, "ORD-T", 3_000, None).await;
    let deposit = e.deposit(&account, 15_000, &e.next_rrn(), false);
    assert_eq!(code(&e.bank(&deposit).await), "00");
    e.until_item("va-paid-ORD-S", "tried", |i| {
        i["attempts"].as_u64().unwrap_or(0) >= 1
    })
    .await;

    // Stop; restart on a copy of what is on disk (this process keeps the stopped demo's
    // databases locked until its runtime ends).
    e.stop.cancel();
    drop(e.demo.take());
    tokio::time::sleep(Duration::from_millis(200)).await;
    let copy = tempfile::tempdir().unwrap();
    copy_dir(dir.path(), copy.path());
    let stop = CancellationToken::new();
    e.demo = Some(
        demo::start(copy.path(), DemoPorts::ephemeral(), stop.clone())
            .await
            .expect("the demo restarts on its data directory"),
    );
    e.stop = stop;

    assert_eq!(e.order("ORD-S").await["status"], "paid");
    assert_eq!(e.order("ORD-T").await["status"], "open");
    let cb = received(&e.demo().partner, "va-paid-ORD-S").await;
    assert_eq!(cb.body["order"], "ORD-S");
    assert_eq!(code(&e.bank(&deposit).await), "00");
    let pools = e.ok(&e.partner(), "get", "/v1/va/pools", None).await;
    assert_eq!(account_state(&pools, &open_account), "assigned");
    assert_eq!(account_state(&pools, &account), "free");
    let report = e.ok(&e.partner(), "get", "/v1/va/report", None).await;
    assert_eq!(report["paid"]["count"], 1);
    assert_eq!(report["collected"], 15_000);
}

/// F15: an anonymous card's statement of a day is pushed to the partner that issued it,
/// through the same signed outbox, once per card and day.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_anonymous_cards_statement_is_pushed_to_its_partner() {
    let dir = tempfile::tempdir().unwrap();
    let e = env(dir.path()).await;
    // Issued by the partner's own token: the card is the partner's.
    let issued = e
        .ok(
            &e.partner(),
            "post",
            "/v1/cards",
            Some(json!({"program": "ANON", "denomination": 50_000, "card_number": "6271000000000017"})),
        )
        .await;
    let card_id = issued["id"].as_str().unwrap().to_string();
    let switch = &e.demo().running.switch;
    let today = chrono::Local::now().date_naive();
    let queue = || {
        cyberswitch::statements::queue_day(
            &switch.hosted,
            switch.va.outbox(),
            &switch.config,
            chrono::Utc::now().timestamp_millis(),
            today,
        )
    };
    assert_eq!(queue().await.unwrap(), 1);
    assert_eq!(queue().await.unwrap(), 0, "once per card and day");
    let id = format!("stmt-{card_id}-{today}");
    let cb = received(&e.demo().partner, &id).await;
    assert_eq!(cb.event, "card.statement");
    assert_eq!(cb.body["card"], card_id.as_str());
    assert_eq!(cb.body["statement"]["closing"]["posted"], 50_000);
    // Masked: the card number never travels in clear.
    assert!(!cb.body.to_string().contains("6271000000000017"));
    assert_eq!(e.demo().partner.refused(), 0);
}
