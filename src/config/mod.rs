//! The switch's configuration (`config/cyberswitch.toml` documents every key), read once.
//!
//! - [`schema`]: the file as written, what serde reads.
//! - [`checks`]: everything a running switch would trip over later — unknown keys, numbers out
//!   of range, bad addresses, links and issuers that refer to nothing — refused with the file,
//!   the key and the reason.
//! - [`resolve`]: specs loaded, framings parsed, secrets read and parsed, once.
//!
//! [`Config::load`] returns the resolved configuration: each listener and link carries its
//! [`Profile`] and its PIN key, the card key is read; nobody parses or reads them again.

mod checks;
mod resolve;
pub mod schema;
mod secret;
#[cfg(test)]
mod tests;

use std::fmt;
use std::net::SocketAddr;
use std::num::NonZeroU32;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use crate::iso8583::Spec;
use crate::net::framing::Framing;
use crate::pin::PinKey;

pub use checks::{valid_code, valid_id};
pub(crate) use schema::{default_framing, default_spec};
pub use schema::{
    in_bin_range, BenchToml, BinRoute, BooksToml, CouponFees, CouponsToml, Durability,
    HostedConfig, IssuerConfig, Limits, LinkKind, ListenerRole, OutboxToml, PartnerToml,
    ProcessingCodes, ProgramConfig, ProgramKind, RefundOrder, RefundsConfig, RoleKind,
    RoutingConfig, VirtualAccountsToml, WalletKind,
};
pub use secret::{Secret, SecretBytes, SecretText};

/// Name of the in-process link that serves the hosted card programs.
pub const HOSTED_CARDS_LINK: &str = "hosted";

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

/// The configuration, checked and resolved.
#[derive(Debug, Clone)]
pub struct Config {
    /// Where the switch keeps its RocksDB data.
    pub data_dir: PathBuf,
    /// Prometheus `/metrics` address; absent: no metrics endpoint.
    pub metrics_addr: Option<SocketAddr>,
    /// The HMAC-SHA-256 key for card look-ups (at least 32 bytes).
    pub card_key: SecretBytes,
    /// Every card key version up to the current one, ascending (the current one last, the
    /// same as `card_key`).
    pub card_keys: Vec<(u32, SecretBytes)>,
    /// Transaction currency (ISO 4217 numeric) the switch works in.
    pub currency: u16,
    /// The switch's institution id.
    pub institution_id: String,
    pub listeners: Vec<ListenerConfig>,
    pub links: Vec<LinkConfig>,
    /// The profile of the in-process links (hosted issuers and programs): the default spec
    /// and framing.
    pub local_profile: Profile,
    pub issuers: Vec<IssuerConfig>,
    pub routing: RoutingConfig,
    pub processing_codes: ProcessingCodes,
    pub limits: Limits,
    pub refunds: RefundsConfig,
    /// Business days, cut-over and fees (F13), resolved.
    pub books: BooksConfig,
    /// The switch as an issuer itself: card programs on the hosted ledger (SPEC §7).
    pub hosted: HostedConfig,
    /// Mobile coupon keys (F18).
    pub coupons: CouponsConfig,
    /// The admin API (SPEC §8); absent: no API.
    pub admin: Option<AdminConfig>,
    /// Partners called back, with their signing secrets read.
    pub partners: Vec<PartnerConfig>,
    pub virtual_accounts: VirtualAccountsToml,
    pub outbox: OutboxToml,
    /// `[bench] durability`: anything but `Synced` is for benchmarks only (see
    /// [`Config::refuse_unsafe`]).
    pub durability: Durability,
}

/// A `[[partner]]`, its secret read.
#[derive(Debug, Clone)]
pub struct PartnerConfig {
    pub id: String,
    pub callback_url: Option<String>,
    pub secret: Option<SecretText>,
    pub daily_statements: bool,
}

impl Config {
    pub fn partner(&self, id: &str) -> Option<&PartnerConfig> {
        self.partners.iter().find(|p| p.id == id)
    }
}

/// `[books]` resolved: the cut-over time parsed, the time zone found.
#[derive(Debug, Clone)]
pub struct BooksConfig {
    pub cutover: chrono::NaiveTime,
    pub time_zone: chrono_tz::Tz,
    pub automatic: bool,
    pub drain: std::time::Duration,
    pub fees_bp: std::collections::BTreeMap<String, u32>,
    /// The fee chain of coupon purchases (F18).
    pub coupon_fees_bp: CouponFees,
}

/// `[coupons]` resolved: every key that opens tokens, by version, and the one that seals.
#[derive(Debug, Clone)]
pub struct CouponsConfig {
    pub current: u8,
    pub keys: Vec<(u8, SecretBytes)>,
}

