//! Crash harness for F18 coupon purchases (issue 23): `cyberswitch demo` runs as a child
//! process while terminals pay with coupons over several connections; it is killed with
//! SIGKILL at random moments and restarted on the same data directory, several times. After
//! each restart the terminals reverse (0400) every purchase they sent and got no answer to,
//! as terminals do, and go on with the coupons not tried yet. At the end:
//! - a coupon whose purchase the terminals saw approved is `used`, and presented again is
//!   refused 05; a retransmission of its purchase gets the same 00 and charges nothing more;
//! - a coupon whose purchase was reversed (or never answered) is `unused` and pays (00) when
//!   presented again;
//! - the acquirer simulator, read from its own data once the demo is gone, charged the card
//!   the amount less the discount exactly once per approval the terminals saw: no coupon used
//!   twice, no use charged without its approval, no approval without its charge.

use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use cyberswitch::admin::client::ApiClient;
use cyberswitch::demo::{self, DemoPorts};
use cyberswitch::iso8583::tlv::SwitchData;
use cyberswitch::iso8583::{Mti, OwnedMessage, Spec};
use cyberswitch::net::client::Client;
use cyberswitch::sim::Simulator;
use rand::{Rng, SeedableRng};
use serde_json::json;
use tokio::process::Child;
use tokio_util::sync::CancellationToken;

mod common;

const COUPONS: usize = 60;
const KILLS: usize = 3;
const CONNECTIONS: usize = 4;
const AMOUNT: u64 = 5_000;
const DISCOUNT: u64 = 1_500;
/// A plain credit card (no wallets): a coupon purchase is one credit leg at ACQ1.
const CARD: &str = "9410000000000021";
const MERCHANT: &str = "MERCHANT0000001";
const ANSWER_WAIT: Duration = Duration::from_secs(8);

struct DemoProcess {
    child: Child,
    switch: SocketAddr,
    admin: SocketAddr,
    metrics: SocketAddr,
}

impl DemoProcess {
    async fn start(dir: &std::path::Path) -> DemoProcess {
        let (child, printed) = common::spawn_demo(dir).await;
        DemoProcess {
            child,
            switch: common::printed_addr(&printed, "switch on ")
                .expect("the demo printed its switch address"),
            admin: common::printed_addr(&printed, "admin API on http://")
                .expect("the demo printed its admin API"),
            metrics: common::printed_addr(&printed, "metrics on http://")
                .expect("the demo printed its metrics address"),
        }
    }

    async fn kill(mut self) {
        let _ = self.child.start_kill();
        let _ = self.child.wait().await;
    }

    fn operator(&self, dir: &std::path::Path) -> ApiClient {
        let token = demo::secret(dir, "operator.token").unwrap();
        ApiClient::new(&format!("http://{}", self.admin), Some(token)).unwrap()
    }

    async fn terminal(&self) -> Client {
        let spec = Arc::new(Spec::resolve("iso87-ascii").unwrap());
        Client::connect(&self.switch.to_string(), spec, Default::default())
            .await
            .unwrap()
    }

    /// Sum of the store-and-forward depth gauges, from the demo's /metrics.
    async fn saf_depth(&self) -> Option<f64> {
        common::metric_sum(self.metrics, "cyberswitch_saf_depth").await
    }
}

/// A coupon purchase at the merchant: the token in `CP`, no card fields; one STAN and
/// transmission time per request, so that its retransmission is the same request.
fn purchase(token: &str, stan: u32) -> OwnedMessage {
    let mut m = OwnedMessage::new(Mti::new(b"0200").unwrap());
    m.set(3, b"000000")
        .set_number(4, AMOUNT, 12)
        .set(7, cyberswitch::clock::transmission_time().as_bytes())
        .set_number(11, u64::from(stan), 6)
        .set(12, b"120000")
        .set(13, b"1206")
        .set(41, b"TERMCP01")
        .set(42, MERCHANT.as_bytes())
        .set(49, b"410");
    let mut sd = SwitchData::new();
    sd.push("CP", token.as_bytes());
    m.set(48, sd.as_bytes());
    m
}

/// What the terminals know of each coupon's purchase (by coupon index).
#[derive(Default)]
struct Seen {
    /// Sent, with or without an answer.
    sent: HashSet<usize>,
    /// The answer's response code.
    answered: HashMap<usize, String>,
}

