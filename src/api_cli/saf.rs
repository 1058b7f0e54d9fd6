//! Store-and-forward dead letters: `cyberswitch saf list|retry|resolve` and their
//! `cyberswitch api saf-list|saf-retry|saf-resolve` spellings, the same three calls.

use clap::{Args, Subcommand};
use serde_json::json;

use super::request::{pretty, query, seg, Call, Endpoint};

/// `cyberswitch saf …`: the store-and-forward dead letters of a running daemon.
#[derive(Args)]
pub struct SafArgs {
    #[command(flatten)]
    endpoint: Endpoint,
    #[command(subcommand)]
    command: SafCommand,
}

#[derive(Subcommand)]
pub enum SafCommand {
    /// Items the hosts refused or never acknowledged: link, transaction, leg, amount, age, why
    /// (a page at a time: `--after` the `next` of the page before).
    List(PageArgs),
    /// Put a dead letter back in its queue (after fixing what made the host refuse it).
    Retry { id: String },
    /// Close a dead letter settled outside the switch; the note says how.
    Resolve {
        id: String,
        #[arg(long)]
        note: String,
    },
}

/// Which page of the dead-letter list.
#[derive(Args)]
pub struct PageArgs {
    /// The `next` of the page before.
    #[arg(long)]
    after: Option<String>,
    /// At most this many (1 to 1,000; 1,000 when not given).
    #[arg(long)]
    limit: Option<u32>,
}

impl PageArgs {
    fn call(self) -> Call {
        Call::get(format!(
            "/v1/saf/dead-letters{}",
            query(&[
                ("after", self.after),
                ("limit", self.limit.map(|n| n.to_string())),
            ])
        ))
    }
}

/// The same calls as `cyberswitch api` subcommands.
// The variants' names are the subcommands' (`saf-list` …): the prefix is what users type.
#[allow(clippy::enum_variant_names)]
#[derive(Subcommand)]
pub enum SafApiCommand {
    /// Store-and-forward dead letters (also `cyberswitch saf list`).
    SafList(PageArgs),
    /// Re-queue a dead letter (also `cyberswitch saf retry`).
    SafRetry { id: String },
    /// Resolve a dead letter (also `cyberswitch saf resolve`).
    SafResolve {
        id: String,
        #[arg(long)]
        note: String,
    },
}

impl SafCommand {
    fn call(self) -> Call {
        match self {
            SafCommand::List(page) => page.call(),
            SafCommand::Retry { id } => {
                Call::post(format!("/v1/saf/dead-letters/{}/retry", seg(&id)), None)
            }
            SafCommand::Resolve { id, note } => Call::post(
                format!("/v1/saf/dead-letters/{}/resolve", seg(&id)),
                Some(json!({ "note": note })),
            ),
        }
    }
}

impl SafApiCommand {
    pub fn call(self) -> Call {
        match self {
            SafApiCommand::SafList(page) => SafCommand::List(page),
            SafApiCommand::SafRetry { id } => SafCommand::Retry { id },
            SafApiCommand::SafResolve { id, note } => SafCommand::Resolve { id, note },
        }
        .call()
    }
}

pub async fn saf(args: SafArgs) -> Result<(), String> {
    let body = args.endpoint.send(&args.command.call()).await?;
    println!("{}", pretty(&body));
    Ok(())
}
