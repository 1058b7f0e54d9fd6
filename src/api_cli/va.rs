//! Virtual accounts (F17): pools, orders, mismatches, the collection report, and the partner
//! callbacks (outbox) that tell partners of payments.

use clap::{Args, Subcommand};
use serde_json::{json, Value};

use super::request::{query, seg, Call};

/// A pool: partner × bank × region.
#[derive(Args)]
pub struct Pool {
    /// Operators name the partner; a partner's token acts for itself.
    #[arg(long)]
    partner: Option<String>,
    #[arg(long)]
    bank: String,
    #[arg(long)]
    region: String,
}

/// Accounts of one pool.
#[derive(Args)]
pub struct PoolAccounts {
    #[command(flatten)]
    pool: Pool,
    /// Comma-separated account numbers.
    #[arg(long, value_delimiter = ',')]
    accounts: Vec<String>,
}

impl PoolAccounts {
    fn body(&self) -> Value {
        let Pool {
            partner,
            bank,
            region,
        } = &self.pool;
        json!({"partner": partner, "bank": bank, "region": region, "accounts": self.accounts})
    }
}

#[derive(Subcommand)]
pub enum VaCommand {
    /// F17: add accounts to a virtual-account pool (partner × bank × region).
    VaPoolAdd(PoolAccounts),
    /// F17: the pools and each account's state.
    VaPoolList {
        #[arg(long)]
        partner: Option<String>,
    },
    /// F17: retire accounts (an assigned one once its order is paid or expires).
    VaPoolRetire(PoolAccounts),
    /// F17: assign an account to an order (prints JSON with `account`).
    VaAssign {
        #[command(flatten)]
        pool: Pool,
        #[arg(long)]
        order: String,
        #[arg(long)]
        amount: u64,
        #[arg(long)]
        expires_min: Option<u64>,
    },
    /// F17: an order: `status` open, paid or expired, and its history.
    VaOrder { order: String },
    /// F17: bank advices that matched no open order, oldest first, a page at a time.
    VaMismatches {
        #[arg(long)]
        partner: Option<String>,
        /// The `next` of the page before.
        #[arg(long)]
        after: Option<String>,
        /// At most this many (1 to 1,000; 1,000 when not given).
        #[arg(long)]
        limit: Option<u32>,
    },
    /// F17: collection report of a partner (`--from`/`--to` YYYY-MM-DD).
    VaReport {
        #[arg(long)]
        partner: Option<String>,
        #[arg(long)]
        from: Option<String>,
        #[arg(long)]
        to: Option<String>,
    },
    /// Partner callbacks: pending and delivered (`--status pending|delivered`).
    Outbox {
        #[arg(long)]
        partner: Option<String>,
        #[arg(long)]
        status: Option<String>,
        /// The `next` of the page before.
        #[arg(long)]
        after: Option<String>,
        /// At most this many (1 to 1,000; 1,000 when not given).
        #[arg(long)]
        limit: Option<u32>,
    },
    /// Send a partner callback again now.
    OutboxResend { id: String },
}

impl VaCommand {
    pub fn call(self) -> Call {
        use VaCommand::*;
        match self {
            VaPoolAdd(pool) => Call::post("/v1/va/pools", Some(pool.body())),
            VaPoolList { partner } => {
                Call::get(format!("/v1/va/pools{}", query(&[("partner", partner)])))
            }
            VaPoolRetire(pool) => Call::post("/v1/va/pools/retire", Some(pool.body())),
            VaAssign {
                pool:
                    Pool {
                        partner,
                        bank,
                        region,
                    },
                order,
                amount,
                expires_min,
            } => Call::post(
                "/v1/va/orders",
                Some(
                    json!({"partner": partner, "bank": bank, "region": region, "order": order, "amount": amount, "expires_min": expires_min}),
                ),
            ),
            VaOrder { order } => Call::get(format!("/v1/va/orders/{}", seg(&order))),
            VaMismatches {
                partner,
                after,
                limit,
            } => Call::get(format!(
                "/v1/va/mismatches{}",
                query(&[
                    ("partner", partner),
                    ("after", after),
                    ("limit", limit.map(|n| n.to_string())),
                ])
            )),
            VaReport { partner, from, to } => Call::get(format!(
                "/v1/va/report{}",
                query(&[("partner", partner), ("from", from), ("to", to)])
            )),
            Outbox {
                partner,
                status,
                after,
                limit,
            } => Call::get(format!(
                "/v1/outbox{}",
                query(&[
                    ("partner", partner),
                    ("status", status),
                    ("after", after),
                    ("limit", limit.map(|n| n.to_string())),
                ])
            )),
            OutboxResend { id } => Call::post(format!("/v1/outbox/{}/resend", seg(&id)), None),
        }
    }
}
