//! Partners: `[[partner]]` (their callbacks), `[virtual_accounts]` (F17) and `[outbox]`
//! (the callbacks' delivery).

use serde::Deserialize;

use super::*;

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
    /// Delivered callbacks are removed this many days after their delivery (0: kept for
    /// ever). Pending ones are never removed.
    pub keep_delivered_days: u64,
}

impl Default for OutboxToml {
    fn default() -> Self {
        OutboxToml {
            retry_min_ms: 500,
            retry_max_ms: 60_000,
            timeout_ms: 10_000,
            concurrency: 8,
            statements_check_s: 300,
            keep_delivered_days: 90,
        }
    }
}
