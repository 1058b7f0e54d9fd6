//! The switch: one authorization reads top to bottom as
//! frame → decode → duplicate check → route by MTI and processing code → legs → answer.
//!
//! - [`netmgmt`]: F1 network management.
//! - [`wallets`]: F2 balance inquiry, F3/F4 wallet legs, F5 split tender with the credit leg.
//! - [`credit`]: F6 plain credit pass-through, and the credit leg of a split tender.
//! - [`reversal`]: F7 terminal reversals.
//! - [`dedup`]: F10 duplicates and retransmissions.
//! - [`txn`]: a transaction's durable state (legs, answer) and start-up recovery.
//! - [`saf`]: compensation of legs through the persistent store-and-forward queue.

pub mod completion;
pub mod credit;
pub mod dedup;
pub mod netmgmt;
pub mod reversal;
pub mod saf;
pub mod testhooks;
pub mod txn;
pub mod wallets;

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use crate::config::{Config, Profile};
use crate::directory::{CardKey, Directory};
use crate::iso8583::{de, Message, Mti, OwnedMessage, Pan, Spec};
use crate::journal::{Journal, Sealer};
use crate::net::link::Link;
use crate::net::server::{BoxFuture, Service};
use crate::observe::{Direction, Family, MessageCounters};
use crate::store::Cf;
use dedup::{Dedup, DedupKey};
use saf::{Saf, SafTiming};
use txn::Txn;

/// Response codes (SPEC §4.2).
pub mod rc {
    pub const APPROVED: &str = "00";
    pub const PARTIAL: &str = "10";
    pub const INVALID_TRANSACTION: &str = "12";
    pub const INVALID_AMOUNT: &str = "13";
    pub const INVALID_CARD: &str = "14";
    pub const ORIGINAL_NOT_FOUND: &str = "25";
    pub const FORMAT_ERROR: &str = "30";
    pub const INSUFFICIENT_FUNDS: &str = "51";
    pub const WRONG_PIN: &str = "55";
    pub const ISSUER_INOPERATIVE: &str = "91";
    pub const SYSTEM_MALFUNCTION: &str = "96";
}

/// Fields a response echoes from its request (SPEC §4.2).
const ECHOED: [u16; 10] = [3, 4, 7, 11, 12, 13, 37, 41, 42, 49];

/// The running switch, shared by every listener.
pub struct Switch {
    pub config: Arc<Config>,
    pub directory: Directory,
    pub links: HashMap<String, Arc<Link>>,
    pub journal: Arc<Journal>,
    pub saf: Arc<Saf>,
    /// The switch's own programs (hosted ledger), served through in-process links.
    pub hosted: Arc<crate::hosted::Hosted>,
    /// PIN keys of listeners (terminal keys) and links (zone keys), by name.
    pin_keys: HashMap<String, crate::pin::PinKey>,
    dedup: Arc<Dedup>,
    /// Serialises changes to each answered transaction (terminal reversals, undelivered
    /// answers).
    reversals: txn::AnsweredLocks,
    /// Requests and advices being processed, by transaction key.
    processing: txn::Processing,
    rrn_seq: AtomicU64,
}

impl Switch {
    pub fn new(
        config: Arc<Config>,
        directory: Directory,
        links: HashMap<String, Arc<Link>>,
        journal: Arc<Journal>,
        saf: Arc<Saf>,
        hosted: Arc<crate::hosted::Hosted>,
        stop: CancellationToken,
    ) -> Result<Arc<Switch>, String> {
        let pin_keys = pin_keys(&config, &hosted)?;
        // Memory holds requests in flight only; answered ones are in the journal's index.
        let window = Duration::from_secs(config.limits.duplicate_window_s.min(60));
        let switch = Arc::new(Switch {
            config,
            directory,
            links,
            journal,
            saf,
            hosted,
            pin_keys,
            dedup: Arc::new(Dedup::new(window)),
            reversals: txn::AnsweredLocks::new(),
            processing: txn::Processing::default(),
            rrn_seq: AtomicU64::new(0),
        });
        tokio::spawn(dedup::sweeper(switch.clone(), stop));
        Ok(switch)
    }

