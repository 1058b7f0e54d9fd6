//! `cyberswitch api …`: the admin API of a running daemon from the command line. Every
//! subcommand is one API call; the answer is printed as JSON, an error answer ends the
//! command with its code and message.

use std::path::PathBuf;

use clap::{Args, Subcommand};
use serde_json::{json, Value};

use cyberswitch::admin::client::ApiClient;

#[derive(Args)]
pub struct ApiArgs {
    /// The admin API (`https://host:port` or `http://host:port`).
    #[arg(
        long,
        env = "CYBERSWITCH_API",
        default_value = "https://127.0.0.1:8580"
    )]
    url: String,
    /// The CA (PEM) that signed an `https://` API's certificate; by default the demo's,
    /// `demo-data/tls/ca.pem`, when it exists.
    #[arg(long, env = "CYBERSWITCH_CA")]
    ca: Option<PathBuf>,
    /// Bearer token (better in the environment than on the command line).
    #[arg(long, env = "CYBERSWITCH_TOKEN", hide_env_values = true)]
    token: Option<String>,
    #[command(subcommand)]
    command: ApiCommand,
}

/// `cyberswitch saf …`: the store-and-forward dead letters of a running daemon.
#[derive(Args)]
pub struct SafArgs {
    /// The admin API (`https://host:port` or `http://host:port`).
    #[arg(
        long,
        env = "CYBERSWITCH_API",
        default_value = "https://127.0.0.1:8580"
    )]
    url: String,
    /// The CA (PEM) that signed an `https://` API's certificate; by default the demo's,
    /// `demo-data/tls/ca.pem`, when it exists.
    #[arg(long, env = "CYBERSWITCH_CA")]
    ca: Option<PathBuf>,
    /// Bearer token of an operator.
    #[arg(long, env = "CYBERSWITCH_TOKEN", hide_env_values = true)]
    token: Option<String>,
    #[command(subcommand)]
    command: SafCommand,
}

#[derive(Subcommand)]
pub enum SafCommand {
    /// Items the hosts refused or never acknowledged: link, transaction, leg, amount, age, why.
    List,
    /// Put a dead letter back in its queue (after fixing what made the host refuse it).
    Retry { id: String },
    /// Close a dead letter settled outside the switch; the note says how.
    Resolve {
        id: String,
        #[arg(long)]
        note: String,
    },
}

pub async fn saf(args: SafArgs) -> Result<(), String> {
    let command = match args.command {
        SafCommand::List => ApiCommand::SafList,
        SafCommand::Retry { id } => ApiCommand::SafRetry { id },
        SafCommand::Resolve { id, note } => ApiCommand::SafResolve { id, note },
    };
    api(ApiArgs {
        url: args.url,
        ca: args.ca,
        token: args.token,
        command,
    })
    .await
}

/// `cyberswitch cutover`: close the business day of a running daemon (F13).
#[derive(Args)]
pub struct CutoverArgs {
    /// The admin API (`https://host:port` or `http://host:port`).
    #[arg(
        long,
        env = "CYBERSWITCH_API",
        default_value = "https://127.0.0.1:8580"
    )]
    url: String,
    /// The CA (PEM) that signed an `https://` API's certificate; by default the demo's,
    /// `demo-data/tls/ca.pem`, when it exists.
    #[arg(long, env = "CYBERSWITCH_CA")]
    ca: Option<PathBuf>,
    /// Bearer token of an operator.
    #[arg(long, env = "CYBERSWITCH_TOKEN", hide_env_values = true)]
    token: Option<String>,
    /// Print the closing records as JSON (default: one line per upstream link).
    #[arg(long)]
    json: bool,
}

/// `cyberswitch report …`: reports of a running daemon.
#[derive(Args)]
pub struct ReportArgs {
    /// The admin API (`https://host:port` or `http://host:port`).
    #[arg(
        long,
        env = "CYBERSWITCH_API",
        default_value = "https://127.0.0.1:8580"
    )]
    url: String,
    /// The CA (PEM) that signed an `https://` API's certificate; by default the demo's,
    /// `demo-data/tls/ca.pem`, when it exists.
    #[arg(long, env = "CYBERSWITCH_CA")]
    ca: Option<PathBuf>,
    /// Bearer token of an operator.
    #[arg(long, env = "CYBERSWITCH_TOKEN", hide_env_values = true)]
    token: Option<String>,
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

/// Where the demo keeps the CA of its HTTPS admin API (`cyberswitch demo`'s default data
/// directory).
const DEMO_CA: &str = "demo-data/tls/ca.pem";

