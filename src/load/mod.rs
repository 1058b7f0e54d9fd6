//! `cyberswitch load`: drive a switch with a mix of flows over N connections, at a fixed rate
//! (open loop) or as fast as a window of in-flight requests allows (closed loop), and report
//! throughput, answers by code and latency percentiles from an HDR histogram.
//!
//! - [`flows`]: what each flow sends and expects.
//! - [`conn`]: one connection's writer and reader.
//! - [`pacer`]: when each open-loop request is due.
//! - [`echo`]: the echo server of the baseline.
//! - [`plot`]: the SVG latency plots (plotters).
//!
//! Latency in open loop is measured from the time a request was *due*, not from when it was
//! written: a stalled switch delays the requests behind it, and that delay is counted
//! (no coordinated omission).

pub mod conn;
pub mod echo;
pub mod flows;
pub mod pacer;
pub mod plot;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::Serialize;
use tokio_util::sync::CancellationToken;

use crate::iso8583::Spec;
use crate::net::framing::Framing;
use conn::{ConnConfig, ConnResult, Live, Pace};
pub use flows::{Flow, Mix};

/// Everything a run is told.
#[derive(Debug, Clone)]
pub struct LoadOptions {
    /// `host:port` of the switch; ignored with `demo`.
    pub target: String,
    /// Start the demo (switch and simulators, load cards seeded) in this process.
    pub demo: bool,
    /// The demo's data directory (default: a temporary one).
    pub demo_dir: Option<PathBuf>,
    pub connections: usize,
    /// Open loop: requests per second over all connections. `None`: closed loop.
    pub rate: Option<f64>,
    /// Closed loop: requests in flight per connection.
    pub window: usize,
    pub duration: Duration,
    pub mix: Mix,
    /// How many bulk cards the requests spread over (the switch must have them linked).
    pub cards: usize,
    pub spec: String,
    pub framing: String,
    /// Run against the tool's own echo server instead of a switch.
    pub echo_baseline: bool,
    /// Run the echo baseline first, then the switch, and report the fraction.
    pub compare_baseline: bool,
    pub answer_timeout: Duration,
    pub progress: bool,
    /// Report this process's resident memory at the end of the run (Linux).
    pub switch_pid: Option<u32>,
    /// Connect over TLS, the switch's certificate checked against this CA file.
    pub tls_ca: Option<PathBuf>,
}

impl Default for LoadOptions {
    fn default() -> Self {
        LoadOptions {
            target: "127.0.0.1:8583".into(),
            demo: false,
            demo_dir: None,
            connections: 16,
            rate: None,
            window: 8,
            duration: Duration::from_secs(30),
            mix: Mix::default(),
            cards: 1000,
            spec: "iso87-ascii".into(),
            framing: "binary2".into(),
            echo_baseline: false,
            compare_baseline: false,
            answer_timeout: Duration::from_secs(10),
            progress: true,
            switch_pid: None,
            tls_ca: None,
        }
    }
}

/// Percentiles of a histogram of microseconds, in milliseconds.
#[derive(Debug, Clone, Serialize)]
pub struct Latency {
    pub p50: f64,
    pub p90: f64,
    pub p99: f64,
    pub p999: f64,
    pub max: f64,
    pub mean: f64,
}

impl Latency {
    fn of(h: &hdrhistogram::Histogram<u64>) -> Latency {
        let ms = |us: u64| us as f64 / 1000.0;
        Latency {
            p50: ms(h.value_at_quantile(0.5)),
            p90: ms(h.value_at_quantile(0.9)),
            p99: ms(h.value_at_quantile(0.99)),
            p999: ms(h.value_at_quantile(0.999)),
            max: ms(h.max()),
            mean: h.mean() / 1000.0,
        }
    }
}

/// The outcome of a run (`--json` prints it as is).
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    /// `switch` or `echo-baseline`.
    pub mode: String,
    pub target: String,
    pub connections: usize,
    /// Open loop: the rate asked for. Closed loop: null.
    pub rate_per_s: Option<f64>,
    /// Closed loop: in flight per connection.
    pub window: Option<usize>,
    pub duration_s: f64,
    pub sent: u64,
    /// Answers that matched what the flow expects (MTI, STAN, response code).
    pub ok: u64,
    /// Requests without an answer, undecodable answers, connection failures.
    pub errors: u64,
    /// Answers with a wrong MTI or response code, or to no request of ours.
    pub mismatches: u64,
    /// `ok` per second of the run.
    pub throughput_per_s: f64,
    /// Milliseconds.
    pub latency_ms: Latency,
    /// Answers per flow and response code.
    pub codes: BTreeMap<String, BTreeMap<String, u64>>,
    pub baseline_throughput_per_s: Option<f64>,
    pub fraction_of_baseline: Option<f64>,
    pub switch_rss_mb: Option<f64>,
    /// Open loop: how late requests were sent after they were due (how precisely the
    /// schedule the latency is measured from was kept).
    pub pacer_late_ms: Option<Latency>,
    pub first_error: Option<String>,
    /// The p99 of each second of the run, in milliseconds: a tail spread evenly over the
    /// run, or bursts (a stall, a flush, a compaction) that make it.
    pub p99_ms_by_second: Vec<f64>,
    #[serde(skip)]
    pub histogram: Option<hdrhistogram::Histogram<u64>>,
    #[serde(skip)]
    pub per_second: Vec<hdrhistogram::Histogram<u64>>,
}

