//! Crash harness (SPEC §9): the switch runs as a child process (`cyberswitch run`) under
//! concurrent terminal load against the real simulators; it is killed with SIGKILL at random
//! moments and at named points of the flows (a leg recorded but not sent, between the wallet
//! legs and the credit leg, between the journal write and the answer, a reversal
//! acknowledged but not removed, a completion queued but not acknowledged to its terminal, a
//! refund leg given back before the refund is answered, a refund recorded but not answered, a
//! refund advice acknowledged but not removed) — every other round during a graceful stop
//! (SIGTERM, then SIGKILL before or while it drains) —, restarted, and finally left to drain
//! its queue.
//!
//! What the terminals do: purchases (0200) and authorizations (0100, completed by 0220 for
//! part of their credit) on cards with remote wallets (e-money, gift, points), on cards with a
//! hosted points wallet (the hosted ledger as a wallet issuer), and on hosted anonymous cards
//! (the hosted ledger as the card's issuer); some purchases are reversed at once (0400), and a
//! third of the approved ones are refunded (0200/20) once or twice, partly, wholly or for
//! more than is left, naming the purchase by field 90, by tag `OR` or by tag `OA`.
//!
//! What the world does: some wallets are small and run out (51, then the switch takes what is
//! left and the next wallet or the credit pays the rest), the hosted anonymous cards run out
//! (51 to the terminal), one card's credit is always declined (its wallet legs compensated,
//! or kept with 39 = 10 when the terminal accepts a partial approval), some gift accounts
//! never answer a refund (the leg is pushed through as an advice), some e-money accounts answer
//! refunds after the link's timeout (a late answer), and the gift link is cut now and then
//! (legs refused while it is down, its reversals queued until it is back, across restarts).
//!
//! Then:
//!
//! - every account at every simulator, every hosted card and every hosted points account
//!   (read through the admin API after recovery) moved exactly what the terminals saw: the
//!   legs of every approval, less what completions left, less what approved refunds gave
//!   back; legs sum to the amount; a refund's legs sum to the refund; no refund gives back
//!   more than its purchase's leg took or more than was left (13 when it would);
//! - every transaction a terminal did not see answered has moved no money (the terminals
//!   reverse what they got no answer to, as terminals do, refunds included);
//! - retransmissions of answered requests after the restarts get the same answer;
//! - nothing is left open or queued in the journal;
//! - no file of the switch's data directory, and nothing it logged, holds a card number.
//!
//! A second test kills one known split purchase between its wallet leg and its credit leg and
//! starts the switch again with recovery disabled (test-only switch): the money check must
//! then name that purchase's gift account, short by its wallet leg, and the journal must hold
//! that one transaction open.

#![cfg(feature = "fault-injection")]

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::Stdio;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

mod common;

use common::{amount_of, completion_of, seed};

use cyberswitch::admin::client::ApiClient;
use cyberswitch::demo::{self, BulkCard, DemoPorts};
use cyberswitch::directory::{CardKey, Directory};
use cyberswitch::iso8583::tlv::{parse_ascii_tlv, SwitchData};
use cyberswitch::iso8583::{Mti, OriginalData, OwnedMessage, Spec};
use cyberswitch::net::client::Client;
use cyberswitch::pin::{encrypt_block, ClearPin, PinKey};
use cyberswitch::sim::{Behaviour, Simulator};
use cyberswitch::store::{self, Cf};
use cyberswitch::switch::testhooks::{CRASH_POINT_VAR, SKIP_RECOVERY_VAR};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde_json::{json, Value};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream};
use tokio::process::{Child, Command};
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

const WALLET_BALANCE: i64 = 100_000_000;
/// Gift wallets of bulk cards 12..24 hold this little: they run out.
const SMALL_GIFT: i64 = 5_000;
/// E-money wallets of bulk cards 18..30 hold this little.
const SMALL_EMONEY: i64 = 8_000;
/// Hosted anonymous cards are issued with this: a purchase or two spends them.
const ANON_DENOMINATION: i64 = 50_000;
const ANON_CARDS: usize = 6;
/// Hosted prepaid cards whose points accounts (CYBERPOINTS, a hosted wallet issuer) are
/// linked to bulk cards 30..36; each earns its points by one purchase of this at set-up.
const POINTS_CARDS: usize = 6;
const POINTS_SEED_PURCHASE: u64 = 100_000;
const PIN: &str = "1234";
const TERMINALS: usize = 8;
const ANSWER_WAIT: Duration = Duration::from_secs(8);
/// How long the last run is loaded before the terminals settle: past the slowest answer.
const TAIL: Duration = Duration::from_secs(5);
/// A terminal's request that is a hosted anonymous card's, in a hundred.
const ANON_SHARE: u32 = 15;

/// Bulk cards with the world's particular behaviours, by index.
fn small_gift(i: usize) -> bool {
    (12..24).contains(&i)
}
fn small_emoney(i: usize) -> bool {
    (18..30).contains(&i)
}
/// Gift never answers these cards' refund requests: each leg is pushed through as an advice.
fn silent_refunds(i: usize) -> bool {
    (1..=6).contains(&i)
}
/// E-money answers these cards' refund requests after the link's timeout (1.5 s).
fn slow_refunds(i: usize) -> bool {
    (7..=12).contains(&i)
}
/// The prepaid card whose points a bulk card spends, if any.
fn points_card(i: usize) -> Option<usize> {
    (30..30 + POINTS_CARDS).contains(&i).then(|| i - 30)
}

/// A number in a hosted program's BIN with a valid Luhn digit.
fn hosted_pan(bin: &str, n: usize) -> String {
    let body = format!("{bin}{:09}", 700_000 + n);
    let sum: u32 = body
        .bytes()
        .rev()
        .enumerate()
        .map(|(i, b)| {
            let d = u32::from(b - b'0');
            match i % 2 {
                0 if d * 2 > 9 => d * 2 - 9,
                0 => d * 2,
                _ => d,
            }
        })
        .sum();
    format!("{body}{}", (10 - sum % 10) % 10)
}

/// The hosted cards, once issued (set-up through the admin API).
#[derive(Debug, Default)]
struct HostedIds {
    anon: Vec<String>,
    points: Vec<String>,
    /// Each points account's balance after set-up.
    points_opening: Vec<i64>,
}

/// Simulators in this process, the switch's data directory and configuration on disk.
struct World {
    dir: tempfile::TempDir,
    stop: CancellationToken,
    sims: Vec<Arc<Simulator>>,
    cards: Vec<BulkCard>,
    /// Opening balance of every remote wallet account.
    openings: HashMap<String, i64>,
    anon_pans: Vec<String>,
    points_pans: Vec<String>,
    hosted: OnceLock<HostedIds>,
    config: PathBuf,
    switch: SocketAddr,
    metrics: SocketAddr,
    admin: SocketAddr,
    /// The gift link goes through this relay, which the harness cuts.
    gift_relay: Relay,
    spec: Arc<Spec>,
    /// Everything the switch wrote to stderr, over every run.
    logs: Arc<Mutex<String>>,
}

impl Drop for World {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

/// The tests of this harness run one at a time: each picks free ports for a switch it
/// starts later as a child process, and another test's simulators, binding port 0
/// meanwhile, could be handed the same port (seen: "metrics: Address already in use").
static ONE_AT_A_TIME: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// A TCP relay in front of one simulator: cut, it closes every connection through it and
/// refuses new ones, so the switch's link to that simulator goes down as if the line did.
struct Relay {
    addr: SocketAddr,
    up: Arc<AtomicBool>,
    cut: Arc<Mutex<CancellationToken>>,
}

impl Relay {
    async fn start(upstream: SocketAddr, stop: CancellationToken) -> Relay {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let up = Arc::new(AtomicBool::new(true));
        let cut = Arc::new(Mutex::new(CancellationToken::new()));
        let (is_up, cuts) = (up.clone(), cut.clone());
        tokio::spawn(async move {
            loop {
                let accepted = tokio::select! {
                    _ = stop.cancelled() => return,
                    a = listener.accept() => a,
                };
                let Ok((mut inbound, _)) = accepted else {
                    continue;
                };
                if !is_up.load(Ordering::SeqCst) {
                    continue; // dropped: the connection is refused
                }
                let cut = cuts.lock().unwrap().clone();
                tokio::spawn(async move {
                    let Ok(mut outbound) = TcpStream::connect(upstream).await else {
                        return;
                    };
                    tokio::select! {
                        _ = cut.cancelled() => {}
                        _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound) => {}
                    }
                });
            }
        });
        Relay { addr, up, cut }
    }

