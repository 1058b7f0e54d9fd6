//! Simulators of the upstream hosts (SPEC §6): a wallet issuer and a card acquirer, real TCP
//! servers speaking the same ISO 8583 contract as the real hosts, with balances that persist
//! in their own RocksDB directory and per-account (issuer) or per-card (acquirer) behaviours:
//! decline with a code, delay, never answer, answer twice.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use dashmap::DashMap;
use rocksdb::DB;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::config::{default_framing, default_spec, Profile};
use crate::iso8583::{de, response, AdditionalAmount, Message, OwnedMessage, ResponseCode, Spec};
use crate::net::server::{self, BoxFuture, ServerLimits, Service};

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
}

impl SimConfig {
    pub fn load(path: &Path) -> Result<SimConfig, String> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| format!("{}: cannot read: {e}", path.display()))?;
        toml::from_str(&text)
            .map_err(|e| format!("{}: {}", path.display(), e.to_string().trim_end()))
    }
}

/// A money movement the simulator recorded, for reversals and duplicate requests.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Leg {
    /// Issuer: the account; acquirer: SHA-256 of the card number.
    target: String,
    /// Signed effect on the target: negative for a debit.
    delta: i64,
    reversed: bool,
    /// The answer given, replayed for a retransmission.
    response_code: String,
    auth_code: String,
}

impl Leg {
    /// Stored like the switch's records (a version byte, then postcard); simulator data from
    /// earlier versions holds JSON.
    fn to_bytes(&self) -> Vec<u8> {
        crate::journal::stored::to_bytes(self)
    }

    fn from_bytes(raw: &[u8]) -> Option<Leg> {
        crate::journal::stored::from_bytes(raw)
            .unwrap_or_else(|| serde_json::from_slice(raw).map_err(|e| e.to_string()))
            .ok()
    }
}