impl Report {
    /// The report for people.
    pub fn text(&self) -> String {
        let mut s = format!(
            "{} run against {}: {} connections, {}, {:.1} s\n",
            self.mode,
            self.target,
            self.connections,
            match (self.rate_per_s, self.window) {
                (Some(r), _) => format!("open loop at {r:.0}/s"),
                (None, Some(w)) => format!("closed loop, window {w} per connection"),
                _ => String::new(),
            },
            self.duration_s
        );
        s += &format!(
            "sent {}  ok {}  errors {}  mismatches {}\nthroughput {:.0}/s\n",
            self.sent, self.ok, self.errors, self.mismatches, self.throughput_per_s
        );
        let l = &self.latency_ms;
        s += &format!(
            "latency ms  p50 {:.3}  p90 {:.3}  p99 {:.3}  p99.9 {:.3}  max {:.3}  mean {:.3}\n",
            l.p50, l.p90, l.p99, l.p999, l.max, l.mean
        );
        for (flow, codes) in &self.codes {
            let list: Vec<String> = codes.iter().map(|(c, n)| format!("{c}:{n}")).collect();
            s += &format!("  {flow:<9} {}\n", list.join("  "));
        }
        if let (Some(b), Some(f)) = (self.baseline_throughput_per_s, self.fraction_of_baseline) {
            s += &format!(
                "echo baseline {b:.0}/s: the switch carried {:.1}% of it\n",
                f * 100.0
            );
        }
        if let Some(p) = &self.pacer_late_ms {
            s += &format!(
                "pacer lateness ms  p50 {:.3}  p99 {:.3}  max {:.3}\n",
                p.p50, p.p99, p.max
            );
        }
        if let Some(rss) = self.switch_rss_mb {
            s += &format!("switch resident memory {rss:.1} MB\n");
        }
        if let Some(e) = &self.first_error {
            s += &format!("first error: {e}\n");
        }
        s
    }
}

/// Run as configured (the demo, the baseline and the comparison included).
pub async fn run(mut opts: LoadOptions) -> Result<Report, String> {
    let stop = CancellationToken::new();
    let _stop_on_return = stop.clone().drop_guard();
    let _demo_dir;
    let mut _demo = None; // lives as long as the run
    if opts.demo && opts.tls_ca.is_some() {
        return Err(
            "--tls-ca drives a running switch's TLS listener (--target); the in-process demo is plain TCP"
                .into(),
        );
    }
    if opts.demo && !opts.echo_baseline {
        let dir = match &opts.demo_dir {
            Some(d) => d.clone(),
            None => {
                let t = tempfile_dir()?;
                let p = t.0.clone();
                _demo_dir = t;
                p
            }
        };
        // Every part on an ephemeral port: a demo already running elsewhere is no obstacle.
        let ports = crate::demo::DemoPorts::ephemeral();
        let demo = crate::demo::start_for_load(&dir, ports, stop.clone(), opts.cards).await?;
        opts.target = demo.switch_addr().to_string();
        _demo = Some(demo);
    }
    let baseline = if opts.echo_baseline || opts.compare_baseline {
        let addr = echo::start(framing(&opts)?, stop.clone()).await?;
        let mut b = opts.clone();
        b.target = addr.to_string();
        let report = drive(&b, true).await?;
        if opts.echo_baseline {
            return Ok(report);
        }
        Some(report.throughput_per_s)
    } else {
        None
    };
    let mut report = drive(&opts, false).await?;
    if let Some(b) = baseline {
        report.baseline_throughput_per_s = Some(b);
        report.fraction_of_baseline = (b > 0.0).then(|| report.throughput_per_s / b);
    }
    Ok(report)
}