impl BooksConfig {
    /// What `[books]` says when it is absent.
    pub fn resolve(t: &BooksToml) -> Result<BooksConfig, (&'static str, String)> {
        let cutover = chrono::NaiveTime::parse_from_str(&t.cutover, "%H:%M")
            .map_err(|e| ("cutover", format!("{:?} is not HH:MM: {e}", t.cutover)))?;
        let time_zone = t.time_zone.parse::<chrono_tz::Tz>().map_err(|_| {
            (
                "time_zone",
                format!("{:?} is not an IANA time zone", t.time_zone),
            )
        })?;
        Ok(BooksConfig {
            cutover,
            time_zone,
            automatic: t.automatic,
            drain: std::time::Duration::from_secs(t.drain_s),
            fees_bp: t.fees_bp.clone(),
            coupon_fees_bp: t.coupon_fees_bp,
        })
    }
}

impl Default for BooksConfig {
    fn default() -> Self {
        BooksConfig {
            cutover: chrono::NaiveTime::from_hms_opt(23, 30, 0).unwrap_or_default(),
            time_zone: chrono_tz::Asia::Seoul,
            automatic: true,
            drain: std::time::Duration::from_secs(10),
            fees_bp: Default::default(),
            coupon_fees_bp: CouponFees::default(),
        }
    }
}

/// A listener or link's wire profile, resolved: the loaded spec and the parsed framing.
#[derive(Debug, Clone)]
pub struct Profile {
    pub spec: Arc<Spec>,
    pub framing: Framing,
    pub max_frame: usize,
}

impl Profile {
    /// Load a spec by name (or path) and parse a framing; errors say which key.
    pub fn resolve(
        spec: &str,
        framing: &str,
        max_frame: usize,
    ) -> Result<Profile, (&'static str, String)> {
        let spec = Spec::resolve(spec).map_err(|e| ("spec", e.to_string()))?;
        Profile::with_spec(Arc::new(spec), framing, max_frame)
    }

    /// A profile with a spec already loaded.
    fn with_spec(
        spec: Arc<Spec>,
        framing: &str,
        max_frame: usize,
    ) -> Result<Profile, (&'static str, String)> {
        let framing: Framing = framing.parse().map_err(|e: String| ("framing", e))?;
        if max_frame == 0 {
            return Err(("max_frame", "must be at least 1".into()));
        }
        Ok(Profile {
            spec,
            framing,
            max_frame,
        })
    }
}

/// A terminal listener, resolved.
#[derive(Debug, Clone)]
pub struct ListenerConfig {
    pub name: String,
    pub addr: SocketAddr,
    pub profile: Profile,
    /// Connections open at once; further ones are closed as soon as accepted.
    pub max_connections: usize,
    /// Connections open at once from one peer address; further ones are closed likewise.
    pub max_connections_per_peer: usize,
    /// Requests of one connection being processed at once; reading pauses beyond it.
    pub max_in_flight: usize,
    /// A connection that sends nothing (not even a keep-alive) for this long is closed.
    pub idle_timeout_ms: u64,
    /// The terminals' PIN key: PIN blocks in field 52 are encrypted under it.
    pub pin_key: Option<PinKey>,
    /// TLS, read at load and on SIGHUP; `None`: plain TCP.
    pub tls: Option<Arc<crate::net::tls::ServerTls>>,
    pub role: ListenerRole,
    /// A bank listener's bank code.
    pub bank: Option<String>,
}

impl ListenerConfig {
    pub fn idle_timeout(&self) -> Duration {
        Duration::from_millis(self.idle_timeout_ms)
    }
}

/// One element of a link's match key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MatchField {
    /// The MTI's class (`mti_class`): an 0210 answers an 0200, an 0410 an 0400.
    MtiClass,
    /// A field's value.
    Field(u16),
}

impl MatchField {
    /// `mti_class` or a field number 2–128.
    pub fn parse(text: &str) -> Option<MatchField> {
        if text == "mti_class" {
            return Some(MatchField::MtiClass);
        }
        text.parse::<u16>()
            .ok()
            .filter(|n| (2..=128).contains(n))
            .map(MatchField::Field)
    }
}

/// An upstream link, resolved.
#[derive(Debug, Clone)]
pub struct LinkConfig {
    pub name: String,
    pub kind: LinkKind,
    /// Hosts in failover order.
    pub hosts: Vec<String>,
    /// TCP sessions kept open (requests are spread over them).
    pub sessions: usize,
    pub profile: Profile,
    /// Per-request answer timeout.
    pub timeout_ms: u64,
    /// Echo (0800/301) after this much idle time.
    pub echo_interval_ms: u64,
    /// Consecutive failed echoes after which the session is dropped and reconnected.
    pub echo_failures: u32,
    /// Sign on (0800/001) when a session connects.
    pub sign_on: bool,
    /// What matches an answer to its request.
    pub match_key: Vec<MatchField>,
    /// Requests awaiting an answer on the whole link; more wait for a slot.
    pub max_in_flight: usize,
    /// The zone PIN key shared with this host: PIN blocks are translated to it.
    pub pin_key: Option<PinKey>,
    pub reconnect_min_ms: u64,
    pub reconnect_max_ms: u64,
    /// TLS, read at load and on SIGHUP; `None`: plain TCP.
    pub tls: Option<Arc<crate::net::tls::ClientTls>>,
    /// Legs sent ahead of their record, at most this many at once (0: off).
    pub legs_ahead: u32,
}

