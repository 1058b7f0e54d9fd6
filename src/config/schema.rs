//! The configuration as written in the TOML file (`config/cyberswitch.toml` documents every
//! key): what serde reads, before anything is checked or resolved. Tables whose keys are all
//! optional take their defaults from their `Default`; tables with required keys (a name, an
//! address) cannot — a struct-level default would make those keys optional too — so their
//! optional keys name a default function, mostly [`n_usize`], [`n_u64`] and [`n_u32`] with
//! the value in the attribute.

use std::net::SocketAddr;
use std::path::PathBuf;

use serde::Deserialize;

use super::secret::Secret;
use crate::net::framing::DEFAULT_MAX_FRAME;
pub use crate::net::tls::{ClientTlsFiles, ServerTlsFiles};

/// The whole file.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConfigToml {
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
    pub listeners: Vec<ListenerToml>,
    #[serde(default, rename = "link")]
    pub links: Vec<LinkToml>,
    #[serde(default, rename = "issuer")]
    pub issuers: Vec<IssuerConfig>,
    #[serde(default)]
    pub routing: RoutingConfig,
    #[serde(default)]
    pub processing_codes: ProcessingCodes,
    #[serde(default)]
    pub limits: Limits,
    /// How refunds (F8) give money back.
    #[serde(default)]
    pub refunds: RefundsConfig,
    /// Business days, cut-over and the merchant fee schedule (F13).
    #[serde(default)]
    pub books: BooksToml,
    /// The switch as an issuer itself: card programs on the hosted ledger (SPEC §7).
    #[serde(default)]
    pub hosted: HostedConfig,
    /// Mobile coupons (F18): the key their tokens are sealed under.
    #[serde(default)]
    pub coupons: CouponsToml,
    /// The admin API (SPEC §8); absent: no API.
    pub admin: Option<AdminToml>,
    /// Versioned card keys (SPEC §10); `card_key*` above is version 1.
    pub keys: Option<KeysToml>,
    /// Partners the switch calls back (F17 paid orders, F15 daily statements), with the
    /// secret their callbacks are signed with.
    #[serde(default, rename = "partner")]
    pub partners: Vec<PartnerToml>,
    /// F17: virtual-account orders.
    #[serde(default)]
    pub virtual_accounts: VirtualAccountsToml,
    /// The partner callback outbox: retries and timeouts.
    #[serde(default)]
    pub outbox: OutboxToml,
    /// Benchmark-only settings (issue 24): `run` refuses any of them without
    /// `--unsafe-no-durability`.
    #[serde(default)]
    pub bench: BenchToml,
}

/// `[bench]`: settings that exist only to measure what durability costs. A switch running
/// with any of them loses money on a crash (SPEC §9 no longer holds), so `run` and `demo`
/// refuse them unless told `--unsafe-no-durability`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct BenchToml {
    pub durability: Durability,
}

/// How the journal's steps reach the disk.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Durability {
    /// The product: a synced step is on disk (its WAL fsynced) before it is reported done.
    #[default]
    Synced,
    /// Benchmark only: every step written to the WAL, never fsynced (what the sync costs).
    Unsynced,
    /// Benchmark only, the null switch: steps land in the memtables only, no WAL at all
    /// (what writing the journal costs).
    Off,
}

impl Durability {
    pub fn name(self) -> &'static str {
        match self {
            Durability::Synced => "synced",
            Durability::Unsynced => "unsynced",
            Durability::Off => "off",
        }
    }
}

/// `[keys]`: the card key's versions, one of them current. Card look-up hashes chain every
/// version up to the current one, and values sealed under any version open, so versions are
/// added, never removed (docs/decisions.md, "Versioned card keys").
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KeysToml {
    /// The version new records are hashed and sealed under.
    pub current: u32,
    /// `[[keys.card]]`: `version` and the key (hex, at least 32 bytes) as `value`, `env` or
    /// `file`.
    #[serde(default)]
    pub card: Vec<VersionedKeyToml>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VersionedKeyToml {
    pub version: u32,
    pub value: Option<String>,
    pub env: Option<String>,
    pub file: Option<PathBuf>,
}

/// `[coupons]` (F18): the versioned key coupon tokens are sealed under (AES-256-GCM). Absent,
/// the key is derived from the card key (HMAC-SHA-256 under a fixed label) as version
/// `key_version`: one secret for operators to manage, and still never in the source.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct CouponsToml {
    /// The current key (hex, at least 32 bytes): inline `value`, `env` or `file`.
    pub key: Option<Secret>,
    /// The current key's version, written in every token it seals (1–255).
    pub key_version: u8,
    /// Earlier keys, still opening the tokens they sealed until those expire.
    pub previous_keys: Vec<CouponKeyToml>,
}

