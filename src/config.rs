//! The switch's configuration (`config/cyberswitch.toml` documents every key). Loading checks
//! everything a running switch would trip over later — unknown keys, bad addresses, specs that
//! do not load, links and issuers that refer to nothing — and names the file, the key and the
//! reason.

use std::collections::HashSet;
use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use serde::Deserialize;

use crate::iso8583::Spec;
use crate::net::framing::{Framing, DEFAULT_MAX_FRAME};

/// A configuration that cannot be used: file, key and reason.
#[derive(Debug, Clone, thiserror::Error)]
pub struct ConfigError {
    pub file: PathBuf,
    pub key: String,
    pub reason: String,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.key.is_empty() {
            write!(f, "{}: {}", self.file.display(), self.reason)
        } else {
            write!(f, "{}: {}: {}", self.file.display(), self.key, self.reason)
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Where the switch keeps its RocksDB data.
    pub data_dir: PathBuf,
    /// Prometheus `/metrics` address; absent: no metrics endpoint.
    pub metrics_addr: Option<SocketAddr>,
    /// HMAC-SHA-256 key for card look-ups, as hex (at least 32 bytes). Prefer `card_key_env`.
    pub card_key: Option<String>,
    /// Name of the environment variable holding the card key (hex).
    pub card_key_env: Option<String>,
    /// A file holding the card key (hex), e.g. the one the demo generates.
    pub card_key_file: Option<PathBuf>,
    /// Transaction currency (ISO 4217 numeric) the switch works in.
    #[serde(default = "default_currency")]
    pub currency: u16,
    /// The switch's institution id, used in field 32 and as the terminal id of its own
    /// upstream network management.
    #[serde(default = "default_institution")]
    pub institution_id: String,
    #[serde(default, rename = "listener")]
    pub listeners: Vec<ListenerConfig>,
    #[serde(default, rename = "link")]
    pub links: Vec<LinkConfig>,
    #[serde(default, rename = "issuer")]
    pub issuers: Vec<IssuerConfig>,
    #[serde(default)]
    pub routing: RoutingConfig,
    #[serde(default)]
    pub processing_codes: ProcessingCodes,
    #[serde(default)]
    pub limits: Limits,
}

fn default_currency() -> u16 {
    410
}
fn default_institution() -> String {
    "00000000001".into()
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ListenerConfig {
    pub name: String,
    pub addr: SocketAddr,
    #[serde(default = "default_spec")]
    pub spec: String,
    #[serde(default = "default_framing")]
    pub framing: String,
    #[serde(default = "default_max_frame")]
    pub max_frame: usize,
    #[serde(default = "default_max_connections")]
    pub max_connections: usize,
    /// Requests of one connection being processed at once; reading pauses beyond it.
    #[serde(default = "default_conn_in_flight")]
    pub max_in_flight: usize,
    /// A connection that sends nothing (not even a keep-alive) for this long is closed.
    #[serde(default = "default_idle_ms")]
    pub idle_timeout_ms: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LinkKind {
    Issuer,
    Acquirer,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LinkConfig {
    pub name: String,
    pub kind: LinkKind,
    /// Hosts in failover order.
    pub hosts: Vec<String>,
    /// TCP sessions kept open (requests are spread over them).
    #[serde(default = "one")]
    pub sessions: usize,
    #[serde(default = "default_spec")]
    pub spec: String,
    #[serde(default = "default_framing")]
    pub framing: String,
    #[serde(default = "default_max_frame")]
    pub max_frame: usize,
    /// Per-request answer timeout.
    #[serde(default = "default_timeout_ms")]
    pub timeout_ms: u64,
    /// Echo (0800/301) after this much idle time.
    #[serde(default = "default_echo_ms")]
    pub echo_interval_ms: u64,
    /// Consecutive failed echoes after which the session is dropped and reconnected.
    #[serde(default = "default_echo_failures")]
    pub echo_failures: u32,
    /// Sign on (0800/001) when a session connects.
    #[serde(default = "yes")]
    pub sign_on: bool,
    /// Fields that match an answer to its request: `mti_class` and field numbers.
    #[serde(default = "default_match_key")]
    pub match_key: Vec<String>,
    /// Requests awaiting an answer on the whole link; more wait for a slot.
    #[serde(default = "default_link_in_flight")]
    pub max_in_flight: usize,
    #[serde(default = "default_backoff_min")]
    pub reconnect_min_ms: u64,
    #[serde(default = "default_backoff_max")]
    pub reconnect_max_ms: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum WalletKind {
    Giftcert,
    Emoney,
    Points,
}

impl WalletKind {
    pub fn as_str(self) -> &'static str {
        match self {
            WalletKind::Giftcert => "giftcert",
            WalletKind::Emoney => "emoney",
            WalletKind::Points => "points",
        }
    }
    /// Automatic tender drains gift certificates first, then e-money, then points (SPEC F4).
    pub fn tender_rank(self) -> u8 {
        match self {
            WalletKind::Giftcert => 0,
            WalletKind::Emoney => 1,
            WalletKind::Points => 2,
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IssuerConfig {
    pub id: String,
    pub kind: WalletKind,
    /// The wallet's unit, as shown to terminals (`KRW`, `P`).
    pub unit: String,
    /// Wallet units per currency minor unit (points: e.g. 2).
    #[serde(default = "one_u64")]
    pub units_per_currency_unit: u64,
    /// The upstream link this issuer is reached through.
    pub link: String,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RoutingConfig {
    pub default_acquirer: Option<String>,
    #[serde(default, rename = "bin")]
    pub bins: Vec<BinRoute>,
}

/// Card numbers whose leading digits fall in `from..=to` (compared on the shorter length)
/// go to `acquirer`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BinRoute {
    pub from: String,
    pub to: String,
    pub acquirer: String,
}

/// Which processing codes (first two digits) mean what.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProcessingCodes {
    #[serde(default = "pc_inquiry")]
    pub inquiry: Vec<u8>,
    #[serde(default = "pc_purchase")]
    pub purchase: Vec<u8>,
    #[serde(default = "pc_refund")]
    pub refund: Vec<u8>,
    #[serde(default = "pc_load")]
    pub load: Vec<u8>,
}

impl Default for ProcessingCodes {
    fn default() -> Self {
        ProcessingCodes {
            inquiry: pc_inquiry(),
            purchase: pc_purchase(),
            refund: pc_refund(),
            load: pc_load(),
        }
    }
}

fn pc_inquiry() -> Vec<u8> {
    vec![31]
}
fn pc_purchase() -> Vec<u8> {
    vec![0]
}
fn pc_refund() -> Vec<u8> {
    vec![20]
}
fn pc_load() -> Vec<u8> {
    vec![21]
}

/// Limits that are not per listener or link.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Limits {
    /// How long a request key is remembered for duplicate detection.
    #[serde(default = "default_dedup_s")]
    pub duplicate_window_s: u64,
    /// Store-and-forward: first retry delay and its ceiling.
    #[serde(default = "default_saf_min")]
    pub saf_retry_min_ms: u64,
    #[serde(default = "default_saf_max")]
    pub saf_retry_max_ms: u64,
    /// Store-and-forward: an item unacknowledged this long goes to the dead-letter list.
    #[serde(default = "default_saf_expiry")]
    pub saf_expiry_s: u64,
    /// Journal group commit: at most this many steps share one write and one sync.
    #[serde(default = "default_journal_batch")]
    pub journal_batch_max: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            duplicate_window_s: default_dedup_s(),
            saf_retry_min_ms: default_saf_min(),
            saf_retry_max_ms: default_saf_max(),
            saf_expiry_s: default_saf_expiry(),
            journal_batch_max: default_journal_batch(),
        }
    }
}

fn default_dedup_s() -> u64 {
    86_400
}
fn default_saf_min() -> u64 {
    200
}
fn default_saf_max() -> u64 {
    30_000
}
fn default_saf_expiry() -> u64 {
    7 * 86_400
}
fn default_journal_batch() -> usize {
    1024
}
pub(crate) fn default_spec() -> String {
    "iso87-ascii".into()
}
pub(crate) fn default_framing() -> String {
    "binary2".into()
}
fn default_max_frame() -> usize {
    DEFAULT_MAX_FRAME
}
fn default_max_connections() -> usize {
    10_000
}
fn default_conn_in_flight() -> usize {
    64
}
fn default_idle_ms() -> u64 {
    300_000
}
fn default_timeout_ms() -> u64 {
    2_000
}
fn default_echo_ms() -> u64 {
    30_000
}
fn default_echo_failures() -> u32 {
    3
}
fn default_match_key() -> Vec<String> {
    vec!["mti_class".into(), "11".into(), "41".into()]
}
fn default_link_in_flight() -> usize {
    1_024
}
fn default_backoff_min() -> u64 {
    100
}
fn default_backoff_max() -> u64 {
    10_000
}
fn one() -> usize {
    1
}
fn one_u64() -> u64 {
    1
}
fn yes() -> bool {
    true
}

/// A listener or link's wire profile, resolved: the loaded spec and the parsed framing.
#[derive(Debug, Clone)]
pub struct Profile {
    pub spec: Arc<Spec>,
    pub framing: Framing,
    pub max_frame: usize,
}

impl ListenerConfig {
    pub fn idle_timeout(&self) -> Duration {
        Duration::from_millis(self.idle_timeout_ms)
    }
}

impl LinkConfig {
    pub fn timeout(&self) -> Duration {
        Duration::from_millis(self.timeout_ms)
    }
}

impl Config {
    /// Read and check a configuration file.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|e| ConfigError {
            file: path.to_path_buf(),
            key: String::new(),
            reason: format!("cannot read: {e}"),
        })?;
        Config::from_toml(&text, path)
    }

