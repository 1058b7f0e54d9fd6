//! The switch end to end: the real switch, real issuer and acquirer simulators, real TCP on
//! ephemeral ports, real RocksDB in a temp dir. Amounts and balances are checked at the
//! simulators afterwards.

mod common;

use common::{code, tags, with_tags};

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use cyberswitch::demo::{self, Demo, DemoPorts};
use cyberswitch::iso8583::{AdditionalAmount, Mti, OwnedMessage, Spec};
use cyberswitch::net::client::Client;
use cyberswitch::sim::{Behaviour, SimConfig};
use tokio_util::sync::CancellationToken;

const GIFT_CARD: &str = "9410000000000013"; // GIFT G-3001 50,000; EMONEY E-1001 30,000; MILEAGE M-2001 10,000 pts
const PLAIN_CARD: &str = "9410000000000021"; // no wallets
const SMALL_CARD: &str = "9410000000000039"; // EMONEY E-1002 5,000
const DECLINED_CARD: &str = "9410000000000047"; // no wallets, acquirer declines 05
const SHORT_CARD: &str = "9410000000000054"; // EMONEY E-1003 1,000, acquirer declines credit 51
const WAIT: Duration = Duration::from_secs(10);

struct Env {
    demo: Demo,
    stop: CancellationToken,
    _dir: tempfile::TempDir,
    spec: Arc<Spec>,
}

