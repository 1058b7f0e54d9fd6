//! `[keys]` (the card key's versions) and `[coupons]` (the coupon token key's).

use std::path::PathBuf;

use serde::Deserialize;

use super::*;

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

/// An earlier coupon key and its version.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CouponKeyToml {
    pub version: u8,
    pub key: Secret,
}
