//! Simulators of the upstream hosts (SPEC §6): a wallet issuer and a card acquirer, real TCP
//! servers speaking the same ISO 8583 contract as the real hosts, with balances that persist
//! in their own RocksDB directory and per-account (issuer) or per-card (acquirer) behaviours:
//! decline with a code, delay, never answer, answer twice. A money request is answered only
//! once its change has reached the operating system (`wal`), so a simulator killed with the
//! switch keeps everything it acknowledged.

pub mod bank;
pub mod partner;
mod requests;
mod wal;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use dashmap::DashMap;
use rocksdb::DB;
use serde::{Deserialize, Serialize};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::config::{default_framing, default_spec, Profile};
use crate::iso8583::Spec;
use crate::net::server::{self, BoxFuture, ServerLimits, Service};
use requests::{account_key, card_target, lock, Leg};
use wal::WalBarrier;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SimKind {
    Issuer,
    Acquirer,
}

/// A simulator's configuration file.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SimConfig {
    pub kind: SimKind,
    pub name: String,
    pub listen: SocketAddr,
    #[serde(default = "default_spec")]
    pub spec: String,
    #[serde(default = "default_framing")]
    pub framing: String,
    pub data_dir: PathBuf,
    /// Acquirer: approve amounts up to this, decline above with 51.
    #[serde(default)]
    pub approve_limit: Option<u64>,
    /// Issuer: accounts and their opening balances (seeded into a fresh data directory only).
    #[serde(default, rename = "account")]
    pub accounts: Vec<SimAccount>,
    #[serde(default, rename = "behaviour")]
    pub behaviours: Vec<Behaviour>,
    /// A deliberately faulty host: added to the debit amount it reports in 0510, so that
    /// cut-overs find it mismatched (tests, demonstrations).
    #[serde(default)]
    pub reconciliation_skew: i64,
    /// TLS: `{ cert, key, client_ca }` (a host the switch reaches over TLS); absent: plain TCP.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls: Option<crate::net::tls::ServerTlsFiles>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SimAccount {
    pub id: String,
    pub balance: i64,
}

/// How the simulator treats one account (issuer) or card number (acquirer).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Behaviour {
    /// The account id or card number this applies to.
    pub target: String,
    /// Decline money requests with this response code.
    #[serde(default)]
    pub decline: Option<String>,
    /// Decline only amounts above this (with `decline`, or 51).
    #[serde(default)]
    pub decline_above: Option<u64>,
    /// Wait this long before answering.
    #[serde(default)]
    pub delay_ms: u64,
    /// Never answer.
    #[serde(default)]
    pub silent: bool,
    /// Send the answer twice.
    #[serde(default)]
    pub twice: bool,
    /// Apply the behaviour to balance inquiries too (default: money requests only).
    #[serde(default)]
    pub inquiries: bool,
    /// Apply the behaviour only to requests whose processing code (field 3) starts with these
    /// digits (`"20"`: refunds only), so that one account can be slow to refund and quick to
    /// pay.
    #[serde(default)]
    pub processing_code: Option<String>,
    /// Apply the behaviour only to first requests (x100, x200), not to advices (x220, x221)
    /// or reversals: a host slow to answer a request may still acknowledge its advice at once.
    #[serde(default)]
    pub requests_only: bool,
}

impl Behaviour {
    /// Does this behaviour apply to `msg`?
    pub(crate) fn applies_to(&self, msg: &crate::iso8583::Message<'_>) -> bool {
        let code = self
            .processing_code
            .as_deref()
            .is_none_or(|p| msg.str(3).is_some_and(|pc| pc.starts_with(p)));
        let mti = msg.mti();
        let request =
            !self.requests_only || (matches!(mti.class(), 1 | 2) && mti.as_bytes()[2] == b'0');
        code && request
    }
}

