//! Money after the fact: `[refunds]` (the order a partial refund gives back in) and
//! `[books]` (business day, fee schedule, the coupon fee chain).

use serde::Deserialize;

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
