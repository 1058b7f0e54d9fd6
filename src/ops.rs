//! Operating commands: `run`, `demo`, `sim`, `link`, `send`, `journal`.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use clap::{Args, Subcommand};
use tokio_util::sync::CancellationToken;

use crate::api_cli::{LinkTerms, Wallet};

use cyberswitch::config::Config;
use cyberswitch::demo::DemoPorts;
use cyberswitch::directory::{Directory, WalletLink};
use cyberswitch::iso8583::json::{display_value, from_json, masked_value};
use cyberswitch::iso8583::tlv::SwitchData;
use cyberswitch::iso8583::{Pan, Spec};
use cyberswitch::net::client::Client;
use cyberswitch::net::framing::Framing;
use cyberswitch::sim::SimKind;

pub fn block_on(f: impl std::future::Future<Output = Result<(), String>>) -> Result<(), String> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|e| format!("runtime: {e}"))?
        .block_on(f)
}

#[derive(Args)]
pub struct RunArgs {
    /// The configuration file (see config/cyberswitch.toml).
    #[arg(long, default_value = "config/cyberswitch.toml")]
    config: PathBuf,
    /// Accept a benchmark-only `[bench] durability` setting ("unsynced", "off"): the switch
    /// then loses money on a crash. Never in production.
    #[arg(long)]
    unsafe_no_durability: bool,
}

pub async fn run(args: RunArgs) -> Result<(), String> {
    cyberswitch::observe::init_logs();
    let config = Config::load(&args.config).map_err(|e| e.to_string())?;
    config.refuse_unsafe(args.unsafe_no_durability)?;
    let stop = CancellationToken::new();
    if let Some(addr) = config.metrics_addr {
        cyberswitch::observe::serve_metrics(addr, stop.clone()).await?;
    }
    let running = cyberswitch::daemon::start(config, stop.clone()).await?;
    for (name, addr) in &running.addrs {
        println!("listener {name} on {addr}");
    }
    println!("cyberswitch ready");
    cyberswitch::daemon::shutdown_signal().await;
    println!("stopping");
    running.shutdown(&stop).await;
    Ok(())
}

#[derive(Args)]
pub struct DemoArgs {
    /// Data directory (created and seeded when new, resumed as it is otherwise).
    #[arg(long, default_value = "demo-data")]
    data_dir: PathBuf,
    /// Also seed this many load-test cards (9420000000000000…, wallets that never run out;
    /// 9430000000000000… without wallets), for `cyberswitch load`. Fresh directories only.
    #[arg(long, default_value_t = 0)]
    load_cards: usize,
    /// Listen on ports the system picks (switch, admin API, metrics, simulators; all printed)
    /// instead of the fixed ones: several demos side by side, and tests.
    #[arg(long)]
    ephemeral_ports: bool,
    /// Start only the switch; the simulators run in their own process (`cyberswitch sim demo`,
    /// same data directory and load cards), so that each process's CPU can be measured.
    #[arg(long)]
    external_sims: bool,
    /// Benchmark only (`[bench] durability`): "unsynced" (journal written, never fsynced) or
    /// "off" (no WAL: the null switch). Needs --unsafe-no-durability.
    #[arg(long, default_value = "synced")]
    bench_durability: String,
    /// Accept --bench-durability other than "synced": the switch loses money on a crash.
    #[arg(long)]
    unsafe_no_durability: bool,
}