/// The API's client: for `https://`, the CA given, else the demo's when it is there.
fn client(url: &str, ca: Option<PathBuf>, token: Option<String>) -> Result<ApiClient, String> {
    let ca = ca.or_else(|| {
        let demo = PathBuf::from(DEMO_CA);
        (url.trim().starts_with("https://") && demo.exists()).then_some(demo)
    });
    Ok(ApiClient::new(url, token)?.with_ca(ca))
}

/// One call, its JSON answer or the error it ended with.
async fn call_json(
    url: &str,
    ca: Option<PathBuf>,
    token: Option<String>,
    method: &str,
    path: &str,
) -> Result<Value, String> {
    let client = client(url, ca, token)?;
    let resp = client.call(method, path, None).await?;
    if resp.ok() {
        return Ok(resp.body);
    }
    Err(format!(
        "{} {}: {}",
        resp.status,
        resp.error_code().unwrap_or("error"),
        resp.body["error"]["message"].as_str().unwrap_or("")
    ))
}

pub async fn cutover(args: CutoverArgs) -> Result<(), String> {
    let body = call_json(&args.url, args.ca, args.token, "post", "/v1/books/cutover").await?;
    if args.json {
        println!(
            "{}",
            serde_json::to_string_pretty(&body).unwrap_or_default()
        );
        return Ok(());
    }
    let closed: Vec<cyberswitch::books::cutover::Closing> =
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
            if l.status != cyberswitch::books::cutover::Status::Matched {
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
    let body = call_json(&args.url, args.ca, args.token, "get", &path).await?;
    if csv {
        let report: cyberswitch::books::report::Settlement =
            serde_json::from_value(body).map_err(|e| e.to_string())?;
        print!("{}", report.to_csv());
    } else {
        println!(
            "{}",
            serde_json::to_string_pretty(&body).unwrap_or_default()
        );
    }
    Ok(())
}

#[derive(Subcommand)]
pub enum ApiCommand {
    /// Is the API up (and the token good)?
    Health,
    /// Store-and-forward dead letters (also `cyberswitch saf list`).
    SafList,
    /// Re-queue a dead letter (also `cyberswitch saf retry`).
    SafRetry {
        id: String,
    },
    /// Resolve a dead letter (also `cyberswitch saf resolve`).
    SafResolve {
        id: String,
        #[arg(long)]
        note: String,
    },
    /// F12: link a wallet to a card.
    LinkAdd {
        #[arg(long)]
        card: String,
        #[arg(long)]
        issuer: String,
        #[arg(long)]
        account: String,
        #[arg(long, default_value_t = cyberswitch::directory::DEFAULT_PRIORITY)]
        priority: u32,
        #[arg(long, default_value = "")]
        label: String,
    },
    /// F12: unlink a wallet.
    LinkRemove {
        #[arg(long)]
        card: String,
        #[arg(long)]
        issuer: String,
        #[arg(long)]
        account: String,
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
        #[arg(long)]
        issuer: String,
        #[arg(long)]
        account: String,
    },
    /// Every change to a card's links: who, when, what (operators).
    LinkHistory {
        #[arg(long)]
        card: String,
    },
    /// Move every card link and hosted card reference to the current card key version,
    /// online (operators; `cyberswitch keys rotate` does it offline).
    KeysRotate,
    /// F11: an issuer's own accounts linked to a card.
    Lookup {
        #[arg(long)]
        issuer: String,
        #[arg(long)]
        card: String,
    },
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
    /// F18: issue a mobile coupon for a pre-registered customer and card; prints its token
    /// (barcode text) and approval number. `--png FILE` writes the token as a QR code.
    CouponIssue {
        #[arg(long)]
        card: String,
        #[arg(long)]
        registration: String,
        /// In currency minor units.
        #[arg(long)]
        discount: u64,
        /// Last day of validity, YYYY-MM-DD.
        #[arg(long)]
        expires: String,
        /// The only merchant (field 42) that may take it.
        #[arg(long)]
        merchant: Option<String>,
        /// Write the token as a QR code image (PNG) here.
        #[arg(long)]
        png: Option<std::path::PathBuf>,
    },
    /// F18: a coupon's terms (card masked) and whether it is used.
    CouponShow {
        id: String,
    },
    /// F17: add accounts to a virtual-account pool (partner × bank × region).
    VaPoolAdd {
        /// Operators name the partner; a partner's token acts for itself.
        #[arg(long)]
        partner: Option<String>,
        #[arg(long)]
        bank: String,
        #[arg(long)]
        region: String,
        /// Comma-separated account numbers.
        #[arg(long, value_delimiter = ',')]
        accounts: Vec<String>,
    },
    /// F17: the pools and each account's state.
    VaPoolList {
        #[arg(long)]
        partner: Option<String>,
    },
    /// F17: retire accounts (an assigned one once its order is paid or expires).
    VaPoolRetire {
        #[arg(long)]
        partner: Option<String>,
        #[arg(long)]
        bank: String,
        #[arg(long)]
        region: String,
        #[arg(long, value_delimiter = ',')]
        accounts: Vec<String>,
    },
    /// F17: assign an account to an order (prints JSON with `account`).
    VaAssign {
        #[arg(long)]
        partner: Option<String>,
        #[arg(long)]
        bank: String,
        #[arg(long)]
        region: String,
        #[arg(long)]
        order: String,
        #[arg(long)]
        amount: u64,
        #[arg(long)]
        expires_min: Option<u64>,
    },
    /// F17: an order: `status` open, paid or expired, and its history.
    VaOrder {
        order: String,
    },
    /// F17: bank advices that matched no open order.
    VaMismatches {
        #[arg(long)]
        partner: Option<String>,
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
    },
    /// Send a partner callback again now.
    OutboxResend {
        id: String,
    },
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

/// Path segments chosen by the user are percent-encoded.
fn seg(s: &str) -> String {
    s.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) {
                char::from(b).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

fn query(pairs: &[(&str, Option<String>)]) -> String {
    let parts: Vec<String> = pairs
        .iter()
        .filter_map(|(k, v)| v.as_ref().map(|v| format!("{k}={}", seg(v))))
        .collect();
    if parts.is_empty() {
        String::new()
    } else {
        format!("?{}", parts.join("&"))
    }
}

/// The API call a subcommand is.
fn call_of(cmd: ApiCommand) -> (&'static str, String, Option<Value>) {
    use ApiCommand::*;
    match cmd {
        SafList => ("get", "/v1/saf/dead-letters".into(), None),
        SafRetry { id } => (
            "post",
            format!("/v1/saf/dead-letters/{}/retry", seg(&id)),
            None,
        ),
        SafResolve { id, note } => (
            "post",
            format!("/v1/saf/dead-letters/{}/resolve", seg(&id)),
            Some(json!({ "note": note })),
        ),
        Health => ("get", "/v1/health".into(), None),
        LinkAdd {
            card,
            issuer,
            account,
            priority,
            label,
        } => (
            "post",
            "/v1/links".into(),
            Some(
                json!({"card_number": card, "issuer": issuer, "account": account, "priority": priority, "label": label}),
            ),
        ),
        LinkRemove {
            card,
            issuer,
            account,
        } => (
            "delete",
            "/v1/links".into(),
            Some(json!({"card_number": card, "issuer": issuer, "account": account})),
        ),
        LinkList { card } => (
            "post",
            "/v1/links/query".into(),
            Some(json!({"card_number": card})),
        ),
        LinkConfirm {
            card,
            issuer,
            account,
        } => (
            "post",
            "/v1/links/confirm".into(),
            Some(json!({"card_number": card, "issuer": issuer, "account": account})),
        ),
        LinkHistory { card } => (
            "post",
            "/v1/links/history".into(),
            Some(json!({"card_number": card})),
        ),
        KeysRotate => ("post", "/v1/keys/rotate".into(), None),
        Lookup { issuer, card } => (
            "post",
            format!("/v1/issuers/{}/lookup", seg(&issuer)),
            Some(json!({"card_number": card})),
        ),
        CardIssue {
            program,
            denomination,
            card,
            holder,
        } => (
            "post",
            "/v1/cards".into(),
            Some(
                json!({"program": program, "denomination": denomination, "card_number": card, "holder": holder}),
            ),
        ),
        CardFind { card } => (
            "post",
            "/v1/cards/lookup".into(),
            Some(json!({"card_number": card})),
        ),
        CardShow { id } => ("get", format!("/v1/cards/{}", seg(&id)), None),
        CardActivate { id, pin } => (
            "post",
            format!("/v1/cards/{}/activate", seg(&id)),
            Some(json!({"pin": pin})),
        ),
        CardRecharge {
            id,
            amount,
            reference,
        } => (
            "post",
            format!("/v1/cards/{}/recharge", seg(&id)),
            Some(json!({"amount": amount, "reference": reference})),
        ),
        CardRefund { id } => ("post", format!("/v1/cards/{}/refund", seg(&id)), None),
        CardStatus { id, status } => (
            "post",
            format!("/v1/cards/{}/status", seg(&id)),
            Some(json!({"status": status})),
        ),
        CardResetPinTries { id } => (
            "post",
            format!("/v1/cards/{}/reset-pin-tries", seg(&id)),
            None,
        ),
        CardExpiry { id, expiry } => (
            "post",
            format!("/v1/cards/{}/expiry", seg(&id)),
            Some(json!({"expiry": expiry})),
        ),
        CardHistory { id, from, to } => (
            "get",
            format!(
                "/v1/cards/{}/history{}",
                seg(&id),
                query(&[("from", from), ("to", to)])
            ),
            None,
        ),
        CardStatement { id, date } => (
            "get",
            format!(
                "/v1/cards/{}/statement{}",
                seg(&id),
                query(&[("date", date)])
            ),
            None,
        ),
        PreregAdd {
            card_id,
            merchant,
            amount,
            valid_until,
        } => (
            "post",
            "/v1/preregistrations".into(),
            Some(
                json!({"card_id": card_id, "merchant_id": merchant, "amount": amount, "valid_until": valid_until}),
            ),
        ),
        PreregShow { id } => ("get", format!("/v1/preregistrations/{}", seg(&id)), None),
        MasterCreate { id } => ("post", "/v1/masters".into(), Some(json!({"id": id}))),
        MasterShow { id } => ("get", format!("/v1/masters/{}", seg(&id)), None),
        MasterFund {
            id,
            amount,
            reference,
        } => (
            "post",
            format!("/v1/masters/{}/fund", seg(&id)),
            Some(json!({"amount": amount, "reference": reference})),
        ),
        MasterAddSub {
            id,
            card,
            per_txn_limit,
            daily_limit,
            pin,
        } => (
            "post",
            format!("/v1/masters/{}/subs", seg(&id)),
            Some(
                json!({"card_number": card, "per_txn_limit": per_txn_limit, "daily_limit": daily_limit, "pin": pin}),
            ),
        ),
        CouponIssue {
            card,
            registration,
            discount,
            expires,
            merchant,
            png: _,
        } => (
            "post",
            "/v1/coupons".into(),
            Some(json!({
                "card_number": card,
                "registration": registration,
                "discount": discount,
                "expires": expires,
                "merchant": merchant,
            })),
        ),
        CouponShow { id } => ("get", format!("/v1/coupons/{}", seg(&id)), None),
        VaPoolAdd {
            partner,
            bank,
            region,
            accounts,
        } => (
            "post",
            "/v1/va/pools".into(),
            Some(json!({"partner": partner, "bank": bank, "region": region, "accounts": accounts})),
        ),
        VaPoolList { partner } => (
            "get",
            format!("/v1/va/pools{}", query(&[("partner", partner)])),
            None,
        ),
        VaPoolRetire {
            partner,
            bank,
            region,
            accounts,
        } => (
            "post",
            "/v1/va/pools/retire".into(),
            Some(json!({"partner": partner, "bank": bank, "region": region, "accounts": accounts})),
        ),
        VaAssign {
            partner,
            bank,
            region,
            order,
            amount,
            expires_min,
        } => (
            "post",
            "/v1/va/orders".into(),
            Some(
                json!({"partner": partner, "bank": bank, "region": region, "order": order, "amount": amount, "expires_min": expires_min}),
            ),
        ),
        VaOrder { order } => ("get", format!("/v1/va/orders/{}", seg(&order)), None),
        VaMismatches { partner } => (
            "get",
            format!("/v1/va/mismatches{}", query(&[("partner", partner)])),
            None,
        ),
        VaReport { partner, from, to } => (
            "get",
            format!(
                "/v1/va/report{}",
                query(&[("partner", partner), ("from", from), ("to", to)])
            ),
            None,
        ),
        Outbox { partner, status } => (
            "get",
            format!(
                "/v1/outbox{}",
                query(&[("partner", partner), ("status", status)])
            ),
            None,
        ),
        OutboxResend { id } => ("post", format!("/v1/outbox/{}/resend", seg(&id)), None),
        TxnSearch { rrn, stan, date } => (
            "get",
            format!(
                "/v1/transactions{}",
                query(&[
                    ("rrn", rrn),
                    ("stan", stan.map(|s| s.to_string())),
                    ("date", date)
                ])
            ),
            None,
        ),
    }
}

pub async fn api(args: ApiArgs) -> Result<(), String> {
    let client = client(&args.url, args.ca, args.token)?;
    let png = match &args.command {
        ApiCommand::CouponIssue { png, .. } => png.clone(),
        _ => None,
    };
    let (method, path, body) = call_of(args.command);
    let resp = client.call(method, &path, body.as_ref()).await?;
    let text = serde_json::to_string_pretty(&resp.body).unwrap_or_default();
    if resp.ok() {
        println!("{text}");
        if let (Some(path), Some(token)) = (png, resp.body["token"].as_str()) {
            cyberswitch::coupons::write_qr_png(token, &path)?;
            eprintln!("QR code written to {}", path.display());
        }
        Ok(())
    } else {
        Err(format!(
            "{} {}: {} ({})",
            resp.status,
            resp.error_code().unwrap_or("error"),
            resp.body["error"]["message"].as_str().unwrap_or(&text),
            path
        ))
    }
}
