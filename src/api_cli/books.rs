//! The books of a running daemon: `cyberswitch cutover` (close the business day, F13) and
//! `cyberswitch report settlement`.

use clap::{Args, Subcommand};

use cyberswitch::books::cutover::{Closing, Status};
use cyberswitch::books::report::Settlement;

use super::request::{pretty, query, Call, Endpoint};

/// `cyberswitch cutover`: close the business day of a running daemon (F13).
#[derive(Args)]
pub struct CutoverArgs {
    #[command(flatten)]
    endpoint: Endpoint,
    /// Print the closing records as JSON (default: one line per upstream link).
    #[arg(long)]
    json: bool,
}

/// `cyberswitch report …`: reports of a running daemon.
#[derive(Args)]
pub struct ReportArgs {
    #[command(flatten)]
    endpoint: Endpoint,
    #[command(subcommand)]
    command: ReportCommand,
}

#[derive(Subcommand)]
pub enum ReportCommand {
    /// Settlement per issuer, acquirer, merchant and terminal for a business date (default:
    /// the open one), as JSON (default) or CSV.
    Settlement {
        /// `YYYY-MM-DD`.
        #[arg(long)]
        date: Option<String>,
        #[arg(long, conflicts_with = "csv")]
        json: bool,
        #[arg(long)]
        csv: bool,
    },
}

pub async fn cutover(args: CutoverArgs) -> Result<(), String> {
    let body = args
        .endpoint
        .send(&Call::post("/v1/books/cutover", None))
        .await?;
    if args.json {
        println!("{}", pretty(&body));
        return Ok(());
    }
    let closed: Vec<Closing> =
        serde_json::from_value(body["closed"].clone()).map_err(|e| e.to_string())?;
    let mut mismatched = 0;
    for day in &closed {
        println!("business date {} closed", day.business_date);
        for l in &day.links {
            let theirs = l.theirs.map_or("-".to_string(), |t| t.net().to_string());
            println!(
                "  {:<12} {:<10} ours: net {} ({} debits, {} credits)  theirs: net {theirs}  {}",
                l.link,
                format!("{:?}", l.status).to_lowercase(),
                l.ours.net(),
                l.ours.debits,
                l.ours.credits,
                l.note
            );
            if l.status != Status::Matched {
                mismatched += 1;
            }
        }
    }
    if mismatched > 0 {
        return Err(format!("{mismatched} link(s) mismatched"));
    }
    Ok(())
}

pub async fn report(args: ReportArgs) -> Result<(), String> {
    let ReportCommand::Settlement { date, json: _, csv } = args.command;
    let path = format!("/v1/reports/settlement{}", query(&[("date", date)]));
    let body = args.endpoint.send(&Call::get(path)).await?;
    if csv {
        let report: Settlement = serde_json::from_value(body).map_err(|e| e.to_string())?;
        print!("{}", report.to_csv());
    } else {
        println!("{}", pretty(&body));
    }
    Ok(())
}
