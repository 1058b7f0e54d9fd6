//! Where messages come and go: `[[listener]]`, `[[link]]` and `[routing]`.

use std::net::SocketAddr;

use serde::Deserialize;

use super::*;

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
    /// Legs sent before their journal record is on disk, at most this many at once (0: off,
    /// every leg waits for its record's fsync). Only for a host that finds a leg by field 37
    /// alone and remembers what it reversed unseen (see `switch::legs_ahead`).
    #[serde(default)]
    pub legs_ahead: u32,
}

/// The most legs a link may have ahead of their records.
pub const MAX_LEGS_AHEAD: u32 = 4_096;

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