    /// The PIN key of a listener or link, if it has one.
    pub fn pin_key(&self, name: &str) -> Option<&crate::pin::PinKey> {
        self.pin_keys.get(name)
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
            "{:03}{:02}{seq:07}",
            chrono::Datelike::ordinal(&now),
            chrono::Timelike::hour(&now)
        )
    }

    /// An answer given before a restart to a request with this key, within the window.
    fn remembered_answer(&self, key: &DedupKey) -> Option<Bytes> {
        let window_ms = i64::try_from(self.config.limits.duplicate_window_s)
            .unwrap_or(i64::MAX / 1000)
            .saturating_mul(1000);
        match self.journal.get(Cf::Dedup, &key.to_bytes()) {
            Ok(raw) => raw.and_then(|r| txn::dedup_answer(&r, window_ms)),
            Err(e) => {
                tracing::error!(error = %e, "duplicate index read failed");
                None
            }
        }
    }

    /// Handle one decoded request; the answer is not encoded yet.
    async fn handle(&self, req: &Message<'_>, txn: &mut Txn) -> OwnedMessage {
        let mti = req.mti();
        match (mti.class(), mti.is_response()) {
            (_, true) => answer(req, rc::INVALID_TRANSACTION),
            (8, _) => netmgmt::handle(req),
            (2, _) if completion::is_completion(self, req) => completion::handle(self, req).await,
            (1 | 2, _) => self.financial(req, txn).await,
            (4, _) => reversal::handle(self, req).await,
            _ => answer(req, rc::INVALID_TRANSACTION),
        }
    }

    /// Wait for the transaction a follow-up names in field 90 (a reversal, a completion) to
    /// finish if it is still in flight (bounded like it: its legs time out upstream), then
    /// hold it: follow-ups of one original go one at a time. Returns its key and the hold.
    async fn hold_original(
        &self,
        req: &Message<'_>,
        od: &crate::iso8583::OriginalData,
    ) -> (String, tokio::sync::MutexGuard<'_, ()>) {
        let key = txn::txn_key(
            req.terminal_id().as_deref(),
            Some(od.stan),
            Some(od.transmission_time),
        );
        self.processing.finished(&key).await;
        let held = self.reversals.lock(&key).await;
        (key, held)
    }

    async fn financial(&self, req: &Message<'_>, txn: &mut Txn) -> OwnedMessage {
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
        // A hosted card with no wallets is asked for its own balance (F14).
        let own_balance = wallets.is_empty() && self.config.program_for(pan.expose()).is_some();
        if codes.inquiry.contains(&tt) && !own_balance {
            return wallets::inquiry(self, req, txn, &wallets).await;
        }
        if codes.purchase.contains(&tt) && !wallets.is_empty() {
            if !req.has(de::AMOUNT) {
                return answer(req, rc::FORMAT_ERROR);
            }
            return wallets::purchase(self, req, txn, &pan, &wallets).await;
        }
        // A card with no wallets, or a processing code the switch does not own: relay (F6).
        credit::pass_through(self, req, txn, &pan).await
    }

    /// The acquirer link for a card.
    fn acquirer(&self, pan: &Pan) -> Option<&Arc<Link>> {
        self.config
            .acquirer_for(pan.expose())
            .and_then(|name| self.links.get(name))
    }
}

/// Listener (terminal) and link (zone) PIN keys by name; the hosted card link's is the hosted
/// host's own zone key.
fn pin_keys(
    config: &Config,
    hosted: &crate::hosted::Hosted,
) -> Result<HashMap<String, crate::pin::PinKey>, String> {
    let mut keys = HashMap::new();
    for l in &config.listeners {
        if let Some(k) = &l.pin_key {
            keys.insert(
                l.name.clone(),
                k.pin_key()
                    .map_err(|e| format!("listener {}: pin_key: {e}", l.name))?,
            );
        }
    }
    for l in &config.links {
        if let Some(k) = &l.pin_key {
            keys.insert(
                l.name.clone(),
                k.pin_key()
                    .map_err(|e| format!("link {}: pin_key: {e}", l.name))?,
            );
        }
    }
    keys.insert(
        crate::config::HOSTED_CARDS_LINK.to_string(),
        hosted.zone_key.clone(),
    );
    Ok(keys)
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
    metrics: Arc<ListenerMetrics>,
}