impl Default for CouponsToml {
    fn default() -> Self {
        CouponsToml {
            key: None,
            key_version: 1,
            previous_keys: Vec::new(),
        }
    }
}

/// A `[[partner]]`: where its callbacks go and the secret they are signed with
/// (HMAC-SHA-256 over the body, header `X-Cyberswitch-Signature: sha256=<hex>`).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PartnerToml {
    pub id: String,
    /// `http://host:port/path`; absent: nothing is pushed to this partner.
    pub callback_url: Option<String>,
    /// The signing secret (at least 16 characters): `{ env = "VAR" }`, `{ file = "…" }` or
    /// `{ value = "…" }`.
    pub secret: Option<Secret>,
    /// Push each anonymous card's statement of the previous day (F15) to `callback_url`.
    #[serde(default = "yes")]
    pub daily_statements: bool,
}

/// `[virtual_accounts]` (F17).
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct VirtualAccountsToml {
    /// An order assigned without `expires_min` expires after this many minutes.
    pub default_expiry_min: u64,
    /// How often expired orders are swept (their accounts freed); reads evaluate expiry
    /// themselves, so this only bounds how long an expired order's account stays taken.
    pub sweep_s: u64,
}

impl Default for VirtualAccountsToml {
    fn default() -> Self {
        VirtualAccountsToml {
            default_expiry_min: 60,
            sweep_s: 30,
        }
    }
}

/// An earlier coupon key and its version.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CouponKeyToml {
    pub version: u8,
    pub key: Secret,
}

/// `[books.coupon_fees_bp]` (F18): the fee chain of a coupon purchase, in basis points of
/// what the card was charged: the card company's, the PG's and the operator's; the merchant
/// is paid the rest.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, serde::Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct CouponFees {
    pub card_company: u32,
    pub pg: u32,
    pub operator: u32,
}

/// `[outbox]`: the partner callbacks' delivery.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct OutboxToml {
    /// First retry delay after a failed delivery, doubled at each failure up to
    /// `retry_max_ms`.
    pub retry_min_ms: u64,
    pub retry_max_ms: u64,
    /// One delivery attempt (connect, send, answer) takes at most this long.
    pub timeout_ms: u64,
    /// Deliveries under way at once.
    pub concurrency: usize,
    /// How often the daily statements (F15) are looked for (the previous day's, queued once).
    pub statements_check_s: u64,
}

impl Default for OutboxToml {
    fn default() -> Self {
        OutboxToml {
            retry_min_ms: 500,
            retry_max_ms: 60_000,
            timeout_ms: 10_000,
            concurrency: 8,
            statements_check_s: 300,
        }
    }
}

/// What a listener is for.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ListenerRole {
    /// Card terminals and VAN links (SPEC §4).
    #[default]
    Terminal,
    /// A bank asking whether to accept deposits to virtual accounts (F17).
    Bank,
}

/// `[refunds]`: the order in which a partial refund gives money back (SPEC F8). A full
/// refund gives every leg back whatever the order.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RefundsConfig {
    #[serde(default)]
    pub order: RefundOrder,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum RefundOrder {
    /// The credit leg first, then the wallets in reverse drain order (the last drained is
    /// the first refilled).
    #[default]
    CreditFirst,
    /// The wallets first (reverse drain order), then the credit leg.
    WalletsFirst,
}

