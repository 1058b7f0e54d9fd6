//! `[admin]`: the admin API (SPEC §8) and its tokens.

use std::net::SocketAddr;

use serde::Deserialize;

use super::*;

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
