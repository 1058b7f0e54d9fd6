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
    /// The switch as an issuer itself: card programs on the hosted ledger (SPEC §7).
    #[serde(default)]
    pub hosted: HostedConfig,
    /// The admin API (SPEC §8); absent: no API.
    pub admin: Option<AdminConfig>,
}

/// Name of the in-process link that serves the hosted card programs.
pub const HOSTED_CARDS_LINK: &str = "hosted";

/// A secret given inline, by environment variable, or in a file (hex or text): the three ways
/// keys and tokens reach the switch, never from the source.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Secret {
    pub value: Option<String>,
    pub env: Option<String>,
    pub file: Option<PathBuf>,
}

impl Secret {
    /// The secret's text: the environment variable if named and set, else the file, else the
    /// inline value.
    pub fn read(&self) -> Result<String, String> {
        self.read_with_origin().map(|(text, _)| text)
    }

    /// The secret's text and where it came from (`$VAR` or the file; `None`: inline).
    pub fn read_with_origin(&self) -> Result<(String, Option<String>), String> {
        if let Some(var) = &self.env {
            if let Ok(v) = std::env::var(var) {
                return Ok((v.trim().to_string(), Some(format!("${var}"))));
            }
            if self.file.is_none() && self.value.is_none() {
                return Err(format!("environment variable {var} is not set"));
            }
        }
        if let Some(path) = &self.file {
            return std::fs::read_to_string(path)
                .map(|t| (t.trim().to_string(), Some(path.display().to_string())))
                .map_err(|e| format!("{}: cannot read: {e}", path.display()));
        }
        self.value
            .clone()
            .map(|v| (v.trim().to_string(), None))
            .ok_or_else(|| "no value, env or file given".into())
    }