/// `[books]`: the business day (F13) and the fee schedule of the settlement report.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct BooksToml {
    /// The local time (`HH:MM`) at which a business day closes. From noon on (23:30), the
    /// day that closes is named after the next calendar day: from 23:30 on the 6th,
    /// transactions belong to the 7th. Before noon (01:00), after the previous one: until
    /// 01:00 on the 7th, transactions belong to the 6th.
    pub cutover: String,
    /// The IANA time zone the cut-over time is in.
    pub time_zone: String,
    /// Cut over by itself at the cut-over time (otherwise only on demand).
    pub automatic: bool,
    /// How long a cut-over waits for the closing day's transactions still in flight.
    pub drain_s: u64,
    /// Merchant fees in basis points, by an issuer's or link's name, or by kind:
    /// `emoney`, `giftcert`, `points`, `prepaid` (hosted cards), `credit` (acquirers).
    pub fees_bp: std::collections::BTreeMap<String, u32>,
    /// The fee chain of coupon purchases (F18).
    pub coupon_fees_bp: CouponFees,
}

impl Default for BooksToml {
    fn default() -> Self {
        BooksToml {
            cutover: "23:30".into(),
            time_zone: "Asia/Seoul".into(),
            automatic: true,
            drain_s: 10,
            fees_bp: std::collections::BTreeMap::new(),
            coupon_fees_bp: CouponFees::default(),
        }
    }
}

/// A `[[listener]]`: where terminals connect.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ListenerToml {
    pub name: String,
    pub addr: SocketAddr,
    #[serde(default = "default_spec")]
    pub spec: String,
    #[serde(default = "default_framing")]
    pub framing: String,
    #[serde(default = "n_usize::<DEFAULT_MAX_FRAME>")]
    pub max_frame: usize,
    #[serde(default = "n_usize::<10_000>")]
    pub max_connections: usize,
    /// Connections open at once from one peer address (a VAN concentrator holds many; one
    /// address must still not take the whole listener).
    #[serde(default = "n_usize::<256>")]
    pub max_connections_per_peer: usize,
    /// The terminals' PIN key (double-length TDES): PIN blocks in field 52 are encrypted
    /// under it.
    pub pin_key: Option<Secret>,
    /// Requests of one connection being processed at once; reading pauses beyond it.
    #[serde(default = "n_usize::<64>")]
    pub max_in_flight: usize,
    /// A connection that sends nothing (not even a keep-alive) for this long is closed.
    #[serde(default = "n_u64::<300_000>")]
    pub idle_timeout_ms: u64,
    /// TLS: `{ cert, key, client_ca }`; absent: plain TCP (leased lines).
    pub tls: Option<ServerTlsFiles>,
    /// `terminal` (default) or `bank`: a bank listener answers deposit questions (F17).
    #[serde(default)]
    pub role: ListenerRole,
    /// A bank listener's bank code (the `--bank` of its pools): the accounts in field 103
    /// are looked up among that bank's pools.
    pub bank: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LinkKind {
    Issuer,
    Acquirer,
}

/// Answer timeout of a link, the configured ones' default and the in-process ones'.
pub const LINK_TIMEOUT_MS: u64 = 2_000;
/// Requests awaiting an answer on a link, the configured ones' default and the in-process
/// ones'.
pub const LINK_MAX_IN_FLIGHT: usize = 1_024;

/// A `[[link]]`: an upstream host the switch connects to.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LinkToml {
    pub name: String,
    pub kind: LinkKind,
    /// Hosts in failover order.
    pub hosts: Vec<String>,
    /// TCP sessions kept open (requests are spread over them).
    #[serde(default = "n_usize::<1>")]
    pub sessions: usize,
    #[serde(default = "default_spec")]
    pub spec: String,
    #[serde(default = "default_framing")]
    pub framing: String,
    #[serde(default = "n_usize::<DEFAULT_MAX_FRAME>")]
    pub max_frame: usize,
    /// Per-request answer timeout.
    #[serde(default = "n_u64::<LINK_TIMEOUT_MS>")]
    pub timeout_ms: u64,
    /// Echo (0800/301) after this much idle time.
    #[serde(default = "n_u64::<30_000>")]
    pub echo_interval_ms: u64,
    /// Consecutive failed echoes after which the session is dropped and reconnected.
    #[serde(default = "n_u32::<3>")]
    pub echo_failures: u32,
    /// Sign on (0800/001) when a session connects.
    #[serde(default = "yes")]
    pub sign_on: bool,
    /// Fields that match an answer to its request: `mti_class` and field numbers.
    #[serde(default = "default_match_key")]
    pub match_key: Vec<String>,
    /// Requests awaiting an answer on the whole link; more wait for a slot.
    #[serde(default = "n_usize::<LINK_MAX_IN_FLIGHT>")]
    pub max_in_flight: usize,
    /// The zone PIN key shared with this host: PIN blocks are translated to it.
    pub pin_key: Option<Secret>,
    #[serde(default = "n_u64::<100>")]
    pub reconnect_min_ms: u64,
    #[serde(default = "n_u64::<10_000>")]
    pub reconnect_max_ms: u64,
    /// TLS: `{ ca, cert, key, server_name }`; absent: plain TCP.
    pub tls: Option<ClientTlsFiles>,
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