    fn down(&self) {
        self.up.store(false, Ordering::SeqCst);
        let mut cut = self.cut.lock().unwrap();
        cut.cancel();
        *cut = CancellationToken::new();
    }

    fn restore(&self) {
        self.up.store(true, Ordering::SeqCst);
    }
}

async fn world(cards: usize) -> World {
    let dir = tempfile::tempdir().unwrap();
    let stop = CancellationToken::new();
    let cards = demo::bulk_cards(cards);
    let any = SocketAddr::from(([127, 0, 0, 1], 0));
    let mut ports = DemoPorts {
        switch: common::free_port(),
        metrics: Some(common::free_port()),
        emoney: any,
        gift: any,
        mileage: any,
        acquirer: any,
        admin: common::free_port(),
    };
    let mut configs = demo::sim_configs(dir.path(), &ports);
    demo::add_bulk_accounts(&mut configs, &cards, WALLET_BALANCE);
    let mut openings = HashMap::new();
    for sim in configs.iter_mut() {
        for a in sim.accounts.iter_mut() {
            let i = cards
                .iter()
                .position(|c| [&c.emoney, &c.gift, &c.mileage].contains(&&a.id));
            match (sim.name.as_str(), i) {
                ("GIFT", Some(i)) if small_gift(i) => a.balance = SMALL_GIFT,
                ("EMONEY", Some(i)) if small_emoney(i) => a.balance = SMALL_EMONEY,
                _ => {}
            }
            openings.insert(a.id.clone(), a.balance);
        }
    }
    let refunds_only = |target: &str| Behaviour {
        target: target.to_string(),
        processing_code: Some("20".into()),
        requests_only: true,
        ..Behaviour::default()
    };
    for sim in configs.iter_mut() {
        match sim.name.as_str() {
            // The first card's credit is always declined: its wallet legs must be compensated.
            "ACQ1" => sim.behaviours.push(Behaviour {
                target: cards[0].pan.clone(),
                decline: Some("05".into()),
                ..Behaviour::default()
            }),
            "GIFT" => {
                for (_, c) in cards.iter().enumerate().filter(|(i, _)| silent_refunds(*i)) {
                    sim.behaviours.push(Behaviour {
                        silent: true,
                        ..refunds_only(&c.gift)
                    });
                }
            }
            "EMONEY" => {
                for (_, c) in cards.iter().enumerate().filter(|(i, _)| slow_refunds(*i)) {
                    sim.behaviours.push(Behaviour {
                        delay_ms: 2_500,
                        ..refunds_only(&c.emoney)
                    });
                }
            }
            _ => {}
        }
    }
    let sims = demo::start_sims(configs, &mut ports, &stop).await.unwrap();
    let gift_relay = Relay::start(ports.gift, stop.clone()).await;
    ports.gift = gift_relay.addr;
    let key: [u8; 32] = rand::random();
    std::fs::write(dir.path().join("card.key"), hex::encode(key)).unwrap();
    demo::write_secrets(dir.path()).unwrap();
    let config = dir.path().join("cyberswitch.toml");
    std::fs::write(&config, demo::switch_config_toml(dir.path(), &ports)).unwrap();
    {
        let db = store::open(&dir.path().join("switch")).unwrap();
        let directory = Directory::new(db, CardKey::new(key.to_vec()));
        demo::link_bulk_cards(&directory, &cards).unwrap();
    } // closed: the switch process opens it next
    World {
        switch: ports.switch,
        metrics: ports.metrics.unwrap(),
        admin: ports.admin,
        dir,
        stop,
        sims,
        cards,
        openings,
        anon_pans: (0..ANON_CARDS).map(|n| hosted_pan("627100", n)).collect(),
        points_pans: (0..POINTS_CARDS).map(|n| hosted_pan("627000", n)).collect(),
        hosted: OnceLock::new(),
        config,
        gift_relay,
        spec: Arc::new(Spec::resolve("iso87-ascii").unwrap()),
        logs: Arc::new(Mutex::new(String::new())),
    }
}

/// A running switch process.
struct Switch {
    child: Child,
    /// Notified when the armed crash point is reached.
    crashed: Arc<Notify>,
    reached: Arc<AtomicBool>,
}

impl World {
    fn sim(&self, name: &str) -> &Simulator {
        self.sims.iter().find(|s| s.name == name).unwrap()
    }

    fn data_dir(&self) -> PathBuf {
        self.dir.path().join("switch")
    }

    fn hosted(&self) -> &HostedIds {
        static NONE: HostedIds = HostedIds {
            anon: Vec::new(),
            points: Vec::new(),
            points_opening: Vec::new(),
        };
        self.hosted.get().unwrap_or(&NONE)
    }

    async fn start_switch(&self, crash_point: Option<&str>, skip_recovery: bool) -> Switch {
        // `CRASH_BIN` runs a copy of the binary (to loop the harness while the tree rebuilds).
        let bin = std::env::var("CRASH_BIN").unwrap_or(env!("CARGO_BIN_EXE_cyberswitch").into());
        let mut cmd = Command::new(bin);
        cmd.arg("run")
            .arg("--config")
            .arg(&self.config)
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        if let Some(p) = crash_point {
            cmd.env(CRASH_POINT_VAR, p);
        }
        if skip_recovery {
            cmd.env(SKIP_RECOVERY_VAR, "1");
        }
        let mut child = cmd.spawn().unwrap();
        let crashed = Arc::new(Notify::new());
        let reached = Arc::new(AtomicBool::new(false));
        let stderr = child.stderr.take().unwrap();
        let (logs, c, r) = (self.logs.clone(), crashed.clone(), reached.clone());
        tokio::spawn(async move {
            let mut lines = BufReader::new(stderr).lines();
            while let Ok(Some(line)) = lines.next_line().await {
                if line.starts_with("crash point") {
                    r.store(true, Ordering::SeqCst);
                    c.notify_one();
                }
                let mut l = logs.lock().unwrap();
                l.push_str(&line);
                l.push('\n');
            }
        });
        let mut stdout = BufReader::new(child.stdout.take().unwrap()).lines();
        let ready = tokio::time::timeout(Duration::from_secs(60), async {
            while let Ok(Some(line)) = stdout.next_line().await {
                if line.contains("cyberswitch ready") {
                    return true;
                }
            }
            false
        })
        .await;
        assert_eq!(
            ready,
            Ok(true),
            "switch did not start; logs:\n{}",
            self.log_tail()
        );
        tokio::spawn(async move { while let Ok(Some(_)) = stdout.next_line().await {} });
        Switch {
            child,
            crashed,
            reached,
        }
    }

    /// With `CRASH_LOG=FILE`, everything the switch wrote over every run goes to FILE (to
    /// follow one transaction through a failing run). When a check failed, the whole world —
    /// the switch's store, the simulators' stores — is copied with every line the switch
    /// logged to a directory that outlives the test, named in the output: a failure that
    /// does not come back with its seed can still be read.
    fn keep_evidence(&self, failed: bool) {
        let logs = self.logs.lock().unwrap().clone();
        if let Ok(path) = std::env::var("CRASH_LOG") {
            if let Err(e) = std::fs::write(&path, &logs) {
                eprintln!("CRASH_LOG {path}: {e}");
            }
        }
        if !failed {
            return;
        }
        let kept = std::env::temp_dir().join(format!("cyberswitch-crash-{}", std::process::id()));
        let copied = std::process::Command::new("cp")
            .arg("-a")
            .arg(self.dir.path())
            .arg(&kept)
            .status();
        let logged = std::fs::write(kept.join("switch.log"), &logs);
        eprintln!(
            "evidence kept in {} (stores, switch.log): copy {copied:?}, log {logged:?}",
            kept.display()
        );
    }