impl SimConfig {
    pub fn load(path: &Path) -> Result<SimConfig, String> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| format!("{}: cannot read: {e}", path.display()))?;
        toml::from_str(&text)
            .map_err(|e| format!("{}: {}", path.display(), e.to_string().trim_end()))
    }
}

/// A running simulator.
pub struct Simulator {
    pub name: String,
    pub addr: SocketAddr,
    kind: SimKind,
    spec: Arc<Spec>,
    db: Arc<DB>,
    behaviours: HashMap<String, Behaviour>,
    approve_limit: Option<u64>,
    /// Balances (issuer accounts, acquirer card totals), read from the database at start and
    /// written through to it. Each account has a lock of its own, held across its
    /// read-modify-write (the database write included): requests on one account are
    /// serialised while the others go on. The map's own shard is held only to find the
    /// account: a shard held across a database write made the other runtime thread spin on
    /// it (one lock for all accounts, earlier, put the threads to sleep on each other).
    /// Reading memory spares a database look-up per request.
    balances: DashMap<String, Arc<Mutex<i64>>>,
    auth_counter: std::sync::atomic::AtomicU32,
    /// See [`SimConfig::reconciliation_skew`].
    skew: std::sync::atomic::AtomicI64,
    /// Answers to money requests wait here until their change is in the operating system.
    wal: Arc<WalBarrier>,
    /// Held, by a hash of the identity, from looking a leg's identity up to writing it: a
    /// leg sent ahead and its blind reversal (see `requests.rs`).
    identity_locks: [Mutex<()>; 16],
}

impl Simulator {
    /// Open the data directory (seeding a fresh one), bind, and serve until `stop`.
    pub async fn start(
        config: SimConfig,
        stop: CancellationToken,
    ) -> Result<Arc<Simulator>, String> {
        let prof = Profile::resolve(&config.spec, &config.framing, 65_535)
            .map_err(|(k, r)| format!("simulator {}: {k}: {r}", config.name))?;
        let fresh = !config.data_dir.join("CURRENT").exists();
        let mut opts = rocksdb::Options::default();
        opts.create_if_missing(true);
        opts.set_write_buffer_size(16 << 20);
        // Unsynced writes still reach the disk a megabyte at a time, not in one burst when
        // the kernel's dirty-page timer fires (which would delay the switch's syncs).
        opts.set_bytes_per_sync(1 << 20);
        opts.set_wal_bytes_per_sync(1 << 20);
        // Every money request looks its leg up (retransmissions), and almost never finds it.
        crate::store::point_lookup_filters(&mut opts);
        // Writes go to the operating system in groups (see `wal`) rather than one system call
        // per request, which on a machine shared with the switch would be charged to the
        // switch's figures.
        opts.set_manual_wal_flush(true);
        let db = DB::open(&opts, &config.data_dir)
            .map_err(|e| format!("{}: {e}", config.data_dir.display()))?;
        if fresh {
            seed_accounts(&db, &config.accounts)
                .map_err(|e| format!("{}: seeding: {e}", config.data_dir.display()))?;
        }
        let balances = load_balances(&db)?;
        let listener = TcpListener::bind(config.listen)
            .await
            .map_err(|e| format!("simulator {}: bind {}: {e}", config.name, config.listen))?;
        let addr = listener.local_addr().map_err(|e| e.to_string())?;
        let sim = Arc::new(Simulator {
            name: config.name.clone(),
            addr,
            kind: config.kind,
            spec: prof.spec,
            db: Arc::new(db),
            behaviours: config
                .behaviours
                .iter()
                .map(|b| (b.target.clone(), b.clone()))
                .collect(),
            approve_limit: config.approve_limit,
            balances,
            auth_counter: std::sync::atomic::AtomicU32::new(1),
            skew: std::sync::atomic::AtomicI64::new(config.reconciliation_skew),
            wal: Arc::new(WalBarrier::new()),
            identity_locks: Default::default(),
        });
        let limits = ServerLimits {
            framing: prof.framing,
            max_frame: prof.max_frame,
            max_connections: 1_000,
            max_connections_per_peer: 1_000,
            max_in_flight: 1_024,
            idle_timeout: Duration::from_secs(3_600),
            tls: config
                .tls
                .clone()
                .map(crate::net::tls::ServerTls::load)
                .transpose()
                .map_err(|e| format!("simulator {}: tls: {e}", config.name))?,
        };
        tokio::spawn(server::serve(
            config.name.clone().into(),
            listener,
            limits,
            sim.clone() as Arc<dyn Service>,
            stop.clone(),
        ));
        tokio::spawn(wal::close_at_stop(sim.clone(), stop));
        tracing::info!(simulator = %sim.name, addr = %sim.addr, kind = ?sim.kind, "simulator listening");
        Ok(sim)
    }