/// An `[[issuer]]`: whose wallets cards can be linked to.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IssuerConfig {
    pub id: String,
    pub kind: WalletKind,
    /// The wallet's unit, as shown to terminals (`KRW`, `P`).
    pub unit: String,
    /// Wallet units per currency minor unit (points: e.g. 2).
    #[serde(default = "n_u64::<1>")]
    pub units_per_currency_unit: u64,
    /// The upstream link this issuer is reached through (remote issuers).
    pub link: Option<String>,
    /// The switch is the issuer: accounts live on the hosted ledger, reached through an
    /// in-process link named after the issuer.
    #[serde(default)]
    pub hosted: bool,
    /// Where this issuer's wallets come in a partial refund's order (0–9, lower first);
    /// absent: the order of `[refunds]`.
    #[serde(default)]
    pub refund_priority: Option<u8>,
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

/// `[routing]`: which acquirer link a card's credit goes to.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RoutingConfig {
    pub default_acquirer: Option<String>,
    #[serde(rename = "bin")]
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

/// Whether a card number's leading digits (as many as `from` has) fall in `from..=to`.
pub fn in_bin_range(pan_digits: &str, from: &str, to: &str) -> bool {
    let head = pan_digits.get(..from.len()).unwrap_or("");
    head >= from && head <= to
}

/// Which processing codes (first two digits) mean what.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ProcessingCodes {
    pub inquiry: Vec<u8>,
    pub purchase: Vec<u8>,
    pub refund: Vec<u8>,
    pub load: Vec<u8>,
}

impl Default for ProcessingCodes {
    fn default() -> Self {
        ProcessingCodes {
            inquiry: vec![31],
            purchase: vec![0],
            refund: vec![20],
            load: vec![21],
        }
    }
}

/// Limits that are not per listener or link.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Limits {
    /// How long a request key is remembered for duplicate detection.
    pub duplicate_window_s: u64,
    /// Store-and-forward: first retry delay and its ceiling.
    pub saf_retry_min_ms: u64,
    pub saf_retry_max_ms: u64,
    /// Store-and-forward: an item unacknowledged this long goes to the dead-letter list.
    pub saf_expiry_s: u64,
    /// Journal group commit: at most this many steps share one write and one sync.
    pub journal_batch_max: usize,
    /// Journal records and answered transaction records older than this many days are
    /// deleted (0: kept for ever). At least as long as the duplicate window and the
    /// store-and-forward expiry.
    pub journal_retention_days: u64,
    /// With a retention: the journal records past it are first written here (JSON Lines in
    /// LZ4 frames, one file per purge, synced), and deleted only once written. Unset: deleted
    /// without a copy.
    pub journal_archive_dir: Option<PathBuf>,
    /// SIGTERM / Ctrl-C: how long in-flight requests are given to finish and their answers
    /// to be written before the switch stops without them (they are left for recovery).
    pub shutdown_drain_s: u64,
    /// After a crash, an approval journaled but not marked delivered is reversed at start
    /// only when it was answered at least this long before the switch's last sign of life;
    /// younger ones may have reached their terminal and are left to it (docs/decisions.md).
    pub delivery_doubt_s: u64,
    /// At most this many legs (upstream requests that move money) per transaction; a
    /// request that would need more is declined.
    pub max_legs: usize,
    /// At most this many wallets linked to one card (each is asked on a balance inquiry).
    pub max_links_per_card: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            duplicate_window_s: 86_400,
            saf_retry_min_ms: 200,
            saf_retry_max_ms: 30_000,
            saf_expiry_s: 7 * 86_400,
            journal_batch_max: 1024,
            journal_retention_days: 0,
            journal_archive_dir: None,
            shutdown_drain_s: 10,
            delivery_doubt_s: 60,
            max_legs: 16,
            max_links_per_card: crate::directory::DEFAULT_MAX_LINKS,
        }
    }
}

