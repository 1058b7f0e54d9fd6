//! Crash harness (SPEC §9): the switch runs as a child process (`cyberswitch run`) under
//! concurrent terminal load against the real simulators; it is killed with SIGKILL at random
//! moments and at named points of the flows (a leg recorded but not sent, between the wallet
//! legs and the credit leg, between the journal write and the answer, a reversal
//! acknowledged but not removed, a completion queued but not acknowledged to its terminal),
//! restarted, and finally left to drain its queue. A quarter of the requests are
//! authorizations, completed (0220, repeated as 0221 until acknowledged) for part of their
//! credit. Then:
//!
//! - every approval a terminal received is applied exactly once at the simulators, and its
//!   legs sum to the amount; a completed authorization's credit is what its completion took;
//! - every transaction a terminal did not see approved has moved no money (the terminals
//!   reverse what they got no answer to, as terminals do);
//! - retransmissions of answered requests after the restarts get the same answer and no
//!   second effect;
//! - nothing is left open or queued in the journal;
//! - no file of the switch's data directory, and nothing it logged, holds a card number.
//!
//! A second test starts the last run with recovery disabled (test-only switch) and checks that
//! the same invariant check then fails.

#![cfg(feature = "fault-injection")]

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::Stdio;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

mod common;

use common::{amount_of, completion_of, seed};

use cyberswitch::demo::{self, BulkCard, DemoPorts};
use cyberswitch::directory::{CardKey, Directory};
use cyberswitch::iso8583::tlv::{parse_ascii_tlv, SwitchData};
use cyberswitch::iso8583::{Mti, OwnedMessage, Spec};
use cyberswitch::net::client::Client;
use cyberswitch::sim::{Behaviour, Simulator};
use cyberswitch::store::{self, Cf};
use cyberswitch::switch::testhooks::{CRASH_POINT_VAR, SKIP_RECOVERY_VAR};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::process::{Child, Command};
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

const WALLET_BALANCE: i64 = 100_000_000;
const TERMINALS: usize = 8;
const ANSWER_WAIT: Duration = Duration::from_secs(8);