/// A running simulator.
pub struct Simulator {
    pub name: String,
    pub addr: SocketAddr,
    kind: SimKind,
    spec: Arc<Spec>,
    db: DB,
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
        // A simulator stands for a host elsewhere: its writes go to the operating system in
        // batches (see `flush_log`) rather than one system call per request, which on a
        // machine shared with the switch would be charged to the switch's figures.
        opts.set_manual_wal_flush(true);
        let db = DB::open(&opts, &config.data_dir)
            .map_err(|e| format!("{}: {e}", config.data_dir.display()))?;
        if fresh {
            for a in &config.accounts {
                db.put(account_key(&a.id), a.balance.to_be_bytes())
                    .map_err(|e| e.to_string())?;
            }
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
            db,
            behaviours: config
                .behaviours
                .iter()
                .map(|b| (b.target.clone(), b.clone()))
                .collect(),
            approve_limit: config.approve_limit,
            balances,
            auth_counter: std::sync::atomic::AtomicU32::new(1),
        });
        let limits = ServerLimits {
            framing: prof.framing,
            max_frame: prof.max_frame,
            max_connections: 1_000,
            max_in_flight: 1_024,
            idle_timeout: Duration::from_secs(3_600),
        };
        tokio::spawn(server::serve(
            config.name.clone().into(),
            listener,
            limits,
            sim.clone() as Arc<dyn Service>,
            stop.clone(),
        ));
        tokio::spawn(flush_log(sim.clone(), stop));
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

    fn answer(&self, request: &[u8]) -> (Option<OwnedMessage>, Behaviour) {
        let msg = match self.spec.decode(request) {
            Ok(m) => m,
            Err(e) => {
                tracing::warn!(simulator = %self.name, error = %e, "undecodable request");
                return (None, Behaviour::default());
            }
        };
        let mut resp = response::reply(&msg, &response::HOST_ECHOED);
        let target = match self.kind {
            SimKind::Issuer => msg.str(102).map(|s| s.into_owned()).unwrap_or_default(),
            SimKind::Acquirer => msg
                .pan()
                .ok()
                .flatten()
                .map(|p| p.expose().to_string())
                .unwrap_or_default(),
        };
        let behaviour = self.behaviours.get(&target).cloned().unwrap_or_default();
        let code = match msg.mti().class() {
            8 => code(ResponseCode::Approved),
            2 if msg.mti().as_bytes()[2] == b'2' && msg.has(90) => self.completion(&msg),
            1 | 2 => self.money(&msg, &target, &behaviour, &mut resp),
            4 => self.reversal(&msg),
            _ => code(ResponseCode::InvalidTransaction),
        };
        resp.set(de::RESPONSE_CODE, code.as_bytes());
        (Some(resp), behaviour)
    }

    /// Inquiry, debit, credit or (acquirer) authorization.
    fn money(
        &self,
        msg: &Message<'_>,
        target: &str,
        b: &Behaviour,
        resp: &mut OwnedMessage,
    ) -> String {
        let pc = msg.transaction_type().unwrap_or(99);
        let amount = msg.amount().unwrap_or(0) as i64; // ok: 12 digits fit
        let target_key = match self.kind {
            SimKind::Issuer => target.to_string(),
            SimKind::Acquirer => card_target(target),
        };
        // The account is held until its leg is written: requests on one account, and
        // retransmissions of one leg (which name the same account), are applied one at a
        // time; requests on other accounts go on meanwhile.
        let account = match self.kind {
            SimKind::Issuer => match self.account(&target_key) {
                Some(a) => a,
                None => return code(ResponseCode::InvalidCard),
            },
            SimKind::Acquirer => self.account_or_new(&target_key),
        };
        let mut account = lock(&account);
        let key = leg_key(msg);
        if let Some(leg) = self.leg(&key) {
            // A retransmission: the same answer, no second effect.
            resp.set(38, leg.auth_code.as_bytes());
            return leg.response_code;
        }
        let inquiry = pc == 31;
        if let Some(code) = &b.decline {
            let applies = (!inquiry || b.inquiries)
                && b.decline_above.is_none_or(|limit| amount as u64 > limit);
            if applies {
                return code.clone();
            }
        }
        let delta = match self.kind {
            SimKind::Issuer => {
                if inquiry {
                    set_balance(resp, msg, *account);
                    return code(ResponseCode::Approved);
                }
                let delta = match pc {
                    0 => -amount,
                    20 | 21 => amount,
                    _ => return code(ResponseCode::InvalidTransaction),
                };
                if *account + delta < 0 {
                    return code(ResponseCode::InsufficientFunds);
                }
                delta
            }
            SimKind::Acquirer => {
                if self.approve_limit.is_some_and(|l| amount as u64 > l) {
                    return code(ResponseCode::InsufficientFunds);
                }
                if pc == 20 {
                    -amount
                } else {
                    amount
                }
            }
        };
        let auth = format!(
            "{:06}",
            self.auth_counter
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed)
                % 1_000_000
        );
        let after = *account + delta;
        let leg = Leg {
            target: target_key.clone(),
            delta,
            reversed: false,
            response_code: code(ResponseCode::Approved),
            auth_code: auth.clone(),
        };
        let mut batch = rocksdb::WriteBatch::default();
        batch.put(account_key(&target_key), after.to_be_bytes());
        batch.put(&key, leg.to_bytes());
        if self.db.write(batch).is_err() {
            return code(ResponseCode::SystemMalfunction);
        }
        *account = after;
        resp.set(38, auth.as_bytes());
        if self.kind == SimKind::Issuer {
            set_balance(resp, msg, after);
        }
        code(ResponseCode::Approved)
    }

    /// 0220/0221: take the amount of field 4 for the authorization named in field 90 and
    /// give back the rest; the leg's effect becomes the completed amount (what a later
    /// reversal undoes). Unknown: 25; reversed or declined: 12; more than authorized: 13;
    /// already completed: 00 again, nothing moved.
    fn completion(&self, msg: &Message<'_>) -> String {
        let Some(key) = original_leg_key(msg) else {
            return code(ResponseCode::FormatError);
        };
        let Some(target) = self.leg(&key).map(|l| l.target) else {
            return code(ResponseCode::OriginalNotFound);
        };
        let account = self.account_or_new(&target);
        let mut account = lock(&account);
        let Some(mut leg) = self.leg(&key) else {
            return code(ResponseCode::SystemMalfunction);
        };
        let done = format!("done/{key}");
        match self.db.get(&done) {
            Ok(Some(_)) => return code(ResponseCode::Approved),
            Ok(None) => {}
            Err(_) => return code(ResponseCode::SystemMalfunction),
        }
        if leg.reversed || leg.response_code != ResponseCode::Approved.as_str() {
            return code(ResponseCode::InvalidTransaction);
        }
        let completed = msg.amount().unwrap_or(0) as i64; // ok: 12 digits fit
        if completed <= 0 || completed > leg.delta.abs() {
            return code(ResponseCode::InvalidAmount);
        }
        let delta = completed * leg.delta.signum();
        let after = *account - leg.delta + delta;
        leg.delta = delta;
        let mut batch = rocksdb::WriteBatch::default();
        batch.put(account_key(&leg.target), after.to_be_bytes());
        batch.put(&key, leg.to_bytes());
        batch.put(&done, completed.to_be_bytes());
        if self.db.write(batch).is_err() {
            return code(ResponseCode::SystemMalfunction);
        }
        *account = after;
        code(ResponseCode::Approved)
    }

    /// 0400/0420/0421: undo the leg named in field 90. Unknown: 25; already reversed: 00.
    fn reversal(&self, msg: &Message<'_>) -> String {
        let Some(key) = original_leg_key(msg) else {
            return code(ResponseCode::FormatError);
        };
        let Some(target) = self.leg(&key).map(|l| l.target) else {
            return code(ResponseCode::OriginalNotFound);
        };
        // Read the leg again with its account held: a concurrent repeat of this reversal
        // finds it reversed.
        let account = self.account_or_new(&target);
        let mut account = lock(&account);
        let Some(mut leg) = self.leg(&key) else {
            return code(ResponseCode::SystemMalfunction);
        };
        if leg.reversed || leg.response_code != ResponseCode::Approved.as_str() {
            return code(ResponseCode::Approved);
        }
        leg.reversed = true;
        let after = *account - leg.delta;
        let mut batch = rocksdb::WriteBatch::default();
        batch.put(account_key(&leg.target), after.to_be_bytes());
        batch.put(&key, leg.to_bytes());
        if self.db.write(batch).is_err() {
            return code(ResponseCode::SystemMalfunction);
        }
        *account = after;
        code(ResponseCode::Approved)
    }

    fn leg(&self, key: &str) -> Option<Leg> {
        self.db
            .get(key)
            .ok()
            .flatten()
            .and_then(|raw| Leg::from_bytes(&raw))
    }
}