impl Limits {
    /// How long journal and transaction records are kept; `None`: for ever.
    pub fn journal_retention(&self) -> Option<std::time::Duration> {
        (self.journal_retention_days > 0)
            .then(|| std::time::Duration::from_secs(self.journal_retention_days * 86_400))
    }

    /// How long a graceful stop waits for in-flight work.
    pub fn shutdown_drain(&self) -> std::time::Duration {
        std::time::Duration::from_secs(self.shutdown_drain_s)
    }
}

/// `[hosted]`: the switch as an issuer (SPEC §7).
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct HostedConfig {
    /// A pending hold not completed in this time is released.
    pub hold_ttl_s: u64,
    /// Wrong PINs in a row after which a card answers 75 until an operator resets it.
    pub pin_tries: u32,
    #[serde(rename = "program")]
    pub programs: Vec<ProgramConfig>,
}

impl Default for HostedConfig {
    fn default() -> Self {
        HostedConfig {
            hold_ttl_s: 7 * 86_400,
            pin_tries: 3,
            programs: Vec::new(),
        }
    }
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
    #[serde(default = "n_u64::<10_000>")]
    pub recharge_step: u64,
    /// The balance never goes above this.
    #[serde(default = "n_u64::<1_000_000>")]
    pub max_balance: u64,
    /// Cards expire this many months after issue.
    #[serde(default = "n_u32::<60>")]
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

impl ProgramConfig {
    pub fn owns(&self, pan_digits: &str) -> bool {
        in_bin_range(pan_digits, &self.bin_from, &self.bin_to)
    }
}

/// `[admin]`: the admin API (SPEC §8).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AdminToml {
    pub addr: SocketAddr,
    /// Connections open at once; one more is closed as soon as it is accepted.
    #[serde(default = "n_usize::<64>")]
    pub max_connections: usize,
    /// A connection with no byte in either direction this long is closed (kept-alive
    /// connections held idle would otherwise keep the places of `max_connections`).
    #[serde(default = "n_u64::<60>")]
    pub idle_timeout_s: u64,
    /// A request must arrive whole within this many seconds of its first byte (bytes sent
    /// slowly do not extend it); above the slowest route's own time.
    #[serde(default = "n_u64::<15>")]
    pub request_timeout_s: u64,
    /// Requests a second each token may make (its burst is one second's worth); more are
    /// answered 429 with `Retry-After`. A token may set its own (`rate_per_s`).
    #[serde(default = "n_u32::<100>")]
    pub rate_per_token_s: u32,
    /// HTTPS: `{ cert, key, client_ca }`; absent: plain HTTP.
    pub tls: Option<ServerTlsFiles>,
    #[serde(default, rename = "token")]
    pub tokens: Vec<TokenToml>,
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

/// An `[[admin.token]]`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TokenToml {
    /// For logs only.
    pub name: String,
    pub role: RoleKind,
    /// The issuer id (role issuer) or partner id (role partner).
    pub scope: Option<String>,
    pub token: Secret,
    /// This token's request rate, instead of `admin.rate_per_token_s`.
    pub rate_per_s: Option<u32>,
}

// Defaults of keys in tables that also have required keys.
fn n_usize<const N: usize>() -> usize {
    N
}
fn n_u64<const N: u64>() -> u64 {
    N
}
fn n_u32<const N: u32>() -> u32 {
    N
}
fn yes() -> bool {
    true
}
fn default_currency() -> u16 {
    410
}
fn default_institution() -> String {
    "00000000001".into()
}
/// The spec of listeners and links that name none, and of the in-process links.
pub(crate) fn default_spec() -> String {
    "iso87-ascii".into()
}
/// The framing of listeners and links that name none, and of the in-process links.
pub(crate) fn default_framing() -> String {
    "binary2".into()
}
pub(crate) fn default_match_key() -> Vec<String> {
    vec!["mti_class".into(), "11".into(), "41".into()]
}
fn default_unit() -> String {
    "KRW".into()
}
fn default_denominations() -> Vec<u64> {
    // The seed's face values (seed 001): 5,000 to 100,000 won, 20,000 among them.
    vec![5_000, 10_000, 20_000, 30_000, 50_000, 100_000]
}
