//! Crash harness for F17 deposits (issue 23): `cyberswitch demo` runs as a child process while
//! a bank sends the deposits of 20 open orders over several connections, and is killed with
//! SIGKILL at a random moment, then restarted on the same data directory, several times. The
//! bank retransmits every deposit it has no answer to (same RRN) after each restart. At the
//! end: every deposit answered 00 — a 00 seen before a kill is still 00 after it — every
//! order paid exactly once, by its own deposit, the report's total equal to the deposits,
//! one `va.paid` callback per order, every one delivered; and a second, different deposit to
//! a paid order's account is refused 14 (no order is paid twice).

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use cyberswitch::admin::client::ApiClient;
use cyberswitch::iso8583::Spec;
use cyberswitch::net::client::Client;
use cyberswitch::sim::bank::deposit_message;
use rand::{Rng, SeedableRng};
use serde_json::{json, Value};
use tokio::process::Child;

mod common;

const ORDERS: usize = 20;
const KILLS: usize = 3;
const CONNECTIONS: usize = 4;
const ANSWER_WAIT: Duration = Duration::from_secs(8);
const PATIENCE: Duration = Duration::from_secs(90);

struct DemoProcess {
    child: Child,
    bank: SocketAddr,
    admin: SocketAddr,
}

impl DemoProcess {
    async fn start(dir: &std::path::Path) -> DemoProcess {
        let (child, printed) = common::spawn_demo(dir).await;
        DemoProcess {
            child,
            bank: common::printed_addr(&printed, "bank listener on ")
                .expect("the demo printed its bank listener"),
            admin: common::printed_addr(&printed, "admin API on http://")
                .expect("the demo printed its admin API"),
        }
    }

    async fn kill(mut self) {
        let _ = self.child.start_kill();
        let _ = self.child.wait().await;
    }

    fn api(&self, dir: &std::path::Path, token: &str) -> ApiClient {
        let token = std::fs::read_to_string(dir.join(token)).unwrap();
        ApiClient::new(
            &format!("http://{}", self.admin),
            Some(token.trim().to_string()),
        )
        .unwrap()
    }
}

/// One order's deposit and the answers the bank saw to it.
#[derive(Clone)]
struct Deposit {
    account: String,
    amount: u64,
    rrn: String,
}