    /// An issuer account's balance in units.
    pub fn balance(&self, account: &str) -> Option<i64> {
        self.account(account).map(|a| *lock(&a))
    }

    /// An account's lock (the map's shard is released on return).
    fn account(&self, id: &str) -> Option<Arc<Mutex<i64>>> {
        self.balances.get(id).map(|a| a.value().clone())
    }

    /// An account's lock, the account opened at zero if it is new (acquirer card totals).
    fn account_or_new(&self, id: &str) -> Arc<Mutex<i64>> {
        if let Some(a) = self.account(id) {
            return a;
        }
        self.balances
            .entry(id.to_string())
            .or_default()
            .value()
            .clone()
    }

    /// Every account's balance summed (issuer: what its cardholders hold; acquirer: what its
    /// cards owe): what the books' net for this host must explain.
    pub fn total_balance(&self) -> i64 {
        let accounts: Vec<_> = self.balances.iter().map(|a| a.value().clone()).collect();
        accounts.iter().map(|a| *lock(a)).sum()
    }

    /// Make this host report its debit amount off by `by` in every 0510 from now on.
    pub fn skew_reconciliation(&self, by: i64) {
        self.skew.store(by, std::sync::atomic::Ordering::Relaxed);
    }

    /// Acquirer: the net amount approved and not reversed for a card.
    pub fn card_total(&self, pan: &str) -> i64 {
        self.balance(&card_target(pan)).unwrap_or(0)
    }

    /// Acquirer: every leg recorded for a card, as (leg key, signed amount, reversed), for
    /// tests that must explain a difference.
    pub fn card_legs(&self, pan: &str) -> Vec<(String, i64, bool)> {
        let target = card_target(pan);
        self.db
            .prefix_iterator(b"leg/")
            .filter_map(Result::ok)
            .take_while(|(k, _)| k.starts_with(b"leg/"))
            .filter_map(|(k, v)| {
                let leg = Leg::from_bytes(&v)?;
                (leg.target == target).then(|| {
                    (
                        String::from_utf8_lossy(&k).into_owned(),
                        leg.delta,
                        leg.reversed,
                    )
                })
            })
            .collect()
    }
}

impl Service for Simulator {
    fn call(&self, request: Bytes, _peer: Arc<str>) -> BoxFuture<Vec<Bytes>> {
        let answered = self.answer(&request);
        // Taken once the request's write (or the read of the record it replays) is done.
        let ticket = answered.changes_money.then(|| self.wal.ticket());
        let encoded = answered.message.and_then(|a| {
            let mut buf = BytesMut::new();
            self.spec.encode(&a, &mut buf).ok().map(|_| buf.freeze())
        });
        let behaviour = answered.behaviour;
        let wal = self.wal.clone();
        let db = self.db.clone();
        Box::pin(async move {
            let Some(bytes) = encoded else {
                return Vec::new();
            };
            if behaviour.silent {
                return Vec::new();
            }
            if let Some(ticket) = ticket {
                // A write system call of what the log buffers (kilobytes), made on this
                // thread when no flush is running: cheaper than handing it to another.
                let flush = || db.flush_wal(false).map_err(|e| e.to_string());
                if !wal.flushed(ticket, flush).await {
                    // Not in the log: no answer, as if lost; the switch reverses what it
                    // does not hear about.
                    return Vec::new();
                }
            }
            if behaviour.delay_ms > 0 {
                tokio::time::sleep(Duration::from_millis(behaviour.delay_ms)).await;
            }
            if behaviour.twice {
                vec![bytes.clone(), bytes]
            } else {
                vec![bytes]
            }
        })
    }
}

