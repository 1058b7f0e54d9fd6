//! The configuration as written in the TOML file (`config/cyberswitch.toml` documents every
//! key): what serde reads, before anything is checked or resolved. Tables whose keys are all
//! optional take their defaults from their `Default`; tables with required keys (a name, an
//! address) cannot — a struct-level default would make those keys optional too — so their
//! optional keys name a default function, mostly [`n_usize`], [`n_u64`] and [`n_u32`] with
//! the value in the attribute.
//!
//! This file holds the whole file's shape, `[bench]`, `[limits]` and the defaults; the
//! tables, one concern a file: [`network`] (listeners, links, routing), [`issuers`],
//! [`hosted`] programs, [`keys`] (card and coupon keys), [`partners`] (callbacks, virtual
//! accounts, outbox), [`books`] (refunds, business day, fees), [`admin`].

use std::net::SocketAddr;
use std::path::PathBuf;

use serde::Deserialize;

use super::secret::Secret;
use crate::net::framing::DEFAULT_MAX_FRAME;
pub use crate::net::tls::{ClientTlsFiles, ServerTlsFiles};

mod admin;
mod books;
mod hosted;
mod issuers;
mod keys;
mod network;
mod partners;

pub use admin::*;
pub use books::*;
pub use hosted::*;
pub use issuers::*;
pub use keys::*;
pub use network::*;
pub use partners::*;

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
    /// Journal group commit under load: a group with a synced step, taken less than a
    /// millisecond after the last sync ended, waits this many microseconds for more steps
    /// to share its sync (PostgreSQL's `commit_delay`). 0 (the default): never waits. Fewer
    /// fsyncs (less CPU per transaction) against a longer wait for each synced step
    /// (docs/performance.md, session 17). At most 10,000.
    pub journal_sync_delay_us: u64,
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
            journal_sync_delay_us: 0,
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
