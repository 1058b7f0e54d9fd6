//! The hosted programs end to end (SPEC §7, §8, F11, F12, F14–F16): the real switch with its
//! hosted ledger, the admin API over real HTTP, terminals over real TCP, RocksDB in a temp dir.

mod common;

use std::sync::Arc;
use std::time::Duration;

use cyberswitch::admin::client::{ApiClient, ApiResponse};
use cyberswitch::demo::{self, Demo, DemoPorts, DEMO_PREPAID};
use cyberswitch::iso8583::tlv::SwitchData;
use cyberswitch::iso8583::{AdditionalAmount, Mti, OwnedMessage, Spec};
use cyberswitch::net::client::Client;
use cyberswitch::pin::{encrypt_block, ClearPin, PinKey};
use serde_json::{json, Value};
use tokio_util::sync::CancellationToken;

const WAIT: Duration = Duration::from_secs(10);
const PREPAID: &str = DEMO_PREPAID.0;
const ANON_CARD: &str = "6271000000000017";
const SUB_A: &str = "6272000000000016";
const SUB_B: &str = "6272000000000024";
const GIFT_CARD: &str = "9410000000000013"; // GIFT G-3001, EMONEY E-1001, MILEAGE M-2001
const PLAIN_CARD: &str = "9410000000000021";

const EMONEY_TOKEN: &str = "emoney-issuer-token-0123456789";
const GIFT_TOKEN: &str = "gift-issuer-token-0123456789ab";
const PARTNER_TOKEN: &str = "partner-mall-token-0123456789a";
const SLOW_TOKEN: &str = "partner-slow-token-0123456789a";
const OTHER_TOKEN: &str = "partner-other-token-012345678a";

struct Env {
    demo: Demo,
    stop: CancellationToken,
    dir: tempfile::TempDir,
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
    let stop = CancellationToken::new();
    let extra = format!(
        r#"
[[admin.token]]
name = "emoney"
role = "issuer"
scope = "EMONEY"
token = {{ value = "{EMONEY_TOKEN}" }}

[[admin.token]]
name = "gift"
role = "issuer"
scope = "GIFT"
token = {{ value = "{GIFT_TOKEN}" }}

[[admin.token]]
name = "mall"
role = "partner"
scope = "MALL"
token = {{ value = "{PARTNER_TOKEN}" }}

[[admin.token]]
name = "other"
role = "partner"
scope = "OTHER"
token = {{ value = "{OTHER_TOKEN}" }}

[[admin.token]]
name = "slow"
role = "partner"
scope = "SLOW"
token = {{ value = "{SLOW_TOKEN}" }}
rate_per_s = 1
"#
    );
    let demo = demo::start_with(
        dir.path(),
        DemoPorts::ephemeral(),
        stop.clone(),
        |_| {},
        &extra,
    )
    .await
    .unwrap();
    let pin_key = PinKey::from_hex(&demo::secret(dir.path(), "terminal-pin.key").unwrap()).unwrap();
    Env {
        demo,
        stop,
        dir,
        spec: common::terminal_spec(),
        pin_key,
        stan: std::sync::atomic::AtomicU32::new(100),
    }
}

impl Env {
    fn api(&self, token: Option<&str>) -> ApiClient {
        let url = format!("http://{}", self.demo.running.admin.unwrap());
        ApiClient::new(&url, token.map(str::to_string)).unwrap()
    }
    fn operator(&self) -> ApiClient {
        self.api(Some(
            &demo::secret(self.dir.path(), "operator.token").unwrap(),
        ))
    }
    async fn terminal(&self) -> Client {
        common::terminal(&self.demo, &self.spec).await
    }
    fn next_stan(&self) -> u32 {
        self.stan.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
    }
    /// A terminal request; with a PIN, field 52 holds its format 0 block under the terminal key.
    fn request(
        &self,
        mti: &[u8; 4],
        card: &str,
        pc: &str,
        amount: u64,
        pin: Option<&str>,
    ) -> OwnedMessage {
        let mut m = OwnedMessage::new(Mti::new(mti).unwrap());
        m.set(2, card.as_bytes())
            .set(3, pc.as_bytes())
            .set_number(4, amount, 12)
            .set(7, b"1121120000")
            .set_number(11, u64::from(self.next_stan()), 6)
            .set(12, b"120000")
            .set(13, b"1121")
            .set(41, b"TERM0001")
            .set(42, b"MERCHANT0000001")
            .set(49, b"410");
        if let Some(p) = pin {
            let block = encrypt_block(&self.pin_key, &ClearPin::new(p).unwrap(), card).unwrap();
            m.set(52, &block);
        }
        m
    }
    async fn call(&self, m: &OwnedMessage) -> OwnedMessage {
        self.terminal().await.call(m, WAIT).await.unwrap()
    }
    async fn drained(&self) {
        common::drained(&self.demo).await
    }
    async fn card_id(&self, number: &str) -> String {
        let r = call(
            &self.operator(),
            "post",
            "/v1/cards/lookup",
            json!({"card_number": number}),
        )
        .await;
        assert_eq!(r.status, 200, "{:?}", r.body);
        r.body["id"].as_str().unwrap().to_string()
    }
    /// The kinds of a card's ledger entries, oldest first.
    async fn history_kinds(&self, id: &str) -> Vec<String> {
        let h = self
            .operator()
            .call("get", &format!("/v1/cards/{id}/history"), None)
            .await
            .unwrap();
        h.body["entries"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| e["kind"].as_str().unwrap().to_string())
            .collect()
    }

    async fn card(&self, id: &str) -> Value {
        let r = self
            .operator()
            .call("get", &format!("/v1/cards/{id}"), None)
            .await
            .unwrap();
        assert_eq!(r.status, 200, "{:?}", r.body);
        r.body
    }
}

/// A card's statement for today (local time), answered 200.
async fn statement_today(api: &ApiClient, id: &str) -> ApiResponse {
    let today = chrono::Local::now().date_naive();
    let path = format!("/v1/cards/{id}/statement?date={today}");
    let r = api.call("get", &path, None).await.unwrap();
    assert_eq!(r.status, 200, "{:?}", r.body);
    r
}

async fn call(api: &ApiClient, method: &str, path: &str, body: Value) -> ApiResponse {
    api.call(method, path, Some(&body)).await.unwrap()
}

fn code(m: &OwnedMessage) -> String {
    String::from_utf8_lossy(m.get(39).unwrap_or(b"")).into_owned()
}

fn available(m: &OwnedMessage) -> i64 {
    AdditionalAmount::parse_all(m.get(54).expect("field 54")).unwrap()[0].amount
}