impl Drop for Simulator {
    fn drop(&mut self) {
        let _ = self.db.flush_wal(false);
    }
}

/// A fresh directory's accounts, in one write handed to the operating system at once: a
/// directory that exists is never seeded again, so its accounts must not be lost to a crash.
fn seed_accounts(db: &DB, accounts: &[SimAccount]) -> Result<(), rocksdb::Error> {
    let mut batch = rocksdb::WriteBatch::default();
    for a in accounts {
        batch.put(account_key(&a.id), a.balance.to_be_bytes());
    }
    db.write(batch)?;
    db.flush_wal(true)
}

/// Every balance stored (`acct/<id>` → i64 big-endian).
fn load_balances(db: &DB) -> Result<DashMap<String, Arc<Mutex<i64>>>, String> {
    let balances = DashMap::new();
    for item in db.prefix_iterator(b"acct/") {
        let (k, v) = item.map_err(|e| e.to_string())?;
        let Some(id) = k.strip_prefix(b"acct/") else {
            break;
        };
        let amount = <[u8; 8]>::try_from(&*v)
            .map_err(|_| format!("balance of {} is not 8 bytes", String::from_utf8_lossy(id)))?;
        balances.insert(
            String::from_utf8_lossy(id).into_owned(),
            Arc::new(Mutex::new(i64::from_be_bytes(amount))),
        );
    }
    Ok(balances)
}