/// Simulators in this process, the switch's data directory and configuration on disk.
struct World {
    dir: tempfile::TempDir,
    stop: CancellationToken,
    sims: Vec<Arc<Simulator>>,
    cards: Vec<BulkCard>,
    config: PathBuf,
    switch: SocketAddr,
    metrics: SocketAddr,
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

fn free_port() -> SocketAddr {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap()
}

async fn world(cards: usize) -> World {
    let dir = tempfile::tempdir().unwrap();
    let stop = CancellationToken::new();
    let cards = demo::bulk_cards(cards);
    let any = SocketAddr::from(([127, 0, 0, 1], 0));
    let mut ports = DemoPorts {
        switch: free_port(),
        metrics: Some(free_port()),
        emoney: any,
        gift: any,
        mileage: any,
        acquirer: any,
        admin: any,
    };
    let mut configs = demo::sim_configs(dir.path(), &ports);
    demo::add_bulk_accounts(&mut configs, &cards, WALLET_BALANCE);
    // The first card's credit is always declined: its wallet legs must be compensated.
    if let Some(acq) = configs.iter_mut().find(|c| c.name == "ACQ1") {
        acq.behaviours.push(Behaviour {
            target: cards[0].pan.clone(),
            decline: Some("05".into()),
            ..Behaviour::default()
        });
    }
    let sims = demo::start_sims(configs, &mut ports, &stop).await.unwrap();
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
        dir,
        stop,
        sims,
        cards,
        config,
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

    async fn start_switch(&self, crash_point: Option<&str>, skip_recovery: bool) -> Switch {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_cyberswitch"));
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

    /// Sum of the store-and-forward depth gauges, from the switch's /metrics.
    async fn saf_depth(&self) -> Option<f64> {
        let mut s = tokio::net::TcpStream::connect(self.metrics).await.ok()?;
        s.write_all(b"GET /metrics HTTP/1.0\r\nHost: x\r\n\r\n")
            .await
            .ok()?;
        let mut body = String::new();
        s.read_to_string(&mut body).await.ok()?;
        Some(
            body.lines()
                .filter(|l| l.starts_with("cyberswitch_saf_depth{"))
                .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
                .sum(),
        )
    }
}

impl Switch {
    /// SIGKILL, and wait for the process to be gone.
    async fn kill(mut self) {
        let _ = self.child.start_kill();
        let _ = self.child.wait().await;
    }
}

/// One request a terminal sent, and what it got.
#[derive(Clone)]
struct Outcome {
    card: usize,
    request: OwnedMessage,
    answer: Option<OwnedMessage>,
    /// An approved authorization's completion (0220) and its answer, if the terminal sent one.
    completion: Option<(OwnedMessage, Option<OwnedMessage>)>,
}

/// What the acquirer's legs of an answer add up to (the credit part of a split tender).
fn credit_legs(answer: &OwnedMessage) -> i64 {
    parse_ascii_tlv(answer.get(48).unwrap_or(b""), 2, 3)
        .unwrap()
        .iter()
        .filter(|e| e.tag == b"LG")
        .map(|e| String::from_utf8_lossy(e.value).into_owned())
        .filter(|lg| !matches!(lg.split('|').nth(1), Some("EMONEY" | "GIFT" | "MILEAGE")))
        .map(|lg| lg.split('|').nth(2).unwrap().parse::<i64>().unwrap())
        .sum()
}

fn code(m: &OwnedMessage) -> &str {
    std::str::from_utf8(m.get(39).unwrap_or(b"")).unwrap_or("")
}

/// A purchase (0200), or one time in four an authorization (0100) to be completed.
fn purchase(w: &World, rng: &mut StdRng, terminal: &str, stan: u32) -> (usize, OwnedMessage) {
    let card = rng.random_range(0..w.cards.len());
    let c = &w.cards[card];
    let amount = rng.random_range(1..=400u64) * 100;
    let mti = if rng.random_range(0..4) == 0 {
        b"0100"
    } else {
        b"0200"
    };
    let mut m = OwnedMessage::new(Mti::new(mti).unwrap());
    m.set(2, c.pan.as_bytes())
        .set(3, b"000000")
        .set_number(4, amount, 12)
        .set(7, cyberswitch::clock::transmission_time().as_bytes())
        .set_number(11, u64::from(stan), 6)
        .set(12, cyberswitch::clock::local_time().as_bytes())
        .set(13, cyberswitch::clock::local_date().as_bytes())
        .set(41, terminal.as_bytes())
        .set(42, b"MERCHANT0000001")
        .set(49, b"410");
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
    if !sd.is_empty() {
        m.set(48, sd.as_bytes());
    }
    (card, m)
}

/// One terminal: purchases one after the other until the connection dies or `stop`.
async fn terminal_load(
    w: Arc<World>,
    id: String,
    stans: Arc<AtomicU32>,
    outcomes: Arc<Mutex<Vec<Outcome>>>,
    stop: CancellationToken,
    seed: u64,
) {
    let mut rng = StdRng::seed_from_u64(seed);
    let Some(mut client) = w.terminal().await else {
        return;
    };
    while !stop.is_cancelled() {
        let stan = stans.fetch_add(1, Ordering::Relaxed) % 999_999 + 1;
        let (card, request) = purchase(&w, &mut rng, &id, stan);
        let answer = match client.send(&request).await {
            Ok(()) => client.recv(ANSWER_WAIT).await.ok(),
            Err(_) => None,
        };
        let mut dead = answer.is_none();
        // An approved authorization with credit in it is completed for part of the credit.
        let credit = answer.as_ref().filter(|a| code(a) == "00").map(credit_legs);
        let completion = match credit {
            Some(credit) if request.mti().as_bytes() == b"0100" && credit > 0 => {
                let taken = amount_of(&request) - credit + rng.random_range(1..=credit);
                let stan = stans.fetch_add(1, Ordering::Relaxed) % 999_999 + 1;
                let c = completion_of(&request, taken, stan);
                let a = match client.send(&c).await {
                    Ok(()) => client.recv(ANSWER_WAIT).await.ok(),
                    Err(_) => None,
                };
                dead = a.is_none();
                Some((c, a))
            }
            _ => None,
        };
        outcomes.lock().unwrap().push(Outcome {
            card,
            request,
            answer,
            completion,
        });
        if dead {
            return;
        }
    }
}

/// What a round kills at: a named point (armed as `name:n`) or a random moment.
fn crash_plan(round: usize, rng: &mut StdRng) -> Option<String> {
    // How many times the point is passed before it fires: reversals are rarer than legs.
    let points = [
        ("leg-sent", 40),
        ("wallet-credit", 40),
        ("journal-answer", 40),
        ("saf-acked", 4),
        // About one request in eight is a completion (an authorization with credit in it).
        ("completion-queued", 6),
    ];
    match round % (points.len() + 1) {
        i if i == points.len() => None,
        i => Some(format!(
            "{}:{}",
            points[i].0,
            rng.random_range(1..=points[i].1)
        )),
    }
}

/// Run `rounds` crash rounds; returns every outcome and how many crash points were reached.
async fn crash_rounds(w: &Arc<World>, rounds: usize, seed: u64) -> (Vec<Outcome>, Vec<String>) {
    let mut rng = StdRng::seed_from_u64(seed);
    let outcomes = Arc::new(Mutex::new(Vec::new()));
    let stans = Arc::new(AtomicU32::new(1));
    let mut reached = Vec::new();
    let started = std::time::Instant::now();
    for round in 0..rounds {
        let plan = crash_plan(round, &mut rng);
        let switch = w.start_switch(plan.as_deref(), false).await;
        let stop = CancellationToken::new();
        let load: Vec<_> = (0..TERMINALS)
            .map(|t| {
                tokio::spawn(terminal_load(
                    w.clone(),
                    format!("CRSH{t:04}"),
                    stans.clone(),
                    outcomes.clone(),
                    stop.clone(),
                    rng.random(),
                ))
            })
            .collect();
        match &plan {
            Some(_) => {
                let _ =
                    tokio::time::timeout(Duration::from_secs(10), switch.crashed.notified()).await;
            }
            None => tokio::time::sleep(Duration::from_millis(rng.random_range(100..1500))).await,
        }
        if switch.reached.load(Ordering::SeqCst) {
            reached.push(plan.clone().unwrap_or_default());
        }
        eprintln!("round {round}: {plan:?} at {:?}", started.elapsed());
        switch.kill().await;
        stop.cancel();
        for t in load {
            let _ = t.await;
        }
    }
    let all = outcomes.lock().unwrap().clone();
    (all, reached)
}

/// After the last restart: terminals reverse what they got no answer to, and repeat some
/// answered requests (which must get the same answer).
async fn settle(w: &World, outcomes: &mut [Outcome]) -> Result<(), String> {
    let mut clients: HashMap<String, Client> = HashMap::new();
    let mut stan = 990_000u64;
    // An advice is repeated until it is acknowledged, as terminals do.
    let mut client = w.terminal().await.ok_or("no connection")?;
    for (c, answer) in outcomes.iter_mut().filter_map(|o| o.completion.as_mut()) {
        if answer.is_none() {
            let mut again = c.clone();
            again.set_mti(Mti::new(b"0221").unwrap());
            *answer = Some(client.call(&again, ANSWER_WAIT).await?);
        }
    }
    for o in outcomes.iter().filter(|o| o.answer.is_none()) {
        let terminal = String::from_utf8_lossy(o.request.get(41).unwrap()).into_owned();
        if !clients.contains_key(&terminal) {
            clients.insert(terminal.clone(), w.terminal().await.ok_or("no connection")?);
        }
        let client = clients.get_mut(&terminal).unwrap();
        stan += 1;
        let reversal =
            common::reversal_of(&o.request, stan, &cyberswitch::clock::transmission_time());
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

/// The money invariants, checked at the simulators' ledgers.
fn check_money(w: &World, outcomes: &[Outcome]) -> Result<(), String> {
    let mut units: HashMap<String, i64> = HashMap::new();
    let mut credit: HashMap<usize, i64> = HashMap::new();
    for o in outcomes {
        let Some(a) = &o.answer else { continue };
        if code(a) != "00" {
            continue;
        }
        let c = &w.cards[o.card];
        let amount = amount_of(&o.request);
        // A completed authorization leaves at the acquirer only what the completion took.
        if let Some((completion, answer)) = &o.completion {
            match answer.as_ref().map(code) {
                Some("00") => {
                    *credit.entry(o.card).or_default() -= amount - amount_of(completion);
                }
                other => return Err(format!("completion answered {other:?}")),
            }
        }
        let mut legs_total = 0;
        for e in parse_ascii_tlv(a.get(48).unwrap_or(b""), 2, 3).unwrap() {
            if e.tag != b"LG" {
                continue;
            }
            let lg = String::from_utf8_lossy(e.value).into_owned();
            let parts: Vec<&str> = lg.split('|').collect();
            let leg_amount: i64 = parts[2].parse().unwrap();
            let leg_units: i64 = parts[3].parse().unwrap();
            legs_total += leg_amount;
            let account = match parts[1] {
                "EMONEY" => &c.emoney,
                "GIFT" => &c.gift,
                "MILEAGE" => &c.mileage,
                _ => {
                    *credit.entry(o.card).or_default() += leg_amount;
                    continue;
                }
            };
            *units.entry(account.clone()).or_default() += leg_units;
        }
        if legs_total != amount {
            return Err(format!("legs sum to {legs_total}, the amount is {amount}"));
        }
    }
    let mut wrong = Vec::new();
    for (i, c) in w.cards.iter().enumerate() {
        for (sim, account, opening) in [
            ("EMONEY", &c.emoney, WALLET_BALANCE),
            ("GIFT", &c.gift, WALLET_BALANCE),
            ("MILEAGE", &c.mileage, WALLET_BALANCE * 2),
        ] {
            let expected = opening - units.get(account).copied().unwrap_or(0);
            let actual = w.sim(sim).balance(account).unwrap_or(i64::MIN);
            if actual != expected {
                wrong.push(format!("{account}: balance {actual}, expected {expected}"));
            }
        }
        let expected = credit.get(&i).copied().unwrap_or(0);
        let actual = w.sim("ACQ1").card_total(&c.pan);
        if actual != expected {
            wrong.push(format!("card {i}: credit {actual}, expected {expected}"));
            // What the acquirer holds, and what the terminals were told, to explain it.
            for leg in w.sim("ACQ1").card_legs(&c.pan) {
                wrong.push(format!("  acquirer leg {leg:?}"));
            }
            for o in outcomes.iter().filter(|o| o.card == i) {
                let a = o.answer.as_ref();
                wrong.push(format!(
                    "  terminal {} stan {} f7 {} amount {} → {:?} {:?}",
                    String::from_utf8_lossy(o.request.get(41).unwrap_or(b"")),
                    String::from_utf8_lossy(o.request.get(11).unwrap_or(b"")),
                    String::from_utf8_lossy(o.request.get(7).unwrap_or(b"")),
                    String::from_utf8_lossy(o.request.get(4).unwrap_or(b"")),
                    a.map(|a| code(a).to_string()),
                    a.and_then(|a| a.get(48))
                        .map(|v| String::from_utf8_lossy(v).into_owned()),
                ));
            }
        }
    }
    if wrong.is_empty() {
        Ok(())
    } else {
        Err(format!("money invariants broken:\n{}", wrong.join("\n")))
    }
}

/// The journal after the last run: nothing open, nothing queued, nothing dead.
fn check_journal(w: &World) -> Result<(), String> {
    let db = store::open_read_only(&w.data_dir())?;
    for (cf, what) in [
        (Cf::OpenTxns, "open transactions"),
        (Cf::Saf, "queued reversals"),
        (Cf::SafDead, "dead letters"),
    ] {
        let n = store::scan(&db, cf, b"")?.len();
        if n != 0 {
            return Err(format!("{n} {what} left in the journal"));
        }
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn kill_9_at_any_point_loses_nothing_and_applies_nothing_twice() {
    let _alone = ONE_AT_A_TIME.lock().await;
    let w = Arc::new(world(60).await);
    let (mut outcomes, reached) = crash_rounds(&w, 30, seed()).await;
    let count = |p: &str| reached.iter().filter(|r| r.starts_with(p)).count();
    eprintln!(
        "{} requests, {} approved, {} unanswered; crash points reached: {reached:?}",
        outcomes.len(),
        outcomes
            .iter()
            .filter(|o| o.answer.as_ref().is_some_and(|a| code(a) == "00"))
            .count(),
        outcomes.iter().filter(|o| o.answer.is_none()).count()
    );
    let completions = outcomes.iter().filter(|o| o.completion.is_some()).count();
    eprintln!("{completions} authorizations completed");
    assert!(completions >= 1, "no authorization was completed");
    assert!(
        count("wallet-credit") >= 1,
        "never killed between wallet and credit legs"
    );
    assert!(
        count("journal-answer") >= 1,
        "never killed between journal write and answer"
    );
    assert!(
        count("leg-sent") >= 1,
        "never killed between recording a leg and sending it"
    );
    assert!(
        count("completion-queued") >= 1,
        "never killed between queueing a completion and acknowledging it"
    );

    let started = std::time::Instant::now();
    let last = w.start_switch(None, false).await;
    settle(&w, &mut outcomes).await.unwrap();
    eprintln!("settled at {:?}", started.elapsed());
    drain(&w).await.unwrap();
    eprintln!("drained at {:?}", started.elapsed());
    last.kill().await;

    check_money(&w, &outcomes).unwrap();
    check_journal(&w).unwrap();
    let logs = w.logs.lock().unwrap().clone();
    let pans: Vec<&str> = w.cards.iter().map(|c| c.pan.as_str()).collect();
    let files = common::scan_for_card_numbers(&w.data_dir(), &pans, &logs).unwrap();
    assert!(files > 3, "the scan looked at {files} files only");

    // `cyberswitch journal find` prints the transaction, masked.
    let approved = outcomes
        .iter()
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
    // Kill between the wallet legs and the credit leg: a wallet debit is approved upstream,
    // the terminal never hears of it.
    let outcomes = Arc::new(Mutex::new(Vec::new()));
    let stans = Arc::new(AtomicU32::new(1));
    let switch = w.start_switch(Some("wallet-credit:3"), false).await;
    let stop = CancellationToken::new();
    let load: Vec<_> = (0..TERMINALS)
        .map(|t| {
            tokio::spawn(terminal_load(
                w.clone(),
                format!("NORC{t:04}"),
                stans.clone(),
                outcomes.clone(),
                stop.clone(),
                t as u64,
            ))
        })
        .collect();
    tokio::time::timeout(Duration::from_secs(30), switch.crashed.notified())
        .await
        .expect("crash point reached");
    switch.kill().await;
    stop.cancel();
    for t in load {
        let _ = t.await;
    }
    let mut outcomes = outcomes.lock().unwrap().clone();

    let last = w.start_switch(None, true).await;
    settle(&w, &mut outcomes).await.unwrap();
    let _ = drain(&w).await;
    last.kill().await;
    let money = check_money(&w, &outcomes);
    assert!(money.is_err(), "without recovery the invariants must break");
    assert!(check_journal(&w).is_err(), "an open transaction is left");
}