    pub fn from_toml(text: &str, origin: &Path) -> Result<Config, ConfigError> {
        let config: Config = toml::from_str(text).map_err(|e| ConfigError {
            file: origin.to_path_buf(),
            key: String::new(),
            reason: e.to_string().trim_end().to_string(),
        })?;
        config.check(origin)?;
        Ok(config)
    }

    fn check(&self, origin: &Path) -> Result<(), ConfigError> {
        let err = |key: String, reason: String| ConfigError {
            file: origin.to_path_buf(),
            key,
            reason,
        };
        let mut names = HashSet::new();
        for (i, l) in self.listeners.iter().enumerate() {
            let key = |k: &str| format!("listener[{i}].{k}");
            if !names.insert(l.name.clone()) {
                return Err(err(key("name"), format!("duplicate name {:?}", l.name)));
            }
            profile(&l.spec, &l.framing, l.max_frame).map_err(|(k, r)| err(key(k), r))?;
            if l.max_connections == 0 || l.max_in_flight == 0 {
                return Err(err(
                    key("max_in_flight"),
                    "limits must be at least 1".into(),
                ));
            }
        }
        let mut link_names = HashSet::new();
        for (i, l) in self.links.iter().enumerate() {
            let key = |k: &str| format!("link[{i}].{k}");
            if !link_names.insert(l.name.clone()) {
                return Err(err(
                    key("name"),
                    format!("duplicate link name {:?}", l.name),
                ));
            }
            if l.hosts.is_empty() {
                return Err(err(key("hosts"), "at least one host is needed".into()));
            }
            profile(&l.spec, &l.framing, l.max_frame).map_err(|(k, r)| err(key(k), r))?;
            for f in &l.match_key {
                if f != "mti_class" && !f.parse::<u16>().is_ok_and(|n| (2..=128).contains(&n)) {
                    return Err(err(
                        key("match_key"),
                        format!("{f:?} is neither mti_class nor a field number"),
                    ));
                }
            }
            if l.sessions == 0 || l.max_in_flight == 0 || l.timeout_ms == 0 {
                return Err(err(
                    key("sessions"),
                    "sessions, max_in_flight and timeout_ms must be at least 1".into(),
                ));
            }
        }
        let link_kind = |name: &str| self.links.iter().find(|l| l.name == name).map(|l| l.kind);
        let mut issuer_ids = HashSet::new();
        for (i, iss) in self.issuers.iter().enumerate() {
            let key = |k: &str| format!("issuer[{i}].{k}");
            if !issuer_ids.insert(iss.id.clone()) {
                return Err(err(key("id"), format!("duplicate issuer id {:?}", iss.id)));
            }
            if iss.units_per_currency_unit == 0 {
                return Err(err(
                    key("units_per_currency_unit"),
                    "must be at least 1".into(),
                ));
            }
            match link_kind(&iss.link) {
                Some(LinkKind::Issuer) => {}
                Some(LinkKind::Acquirer) => {
                    return Err(err(
                        key("link"),
                        format!("{:?} is an acquirer link", iss.link),
                    ))
                }
                None => return Err(err(key("link"), format!("no link named {:?}", iss.link))),
            }
        }
        let acquirer = |name: &str, k: String| match link_kind(name) {
            Some(LinkKind::Acquirer) => Ok(()),
            _ => Err(err(k, format!("no acquirer link named {name:?}"))),
        };
        if let Some(a) = &self.routing.default_acquirer {
            acquirer(a, "routing.default_acquirer".into())?;
        }
        for (i, b) in self.routing.bins.iter().enumerate() {
            acquirer(&b.acquirer, format!("routing.bin[{i}].acquirer"))?;
            let digits =
                |s: &str| !s.is_empty() && s.len() <= 19 && s.bytes().all(|c| c.is_ascii_digit());
            if !digits(&b.from) || !digits(&b.to) || b.from.len() != b.to.len() || b.from > b.to {
                return Err(err(
                    format!("routing.bin[{i}]"),
                    "from and to must be digit strings of equal length with from <= to".into(),
                ));
            }
        }
        let l = &self.limits;
        if l.saf_retry_min_ms == 0 || l.saf_retry_max_ms < l.saf_retry_min_ms {
            return Err(err(
                "limits.saf_retry_max_ms".into(),
                "retry delays must be at least 1 ms, the ceiling not below the first".into(),
            ));
        }
        if l.saf_expiry_s == 0 || l.journal_batch_max == 0 || l.duplicate_window_s == 0 {
            return Err(err(
                "limits".into(),
                "saf_expiry_s, journal_batch_max and duplicate_window_s must be at least 1".into(),
            ));
        }
        if self.card_key.is_none() && self.card_key_env.is_none() && self.card_key_file.is_none() {
            return Err(err(
                "card_key".into(),
                "set card_key_env (or card_key) to the HMAC key for card look-ups".into(),
            ));
        }
        self.card_key_bytes()
            .map_err(|r| err("card_key".into(), r))?;
        Ok(())
    }