/// A listener's metric handles, registered once (see [`crate::observe::Family`]).
struct ListenerMetrics {
    messages: MessageCounters,
    duration: metrics::Histogram,
    transactions: Family<(Mti, [u8; 2]), metrics::Counter>,
    flow_duration: Family<Mti, metrics::Histogram>,
}

impl ListenerMetrics {
    fn new(name: &Arc<str>) -> ListenerMetrics {
        ListenerMetrics {
            messages: MessageCounters::new(name.clone()),
            duration: metrics::histogram!("cyberswitch_request_duration_seconds", "listener" => name.to_string()),
            transactions: Family::new(),
            flow_duration: Family::new(),
        }
    }

    /// A transaction answered with `code` (`cyberswitch_transactions_total`) and how long
    /// its flow took.
    fn answered(&self, mti: Mti, code: &[u8], flow: Duration) {
        let code = <[u8; 2]>::try_from(code).unwrap_or(*b"??");
        self.transactions
            .get((mti, code), |(mti, code)| {
                metrics::counter!("cyberswitch_transactions_total", "mti" => mti.to_string(), "code" => String::from_utf8_lossy(&code).into_owned())
            })
            .increment(1);
        self.flow_duration
            .get(mti, |mti| {
                metrics::histogram!("cyberswitch_flow_duration_seconds", "mti" => mti.to_string())
            })
            .record(flow.as_secs_f64());
    }
}