pub async fn demo(args: DemoArgs) -> Result<(), String> {
    cyberswitch::observe::init_logs();
    let stop = CancellationToken::new();
    let ports = if args.ephemeral_ports {
        DemoPorts::ephemeral_with_metrics()
    } else {
        DemoPorts::default()
    };
    // The fixed-port demo serves TLS too; `--ephemeral-ports` (the crash harness) stays plain.
    let tls = if args.ephemeral_ports {
        cyberswitch::demo::DemoTls::default()
    } else {
        cyberswitch::demo::DemoTls::fixed()
    };
    let extra = match args.bench_durability.as_str() {
        "synced" => String::new(),
        "unsynced" | "off" if args.unsafe_no_durability => {
            format!("\n[bench]\ndurability = \"{}\"\n", args.bench_durability)
        }
        "unsynced" | "off" => {
            return Err(format!(
            "--bench-durability {} loses money on a crash: refused without --unsafe-no-durability",
            args.bench_durability
        ))
        }
        other => {
            return Err(format!(
                "--bench-durability {other}: one of synced, unsynced, off"
            ))
        }
    };
    let demo = cyberswitch::demo::start_for_bench(
        &args.data_dir,
        ports,
        &tls,
        stop.clone(),
        cyberswitch::demo::BenchDemo {
            load_cards: args.load_cards,
            external_sims: args.external_sims,
            extra_toml: extra,
        },
    )
    .await?;
    println!(
        "switch on {} (iso87-ascii, 2-byte length)",
        demo.switch_addr()
    );
    if let Some(a) = demo.tls_switch_addr() {
        println!("switch over TLS on {a} (iso87-ascii, 2-byte length)");
    }
    if let Some(m) = demo.metrics {
        println!("metrics on http://{m}/metrics");
    }
    if let Some(a) = demo.running.admin {
        match tls.admin {
            true => println!("admin API on https://{a} (CA: {})", demo.ca().display()),
            false => println!("admin API on http://{a}"),
        }
    }
    println!(
        "operator token: {}",
        cyberswitch::demo::secret(&args.data_dir, "operator.token")?
    );
    println!(
        "issuer token: {} (issuer EMONEY: confirms links to its accounts)",
        cyberswitch::demo::secret(&args.data_dir, "issuer-emoney.token")?
    );
    println!(
        "terminal PIN key: {}",
        cyberswitch::demo::secret(&args.data_dir, "terminal-pin.key")?
    );
    for s in &demo.sims {
        println!("simulator {} on {}", s.name, s.addr);
    }
    if let Some(b) = demo.bank_addr() {
        let (partner, bank, region) = cyberswitch::demo::DEMO_VA;
        println!(
            "bank listener on {b} (F17 deposits, bank {bank}; pool {partner}/{bank}/{region})"
        );
    }
    println!(
        "partner token: {} (partner {}: links wait for the issuer, virtual accounts)",
        cyberswitch::demo::secret(&args.data_dir, "partner.token")?,
        cyberswitch::demo::DEMO_VA.0
    );
    println!(
        "partner receiver on http://{}/callbacks (secret in {}/partner.secret)",
        demo.partner.addr,
        args.data_dir.display()
    );
    println!("cyberswitch ready");
    cyberswitch::daemon::shutdown_signal().await;
    println!("stopping");
    demo.running.shutdown(&stop).await;
    Ok(())
}

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

#[derive(Args)]
pub struct SendArgs {
    /// The switch address.
    #[arg(long, default_value = "127.0.0.1:8583")]
    to: String,
    #[arg(long, default_value = "iso87-ascii")]
    spec: String,
    #[arg(long, default_value = "binary2")]
    framing: Framing,
    /// The message as JSON (`"mti"` and field numbers). Fields 7, 11, 12, 13 and 41 are filled
    /// in when absent.
    #[arg(long)]
    json: String,
    /// Field 48 elements, `TAG=VALUE` (repeatable): `--tag WS=G-3001,E-1001 --tag PA=1`.
    #[arg(long)]
    tag: Vec<String>,
    /// A PIN to send in field 52, as a terminal's PIN pad would: ISO 9564 format 0 under
    /// `--pin-key` (the listener's terminal PIN key).
    #[arg(long, requires = "pin_key")]
    pin: Option<String>,
    /// The terminal PIN key (32 hex digits; the demo prints its own).
    #[arg(long, env = "CYBERSWITCH_PIN_KEY", hide_env_values = true)]
    pin_key: Option<String>,
    /// Seconds to wait for the answer.
    #[arg(long, default_value_t = 10)]
    timeout: u64,
    /// Over TLS (the demo's TLS listener is 127.0.0.1:8584), the server's certificate checked
    /// against `--ca`, by default the demo's `demo-data/tls/ca.pem`.
    #[arg(long)]
    tls: bool,
    /// The CA (PEM) that signed the switch's certificate; implies --tls.
    #[arg(long, env = "CYBERSWITCH_CA")]
    ca: Option<PathBuf>,
}

