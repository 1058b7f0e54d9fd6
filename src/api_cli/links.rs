//! Card links (F12, SPEC §10) and an issuer's look-up of them (F11).

use clap::{Args, Subcommand};
use serde_json::{json, Value};

use super::request::{seg, Call};

/// A wallet: the issuer and its account (what a link points at).
#[derive(Args)]
pub struct Wallet {
    #[arg(long)]
    pub issuer: String,
    #[arg(long)]
    pub account: String,
}

/// A new link's place among the card's wallets and its label.
#[derive(Args)]
pub struct LinkTerms {
    #[arg(long, default_value_t = cyberswitch::directory::DEFAULT_PRIORITY)]
    pub priority: u32,
    #[arg(long, default_value = "")]
    pub label: String,
}

#[derive(Subcommand)]
pub enum LinkCommand {
    /// F12: link a wallet to a card.
    LinkAdd {
        #[arg(long)]
        card: String,
        #[command(flatten)]
        wallet: Wallet,
        #[command(flatten)]
        terms: LinkTerms,
    },
    /// F12: unlink a wallet.
    LinkRemove {
        #[arg(long)]
        card: String,
        #[command(flatten)]
        wallet: Wallet,
    },
    /// The wallets linked to a card (those in the caller's scope, with their status).
    LinkList {
        #[arg(long)]
        card: String,
    },
    /// SPEC §10: the account's issuer confirms a partner's pending link.
    LinkConfirm {
        #[arg(long)]
        card: String,
        #[command(flatten)]
        wallet: Wallet,
    },
    /// Every change to a card's links: who, when, what (operators).
    LinkHistory {
        #[arg(long)]
        card: String,
    },
    /// F11: an issuer's own accounts linked to a card.
    Lookup {
        #[arg(long)]
        issuer: String,
        #[arg(long)]
        card: String,
    },
}

impl LinkCommand {
    pub fn call(self) -> Call {
        use LinkCommand::*;
        match self {
            LinkAdd {
                card,
                wallet: Wallet { issuer, account },
                terms: LinkTerms { priority, label },
            } => Call::post(
                "/v1/links",
                Some(
                    json!({"card_number": card, "issuer": issuer, "account": account, "priority": priority, "label": label}),
                ),
            ),
            LinkRemove { card, wallet } => Call::delete("/v1/links", wallet.of(&card)),
            LinkList { card } => Call::post("/v1/links/query", Some(json!({"card_number": card}))),
            LinkConfirm { card, wallet } => Call::post("/v1/links/confirm", Some(wallet.of(&card))),
            LinkHistory { card } => {
                Call::post("/v1/links/history", Some(json!({"card_number": card})))
            }
            Lookup { issuer, card } => Call::post(
                format!("/v1/issuers/{}/lookup", seg(&issuer)),
                Some(json!({"card_number": card})),
            ),
        }
    }
}

impl Wallet {
    /// The body naming this wallet's link to `card`.
    fn of(&self, card: &str) -> Value {
        json!({"card_number": card, "issuer": self.issuer, "account": self.account})
    }
}