/// Send the purchases of `todo` over `CONNECTIONS` connections, until each is answered or
/// the demo goes away.
async fn send_all(switch: SocketAddr, todo: Vec<(usize, OwnedMessage)>, seen: &Arc<Mutex<Seen>>) {
    let spec = Arc::new(Spec::resolve("iso87-ascii").unwrap());
    let mut tasks = Vec::new();
    for part in todo.chunks(todo.len().div_ceil(CONNECTIONS).max(1)) {
        let (part, spec, seen) = (part.to_vec(), spec.clone(), seen.clone());
        tasks.push(tokio::spawn(async move {
            let Ok(mut c) = Client::connect(&switch.to_string(), spec, Default::default()).await
            else {
                return;
            };
            for (i, m) in part {
                seen.lock().unwrap().sent.insert(i);
                match c.call(&m, ANSWER_WAIT).await {
                    Ok(a) => {
                        seen.lock().unwrap().answered.insert(i, common::code(&a));
                    }
                    Err(_) => return,
                }
            }
        }));
    }
    for t in tasks {
        let _ = t.await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn kill_9_during_coupon_purchases_uses_each_coupon_once() {
    let seed = common::seed();
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let dir = tempfile::tempdir().unwrap();
    let mut demo = DemoProcess::start(dir.path()).await;

    // The coupons, issued once, each with the purchase that will use it.
    let expires = chrono::Utc::now().date_naive() + chrono::Days::new(30);
    let mut coupons = Vec::new();
    for i in 0..COUPONS {
        let body = json!({
            "card_number": CARD,
            "registration": format!("REG-{i:04}"),
            "discount": DISCOUNT,
            "expires": expires.format("%Y-%m-%d").to_string(),
        });
        let r = demo
            .operator(dir.path())
            .call("post", "/v1/coupons", Some(&body))
            .await
            .unwrap();
        assert_eq!(r.status, 201, "{:?}", r.body);
        let id = r.body["id"].as_str().unwrap().to_string();
        let token = r.body["token"].as_str().unwrap().to_string();
        coupons.push((id, purchase(&token, 100 + i as u32), token));
    }

    let seen: Arc<Mutex<Seen>> = Arc::default();
    let mut reversed = HashSet::new();
    let mut stan = 500u64;
    for round in 0..=KILLS {
        let todo: Vec<(usize, OwnedMessage)> = {
            let s = seen.lock().unwrap();
            // A batch a round (and whatever an earlier round did not get to send).
            let upto = COUPONS * (round + 1) / (KILLS + 1);
            (0..upto)
                .filter(|i| !s.sent.contains(i))
                .map(|i| (i, coupons[i].1.clone()))
                .collect()
        };
        let sending = tokio::spawn({
            let seen = seen.clone();
            let switch = demo.switch;
            async move { send_all(switch, todo, &seen).await }
        });
        if round == KILLS {
            // The last run is left alone: what is left is sent and answered.
            let _ = sending.await;
            break;
        }
        tokio::time::sleep(Duration::from_millis(rng.random_range(0..50))).await;
        demo.kill().await;
        let _ = sending.await;
        demo = DemoProcess::start(dir.path()).await;
        // Sent and never answered: the terminal reverses it.
        let unanswered: Vec<usize> = {
            let s = seen.lock().unwrap();
            s.sent
                .iter()
                .filter(|i| !s.answered.contains_key(i) && !reversed.contains(*i))
                .copied()
                .collect()
        };
        let mut t = demo.terminal().await;
        for i in &unanswered {
            stan += 1;
            let r = common::reversal_of(
                &coupons[*i].1,
                stan,
                &cyberswitch::clock::transmission_time(),
            );
            let a = t.call(&r, ANSWER_WAIT).await.unwrap();
            assert!(
                matches!(common::code(&a).as_str(), "00" | "25"),
                "seed {seed}: reversal answered {}",
                common::code(&a)
            );
            reversed.insert(*i);
        }
        let (sent, got) = {
            let s = seen.lock().unwrap();
            (s.sent.len(), s.answered.len())
        };
        eprintln!(
            "round {round}: killed with {sent} sent, {got} answered; {} reversed",
            unanswered.len()
        );
    }

    // Every coupon's fate, checked against the switch and by presenting it again.
    let answered = seen.lock().unwrap().answered.clone();
    let operator = demo.operator(dir.path());
    let mut t = demo.terminal().await;
    let mut approvals = 0u64;
    for (i, (id, request, token)) in coupons.iter().enumerate() {
        let approved = answered.get(&i).is_some_and(|c| c == "00") && !reversed.contains(&i);
        if let Some(code) = answered.get(&i) {
            assert!(
                matches!(code.as_str(), "00" | "96"),
                "seed {seed}: coupon {i} answered {code}"
            );
        }
        let status = operator
            .call("get", &format!("/v1/coupons/{id}"), None)
            .await
            .unwrap()
            .body["status"]
            .as_str()
            .unwrap_or_default()
            .to_string();
        let again = t
            .call(&purchase(token, 300 + i as u32), ANSWER_WAIT)
            .await
            .unwrap();
        if approved {
            approvals += 1;
            assert_eq!(status, "used", "seed {seed}: coupon {i} approved, not used");
            assert_eq!(
                common::code(&again),
                "05",
                "seed {seed}: coupon {i} used twice"
            );
            let repeat = t.call(request, ANSWER_WAIT).await.unwrap();
            assert_eq!(
                common::code(&repeat),
                "00",
                "seed {seed}: coupon {i}'s repeat"
            );
        } else {
            assert_eq!(
                status, "unused",
                "seed {seed}: coupon {i} used with no approval"
            );
            assert_eq!(
                common::code(&again),
                "00",
                "seed {seed}: coupon {i} not usable"
            );
            approvals += 1;
        }
    }

    // The queue drained (reversals reached the acquirer), then the acquirer's own books.
    let mut depth = None;
    for _ in 0..300 {
        depth = demo.saf_depth().await;
        if depth == Some(0.0) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(depth, Some(0.0), "seed {seed}: queue not drained");
    demo.kill().await;
    let stop = CancellationToken::new();
    let acq = demo::sim_configs(dir.path(), &DemoPorts::ephemeral())
        .into_iter()
        .find(|c| c.name == "ACQ1")
        .unwrap();
    let acq = Simulator::start(acq, stop.clone()).await.unwrap();
    let charged = acq.card_total(CARD);
    stop.cancel();
    let expected = i64::try_from(approvals * (AMOUNT - DISCOUNT)).unwrap();
    eprintln!("{approvals} coupon uses approved; ACQ1 charged {charged}, expected {expected}");
    assert_eq!(charged, expected, "seed {seed}: {:?}", acq.card_legs(CARD));
}