    /// The card look-up key, from the environment variable if named, else from the file.
    pub fn card_key_bytes(&self) -> Result<Vec<u8>, String> {
        let from_env = self
            .card_key_env
            .as_ref()
            .and_then(|var| std::env::var(var).ok().map(|v| (v, format!("${var}"))));
        let (text, origin) = match (from_env, &self.card_key_file, &self.card_key) {
            (Some(found), _, _) => found,
            (None, Some(path), _) => (
                std::fs::read_to_string(path)
                    .map_err(|e| format!("{}: cannot read: {e}", path.display()))?,
                path.display().to_string(),
            ),
            (None, None, Some(k)) => (k.clone(), "card_key".to_string()),
            (None, None, None) => {
                return Err(match &self.card_key_env {
                    Some(var) => format!("environment variable {var} is not set"),
                    None => "no card key configured".into(),
                })
            }
        };
        let key = hex::decode(text.trim()).map_err(|e| format!("{origin}: not hex: {e}"))?;
        if key.len() < 32 {
            return Err(format!(
                "{origin}: the key must be at least 32 bytes, got {}",
                key.len()
            ));
        }
        Ok(key)
    }

    pub fn issuer(&self, id: &str) -> Option<&IssuerConfig> {
        self.issuers.iter().find(|i| i.id == id)
    }

    /// The acquirer link for a card number: the first matching BIN range, else the default.
    pub fn acquirer_for(&self, pan_digits: &str) -> Option<&str> {
        self.routing
            .bins
            .iter()
            .find(|b| {
                let head = pan_digits.get(..b.from.len()).unwrap_or("");
                head >= b.from.as_str() && head <= b.to.as_str()
            })
            .map(|b| b.acquirer.as_str())
            .or(self.routing.default_acquirer.as_deref())
    }
}

/// Resolve a spec name and a framing string; errors say which key.
pub fn profile(
    spec: &str,
    framing: &str,
    max_frame: usize,
) -> Result<Profile, (&'static str, String)> {
    let spec = Spec::resolve(spec).map_err(|e| ("spec", e.to_string()))?;
    let framing: Framing = framing.parse().map_err(|e: String| ("framing", e))?;
    if max_frame == 0 {
        return Err(("max_frame", "must be at least 1".into()));
    }
    Ok(Profile {
        spec: Arc::new(spec),
        framing,
        max_frame,
    })
}