/// A temporary directory removed when dropped.
struct TempDir(PathBuf);

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn tempfile_dir() -> Result<TempDir, String> {
    let dir = std::env::temp_dir().join(format!(
        "cyberswitch-load-{}-{}",
        std::process::id(),
        rand::random::<u32>()
    ));
    std::fs::create_dir_all(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    Ok(TempDir(dir))
}

fn framing(opts: &LoadOptions) -> Result<Framing, String> {
    opts.framing
        .parse()
        .map_err(|e| format!("--framing {}: {e}", opts.framing))
}

/// One measured run against `opts.target`.
async fn drive(opts: &LoadOptions, echo: bool) -> Result<Report, String> {
    let spec = Arc::new(Spec::resolve(&opts.spec).map_err(|e| e.to_string())?);
    let framing = framing(opts)?;
    if opts.connections == 0 || opts.window == 0 || opts.cards == 0 {
        return Err("--connections, --window and --cards must be at least 1".into());
    }
    let pace = match opts.rate {
        Some(r) if r.is_finite() && r > 0.0 => Pace::Open,
        Some(_) => return Err("--rate must be a number above 0".into()),
        None => Pace::Window(opts.window),
    };
    let live = Arc::new(Live::default());
    let started = Instant::now() + Duration::from_millis(50);
    let until = started
        .checked_add(opts.duration)
        .ok_or_else(|| format!("--duration {} s is too long", opts.duration.as_secs()))?;
    let schedule = opts.rate.map(|rate| pacer::Schedule {
        start: started,
        until,
        rate,
        connections: opts.connections,
    });
    let tasks: Vec<_> = (0..opts.connections)
        .map(|i| {
            let cfg = ConnConfig {
                addr: opts.target.clone(),
                // The echo baseline is plain TCP whatever the run.
                tls_ca: if echo { None } else { opts.tls_ca.clone() },
                spec: spec.clone(),
                framing,
                terminal: format!("LD{:06}", i % 1_000_000),
                mix: if echo {
                    // The echo server approves nothing to reverse or complete: the flows
                    // that would have made one go instead, with their weights.
                    Mix(opts.mix.0.iter().map(|(f, w)| (f.origin(), *w)).collect())
                } else {
                    opts.mix.clone()
                },
                cards: opts.cards,
                pace,
                echo,
                started,
                until,
                seed: rand::random(),
                answer_timeout: opts.answer_timeout,
            };
            let pacer = schedule.map(|s| pacer::Pacer::new(s, i));
            tokio::spawn(conn::run(cfg, pacer, live.clone()))
        })
        .collect();
    let progress = progress_bar(opts, echo, live.clone(), started);
    let mut results = Vec::new();
    for t in tasks {
        results.push(t.await.map_err(|e| format!("connection task: {e}"))?);
    }
    let rss = opts.switch_pid.and_then(resident_mb);
    progress.abort();
    Ok(summarise(opts, echo, results, started, until, rss))
}

fn progress_bar(
    opts: &LoadOptions,
    echo: bool,
    live: Arc<Live>,
    started: Instant,
) -> tokio::task::JoinHandle<()> {
    let bar = if opts.progress {
        indicatif::ProgressBar::new(opts.duration.as_secs().max(1))
    } else {
        indicatif::ProgressBar::hidden()
    };
    if let Ok(style) = indicatif::ProgressStyle::with_template(
        "{prefix} [{elapsed_precise}] {bar:30} {pos}/{len}s {msg}",
    ) {
        bar.set_style(style);
    }
    bar.set_prefix(if echo { "echo baseline" } else { "load" });
    tokio::spawn(async move {
        loop {
            tokio::time::sleep(Duration::from_millis(200)).await;
            let secs = Instant::now().saturating_duration_since(started).as_secs();
            bar.set_position(secs);
            bar.set_message(format!(
                "sent {}  ok {}  failed {}",
                live.sent.load(Ordering::Relaxed),
                live.ok.load(Ordering::Relaxed),
                live.failed.load(Ordering::Relaxed)
            ));
            if bar.position() >= bar.length().unwrap_or(0) {
                bar.finish_and_clear();
                return;
            }
        }
    })
}

fn summarise(
    opts: &LoadOptions,
    echo: bool,
    results: Vec<ConnResult>,
    started: Instant,
    until: Instant,
    rss: Option<f64>,
) -> Report {
    let mut total = conn::histogram();
    let mut per_second: Vec<hdrhistogram::Histogram<u64>> = Vec::new();
    let mut codes: BTreeMap<String, BTreeMap<String, u64>> = BTreeMap::new();
    let (mut sent, mut ok, mut errors, mut mismatches) = (0, 0, 0, 0);
    let mut first_error = None;
    let mut lateness: Option<hdrhistogram::Histogram<u64>> = None;
    for r in results {
        if let Some(l) = &r.pacer_lateness {
            let _ = lateness.get_or_insert_with(conn::histogram).add(l);
        }
        let _ = total.add(&r.latency);
        for (i, h) in r.per_second.iter().enumerate() {
            while per_second.len() <= i {
                per_second.push(conn::histogram());
            }
            let _ = per_second[i].add(h);
        }
        for ((flow, code), n) in r.codes {
            *codes
                .entry(flow.name().to_string())
                .or_default()
                .entry(if code.is_empty() { "none".into() } else { code })
                .or_default() += n;
        }
        sent += r.sent;
        ok += r.ok;
        errors += r.errors;
        mismatches += r.mismatches;
        if first_error.is_none() {
            first_error = r.first_error;
        }
    }
    let duration_s = until.saturating_duration_since(started).as_secs_f64();
    Report {
        mode: if echo { "echo-baseline" } else { "switch" }.into(),
        target: opts.target.clone(),
        connections: opts.connections,
        rate_per_s: opts.rate,
        window: opts.rate.is_none().then_some(opts.window),
        duration_s,
        sent,
        ok,
        errors,
        mismatches,
        throughput_per_s: if duration_s > 0.0 {
            ok as f64 / duration_s
        } else {
            0.0
        },
        latency_ms: Latency::of(&total),
        codes,
        baseline_throughput_per_s: None,
        fraction_of_baseline: None,
        switch_rss_mb: rss,
        pacer_late_ms: lateness.as_ref().map(Latency::of),
        first_error,
        p99_ms_by_second: per_second
            .iter()
            .map(|h| h.value_at_quantile(0.99) as f64 / 1000.0)
            .collect(),
        histogram: Some(total),
        per_second,
    }
}

/// Resident memory of a process in MB (Linux `/proc`).
pub fn resident_mb(pid: u32) -> Option<f64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    let kb: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb / 1024.0)
}