impl LinkConfig {
    /// The settings of an in-process link (hosted issuers and programs): the default
    /// timeout, bound and match key. It has no hosts and no sessions, so the session settings
    /// (echoes, sign-on, reconnection) are never read: zero.
    pub fn local(name: &str, profile: Profile) -> LinkConfig {
        LinkConfig {
            name: name.into(),
            kind: LinkKind::Issuer,
            hosts: Vec::new(),
            sessions: 0,
            profile,
            timeout_ms: schema::LINK_TIMEOUT_MS,
            echo_interval_ms: 0,
            echo_failures: 0,
            sign_on: false,
            match_key: schema::default_match_key()
                .iter()
                .filter_map(|f| MatchField::parse(f))
                .collect(),
            max_in_flight: schema::LINK_MAX_IN_FLIGHT,
            pin_key: None,
            reconnect_min_ms: 0,
            reconnect_max_ms: 0,
            tls: None,
            legs_ahead: 0,
        }
    }

    pub fn timeout(&self) -> Duration {
        Duration::from_millis(self.timeout_ms)
    }
}

/// The admin API, resolved.
#[derive(Debug, Clone)]
pub struct AdminConfig {
    pub addr: SocketAddr,
    /// Connections open at once; one more is closed as soon as it is accepted.
    pub max_connections: usize,
    /// A kept-alive connection waiting this long after its last answer is closed.
    pub idle_timeout_s: u64,
    /// A request must arrive whole within this long of its first byte.
    pub request_timeout_s: u64,
    pub tokens: Vec<TokenConfig>,
    /// HTTPS, read at load and on SIGHUP; `None`: plain HTTP.
    pub tls: Option<Arc<crate::net::tls::ServerTls>>,
}

/// An admin API token, read.
#[derive(Debug, Clone)]
pub struct TokenConfig {
    /// For logs only.
    pub name: String,
    pub role: RoleKind,
    /// The issuer id (role issuer) or partner id (role partner).
    pub scope: Option<String>,
    pub token: SecretText,
    /// Requests a second (the token's own, else `admin.rate_per_token_s`).
    pub rate_per_s: NonZeroU32,
}

impl Config {
    /// A benchmark-only durability setting is refused unless the operator said
    /// `--unsafe-no-durability` (issue 24): without synced steps an approval can leave before
    /// the step that decided it is on disk (SPEC §9).
    pub fn refuse_unsafe(&self, allowed: bool) -> Result<(), String> {
        if self.durability == Durability::Synced || allowed {
            return Ok(());
        }
        Err(format!(
            "[bench] durability = \"{}\" loses money on a crash: refused without --unsafe-no-durability",
            self.durability.name()
        ))
    }

    /// Read, check and resolve a configuration file.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|e| ConfigError {
            file: path.to_path_buf(),
            key: String::new(),
            reason: format!("cannot read: {e}"),
        })?;
        Config::from_toml(&text, path)
    }

    /// Check and resolve a configuration; `origin` names it in errors.
    pub fn from_toml(text: &str, origin: &Path) -> Result<Config, ConfigError> {
        let file: schema::ConfigToml = toml::from_str(text).map_err(|e| ConfigError {
            file: origin.to_path_buf(),
            key: String::new(),
            reason: e.to_string().trim_end().to_string(),
        })?;
        checks::check(&file, origin)?;
        resolve::resolve(file, origin)
    }

    /// The card look-up key, every version up to the current one.
    pub fn card_key_chain(&self) -> crate::directory::CardKey {
        let keys: Vec<(u32, &[u8])> = self
            .card_keys
            .iter()
            .map(|(v, k)| (*v, k.expose()))
            .collect();
        crate::directory::CardKey::versions(&keys)
    }

    /// The sealer of card data, sealing under the current version, opening under any.
    pub fn sealer(&self) -> crate::journal::Sealer {
        let keys: Vec<(u32, &[u8])> = self
            .card_keys
            .iter()
            .map(|(v, k)| (*v, k.expose()))
            .collect();
        crate::journal::Sealer::from_versions(&keys)
    }

    pub fn issuer(&self, id: &str) -> Option<&IssuerConfig> {
        self.issuers.iter().find(|i| i.id == id)
    }
}
