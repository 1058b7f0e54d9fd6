//! The `cyberswitch` command line.

use std::process::ExitCode;

use clap::{Parser, Subcommand};

mod cli;

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
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("cyberswitch: {e}");
            ExitCode::FAILURE
        }
    }
}
