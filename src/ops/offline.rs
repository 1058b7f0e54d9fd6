//! `cyberswitch link …` and `cyberswitch keys rotate`: the card directory of a stopped
//! switch, opened from its data directory.

use std::path::PathBuf;

use clap::{Args, Subcommand};

use crate::api_cli::{LinkTerms, Wallet};

use cyberswitch::config::Config;
use cyberswitch::directory::{Directory, WalletLink};
use cyberswitch::iso8583::Pan;

#[derive(Subcommand)]
pub enum LinkCommand {
    /// Link a wallet to a card.
    Add {
        #[command(flatten)]
        target: LinkTarget,
        #[command(flatten)]
        wallet: Wallet,
        #[command(flatten)]
        terms: LinkTerms,
    },
    /// Unlink a wallet from a card.
    Remove {
        #[command(flatten)]
        target: LinkTarget,
        #[command(flatten)]
        wallet: Wallet,
    },
    /// List a card's wallets.
    List {
        #[command(flatten)]
        target: LinkTarget,
    },
}

#[derive(Subcommand)]
pub enum KeysCommand {
    /// Re-hash every card link record and hosted card reference under the current card key
    /// version (`[keys] current`), without losing any link. The switch must not be running
    /// (RocksDB allows one process per data directory); until the rotation, look-ups fall
    /// back to the older versions.
    Rotate {
        /// The switch configuration (its data directory and card keys are used).
        #[arg(long, default_value = "config/cyberswitch.toml")]
        config: PathBuf,
    },
}

pub fn keys(cmd: KeysCommand) -> Result<(), String> {
    let KeysCommand::Rotate { config } = cmd;
    let config = Config::load(&config).map_err(|e| e.to_string())?;
    let key = config.card_key_chain();
    let db = cyberswitch::store::open(&config.data_dir)?;
    let (links, hosted) = Directory::new(db, key.clone()).rotate()?;
    println!(
        "card key version {}: {links} card link records and {hosted} hosted card references moved to it",
        key.current_version()
    );
    Ok(())
}

#[derive(Args)]
pub struct LinkTarget {
    /// The switch configuration (its data directory and card key are used). The switch must
    /// not be running: RocksDB allows one process per data directory.
    #[arg(long, default_value = "config/cyberswitch.toml")]
    config: PathBuf,
    /// The card number.
    #[arg(long)]
    card: String,
}

fn open_directory(target: &LinkTarget) -> Result<(Directory, Pan), String> {
    let config = Config::load(&target.config).map_err(|e| e.to_string())?;
    let key = config.card_key_chain();
    let db = cyberswitch::store::open(&config.data_dir)?;
    let pan = Pan::parse(target.card.trim().as_bytes()).map_err(|e| e.to_string())?;
    Ok((
        Directory::new(db, key).with_max_links(config.limits.max_links_per_card),
        pan,
    ))
}

pub fn link(cmd: LinkCommand) -> Result<(), String> {
    match cmd {
        LinkCommand::Add {
            target,
            wallet: Wallet { issuer, account },
            terms: LinkTerms { priority, label },
        } => {
            let (dir, pan) = open_directory(&target)?;
            // The offline tool is the operator's own hand on the data directory: active.
            dir.link(
                &pan,
                WalletLink {
                    label,
                    ..WalletLink::active(&issuer, &account, priority, "cli")
                },
                "cli",
                |_| true,
            )?;
            println!("linked to {pan}");
        }
        LinkCommand::Remove {
            target,
            wallet: Wallet { issuer, account },
        } => {
            let (dir, pan) = open_directory(&target)?;
            if dir.unlink(&pan, &issuer, &account, "cli", |_| true)? {
                println!("unlinked from {pan}");
            } else {
                return Err(format!("{issuer}/{account} is not linked to {pan}"));
            }
        }
        LinkCommand::List { target } => {
            let (dir, pan) = open_directory(&target)?;
            println!("{pan}:");
            for w in dir.wallets(&pan)? {
                println!(
                    "  {:>3}  {:<10} {:<12} {:<8} {}",
                    w.priority,
                    w.issuer,
                    w.account,
                    w.status.as_str(),
                    w.label
                );
            }
        }
    }
    Ok(())
}
