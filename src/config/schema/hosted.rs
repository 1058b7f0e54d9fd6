//! `[hosted]`: the switch as an issuer (SPEC §7) and its card programs.

use serde::Deserialize;

use super::*;

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