pub async fn send(args: SendArgs) -> Result<(), String> {
    let spec = Arc::new(Spec::resolve(&args.spec).map_err(|e| e.to_string())?);
    let value: serde_json::Value =
        serde_json::from_str(&args.json).map_err(|e| format!("--json: {e}"))?;
    let mut msg = from_json(&spec, &value)?;
    let defaults: [(u16, String); 5] = [
        (7, cyberswitch::clock::transmission_time()),
        (11, format!("{:06}", rand::random::<u32>() % 999_999 + 1)),
        (12, cyberswitch::clock::local_time()),
        (13, cyberswitch::clock::local_date()),
        (41, "TERM0001".into()),
    ];
    for (n, v) in defaults {
        if !msg.has(n) && spec.field(n).is_some() {
            msg.set(n, v.as_bytes());
        }
    }
    if !args.tag.is_empty() {
        let mut data = SwitchData::new();
        for t in &args.tag {
            let (tag, value) = t
                .split_once('=')
                .ok_or(format!("--tag {t:?}: expected TAG=VALUE"))?;
            if tag.len() != 2 {
                return Err(format!("--tag {t:?}: tags are two characters"));
            }
            data.push(tag, value.as_bytes());
        }
        msg.set(48, data.as_bytes());
    }
    if let (Some(pin), Some(key)) = (&args.pin, &args.pin_key) {
        let key = cyberswitch::pin::PinKey::from_hex(key).map_err(|e| format!("--pin-key: {e}"))?;
        let pin = cyberswitch::pin::ClearPin::new(pin).map_err(|e| format!("--pin: {e}"))?;
        let pan = msg
            .get(2)
            .map(|p| String::from_utf8_lossy(p).into_owned())
            .ok_or("--pin needs the card number in field 2")?;
        let block =
            cyberswitch::pin::encrypt_block(&key, &pin, &pan).map_err(|e| format!("--pin: {e}"))?;
        msg.set(52, &block);
    }
    let ca = match (&args.ca, args.tls) {
        (Some(ca), _) => Some(ca.clone()),
        (None, true) => Some(PathBuf::from("demo-data/tls/ca.pem")),
        (None, false) => None,
    };
    let mut client =
        Client::connect_tls(&args.to, ca.as_deref(), spec.clone(), args.framing).await?;
    let answer = client.call(&msg, Duration::from_secs(args.timeout)).await?;
    println!("MTI {}", answer.mti());
    for (n, v) in answer.fields() {
        let shown = masked_value(n, v).unwrap_or_else(|| display_value(&spec, n, v));
        if n == 48 {
            println!("{n:>3}");
            for el in
                cyberswitch::iso8583::tlv::parse_ascii_tlv(v, 2, 3).map_err(|e| e.to_string())?
            {
                println!(
                    "      {} {}",
                    String::from_utf8_lossy(el.tag),
                    String::from_utf8_lossy(el.value)
                );
            }
        } else {
            println!("{n:>3}  {shown}");
        }
    }
    Ok(())
}

#[derive(Subcommand)]
pub enum JournalCommand {
    /// Print entries from a sequence number on.
    Show {
        #[command(flatten)]
        source: JournalSource,
        /// First sequence number.
        #[arg(long, default_value_t = 0)]
        from: u64,
        #[arg(long, default_value_t = 100)]
        limit: usize,
    },
    /// Print the last entries; with --follow, keep printing new ones.
    Tail {
        #[command(flatten)]
        source: JournalSource,
        #[arg(short = 'n', long, default_value_t = 20)]
        lines: usize,
        #[arg(long)]
        follow: bool,
    },
    /// Print every entry of the transactions with this retrieval reference number.
    Find {
        #[command(flatten)]
        source: JournalSource,
        #[arg(long)]
        rrn: String,
    },
}

/// Where the journal is: a data directory, or the configuration naming it. Opened read-only,
/// so it works next to a running switch.
#[derive(Args)]
pub struct JournalSource {
    #[arg(long, conflicts_with = "config")]
    data_dir: Option<PathBuf>,
    #[arg(long, default_value = "config/cyberswitch.toml")]
    config: PathBuf,
}

impl JournalSource {
    fn open(&self) -> Result<cyberswitch::store::Store, String> {
        let dir = match &self.data_dir {
            Some(d) => d.clone(),
            None => {
                Config::load(&self.config)
                    .map_err(|e| e.to_string())?
                    .data_dir
            }
        };
        cyberswitch::store::open_read_only(&dir)
    }
}

pub fn journal(cmd: JournalCommand) -> Result<(), String> {
    use cyberswitch::journal::read;
    let print = |entries: &[read::Numbered]| {
        for (seq, i, e) in entries {
            println!("{}", e.line(&format!("{seq}.{i}")));
        }
    };
    match cmd {
        JournalCommand::Show {
            source,
            from,
            limit,
        } => print(&read::from(&source.open()?, from, limit)?),
        JournalCommand::Find { source, rrn } => {
            let found = read::find_rrn(&source.open()?, rrn.trim())?;
            if found.is_empty() {
                return Err(format!("no journal entry with RRN {rrn}"));
            }
            print(&found);
        }
        JournalCommand::Tail {
            source,
            lines,
            follow,
        } => {
            let last = read::tail(&source.open()?, lines)?;
            print(&last);
            let mut next = last.last().map_or(0, |(s, _, _)| s + 1);
            if !follow {
                return Ok(());
            }
            loop {
                std::thread::sleep(Duration::from_millis(500));
                // A read-only handle sees the journal as it was when opened: open again.
                let new = read::from(&source.open()?, next, 10_000)?;
                print(&new);
                next = new.last().map_or(next, |(s, _, _)| s + 1);
            }
        }
    }
    Ok(())
}

