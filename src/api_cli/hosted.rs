//! Hosted cards (F14/F15: issue, activate, recharge, refund, history, statements),
//! pre-registered purchases (F15) and master accounts with their sub-account cards (F16).

use clap::Subcommand;
use serde_json::json;

use super::request::{query, seg, Call};

#[derive(Subcommand)]
pub enum HostedCommand {
    /// F14/F15: issue a hosted card (number from the card bureau).
    CardIssue {
        #[arg(long)]
        program: String,
        #[arg(long)]
        denomination: u64,
        #[arg(long)]
        card: String,
        #[arg(long)]
        holder: Option<String>,
    },
    /// Find a hosted card by its number.
    CardFind {
        #[arg(long)]
        card: String,
    },
    CardShow {
        id: String,
    },
    CardActivate {
        id: String,
        #[arg(long)]
        pin: Option<String>,
    },
    CardRecharge {
        id: String,
        #[arg(long)]
        amount: u64,
        /// Your reference: a repeat with it has no second effect.
        #[arg(long)]
        reference: String,
    },
    /// Refund the balance and close the card.
    CardRefund {
        id: String,
    },
    /// active, suspended or closed.
    CardStatus {
        id: String,
        status: String,
    },
    CardResetPinTries {
        id: String,
    },
    /// Set a card's expiry (YYMM; operators only).
    CardExpiry {
        id: String,
        expiry: String,
    },
    /// A card's history, all of it or whole months (`--from`/`--to` YYYYMM, both included).
    CardHistory {
        id: String,
        #[arg(long)]
        from: Option<String>,
        #[arg(long)]
        to: Option<String>,
    },
    /// F15: the statement of one day (default yesterday).
    CardStatement {
        id: String,
        #[arg(long)]
        date: Option<String>,
    },
    /// F15: pre-register a purchase.
    PreregAdd {
        #[arg(long)]
        card_id: String,
        #[arg(long)]
        merchant: String,
        #[arg(long)]
        amount: u64,
        /// RFC 3339, e.g. 2026-12-31T23:59:59+09:00.
        #[arg(long)]
        valid_until: String,
    },
    PreregShow {
        id: String,
    },
    /// F16: a master account.
    MasterCreate {
        #[arg(long)]
        id: Option<String>,
    },
    MasterShow {
        id: String,
    },
    MasterFund {
        id: String,
        #[arg(long)]
        amount: u64,
        #[arg(long)]
        reference: String,
    },
    /// F16: a sub-account card under a master.
    MasterAddSub {
        id: String,
        #[arg(long)]
        card: String,
        #[arg(long)]
        per_txn_limit: u64,
        #[arg(long)]
        daily_limit: u64,
        #[arg(long)]
        pin: Option<String>,
    },
}

impl HostedCommand {
    pub fn call(self) -> Call {
        use HostedCommand::*;
        let card = |id: &str, what: &str| format!("/v1/cards/{}{what}", seg(id));
        match self {
            CardIssue {
                program,
                denomination,
                card,
                holder,
            } => Call::post(
                "/v1/cards",
                Some(
                    json!({"program": program, "denomination": denomination, "card_number": card, "holder": holder}),
                ),
            ),
            CardFind { card } => Call::post("/v1/cards/lookup", Some(json!({"card_number": card}))),
            CardShow { id } => Call::get(card(&id, "")),
            CardActivate { id, pin } => {
                Call::post(card(&id, "/activate"), Some(json!({"pin": pin})))
            }
            CardRecharge {
                id,
                amount,
                reference,
            } => Call::post(
                card(&id, "/recharge"),
                Some(json!({"amount": amount, "reference": reference})),
            ),
            CardRefund { id } => Call::post(card(&id, "/refund"), None),
            CardStatus { id, status } => {
                Call::post(card(&id, "/status"), Some(json!({"status": status})))
            }
            CardResetPinTries { id } => Call::post(card(&id, "/reset-pin-tries"), None),
            CardExpiry { id, expiry } => {
                Call::post(card(&id, "/expiry"), Some(json!({"expiry": expiry})))
            }
            CardHistory { id, from, to } => Call::get(card(
                &id,
                &format!("/history{}", query(&[("from", from), ("to", to)])),
            )),
            CardStatement { id, date } => Call::get(card(
                &id,
                &format!("/statement{}", query(&[("date", date)])),
            )),
            PreregAdd {
                card_id,
                merchant,
                amount,
                valid_until,
            } => Call::post(
                "/v1/preregistrations",
                Some(
                    json!({"card_id": card_id, "merchant_id": merchant, "amount": amount, "valid_until": valid_until}),
                ),
            ),
            PreregShow { id } => Call::get(format!("/v1/preregistrations/{}", seg(&id))),
            MasterCreate { id } => Call::post("/v1/masters", Some(json!({"id": id}))),
            MasterShow { id } => Call::get(format!("/v1/masters/{}", seg(&id))),
            MasterFund {
                id,
                amount,
                reference,
            } => Call::post(
                format!("/v1/masters/{}/fund", seg(&id)),
                Some(json!({"amount": amount, "reference": reference})),
            ),
            MasterAddSub {
                id,
                card,
                per_txn_limit,
                daily_limit,
                pin,
            } => Call::post(
                format!("/v1/masters/{}/subs", seg(&id)),
                Some(
                    json!({"card_number": card, "per_txn_limit": per_txn_limit, "daily_limit": daily_limit, "pin": pin}),
                ),
            ),
        }
    }
}
