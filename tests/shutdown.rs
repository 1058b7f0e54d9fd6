//! Graceful stop and undelivered approvals (issue 20, SPEC §9, §10): the switch runs as a
//! child process (`cyberswitch run`) against the real simulators (in this process, their
//! own RocksDB), terminals over real TCP.
//!
//! - SIGTERM with purchases in flight (their credit legs held up at the acquirer): they are
//!   answered and their answers written, the process exits 0 within the drain bound, and the
//!   money at the simulators is exactly what the terminals saw approved.
//! - SIGTERM while a host is slower than the drain bound: the process still exits 0 in time;
//!   what it gave up on is reversed at the next start.
//! - Recovery after kill -9 reverses an approval journaled but never written to its
//!   terminal (long enough before the crash), and a repeat of its request then gets 96; an
//!   approval that may have reached its terminal in the last moments is left in doubt: its
//!   repeat gets the approval and its money stays taken.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

mod common;

use common::{amount_of, code, sigterm, tags};

use cyberswitch::demo::{self, BulkCard, DemoPorts};
use cyberswitch::directory::{CardKey, Directory};
use cyberswitch::iso8583::tlv::SwitchData;
use cyberswitch::iso8583::{Mti, OwnedMessage, Spec};
use cyberswitch::net::client::Client;
use cyberswitch::sim::{Behaviour, Simulator};
use cyberswitch::store::{self, Cf};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};
use tokio_util::sync::CancellationToken;

const BALANCE: i64 = 1_000_000;
#[cfg_attr(not(feature = "fault-injection"), allow(dead_code))]
const WAIT: Duration = Duration::from_secs(10);

/// Simulators in this process; the switch's data directory and configuration on disk.
struct World {
    dir: tempfile::TempDir,
    stop: CancellationToken,
    sims: Vec<Arc<Simulator>>,
    cards: Vec<BulkCard>,
    config: PathBuf,
    switch: SocketAddr,
    spec: Arc<Spec>,
    logs: Arc<Mutex<String>>,
}

impl Drop for World {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

/// The tests start switches on ports picked beforehand: one at a time, so that another
/// test's simulators are not handed the same port meanwhile.
static ONE_AT_A_TIME: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// `cards` bulk cards; the acquirer holds every credit leg `credit_delay_ms` before it
/// answers (the leg is applied when it arrives); `limits` is the switch's `[limits]` table.
async fn world(cards: usize, credit_delay_ms: u64, limits: &str) -> World {
    let dir = tempfile::tempdir().unwrap();
    let stop = CancellationToken::new();
    let cards = demo::bulk_cards(cards);
    let mut ports = DemoPorts {
        switch: common::free_port(),
        ..DemoPorts::ephemeral()
    };
    let mut configs = demo::sim_configs(dir.path(), &ports);
    demo::add_bulk_accounts(&mut configs, &cards, BALANCE);
    if let Some(acq) = configs.iter_mut().find(|c| c.name == "ACQ1") {
        for c in &cards {
            acq.behaviours.push(Behaviour {
                target: c.pan.clone(),
                delay_ms: credit_delay_ms,
                ..Behaviour::default()
            });
        }
    }
    let sims = demo::start_sims(configs, &mut ports, &stop).await.unwrap();
    let key: [u8; 32] = rand::random();
    std::fs::write(dir.path().join("card.key"), hex::encode(key)).unwrap();
    demo::write_secrets(dir.path()).unwrap();
    let config = dir.path().join("cyberswitch.toml");
    let toml = format!(
        "{}\n[limits]\n{limits}\n",
        demo::switch_config_toml(dir.path(), &ports)
    );
    std::fs::write(&config, toml).unwrap();
    {
        let db = store::open(&dir.path().join("switch")).unwrap();
        let directory = Directory::new(db, CardKey::new(key.to_vec()));
        demo::link_bulk_cards(&directory, &cards).unwrap();
    }
    World {
        switch: ports.switch,
        dir,
        stop,
        sims,
        cards,
        config,
        spec: Arc::new(Spec::resolve("iso87-ascii").unwrap()),
        logs: Arc::new(Mutex::new(String::new())),
    }
}

impl World {
    fn sim(&self, name: &str) -> &Simulator {
        self.sims.iter().find(|s| s.name == name).unwrap()
    }

