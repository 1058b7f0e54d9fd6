//! The switch: one authorization reads top to bottom as
//! frame → decode → duplicate check → route by MTI and processing code → legs → answer.
//!
//! - [`netmgmt`]: F1 network management.
//! - [`wallets`]: F2 balance inquiry, F3/F4 wallet legs, F5 split tender with the credit leg.
//! - [`credit`]: F6 plain credit pass-through, and the credit leg of a split tender.
//! - [`reversal`]: F7 terminal reversals.
//! - [`dedup`]: F10 duplicates and retransmissions.
//! - [`saf`]: compensation of legs through the store-and-forward queue.

pub mod credit;
pub mod dedup;
pub mod netmgmt;
pub mod reversal;
pub mod saf;
pub mod wallets;

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use dashmap::DashMap;
use tokio_util::sync::CancellationToken;

use crate::config::{Config, Profile};
use crate::directory::{CardKey, Directory};
use crate::iso8583::{de, Message, OwnedMessage, Pan, Spec};
use crate::net::link::Link;
use crate::net::server::{BoxFuture, Service};
use dedup::{Dedup, DedupKey};
use saf::Compensator;

/// Response codes (SPEC §4.2).
pub mod rc {
    pub const APPROVED: &str = "00";
    pub const PARTIAL: &str = "10";
    pub const INVALID_TRANSACTION: &str = "12";
    pub const INVALID_CARD: &str = "14";
    pub const ORIGINAL_NOT_FOUND: &str = "25";
    pub const FORMAT_ERROR: &str = "30";
    pub const INSUFFICIENT_FUNDS: &str = "51";
    pub const ISSUER_INOPERATIVE: &str = "91";
    pub const SYSTEM_MALFUNCTION: &str = "96";
}

/// Fields a response echoes from its request (SPEC §4.2).
const ECHOED: [u16; 10] = [3, 4, 7, 11, 12, 13, 37, 41, 42, 49];

/// A completed transaction's legs, kept so that a terminal reversal can undo them.
#[derive(Debug, Clone)]
pub struct TxnRecord {
    /// (link name, the leg's request).
    pub legs: Vec<(String, OwnedMessage)>,
    pub reversed: bool,
}

/// The running switch, shared by every listener.
pub struct Switch {
    pub config: Arc<Config>,
    pub directory: Directory,
    pub links: HashMap<String, Arc<Link>>,
    pub compensator: Arc<Compensator>,
    dedup: Dedup,
    /// Completed transactions by (terminal, STAN, transmission time).
    txns: DashMap<(String, u32, u64), TxnRecord>,
    rrn_seq: AtomicU64,
}

impl Switch {
    pub fn new(
        config: Arc<Config>,
        directory: Directory,
        links: HashMap<String, Arc<Link>>,
        compensator: Arc<Compensator>,
        stop: CancellationToken,
    ) -> Arc<Switch> {
        let window = Duration::from_secs(config.limits.duplicate_window_s);
        let switch = Arc::new(Switch {
            config,
            directory,
            links,
            compensator,
            dedup: Dedup::new(window),
            txns: DashMap::new(),
            rrn_seq: AtomicU64::new(0),
        });
        tokio::spawn(dedup::sweeper(switch.clone(), stop));
        switch
    }

    pub fn card_key(&self) -> Result<CardKey, String> {
        self.config.card_key_bytes().map(CardKey::new)
    }

    /// A retrieval reference number for requests that came without one: day of year, hour,
    /// and a sequence (12 digits).
    pub fn next_rrn(&self) -> String {
        let seq = self.rrn_seq.fetch_add(1, Ordering::Relaxed) % 10_000_000;
        let now = chrono::Utc::now();
        format!(
            "{:03}{}{seq:07}",
            chrono::Datelike::ordinal(&now),
            now.format("%H")
        )
    }