/// `cyberswitch sim issuer|acquirer --config F`.
pub async fn run_from_file(path: &Path, kind: SimKind) -> Result<(), String> {
    let config = SimConfig::load(path)?;
    if config.kind != kind {
        return Err(format!(
            "{}: kind is {:?}, not {kind:?}",
            path.display(),
            config.kind
        ));
    }
    let stop = CancellationToken::new();
    let sim = Simulator::start(config, stop.clone()).await?;
    println!("simulator {} listening on {}", sim.name, sim.addr);
    let _ = tokio::signal::ctrl_c().await;
    stop.cancel();
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::iso8583::{Mti, OwnedMessage};

    fn config(dir: &Path) -> SimConfig {
        SimConfig {
            kind: SimKind::Issuer,
            name: "EMONEY".into(),
            listen: "127.0.0.1:0".parse().unwrap(),
            spec: default_spec(),
            framing: default_framing(),
            data_dir: dir.to_path_buf(),
            approve_limit: None,
            accounts: vec![SimAccount {
                id: "E-1".into(),
                balance: 10_000,
            }],
            behaviours: Vec::new(),
            reconciliation_skew: 0,
            tls: None,
        }
    }

    fn request(sim: &Simulator, mti: &[u8; 4], stan: u64, f90: Option<&str>) -> Bytes {
        let mut m = OwnedMessage::new(Mti(*mti));
        m.set(3, b"000000")
            .set_number(4, 2_500, 12)
            .set(7, b"1121120000")
            .set_number(11, stan, 6)
            .set(41, b"T0000001")
            .set(49, b"410")
            .set(102, b"E-1");
        if let Some(od) = f90 {
            m.set(90, od.as_bytes());
        }
        let mut buf = BytesMut::new();
        sim.spec.encode(&m, &mut buf).unwrap();
        buf.freeze()
    }

    fn code(sim: &Simulator, request: Bytes) -> String {
        let answered = sim.answer(&request);
        String::from_utf8(answered.message.unwrap().get(39).unwrap().to_vec()).unwrap()
    }

    /// Stop a simulator and wait until nothing holds it any more (its database is closed).
    async fn stop(sim: Arc<Simulator>, stop: CancellationToken) {
        stop.cancel();
        let weak = Arc::downgrade(&sim);
        drop(sim);
        while weak.strong_count() > 0 {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    /// Writes are handed to the operating system in batches: what was answered before a stop
    /// is there after a restart (the balance, and the leg a reversal needs).
    #[tokio::test]
    async fn balances_and_legs_survive_a_restart() {
        let dir = tempfile::tempdir().unwrap();
        let token = CancellationToken::new();
        let sim = Simulator::start(config(dir.path()), token.clone())
            .await
            .unwrap();
        assert_eq!(code(&sim, request(&sim, b"0200", 1, None)), "00");
        assert_eq!(sim.balance("E-1"), Some(7_500));
        stop(sim, token).await;

        let token = CancellationToken::new();
        let sim = Simulator::start(config(dir.path()), token.clone())
            .await
            .unwrap();
        assert_eq!(sim.balance("E-1"), Some(7_500), "the debit was kept");
        let original = format!("0200{:06}1121120000{:022}", 1, 0);
        let reversal = request(&sim, b"0400", 2, Some(&original));
        assert_eq!(code(&sim, reversal), "00", "the leg was kept");
        assert_eq!(sim.balance("E-1"), Some(10_000));
        stop(sim, token).await;
    }

    /// The answer as the network gets it: after the flush barrier.
    async fn call_code(sim: &Simulator, request: Bytes) -> Option<String> {
        let answers = sim.call(request, "test".into()).await;
        let first = answers.first()?;
        let msg = sim.spec.decode(first).unwrap();
        msg.str(39).map(|c| c.into_owned())
    }

    /// Copy a data directory as it is on disk now (what a process killed now leaves).
    fn copy_dir(from: &Path, to: &Path) {
        for entry in std::fs::read_dir(from).unwrap() {
            let entry = entry.unwrap();
            if entry.file_type().unwrap().is_file() {
                std::fs::copy(entry.path(), to.join(entry.file_name())).unwrap();
            }
        }
    }

    /// An answered money request is already in the operating system's hands, with the
    /// simulator still running (nothing flushed at a stop). (Requests waiting together share
    /// a flush: `wal::tests`.)
    #[tokio::test]
    async fn an_answer_leaves_after_its_change_reached_the_log() {
        let dir = tempfile::tempdir().unwrap();
        let token = CancellationToken::new();
        let sim = Simulator::start(config(dir.path()), token.clone())
            .await
            .unwrap();
        let debits: Vec<_> = (1..=5)
            .map(|stan| call_code(&sim, request(&sim, b"0200", stan, None)))
            .collect();
        let codes = futures::future::join_all(debits).await;
        let approved = codes.iter().filter(|c| c.as_deref() == Some("00")).count();
        assert_eq!(approved, 4, "{codes:?}");
        let (tickets, flushes) = sim.wal.counts();
        assert_eq!(tickets, 5);
        assert!(
            (1..=5).contains(&flushes),
            "{flushes} flushes for {tickets} answers"
        );

        let copy = tempfile::tempdir().unwrap();
        copy_dir(dir.path(), copy.path());
        let copy_token = CancellationToken::new();
        let copied = Simulator::start(config(copy.path()), copy_token.clone())
            .await
            .unwrap();
        assert_eq!(
            copied.balance("E-1"),
            Some(0),
            "every answered debit is on disk"
        );
        let original = format!("0200{:06}1121120000{:022}", 3, 0);
        let reversal = request(&copied, b"0400", 9, Some(&original));
        assert_eq!(call_code(&copied, reversal).await.as_deref(), Some("00"));
        assert_eq!(copied.balance("E-1"), Some(2_500), "its leg too");
        stop(copied, copy_token).await;
        stop(sim, token).await;
    }
}
