//! Crash harness, whole demo (SPEC §6, issue 20): `cyberswitch demo`, the switch and its
//! simulators in one process, runs as a child process under concurrent terminal load and is
//! killed with SIGKILL at random moments, then restarted on the same data directory, several
//! times. The last run settles (terminals reverse what they got no answer to and repeat
//! unacknowledged completions), drains its queue and is killed too. Then each simulator's data
//! directory must hold exactly the money the terminals saw approved: a simulator that
//! acknowledged a change before handing it to the operating system loses it here.
//!
//! Purchases use the load cards (`--load-cards`), whose wallets never run out: gift, e-money and
//! mileage wallets of their own, and split tender to the acquirer. A quarter are
//! authorizations, completed for part of their credit.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::process::Stdio;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

mod common;

use common::{amount_of, completion_of, seed};

use cyberswitch::demo::{self, BulkCard, DemoPorts, LOAD_BALANCE};
use cyberswitch::iso8583::tlv::{parse_ascii_tlv, SwitchData};
use cyberswitch::iso8583::{Mti, OwnedMessage, Spec};
use cyberswitch::net::client::Client;
use cyberswitch::sim::Simulator;
use cyberswitch::store::{self, Cf};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};
use tokio_util::sync::CancellationToken;

const CARDS: usize = 40;
const TERMINALS: usize = 8;
const KILLS: usize = 5;
const ANSWER_WAIT: Duration = Duration::from_secs(8);
/// Log lines kept for a failure's message.
const LOG_TAIL: usize = 60;

/// The data directory the demo runs on, and what the terminals saw.
struct Harness {
    dir: tempfile::TempDir,
    cards: Vec<BulkCard>,
    spec: Arc<Spec>,
    /// The last lines the demo wrote to stderr.
    logs: Arc<Mutex<Vec<String>>>,
}

/// A running demo process and where it listens (ports change with every start).
struct DemoProcess {
    child: Child,
    switch: SocketAddr,
    metrics: SocketAddr,
}

impl DemoProcess {
    /// SIGKILL, and wait for the process to be gone.
    async fn kill(mut self) {
        let _ = self.child.start_kill();
        let _ = self.child.wait().await;
    }