fn with_tag(mut m: OwnedMessage, tag: &str, value: &str) -> OwnedMessage {
    let mut sd = SwitchData::new();
    sd.push(tag, value.as_bytes());
    m.set(48, sd.as_bytes());
    m
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn prepaid_card_spent_at_a_terminal_with_its_pin_earns_points_and_reverses() {
    let env = env().await;
    let id = env.card_id(PREPAID).await;
    let card = env.card(&id).await;
    assert_eq!(card["card_number"], "627000******0018");
    assert_eq!(card["status"], "active");
    assert_eq!(card["balance"], 20_000);

    // Balance inquiry at a terminal: the card's own balance.
    let a = env
        .call(&env.request(b"0100", PREPAID, "310000", 0, None))
        .await;
    assert_eq!(code(&a), "00");
    assert_eq!(available(&a), 20_000);

    let purchase = env.request(b"0200", PREPAID, "000000", 5_000, Some("1234"));
    let a = env.call(&purchase).await;
    assert_eq!(code(&a), "00", "{a:?}");
    assert_eq!(available(&a), 15_000);
    assert_eq!(a.get(38).map(|c| c.len()), Some(6));
    let card = env.card(&id).await;
    assert_eq!(card["balance"], 15_000);
    assert_eq!(card["points"], 50, "10 points per 1,000 spent");

    // The ledger's balance is what its entries say.
    let ledger = &env.demo.running.switch.hosted.ledger;
    let account = format!("card:{id}");
    assert_eq!(
        ledger.derive(&account).unwrap(),
        ledger.balance(&account).unwrap()
    );

    // The terminal reverses it: the debit is refunded through the queue, the points go back.
    let rev = common::reversal_of(&purchase, u64::from(env.next_stan()), "1121120500");
    let a = env.call(&rev).await;
    assert_eq!(code(&a), "00");
    env.drained().await;
    let card = env.card(&id).await;
    assert_eq!(card["balance"], 20_000);
    assert_eq!(card["points"], 0);

    // History lists every entry; the switch's journal holds no card number in clear.
    let kinds = env.history_kinds(&id).await;
    assert_eq!(kinds, ["credit", "debit", "refund"]);
    let files =
        common::scan_for_card_numbers(&env.dir.path().join("switch"), &[PREPAID], "").unwrap();
    assert!(files > 0, "the scan looked at the data files");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn wrong_pin_three_times_then_75_until_an_operator_resets() {
    let env = env().await;
    let id = env.card_id(PREPAID).await;
    let codes: Vec<String> = {
        let mut v = Vec::new();
        for _ in 0..3 {
            v.push(code(
                &env.call(&env.request(b"0200", PREPAID, "000000", 1_000, Some("9999")))
                    .await,
            ));
        }
        v
    };
    assert_eq!(codes, ["55", "55", "75"]);
    assert_eq!(env.card(&id).await["pin_failures"], 3);
    // Locked: even the right PIN is refused now.
    let a = env
        .call(&env.request(b"0200", PREPAID, "000000", 1_000, Some("1234")))
        .await;
    assert_eq!(code(&a), "75");
    // A purchase without a PIN block: the program requires one.
    let r = env
        .operator()
        .call("post", &format!("/v1/cards/{id}/reset-pin-tries"), None)
        .await
        .unwrap();
    assert_eq!(r.status, 200);
    let a = env
        .call(&env.request(b"0200", PREPAID, "000000", 1_000, None))
        .await;
    assert_eq!(code(&a), "55");
    let a = env
        .call(&env.request(b"0200", PREPAID, "000000", 1_000, Some("1234")))
        .await;
    assert_eq!(code(&a), "00");
    assert_eq!(env.card(&id).await["balance"], 19_000);
    // A partner that did not issue the card cannot reset it.
    let r = env
        .api(Some(PARTNER_TOKEN))
        .call("post", &format!("/v1/cards/{id}/reset-pin-tries"), None)
        .await
        .unwrap();
    assert_eq!(r.status, 403);
    assert_eq!(r.error_code(), Some("forbidden"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn recharge_in_steps_never_above_the_maximum() {
    let env = env().await;
    let id = env.card_id(PREPAID).await;
    let op = env.operator();
    let path = format!("/v1/cards/{id}/recharge");
    let r = call(
        &op,
        "post",
        &path,
        json!({"amount": 10_000, "reference": "r1"}),
    )
    .await;
    assert_eq!(r.status, 200, "{:?}", r.body);
    assert_eq!(r.body["balance"], 30_000);
    // The same reference again: no second effect.
    let r = call(
        &op,
        "post",
        &path,
        json!({"amount": 10_000, "reference": "r1"}),
    )
    .await;
    assert_eq!(r.body["balance"], 30_000);
    // Over 1,000,000: refused.
    let r = call(
        &op,
        "post",
        &path,
        json!({"amount": 980_000, "reference": "r2"}),
    )
    .await;
    assert_eq!(r.status, 422);
    assert_eq!(r.error_code(), Some("limit_exceeded"));
    let r = call(
        &op,
        "post",
        &path,
        json!({"amount": 15_000, "reference": "r3"}),
    )
    .await;
    assert_eq!(r.error_code(), Some("bad_amount"));

    // The same through a terminal: 0200 processing code 21.
    let a = env
        .call(&env.request(b"0200", PREPAID, "210000", 980_000, None))
        .await;
    assert_eq!(code(&a), "61");
    let a = env
        .call(&env.request(b"0200", PREPAID, "210000", 15_000, None))
        .await;
    assert_eq!(code(&a), "13");
    let a = env
        .call(&env.request(b"0200", PREPAID, "210000", 970_000, None))
        .await;
    assert_eq!(code(&a), "00");
    assert_eq!(available(&a), 1_000_000);
    assert_eq!(env.card(&id).await["balance"], 1_000_000);

    // Suspended: refused (62) until resumed.
    let status = format!("/v1/cards/{id}/status");
    let r = call(&op, "post", &status, json!({"status": "suspended"})).await;
    assert_eq!(r.body["status"], "suspended");
    let a = env
        .call(&env.request(b"0200", PREPAID, "000000", 1_000, Some("1234")))
        .await;
    assert_eq!(code(&a), "62");
    let r = call(&op, "post", &status, json!({"status": "active"})).await;
    assert_eq!(r.body["status"], "active");

    // An authorization still pending: no refund until it completes (or expires), for
    // its money would come back to a closed card.
    let points = env.card(&id).await["points"].clone();
    let auth = env.request(b"0100", PREPAID, "000000", 1_000, Some("1234"));
    let a = env.call(&auth).await;
    assert_eq!(code(&a), "00");
    // An authorization earns no points: its hold may yet expire.
    assert_eq!(env.card(&id).await["points"], points);
    let refund = format!("/v1/cards/{id}/refund");
    let r = op.call("post", &refund, None).await.unwrap();
    assert_eq!(r.status, 409, "{:?}", r.body);
    assert_eq!(env.card(&id).await["status"], "active");
    let rev = common::reversal_of(&auth, u64::from(env.next_stan()), "1121120500");
    assert_eq!(code(&env.call(&rev).await), "00");
    env.drained().await;

    // Balance refund closes the card; a closed card cannot pay.
    let r = op
        .call("post", &format!("/v1/cards/{id}/refund"), None)
        .await
        .unwrap();
    assert_eq!(r.body["refunded"], 1_000_000);
    assert_eq!(r.body["status"], "closed");
    let a = env
        .call(&env.request(b"0200", PREPAID, "000000", 1_000, Some("1234")))
        .await;
    assert_eq!(code(&a), "14");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn expired_card_answered_54() {
    let env = env().await;
    let id = env.card_id(PREPAID).await;
    // The terminal read an expiry in the past from the card.
    let mut m = env.request(b"0200", PREPAID, "000000", 1_000, Some("1234"));
    m.set(14, b"2001");
    assert_eq!(code(&env.call(&m).await), "54");
    // The card's own expiry passed.
    let r = call(
        &env.operator(),
        "post",
        &format!("/v1/cards/{id}/expiry"),
        json!({"expiry": "2001"}),
    )
    .await;
    assert_eq!(r.status, 200, "{:?}", r.body);
    let a = env
        .call(&env.request(b"0200", PREPAID, "000000", 1_000, Some("1234")))
        .await;
    assert_eq!(code(&a), "54");
    assert_eq!(env.card(&id).await["balance"], 20_000);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn anonymous_card_preregistered_purchase_must_match_and_statement_lists_the_day() {
    let env = env().await;
    let partner = env.api(Some(PARTNER_TOKEN));
    // No personal data on an anonymous card.
    let r = call(&partner, "post", "/v1/cards", json!({"program": "ANON", "denomination": 50_000, "card_number": ANON_CARD, "holder": "Kim"})).await;
    assert_eq!(r.status, 400);
    let r = call(
        &partner,
        "post",
        "/v1/cards",
        json!({"program": "ANON", "denomination": 50_000, "card_number": ANON_CARD}),
    )
    .await;
    assert_eq!(r.status, 201, "{:?}", r.body);
    assert_eq!(r.body["card_number"], "627100******0017");
    assert_eq!(r.body["holder"], Value::Null);
    let id = r.body["id"].as_str().unwrap().to_string();
    let r = call(
        &partner,
        "post",
        &format!("/v1/cards/{id}/activate"),
        json!({}),
    )
    .await;
    assert_eq!(r.body["status"], "active");

    let until = (chrono::Utc::now() + chrono::Duration::hours(1)).to_rfc3339();
    let r = call(&partner, "post", "/v1/preregistrations", json!({"card_id": id, "merchant_id": "MERCHANT0000001", "amount": 7_000, "valid_until": until})).await;
    assert_eq!(r.status, 201, "{:?}", r.body);
    let pr = r.body["id"].as_str().unwrap().to_string();

    // A different amount: refused (13). Another merchant: refused (12).
    let a = env
        .call(&with_tag(
            env.request(b"0200", ANON_CARD, "000000", 8_000, None),
            "PR",
            &pr,
        ))
        .await;
    assert_eq!(code(&a), "13");
    let mut other = with_tag(
        env.request(b"0200", ANON_CARD, "000000", 7_000, None),
        "PR",
        &pr,
    );
    other.set(42, b"MERCHANT0000002");
    assert_eq!(code(&env.call(&other).await), "12");
    // The registered one: approved, once.
    let a = env
        .call(&with_tag(
            env.request(b"0200", ANON_CARD, "000000", 7_000, None),
            "PR",
            &pr,
        ))
        .await;
    assert_eq!(code(&a), "00");
    assert_eq!(available(&a), 43_000);
    let a = env
        .call(&with_tag(
            env.request(b"0200", ANON_CARD, "000000", 7_000, None),
            "PR",
            &pr,
        ))
        .await;
    assert_eq!(code(&a), "12");
    // Spending without a pre-registration works at any merchant.
    let a = env
        .call(&env.request(b"0200", ANON_CARD, "000000", 3_000, None))
        .await;
    assert_eq!(code(&a), "00");

    // Today's statement (yesterday's is the default; a day is asked for by date).
    let r = statement_today(&partner, &id).await;
    assert_eq!(r.body["opening"]["posted"], 0);
    assert_eq!(r.body["closing"]["posted"], 40_000);
    assert_eq!(r.body["entries"].as_array().unwrap().len(), 3);
    let r = partner
        .call("get", &format!("/v1/cards/{id}/statement"), None)
        .await
        .unwrap();
    assert_eq!(
        r.body["entries"].as_array().unwrap().len(),
        0,
        "nothing happened yesterday"
    );
    let r = partner
        .call(
            "get",
            &format!("/v1/cards/{id}/statement?date=21-11-2026"),
            None,
        )
        .await
        .unwrap();
    assert_eq!(r.status, 400);
    assert_eq!(r.error_code(), Some("invalid_request"));

    // The same statement from the command line.
    let token = demo::secret(env.dir.path(), "operator.token").unwrap();
    let url = format!("http://{}", env.demo.running.admin.unwrap());
    let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_cyberswitch"))
        .args([
            "api",
            "--url",
            &url,
            "card-statement",
            &id,
            "--date",
            &chrono::Local::now().date_naive().to_string(),
        ])
        .env("CYBERSWITCH_TOKEN", token)
        .output()
        .await
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["closing"]["posted"], 40_000);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn subaccount_over_its_daily_limit_refused_while_the_master_pays_for_another() {
    let env = env().await;
    let op = env.operator();
    let r = call(&op, "post", "/v1/masters", json!({"id": "division-7"})).await;
    assert_eq!(r.status, 201, "{:?}", r.body);
    let r = call(
        &op,
        "post",
        "/v1/masters/division-7/fund",
        json!({"amount": 100_000, "reference": "f1"}),
    )
    .await;
    assert_eq!(r.body["available"], 100_000);
    for (card, pin) in [(SUB_A, "1111"), (SUB_B, "2222")] {
        let r = call(&op, "post", "/v1/masters/division-7/subs", json!({"card_number": card, "per_txn_limit": 30_000, "daily_limit": 50_000, "pin": pin})).await;
        assert_eq!(r.status, 201, "{:?}", r.body);
        assert_eq!(r.body["status"], "active");
    }
    let a = env
        .call(&env.request(b"0200", SUB_A, "000000", 30_000, Some("1111")))
        .await;
    assert_eq!(code(&a), "00");
    // Over the per-transaction limit, then over the daily limit: 61.
    let a = env
        .call(&env.request(b"0200", SUB_A, "000000", 30_001, Some("1111")))
        .await;
    assert_eq!(code(&a), "61");
    let a = env
        .call(&env.request(b"0200", SUB_A, "000000", 25_000, Some("1111")))
        .await;
    assert_eq!(code(&a), "61");
    // The master still pays for the other sub-account.
    let a = env
        .call(&env.request(b"0200", SUB_B, "000000", 25_000, Some("2222")))
        .await;
    assert_eq!(code(&a), "00");
    assert_eq!(available(&a), 45_000);
    let a = env
        .call(&env.request(b"0200", SUB_A, "000000", 20_000, Some("1111")))
        .await;
    assert_eq!(code(&a), "00", "within the day's limit still");
    let r = op
        .call("get", "/v1/masters/division-7", None)
        .await
        .unwrap();
    assert_eq!(r.body["available"], 25_000);
    assert_eq!(r.body["subs"].as_array().unwrap().len(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn tokens_roles_and_issuer_lookup() {
    let env = env().await;
    // Missing or wrong token: 401 with a JSON error.
    let r = env.api(None).call("get", "/v1/health", None).await.unwrap();
    assert_eq!(r.status, 401);
    assert_eq!(r.error_code(), Some("unauthorized"));
    let r = env
        .api(Some("not-a-token-at-all-xxxxxxxx"))
        .call("get", "/v1/health", None)
        .await
        .unwrap();
    assert_eq!(r.status, 401);

    // F11: an issuer sees its own accounts on a card, nothing of other issuers'.
    let emoney = env.api(Some(EMONEY_TOKEN));
    let r = call(
        &emoney,
        "post",
        "/v1/issuers/EMONEY/lookup",
        json!({"card_number": GIFT_CARD}),
    )
    .await;
    assert_eq!(r.status, 200, "{:?}", r.body);
    assert_eq!(
        r.body["accounts"],
        json!([{"account": "E-1001", "priority": 2, "label": "e-money"}])
    );
    assert_eq!(r.body["card_number"], "941000******0013");
    let r = call(
        &emoney,
        "post",
        "/v1/issuers/GIFT/lookup",
        json!({"card_number": GIFT_CARD}),
    )
    .await;
    assert_eq!(r.status, 403);
    assert_eq!(r.error_code(), Some("forbidden"));
    // An issuer lists only the links to its own accounts.
    let r = call(
        &emoney,
        "post",
        "/v1/links/query",
        json!({"card_number": GIFT_CARD}),
    )
    .await;
    assert_eq!(r.status, 200, "{:?}", r.body);
    let accounts: Vec<&str> = r.body["links"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l["account"].as_str().unwrap())
        .collect();
    assert_eq!(accounts, ["E-1001"]);
    let r = call(
        &env.api(Some(GIFT_TOKEN)),
        "post",
        "/v1/issuers/GIFT/lookup",
        json!({"card_number": GIFT_CARD}),
    )
    .await;
    assert_eq!(r.body["accounts"][0]["account"], "G-3001");

    // F12: a partner links a wallet; an issuer may not.
    let partner = env.api(Some(PARTNER_TOKEN));
    let link = json!({"card_number": PLAIN_CARD, "issuer": "EMONEY", "account": "E-1002", "priority": 1, "label": "shared"});
    let r = call(&emoney, "post", "/v1/links", link.clone()).await;
    assert_eq!(r.status, 403);
    let r = call(&partner, "post", "/v1/links", link).await;
    assert_eq!(r.status, 201, "{:?}", r.body);
    let r = call(
        &partner,
        "post",
        "/v1/links/query",
        json!({"card_number": PLAIN_CARD}),
    )
    .await;
    assert_eq!(r.body["links"][0]["account"], "E-1002");
    let r = call(
        &partner,
        "delete",
        "/v1/links",
        json!({"card_number": PLAIN_CARD, "issuer": "EMONEY", "account": "E-1002"}),
    )
    .await;
    assert_eq!(r.body["removed"], true);

    // Bad requests are JSON errors naming the problem.
    let r = call(
        &partner,
        "post",
        "/v1/links",
        json!({"card_number": "12ab", "issuer": "EMONEY", "account": "x"}),
    )
    .await;
    assert_eq!(r.status, 400);
    assert!(r.body["error"]["message"]
        .as_str()
        .unwrap()
        .contains("card_number"));
    // A card number where a string belongs is refused without being echoed (SPEC §10).
    let r = call(
        &partner,
        "post",
        "/v1/links",
        json!({"card_number": 9410000000000013u64, "issuer": "EMONEY", "account": "x"}),
    )
    .await;
    assert_eq!(r.status, 400);
    assert!(!r.body.to_string().contains("41000000"), "{:?}", r.body);
    let r = partner
        .call("post", "/v1/links", Some(&json!({"nope": 1})))
        .await
        .unwrap();
    assert_eq!(r.status, 400);
    let r = partner.call("get", "/v1/nowhere", None).await.unwrap();
    assert_eq!((r.status, r.error_code()), (404, Some("not_found")));
    // Transaction search is for operators.
    let r = partner.call("get", "/v1/transactions", None).await.unwrap();
    assert_eq!(r.status, 403);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn hosted_points_issuer_is_a_wallet_like_a_remote_one() {
    let env = env().await;
    let id = env.card_id(PREPAID).await;
    // Earn 200 points.
    let a = env
        .call(&env.request(b"0200", PREPAID, "000000", 20_000, Some("1234")))
        .await;
    assert_eq!(code(&a), "00");
    // Link the card's points account (hosted issuer CYBERPOINTS) to a plain card.
    let op = env.operator();
    let r = call(&op, "post", "/v1/links", json!({"card_number": PLAIN_CARD, "issuer": "CYBERPOINTS", "account": id, "priority": 1, "label": "points"})).await;
    assert_eq!(r.status, 201);
    let a = env
        .call(&env.request(b"0100", PLAIN_CARD, "310000", 0, None))
        .await;
    assert_eq!(code(&a), "00");
    assert_eq!(available(&a), 200);
    // A purchase of 500: 200 from the hosted points, 300 by credit at the acquirer.
    let purchase = with_tag(
        env.request(b"0200", PLAIN_CARD, "000000", 500, None),
        "WS",
        &id,
    );
    let a = env.call(&purchase).await;
    assert_eq!(code(&a), "00", "{a:?}");
    assert_eq!(env.card(&id).await["points"], 0);
    assert_eq!(env.demo.sim("ACQ1").unwrap().card_total(PLAIN_CARD), 300);
    // Its reversal restores the points through the same queue as remote legs.
    let rev = common::reversal_of(&purchase, u64::from(env.next_stan()), "1121120500");
    assert_eq!(code(&env.call(&rev).await), "00");
    env.drained().await;
    assert_eq!(env.card(&id).await["points"], 200);
    assert_eq!(env.demo.sim("ACQ1").unwrap().card_total(PLAIN_CARD), 0);

    // Disputes: the transaction is found by STAN, card masked.
    let stan = std::str::from_utf8(purchase.get(11).unwrap())
        .unwrap()
        .parse::<u32>()
        .unwrap();
    let r = op
        .call("get", &format!("/v1/transactions?stan={stan}"), None)
        .await
        .unwrap();
    let t = &r.body["transactions"][0];
    assert_eq!(t["card_number"], "941000******0021");
    assert_eq!(t["state"], "reversed");
    // The whole share asked of the points first (declined 51), then what they held, then credit.
    let legs: Vec<(String, u64)> = t["legs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| {
            (
                l["link"].as_str().unwrap().to_string(),
                l["amount"].as_u64().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        legs,
        [
            ("CYBERPOINTS".into(), 500),
            ("CYBERPOINTS".into(), 200),
            ("acq1".into(), 300)
        ]
    );
    let rrn = t["rrn"].as_str().unwrap();
    let r = op
        .call("get", &format!("/v1/transactions?rrn={rrn}"), None)
        .await
        .unwrap();
    assert_eq!(r.body["transactions"].as_array().unwrap().len(), 1);
    assert_eq!(
        r.body["truncated"], false,
        "a small store is searched whole"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn every_documented_route_is_served() {
    let env = env().await;
    let doc: Value = serde_json::from_str(
        &std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/docs/openapi.json"))
            .unwrap(),
    )
    .unwrap();
    let op = env.operator();
    let mut seen = 0;
    for (path, methods) in doc["paths"].as_object().unwrap() {
        for method in methods.as_object().unwrap().keys() {
            let concrete = path.replace("{issuer}", "EMONEY").replace("{id}", "nope");
            let r = op.call(method, &concrete, Some(&json!({}))).await.unwrap();
            let unrouted = r.error_code() == Some("method_not_allowed")
                || (r.status == 404 && r.body["error"]["message"] == "no such route");
            assert!(
                !unrouted,
                "{method} {path} is documented but not served: {:?}",
                r.body
            );
            seen += 1;
        }
    }
    assert_eq!(seen, cyberswitch::admin::ROUTES.len());
}

/// Issuing is one step (card, number, account, opening credit), and a number or a master id
/// asked for twice at once is given once: the second request waits and finds it taken.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_same_number_or_master_asked_for_at_once_is_issued_once() {
    const NUMBER: &str = "6271000000000025";
    let env = env().await;
    let issue = json!({"program": "ANON", "denomination": 50_000, "card_number": NUMBER});
    let master = json!({"id": "division-9"});
    let mut tasks = Vec::new();
    for _ in 0..6 {
        let (partner, issue) = (env.api(Some(PARTNER_TOKEN)), issue.clone());
        tasks.push(tokio::spawn(async move {
            call(&partner, "post", "/v1/cards", issue).await
        }));
        let (op, master) = (env.operator(), master.clone());
        tasks.push(tokio::spawn(async move {
            call(&op, "post", "/v1/masters", master).await
        }));
    }
    let mut created = Vec::new();
    let mut conflicts = 0;
    for t in tasks {
        let r = t.await.unwrap();
        match r.status {
            201 => created.push(r.body),
            409 => conflicts += 1,
            s => panic!("{s}: {:?}", r.body),
        }
    }
    assert_eq!(created.len(), 2, "one card and one master: {created:?}");
    assert_eq!(conflicts, 10);
    let card = created
        .iter()
        .find(|b| b["card_number"] == "627100******0025")
        .unwrap();
    let id = card["id"].as_str().unwrap();
    let view = env.card(id).await;
    assert_eq!(view["balance"], 50_000);
    // The opening credit is the account's only entry.
    let r = statement_today(&env.operator(), id).await;
    let entries = r.body["entries"].as_array().unwrap();
    assert_eq!(entries.len(), 1, "{entries:?}");
    assert_eq!(entries[0]["kind"], "credit");
    assert_eq!(entries[0]["amount"], 50_000);
    let op = env.operator();
    let r = op
        .call("get", "/v1/masters/division-9", None)
        .await
        .unwrap();
    assert_eq!(r.status, 200, "{:?}", r.body);
    assert_eq!(r.body["available"], 0);
}

/// A token past its request rate gets 429 with `Retry-After`; other tokens are not slowed.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_token_past_its_rate_is_answered_429_and_the_others_are_not() {
    let env = env().await;
    let started = std::time::Instant::now();
    let calls: Vec<_> = (0..12)
        .map(|_| {
            let slow = env.api(Some(SLOW_TOKEN));
            tokio::spawn(async move { slow.call("get", "/v1/health", None).await.unwrap() })
        })
        .collect();
    let mut limited = 0;
    for c in calls {
        let r = c.await.unwrap();
        match r.status {
            200 => {}
            429 => {
                limited += 1;
                assert_eq!(r.error_code(), Some("rate_limited"));
                assert!(r.retry_after.is_some_and(|s| s >= 1), "{r:?}");
                let message = r.body["error"]["message"].as_str().unwrap();
                assert!(message.contains("token slow may make 1 requests a second"));
            }
            s => panic!("{s}: {:?}", r.body),
        }
    }
    // One request a second, one at once: whatever this machine's speed, no more passed than
    // the seconds the calls took allow (and twelve calls take well under twelve seconds).
    let allowed = 1 + started.elapsed().as_secs() + 1;
    let passed = 12 - limited;
    assert!(
        passed as u64 <= allowed,
        "{passed} passed in under {allowed} s"
    );
    assert!(limited >= 1);
    for _ in 0..12 {
        let r = env
            .operator()
            .call("get", "/v1/health", None)
            .await
            .unwrap();
        assert_eq!(r.status, 200, "{:?}", r.body);
    }
}

/// A refund arriving right behind a completion (the terminal has its 0230, the completion is
/// still queued) reaches the hosted ledger after the completion: sent before it, the ledger
/// found only a hold and declined the refund (12; found by the crash harness).
#[cfg(feature = "fault-injection")]
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_refund_right_behind_a_completion_waits_for_it() {
    use cyberswitch::switch::testhooks::arm_pause;
    let env = env().await;
    let id = env.card_id(PREPAID).await;
    let auth = env.request(b"0100", PREPAID, "000000", 5_000, Some("1234"));
    assert_eq!(code(&env.call(&auth).await), "00");
    let auth_stan = common::original_data_of(&auth).stan;
    let held = arm_pause("completion-attempt", auth_stan);
    let mut completion = common::reversal_of(&auth, u64::from(env.next_stan()), "1121120100");
    completion.set_mti(Mti::new(b"0220").unwrap());
    completion.set_number(4, 4_000, 12);
    assert_eq!(code(&env.call(&completion).await), "00");
    for _ in 0..1_000 {
        if held.reached() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(held.reached(), "the completion was never about to be sent");
    let mut refund = common::reversal_of(&auth, u64::from(env.next_stan()), "1121120200");
    refund.set_mti(Mti::new(b"0200").unwrap());
    refund.set(3, b"200000").set_number(4, 1_500, 12);
    let (refunded, ()) = tokio::join!(env.call(&refund), async {
        // The refund is on its way while the completion is held; then the completion goes.
        tokio::time::sleep(Duration::from_millis(300)).await;
        held.release();
    });
    assert_eq!(code(&refunded), "00", "refunded once the completion landed");
    env.drained().await;
    let card = env.card(&id).await;
    assert_eq!(
        (card["balance"].clone(), card["available"].clone()),
        (json!(17_500), json!(17_500)),
        "20,000 less the 4,000 completed, plus the 1,500 refunded; nothing held"
    );
}

/// A completion (0220 naming an authorization by field 90) posts what it names of the hold
/// and releases the rest, through the store-and-forward queue, once however often it is
/// repeated; the points come with it; a reversal of the authorization afterwards gives back
/// what was posted.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_authorization_completed_for_less_posts_that_and_releases_the_rest() {
    let env = env().await;
    let id = env.card_id(PREPAID).await;
    let auth = env.request(b"0100", PREPAID, "000000", 5_000, Some("1234"));
    assert_eq!(code(&env.call(&auth).await), "00");
    let card = env.card(&id).await;
    assert_eq!(
        (card["balance"].clone(), card["available"].clone()),
        (json!(20_000), json!(15_000))
    );
    let completion = |of: &OwnedMessage, amount: u64| {
        let mut c = common::reversal_of(of, u64::from(env.next_stan()), "1121120100");
        c.set_mti(Mti::new(b"0220").unwrap());
        c.set_number(4, amount, 12);
        c
    };

    let a = env.call(&completion(&auth, 6_000)).await;
    assert_eq!(a.mti().as_bytes(), b"0230");
    assert_eq!(code(&a), "13", "more than was authorized");
    let mut unknown = auth.clone();
    unknown.set_number(11, 999_999, 6);
    assert_eq!(code(&env.call(&completion(&unknown, 1_000)).await), "25");
    let sale = env.request(b"0200", PREPAID, "000000", 1_000, Some("1234"));
    assert_eq!(code(&env.call(&sale).await), "00");
    assert_eq!(
        code(&env.call(&completion(&sale, 1_000)).await),
        "12",
        "a sale is complete"
    );

    let done = completion(&auth, 4_000);
    assert_eq!(code(&env.call(&done).await), "00");
    env.drained().await;
    let card = env.card(&id).await;
    assert_eq!(
        card["balance"], 15_000,
        "20,000 less the sale and the completion"
    );
    assert_eq!(card["available"], 15_000, "nothing held any more");
    assert_eq!(card["points"], 50, "10 for the sale, 40 for the completion");
    // Repeated (0221): acknowledged, nothing more taken.
    let mut again = done.clone();
    again.set_mti(Mti::new(b"0221").unwrap());
    assert_eq!(code(&env.call(&again).await), "00");
    env.drained().await;
    let card = env.card(&id).await;
    assert_eq!(
        (card["balance"].clone(), card["points"].clone()),
        (json!(15_000), json!(50))
    );
    let kinds = env.history_kinds(&id).await;
    assert_eq!(kinds, ["credit", "hold", "debit", "post", "release"]);

    // The authorization reversed after its completion: the 4,000 posted come back.
    let rev = common::reversal_of(&auth, u64::from(env.next_stan()), "1121120500");
    assert_eq!(code(&env.call(&rev).await), "00");
    env.drained().await;
    let card = env.card(&id).await;
    assert_eq!(
        (card["balance"].clone(), card["points"].clone()),
        (json!(19_000), json!(10))
    );
    assert_eq!(
        code(&env.call(&completion(&auth, 4_000)).await),
        "12",
        "a reversed authorization is not completed"
    );
}

/// Hosted leg ids are the legs' RRNs, unique for ever (issue 20). Two purchases that share
/// terminal, STAN and transmission time — what ids were made of, which repeat yearly and
/// after restarts — are two legs and both take their money; a repeat of a leg is answered
/// as the first time and takes nothing more; another request under an RRN already used is
/// refused 94, never answered 00 without moving money.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn hosted_leg_ids_never_repeat_and_a_colliding_one_is_refused() {
    let env = env().await;
    let id = env.card_id(PREPAID).await;
    let switch = &env.demo.running.switch;
    let link = switch.links.get("hosted").unwrap();
    let block = encrypt_block(
        &switch.hosted.zone_key,
        &ClearPin::new("1234").unwrap(),
        PREPAID,
    )
    .unwrap();
    // What the switch sends the hosted card link for a purchase leg.
    let leg = |rrn: &str, amount: u64| {
        let mut m = env.request(b"0200", PREPAID, "000000", amount, None);
        m.set(11, b"000777").set(37, rrn.as_bytes()).set(52, &block);
        m
    };
    let a = link.request(leg("000000000901", 1_000)).await.unwrap();
    assert_eq!(code(&a), "00", "{a:?}");
    let b = link.request(leg("000000000902", 2_000)).await.unwrap();
    assert_eq!(code(&b), "00", "{b:?}");
    assert_eq!(env.card(&id).await["balance"], 17_000, "both legs took");
    let again = link.request(leg("000000000901", 1_000)).await.unwrap();
    assert_eq!(code(&again), "00", "a repeat answers as the first");
    let other = link.request(leg("000000000901", 3_000)).await.unwrap();
    assert_eq!(code(&other), "94", "{other:?}");
    assert_eq!(env.card(&id).await["balance"], 17_000, "nothing more moved");
}

/// Reversing a hosted purchase after the points it earned were spent (issue 20): the money
/// always goes back, and the points are taken back too, leaving a recorded debt on the
/// points account (negative in its balance and history) that refuses spending and that
/// later earnings pay down. No points are created.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn reversing_a_purchase_whose_points_were_spent_takes_them_back_as_a_debt() {
    let env = env().await;
    let id = env.card_id(PREPAID).await;
    let purchase = env.request(b"0200", PREPAID, "000000", 20_000, Some("1234"));
    assert_eq!(code(&env.call(&purchase).await), "00");
    assert_eq!(env.card(&id).await["points"], 200);
    // The points are spent, through a plain card the points account is linked to.
    let op = env.operator();
    let r = call(&op, "post", "/v1/links", json!({"card_number": PLAIN_CARD, "issuer": "CYBERPOINTS", "account": id, "priority": 1, "label": "points"})).await;
    assert_eq!(r.status, 201);
    let spend = with_tag(
        env.request(b"0200", PLAIN_CARD, "000000", 200, None),
        "WS",
        &id,
    );
    assert_eq!(code(&env.call(&spend).await), "00");
    assert_eq!(env.card(&id).await["points"], 0);

    let rev = common::reversal_of(&purchase, u64::from(env.next_stan()), "1121120500");
    assert_eq!(code(&env.call(&rev).await), "00");
    env.drained().await;
    let card = env.card(&id).await;
    assert_eq!(card["balance"], 20_000, "the money went back");
    assert_eq!(card["points"], -200, "the spent points are owed");
    let ledger = &switch_ledger(&env);
    let points_account = format!("CYBERPOINTS:{id}");
    assert_eq!(
        ledger.derive(&points_account).unwrap(),
        ledger.balance(&points_account).unwrap(),
        "the debt is what the entries say"
    );
    // While in debt the points cannot be spent.
    assert!(ledger
        .debit(&points_account, 1, "test/spend-in-debt")
        .await
        .is_err());
    // Later earnings pay it down.
    let purchase = env.request(b"0200", PREPAID, "000000", 10_000, Some("1234"));
    assert_eq!(code(&env.call(&purchase).await), "00");
    assert_eq!(env.card(&id).await["points"], -100);
}

fn switch_ledger(env: &Env) -> std::sync::Arc<cyberswitch::ledger::Ledger> {
    env.demo.running.switch.hosted.ledger.clone()
}

/// SPEC §10 link consent and scope (issue 21): a partner's link is pending, never paid with,
/// until the account's issuer confirms it; another partner neither sees, removes nor takes
/// it over; links per card are bounded; every change is audited with who did it.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_partner_link_pays_only_once_its_issuer_confirms_and_stays_the_partners() {
    let env = env().await;
    let (mall, other) = (env.api(Some(PARTNER_TOKEN)), env.api(Some(OTHER_TOKEN)));
    let key = json!({"card_number": PLAIN_CARD, "issuer": "EMONEY", "account": "E-1002"});
    let mut link = key.clone();
    link["priority"] = json!(1);
    let r = call(&mall, "post", "/v1/links", link.clone()).await;
    assert_eq!(r.status, 201, "{:?}", r.body);
    assert_eq!(r.body["status"], "pending");

    // Pending: the card pays by credit alone, the e-money account is never asked.
    let spent_before = env
        .call(&env.request(b"0200", PLAIN_CARD, "000000", 1_000, None))
        .await;
    assert_eq!(code(&spent_before), "00", "{spent_before:?}");
    let legs = String::from_utf8_lossy(spent_before.get(48).unwrap_or_default()).into_owned();
    assert!(!legs.contains("EMONEY"), "a pending link paid: {legs}");

    // Another partner: sees nothing, removes nothing, cannot take the link over.
    let r = call(
        &other,
        "post",
        "/v1/links/query",
        json!({"card_number": PLAIN_CARD}),
    )
    .await;
    assert_eq!(r.body["links"], json!([]), "{:?}", r.body);
    let r = call(&other, "delete", "/v1/links", key.clone()).await;
    assert_eq!(r.body["removed"], false);
    let r = call(&other, "post", "/v1/links", link.clone()).await;
    assert_eq!((r.status, r.error_code()), (409, Some("linked_by_another")));
    // A partner cannot confirm, nor can another issuer.
    let r = call(&mall, "post", "/v1/links/confirm", key.clone()).await;
    assert_eq!(r.status, 403);
    let r = call(
        &env.api(Some(GIFT_TOKEN)),
        "post",
        "/v1/links/confirm",
        key.clone(),
    )
    .await;
    assert_eq!(r.status, 403);

    // The account's issuer confirms: now it pays.
    let r = call(
        &env.api(Some(EMONEY_TOKEN)),
        "post",
        "/v1/links/confirm",
        key.clone(),
    )
    .await;
    assert_eq!(
        (r.status, &r.body["status"]),
        (200, &json!("active")),
        "{:?}",
        r.body
    );
    let paid = env
        .call(&env.request(b"0200", PLAIN_CARD, "000000", 1_000, None))
        .await;
    assert_eq!(code(&paid), "00", "{paid:?}");
    let legs = String::from_utf8_lossy(paid.get(48).unwrap_or_default()).into_owned();
    assert!(
        legs.contains("EMONEY"),
        "the confirmed link did not pay: {legs}"
    );
    let r = call(
        &mall,
        "post",
        "/v1/links/query",
        json!({"card_number": PLAIN_CARD}),
    )
    .await;
    assert_eq!(r.body["links"][0]["status"], "active");
    assert_eq!(r.body["links"][0]["created_by"], "partner:MALL");

    // Every change audited, with who did it; the history is the operator's.
    let r = call(
        &mall,
        "post",
        "/v1/links/history",
        json!({"card_number": PLAIN_CARD}),
    )
    .await;
    assert_eq!(r.status, 403);
    let r = call(
        &env.operator(),
        "post",
        "/v1/links/history",
        json!({"card_number": PLAIN_CARD}),
    )
    .await;
    let changes: Vec<(String, String)> = r.body["changes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| {
            (
                c["who"].as_str().unwrap().into(),
                c["action"].as_str().unwrap().into(),
            )
        })
        .collect();
    assert_eq!(
        changes,
        [
            ("partner:MALL".to_string(), "linked".to_string()),
            ("issuer:EMONEY".to_string(), "confirmed".to_string())
        ]
    );

    // The issuer may revoke a link to its account; the partner's own removal works too.
    let r = call(&mall, "delete", "/v1/links", key.clone()).await;
    assert_eq!(r.body["removed"], true);

    // Links per card are bounded (limits.max_links_per_card, 16 by default).
    let operator = env.operator();
    let mut last = None;
    for i in 0..17 {
        let l =
            json!({"card_number": PLAIN_CARD, "issuer": "GIFT", "account": format!("G-X{i:02}")});
        last = Some(call(&operator, "post", "/v1/links", l).await);
    }
    let last = last.unwrap();
    assert_eq!(
        (last.status, last.error_code()),
        (409, Some("too_many_links")),
        "{:?}",
        last.body
    );
}

/// A PIN block that does not read (random bytes, or sealed under another key) is a format
/// error, never a try at the PIN: anyone who knows a hosted card's number could otherwise
/// lock it (issue 21). The card still takes its right PIN afterwards.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_garbage_pin_block_is_30_and_never_counts_as_a_try() {
    let env = env().await;
    let id = env.card_id(PREPAID).await;
    for garbage in [[0u8; 8], [0xA5; 8], *b"\x12\x34\x56\x78\x9a\xbc\xde\xf0"] {
        let mut m = env.request(b"0200", PREPAID, "000000", 1_000, None);
        m.set(52, &garbage);
        let a = env.call(&m).await;
        assert_eq!(code(&a), "30", "{a:?}");
    }
    assert_eq!(env.card(&id).await["pin_failures"], 0);
    let a = env
        .call(&env.request(b"0200", PREPAID, "000000", 1_000, Some("1234")))
        .await;
    assert_eq!(code(&a), "00");
}

/// A card's history by period (`?from=YYYYMM&to=YYYYMM`, whole local months, both included):
/// this month's entries are in this month and in no other; a bad month is 400.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn card_history_by_period_holds_the_months_asked_for() {
    let env = env().await;
    let id = env.card_id(PREPAID).await;
    let purchase = env.request(b"0200", PREPAID, "000000", 5_000, Some("1234"));
    assert_eq!(code(&env.call(&purchase).await), "00");
    let all = env.history_kinds(&id).await;
    assert_eq!(all, ["credit", "debit"]);
    let now = chrono::Local::now().date_naive();
    let month = |d: chrono::NaiveDate| d.format("%Y%m").to_string();
    let this = month(now);
    let next = month(now + chrono::Months::new(1));
    let last = month(now - chrono::Months::new(1));
    let kinds = |body: &Value| -> Vec<String> {
        body["entries"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| e["kind"].as_str().unwrap().to_string())
            .collect()
    };
    for (query, expected) in [
        (format!("from={this}&to={this}"), all.len()),
        (format!("from={last}&to={next}"), all.len()),
        (format!("from={this}"), all.len()),
        (format!("to={this}"), all.len()),
        (format!("from={next}"), 0),
        (format!("to={last}"), 0),
        (format!("from={last}&to={last}"), 0),
    ] {
        let r = env
            .operator()
            .call("get", &format!("/v1/cards/{id}/history?{query}"), None)
            .await
            .unwrap();
        assert_eq!(r.status, 200, "{query}: {:?}", r.body);
        assert_eq!(kinds(&r.body).len(), expected, "{query}");
    }
    for bad in [
        "from=2026-01".to_string(),
        "from=202613".into(),
        format!("from={next}&to={last}"),
    ] {
        let r = env
            .operator()
            .call("get", &format!("/v1/cards/{id}/history?{bad}"), None)
            .await
            .unwrap();
        assert_eq!(r.status, 400, "{bad}: {:?}", r.body);
    }
}

/// Card keys rotate online (`POST /v1/keys/rotate`, operators only): with one key version
/// nothing moves and every link still pays (the offline rotation across versions is
/// tests/tls.rs `keys_rotate_keeps_every_link_and_new_records_name_the_new_version`).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn card_keys_rotate_online_for_operators_only() {
    let env = env().await;
    let r = env
        .api(Some(PARTNER_TOKEN))
        .call("post", "/v1/keys/rotate", None)
        .await
        .unwrap();
    assert_eq!(r.status, 403);
    let r = env
        .operator()
        .call("post", "/v1/keys/rotate", None)
        .await
        .unwrap();
    assert_eq!(r.status, 200, "{:?}", r.body);
    assert_eq!(r.body["key_version"], 1);
    assert_eq!(r.body["card_links_moved"], 0);
    let a = env
        .call(&env.request(b"0200", GIFT_CARD, "000000", 1_000, None))
        .await;
    assert_eq!(code(&a), "00", "{a:?}");
}

/// Refunds of a card's purchases arriving while the card is refunded and closed (F14): each
/// lands before the close takes the balance (and goes out with it) or is refused; none is
/// left on the closed card, where nobody could refund it.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn refunds_racing_a_cards_close_leave_nothing_on_it() {
    const DELAY: u64 = 1;
    let env = env().await;
    let id = env.card_id(PREPAID).await;
    let mut purchases = Vec::new();
    for _ in 0..8 {
        let p = env.request(b"0200", PREPAID, "000000", 1_000, Some("1234"));
        assert_eq!(code(&env.call(&p).await), "00");
        purchases.push(p);
    }
    let refunds: Vec<OwnedMessage> = purchases
        .iter()
        .map(|p| {
            let mut r = common::reversal_of(p, u64::from(env.next_stan()), "1121120200");
            r.set_mti(Mti::new(b"0200").unwrap());
            r.set(3, b"200000").set_number(4, 1_000, 12);
            r
        })
        .collect();
    let op = env.operator();
    let close = async {
        tokio::time::sleep(Duration::from_millis(DELAY)).await;
        op.call("post", &format!("/v1/cards/{id}/refund"), None)
            .await
            .unwrap()
    };
    let sent = futures::future::join_all(refunds.iter().map(|r| env.call(r)));
    let (closed, answers) = tokio::join!(close, sent);
    assert_eq!(closed.status, 200, "{:?}", closed.body);
    env.drained().await;
    let refunded = answers.iter().filter(|a| code(a) == "00").count() as i64;
    let ledger = switch_ledger(&env);
    let account = format!("card:{id}");
    let b = ledger.settled_balance(&account).await.unwrap();
    assert_eq!(ledger.derive(&account).unwrap(), b);
    assert_eq!(
        (b.posted, b.pending),
        (0, 0),
        "nothing left on the closed card"
    );
    assert_eq!(
        closed.body["refunded"],
        json!(20_000 - 8_000 + 1_000 * refunded),
        "what the close gave back is what the refunds before it returned"
    );
    assert_eq!(env.card(&id).await["status"], "closed");
}