    fn data_dir(&self) -> PathBuf {
        self.dir.path().join("switch")
    }

    /// `cyberswitch run`, once it says it is ready; `env` for test-only hooks.
    async fn start_switch(&self, env: &[(&str, &str)]) -> Child {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_cyberswitch"));
        cmd.arg("run")
            .arg("--config")
            .arg(&self.config)
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        for (k, v) in env {
            cmd.env(k, v);
        }
        let up_before = self.logs().matches("session up").count();
        let mut child = cmd.spawn().unwrap();
        let stderr = child.stderr.take().unwrap();
        let logs = self.logs.clone();
        tokio::spawn(async move {
            let mut lines = BufReader::new(stderr).lines();
            while let Ok(Some(line)) = lines.next_line().await {
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
        assert_eq!(ready, Ok(true), "switch did not start:\n{}", self.logs());
        tokio::spawn(async move { while let Ok(Some(_)) = stdout.next_line().await {} });
        // Ready is not up: a leg sent before its link has signed on is declined, and a
        // purchase would never reach the acquirer (legs sent ahead get there sooner).
        let links = std::fs::read_to_string(&self.config)
            .unwrap()
            .matches("[[link]]")
            .count();
        for _ in 0..200 {
            if self.logs().matches("session up").count() >= up_before + links {
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        child
    }

    fn logs(&self) -> String {
        self.logs.lock().unwrap().clone()
    }

    async fn terminal(&self) -> Client {
        for _ in 0..50 {
            let framing = "binary2".parse().unwrap();
            if let Ok(c) =
                Client::connect(&self.switch.to_string(), self.spec.clone(), framing).await
            {
                return c;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        panic!("no connection to the switch");
    }

    /// A split-tender purchase on card `i`: at most a third from its gift wallet, the rest
    /// by credit at the acquirer.
    fn purchase(&self, i: usize, stan: u32, amount: u64) -> OwnedMessage {
        let c = &self.cards[i];
        let mut m = OwnedMessage::new(Mti::new(b"0200").unwrap());
        m.set(2, c.pan.as_bytes())
            .set(3, b"000000")
            .set_number(4, amount, 12)
            .set(7, cyberswitch::clock::transmission_time().as_bytes())
            .set_number(11, u64::from(stan), 6)
            .set(12, cyberswitch::clock::local_time().as_bytes())
            .set(13, cyberswitch::clock::local_date().as_bytes())
            .set(41, format!("SHUT{i:04}").as_bytes())
            .set(42, b"MERCHANT0000001")
            .set(49, b"410");
        let mut sd = SwitchData::new();
        sd.push("WS", c.gift.as_bytes());
        sd.push("WC", (amount / 3).to_string().as_bytes());
        m.set(48, sd.as_bytes());
        m
    }

    /// The simulators' money, against what the terminals saw approved: every approved
    /// purchase's legs taken once (gift wallet in units, credit at the acquirer), nothing
    /// else.
    fn check_money(&self, seen: &[(usize, OwnedMessage, Option<OwnedMessage>)]) {
        let mut gift = vec![0i64; self.cards.len()];
        let mut credit = vec![0i64; self.cards.len()];
        for (i, request, answer) in seen {
            let Some(a) = answer.as_ref().filter(|a| code(a) == "00") else {
                continue;
            };
            let mut total = 0;
            for lg in tags(a, "LG") {
                let parts: Vec<&str> = lg.split('|').collect();
                let amount: i64 = parts[2].parse().unwrap();
                total += amount;
                match parts[1] {
                    "GIFT" => gift[*i] += parts[3].parse::<i64>().unwrap(),
                    _ => credit[*i] += amount,
                }
            }
            assert_eq!(total, amount_of(request), "legs sum to the amount");
        }
        for (i, c) in self.cards.iter().enumerate() {
            assert_eq!(
                self.sim("GIFT").balance(&c.gift),
                Some(BALANCE - gift[i]),
                "gift wallet of card {i}"
            );
            assert_eq!(
                self.sim("ACQ1").card_total(&c.pan),
                credit[i],
                "credit of card {i}"
            );
        }
    }

    /// The switch's database after it stopped: nothing open or waiting to be known
    /// delivered, nothing queued.
    fn check_nothing_left(&self) {
        let db = store::open_read_only(&self.data_dir()).unwrap();
        for (cf, what) in [
            (Cf::OpenTxns, "open transactions"),
            (Cf::Saf, "queued items"),
        ] {
            let n = store::scan(&db, cf, b"").unwrap().len();
            assert_eq!(n, 0, "{n} {what} left\n{}", self.logs());
        }
    }

    /// Until the running switch's store-and-forward queue is empty (what its start queued —
    /// recovery's reversals, the blind reversals of its links' windows — acknowledged).
    async fn queue_emptied(&self) {
        for _ in 0..300 {
            let db = store::open_read_only(&self.data_dir()).unwrap();
            if store::scan(&db, Cf::Saf, b"").unwrap().is_empty() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Start the switch again and wait until its queue is empty (what recovery queued has
    /// been acknowledged), then stop it gracefully.
    async fn restart_and_settle(&self) {
        let mut child = self.start_switch(&[]).await;
        self.queue_emptied().await;
        sigterm(&child);
        let status = tokio::time::timeout(Duration::from_secs(60), child.wait())
            .await
            .expect("the switch stops")
            .unwrap();
        assert!(status.success(), "{status:?}");
    }
}

/// Each of `n` terminals sends one purchase and waits for its answer (or the connection's
/// end); returns the handles.
async fn purchases_in_flight(
    w: &Arc<World>,
    n: usize,
) -> Vec<tokio::task::JoinHandle<(usize, OwnedMessage, Option<OwnedMessage>)>> {
    let mut tasks = Vec::new();
    for i in 0..n {
        let w = w.clone();
        let mut client = w.terminal().await;
        tasks.push(tokio::spawn(async move {
            let request = w.purchase(i, 100 + i as u32, 9_000);
            client.send(&request).await.unwrap();
            let answer = client.recv(Duration::from_secs(30)).await.ok();
            (i, request, answer)
        }));
    }
    // In flight: each credit leg has reached the acquirer (it applies a leg on arrival and
    // answers after its delay).
    for _ in 0..300 {
        if w.cards.iter().all(|c| w.sim("ACQ1").card_total(&c.pan) > 0) {
            return tasks;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("the purchases never reached the acquirer\n{}", w.logs());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sigterm_answers_what_is_in_flight_then_exits_0_within_the_drain() {
    let _alone = ONE_AT_A_TIME.lock().await;
    let drain = 10;
    let w = Arc::new(world(6, 1_000, &format!("shutdown_drain_s = {drain}")).await);
    let mut child = w.start_switch(&[]).await;
    let tasks = purchases_in_flight(&w, w.cards.len()).await;

    let signalled = Instant::now();
    sigterm(&child);
    let status = tokio::time::timeout(Duration::from_secs(drain + 10), child.wait())
        .await
        .expect("the switch exits within its drain bound")
        .unwrap();
    assert!(status.success(), "{status:?}\n{}", w.logs());
    eprintln!("stopped {:?} after SIGTERM", signalled.elapsed());

    let mut seen = Vec::new();
    for t in tasks {
        seen.push(t.await.unwrap());
    }
    // Every purchase in flight at the signal was answered, approved, and its answer written.
    for (i, _, answer) in &seen {
        let a = answer
            .as_ref()
            .unwrap_or_else(|| panic!("purchase {i} in flight got no answer\n{}", w.logs()));
        assert_eq!(code(a), "00", "{a:?}");
    }
    w.check_money(&seen);
    w.check_nothing_left();
    // No connection is accepted once stopped (the process is gone, the port closed).
    let framing = "binary2".parse().unwrap();
    assert!(
        Client::connect(&w.switch.to_string(), w.spec.clone(), framing)
            .await
            .is_err()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sigterm_with_a_host_slower_than_the_drain_exits_in_time_and_recovery_undoes_the_rest() {
    let _alone = ONE_AT_A_TIME.lock().await;
    // No drain at all: the acquirer's answers (a second after each leg, within the link's
    // timeout, so that the reversals recovery sends later are acknowledged) come too late.
    let drain = 0;
    let w = Arc::new(world(3, 1_000, &format!("shutdown_drain_s = {drain}")).await);
    let mut child = w.start_switch(&[]).await;
    let tasks = purchases_in_flight(&w, w.cards.len()).await;
    sigterm(&child);
    let status = tokio::time::timeout(Duration::from_secs(drain + 10), child.wait())
        .await
        .expect("the switch exits within its drain bound")
        .unwrap();
    assert!(status.success(), "{status:?}\n{}", w.logs());
    let mut seen = Vec::new();
    for t in tasks {
        seen.push(t.await.unwrap());
    }
    // Nothing was approved: at the bound, no answer is journaled any more.
    assert!(
        seen.iter()
            .all(|(_, _, a)| a.as_ref().is_none_or(|a| code(a) != "00")),
        "an approval left after the drain was given up"
    );
    // A graceful stop leaves the hosted ledger's checkpoint, and the next start opens from it.
    assert!(
        w.logs().contains("hosted ledger: checkpoint written"),
        "{}",
        w.logs()
    );
    assert!(!w.logs().contains("from=Checkpoint"));
    w.restart_and_settle().await;
    assert!(w.logs().contains("from=Checkpoint"), "{}", w.logs());
    w.check_money(&seen);
    w.check_nothing_left();
}

#[cfg(feature = "fault-injection")]
mod undelivered {
    use super::*;
    use cyberswitch::switch::delivery;
    use cyberswitch::switch::testhooks::CRASH_POINT_VAR;

    /// The approvals left `delivering`, once the switch's last sign of life is at least
    /// `after_ms` past the latest one's answer (`after_ms` 0: as soon as one is there).
    async fn approval_left_delivering(w: &World, after_ms: i64) {
        for _ in 0..300 {
            let db = store::open_read_only(&w.data_dir()).unwrap();
            let open = store::scan(&db, Cf::OpenTxns, b"").unwrap();
            let answered = open
                .iter()
                .filter_map(|(_, v)| delivery::delivering_since(v))
                .max();
            let alive = db
                .get(Cf::Meta, delivery::ALIVE)
                .unwrap()
                .and_then(|v| <[u8; 8]>::try_from(v.as_slice()).ok())
                .map(i64::from_be_bytes);
            if let (Some(at), Some(alive)) = (answered, alive) {
                if after_ms == 0 || alive >= at + after_ms {
                    return;
                }
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        panic!("no approval left delivering\n{}", w.logs());
    }

    /// One purchase whose flow stops after its answer is journaled (the test-only crash
    /// point): the terminal never gets it.
    async fn purchase_never_answered(
        w: &World,
        child_env: &[(&str, &str)],
    ) -> (Child, OwnedMessage) {
        let child = w.start_switch(child_env).await;
        let mut client = w.terminal().await;
        let request = w.purchase(0, 500, 6_000);
        client.send(&request).await.unwrap();
        assert!(
            client.recv(Duration::from_secs(3)).await.is_err(),
            "the answer must not leave"
        );
        (child, request)
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn an_approval_never_written_to_its_terminal_is_reversed_at_the_next_start() {
        let _alone = ONE_AT_A_TIME.lock().await;
        let w = Arc::new(world(1, 0, "delivery_doubt_s = 1").await);
        let (child, request) =
            purchase_never_answered(&w, &[(CRASH_POINT_VAR, "journal-answer:1")]).await;
        // Long enough before the last sign of life that its delivery marker would be on disk.
        approval_left_delivering(&w, 1_000).await;
        let mut child = child;
        child.start_kill().unwrap();
        child.wait().await.unwrap();

        w.restart_and_settle().await;
        // The money is back where it was: the terminal never saw an approval.
        w.check_money(&[(0, request.clone(), None)]);
        w.check_nothing_left();
        let logs = w.logs();
        assert!(logs.contains("undelivered approval is reversed"), "{logs}");

        // A repeat of the request does not get the withdrawn approval; a reversal is 00.
        let mut child = w.start_switch(&[]).await;
        let mut client = w.terminal().await;
        let mut repeat = request.clone();
        repeat.set_mti(Mti::new(b"0201").unwrap());
        let a = client.call(&repeat, WAIT).await.unwrap();
        assert_eq!(code(&a), "96", "{a:?}");
        assert!(a.get(38).is_none());
        let reversal = common::reversal_of(&request, 900, &cyberswitch::clock::transmission_time());
        assert_eq!(code(&client.call(&reversal, WAIT).await.unwrap()), "00");
        sigterm(&child);
        assert!(child.wait().await.unwrap().success());
        w.check_money(&[(0, request, None)]);
    }

    fn refund_of(purchase: &OwnedMessage, amount: u64, stan: u64) -> OwnedMessage {
        let mut r = common::reversal_of(purchase, stan, &cyberswitch::clock::transmission_time());
        r.set_mti(Mti::new(b"0200").unwrap());
        r.set(3, b"200000").set_number(4, amount, 12);
        r
    }

    /// An approved refund never written to its terminal is undone at the next start, and
    /// what it had counted as refunded goes back to its purchase: the purchase may then be
    /// refunded in full (it was answered 13, the undone refund still counted).
    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn an_undelivered_refund_undone_at_start_gives_its_purchase_its_room_back() {
        let _alone = ONE_AT_A_TIME.lock().await;
        let w = Arc::new(world(1, 0, "delivery_doubt_s = 1").await);
        let mut child = w
            .start_switch(&[(CRASH_POINT_VAR, "refund-answered:1")])
            .await;
        let mut client = w.terminal().await;
        let purchase = w.purchase(0, 6_100, 6_000);
        assert_eq!(code(&client.call(&purchase, WAIT).await.unwrap()), "00");
        client
            .send(&refund_of(&purchase, 6_000, 6_101))
            .await
            .unwrap();
        assert!(
            client.recv(Duration::from_secs(3)).await.is_err(),
            "the refund's answer must not leave"
        );
        approval_left_delivering(&w, 1_000).await;
        child.start_kill().unwrap();
        child.wait().await.unwrap();
        w.restart_and_settle().await;
        assert!(w.logs().contains("undelivered approval is reversed"));

        let mut child = w.start_switch(&[]).await;
        let mut client = w.terminal().await;
        let again = client
            .call(&refund_of(&purchase, 6_000, 6_102), WAIT)
            .await
            .unwrap();
        assert_eq!(code(&again), "00", "the whole purchase is left to refund");
        sigterm(&child);
        assert!(child.wait().await.unwrap().success());
        // Taken once, given back once.
        let card = &w.cards[0];
        assert_eq!(w.sim("GIFT").balance(&card.gift), Some(BALANCE));
        assert_eq!(w.sim("ACQ1").card_total(&card.pan), 0);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn an_approval_that_may_have_reached_its_terminal_is_left_to_it() {
        let _alone = ONE_AT_A_TIME.lock().await;
        let w = Arc::new(world(1, 0, "delivery_doubt_s = 3600").await);
        let (mut child, request) =
            purchase_never_answered(&w, &[(CRASH_POINT_VAR, "journal-answer:1")]).await;
        approval_left_delivering(&w, 0).await;
        child.start_kill().unwrap();
        child.wait().await.unwrap();

        let mut child = w.start_switch(&[]).await;
        // In doubt: not reversed; the terminal's repeat gets the approval, and the money
        // stays taken — what the terminal now holds.
        let mut client = w.terminal().await;
        let mut repeat = request.clone();
        repeat.set_mti(Mti::new(b"0201").unwrap());
        let a = client.call(&repeat, WAIT).await.unwrap();
        assert_eq!(code(&a), "00", "{a:?}");
        // The kill left the links' windows to reverse blind (the simulators answer 25).
        w.queue_emptied().await;
        sigterm(&child);
        assert!(child.wait().await.unwrap().success());
        w.check_money(&[(0, request, Some(a))]);
        w.check_nothing_left();
        assert!(w.logs().contains("in doubt"), "never silently");
    }
}