    async fn terminal(&self, spec: &Arc<Spec>) -> Option<Client> {
        for _ in 0..50 {
            let framing = "binary2".parse().ok()?;
            if let Ok(c) = Client::connect(&self.switch.to_string(), spec.clone(), framing).await {
                return Some(c);
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        None
    }

    /// Sum of the store-and-forward depth gauges, from the demo's /metrics.
    async fn saf_depth(&self) -> Option<f64> {
        common::metric_sum(self.metrics, "cyberswitch_saf_depth").await
    }

    async fn drain(&self) -> Result<(), String> {
        for _ in 0..300 {
            if self.saf_depth().await == Some(0.0) {
                return Ok(());
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        Err(format!(
            "queue not drained: depth {:?}",
            self.saf_depth().await
        ))
    }
}

impl Harness {
    fn new() -> Harness {
        Harness {
            dir: tempfile::tempdir().unwrap(),
            cards: demo::bulk_cards(CARDS),
            spec: Arc::new(Spec::resolve("iso87-ascii").unwrap()),
            logs: Arc::new(Mutex::new(Vec::new())),
        }
    }

    /// `cyberswitch demo` on the harness's directory, once it has printed that it is ready.
    async fn start(&self) -> DemoProcess {
        let mut child = Command::new(env!("CARGO_BIN_EXE_cyberswitch"))
            .arg("demo")
            .arg("--data-dir")
            .arg(self.dir.path())
            .arg("--load-cards")
            .arg(CARDS.to_string())
            .arg("--ephemeral-ports")
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .unwrap();
        let mut stderr = BufReader::new(child.stderr.take().unwrap()).lines();
        let logs = self.logs.clone();
        tokio::spawn(async move {
            while let Ok(Some(line)) = stderr.next_line().await {
                let mut l = logs.lock().unwrap();
                if l.len() == LOG_TAIL {
                    l.remove(0);
                }
                l.push(line);
            }
        });
        let mut stdout = BufReader::new(child.stdout.take().unwrap()).lines();
        let addr = |line: &str, prefix: &str| -> Option<SocketAddr> {
            let rest = line.strip_prefix(prefix)?;
            rest.split(['/', ' ']).next()?.parse().ok()
        };
        let (mut switch, mut metrics) = (None, None);
        let ready = tokio::time::timeout(Duration::from_secs(60), async {
            while let Ok(Some(line)) = stdout.next_line().await {
                switch = switch.or_else(|| addr(&line, "switch on "));
                metrics = metrics.or_else(|| addr(&line, "metrics on http://"));
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
            "the demo did not start; logs:\n{}",
            self.log_tail()
        );
        tokio::spawn(async move { while let Ok(Some(_)) = stdout.next_line().await {} });
        DemoProcess {
            child,
            switch: switch.expect("the demo printed its switch address"),
            metrics: metrics.expect("the demo printed its metrics address"),
        }
    }

    fn log_tail(&self) -> String {
        self.logs.lock().unwrap().join("\n")
    }
}

/// One request a terminal sent, and what it got.
#[derive(Clone)]
struct Outcome {
    card: usize,
    request: OwnedMessage,
    answer: Option<OwnedMessage>,
    /// An approved authorization's completion (0220) and its answer, if one was sent.
    completion: Option<(OwnedMessage, Option<OwnedMessage>)>,
}

fn code(m: &OwnedMessage) -> &str {
    std::str::from_utf8(m.get(39).unwrap_or(b"")).unwrap_or("")
}

/// An approval's legs (field 48, `LG` = id|issuer|amount|units|…) as (issuer, amount, units).
fn legs(answer: &OwnedMessage) -> Vec<(String, i64, i64)> {
    parse_ascii_tlv(answer.get(48).unwrap_or(b""), 2, 3)
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
        .collect()
}

fn is_wallet(issuer: &str) -> bool {
    matches!(issuer, "EMONEY" | "GIFT" | "MILEAGE")
}

/// A purchase (0200), or one time in four an authorization (0100) to be completed, with a
/// random tender: automatic, capped (the rest to credit), or chosen wallets (points too).
fn purchase(
    cards: &[BulkCard],
    rng: &mut StdRng,
    terminal: &str,
    stan: u32,
) -> (usize, OwnedMessage) {
    let card = rng.random_range(0..cards.len());
    let c = &cards[card];
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
    let mut sd = SwitchData::new();
    match rng.random_range(0..5) {
        0 => {}
        1 => {
            sd.push("WC", (amount / 2).to_string().as_bytes());
        }
        2 => {
            sd.push("WS", format!("{},{}", c.emoney, c.mileage).as_bytes());
        }
        3 => {
            sd.push("WS", c.mileage.as_bytes());
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

fn next_stan(stans: &AtomicU32) -> u32 {
    stans.fetch_add(1, Ordering::Relaxed) % 999_999 + 1
}

/// One terminal: purchases one after the other until its connection dies or `stop`; every
/// answer it saw (or that it saw none) is recorded.
async fn terminal_load(
    client: Option<Client>,
    cards: Arc<Vec<BulkCard>>,
    id: String,
    stans: Arc<AtomicU32>,
    outcomes: Arc<Mutex<Vec<Outcome>>>,
    stop: CancellationToken,
    seed: u64,
) {
    let mut rng = StdRng::seed_from_u64(seed);
    let Some(mut client) = client else {
        return;
    };
    while !stop.is_cancelled() {
        let (card, request) = purchase(&cards, &mut rng, &id, next_stan(&stans));
        let answer = match client.send(&request).await {
            Ok(()) => client.recv(ANSWER_WAIT).await.ok(),
            Err(_) => None,
        };
        let mut dead = answer.is_none();
        let credit: Option<i64> = answer.as_ref().filter(|a| code(a) == "00").map(|a| {
            legs(a)
                .iter()
                .filter(|(issuer, _, _)| !is_wallet(issuer))
                .map(|(_, amount, _)| amount)
                .sum()
        });
        let completion = match credit {
            Some(credit) if request.mti().as_bytes() == b"0100" && credit > 0 => {
                let taken = amount_of(&request) - credit + rng.random_range(1..=credit);
                let c = completion_of(&request, taken, next_stan(&stans));
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

/// Start the demo, load it, SIGKILL it at a random moment; `kills` times.
async fn kill_rounds(h: &Harness, kills: usize, rng: &mut StdRng) -> Vec<Outcome> {
    let outcomes = Arc::new(Mutex::new(Vec::new()));
    let stans = Arc::new(AtomicU32::new(1));
    let cards = Arc::new(h.cards.clone());
    let started = Instant::now();
    for round in 0..kills {
        let demo = h.start().await;
        let stop = CancellationToken::new();
        let mut load = Vec::new();
        for t in 0..TERMINALS {
            load.push(tokio::spawn(terminal_load(
                demo.terminal(&h.spec).await,
                cards.clone(),
                format!("KILL{t:04}"),
                stans.clone(),
                outcomes.clone(),
                stop.clone(),
                rng.random(),
            )));
        }
        let after = Duration::from_millis(rng.random_range(300..2_500));
        tokio::time::sleep(after).await;
        demo.kill().await;
        stop.cancel();
        for t in load {
            let _ = t.await;
        }
        let seen = outcomes.lock().unwrap().len();
        eprintln!(
            "kill {round}: after {after:?} of load, {seen} requests so far, at {:?}",
            started.elapsed()
        );
    }
    let all = outcomes.lock().unwrap().clone();
    all
}

/// After the last start: unacknowledged completions are repeated (0221) until acknowledged,
/// what got no answer is reversed, and some answered requests are repeated (same answer).
async fn settle(h: &Harness, demo: &DemoProcess, outcomes: &mut [Outcome]) -> Result<(), String> {
    let mut client = demo.terminal(&h.spec).await.ok_or("no connection")?;
    for (c, answer) in outcomes.iter_mut().filter_map(|o| o.completion.as_mut()) {
        if answer.is_none() {
            let mut again = c.clone();
            again.set_mti(Mti::new(b"0221").unwrap());
            *answer = Some(client.call(&again, ANSWER_WAIT).await?);
        }
    }
    let mut stan = 990_000u64;
    for o in outcomes.iter().filter(|o| o.answer.is_none()) {
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
        let first = o.answer.as_ref().ok_or("answered")?;
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

/// The journal after the last run: nothing open, nothing queued, nothing dead (else the
/// money check below would fail for another reason than the simulators).
fn check_journal(h: &Harness) -> Result<(), String> {
    let db = store::open_read_only(&h.dir.path().join("switch"))?;
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

/// What the terminals saw approved and not reversed: units per wallet account, amount per
/// card at the acquirer.
#[derive(Default)]
struct Approved {
    units: HashMap<String, i64>,
    credit: HashMap<usize, i64>,
}

fn approved(h: &Harness, outcomes: &[Outcome]) -> Result<Approved, String> {
    let mut approved = Approved::default();
    for o in outcomes {
        let Some(a) = o.answer.as_ref().filter(|a| code(a) == "00") else {
            continue;
        };
        let c = &h.cards[o.card];
        let amount = amount_of(&o.request);
        // A completed authorization leaves at the acquirer only what the completion took.
        if let Some((completion, answer)) = &o.completion {
            match answer.as_ref().map(code) {
                Some("00") => {
                    *approved.credit.entry(o.card).or_default() -= amount - amount_of(completion);
                }
                other => return Err(format!("completion answered {other:?}")),
            }
        }
        let legs = legs(a);
        let total: i64 = legs.iter().map(|(_, amount, _)| amount).sum();
        if total != amount {
            return Err(format!("legs sum to {total}, the amount is {amount}"));
        }
        for (issuer, amount, units) in legs {
            let account = match issuer.as_str() {
                "EMONEY" => &c.emoney,
                "GIFT" => &c.gift,
                "MILEAGE" => &c.mileage,
                _ => {
                    *approved.credit.entry(o.card).or_default() += amount;
                    continue;
                }
            };
            *approved.units.entry(account.clone()).or_default() += units;
        }
    }
    Ok(approved)
}

/// Each simulator, opened from its data directory after the last kill: the money it moved
/// equals what the terminals saw approved, account by account.
async fn check_simulators(h: &Harness, approved: &Approved) -> Result<(), String> {
    let stop = CancellationToken::new();
    let configs = demo::sim_configs(h.dir.path(), &DemoPorts::ephemeral());
    let mut sims = HashMap::new();
    for config in configs {
        let sim = Simulator::start(config, stop.clone()).await?;
        sims.insert(sim.name.clone(), sim);
    }
    let mut wrong = Vec::new();
    for (name, opening) in [
        ("EMONEY", LOAD_BALANCE),
        ("GIFT", LOAD_BALANCE),
        ("MILEAGE", LOAD_BALANCE * 2),
    ] {
        let (mut moved, mut expected) = (0, 0);
        for c in &h.cards {
            let account = match name {
                "EMONEY" => &c.emoney,
                "GIFT" => &c.gift,
                _ => &c.mileage,
            };
            let seen = approved.units.get(account).copied().unwrap_or(0);
            let balance = sims[name].balance(account).ok_or("account missing")?;
            if opening - balance != seen {
                wrong.push(format!(
                    "{name} {account}: moved {}, terminals saw {seen} approved",
                    opening - balance
                ));
            }
            moved += opening - balance;
            expected += seen;
        }
        eprintln!("{name}: moved {moved} units for {expected} approved");
    }
    let (mut moved, mut expected) = (0, 0);
    for (i, c) in h.cards.iter().enumerate() {
        let seen = approved.credit.get(&i).copied().unwrap_or(0);
        let total = sims["ACQ1"].card_total(&c.pan);
        if total != seen {
            wrong.push(format!(
                "ACQ1 card {i}: moved {total}, terminals saw {seen} approved"
            ));
        }
        moved += total;
        expected += seen;
    }
    eprintln!("ACQ1: moved {moved} for {expected} approved");
    stop.cancel();
    if wrong.is_empty() {
        Ok(())
    } else {
        Err(format!(
            "the simulators' money differs from what the terminals saw:\n{}",
            wrong.join("\n")
        ))
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn kill_9_of_the_whole_demo_loses_nothing_a_simulator_acknowledged() {
    let h = Harness::new();
    let mut rng = StdRng::seed_from_u64(seed());
    let mut outcomes = kill_rounds(&h, KILLS, &mut rng).await;
    let approvals = outcomes
        .iter()
        .filter(|o| o.answer.as_ref().is_some_and(|a| code(a) == "00"))
        .count();
    eprintln!(
        "{} requests, {approvals} approved, {} unanswered",
        outcomes.len(),
        outcomes.iter().filter(|o| o.answer.is_none()).count()
    );
    assert!(approvals > 100, "too little load to mean anything");

    let started = Instant::now();
    let last = h.start().await;
    settle(&h, &last, &mut outcomes).await.unwrap();
    last.drain().await.unwrap();
    eprintln!("settled and drained in {:?}", started.elapsed());
    last.kill().await;

    // Both checks, so that a failure shows the money as well as what the journal kept.
    let journal = check_journal(&h);
    let approved = approved(&h, &outcomes).unwrap();
    let money = check_simulators(&h, &approved).await;
    if journal.is_err() || money.is_err() {
        panic!(
            "journal: {journal:?}\nmoney: {}\nlast logs:\n{}",
            money.err().unwrap_or_else(|| "as approved".into()),
            h.log_tail()
        );
    }
}