impl Service for Simulator {
    fn call(&self, request: Bytes, _peer: Arc<str>) -> BoxFuture<Vec<Bytes>> {
        let (answer, behaviour) = self.answer(&request);
        let encoded = answer.and_then(|a| {
            let mut buf = BytesMut::new();
            self.spec.encode(&a, &mut buf).ok().map(|_| buf.freeze())
        });
        Box::pin(async move {
            let Some(bytes) = encoded else {
                return Vec::new();
            };
            if behaviour.silent {
                return Vec::new();
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

/// Hand the simulator's buffered writes to the operating system every few milliseconds, and
/// once more when it stops: a crash of the process loses at most that much of the
/// simulator's own record (never the switch's, which syncs its journal itself).
async fn flush_log(sim: Arc<Simulator>, stop: CancellationToken) {
    let mut tick = tokio::time::interval(LOG_FLUSH_INTERVAL);
    loop {
        tokio::select! {
            _ = stop.cancelled() => break,
            _ = tick.tick() => {}
        }
        if let Err(e) = sim.db.flush_wal(false) {
            tracing::warn!(simulator = %sim.name, error = %e, "log flush failed");
        }
    }
    let _ = sim.db.flush_wal(false);
}

const LOG_FLUSH_INTERVAL: Duration = Duration::from_millis(20);

impl Drop for Simulator {
    fn drop(&mut self) {
        let _ = self.db.flush_wal(false);
    }
}

/// Field 54 with the available balance (amount type 02) in the account's units.
fn set_balance(resp: &mut OwnedMessage, msg: &Message<'_>, balance: i64) {
    let block = AdditionalAmount {
        account_type: *b"60",
        amount_type: *b"02",
        currency: msg.currency().unwrap_or(410),
        amount: balance,
    };
    resp.set(54, &AdditionalAmount::encode_all(&[block]));
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

/// A balance's lock. A thread that panicked holding it left the balance as it was before its
/// write (the balance is set only after the database write succeeded), so it is still right.
fn lock(account: &Mutex<i64>) -> std::sync::MutexGuard<'_, i64> {
    account
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// The key of the leg a reversal or completion names in field 90.
fn original_leg_key(msg: &Message<'_>) -> Option<String> {
    let od = msg.original_data().ok().flatten()?;
    Some(leg_key_of(msg, od.stan.into(), od.transmission_time))
}

fn account_key(id: &str) -> Vec<u8> {
    format!("acct/{id}").into_bytes()
}

/// The acquirer keeps card totals under a hash of the card number, never the number.
fn card_target(pan: &str) -> String {
    let digest = Sha256::digest(pan.as_bytes());
    format!("card-{}", hex::encode(&digest[..12]))
}

fn leg_key(msg: &Message<'_>) -> String {
    leg_key_of(
        msg,
        msg.stan().unwrap_or(0).into(),
        msg.transmission_time().unwrap_or(0),
    )
}

/// A leg is known by its terminal, STAN and transmission time.
fn leg_key_of(msg: &Message<'_>, stan: u64, transmission_time: u64) -> String {
    format!(
        "leg/{}/{stan:06}/{transmission_time:010}",
        msg.str(41).unwrap_or_default().trim(),
    )
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

/// A response code as the simulator keeps it (a configured decline may be any code).
fn code(c: ResponseCode) -> String {
    c.as_str().to_string()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::iso8583::Mti;

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
        let (answer, _) = sim.answer(&request);
        String::from_utf8(answer.unwrap().get(39).unwrap().to_vec()).unwrap()
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
}