    fn record(&self, request: &Message<'_>, legs: Vec<(String, OwnedMessage)>) {
        if legs.is_empty() {
            return;
        }
        let key = txn_key(
            request.terminal_id().as_deref(),
            request.stan(),
            request.transmission_time(),
        );
        self.txns.insert(
            key,
            TxnRecord {
                legs,
                reversed: false,
            },
        );
    }

    /// Handle one decoded request; the answer is not encoded yet.
    async fn handle(&self, req: &Message<'_>) -> OwnedMessage {
        let mti = req.mti();
        match (mti.class(), mti.is_response()) {
            (_, true) => answer(req, rc::INVALID_TRANSACTION),
            (8, _) => netmgmt::handle(req),
            (1 | 2, _) => self.financial(req).await,
            (4, _) => reversal::handle(self, req).await,
            _ => answer(req, rc::INVALID_TRANSACTION),
        }
    }

    async fn financial(&self, req: &Message<'_>) -> OwnedMessage {
        if let Some(missing) = [de::PROCESSING_CODE, de::STAN, de::TERMINAL_ID]
            .into_iter()
            .find(|&n| !req.has(n))
        {
            tracing::info!(field = missing, "mandatory field missing");
            return answer(req, rc::FORMAT_ERROR);
        }
        let pan = match req.pan() {
            Ok(Some(p)) => p,
            Ok(None) => return answer(req, rc::FORMAT_ERROR),
            Err(e) => {
                tracing::info!(error = %e, "bad card number");
                return answer(req, rc::FORMAT_ERROR);
            }
        };
        let tt = req.transaction_type().unwrap_or(99);
        let codes = &self.config.processing_codes;
        let wallets = match self.directory.wallets(&pan) {
            Ok(w) => w,
            Err(e) => {
                tracing::error!(error = %e, "card directory read failed");
                return answer(req, rc::SYSTEM_MALFUNCTION);
            }
        };
        if codes.inquiry.contains(&tt) {
            return wallets::inquiry(self, req, &wallets).await;
        }
        if codes.purchase.contains(&tt) && !wallets.is_empty() {
            if !req.has(de::AMOUNT) {
                return answer(req, rc::FORMAT_ERROR);
            }
            return wallets::purchase(self, req, &pan, &wallets).await;
        }
        // A card with no wallets, or a processing code the switch does not own: relay (F6).
        credit::pass_through(self, req, &pan).await
    }

    /// The acquirer link for a card.
    fn acquirer(&self, pan: &Pan) -> Option<&Arc<Link>> {
        self.config
            .acquirer_for(pan.expose())
            .and_then(|name| self.links.get(name))
    }
}

fn txn_key(terminal: Option<&str>, stan: Option<u32>, f7: Option<u64>) -> (String, u32, u64) {
    (
        terminal.unwrap_or("").trim().to_string(),
        stan.unwrap_or(0),
        f7.unwrap_or(0),
    )
}

/// A response to `req`: response MTI, the echoed fields, the response code.
pub fn answer(req: &Message<'_>, code: &str) -> OwnedMessage {
    let mut resp = OwnedMessage::with_capacity(req.mti().response(), 256);
    for n in ECHOED {
        resp.copy_from(req, n);
    }
    resp.set(de::RESPONSE_CODE, code.as_bytes());
    resp
}

/// One listener's face of the switch: its layout, and the name duplicates are keyed by.
pub struct ListenerService {
    pub switch: Arc<Switch>,
    pub name: Arc<str>,
    pub profile: Profile,
}

impl Service for ListenerService {
    fn call(&self, request: Bytes, peer: Arc<str>) -> BoxFuture<Vec<Bytes>> {
        let switch = self.switch.clone();
        let spec = self.profile.spec.clone();
        let name = self.name.clone();
        Box::pin(async move {
            let started = Instant::now();
            let answer = process(&switch, &spec, &name, &request, &peer).await;
            metrics::histogram!("cyberswitch_request_duration_seconds", "listener" => name.to_string())
                .record(started.elapsed().as_secs_f64());
            answer.into_iter().collect()
        })
    }