#[derive(Args)]
pub struct LoadArgs {
    /// The switch, host:port.
    #[arg(long, default_value = "127.0.0.1:8583")]
    target: String,
    /// Start the demo (switch, simulators, load cards) in this process and drive it.
    #[arg(long)]
    demo: bool,
    /// The demo's data directory with --demo (default: a temporary one).
    #[arg(long)]
    data_dir: Option<PathBuf>,
    #[arg(long, short = 'c', default_value_t = 16)]
    connections: usize,
    /// Open loop: requests per second over all connections. Without it: as fast as the
    /// window allows (closed loop).
    #[arg(long)]
    rate: Option<f64>,
    /// Closed loop: requests in flight per connection.
    #[arg(long, default_value_t = 8)]
    window: usize,
    /// Seconds to send for (every run is bounded).
    #[arg(long, default_value_t = 30)]
    duration: u64,
    /// Flow weights, e.g. inquiry=30,wallet=25,auto=15,split=15,credit=10,reversal=5 (the
    /// default).
    #[arg(long)]
    mix: Option<String>,
    /// How many load cards to spread over (seeded by `demo --load-cards N` or --demo).
    #[arg(long, default_value_t = 1000)]
    cards: usize,
    #[arg(long, default_value = "iso87-ascii")]
    spec: String,
    #[arg(long, default_value = "binary2")]
    framing: String,
    /// Measure the loopback link instead: the same messages against an echo server.
    #[arg(long)]
    echo_baseline: bool,
    /// Run the echo baseline first, then the switch, and report the switch's share.
    #[arg(long)]
    compare_baseline: bool,
    /// Print the report as one JSON object.
    #[arg(long)]
    json: bool,
    /// Write latency plots (over time, by percentile) to this .svg file.
    #[arg(long)]
    plot: Option<PathBuf>,
    /// Report this process's resident memory (the switch's pid).
    #[arg(long)]
    switch_pid: Option<u32>,
    /// Instead of traffic: open this many idle connections and hold them for --duration.
    #[arg(long)]
    idle_connections: Option<usize>,
    /// Connect over TLS, the switch's certificate checked against this CA (PEM), e.g. the
    /// demo's TLS listener: `--target 127.0.0.1:8584 --tls-ca demo-data/tls/ca.pem`.
    #[arg(long)]
    tls_ca: Option<PathBuf>,
}

pub async fn load(args: LoadArgs) -> Result<(), String> {
    if let Some(n) = args.idle_connections {
        let out = cyberswitch::load::idle_connections(
            &args.target,
            &args.spec,
            &args.framing,
            n,
            Duration::from_secs(args.duration),
            args.switch_pid,
        )
        .await?;
        print!("{out}");
        return Ok(());
    }
    let mix = match &args.mix {
        Some(m) => m.parse()?,
        None => cyberswitch::load::Mix::default(),
    };
    if let Some(path) = &args.plot {
        cyberswitch::load::plot::check_path(path)?;
    }
    let opts = cyberswitch::load::LoadOptions {
        target: args.target,
        demo: args.demo,
        demo_dir: args.data_dir,
        connections: args.connections,
        rate: args.rate,
        window: args.window,
        duration: Duration::from_secs(args.duration),
        mix,
        cards: args.cards,
        spec: args.spec,
        framing: args.framing,
        echo_baseline: args.echo_baseline,
        compare_baseline: args.compare_baseline,
        progress: !args.json,
        switch_pid: args.switch_pid,
        tls_ca: args.tls_ca,
        ..Default::default()
    };
    let report = cyberswitch::load::run(opts).await?;
    if let (Some(path), Some(h)) = (&args.plot, &report.histogram) {
        let svg = cyberswitch::load::plot::svg(&report.mode, h, &report.per_second);
        std::fs::write(path, svg).map_err(|e| format!("{}: {e}", path.display()))?;
    }
    if args.json {
        println!(
            "{}",
            serde_json::to_string(&report).map_err(|e| e.to_string())?
        );
    } else {
        print!("{}", report.text());
    }
    Ok(())
}
