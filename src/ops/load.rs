//! `cyberswitch load`: the load generator against a switch or the demo.

use std::path::PathBuf;
use std::time::Duration;

use clap::Args;

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