    fn undelivered(&self, answer: Bytes) {
        self.reverse_undelivered(&answer);
    }
}

impl ListenerService {
    /// SPEC F7: an approval the terminal never received is undone, every leg of it.
    fn reverse_undelivered(&self, answer: &[u8]) {
        let Ok(msg) = self.profile.spec.decode(answer) else {
            return;
        };
        let approved = matches!(msg.response_code().as_deref(), Some("00") | Some("10"));
        if !approved || !matches!(msg.mti().class(), 1 | 2) {
            return;
        }
        let key = txn_key(
            msg.terminal_id().as_deref(),
            msg.stan(),
            msg.transmission_time(),
        );
        if let Some(mut record) = self.switch.txns.get_mut(&key) {
            if !record.reversed {
                record.reversed = true;
                metrics::counter!("cyberswitch_undelivered_reversals_total", "listener" => self.name.to_string()).increment(1);
                tracing::warn!(stan = ?msg.stan(), "approval not delivered: reversing its legs");
                for (link, leg) in &record.legs {
                    self.switch.compensator.reverse(link, leg);
                }
            }
        }
    }
}

/// frame → decode → duplicate check → handle → encode.
async fn process(
    switch: &Switch,
    spec: &Spec,
    listener: &str,
    request: &[u8],
    peer: &str,
) -> Option<Bytes> {
    let msg = match spec.decode(request) {
        Ok(m) => m,
        Err(e) => return malformed(spec, listener, request, peer, e),
    };
    metrics::counter!("cyberswitch_messages_total", "link" => listener.to_string(), "dir" => "in", "mti" => msg.mti().to_string()).increment(1);
    let txn_id = format!(
        "{}-{}",
        msg.terminal_id().unwrap_or_default().trim(),
        msg.stan().unwrap_or(0)
    );
    let span = tracing::info_span!("txn", id = %txn_id, mti = %msg.mti());
    let _enter = span.enter();

    let key = DedupKey::of(listener, &msg);
    let claim = match &key {
        Some(k) => switch.dedup.claim(k.clone()),
        None => dedup::Claim::Fresh(None),
    };
    let slot = match claim {
        dedup::Claim::Done(bytes) => {
            metrics::counter!("cyberswitch_duplicates_total", "listener" => listener.to_string())
                .increment(1);
            tracing::info!("duplicate: original answer repeated");
            return Some(bytes);
        }
        dedup::Claim::InFlight(mut wait) => {
            metrics::counter!("cyberswitch_duplicates_total", "listener" => listener.to_string())
                .increment(1);
            // The original is still being processed: answer with its answer when it comes.
            let _ = wait.wait_for(|v| v.is_some()).await;
            return wait.borrow().clone();
        }
        dedup::Claim::Fresh(slot) => slot,
    };

    let flow_started = Instant::now();
    let mut resp = switch.handle(&msg).await;
    if resp.get(de::RRN).is_none() && matches!(msg.mti().class(), 1 | 2 | 4) {
        resp.set(de::RRN, switch.next_rrn().as_bytes());
    }
    let code = resp
        .get(de::RESPONSE_CODE)
        .map(|c| String::from_utf8_lossy(c).into_owned())
        .unwrap_or_default();
    metrics::counter!("cyberswitch_transactions_total", "mti" => msg.mti().to_string(), "code" => code.clone()).increment(1);
    metrics::histogram!("cyberswitch_flow_duration_seconds", "mti" => msg.mti().to_string())
        .record(flow_started.elapsed().as_secs_f64());
    tracing::info!(code = %code, "answered");

    let mut out = BytesMut::new();
    let encoded = match spec.encode(&resp, &mut out) {
        Ok(()) => Some(out.freeze()),
        Err(e) => {
            tracing::error!(error = %e, "answer does not encode");
            let mut fallback = BytesMut::new();
            spec.encode(&answer(&msg, rc::SYSTEM_MALFUNCTION), &mut fallback)
                .ok()
                .map(|_| fallback.freeze())
        }
    };
    if let (Some(key), Some(slot)) = (key, slot) {
        switch.dedup.complete(key, slot, encoded.clone());
    }
    metrics::counter!("cyberswitch_messages_total", "link" => listener.to_string(), "dir" => "out", "mti" => resp.mti().to_string()).increment(1);
    encoded
}

