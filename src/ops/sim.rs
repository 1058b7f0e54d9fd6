//! `cyberswitch sim …`: a simulator of an upstream host, or a bank sending deposits.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use clap::{Args, Subcommand};
use tokio_util::sync::CancellationToken;

use cyberswitch::iso8583::Spec;
use cyberswitch::net::framing::Framing;
use cyberswitch::sim::SimKind;

#[derive(Subcommand)]
pub enum SimCommand {
    /// A wallet issuer (balance, debit, credit, reversal).
    Issuer {
        #[arg(long)]
        config: PathBuf,
    },
    /// A card acquirer (authorizations, reversals).
    Acquirer {
        #[arg(long)]
        config: PathBuf,
    },
    /// A bank sending deposits to virtual accounts (F17) to the switch's bank listener:
    /// one, or `--count N --concurrency C` for load.
    Bank(BankArgs),
    /// A partner's callback receiver: checks signatures (401 when bad), prints each callback.
    Partner {
        #[arg(long, default_value = "127.0.0.1:8590")]
        listen: std::net::SocketAddr,
        /// The partner's signing secret.
        #[arg(long, env = "CYBERSWITCH_PARTNER_SECRET", hide_env_values = true)]
        secret: String,
    },
    /// The demo's four simulators (three wallet issuers, one acquirer) on the demo's fixed
    /// ports, in this process: for `cyberswitch demo --external-sims`.
    Demo {
        /// The demo's data directory (the simulators keep theirs under it).
        #[arg(long, default_value = "demo-data")]
        data_dir: PathBuf,
        /// Open the accounts of this many load cards (as `demo --load-cards`).
        #[arg(long, default_value_t = 0)]
        load_cards: usize,
    },
}

#[derive(Args)]
pub struct BankArgs {
    /// The switch's bank listener.
    #[arg(long, default_value = "127.0.0.1:8585")]
    to: String,
    #[arg(long, default_value = "iso87-ascii")]
    spec: String,
    #[arg(long, default_value = "binary2")]
    framing: Framing,
    /// Virtual account(s) deposited to (comma-separated: taken in turn).
    #[arg(long, value_delimiter = ',', required = true)]
    account: Vec<String>,
    #[arg(long)]
    amount: u64,
    /// Send 0220 advices (booked at the bank already) instead of 0200 questions.
    #[arg(long)]
    advice: bool,
    /// A fixed RRN (to retransmit one deposit); default: a new one per deposit.
    #[arg(long)]
    rrn: Option<String>,
    #[arg(long, default_value_t = 1)]
    count: u64,
    #[arg(long, default_value_t = 1)]
    concurrency: usize,
    #[arg(long, default_value_t = 5_000)]
    timeout_ms: u64,
}

pub async fn sim(cmd: SimCommand) -> Result<(), String> {
    cyberswitch::observe::init_logs();
    match cmd {
        SimCommand::Issuer { config } => {
            cyberswitch::sim::run_from_file(&config, SimKind::Issuer).await
        }
        SimCommand::Acquirer { config } => {
            cyberswitch::sim::run_from_file(&config, SimKind::Acquirer).await
        }
        SimCommand::Bank(a) => {
            let spec = Arc::new(Spec::resolve(&a.spec).map_err(|e| e.to_string())?);
            let report = cyberswitch::sim::bank::run(cyberswitch::sim::bank::BankRun {
                switch: a.to,
                spec,
                framing: a.framing,
                accounts: a.account,
                amount: a.amount,
                advice: a.advice,
                rrn: a.rrn,
                count: a.count,
                concurrency: a.concurrency,
                timeout: Duration::from_millis(a.timeout_ms),
            })
            .await?;
            println!(
                "{}",
                serde_json::to_string_pretty(&report).unwrap_or_default()
            );
            Ok(())
        }
        SimCommand::Partner { listen, secret } => {
            let stop = CancellationToken::new();
            let sim =
                cyberswitch::sim::partner::PartnerSim::start(listen, &secret, true, stop.clone())
                    .await?;
            eprintln!("partner receiver on http://{}/ (Ctrl-C stops)", sim.addr);
            cyberswitch::daemon::shutdown_signal().await;
            stop.cancel();
            Ok(())
        }
        SimCommand::Demo {
            data_dir,
            load_cards,
        } => {
            let stop = CancellationToken::new();
            let sims =
                cyberswitch::demo::start_demo_sims(&data_dir, load_cards, stop.clone()).await?;
            for s in &sims {
                println!("simulator {} on {}", s.name, s.addr);
            }
            println!("simulators ready");
            cyberswitch::daemon::shutdown_signal().await;
            stop.cancel();
            drop(sims);
            Ok(())
        }
    }
}