impl Service for ListenerService {
    fn call(&self, request: Bytes, peer: Arc<str>) -> BoxFuture<Vec<Bytes>> {
        let switch = self.switch.clone();
        let spec = self.profile.spec.clone();
        let name = self.name.clone();
        let metrics = self.metrics.clone();
        Box::pin(async move {
            let started = Instant::now();
            let answer = process(&switch, &spec, &name, &metrics, &request, &peer).await;
            metrics.duration.record(started.elapsed().as_secs_f64());
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
        let key = txn::txn_key(
            msg.terminal_id().as_deref(),
            msg.stan(),
            msg.transmission_time(),
        );
        let switch = self.switch.clone();
        let listener = self.name.to_string();
        tokio::spawn(async move {
            let _one_at_a_time = switch.reversals.lock(&key).await;
            match txn::reverse_answered(
                &switch.journal,
                &switch.saf,
                &key,
                "approval not delivered",
            )
            .await
            {
                Ok(Some(txn::TxnState::Answered)) => {
                    metrics::counter!("cyberswitch_undelivered_reversals_total", "listener" => listener).increment(1);
                    tracing::warn!(txn = %key, "approval not delivered: its legs are reversed");
                }
                Ok(_) => {}
                Err(e) => {
                    tracing::error!(txn = %key, error = %e, "undelivered approval: reversal not recorded")
                }
            }
        });
    }
}

/// frame → decode → duplicate check → handle → encode.
async fn process(
    switch: &Switch,
    spec: &Spec,
    listener: &str,
    metrics: &ListenerMetrics,
    request: &[u8],
    peer: &str,
) -> Option<Bytes> {
    let msg = match spec.decode(request) {
        Ok(m) => m,
        Err(e) => return malformed(spec, listener, request, peer, e),
    };
    metrics.messages.count(Direction::In, msg.mti());
    // Everything logged while this request is handled carries its terminal and STAN. The
    // span is attached to the future, not entered: a guard held across `.await` would leak
    // into whatever else the thread runs meanwhile.
    let span = tracing::info_span!(
        "txn",
        terminal = msg.terminal_id().unwrap_or_default().trim(),
        stan = msg.stan().unwrap_or(0),
        mti = %msg.mti()
    );
    respond(switch, spec, listener, metrics, msg)
        .instrument(span)
        .await
}

/// duplicate check → handle → journal → encode, for a decoded request.
async fn respond(
    switch: &Switch,
    spec: &Spec,
    listener: &str,
    metrics: &ListenerMetrics,
    msg: Message<'_>,
) -> Option<Bytes> {
    let key = DedupKey::of(listener, &msg);
    let claim = match &key {
        Some(k) => switch.dedup.claim(k.clone()),
        None => dedup::Claim::Fresh(None),
    };
    let slot = match claim {
        dedup::Claim::Done(bytes) => return Some(duplicate(listener, bytes)),
        dedup::Claim::InFlight(mut wait) => {
            // The original is still being processed: answer with its answer when it comes.
            let _ = wait.wait_for(|v| v.is_some()).await;
            let original = wait.borrow().clone();
            return original.map(|b| duplicate(listener, b));
        }
        dedup::Claim::Fresh(slot) => slot,
    };
    // Answered before a restart: the journal remembers.
    let (key, slot) = match (key, slot) {
        (Some(k), Some(slot)) => match switch.remembered_answer(&k) {
            Some(bytes) => {
                switch.dedup.complete(k, slot, Some(bytes.clone()));
                return Some(duplicate(listener, bytes));
            }
            None => (Some(k), Some(slot)),
        },
        other => other,
    };

    let flow_started = Instant::now();
    let mut txn = Txn::begin(switch.journal.clone(), switch.saf.clone(), listener, &msg);
    // A terminal's reversal of this transaction, arriving meanwhile, waits for its outcome.
    let _processing = match (txn.key(), msg.mti().class()) {
        (Some(k), 1 | 2) => Some(switch.processing.start(k)),
        _ => None,
    };
    let mut resp = switch.handle(&msg, &mut txn).await;
    if resp.get(de::RRN).is_none() && matches!(msg.mti().class(), 1 | 2 | 4) {
        resp.set(de::RRN, switch.next_rrn().as_bytes());
    }
    let mut encoded = encode_answer(spec, &msg, &resp);
    let dedup_bytes = key.as_ref().map(DedupKey::to_bytes);
    let in_index = {
        let (dedup, key) = (switch.dedup.clone(), key.clone());
        move || {
            if let Some(k) = key {
                dedup.forget(&k);
            }
        }
    };
    if let Err(e) = txn
        .finish(&resp, encoded.as_ref(), dedup_bytes.as_deref(), in_index)
        .await
    {
        // The answer is not on disk: it must not approve anything. What legs were recorded
        // are reversed by recovery at the next start.
        tracing::error!(error = %e, "journal unavailable: answering 96");
        resp = answer(&msg, rc::SYSTEM_MALFUNCTION);
        encoded = encode_answer(spec, &msg, &resp);
    }
    testhooks::crash_point("journal-answer").await;
    let code = resp.get(de::RESPONSE_CODE).unwrap_or_default();
    metrics.answered(msg.mti(), code, flow_started.elapsed());
    // One line per transaction would be the busiest log of all: the journal has them.
    tracing::debug!(code = %String::from_utf8_lossy(code), "answered");

    if let (Some(key), Some(slot)) = (key, slot) {
        switch.dedup.answered(&key, slot, encoded.clone());
    }
    metrics.messages.count(Direction::Out, resp.mti());
    encoded
}

fn duplicate(listener: &str, answer: Bytes) -> Bytes {
    metrics::counter!("cyberswitch_duplicates_total", "listener" => listener.to_string())
        .increment(1);
    tracing::info!("duplicate: original answer repeated");
    answer
}

/// Encode an answer; one that does not fit the layout becomes a plain 96.
fn encode_answer(spec: &Spec, req: &Message<'_>, resp: &OwnedMessage) -> Option<Bytes> {
    let mut out = BytesMut::new();
    match spec.encode(resp, &mut out) {
        Ok(()) => Some(out.freeze()),
        Err(e) => {
            tracing::error!(error = %e, "answer does not encode");
            let mut fallback = BytesMut::new();
            spec.encode(&answer(req, rc::SYSTEM_MALFUNCTION), &mut fallback)
                .ok()
                .map(|_| fallback.freeze())
        }
    }
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
    /// Where the admin API listens, when configured.
    pub admin: Option<std::net::SocketAddr>,
}

/// In-process links: one per hosted wallet issuer (named after it), and one for the hosted
/// card programs.
fn local_links(
    config: &Config,
    hosted: &Arc<crate::hosted::Hosted>,
    saf: &Arc<Saf>,
) -> Result<HashMap<String, Arc<Link>>, String> {
    use crate::hosted::host::{CardHost, WalletHost};
    let profile = crate::config::profile(
        &crate::config::default_spec(),
        &crate::config::default_framing(),
        crate::net::framing::DEFAULT_MAX_FRAME,
    )
    .map_err(|(k, r)| format!("hosted links: {k}: {r}"))?;
    let mut links = HashMap::new();
    for iss in config.issuers.iter().filter(|i| i.hosted) {
        let host = Arc::new(WalletHost::new(
            hosted.clone(),
            &iss.id,
            profile.spec.clone(),
        ));
        let link = Link::local(&iss.id, profile.clone(), host, saf.clone());
        links.insert(iss.id.clone(), link);
    }
    if !config.hosted.programs.is_empty() {
        let name = crate::config::HOSTED_CARDS_LINK;
        let host = Arc::new(CardHost::new(hosted.clone(), profile.spec.clone()));
        links.insert(
            name.to_string(),
            Link::local(name, profile.clone(), host, saf.clone()),
        );
    }
    Ok(links)
}

/// Open the data directory, start links and listeners; serve until `stop`.
pub async fn start(config: Config, stop: CancellationToken) -> Result<Running, String> {
    let config = Arc::new(config);
    let key = CardKey::new(config.card_key_bytes()?);
    testhooks::warn_if_armed();
    tokio::spawn(crate::observe::watch_runtime_lag(stop.clone()));
    let retention = config.limits.journal_retention();
    let db = crate::store::open_with(
        &config.data_dir,
        crate::store::Expiry {
            dedup_window: Some(Duration::from_secs(config.limits.duplicate_window_s)),
            txns: retention.map(|kept| (kept, txn::ended_at_ms as crate::store::EndedAt)),
        },
    )?;
    let journal = Journal::open(
        db.clone(),
        Sealer::from_card_key(&config.card_key_bytes()?),
        config.limits.journal_batch_max,
    )?;
    let archive = config.limits.journal_archive_dir.clone();
    if let Some(dir) = &archive {
        // Found unwritable now, not at the first purge an hour from now.
        std::fs::create_dir_all(dir).map_err(|e| {
            format!(
                "limits.journal_archive_dir: {}: cannot create: {e}",
                dir.display()
            )
        })?;
    }
    tokio::spawn(crate::journal::retention::housekeeping(
        db.clone(),
        retention.map(|kept| crate::journal::retention::Retention { kept, archive }),
        Duration::from_secs(30),
        stop.clone(),
    ));
    let directory = Directory::new(db, key.clone());
    let saf = Saf::open(
        journal.clone(),
        SafTiming {
            retry_min: Duration::from_millis(config.limits.saf_retry_min_ms),
            retry_max: Duration::from_millis(config.limits.saf_retry_max_ms),
            expiry: Duration::from_secs(config.limits.saf_expiry_s),
        },
    )?;
    if testhooks::skip_recovery() {
        tracing::warn!("recovery skipped (test-only switch)");
    } else {
        let recovered = txn::recover(&journal, &saf).await?;
        if recovered > 0 {
            tracing::warn!(
                recovered,
                "start-up recovery: unanswered transactions reversed"
            );
        }
    }
    let hosted = crate::hosted::Hosted::open(journal.clone(), config.clone(), key.clone()).await?;
    hosted.start_expiry(stop.clone());
    let mut links = local_links(&config, &hosted, &saf)?;
    for lc in &config.links {
        let profile = crate::config::profile(&lc.spec, &lc.framing, lc.max_frame)
            .map_err(|(k, r)| format!("link {}: {k}: {r}", lc.name))?;
        let terminal = format!("CSW{:>05}", lc.name.len() % 100000);
        let link = Link::start(lc.clone(), profile, terminal, saf.clone(), stop.clone());
        links.insert(lc.name.clone(), link);
    }
    saf.start(links.clone(), stop.clone());
    let switch = Switch::new(
        config.clone(),
        directory,
        links,
        journal,
        saf,
        hosted,
        stop.clone(),
    )?;
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
        let name: Arc<str> = lc.name.clone().into();
        let service = Arc::new(ListenerService {
            switch: switch.clone(),
            metrics: Arc::new(ListenerMetrics::new(&name)),
            name,
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
    let admin = match &config.admin {
        Some(a) => Some(crate::admin::serve(a, switch.clone(), stop.clone()).await?),
        None => None,
    };
    Ok(Running {
        switch,
        addrs,
        admin,
    })
}
