//! `[[issuer]]`: whose wallets cards can be linked to.

use serde::Deserialize;

use super::*;

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
