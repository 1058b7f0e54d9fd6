//! `cyberswitch run` (the daemon from a configuration file) and `cyberswitch demo`.

use std::path::PathBuf;

use clap::Args;
use tokio_util::sync::CancellationToken;

use cyberswitch::config::Config;
use cyberswitch::demo::DemoPorts;

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
