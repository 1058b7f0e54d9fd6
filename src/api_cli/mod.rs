//! `cyberswitch api …` (and `saf`, `cutover`, `report`): the admin API of a running daemon
//! from the command line. Every subcommand is one API call; the answer is printed as JSON,
//! an error answer ends the command with its code and message.
//!
//! One file a concept, its subcommands beside the calls they make: [`links`], [`hosted`]
//! cards and masters, [`coupons`], [`va`] (virtual accounts and partner callbacks), [`saf`]
//! dead letters, the [`books`] (cut-over, settlement report); [`request`] is where the API
//! is and the one helper that sends a call.

mod books;
mod coupons;
mod hosted;
mod links;
mod request;
mod saf;
mod va;

use clap::{Args, Subcommand};

pub use books::{cutover, report, CutoverArgs, ReportArgs};
pub use links::{LinkTerms, Wallet};
use request::{pretty, query, Call, Endpoint};
pub use saf::{saf, SafArgs};

#[derive(Args)]
pub struct ApiArgs {
    #[command(flatten)]
    endpoint: Endpoint,
    #[command(subcommand)]
    command: ApiCommand,
}

/// Every `cyberswitch api` subcommand (each concept's are flattened in: the names stay
/// `link-add`, `card-show`, `va-assign` …).
#[derive(Subcommand)]
pub enum ApiCommand {
    /// Is the API up (and the token good)?
    Health,
    #[command(flatten)]
    Saf(saf::SafApiCommand),
    #[command(flatten)]
    Links(links::LinkCommand),
    /// Move every card link and hosted card reference to the current card key version,
    /// online (operators; `cyberswitch keys rotate` does it offline).
    KeysRotate,
    #[command(flatten)]
    Hosted(hosted::HostedCommand),
    #[command(flatten)]
    Coupons(coupons::CouponCommand),
    #[command(flatten)]
    Va(va::VaCommand),
    /// Transactions by RRN, STAN and/or date (card numbers masked).
    TxnSearch {
        #[arg(long)]
        rrn: Option<String>,
        #[arg(long)]
        stan: Option<u32>,
        #[arg(long)]
        date: Option<String>,
    },
}

impl ApiCommand {
    /// The API call a subcommand is.
    fn call(self) -> Call {
        match self {
            ApiCommand::Health => Call::get("/v1/health"),
            ApiCommand::Saf(c) => c.call(),
            ApiCommand::Links(c) => c.call(),
            ApiCommand::KeysRotate => Call::post("/v1/keys/rotate", None),
            ApiCommand::Hosted(c) => c.call(),
            ApiCommand::Coupons(c) => c.call(),
            ApiCommand::Va(c) => c.call(),
            ApiCommand::TxnSearch { rrn, stan, date } => Call::get(format!(
                "/v1/transactions{}",
                query(&[
                    ("rrn", rrn),
                    ("stan", stan.map(|s| s.to_string())),
                    ("date", date)
                ])
            )),
        }
    }
}

pub async fn api(args: ApiArgs) -> Result<(), String> {
    let png = match &args.command {
        ApiCommand::Coupons(c) => c.png(),
        _ => None,
    };
    let body = args.endpoint.send(&args.command.call()).await?;
    println!("{}", pretty(&body));
    coupons::write_png(png, &body)
}