    fn log_tail(&self) -> String {
        let l = self.logs.lock().unwrap();
        l.lines().rev().take(30).collect::<Vec<_>>().join("\n")
    }

    async fn terminal(&self) -> Option<Client> {
        for _ in 0..50 {
            if let Ok(c) = Client::connect(
                &self.switch.to_string(),
                self.spec.clone(),
                "binary2".parse().unwrap(),
            )
            .await
            {
                return Some(c);
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        None
    }

    /// An admin API call as the operator; the body of its (successful) answer.
    async fn api(&self, method: &str, path: &str, body: Option<Value>) -> Value {
        let token = demo::secret(self.dir.path(), "operator.token").unwrap();
        let client = ApiClient::new(&format!("http://{}", self.admin), Some(token)).unwrap();
        for _ in 0..100 {
            match client.call(method, path, body.as_ref()).await {
                Ok(r) if r.status == 429 => {}
                Ok(r) => {
                    assert!(r.ok(), "{method} {path}: {} {}", r.status, r.body);
                    return r.body;
                }
                Err(_) => {} // still starting
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        panic!("{method} {path}: the admin API did not answer");
    }

    /// Sum of a metric over its labels, from the switch's /metrics.
    async fn metric(&self, name: &str) -> Option<f64> {
        let mut s = tokio::net::TcpStream::connect(self.metrics).await.ok()?;
        s.write_all(b"GET /metrics HTTP/1.0\r\nHost: x\r\n\r\n")
            .await
            .ok()?;
        let mut body = String::new();
        s.read_to_string(&mut body).await.ok()?;
        let labelled = format!("{name}{{");
        Some(
            body.lines()
                .filter(|l| l.starts_with(&labelled) || l.starts_with(&format!("{name} ")))
                .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
                .sum(),
        )
    }

    /// Sum of the store-and-forward depth gauges.
    async fn saf_depth(&self) -> Option<f64> {
        self.metric("cyberswitch_saf_depth").await
    }

    /// Issue the hosted cards through the admin API (the switch must be running): anonymous
    /// cards, and prepaid cards each spending once with its PIN at a terminal to earn points,
    /// their points accounts then linked to bulk cards as a hosted wallet.
    async fn seed_hosted(&self) {
        let mut ids = HostedIds::default();
        for pan in &self.anon_pans {
            let card = self
                .api(
                    "post",
                    "/v1/cards",
                    Some(json!({"program": "ANON", "denomination": ANON_DENOMINATION, "card_number": pan})),
                )
                .await;
            let id = card["id"].as_str().unwrap().to_string();
            self.api("post", &format!("/v1/cards/{id}/activate"), Some(json!({})))
                .await;
            ids.anon.push(id);
        }
        let pin_key =
            PinKey::from_hex(&demo::secret(self.dir.path(), "terminal-pin.key").unwrap()).unwrap();
        let mut client = self.terminal().await.unwrap();
        for (k, pan) in self.points_pans.iter().enumerate() {
            let card = self
                .api(
                    "post",
                    "/v1/cards",
                    Some(json!({"program": "PREPAID", "denomination": POINTS_SEED_PURCHASE, "card_number": pan})),
                )
                .await;
            let id = card["id"].as_str().unwrap().to_string();
            self.api(
                "post",
                &format!("/v1/cards/{id}/activate"),
                Some(json!({"pin": PIN})),
            )
            .await;
            let mut spend = terminal_request(b"0200", "SEED0001", 900_000 + k as u32);
            spend
                .set(2, pan.as_bytes())
                .set(3, b"000000")
                .set_number(4, POINTS_SEED_PURCHASE, 12);
            let block = encrypt_block(&pin_key, &ClearPin::new(PIN).unwrap(), pan).unwrap();
            spend.set(52, &block);
            let a = client.call(&spend, ANSWER_WAIT).await.unwrap();
            assert_eq!(code(&a), "00", "the set-up purchase on a prepaid card");
            let card = self.api("get", &format!("/v1/cards/{id}"), None).await;
            let points = card["points"].as_i64().unwrap();
            assert!(points > 0, "the set-up purchase earned no points: {card}");
            self.api(
                "post",
                "/v1/links",
                Some(json!({"card_number": self.cards[30 + k].pan, "issuer": "CYBERPOINTS", "account": id, "priority": 0, "label": "points"})),
            )
            .await;
            ids.points.push(id);
            ids.points_opening.push(points);
        }
        self.hosted.set(ids).unwrap();
    }

    /// What the hosted cards and points accounts hold, through the admin API: (posted,
    /// available) per card id.
    async fn hosted_snapshot(&self) -> HashMap<String, (i64, i64)> {
        let mut snap = HashMap::new();
        for id in &self.hosted().anon {
            let card = self.api("get", &format!("/v1/cards/{id}"), None).await;
            snap.insert(
                id.clone(),
                (
                    card["balance"].as_i64().unwrap(),
                    card["available"].as_i64().unwrap(),
                ),
            );
        }
        for id in &self.hosted().points {
            let card = self.api("get", &format!("/v1/cards/{id}"), None).await;
            let points = card["points"].as_i64().unwrap();
            snap.insert(id.clone(), (points, points));
        }
        snap
    }
}

impl Switch {
    /// SIGKILL, and wait for the process to be gone.
    async fn kill(mut self) {
        let _ = self.child.start_kill();
        let _ = self.child.wait().await;
    }
}

/// The card a request was made with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum CardRef {
    Bulk(usize),
    Anon(usize),
}

/// How a refund names its purchase (F8).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
enum How {
    Field90,
    Rrn,
    Approval,
}

#[derive(Clone)]
struct Refund {
    how: How,
    request: OwnedMessage,
    answer: Option<OwnedMessage>,
    /// What the purchase had left to refund when this was sent, by the answers seen.
    left: i64,
}

/// One request a terminal sent, what it got, and what the terminal did after.
#[derive(Clone)]
struct Outcome {
    card: CardRef,
    request: OwnedMessage,
    answer: Option<OwnedMessage>,
    /// An approved authorization's completion (0220) and its answer.
    completion: Option<(OwnedMessage, Option<OwnedMessage>)>,
    /// The terminal's reversal (0400) of an approved purchase, and its answer.
    reversal: Option<(OwnedMessage, Option<OwnedMessage>)>,
    refunds: Vec<Refund>,
    /// What refunds may give back in all (an approved purchase, or a completed
    /// authorization's completed amount; 0 for anything else).
    refundable: i64,
}

fn code(m: &OwnedMessage) -> &str {
    std::str::from_utf8(m.get(39).unwrap_or(b"")).unwrap_or("")
}

fn approved(m: &OwnedMessage) -> bool {
    matches!(code(m), "00" | "10")
}

fn text(m: &OwnedMessage, n: u16) -> String {
    String::from_utf8_lossy(m.get(n).unwrap_or(b""))
        .trim()
        .to_string()
}

fn number(m: &OwnedMessage, n: u16) -> u64 {
    text(m, n).parse().unwrap_or(0)
}

/// What an approval approved: the amount asked, or field 4 of a partial approval (39 = 10).
fn approved_amount(request: &OwnedMessage, answer: &OwnedMessage) -> i64 {
    if code(answer) == "10" {
        amount_of(answer)
    } else {
        amount_of(request)
    }
}

/// The `LG` legs of an answer as (issuer or link, amount, units). A hosted card's plain
/// purchase (relayed to its program, F6) lists none: its one leg is the whole amount.
fn legs(card: CardRef, request: &OwnedMessage, answer: &OwnedMessage) -> Vec<(String, i64, i64)> {
    let listed: Vec<(String, i64, i64)> = parse_ascii_tlv(answer.get(48).unwrap_or(b""), 2, 3)
        .unwrap()
        .iter()
        .filter(|e| e.tag == b"LG")
        .map(|e| {
            let lg = String::from_utf8_lossy(e.value).into_owned();
            let parts: Vec<&str> = lg.split('|').collect();
            (
                parts[1].to_string(),
                parts[2].parse().unwrap(),
                parts[3].parse().unwrap(),
            )
        })
        .collect();
    match card {
        CardRef::Anon(_) if listed.is_empty() && request.get(3) != Some(b"200000") => {
            let a = approved_amount(request, answer);
            vec![("hosted".into(), a, a)]
        }
        _ => listed,
    }
}

/// The part of an approval held until completed: the acquirer's leg, or a hosted card's.
fn held_part(card: CardRef, request: &OwnedMessage, answer: &OwnedMessage) -> i64 {
    legs(card, request, answer)
        .iter()
        .filter(|(name, _, _)| matches!(name.as_str(), "acq1" | "hosted"))
        .map(|(_, amount, _)| amount)
        .sum()
}

/// A terminal request's common fields.
fn terminal_request(mti: &[u8; 4], terminal: &str, stan: u32) -> OwnedMessage {
    let mut m = OwnedMessage::new(Mti::new(mti).unwrap());
    m.set(7, cyberswitch::clock::transmission_time().as_bytes())
        .set_number(11, u64::from(stan), 6)
        .set(12, cyberswitch::clock::local_time().as_bytes())
        .set(13, cyberswitch::clock::local_date().as_bytes())
        .set(41, terminal.as_bytes())
        .set(42, b"MERCHANT0000001")
        .set(49, b"410");
    m
}

/// A purchase (0200), or one time in four an authorization (0100) to be completed: on a bulk
/// card with a random tender, or on a hosted anonymous card.
fn purchase(w: &World, rng: &mut StdRng, terminal: &str, stan: u32) -> (CardRef, OwnedMessage) {
    let anon = w.hosted().anon.len();
    let card = if anon > 0 && rng.random_range(0..100) < ANON_SHARE {
        CardRef::Anon(rng.random_range(0..anon))
    } else {
        CardRef::Bulk(rng.random_range(0..w.cards.len()))
    };
    let amount = rng.random_range(1..=400u64) * 100;
    let mti = if rng.random_range(0..4) == 0 {
        b"0100"
    } else {
        b"0200"
    };
    let mut m = terminal_request(mti, terminal, stan);
    m.set(3, b"000000").set_number(4, amount, 12);
    let c = match card {
        CardRef::Anon(j) => {
            m.set(2, w.anon_pans[j].as_bytes());
            return (card, m);
        }
        CardRef::Bulk(i) => &w.cards[i],
    };
    m.set(2, c.pan.as_bytes());
    // Tenders: automatic, capped (the rest goes to credit: split tender), chosen wallets.
    let mut sd = SwitchData::new();
    match rng.random_range(0..4) {
        0 => {}
        1 => {
            sd.push("WC", (amount / 2).to_string().as_bytes());
        }
        2 => {
            sd.push("WS", format!("{},{}", c.emoney, c.mileage).as_bytes());
        }
        _ => {
            sd.push("WS", c.gift.as_bytes());
            sd.push("WC", (amount / 3).to_string().as_bytes());
        }
    }
    // The first card's credit is always declined: one of its requests in two allows a
    // partial approval (39 = 10), so that every run sees a 0200 answered 10 (with one in
    // four, ~5 were expected per run and about one run in 150 saw none).
    let partial_odds = if matches!(card, CardRef::Bulk(0)) {
        2
    } else {
        4
    };
    if rng.random_range(0..partial_odds) == 0 {
        sd.push("PA", b"1");
    }
    if !sd.is_empty() {
        m.set(48, sd.as_bytes());
    }
    (card, m)
}

/// A refund (0200/20) of `amount` at the purchase's terminal, naming it as `how` says; with
/// `card`, carrying the purchase's card too (what tells purchases sharing an approval code
/// apart).
fn refund_of(
    purchase: &OwnedMessage,
    answer: &OwnedMessage,
    amount: i64,
    stan: u32,
    (how, card): (How, bool),
) -> OwnedMessage {
    let mut m = terminal_request(b"0200", &text(purchase, 41), stan);
    m.set(3, b"200000").set_number(4, amount as u64, 12);
    if let (true, Some(pan)) = (card, purchase.get(2)) {
        m.set(2, pan);
    }
    let auth = text(answer, 38);
    match how {
        How::Approval if !auth.is_empty() => {
            let now = chrono::Utc::now().timestamp_millis();
            let date = cyberswitch::switch::refund::yymmdd(now, number(purchase, 13) as u32);
            common::with_tags(m, &[("OA", &format!("{auth}|{date}"))])
        }
        How::Rrn | How::Approval => common::with_tags(m, &[("OR", &text(answer, 37))]),
        How::Field90 => {
            m.set_original_data(&OriginalData {
                mti: purchase.mti(),
                stan: number(purchase, 11) as u32,
                transmission_time: number(purchase, 7),
                acquirer_id: 0,
                forwarder_id: 0,
            });
            m
        }
    }
}

fn next_stan(stans: &AtomicU32) -> u32 {
    stans.fetch_add(1, Ordering::Relaxed) % 999_999 + 1
}

async fn ask(client: &mut Client, m: &OwnedMessage) -> Option<OwnedMessage> {
    match client.send(m).await {
        Ok(()) => client.recv(ANSWER_WAIT).await.ok(),
        Err(_) => None,
    }
}

/// Approved purchases each terminal made (indices into the outcomes), over every round: what
/// it may refund later.
type Histories = Arc<Mutex<HashMap<String, Vec<usize>>>>;

/// One terminal: purchases one after the other until the connection dies or `stop`; now and
/// then, instead, a refund of one of its earlier purchases.
#[allow(clippy::too_many_arguments)]
async fn terminal_load(
    w: Arc<World>,
    id: String,
    stans: Arc<AtomicU32>,
    outcomes: Arc<Mutex<Vec<Outcome>>>,
    histories: Histories,
    stop: CancellationToken,
    seed: u64,
) {
    let mut rng = StdRng::seed_from_u64(seed);
    let Some(mut client) = w.terminal().await else {
        return;
    };
    while !stop.is_cancelled() {
        let earlier = histories
            .lock()
            .unwrap()
            .get(&id)
            .and_then(|h| (!h.is_empty()).then(|| h[rng.random_range(0..h.len())]));
        if let Some(idx) = earlier.filter(|_| rng.random_range(0..8) == 0) {
            if !late_refund(&mut rng, &mut client, &stans, &outcomes, idx).await {
                return;
            }
            continue;
        }
        let (card, request) = purchase(&w, &mut rng, &id, next_stan(&stans));
        let answer = ask(&mut client, &request).await;
        let mut o = Outcome {
            card,
            request,
            answer,
            completion: None,
            reversal: None,
            refunds: Vec::new(),
            refundable: 0,
        };
        let alive = o.answer.is_some() && follow_up(&mut rng, &mut client, &stans, &mut o).await;
        let refundable = o.refundable > 0;
        let idx = {
            let mut all = outcomes.lock().unwrap();
            all.push(o);
            all.len() - 1
        };
        if refundable {
            histories
                .lock()
                .unwrap()
                .entry(id.clone())
                .or_default()
                .push(idx);
        }
        if !alive {
            return;
        }
    }
}

/// A refund of one of this terminal's earlier purchases, as merchants make them days later:
/// the switch must find that purchase, not a later one sharing its approval code. False when
/// no answer came.
async fn late_refund(
    rng: &mut StdRng,
    client: &mut Client,
    stans: &AtomicU32,
    outcomes: &Mutex<Vec<Outcome>>,
    idx: usize,
) -> bool {
    let (request, answer, left) = {
        let all = outcomes.lock().unwrap();
        let o = &all[idx];
        // A refund whose fate is unknown until the terminal reverses it: not now.
        if o.refunds.iter().any(|r| r.answer.is_none()) {
            return true;
        }
        let given: i64 = o
            .refunds
            .iter()
            .filter(|r| r.answer.as_ref().is_some_and(|a| code(a) == "00"))
            .map(|r| amount_of(&r.request))
            .sum();
        let Some(answer) = o.answer.clone() else {
            return true;
        };
        (o.request.clone(), answer, o.refundable - given)
    };
    if left <= 0 {
        return true;
    }
    let amount = rng.random_range(1..=left);
    let how = [How::Field90, How::Rrn, How::Approval, How::Approval][rng.random_range(0..4)];
    let card = rng.random_range(0..2) == 0;
    let r = refund_of(&request, &answer, amount, next_stan(stans), (how, card));
    let a = ask(client, &r).await;
    let alive = a.is_some();
    outcomes.lock().unwrap()[idx].refunds.push(Refund {
        how,
        request: r,
        answer: a,
        left,
    });
    alive
}

/// What a terminal does after an approval: completes an authorization for part of what it
/// holds; reverses one purchase in ten at once; refunds a third of the rest, once or twice,
/// partly, wholly or for more than is left. False when an answer did not come.
async fn follow_up(
    rng: &mut StdRng,
    client: &mut Client,
    stans: &AtomicU32,
    o: &mut Outcome,
) -> bool {
    let Some(a) = o.answer.clone().filter(approved) else {
        return true;
    };
    let mut refundable = approved_amount(&o.request, &a);
    if o.request.mti().as_bytes() == b"0100" {
        let held = held_part(o.card, &o.request, &a);
        if held == 0 {
            return true; // wallet debits only: final, nothing to complete
        }
        let taken = refundable - held + rng.random_range(1..=held);
        let c = completion_of(&o.request, taken, next_stan(stans));
        let answer = ask(client, &c).await;
        let completed = answer.as_ref().is_some_and(|x| code(x) == "00");
        let alive = answer.is_some();
        o.completion = Some((c, answer));
        if !completed {
            return alive;
        }
        refundable = taken;
    } else if rng.random_range(0..10) == 0 {
        let r = common::reversal_of(
            &o.request,
            u64::from(next_stan(stans)),
            &cyberswitch::clock::transmission_time(),
        );
        let answer = ask(client, &r).await;
        let alive = answer.is_some();
        o.reversal = Some((r, answer));
        return alive;
    }
    o.refundable = refundable;
    if rng.random_range(0..3) != 0 {
        return true;
    }
    let mut given = 0;
    for _ in 0..rng.random_range(1..=2) {
        let left = refundable - given;
        let amount = match rng.random_range(0..4) {
            0 | 1 => rng.random_range(1..=(left / 2).max(1)),
            2 => left.max(1),
            _ => left + 100,
        };
        let how = [How::Field90, How::Rrn, How::Approval][rng.random_range(0..3)];
        let card = rng.random_range(0..2) == 0;
        let request = refund_of(&o.request, &a, amount, next_stan(stans), (how, card));
        let answer = ask(client, &request).await;
        let alive = answer.is_some();
        if answer.as_ref().is_some_and(|x| code(x) == "00") {
            given += amount;
        }
        o.refunds.push(Refund {
            how,
            request,
            answer,
            left,
        });
        if !alive {
            return false;
        }
    }
    true
}

/// The crash points a round may arm (`name:n`: the n-th time it is passed), with how many
/// times at most it is passed before it fires: reversals and refunds are rarer than legs.
const CRASH_POINTS: &[(&str, u32)] = &[
    ("leg-sent", 40),
    // A leg sent ahead of its record, the writer stopped before the record is written.
    ("ahead-record-write", 40),
    ("wallet-credit", 40),
    ("journal-answer", 40),
    ("saf-acked", 4),
    // About one request in eight is a completion (an authorization with credit in it).
    ("completion-queued", 6),
    ("refund-leg-given", 6),
    ("refund-answered", 4),
    // Refund legs to gift of cards 1..=6 and e-money of cards 7..=12 become advices.
    ("saf-advice-acked", 1),
];

/// What round `round` kills at: a named point or (one round in `CRASH_POINTS.len() + 1`) a
/// random moment.
fn crash_plan(round: usize, rng: &mut StdRng) -> Option<String> {
    match round % (CRASH_POINTS.len() + 1) {
        i if i == CRASH_POINTS.len() => None,
        i => {
            let (name, most) = CRASH_POINTS[i];
            Some(format!("{name}:{}", rng.random_range(1..=most)))
        }
    }
}

/// The terminals' side of every run: STANs, what each request got, and each terminal's
/// refundable purchases.
#[derive(Default)]
struct Terminals {
    stans: Arc<AtomicU32>,
    outcomes: Arc<Mutex<Vec<Outcome>>>,
    histories: Histories,
}

/// Terminals sending, until `stop` is cancelled.
struct Sending {
    stop: CancellationToken,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Terminals {
    fn start(&self, w: &Arc<World>, rng: &mut StdRng) -> Sending {
        let stop = CancellationToken::new();
        let tasks = (0..TERMINALS)
            .map(|t| {
                tokio::spawn(terminal_load(
                    w.clone(),
                    format!("CRSH{t:04}"),
                    self.stans.clone(),
                    self.outcomes.clone(),
                    self.histories.clone(),
                    stop.clone(),
                    rng.random(),
                ))
            })
            .collect();
        Sending { stop, tasks }
    }

    fn outcomes(&self) -> Vec<Outcome> {
        self.outcomes.lock().unwrap().clone()
    }
}

impl Sending {
    /// Stop sending; each terminal ends with its request in flight answered or given up on.
    async fn stop(self) {
        self.stop.cancel();
        for t in self.tasks {
            let _ = t.await;
        }
    }
}

/// One round: start the switch (armed with `plan`), load it, maybe cut the gift link a while,
/// and kill it at the point or at a random moment. Returns whether the point was reached.
async fn crash_round(
    w: &Arc<World>,
    terminals: &Terminals,
    plan: Option<&str>,
    cut_gift: bool,
    during_stop: bool,
    rng: &mut StdRng,
) -> bool {
    // A link cut in the round before comes back only now: what was queued for it waited
    // through the restart.
    w.gift_relay.restore();
    let switch = w.start_switch(plan, false).await;
    let sending = terminals.start(w, rng);
    if cut_gift {
        let (after, lasting) = (rng.random_range(100..1000), rng.random_range(300..3000));
        let w = w.clone();
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(after)).await;
            w.gift_relay.down();
            tokio::time::sleep(Duration::from_millis(lasting)).await;
            w.gift_relay.restore();
        });
    }
    match plan {
        Some(_) => {
            let _ = tokio::time::timeout(Duration::from_secs(10), switch.crashed.notified()).await;
        }
        // Long enough, some of them, for answers that come after the link's timeout (1.5 s).
        None => tokio::time::sleep(Duration::from_millis(rng.random_range(100..4000))).await,
    }
    if during_stop {
        // A graceful stop begun (listeners closed, in-flight work draining, undelivered
        // approvals being reversed) and cut short: the operator's `kill -9` after SIGTERM.
        common::sigterm(&switch.child);
        tokio::time::sleep(Duration::from_millis(rng.random_range(0..1500))).await;
    }
    let reached = switch.reached.load(Ordering::SeqCst);
    switch.kill().await;
    sending.stop().await;
    reached
}

/// Run the crash rounds (each point, then rounds for points not reached yet); returns the
/// points reached.
async fn crash_rounds(
    w: &Arc<World>,
    terminals: &Terminals,
    rounds: usize,
    rng: &mut StdRng,
) -> Vec<String> {
    let mut reached = Vec::new();
    let started = std::time::Instant::now();
    let mut plans: Vec<Option<String>> = (0..rounds).map(|r| crash_plan(r, rng)).collect();
    // A point not reached in its rounds gets more, armed at its first passage.
    let mut retries = 0;
    let mut round = 0;
    while round < plans.len() {
        let plan = plans[round].clone();
        let cut_gift = round % 4 == 1;
        // Every other round, the kill comes during a graceful stop (SIGTERM first).
        let during_stop = round % 2 == 1;
        if crash_round(w, terminals, plan.as_deref(), cut_gift, during_stop, rng).await {
            reached.push(plan.clone().unwrap_or_default());
        }
        eprintln!(
            "round {round}: {plan:?}{}{} at {:?}",
            if cut_gift { ", gift link cut" } else { "" },
            if during_stop {
                ", killed while stopping"
            } else {
                ""
            },
            started.elapsed()
        );
        round += 1;
        if round == plans.len() && retries < 3 {
            retries += 1;
            for (name, _) in CRASH_POINTS {
                if !reached.iter().any(|r| r.starts_with(&format!("{name}:"))) {
                    plans.push(Some(format!("{name}:1")));
                }
            }
        }
    }
    reached
}

/// After the last restart: completions and reversals that got no answer are repeated until
/// they get one, what got no answer (purchases, refunds) is reversed, and some answered
/// requests are repeated (they must get the same answer).
async fn settle(w: &World, outcomes: &mut [Outcome]) -> Result<(), String> {
    let mut client = w.terminal().await.ok_or("no connection")?;
    for o in outcomes.iter_mut() {
        if let Some((c, answer @ None)) = &mut o.completion {
            let mut again = c.clone();
            again.set_mti(Mti::new(b"0221").unwrap());
            *answer = Some(client.call(&again, ANSWER_WAIT).await?);
        }
        if let Some((r, answer @ None)) = &mut o.reversal {
            *answer = Some(client.call(r, ANSWER_WAIT).await?);
        }
    }
    let mut stan = 990_000u64;
    let unanswered = outcomes.iter().flat_map(|o| {
        let purchase = o.answer.is_none().then_some(&o.request);
        let refunds = o
            .refunds
            .iter()
            .filter(|r| r.answer.is_none())
            .map(|r| &r.request);
        purchase.into_iter().chain(refunds)
    });
    for request in unanswered {
        stan += 1;
        let reversal = common::reversal_of(request, stan, &cyberswitch::clock::transmission_time());
        let a = client.call(&reversal, ANSWER_WAIT).await?;
        if !matches!(code(&a), "00" | "25") {
            return Err(format!("terminal reversal answered {}", code(&a)));
        }
    }
    let answered: Vec<&Outcome> = outcomes.iter().filter(|o| o.answer.is_some()).collect();
    for o in answered.iter().step_by((answered.len() / 40).max(1)) {
        let again = client.call(&o.request, ANSWER_WAIT).await?;
        let first = o.answer.as_ref().unwrap();
        if code(&again) != code(first) || again.get(38) != first.get(38) {
            return Err(format!(
                "retransmission answered {} (auth {:?}), the original {} (auth {:?})",
                code(&again),
                again.get(38),
                code(first),
                first.get(38)
            ));
        }
    }
    Ok(())
}

async fn drain(w: &World) -> Result<(), String> {
    for _ in 0..300 {
        if w.saf_depth().await == Some(0.0) {
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    Err(format!(
        "queue not drained: depth {:?}",
        w.saf_depth().await
    ))
}

/// Where money sits: each moves by what the terminals saw.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
enum Target {
    /// A remote wallet account (units).
    Wallet(String),
    /// A hosted points account, by its prepaid card's id (points).
    Points(String),
    /// Bulk card `i`'s total at the acquirer.
    Credit(usize),
    /// A hosted anonymous card, by id.
    Hosted(String),
}

impl Target {
    /// Where a leg named `name` (issuer or link, as `LG` names it) of a request on `card` sits.
    fn of(w: &World, card: CardRef, name: &str) -> Option<Target> {
        match (card, name) {
            (CardRef::Bulk(i), "EMONEY") => Some(Target::Wallet(w.cards[i].emoney.clone())),
            (CardRef::Bulk(i), "GIFT") => Some(Target::Wallet(w.cards[i].gift.clone())),
            (CardRef::Bulk(i), "MILEAGE") => Some(Target::Wallet(w.cards[i].mileage.clone())),
            (CardRef::Bulk(i), "CYBERPOINTS") => {
                let k = points_card(i)?;
                Some(Target::Points(w.hosted().points.get(k)?.clone()))
            }
            (CardRef::Bulk(i), "acq1") => Some(Target::Credit(i)),
            (CardRef::Anon(j), "hosted") => Some(Target::Hosted(w.hosted().anon.get(j)?.clone())),
            _ => None,
        }
    }

    fn card(&self, w: &World) -> Option<CardRef> {
        let hosted = w.hosted();
        match self {
            Target::Wallet(a) => w
                .cards
                .iter()
                .position(|c| [&c.emoney, &c.gift, &c.mileage].contains(&a))
                .map(CardRef::Bulk),
            Target::Points(id) => hosted
                .points
                .iter()
                .position(|p| p == id)
                .map(|k| CardRef::Bulk(30 + k)),
            Target::Credit(i) => Some(CardRef::Bulk(*i)),
            Target::Hosted(id) => hosted.anon.iter().position(|a| a == id).map(CardRef::Anon),
        }
    }

    /// What left it (units taken less units given back), as its holder reads it now.
    fn moved(&self, w: &World, hosted: &HashMap<String, (i64, i64)>) -> Result<i64, String> {
        let ids = w.hosted();
        match self {
            Target::Wallet(a) => {
                let sim = match &a[..3] {
                    "LE-" => "EMONEY",
                    "LG-" => "GIFT",
                    _ => "MILEAGE",
                };
                let balance = w.sim(sim).balance(a).ok_or(format!("{a}: no account"))?;
                Ok(w.openings[a] - balance)
            }
            Target::Credit(i) => Ok(w.sim("ACQ1").card_total(&w.cards[*i].pan)),
            Target::Hosted(id) => {
                let (posted, available) = hosted[id];
                if posted != available {
                    return Err(format!(
                        "{id}: {} held and never completed",
                        posted - available
                    ));
                }
                Ok(ANON_DENOMINATION - available)
            }
            Target::Points(id) => {
                let k = ids.points.iter().position(|p| p == id).unwrap();
                Ok(ids.points_opening[k] - hosted[id].1)
            }
        }
    }

    /// Every place money sits in this world.
    fn all(w: &World) -> Vec<Target> {
        let mut all = Vec::new();
        for (i, c) in w.cards.iter().enumerate() {
            for a in [&c.emoney, &c.gift, &c.mileage] {
                all.push(Target::Wallet(a.clone()));
            }
            all.push(Target::Credit(i));
        }
        all.extend(w.hosted().points.iter().cloned().map(Target::Points));
        all.extend(w.hosted().anon.iter().cloned().map(Target::Hosted));
        all
    }
}

/// An account whose money differs from what the terminals saw.
#[derive(Debug)]
struct Wrong {
    target: Target,
    moved: i64,
    expected: i64,
}

/// What the money check found.
#[derive(Debug, Default)]
struct Money {
    wrong: Vec<Wrong>,
    /// Requests wrong on their own (legs not adding up, a refund beyond its purchase …).
    errors: Vec<String>,
    /// What was seen, to show the run meant something.
    stats: BTreeMap<String, usize>,
    /// The failure's explanation (empty when all is right).
    report: String,
}

impl Money {
    fn count(&mut self, what: impl Into<String>) {
        *self.stats.entry(what.into()).or_default() += 1;
    }
    fn ok(&self) -> Result<(), String> {
        if self.wrong.is_empty() && self.errors.is_empty() {
            Ok(())
        } else {
            Err(self.report.clone())
        }
    }
}

fn describe(o: &Outcome) -> String {
    let answered = |a: &Option<OwnedMessage>| {
        a.as_ref().map_or("no answer".to_string(), |a| {
            format!(
                "{} {}",
                code(a),
                String::from_utf8_lossy(a.get(48).unwrap_or(b""))
            )
        })
    };
    let mut s = format!(
        "  {} terminal {} stan {} f7 {} amount {} → {}",
        o.request.mti(),
        text(&o.request, 41),
        text(&o.request, 11),
        text(&o.request, 7),
        amount_of(&o.request),
        answered(&o.answer)
    );
    if let Some((c, a)) = &o.completion {
        s.push_str(&format!(
            "\n    completion {} → {}",
            amount_of(c),
            answered(a)
        ));
    }
    if let Some((_, a)) = &o.reversal {
        s.push_str(&format!("\n    reversal → {}", answered(a)));
    }
    for r in &o.refunds {
        s.push_str(&format!(
            "\n    refund {} by {:?} (left {}) stan {} → {}",
            amount_of(&r.request),
            r.how,
            r.left,
            text(&r.request, 11),
            answered(&r.answer)
        ));
    }
    s
}

/// Might another transaction at `o`'s terminal carry `o`'s approval code: one answered with
/// Was a refund of `o` sent before `r` declined or left unanswered (its legs, given and
/// then taken back, may still be on their way back upstream)?
fn earlier_refund_undone(o: &Outcome, r: &Refund) -> bool {
    o.refunds
        .iter()
        .take_while(|e| !std::ptr::eq(*e, r))
        .any(|e| e.answer.as_ref().is_none_or(|a| !approved(a)))
}

/// it, or one whose answer its terminal never saw?
fn shared_approval_code(outcomes: &[Outcome], o: &Outcome) -> bool {
    let auth = o.answer.as_ref().map(|a| text(a, 38));
    let terminal = text(&o.request, 41);
    outcomes.iter().any(|other| {
        !std::ptr::eq(other, o)
            && text(&other.request, 41) == terminal
            && match &other.answer {
                None => true,
                Some(a) => approved(a) && Some(text(a, 38)) == auth,
            }
    })
}

/// The money invariants: every account moved what the terminals saw, and every approval and
/// refund is right on its own.
fn check_money(w: &World, outcomes: &[Outcome], hosted: &HashMap<String, (i64, i64)>) -> Money {
    let mut m = Money::default();
    let mut expected: HashMap<Target, i64> = HashMap::new();
    for o in outcomes {
        let kind = match o.card {
            CardRef::Bulk(_) => "bulk",
            CardRef::Anon(_) => "hosted card",
        };
        let Some(a) = &o.answer else {
            m.count("unanswered (reversed by the terminal)");
            continue;
        };
        m.count(format!("{kind} {} answered {}", o.request.mti(), code(a)));
        if !approved(a) {
            continue;
        }
        if let Some((_, answer)) = &o.reversal {
            match answer.as_ref().map(code) {
                Some("00") => {
                    m.count("reversed by the terminal");
                    continue;
                }
                other => m.errors.push(format!(
                    "a terminal's reversal of an approval answered {other:?}:\n{}",
                    describe(o)
                )),
            }
        }
        let amount = approved_amount(&o.request, a);
        let purchase_legs = legs(o.card, &o.request, a);
        let total: i64 = purchase_legs.iter().map(|l| l.1).sum();
        if total != amount {
            m.errors.push(format!(
                "legs sum to {total}, {amount} approved:\n{}",
                describe(o)
            ));
        }
        let mut taken: HashMap<Target, i64> = HashMap::new();
        let mut credit = None;
        for (name, _, units) in &purchase_legs {
            match Target::of(w, o.card, name) {
                Some(t) => {
                    if matches!(t, Target::Credit(_) | Target::Hosted(_)) {
                        credit = Some(t.clone());
                    }
                    *taken.entry(t).or_default() += units;
                }
                None => m.errors.push(format!("a leg at {name}?\n{}", describe(o))),
            }
        }
        let mut refundable = amount;
        // A completed authorization leaves with the acquirer (or hosted card) only what the
        // completion took.
        if let Some((completion, answer)) = &o.completion {
            match (answer.as_ref().map(code), &credit) {
                (Some("00"), Some(t)) => {
                    let released = amount - amount_of(completion);
                    *taken.entry(t.clone()).or_default() -= released;
                    refundable = amount_of(completion);
                    m.count("completed");
                }
                (other, _) => m
                    .errors
                    .push(format!("completion answered {other:?}:\n{}", describe(o))),
            }
        }
        let mut given: HashMap<Target, i64> = HashMap::new();
        let mut given_total = 0;
        for r in &o.refunds {
            let asked = amount_of(&r.request);
            let Some(answer) = &r.answer else {
                m.count("refund unanswered (reversed by the terminal)");
                continue;
            };
            m.count(format!("refund by {:?} answered {}", r.how, code(answer)));
            match code(answer) {
                "00" => {
                    let given_legs = legs(o.card, &r.request, answer);
                    let sum: i64 = given_legs.iter().map(|l| l.1).sum();
                    if sum != asked {
                        m.errors.push(format!(
                            "a refund of {asked} lists legs for {sum}:\n{}",
                            describe(o)
                        ));
                    }
                    if asked > r.left {
                        m.errors.push(format!(
                            "a refund of {asked} approved with {} left:\n{}",
                            r.left,
                            describe(o)
                        ));
                    }
                    given_total += asked;
                    for (name, _, units) in given_legs {
                        match Target::of(w, o.card, &name) {
                            Some(t) if taken.contains_key(&t) => {
                                *given.entry(t).or_default() += units;
                            }
                            _ => m.errors.push(format!(
                                "a refund gave back at {name}, where its purchase took nothing:\n{}",
                                describe(o)
                            )),
                        }
                    }
                }
                "13" if asked > r.left => {}
                // A host still counts an earlier refund of this purchase that was declined or
                // never answered while the switch's reversal of its leg waits in the queue (a
                // link cut): it refuses 13 until that reversal lands. Nothing is given.
                "13" if earlier_refund_undone(o, r) => {
                    m.count("refund refused 13 by a host still taking back an earlier one");
                }
                // An approval code another purchase at this terminal shares (or may share: one
                // whose answer the terminal never saw) names no one purchase: 25, not a guess.
                "25" if r.how == How::Approval && shared_approval_code(outcomes, o) => {
                    m.count("refund by an approval code several purchases share answered 25");
                }
                // Declined as a whole (a link down, a host refusing): nothing given.
                "91" | "96" => {}
                other => m.errors.push(format!(
                    "a refund of {asked} by {:?} with {} left answered {other}:\n{}",
                    r.how,
                    r.left,
                    describe(o)
                )),
            }
        }
        if given_total > refundable {
            m.errors.push(format!(
                "refunds gave back {given_total} of {refundable}:\n{}",
                describe(o)
            ));
        }
        for (t, units) in &given {
            if *units > taken.get(t).copied().unwrap_or(0) {
                m.errors.push(format!(
                    "refunds gave back {units} at {t:?}, more than the purchase took there:\n{}",
                    describe(o)
                ));
            }
        }
        for (t, units) in taken {
            *expected.entry(t).or_default() += units;
        }
        for (t, units) in given {
            *expected.entry(t).or_default() -= units;
        }
    }
    for t in Target::all(w) {
        let want = expected.get(&t).copied().unwrap_or(0);
        match t.moved(w, hosted) {
            Ok(moved) if moved == want => {}
            Ok(moved) => m.wrong.push(Wrong {
                target: t,
                moved,
                expected: want,
            }),
            Err(e) => m.errors.push(e),
        }
    }
    if !m.wrong.is_empty() || !m.errors.is_empty() {
        let mut report = String::from("money invariants broken:\n");
        for e in &m.errors {
            report.push_str(e);
            report.push('\n');
        }
        for wrong in &m.wrong {
            report.push_str(&format!(
                "{:?}: moved {}, the terminals saw {}\n",
                wrong.target, wrong.moved, wrong.expected
            ));
            let card = wrong.target.card(w);
            for o in outcomes.iter().filter(|o| Some(o.card) == card) {
                report.push_str(&describe(o));
                report.push('\n');
            }
        }
        m.report = report;
    }
    m
}

/// The journal after the last run: nothing open, nothing queued, nothing dead. Returns the
/// keys of what is left open.
fn check_journal(w: &World) -> Result<(), (String, Vec<String>)> {
    let db = store::open_read_only(&w.data_dir()).map_err(|e| (e, Vec::new()))?;
    let open: Vec<String> = store::scan(&db, Cf::OpenTxns, b"")
        .map_err(|e| (e, Vec::new()))?
        .into_iter()
        .map(|(k, _)| String::from_utf8_lossy(&k).into_owned())
        .collect();
    for (cf, what) in [(Cf::Saf, "queued reversals"), (Cf::SafDead, "dead letters")] {
        let n = store::scan(&db, cf, b"")
            .map_err(|e| (e, Vec::new()))?
            .len();
        if n != 0 {
            return Err((format!("{n} {what} left in the journal"), open));
        }
    }
    if open.is_empty() {
        Ok(())
    } else {
        Err((format!("{} open transactions left", open.len()), open))
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn kill_9_at_any_point_loses_nothing_and_applies_nothing_twice() {
    let _alone = ONE_AT_A_TIME.lock().await;
    let w = Arc::new(world(60).await);
    let setup = w.start_switch(None, false).await;
    w.seed_hosted().await;
    setup.kill().await;

    let rounds = 3 * (CRASH_POINTS.len() + 1);
    let mut rng = StdRng::seed_from_u64(seed());
    let terminals = Terminals::default();
    let reached = crash_rounds(&w, &terminals, rounds, &mut rng).await;
    // The last run is not killed under load: a few seconds of it let every answer that comes
    // after its link's timeout arrive (late answers), then the terminals settle.
    let started = std::time::Instant::now();
    w.gift_relay.restore();
    let last = w.start_switch(None, false).await;
    let sending = terminals.start(&w, &mut rng);
    tokio::time::sleep(TAIL).await;
    sending.stop().await;
    let mut outcomes = terminals.outcomes();
    let count = |p: &str| {
        reached
            .iter()
            .filter(|r| r.starts_with(&format!("{p}:")))
            .count()
    };
    eprintln!(
        "{} requests, {} approved, {} unanswered; crash points reached: {reached:?}",
        outcomes.len(),
        outcomes
            .iter()
            .filter(|o| o.answer.as_ref().is_some_and(approved))
            .count(),
        outcomes.iter().filter(|o| o.answer.is_none()).count()
    );
    for (point, _) in CRASH_POINTS {
        assert!(
            count(point) >= 1,
            "the crash point {point} was never reached"
        );
    }
    settle(&w, &mut outcomes).await.unwrap();
    eprintln!("settled at {:?}", started.elapsed());
    drain(&w).await.unwrap();
    eprintln!("drained at {:?}", started.elapsed());
    let hosted = w.hosted_snapshot().await;
    // The last run's own counters: answers came after their timeout (slow refunds among
    // them), and refund legs went through as advices.
    let late = w.metric("cyberswitch_late_answers_total").await;
    let advices = w
        .metric("cyberswitch_refund_advices_acknowledged_total")
        .await;
    last.kill().await;
    eprintln!("last run: {late:?} late answers, {advices:?} refund advices acknowledged");
    assert!(
        late.is_some_and(|n| n >= 1.0),
        "no late answer in the last run"
    );
    assert!(
        advices.is_some_and(|n| n >= 1.0),
        "no refund advice in the last run"
    );

    let money = check_money(&w, &outcomes, &hosted);
    eprintln!("seen: {:#?}", money.stats);
    let journal = check_journal(&w);
    // The run meant something: each kind of request was made and answered as it should.
    let seen = |what: &str| money.stats.get(what).copied().unwrap_or(0);
    let never_seen: Vec<&str> = [
        "refund by Field90 answered 00",
        "refund by Rrn answered 00",
        "refund by Approval answered 00",
        "completed",
        "reversed by the terminal",
        "hosted card 0200 answered 00",
        "hosted card 0200 answered 51",
        "bulk 0200 answered 10",
    ]
    .into_iter()
    .filter(|what| seen(what) == 0)
    .collect();
    w.keep_evidence(money.ok().is_err() || journal.is_err() || !never_seen.is_empty());
    money.ok().unwrap();
    journal.unwrap();
    assert!(
        never_seen.is_empty(),
        "never seen: {never_seen:?}; seen {:#?}",
        money.stats
    );
    assert!(
        money.stats.keys().any(|k| k.ends_with("answered 13")),
        "no refund above what was left was tried"
    );

    let logs = w.logs.lock().unwrap().clone();
    let mut pans: Vec<&str> = w.cards.iter().map(|c| c.pan.as_str()).collect();
    pans.extend(w.anon_pans.iter().map(String::as_str));
    pans.extend(w.points_pans.iter().map(String::as_str));
    let files = common::scan_for_card_numbers(&w.data_dir(), &pans, &logs).unwrap();
    assert!(files > 3, "the scan looked at {files} files only");

    // `cyberswitch journal find` prints the transaction, masked.
    let approved = outcomes
        .iter()
        .filter(|o| matches!(o.card, CardRef::Bulk(_)))
        .filter_map(|o| o.answer.as_ref())
        .find(|a| code(a) == "00")
        .unwrap();
    let rrn = String::from_utf8_lossy(approved.get(37).unwrap()).into_owned();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_cyberswitch"))
        .args(["journal", "find", "--rrn", &rrn, "--data-dir"])
        .arg(w.data_dir())
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(text.contains("942000******"), "{text}");
    assert!(!pans.iter().any(|p| text.contains(p)), "{text}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn without_recovery_the_harness_finds_money_moved() {
    let _alone = ONE_AT_A_TIME.lock().await;
    let w = Arc::new(world(10).await);
    // Legs wait for their record here: killed at the crash point, the gift leg's record is
    // then on disk for certain (sent ahead, it might not be yet, and the next start would
    // reverse it blind — which skipping recovery skips too).
    let toml = std::fs::read_to_string(&w.config).unwrap();
    assert!(toml.contains("legs_ahead = 64"));
    std::fs::write(&w.config, toml.replace("legs_ahead = 64", "legs_ahead = 0")).unwrap();
    // One split purchase on card 1: 4,000 from its gift wallet, then 6,000 by credit. The
    // switch is killed between the two: the gift debit is approved upstream, the terminal
    // never hears of it.
    let switch = w.start_switch(Some("wallet-credit:1"), false).await;
    let c = &w.cards[1];
    let stan = 4242;
    let mut request = terminal_request(b"0200", "NORC0001", stan);
    request
        .set(2, c.pan.as_bytes())
        .set(3, b"000000")
        .set_number(4, 10_000, 12);
    let request = common::with_tags(request, &[("WS", &c.gift), ("WC", "4000")]);
    let mut client = w.terminal().await.unwrap();
    // The gift link must be up first (a loaded machine can be slow to connect it): with it
    // down the gift leg is refused and the crash point never reached. A balance inquiry
    // moves no money and shows the wallet `ok` once its issuer answers.
    let mut probe = terminal_request(b"0100", "NORC0001", 4000);
    probe
        .set(2, c.pan.as_bytes())
        .set(3, b"310000")
        .set_number(4, 0, 12);
    let mut up = false;
    for i in 0..100u32 {
        probe.set_number(11, u64::from(4000 + i), 6);
        if let Ok(a) = client.call(&probe, ANSWER_WAIT).await {
            if common::tags(&a, "WL")
                .iter()
                .any(|w| w.starts_with(&format!("{}|", c.gift)) && w.ends_with("|ok"))
            {
                up = true;
                break;
            }
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(up, "the gift wallet never answered an inquiry");
    client.send(&request).await.unwrap();
    tokio::time::timeout(Duration::from_secs(30), switch.crashed.notified())
        .await
        .expect("crash point reached");
    switch.kill().await;
    let mut outcomes = vec![Outcome {
        card: CardRef::Bulk(1),
        request: request.clone(),
        answer: None,
        completion: None,
        reversal: None,
        refunds: Vec::new(),
        refundable: 0,
    }];

    // Without recovery, the terminal's reversal finds the purchase open (25), and nothing
    // gives the gift leg back.
    let last = w.start_switch(None, true).await;
    settle(&w, &mut outcomes).await.unwrap();
    drain(&w).await.unwrap();
    last.kill().await;
    let money = check_money(&w, &outcomes, &HashMap::new());
    assert!(money.errors.is_empty(), "{}", money.report);
    let wrong: Vec<(Target, i64)> = money
        .wrong
        .iter()
        .map(|x| (x.target.clone(), x.moved - x.expected))
        .collect();
    assert_eq!(
        wrong,
        [(Target::Wallet(c.gift.clone()), 4_000)],
        "{}",
        money.report
    );
    // The purchase is the one transaction left open.
    let (_, open) = check_journal(&w).expect_err("the purchase is left open");
    let time = text(&request, 7);
    assert_eq!(open, [format!("terminals|2|{stan:06}|NORC0001|{time}")]);
}