/// Idle connections opened from one loopback address (below the listener's default cap of
/// connections per peer address).
const IDLE_PER_ADDRESS: usize = 200;

/// Open `n` connections, check each with an echo test (0800/301), hold them for `hold`, and
/// report how many stayed up (for measuring the switch's memory per idle connection).
pub async fn idle_connections(
    target: &str,
    spec: &str,
    framing_name: &str,
    n: usize,
    hold: Duration,
    switch_pid: Option<u32>,
) -> Result<String, String> {
    let spec = Arc::new(Spec::resolve(spec).map_err(|e| e.to_string())?);
    let framing: Framing = framing_name
        .parse()
        .map_err(|e| format!("--framing {framing_name}: {e}"))?;
    let before = switch_pid.and_then(resident_mb);
    let mut clients = Vec::with_capacity(n);
    let mut failed = 0;
    let loopback = tokio::net::lookup_host(target)
        .await
        .map_err(|e| format!("{target}: {e}"))?
        .any(|a| matches!(a.ip(), std::net::IpAddr::V4(ip) if ip.is_loopback()));
    for i in 0..n {
        // A listener takes at most `max_connections_per_peer` (default 256) connections from
        // one address: on loopback, every IDLE_PER_ADDRESS come from the next 127.0.0.x.
        let connected = if loopback {
            let from = std::net::Ipv4Addr::from(
                u32::from(std::net::Ipv4Addr::new(127, 0, 0, 2)) + (i / IDLE_PER_ADDRESS) as u32,
            );
            crate::net::client::Client::connect_from(target, from.into(), spec.clone(), framing)
                .await
        } else {
            crate::net::client::Client::connect(target, spec.clone(), framing).await
        };
        match connected {
            Ok(mut c) => {
                let mut m = crate::iso8583::OwnedMessage::new(
                    crate::iso8583::Mti::new(b"0800")
                        .unwrap_or_else(|| unreachable!("constant MTI")),
                );
                m.set(7, crate::clock::transmission_time().as_bytes())
                    .set_number(11, (i % 999_999 + 1) as u64, 6)
                    .set(41, format!("ID{:06}", i % 1_000_000).as_bytes())
                    .set(70, b"301");
                match c.call(&m, Duration::from_secs(10)).await {
                    Ok(_) => clients.push(c),
                    Err(_) => failed += 1,
                }
            }
            Err(_) => failed += 1,
        }
    }
    tokio::time::sleep(hold).await;
    let during = switch_pid.and_then(resident_mb);
    drop(clients);
    let mut out = format!("idle connections: {} held, {failed} failed\n", n - failed);
    if let (Some(b), Some(d)) = (before, during) {
        out += &format!(
            "switch resident memory: {b:.1} MB before, {d:.1} MB with the connections open ({:.1} KB per connection)\n",
            (d - b) * 1024.0 / (n - failed).max(1) as f64
        );
    }
    Ok(out)
}