    /// The secret as a PIN key (32 hex digits).
    pub fn pin_key(&self) -> Result<crate::pin::PinKey, String> {
        crate::pin::PinKey::from_hex(&self.read()?).map_err(|e| e.to_string())
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HostedConfig {
    /// A pending hold not completed in this time is released.
    #[serde(default = "default_hold_ttl")]
    pub hold_ttl_s: u64,
    /// Wrong PINs in a row after which a card answers 75 until an operator resets it.
    #[serde(default = "default_pin_tries")]
    pub pin_tries: u32,
    #[serde(default, rename = "program")]
    pub programs: Vec<ProgramConfig>,
}

impl Default for HostedConfig {
    fn default() -> Self {
        HostedConfig {
            hold_ttl_s: default_hold_ttl(),
            pin_tries: default_pin_tries(),
            programs: Vec::new(),
        }
    }
}

fn default_hold_ttl() -> u64 {
    7 * 86_400
}
fn default_pin_tries() -> u32 {
    3
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum ProgramKind {
    /// F14: multi-function prepaid cards (PIN, recharge, refund, points).
    Prepaid,
    /// F15: anonymous cards, no personal data; pre-registered purchases.
    Anonymous,
    /// F16: sub-account cards drawing on a master account.
    Subaccount,
}

/// A hosted card program: the cards whose numbers fall in its BIN range are its own.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProgramConfig {
    pub id: String,
    pub kind: ProgramKind,
    /// Leading digits of the program's card numbers (compared on their length).
    pub bin_from: String,
    pub bin_to: String,
    #[serde(default = "default_unit")]
    pub unit: String,
    /// Face values cards are issued in (prepaid, anonymous).
    #[serde(default = "default_denominations")]
    pub denominations: Vec<u64>,
    /// Recharges come in multiples of this.
    #[serde(default = "default_recharge_step")]
    pub recharge_step: u64,
    /// The balance never goes above this.
    #[serde(default = "default_max_balance")]
    pub max_balance: u64,
    /// Cards expire this many months after issue.
    #[serde(default = "default_validity")]
    pub validity_months: u32,
    /// Authorizations must carry a PIN block (field 52).
    #[serde(default)]
    pub pin_required: bool,
    /// Points accrued per 1,000 spent, into the card's account at `points_issuer`.
    #[serde(default)]
    pub points_per_1000: u64,
    /// A hosted issuer of kind `points` that keeps the cards' points.
    pub points_issuer: Option<String>,
}

fn default_unit() -> String {
    "KRW".into()
}
fn default_denominations() -> Vec<u64> {
    vec![5_000, 10_000, 30_000, 50_000, 100_000]
}
fn default_recharge_step() -> u64 {
    10_000
}
fn default_max_balance() -> u64 {
    1_000_000
}
fn default_validity() -> u32 {
    60
}

impl ProgramConfig {
    pub fn owns(&self, pan_digits: &str) -> bool {
        let head = pan_digits.get(..self.bin_from.len()).unwrap_or("");
        head >= self.bin_from.as_str() && head <= self.bin_to.as_str()
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AdminConfig {
    pub addr: SocketAddr,
    /// Connections open at once; one more is closed as soon as it is accepted.
    #[serde(default = "default_admin_max_connections")]
    pub max_connections: usize,
    /// A connection with no byte in either direction this long is closed (kept-alive
    /// connections held idle would otherwise keep the places of `max_connections`).
    #[serde(default = "default_admin_idle_timeout")]
    pub idle_timeout_s: u64,
    /// Requests a second each token may make (its burst is one second's worth); more are
    /// answered 429 with `Retry-After`. A token may set its own (`rate_per_s`).
    #[serde(default = "default_admin_rate")]
    pub rate_per_token_s: u32,
    #[serde(default, rename = "token")]
    pub tokens: Vec<TokenConfig>,
}

impl AdminConfig {
    /// The request rate allowed to a token.
    pub fn rate_of(&self, token: &TokenConfig) -> u32 {
        token.rate_per_s.unwrap_or(self.rate_per_token_s)
    }
}

fn default_admin_max_connections() -> usize {
    64
}
fn default_admin_idle_timeout() -> u64 {
    60
}
fn default_admin_rate() -> u32 {
    100
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RoleKind {
    /// Everything.
    Operator,
    /// One issuer: look-ups of its own accounts only.
    Issuer,
    /// One partner: links, and the hosted cards it issued.
    Partner,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TokenConfig {
    /// For logs only.
    pub name: String,
    pub role: RoleKind,
    /// The issuer id (role issuer) or partner id (role partner).
    pub scope: Option<String>,
    pub token: Secret,
    /// This token's request rate, instead of `admin.rate_per_token_s`.
    pub rate_per_s: Option<u32>,
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
    /// The terminals' PIN key (double-length TDES): PIN blocks in field 52 are encrypted
    /// under it.
    pub pin_key: Option<Secret>,
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
    /// The zone PIN key shared with this host: PIN blocks are translated to it.
    pub pin_key: Option<Secret>,
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
    /// The upstream link this issuer is reached through (remote issuers).
    pub link: Option<String>,
    /// The switch is the issuer: accounts live on the hosted ledger, reached through an
    /// in-process link named after the issuer.
    #[serde(default)]
    pub hosted: bool,
}

impl IssuerConfig {
    /// The link requests to this issuer go through.
    pub fn link_name(&self) -> &str {
        match (&self.link, self.hosted) {
            (Some(l), false) => l,
            _ => &self.id,
        }
    }
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
    /// Journal records and answered transaction records older than this many days are
    /// deleted (0: kept for ever). At least as long as the duplicate window and the
    /// store-and-forward expiry.
    #[serde(default)]
    pub journal_retention_days: u64,
    /// With a retention: the journal records past it are first written here (JSON Lines in
    /// LZ4 frames, one file per purge, synced), and deleted only once written. Unset: deleted
    /// without a copy.
    #[serde(default)]
    pub journal_archive_dir: Option<std::path::PathBuf>,
}

impl Limits {
    /// How long journal and transaction records are kept; `None`: for ever.
    pub fn journal_retention(&self) -> Option<std::time::Duration> {
        (self.journal_retention_days > 0)
            .then(|| std::time::Duration::from_secs(self.journal_retention_days * 86_400))
    }
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            duplicate_window_s: default_dedup_s(),
            saf_retry_min_ms: default_saf_min(),
            saf_retry_max_ms: default_saf_max(),
            saf_expiry_s: default_saf_expiry(),
            journal_batch_max: default_journal_batch(),
            journal_retention_days: 0,
            journal_archive_dir: None,
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
    /// The settings of an in-process link (hosted issuers and programs).
    pub fn local(name: &str) -> LinkConfig {
        LinkConfig {
            name: name.into(),
            kind: LinkKind::Issuer,
            hosts: Vec::new(),
            sessions: 1,
            spec: default_spec(),
            framing: default_framing(),
            max_frame: default_max_frame(),
            timeout_ms: default_timeout_ms(),
            echo_interval_ms: default_echo_ms(),
            echo_failures: default_echo_failures(),
            sign_on: false,
            match_key: default_match_key(),
            max_in_flight: default_link_in_flight(),
            pin_key: None,
            reconnect_min_ms: default_backoff_min(),
            reconnect_max_ms: default_backoff_max(),
        }
    }

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
            match (&iss.link, iss.hosted) {
                (Some(_), true) => {
                    return Err(err(
                        key("link"),
                        "a hosted issuer has no link (it is served in-process)".into(),
                    ))
                }
                (None, true) if link_kind(&iss.id).is_some() => {
                    return Err(err(
                        key("id"),
                        format!(
                            "a hosted issuer's id {:?} names its link; a link has it already",
                            iss.id
                        ),
                    ))
                }
                (None, true) => {}
                (None, false) => return Err(err(key("link"), "set link, or hosted = true".into())),
                (Some(link), false) => match link_kind(link) {
                    Some(LinkKind::Issuer) => {}
                    Some(LinkKind::Acquirer) => {
                        return Err(err(key("link"), format!("{link:?} is an acquirer link")))
                    }
                    None => return Err(err(key("link"), format!("no link named {link:?}"))),
                },
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
        self.check_hosted(&err)?;
        self.check_secrets(&err)?;
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
        if l.journal_retention_days > 0 {
            let kept_s = l.journal_retention_days.saturating_mul(86_400);
            if l.journal_retention_days > 36_500
                || kept_s < l.duplicate_window_s
                || kept_s < l.saf_expiry_s
            {
                return Err(err(
                    "limits.journal_retention_days".into(),
                    "0 (keep for ever) or 1 to 36500 days, and not shorter than duplicate_window_s or saf_expiry_s".into(),
                ));
            }
        }
        if l.journal_archive_dir.is_some() && l.journal_retention_days == 0 {
            return Err(err(
                "limits.journal_archive_dir".into(),
                "archives what the retention deletes: set limits.journal_retention_days too".into(),
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

    fn check_hosted(&self, err: &dyn Fn(String, String) -> ConfigError) -> Result<(), ConfigError> {
        if self.links.iter().any(|l| l.name == HOSTED_CARDS_LINK) {
            return Err(err(
                "link".into(),
                format!("the link name {HOSTED_CARDS_LINK:?} is reserved for the hosted programs"),
            ));
        }
        let mut ids = HashSet::new();
        for (i, p) in self.hosted.programs.iter().enumerate() {
            let key = |k: &str| format!("hosted.program[{i}].{k}");
            if !ids.insert(p.id.clone()) {
                return Err(err(key("id"), format!("duplicate program id {:?}", p.id)));
            }
            let digits =
                |s: &str| !s.is_empty() && s.len() <= 11 && s.bytes().all(|c| c.is_ascii_digit());
            if !digits(&p.bin_from) || p.bin_from.len() != p.bin_to.len() || p.bin_from > p.bin_to {
                return Err(err(
                    key("bin_from"),
                    "bin_from and bin_to must be digit strings of equal length with from <= to"
                        .into(),
                ));
            }
            if let Some(other) = self.hosted.programs[..i]
                .iter()
                .find(|o| o.owns(&p.bin_from) || p.owns(&o.bin_from))
            {
                return Err(err(
                    key("bin_from"),
                    format!("BIN range overlaps program {:?}", other.id),
                ));
            }
            if p.recharge_step == 0
                || p.max_balance == 0
                || p.denominations.iter().any(|&d| d == 0 || d > p.max_balance)
            {
                return Err(err(
                    key("denominations"),
                    "recharge_step and max_balance must be at least 1, denominations between 1 and max_balance".into(),
                ));
            }
            if let Some(pi) = &p.points_issuer {
                match self.issuer(pi) {
                    Some(iss) if iss.hosted && iss.kind == WalletKind::Points => {}
                    _ => {
                        return Err(err(
                            key("points_issuer"),
                            format!("{pi:?} is not a hosted issuer of kind points"),
                        ))
                    }
                }
            } else if p.points_per_1000 > 0 {
                return Err(err(
                    key("points_issuer"),
                    "points_per_1000 needs a points_issuer".into(),
                ));
            }
        }
        Ok(())
    }

    /// PIN keys and admin tokens must be readable now, not at the first transaction.
    fn check_secrets(
        &self,
        err: &dyn Fn(String, String) -> ConfigError,
    ) -> Result<(), ConfigError> {
        for (i, l) in self.listeners.iter().enumerate() {
            if let Some(k) = &l.pin_key {
                k.pin_key()
                    .map_err(|r| err(format!("listener[{i}].pin_key"), r))?;
            }
        }
        for (i, l) in self.links.iter().enumerate() {
            if let Some(k) = &l.pin_key {
                k.pin_key()
                    .map_err(|r| err(format!("link[{i}].pin_key"), r))?;
            }
        }
        if let Some(admin) = &self.admin {
            if admin.max_connections == 0 {
                return Err(err(
                    "admin.max_connections".into(),
                    "must be at least 1".into(),
                ));
            }
            if admin.idle_timeout_s == 0 {
                return Err(err(
                    "admin.idle_timeout_s".into(),
                    "must be at least 1".into(),
                ));
            }
            if admin.rate_per_token_s == 0 {
                return Err(err(
                    "admin.rate_per_token_s".into(),
                    "must be at least 1".into(),
                ));
            }
            for (i, t) in admin.tokens.iter().enumerate() {
                let key = format!("admin.token[{i}]");
                if t.rate_per_s == Some(0) {
                    return Err(err(
                        format!("{key}.rate_per_s"),
                        "must be at least 1".into(),
                    ));
                }
                let text = t.token.read().map_err(|r| err(format!("{key}.token"), r))?;
                if text.len() < 16 {
                    return Err(err(
                        format!("{key}.token"),
                        "tokens must be at least 16 characters".into(),
                    ));
                }
                let scoped = t.scope.as_ref().is_some_and(|s| !s.is_empty());
                if (t.role == RoleKind::Operator) == scoped {
                    return Err(err(
                        format!("{key}.scope"),
                        "issuer and partner tokens name their scope; operator tokens have none"
                            .into(),
                    ));
                }
                if t.role == RoleKind::Issuer {
                    let id = t.scope.as_deref().unwrap_or("");
                    if self.issuer(id).is_none() {
                        return Err(err(format!("{key}.scope"), format!("no issuer {id:?}")));
                    }
                }
            }
        }
        Ok(())
    }

    /// The hosted program that owns a card number.
    pub fn program_for(&self, pan_digits: &str) -> Option<&ProgramConfig> {
        self.hosted.programs.iter().find(|p| p.owns(pan_digits))
    }

    /// The card look-up key, from the environment variable if named, else from the file.
    pub fn card_key_bytes(&self) -> Result<Vec<u8>, String> {
        let secret = Secret {
            value: self.card_key.clone(),
            env: self.card_key_env.clone(),
            file: self.card_key_file.clone(),
        };
        let (text, origin) = secret.read_with_origin()?;
        let origin = origin.unwrap_or_else(|| "card_key".into());
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

    /// The acquirer link for a card number: a hosted program's own cards go to the hosted
    /// link, others to the first matching BIN range, else the default.
    pub fn acquirer_for(&self, pan_digits: &str) -> Option<&str> {
        if self.program_for(pan_digits).is_some() {
            return Some(HOSTED_CARDS_LINK);
        }
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
