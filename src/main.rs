//! The `cyberswitch` command line.

use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// mimalloc rather than glibc's malloc: under load the switch frees on one thread what another
/// allocated (messages, journal steps), and glibc's arenas then contend on their locks
/// (measured in docs/performance.md).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

mod api_cli;
mod cli;
mod ops;

#[derive(Parser)]
#[command(
    name = "cyberswitch",
    version,
    about = "ISO 8583 switch for card-linked cyber-money wallets"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the switch with a configuration file.
    Run(ops::RunArgs),
    /// Run the demo: switch, issuer and acquirer simulators, seeded cards and wallets.
    Demo(ops::DemoArgs),
    /// Run a simulator of an upstream host.
    Sim {
        #[command(subcommand)]
        command: ops::SimCommand,
    },
    /// Call the admin API of a running switch (links, look-ups, hosted cards, masters,
    /// transaction search).
    Api(api_cli::ApiArgs),
    /// Store-and-forward dead letters of a running switch: list, retry, resolve.
    Saf(api_cli::SafArgs),
    /// Close the business day of a running switch and reconcile every upstream link (0500).
    Cutover(api_cli::CutoverArgs),
    /// Reports of a running switch: `report settlement [--date D] [--json|--csv]`.
    Report(api_cli::ReportArgs),
    /// Card keys: move every stored card reference to the current key version.
    Keys {
        #[command(subcommand)]
        command: ops::KeysCommand,
    },
    /// Link, unlink and list wallets of a card (against the switch's data directory).
    Link {
        #[command(subcommand)]
        command: ops::LinkCommand,
    },
    /// Print the journal (masked): show, tail, find --rrn.
    Journal {
        #[command(subcommand)]
        command: ops::JournalCommand,
    },
    /// Drive a switch with a mix of flows and report throughput and latency.
    Load(ops::LoadArgs),
    /// Act as a terminal: send one message to a switch and print the answer.
    Send(ops::SendArgs),
    /// Work with message layouts (spec files).
    Spec {
        #[command(subcommand)]
        command: cli::SpecCommand,
    },
    /// Decode a message and print its fields (card data masked in the table).
    Decode(cli::DecodeArgs),
    /// Encode a message given as JSON and print it as hex.
    Encode(cli::EncodeArgs),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Spec { command } => cli::spec(command),
        Command::Decode(args) => cli::decode(args),
        Command::Encode(args) => cli::encode(args),
        Command::Api(args) => ops::block_on(api_cli::api(args)),
        Command::Saf(args) => ops::block_on(api_cli::saf(args)),
        Command::Cutover(args) => ops::block_on(api_cli::cutover(args)),
        Command::Report(args) => ops::block_on(api_cli::report(args)),
        Command::Run(args) => ops::block_on(ops::run(args)),
        Command::Demo(args) => ops::block_on(ops::demo(args)),
        Command::Sim { command } => ops::block_on(ops::sim(command)),
        Command::Link { command } => ops::link(command),
        Command::Keys { command } => ops::keys(command),
        Command::Send(args) => ops::block_on(ops::send(args)),
        Command::Journal { command } => ops::journal(command),
        Command::Load(args) => ops::block_on(ops::load(args)),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("cyberswitch: {e}");
            ExitCode::FAILURE
        }
    }
}