/// A request that does not fit the layout: answered 30 when the MTI and bitmap were readable
/// (SPEC §4.2), otherwise only logged and counted. Never logs field content.
fn malformed(
    spec: &Spec,
    listener: &str,
    request: &[u8],
    peer: &str,
    e: crate::iso8583::DecodeError,
) -> Option<Bytes> {
    metrics::counter!("cyberswitch_decode_errors_total", "link" => listener.to_string(), "reason" => e.label()).increment(1);
    tracing::warn!(listener, peer, error = %e, "undecodable request");
    let (partial, _) = spec.decode_partial(request);
    let msg = partial?;
    if msg.mti().is_response() {
        return None;
    }
    let mut out = BytesMut::new();
    spec.encode(&answer(&msg, rc::FORMAT_ERROR), &mut out)
        .ok()?;
    Some(out.freeze())
}

/// Everything a running switch owns, for `run` and `demo`.
pub struct Running {
    pub switch: Arc<Switch>,
    pub addrs: Vec<(String, std::net::SocketAddr)>,
}

/// Open the data directory, start links and listeners; serve until `stop`.
pub async fn start(config: Config, stop: CancellationToken) -> Result<Running, String> {
    let config = Arc::new(config);
    let key = CardKey::new(config.card_key_bytes()?);
    let db = crate::store::open(&config.data_dir)?;
    let directory = Directory::new(db, key);
    let compensator = Compensator::new(
        Duration::from_millis(config.limits.saf_retry_min_ms),
        Duration::from_millis(config.limits.saf_retry_max_ms),
    );
    let mut links = HashMap::new();
    for lc in &config.links {
        let profile = crate::config::profile(&lc.spec, &lc.framing, lc.max_frame)
            .map_err(|(k, r)| format!("link {}: {k}: {r}", lc.name))?;
        let terminal = format!("CSW{:>05}", lc.name.len() % 100000);
        let link = Link::start(
            lc.clone(),
            profile,
            terminal,
            compensator.clone(),
            stop.clone(),
        );
        links.insert(lc.name.clone(), link);
    }
    compensator.start(links.clone(), stop.clone());
    let switch = Switch::new(config.clone(), directory, links, compensator, stop.clone());
    let mut addrs = Vec::new();
    for lc in &config.listeners {
        let profile = crate::config::profile(&lc.spec, &lc.framing, lc.max_frame)
            .map_err(|(k, r)| format!("listener {}: {k}: {r}", lc.name))?;
        let listener = tokio::net::TcpListener::bind(lc.addr)
            .await
            .map_err(|e| format!("listener {}: bind {}: {e}", lc.name, lc.addr))?;
        let addr = listener.local_addr().map_err(|e| e.to_string())?;
        let limits = crate::net::server::ServerLimits {
            framing: profile.framing,
            max_frame: profile.max_frame,
            max_connections: lc.max_connections,
            max_in_flight: lc.max_in_flight,
            idle_timeout: lc.idle_timeout(),
        };
        let service = Arc::new(ListenerService {
            switch: switch.clone(),
            name: lc.name.clone().into(),
            profile,
        });
        tokio::spawn(crate::net::server::serve(
            lc.name.clone().into(),
            listener,
            limits,
            service,
            stop.clone(),
        ));
        tracing::info!(listener = %lc.name, %addr, "listening");
        addrs.push((lc.name.clone(), addr));
    }
    Ok(Running { switch, addrs })
}