impl Drop for Env {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

fn ephemeral() -> DemoPorts {
    DemoPorts::ephemeral()
}

async fn env_with(ports: DemoPorts, adjust: impl FnOnce(&mut Vec<SimConfig>)) -> Env {
    env_configured(ports, adjust, "").await
}

async fn env_configured(
    ports: DemoPorts,
    adjust: impl FnOnce(&mut Vec<SimConfig>),
    extra_toml: &str,
) -> Env {
    let dir = tempfile::tempdir().unwrap();
    let stop = CancellationToken::new();
    let demo = demo::start_with(dir.path(), ports, stop.clone(), adjust, extra_toml)
        .await
        .unwrap();
    Env {
        demo,
        stop,
        _dir: dir,
        spec: common::terminal_spec(),
    }
}

async fn env() -> Env {
    env_with(ephemeral(), |_| {}).await
}

impl Env {
    async fn terminal(&self) -> Client {
        common::terminal(&self.demo, &self.spec).await
    }
    fn balance(&self, sim: &str, account: &str) -> i64 {
        self.demo.sim(sim).unwrap().balance(account).unwrap()
    }
    fn credit_total(&self, card: &str) -> i64 {
        self.demo.sim("ACQ1").unwrap().card_total(card)
    }
    /// Wait until the reversal queue is empty.
    async fn drained(&self) {
        common::drained(&self.demo).await
    }
}

fn request(mti: &[u8; 4], card: &str, pc: &str, amount: u64, stan: u32) -> OwnedMessage {
    let mut m = OwnedMessage::new(Mti::new(mti).unwrap());
    m.set(2, card.as_bytes())
        .set(3, pc.as_bytes())
        .set_number(4, amount, 12)
        .set(7, b"1121120000")
        .set_number(11, u64::from(stan), 6)
        .set(12, b"120000")
        .set(13, b"1121")
        .set(41, b"TERM0001")
        .set(42, b"MERCHANT0000001")
        .set(49, b"410");
    m
}

fn reversal_of(original: &OwnedMessage, stan: u32) -> OwnedMessage {
    common::reversal_of(original, u64::from(stan), "1121120500")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn network_management_signs_on_and_echoes() {
    let env = env().await;
    let mut t = env.terminal().await;
    for (stan, nmc) in [(1, "001"), (2, "301"), (3, "002")] {
        let mut m = OwnedMessage::new(Mti::new(b"0800").unwrap());
        m.set(7, b"1121120000")
            .set_number(11, stan, 6)
            .set(41, b"TERM0001")
            .set(70, nmc.as_bytes());
        let a = t.call(&m, WAIT).await.unwrap();
        assert_eq!(a.mti().as_str(), "0810");
        assert_eq!(code(&a), "00");
        assert_eq!(a.get(70), Some(nmc.as_bytes()));
        assert_eq!(a.get(11), m.get(11));
    }
    // Every upstream link signed on by itself.
    assert!(env.demo.running.switch.links.values().all(|l| l.is_up()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn inquiry_lists_every_wallet_with_points_converted() {
    let env = env().await;
    let mut t = env.terminal().await;
    let a = t
        .call(&request(b"0100", GIFT_CARD, "310000", 0, 10), WAIT)
        .await
        .unwrap();
    assert_eq!(a.mti().as_str(), "0110");
    assert_eq!(code(&a), "00");
    let wl = tags(&a, "WL");
    assert_eq!(
        wl,
        vec![
            "G-3001|GIFT|giftcert|**3001|50000|KRW|1|50000|ok",
            "E-1001|EMONEY|emoney|**1001|30000|KRW|1|30000|ok",
            "M-2001|MILEAGE|points|**2001|10000|P|2|5000|ok",
        ]
    );
    let blocks = AdditionalAmount::parse_all(a.get(54).unwrap()).unwrap();
    assert_eq!(
        blocks.iter().map(|b| b.amount).collect::<Vec<_>>(),
        vec![50_000, 30_000, 5_000]
    );
    assert!(blocks
        .iter()
        .all(|b| &b.amount_type == b"02" && b.currency == 410));

    // A card with no wallet: 00 and an empty list.
    let a = t
        .call(&request(b"0100", PLAIN_CARD, "310000", 0, 11), WAIT)
        .await
        .unwrap();
    assert_eq!(code(&a), "00");
    assert!(tags(&a, "WL").is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn chosen_wallet_purchase_debits_only_that_wallet() {
    let env = env().await;
    let mut t = env.terminal().await;
    let req = with_tags(
        request(b"0200", GIFT_CARD, "000000", 10_000, 20),
        &[("WS", "E-1001")],
    );
    let a = t.call(&req, WAIT).await.unwrap();
    assert_eq!(a.mti().as_str(), "0210");
    assert_eq!(code(&a), "00");
    assert_eq!(tags(&a, "LG").len(), 1);
    assert!(tags(&a, "LG")[0].starts_with("emoney|EMONEY|10000|10000|"));
    assert!(a.get(38).is_some());
    assert_eq!(env.balance("EMONEY", "E-1001"), 20_000);
    assert_eq!(env.balance("GIFT", "G-3001"), 50_000);
    assert_eq!(env.balance("MILEAGE", "M-2001"), 10_000);

    // Points: 3,001 KRW from mileage costs 6,002 points.
    let req = with_tags(
        request(b"0200", GIFT_CARD, "000000", 3_001, 21),
        &[("WS", "M-2001")],
    );
    let a = t.call(&req, WAIT).await.unwrap();
    assert_eq!(code(&a), "00");
    assert_eq!(env.balance("MILEAGE", "M-2001"), 10_000 - 6_002);
    assert!(tags(&a, "LG")[0].starts_with("points|MILEAGE|3001|6002|"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn automatic_tender_drains_wallets_in_order_then_credit() {
    let env = env().await;
    let mut t = env.terminal().await;
    // 100,000 = gift 50,000 + e-money 30,000 + mileage 5,000 (10,000 points) + credit 15,000.
    let a = t
        .call(&request(b"0200", GIFT_CARD, "000000", 100_000, 30), WAIT)
        .await
        .unwrap();
    assert_eq!(code(&a), "00");
    let legs = tags(&a, "LG");
    assert_eq!(legs.len(), 4, "{legs:?}");
    assert!(legs[0].starts_with("giftcert|GIFT|50000|50000|"));
    assert!(legs[1].starts_with("emoney|EMONEY|30000|30000|"));
    assert!(legs[2].starts_with("points|MILEAGE|5000|10000|"));
    assert!(legs[3].starts_with("credit|acq1|15000|15000|"));
    assert_eq!(env.balance("GIFT", "G-3001"), 0);
    assert_eq!(env.balance("EMONEY", "E-1001"), 0);
    assert_eq!(env.balance("MILEAGE", "M-2001"), 0);
    assert_eq!(env.credit_total(GIFT_CARD), 15_000);
    // Legs sum to the amount.
    let sum: u64 = legs
        .iter()
        .map(|l| l.split('|').nth(2).unwrap().parse::<u64>().unwrap())
        .sum();
    assert_eq!(sum, 100_000);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn credit_decline_compensates_the_wallets_exactly() {
    let env = env().await;
    let mut t = env.terminal().await;
    // E-1003 pays 1,000, the acquirer declines the 4,000 shortfall with 51.
    let a = t
        .call(&request(b"0200", SHORT_CARD, "000000", 5_000, 40), WAIT)
        .await
        .unwrap();
    assert_eq!(code(&a), "51");
    env.drained().await;
    assert_eq!(env.balance("EMONEY", "E-1003"), 1_000);
    assert_eq!(env.credit_total(SHORT_CARD), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn partial_approval_keeps_the_wallet_legs() {
    let env = env().await;
    let mut t = env.terminal().await;
    let req = with_tags(
        request(b"0200", SHORT_CARD, "000000", 5_000, 50),
        &[("PA", "1")],
    );
    let a = t.call(&req, WAIT).await.unwrap();
    assert_eq!(code(&a), "10");
    assert_eq!(a.get(4), Some(&b"000000001000"[..]));
    let blocks = AdditionalAmount::parse_all(a.get(54).unwrap()).unwrap();
    assert!(blocks
        .iter()
        .any(|b| &b.amount_type == b"57" && b.amount == 5_000));
    env.drained().await;
    assert_eq!(env.balance("EMONEY", "E-1003"), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn plain_credit_is_relayed_to_the_acquirer() {
    let env = env().await;
    let mut t = env.terminal().await;
    let a = t
        .call(&request(b"0200", PLAIN_CARD, "000000", 20_000, 60), WAIT)
        .await
        .unwrap();
    assert_eq!(code(&a), "00");
    assert_eq!(
        a.get(11),
        Some(&b"000060"[..]),
        "same STAN towards the terminal"
    );
    assert_eq!(env.credit_total(PLAIN_CARD), 20_000);
    let a = t
        .call(&request(b"0200", DECLINED_CARD, "000000", 20_000, 61), WAIT)
        .await
        .unwrap();
    assert_eq!(code(&a), "05");
    let a = t
        .call(&request(b"0200", PLAIN_CARD, "000000", 6_000_000, 62), WAIT)
        .await
        .unwrap();
    assert_eq!(code(&a), "51");
    assert_eq!(env.credit_total(PLAIN_CARD), 20_000);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn reversal_restores_every_leg_idempotently() {
    let env = env().await;
    let mut t = env.terminal().await;
    // gift 50,000 + e-money 30,000 + mileage 5,000 + credit 5,000.
    let original = request(b"0200", GIFT_CARD, "000000", 90_000, 70);
    assert_eq!(code(&t.call(&original, WAIT).await.unwrap()), "00");
    assert_eq!(env.credit_total(GIFT_CARD), 5_000);
    let a = t.call(&reversal_of(&original, 71), WAIT).await.unwrap();
    assert_eq!(a.mti().as_str(), "0410");
    assert_eq!(code(&a), "00");
    env.drained().await;
    assert_eq!(env.balance("GIFT", "G-3001"), 50_000);
    assert_eq!(env.balance("EMONEY", "E-1001"), 30_000);
    assert_eq!(env.balance("MILEAGE", "M-2001"), 10_000);
    assert_eq!(env.credit_total(GIFT_CARD), 0);
    // Again (a new reversal message for the same original): answered, nothing moves twice.
    assert_eq!(
        code(&t.call(&reversal_of(&original, 72), WAIT).await.unwrap()),
        "00"
    );
    env.drained().await;
    assert_eq!(env.balance("GIFT", "G-3001"), 50_000);
    // Unknown original: 25.
    let unknown = request(b"0200", GIFT_CARD, "000000", 1, 999_999);
    assert_eq!(
        code(&t.call(&reversal_of(&unknown, 73), WAIT).await.unwrap()),
        "25"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn duplicates_get_the_original_answer_and_no_second_effect() {
    let env = env().await;
    let mut t = env.terminal().await;
    let req = with_tags(
        request(b"0200", GIFT_CARD, "000000", 1_000, 80),
        &[("WS", "E-1001")],
    );
    let first = t.call(&req, WAIT).await.unwrap();
    let again = t.call(&req, WAIT).await.unwrap();
    assert_eq!(first, again);
    // A repeat (0201) of the same request too.
    let mut repeat = req.clone();
    repeat.set_mti(Mti::new(b"0201").unwrap());
    assert_eq!(t.call(&repeat, WAIT).await.unwrap(), first);
    // Sent twice at once: the second waits for the first's answer.
    let req2 = with_tags(
        request(b"0200", GIFT_CARD, "000000", 1_000, 81),
        &[("WS", "E-1001")],
    );
    t.send(&req2).await.unwrap();
    t.send(&req2).await.unwrap();
    let (x, y) = (t.recv(WAIT).await.unwrap(), t.recv(WAIT).await.unwrap());
    assert_eq!(x, y);
    assert_eq!(env.balance("EMONEY", "E-1001"), 28_000);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_silent_issuer_is_unavailable_and_moves_no_money() {
    let env = env_with(ephemeral(), |sims| {
        sims[0].behaviours.push(Behaviour {
            target: "E-1002".into(),
            silent: true,
            inquiries: true,
            ..Behaviour::default()
        });
    })
    .await;
    let mut t = env.terminal().await;
    let a = t
        .call(&request(b"0100", SMALL_CARD, "310000", 0, 90), WAIT)
        .await
        .unwrap();
    assert_eq!(code(&a), "00");
    assert_eq!(
        tags(&a, "WL"),
        vec!["E-1002|EMONEY|emoney|**1002||KRW|1||unavailable"]
    );
    assert!(
        a.get(54).is_none(),
        "an unavailable wallet is not reported as zero"
    );
    // A purchase: the debit gets no answer, so it is reversed (the silent issuer applies the
    // reversal without acknowledging it) and the acquirer pays all of it.
    let a = t
        .call(&request(b"0200", SMALL_CARD, "000000", 3_000, 91), WAIT)
        .await
        .unwrap();
    assert_eq!(code(&a), "00");
    assert_eq!(tags(&a, "LG").len(), 1);
    for _ in 0..100 {
        if env.balance("EMONEY", "E-1002") == 5_000 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(env.balance("EMONEY", "E-1002"), 5_000);
    assert_eq!(env.credit_total(SMALL_CARD), 3_000);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_late_approval_is_reversed() {
    // E-1002 answers debits after 2.5 s; the link gives up after 1.5 s.
    let env = env_with(ephemeral(), |sims| {
        sims[0].behaviours.push(Behaviour {
            target: "E-1002".into(),
            delay_ms: 2_500,
            ..Behaviour::default()
        });
    })
    .await;
    let mut t = env.terminal().await;
    let req = with_tags(
        request(b"0200", SMALL_CARD, "000000", 1_000, 95),
        &[("WS", "E-1002")],
    );
    let a = t.call(&req, WAIT).await.unwrap();
    // The debit timed out: the acquirer paid instead.
    assert_eq!(code(&a), "00");
    assert!(tags(&a, "LG")[0].starts_with("credit|"));
    // The late approval arrives and is reversed.
    tokio::time::sleep(Duration::from_millis(1_500)).await;
    env.drained().await;
    for _ in 0..100 {
        if env.balance("EMONEY", "E-1002") == 5_000 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(env.balance("EMONEY", "E-1002"), 5_000);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn bad_input_is_answered_or_dropped_and_others_keep_being_served() {
    let env = env().await;
    let mut bad = env.terminal().await;
    let mut good = env.terminal().await;

    // Garbage inside an intact frame: dropped, the connection stays open.
    bad.send_body(b"\x00\x01garbage that is no ISO 8583")
        .await
        .unwrap();
    // An invalid field (letters in the amount): 0210 with 39 = 30, STAN echoed.
    let mut body = env
        .spec
        .encode_to_vec(&request(b"0200", GIFT_CARD, "000000", 1, 100))
        .unwrap();
    let pos = body.windows(12).position(|w| w == b"000000000001").unwrap(); // field 4
    body[pos + 5] = b'X';
    bad.send_body(&body).await.unwrap();
    let a = bad.recv(WAIT).await.unwrap();
    assert_eq!(a.mti().as_str(), "0210");
    assert_eq!(code(&a), "30");
    assert_eq!(a.get(11), Some(&b"000100"[..]));
    assert_eq!(a.get(41), Some(&b"TERM0001"[..]));
    // A missing mandatory field (no terminal id): 30.
    let mut m = request(b"0200", GIFT_CARD, "000000", 1, 101);
    m.remove(41);
    assert_eq!(code(&bad.call(&m, WAIT).await.unwrap()), "30");
    // Keep-alive is echoed.
    bad.send_raw(&[0, 0]).await.unwrap();
    assert!(bad.recv_frame(WAIT).await.unwrap().is_keep_alive());
    // The same connection still serves.
    let a = bad
        .call(&request(b"0100", GIFT_CARD, "310000", 0, 102), WAIT)
        .await
        .unwrap();
    assert_eq!(code(&a), "00");

    // An oversized frame closes that connection only.
    bad.send_raw(&[0xFF, 0xFF]).await.unwrap();
    assert!(bad.recv_frame(WAIT).await.is_err());
    let a = good
        .call(&request(b"0100", GIFT_CARD, "310000", 0, 103), WAIT)
        .await
        .unwrap();
    assert_eq!(code(&a), "00");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_hundred_connections_with_pipelined_requests_all_get_their_answers() {
    let env = env().await;
    let mut tasks = Vec::new();
    for c in 0..200u32 {
        let mut t = env.terminal().await;
        tasks.push(tokio::spawn(async move {
            let n = 5u32;
            for i in 0..n {
                let stan = c * 10 + i + 1;
                let card = if i % 2 == 0 { GIFT_CARD } else { PLAIN_CARD };
                let mut m = request(b"0100", card, "310000", 0, stan);
                m.set(41, format!("T{c:07}").as_bytes());
                t.send(&m).await.unwrap();
            }
            let mut seen = Vec::new();
            for _ in 0..n {
                let a = t.recv(WAIT).await.unwrap();
                assert_eq!(a.mti().as_str(), "0110");
                assert_eq!(code(&a), "00");
                assert_eq!(a.get(41), Some(format!("T{c:07}").as_bytes()));
                let stan: u32 = std::str::from_utf8(a.get(11).unwrap())
                    .unwrap()
                    .parse()
                    .unwrap();
                // Gift card inquiries list three wallets, plain card ones none.
                let expected = if ((stan - 1) % 10).is_multiple_of(2) {
                    3
                } else {
                    0
                };
                assert_eq!(tags(&a, "WL").len(), expected);
                seen.push(stan);
            }
            seen.sort();
            assert_eq!(seen, (0..n).map(|i| c * 10 + i + 1).collect::<Vec<_>>());
        }));
    }
    for task in tasks {
        task.await.unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn metrics_move_during_traffic() {
    let mut ports = ephemeral();
    ports.metrics = Some(SocketAddr::from(([127, 0, 0, 1], 0)));
    let env = env_with(ports, |_| {}).await;
    let mut t = env.terminal().await;
    for stan in 1..=3 {
        t.call(&request(b"0200", GIFT_CARD, "000000", 100, stan), WAIT)
            .await
            .unwrap();
    }
    let addr = env.demo.metrics.unwrap();
    let body = http_get(addr, "/metrics").await;
    for name in [
        "cyberswitch_messages_total",
        "cyberswitch_transactions_total",
        "cyberswitch_request_duration_seconds",
        "cyberswitch_upstream_latency_seconds",
        "cyberswitch_link_up",
        "cyberswitch_link_signed_on",
        "cyberswitch_link_in_flight",
        "cyberswitch_connections",
        "cyberswitch_journal_commit_seconds",
        "cyberswitch_runtime_lag_seconds",
        "cyberswitch_ledger_open_holds",
        "cyberswitch_store_bytes{cf=\"journal\"}",
    ] {
        assert!(body.contains(name), "{name} missing from /metrics");
    }
    assert!(body.contains("code=\"00\""));
}

async fn http_get(addr: SocketAddr, path: &str) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    s.write_all(format!("GET {path} HTTP/1.0\r\nHost: x\r\n\r\n").as_bytes())
        .await
        .unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).await.unwrap();
    out
}

/// Connection caps that do not fit under the file descriptor limit are refused at start with
/// the figures, not found out when RocksDB or a link cannot open a file under load.
#[tokio::test]
async fn connection_caps_beyond_the_file_descriptor_limit_are_refused_at_start() {
    use cyberswitch::config::Config;
    let dir = tempfile::tempdir().unwrap();
    // Four listeners of a million each: past any kernel's per-process maximum (nr_open is
    // 1,048,576 by default).
    let mut text = format!(
        "data_dir = \"{}\"\ncard_key = \"{}\"\n",
        dir.path().join("data").display(),
        "00".repeat(32)
    );
    for i in 0..4 {
        text.push_str(&format!(
            "[[listener]]\nname = \"t{i}\"\naddr = \"127.0.0.1:0\"\nmax_connections = 1000000\n"
        ));
    }
    let config = Config::from_toml(&text, &dir.path().join("c.toml")).unwrap();
    let needed = cyberswitch::fds::needed(&config);
    assert!(needed > 4_000_000);
    let e = match cyberswitch::daemon::start(config, CancellationToken::new()).await {
        Ok(_) => panic!("started with {needed} descriptors needed"),
        Err(e) => e,
    };
    assert!(e.contains("file descriptors"), "{e}");
    assert!(e.contains(&needed.to_string()), "{e}");
}

#[test]
fn a_bad_configuration_names_the_file_the_key_and_the_reason() {
    use cyberswitch::config::Config;
    let base = r#"
data_dir = "x"
card_key = "000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f"
[[link]]
name = "acq1"
kind = "acquirer"
hosts = ["127.0.0.1:1"]
"#;
    let path = std::path::Path::new("conf/bad.toml");
    assert!(Config::from_toml(base, path).is_ok());
    let kept = Config::from_toml(
        &format!("{base}[limits]\njournal_retention_days = 400\n"),
        path,
    )
    .unwrap();
    assert_eq!(
        kept.limits.journal_retention(),
        Some(std::time::Duration::from_secs(400 * 86_400))
    );
    let cases = [
        (format!("{base}[[listener]]\nname = \"t\"\naddr = \"127.0.0.1:0\"\nspec = \"nope\"\n"), "conf/bad.toml: listener[0].spec: "),
        (format!("{base}[[listener]]\nname = \"t\"\naddr = \"127.0.0.1:0\"\nframing = \"binary3\"\n"), "conf/bad.toml: listener[0].framing: "),
        (format!("{base}[[issuer]]\nid = \"E\"\nkind = \"emoney\"\nunit = \"KRW\"\nlink = \"nowhere\"\n"), "conf/bad.toml: issuer[0].link: no link named \"nowhere\""),
        (format!("{base}[routing]\ndefault_acquirer = \"acq9\"\n"), "conf/bad.toml: routing.default_acquirer: no acquirer link named \"acq9\""),
        (base.replace("card_key = \"000102", "card_key = \"zz0102"), "conf/bad.toml: card_key: card_key: not hex"),
        (format!("{base}bogus = 1\n"), "unknown field `bogus`"),
        (format!("{base}[[issuer]]\nid = \"H\"\nkind = \"points\"\nunit = \"P\"\nlink = \"x\"\nhosted = true\n"), "conf/bad.toml: issuer[0].link: a hosted issuer has no link"),
        (format!("{base}[[hosted.program]]\nid = \"P\"\nkind = \"prepaid\"\nbin_from = \"627\"\nbin_to = \"626\"\n"), "conf/bad.toml: hosted.program[0].bin_from: "),
        (format!("{base}[[hosted.program]]\nid = \"P\"\nkind = \"prepaid\"\nbin_from = \"627\"\nbin_to = \"627\"\npoints_per_1000 = 5\n"), "conf/bad.toml: hosted.program[0].points_issuer: points_per_1000 needs a points_issuer"),
        (format!("{base}[[listener]]\nname = \"t\"\naddr = \"127.0.0.1:0\"\npin_key = {{ value = \"0011\" }}\n"), "conf/bad.toml: listener[0].pin_key: PIN key must be 32 hex digits"),
        (format!("{base}[admin]\naddr = \"127.0.0.1:0\"\n[[admin.token]]\nname = \"a\"\nrole = \"operator\"\ntoken = {{ value = \"short\" }}\n"), "conf/bad.toml: admin.token[0].token: tokens must be at least 16 characters"),
        (format!("{base}[admin]\naddr = \"127.0.0.1:0\"\n[[admin.token]]\nname = \"a\"\nrole = \"issuer\"\nscope = \"NOPE\"\ntoken = {{ value = \"long-enough-token-here\" }}\n"), "conf/bad.toml: admin.token[0].scope: no issuer \"NOPE\""),
        (format!("{base}[admin]\naddr = \"127.0.0.1:0\"\nmax_connections = 0\n"), "conf/bad.toml: admin.max_connections: must be at least 1"),
        (format!("{base}[admin]\naddr = \"127.0.0.1:0\"\nidle_timeout_s = 0\n"), "conf/bad.toml: admin.idle_timeout_s: must be at least 1"),
        (format!("{base}[admin]\naddr = \"127.0.0.1:0\"\nrate_per_token_s = 0\n"), "conf/bad.toml: admin.rate_per_token_s: must be at least 1"),
        (format!("{base}[admin]\naddr = \"127.0.0.1:0\"\n[[admin.token]]\nname = \"a\"\nrole = \"operator\"\ntoken = {{ value = \"long-enough-token-here\" }}\nrate_per_s = 0\n"), "conf/bad.toml: admin.token[0].rate_per_s: must be at least 1"),
        // Shorter than the store-and-forward expiry (7 days by default).
        (format!("{base}[limits]\njournal_retention_days = 3\n"), "conf/bad.toml: limits.journal_retention_days: 0 (keep for ever) or 1 to 36500 days"),
        (format!("{base}[limits]\njournal_retention_days = 99999\n"), "conf/bad.toml: limits.journal_retention_days: "),
        // An archive of what nothing deletes.
        (format!("{base}[limits]\njournal_archive_dir = \"/var/archive\"\n"), "conf/bad.toml: limits.journal_archive_dir: archives what the retention deletes"),
    ];
    for (text, expected) in cases {
        let e = Config::from_toml(&text, path).unwrap_err().to_string();
        assert!(e.contains(expected), "{e:?} does not contain {expected:?}");
    }
}

/// The demo with gift-certificate debits of G-3001 answered after 800 ms.
async fn env_with_slow_gift_debits() -> Env {
    env_with(ephemeral(), |sims| {
        sims[1].behaviours.push(Behaviour {
            target: "G-3001".into(),
            delay_ms: 800,
            ..Behaviour::default()
        });
    })
    .await
}

/// A purchase paid from the gift certificate G-3001 alone.
fn gift_wallet_purchase(amount: u64, stan: u32) -> OwnedMessage {
    with_tags(
        request(b"0200", GIFT_CARD, "000000", amount, stan),
        &[("WS", "G-3001")],
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_approval_the_terminal_never_received_is_reversed() {
    // The terminal hangs up before its approval is ready.
    let env = env_with_slow_gift_debits().await;
    let mut t = env.terminal().await;
    t.send(&gift_wallet_purchase(7_000, 110)).await.unwrap();
    tokio::time::sleep(Duration::from_millis(100)).await;
    drop(t);
    // The debit goes through, the answer finds no terminal, the leg is reversed.
    let switch = &env.demo.running.switch;
    for _ in 0..100 {
        if switch.saf.queued_total() > 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(switch.saf.queued_total(), 1);
    env.drained().await;
    assert_eq!(env.balance("GIFT", "G-3001"), 50_000);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_reversals_of_one_transaction_undo_it_once_and_others_go_on() {
    let env = env().await;
    let mut t = env.terminal().await;
    // Four legs: gift 50,000 + e-money 30,000 + mileage 5,000 + credit 5,000.
    let original = request(b"0200", GIFT_CARD, "000000", 90_000, 130);
    assert_eq!(code(&t.call(&original, WAIT).await.unwrap()), "00");
    let other = gift_wallet_purchase(1_000, 131);
    let mut other_terminal = env.terminal().await;
    assert_eq!(
        code(&other_terminal.call(&other, WAIT).await.unwrap()),
        "00"
    );
    // Eight reversals of the first at once, on eight connections, with one of the second.
    let mut calls = Vec::new();
    for i in 0..8 {
        let mut c = env.terminal().await;
        let r = reversal_of(&original, 140 + i);
        calls.push(tokio::spawn(async move { c.call(&r, WAIT).await }));
    }
    let r = reversal_of(&other, 150);
    calls.push(tokio::spawn(
        async move { other_terminal.call(&r, WAIT).await },
    ));
    for call in calls {
        assert_eq!(code(&call.await.unwrap().unwrap()), "00");
    }
    // Each leg queued for reversal once: four for the first, one for the second.
    assert_eq!(env.demo.running.switch.saf.queued_total(), 5);
    env.drained().await;
    assert_eq!(env.balance("GIFT", "G-3001"), 50_000);
    assert_eq!(env.balance("EMONEY", "E-1001"), 30_000);
    assert_eq!(env.balance("MILEAGE", "M-2001"), 10_000);
    assert_eq!(env.credit_total(GIFT_CARD), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_reversal_of_a_transaction_still_in_flight_waits_for_it_and_undoes_it() {
    // The terminal gives up and reverses while the debit is out.
    let env = env_with_slow_gift_debits().await;
    let mut purchase = env.terminal().await;
    let mut reversing = env.terminal().await;
    let req = gift_wallet_purchase(7_000, 120);
    purchase.send(&req).await.unwrap();
    tokio::time::sleep(Duration::from_millis(200)).await;
    let a = reversing.call(&reversal_of(&req, 121), WAIT).await.unwrap();
    // Answered once the original was: it was found and reversed, not "no such original".
    assert_eq!(a.mti().as_str(), "0410");
    assert_eq!(code(&a), "00");
    let original = purchase.recv(WAIT).await.unwrap();
    assert_eq!(code(&original), "00", "the original itself was approved");
    env.drained().await;
    assert_eq!(env.balance("GIFT", "G-3001"), 50_000);
}

#[test]
fn shipped_configurations_load() {
    use cyberswitch::config::Config;
    use cyberswitch::sim::SimConfig;
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("config");
    std::env::set_var("CYBERSWITCH_CARD_KEY", "00".repeat(32));
    std::env::set_var(
        "CYBERSWITCH_TERMINAL_PIN_KEY",
        "0123456789ABCDEFFEDCBA9876543210",
    );
    std::env::set_var(
        "CYBERSWITCH_OPERATOR_TOKEN",
        "an-operator-token-of-some-length",
    );
    std::env::set_var("CYBERSWITCH_EMONEY_TOKEN", "an-issuer-token-of-some-length");
    std::env::set_var("CYBERSWITCH_DEMOMALL_SECRET", "a-partner-callback-secret");
    for name in ["cyberswitch.toml", "demo.toml"] {
        Config::load(&dir.join(name)).unwrap_or_else(|e| panic!("{e}"));
    }
    for name in [
        "sim-emoney.toml",
        "sim-gift.toml",
        "sim-mileage.toml",
        "sim-acq1.toml",
    ] {
        SimConfig::load(&dir.join(name)).unwrap_or_else(|e| panic!("{e}"));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn no_card_number_is_written_to_the_data_directory() {
    let env = env().await;
    let mut t = env.terminal().await;
    // Split tender with a credit leg, then its reversal (the card number of the credit leg
    // waits sealed in the queue), a credit decline with compensation, a declined card, a
    // plain credit carrying track 2 and a PIN block.
    let split = request(b"0200", GIFT_CARD, "000000", 100_000, 80);
    assert_eq!(code(&t.call(&split, WAIT).await.unwrap()), "00");
    assert_eq!(
        code(&t.call(&reversal_of(&split, 81), WAIT).await.unwrap()),
        "00"
    );
    let short = request(b"0200", SHORT_CARD, "000000", 5_000, 82);
    assert_eq!(code(&t.call(&short, WAIT).await.unwrap()), "51");
    let declined = request(b"0200", DECLINED_CARD, "000000", 5_000, 83);
    assert_eq!(code(&t.call(&declined, WAIT).await.unwrap()), "05");
    let mut plain = request(b"0200", PLAIN_CARD, "000000", 7_000, 84);
    plain
        .set(35, format!("{PLAIN_CARD}=29121010000000000").as_bytes())
        .set(52, &[0x12, 0x34, 0x56, 0x78, 0x9a, 0xbc, 0xde, 0xf0]);
    assert_eq!(code(&t.call(&plain, WAIT).await.unwrap()), "00");
    env.drained().await;
    let pans = [GIFT_CARD, PLAIN_CARD, SMALL_CARD, DECLINED_CARD, SHORT_CARD];
    let files = common::scan_for_card_numbers(&env.demo.dir.join("switch"), &pans, "").unwrap();
    assert!(files > 3, "scanned {files} files only");
    // The journal has what happened, masked.
    let db = env.demo.running.switch.journal.store();
    let entries = cyberswitch::journal::read::from(db, 0, 10_000).unwrap();
    assert!(entries
        .iter()
        .any(|(_, _, e)| e.text().contains("941000******0021")));
    assert!(entries
        .iter()
        .any(|(_, _, e)| e.text().contains("52=<8 bytes hidden>")));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_reversal_never_acknowledged_expires_into_the_dead_letter_list() {
    // Attempts: what the back-off makes in saf_expiry_s (here one).
    let limits = "\n[limits]\nsaf_retry_min_ms = 1000\nsaf_retry_max_ms = 1000\nsaf_expiry_s = 1\n";
    let env = env_configured(
        ephemeral(),
        |sims| {
            let acquirer = sims.iter_mut().find(|s| s.name == "ACQ1").unwrap();
            acquirer.behaviours.push(Behaviour {
                target: PLAIN_CARD.into(),
                silent: true,
                ..Behaviour::default()
            });
        },
        limits,
    )
    .await;
    let mut t = env.terminal().await;
    // The acquirer never answers: 91, the credit leg is queued for reversal, which is never
    // acknowledged either.
    let a = t
        .call(&request(b"0200", PLAIN_CARD, "000000", 4_000, 95), WAIT)
        .await
        .unwrap();
    assert_eq!(code(&a), "91");
    let saf = &env.demo.running.switch.saf;
    for _ in 0..200 {
        if saf.dead_letters() == 1 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(saf.dead_letters(), 1);
    assert_eq!(saf.depth(), 0);
}

/// A split-tender authorization completed: the wallet legs were final debits already, so the
/// completion names their sum plus what the acquirer's authorization is completed for; only
/// the acquirer gets a completion advice (through the queue), and it is acknowledged.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_split_tender_authorization_is_completed_at_the_acquirer_only() {
    let env = env().await;
    let mut t = env.terminal().await;
    // gift 50,000 + e-money 30,000 + mileage 5,000 (final) + credit 5,000 (authorized).
    let auth = request(b"0100", GIFT_CARD, "000000", 90_000, 80);
    assert_eq!(code(&t.call(&auth, WAIT).await.unwrap()), "00");
    assert_eq!(env.credit_total(GIFT_CARD), 5_000);
    let completion = |amount: u64, stan: u64| {
        let mut c = common::reversal_of(&auth, stan, "1121120100");
        c.set_mti(Mti::new(b"0220").unwrap());
        c.set_number(4, amount, 12);
        c
    };
    let queued_before = env.demo.running.switch.saf.queued_total();
    // Less than the wallets paid, or more than was authorized: 13.
    for (amount, stan) in [(84_000, 81), (90_001, 82)] {
        let a = t.call(&completion(amount, stan), WAIT).await.unwrap();
        assert_eq!(
            (a.mti().as_str(), code(&a).as_str()),
            ("0230", "13"),
            "{amount}"
        );
    }
    let a = t.call(&completion(88_000, 83), WAIT).await.unwrap();
    assert_eq!(code(&a), "00");
    env.drained().await;
    assert_eq!(
        env.demo.running.switch.saf.queued_total(),
        queued_before + 1,
        "one completion, for the acquirer's leg"
    );
    assert_eq!(env.balance("GIFT", "G-3001"), 0);
    assert_eq!(env.balance("EMONEY", "E-1001"), 0);
    assert_eq!(
        env.credit_total(GIFT_CARD),
        3_000,
        "the acquirer took 3,000 of the 5,000 authorized"
    );
    // Repeated (0221): acknowledged, nothing more queued or taken.
    let mut again = completion(88_000, 83);
    again.set_mti(Mti::new(b"0221").unwrap());
    assert_eq!(code(&t.call(&again, WAIT).await.unwrap()), "00");
    env.drained().await;
    assert_eq!(
        env.demo.running.switch.saf.queued_total(),
        queued_before + 1
    );
    assert_eq!(env.credit_total(GIFT_CARD), 3_000);
    // An authorization paid by a wallet alone has nothing left to complete: acknowledged,
    // nothing queued.
    let wallet_only = request(b"0100", SMALL_CARD, "000000", 1_000, 85);
    assert_eq!(code(&t.call(&wallet_only, WAIT).await.unwrap()), "00");
    let mut c = common::reversal_of(&wallet_only, 86, "1121120100");
    c.set_mti(Mti::new(b"0220").unwrap());
    assert_eq!(code(&t.call(&c, WAIT).await.unwrap()), "00");
    assert_eq!(
        env.demo.running.switch.saf.queued_total(),
        queued_before + 1
    );
    assert_eq!(env.balance("EMONEY", "E-1002"), 4_000);
    // Reversing the authorization now undoes every leg, the completed one included.
    assert_eq!(
        code(&t.call(&reversal_of(&auth, 87), WAIT).await.unwrap()),
        "00"
    );
    env.drained().await;
    assert_eq!(env.balance("GIFT", "G-3001"), 50_000);
    assert_eq!(env.credit_total(GIFT_CARD), 0);
}

/// One peer address may hold only `max_connections_per_peer` connections of a listener
/// (SPEC §10): the next is closed at once, the open ones go on, and a place given back is
/// taken again (issue 21).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn connections_past_the_per_peer_cap_are_closed_and_the_others_served() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let capped =
        "\n[[listener]]\nname = \"capped\"\naddr = \"127.0.0.1:0\"\nmax_connections = 8\nmax_connections_per_peer = 2\n";
    let env = env_configured(ephemeral(), |_| {}, capped).await;
    let addr = env
        .demo
        .running
        .addrs
        .iter()
        .find(|(name, _)| name == "capped")
        .unwrap()
        .1;
    // A keep-alive (a zero length) is echoed by a connection that is served.
    async fn served(s: &mut tokio::net::TcpStream) -> bool {
        if s.write_all(&[0, 0]).await.is_err() {
            return false;
        }
        let mut echo = [9u8; 2];
        matches!(
            tokio::time::timeout(WAIT, s.read_exact(&mut echo)).await,
            Ok(Ok(_))
        ) && echo == [0, 0]
    }
    let mut first = tokio::net::TcpStream::connect(addr).await.unwrap();
    let mut second = tokio::net::TcpStream::connect(addr).await.unwrap();
    assert!(served(&mut first).await && served(&mut second).await);
    let mut third = tokio::net::TcpStream::connect(addr).await.unwrap();
    assert!(!served(&mut third).await, "a third connection was served");
    assert!(served(&mut first).await, "the open ones go on");
    drop(second);
    // The place given back is taken again (the server notices the close first).
    let mut again = None;
    for _ in 0..100 {
        let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
        if served(&mut s).await {
            again = Some(s);
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(again.is_some(), "the freed place was never given again");
}