/// Send every deposit not answered yet, over `CONNECTIONS` connections, until each is
/// answered or the demo goes away; answers recorded by RRN.
async fn send_all(
    bank: SocketAddr,
    deposits: &[Deposit],
    answers: &Arc<Mutex<HashMap<String, Vec<String>>>>,
) {
    let spec = Arc::new(Spec::resolve("iso87-ascii").unwrap());
    let todo: Vec<Deposit> = deposits
        .iter()
        .filter(|d| !answers.lock().unwrap().contains_key(&d.rrn))
        .cloned()
        .collect();
    let mut tasks = Vec::new();
    for part in todo.chunks(todo.len().div_ceil(CONNECTIONS).max(1)) {
        let part = part.to_vec();
        let spec = spec.clone();
        let answers = answers.clone();
        tasks.push(tokio::spawn(async move {
            let Ok(mut c) = Client::connect(&bank.to_string(), spec, Default::default()).await
            else {
                return;
            };
            for (i, d) in part.iter().enumerate() {
                let m = deposit_message(&d.account, d.amount, i as u32 + 1, &d.rrn, false);
                match c.call(&m, ANSWER_WAIT).await {
                    Ok(a) => answers
                        .lock()
                        .unwrap()
                        .entry(d.rrn.clone())
                        .or_default()
                        .push(common::code(&a)),
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
async fn kill_9_during_deposits_pays_each_order_once_and_keeps_every_answer() {
    let seed = common::seed();
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let dir = tempfile::tempdir().unwrap();
    let demo = DemoProcess::start(dir.path()).await;
    let partner = demo.api(dir.path(), "partner.token");
    let mut deposits = Vec::new();
    for i in 0..ORDERS {
        let amount = 1_000 + i as u64;
        let body =
            json!({"bank": "004", "region": "SEOUL", "order": format!("K-{i}"), "amount": amount});
        let r = partner
            .call("post", "/v1/va/orders", Some(&body))
            .await
            .unwrap();
        assert!(r.ok(), "{:?}", r.body);
        deposits.push(Deposit {
            account: r.body["account"].as_str().unwrap().to_string(),
            amount,
            rrn: format!("K{i:011}"),
        });
    }

    // Send, kill at a random moment, restart, send what got no answer again.
    let answers: Arc<Mutex<HashMap<String, Vec<String>>>> = Arc::default();
    let mut demo = demo;
    for _ in 0..KILLS {
        let sending = {
            let deposits = deposits.clone();
            let answers = answers.clone();
            let bank = demo.bank;
            tokio::spawn(async move { send_all(bank, &deposits, &answers).await })
        };
        tokio::time::sleep(Duration::from_millis(rng.random_range(0..15))).await;
        demo.kill().await;
        let _ = sending.await;
        eprintln!(
            "killed with {} of {ORDERS} deposits answered",
            answers.lock().unwrap().len()
        );
        demo = DemoProcess::start(dir.path()).await;
    }
    // The last run is left alone: every deposit sent again, answered.
    let everything: Arc<Mutex<HashMap<String, Vec<String>>>> = Arc::default();
    send_all(demo.bank, &deposits, &everything).await;
    let before = answers.lock().unwrap().clone();
    let after = everything.lock().unwrap().clone();
    for d in &deposits {
        let last = after
            .get(&d.rrn)
            .unwrap_or_else(|| panic!("{} never answered", d.rrn));
        assert_eq!(last, &vec!["00".to_string()], "seed {seed}: {}", d.rrn);
        for code in before.get(&d.rrn).into_iter().flatten() {
            assert_eq!(
                code, "00",
                "seed {seed}: {} answered {code} before a kill",
                d.rrn
            );
        }
    }

    let partner = demo.api(dir.path(), "partner.token");
    let operator = demo.api(dir.path(), "operator.token");
    for (i, d) in deposits.iter().enumerate() {
        let o = partner
            .call("get", &format!("/v1/va/orders/K-{i}"), None)
            .await
            .unwrap()
            .body;
        assert_eq!(o["status"], "paid", "seed {seed}: {o}");
        assert_eq!(o["deposit"]["rrn"], d.rrn.as_str());
        // A different deposit to the same account: no open order there any more.
        let second = deposit_message(
            &d.account,
            d.amount,
            900 + i as u32,
            &format!("Z{i:011}"),
            false,
        );
        let mut c = Client::connect(
            &demo.bank.to_string(),
            Arc::new(Spec::resolve("iso87-ascii").unwrap()),
            Default::default(),
        )
        .await
        .unwrap();
        let a = c.call(&second, ANSWER_WAIT).await.unwrap();
        assert_eq!(
            common::code(&a),
            "14",
            "seed {seed}: order K-{i} paid twice?"
        );
    }
    let report = partner
        .call("get", "/v1/va/report", None)
        .await
        .unwrap()
        .body;
    let total: u64 = deposits.iter().map(|d| d.amount).sum();
    assert_eq!(report["paid"]["count"], ORDERS);
    assert_eq!(report["collected"], total);

    // One callback per order, all delivered (to the restarted demo's receiver).
    let deadline = tokio::time::Instant::now() + PATIENCE;
    loop {
        let items: Value = operator.call("get", "/v1/outbox", None).await.unwrap().body;
        let paid: Vec<&Value> = items["items"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|i| i["event"] == "va.paid")
            .collect();
        assert_eq!(paid.len(), ORDERS, "seed {seed}: one callback per order");
        if paid.iter().all(|i| i["status"] == "delivered") {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "seed {seed}: callbacks not delivered"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    demo.kill().await;
}
