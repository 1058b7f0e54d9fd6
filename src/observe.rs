//! Prometheus metrics on `/metrics` and structured logs.

use std::net::SocketAddr;
use std::sync::OnceLock;

use axum::routing::get;
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};
use tokio_util::sync::CancellationToken;

static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();

/// How often the recorder's upkeep runs: histogram samples are drained into their buckets
/// this often, instead of piling up until the next scrape and being drained all at once on
/// whichever runtime worker serves it (issue 24: a latency spike and memory held between
/// scrapes).
const UPKEEP_EVERY: std::time::Duration = std::time::Duration::from_secs(1);

/// The process-wide recorder (installed on first use).
pub fn recorder() -> Result<PrometheusHandle, String> {
    if let Some(h) = HANDLE.get() {
        return Ok(h.clone());
    }
    let handle = PrometheusBuilder::new()
        .set_buckets(&[
            0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0, 2.0, 5.0,
        ])
        .map_err(|e| e.to_string())?
        .install_recorder()
        .map_err(|e| format!("metrics recorder: {e}"))?;
    // `install_recorder` starts no upkeep of its own (only `install`, which also binds its
    // own listener, does). A thread of its own, not a runtime task: it must not wait
    // behind requests, nor hold a worker while it drains.
    let upkeep = handle.clone();
    std::thread::Builder::new()
        .name("metrics-upkeep".into())
        .spawn(move || loop {
            std::thread::sleep(UPKEEP_EVERY);
            upkeep.run_upkeep();
        })
        .map_err(|e| format!("metrics upkeep: {e}"))?;
    Ok(HANDLE.get_or_init(|| handle).clone())
}

/// Connections open at once on `/metrics`; one more is closed as soon as it is accepted.
pub const METRICS_MAX_CONNECTIONS: usize = 16;

/// Serve `/metrics` on `addr` until `stop`; returns the bound address.
pub async fn serve_metrics(
    addr: SocketAddr,
    stop: CancellationToken,
) -> Result<SocketAddr, String> {
    let handle = recorder()?;
    let app =
        axum::Router::new().route("/metrics", get(move || std::future::ready(handle.render())));
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|e| format!("metrics: bind {addr}: {e}"))?;
    let bound = listener.local_addr().map_err(|e| e.to_string())?;
    // A scraper or two, not a crowd (SPEC §10): the admin API's caps, fixed.
    let listener = crate::net::http_listener::CappedListener::new(
        listener,
        METRICS_MAX_CONNECTIONS,
        std::time::Duration::from_secs(60),
        std::time::Duration::from_secs(10),
    )
    .named("metrics");
    tokio::spawn(async move {
        let _ = axum::serve(listener, app)
            .with_graceful_shutdown(async move { stop.cancelled().await })
            .await;
    });
    Ok(bound)
}

/// Logs to stderr: text, or JSON with `CYBERSWITCH_LOG_FORMAT=json`; level from `RUST_LOG`.
pub fn init_logs() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    // Colours only for a terminal: a log file (systemd, `demo > file`) gets plain text, and
    // colouring every field of every request's span cost a few per cent of a transaction.
    let colours = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(colours)
        .with_writer(std::io::stderr);
    let _ = if std::env::var("CYBERSWITCH_LOG_FORMAT").is_ok_and(|v| v == "json") {
        builder.json().try_init()
    } else {
        builder.try_init()
    };
}

/// Metric handles of one family, registered once per label set and reused. The macros with
/// label values build, hash and look up the label strings on every call, which on the
/// per-message path costs more than the increment itself.
pub struct Family<K, M> {
    handles: dashmap::DashMap<K, M>,
}

impl<K: Eq + std::hash::Hash + Copy, M: Clone> Family<K, M> {
    pub fn new() -> Self {
        Family {
            handles: dashmap::DashMap::new(),
        }
    }

    /// The handle for `key`, registered by `register` the first time.
    pub fn get(&self, key: K, register: impl FnOnce(K) -> M) -> M {
        if let Some(h) = self.handles.get(&key) {
            return h.clone();
        }
        self.handles
            .entry(key)
            .or_insert_with(|| register(key))
            .clone()
    }
}

impl<K: Eq + std::hash::Hash + Copy, M: Clone> Default for Family<K, M> {
    fn default() -> Self {
        Self::new()
    }
}

/// Which way a message went on a link or listener.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Direction {
    In,
    Out,
}

impl Direction {
    fn label(self) -> &'static str {
        match self {
            Direction::In => "in",
            Direction::Out => "out",
        }
    }
}

/// The MTIs of ISO 8583:1987 that the switch speaks or relays (requests, repeats, answers,
/// advices of classes 1, 2, 4, 5, 8). A metric label is one of these or `other`: a peer
/// chooses the MTI, and must not choose how many series the switch keeps (SPEC §10).
const KNOWN_MTIS: &[&str] = &[
    "0100", "0101", "0110", "0120", "0121", "0130", "0200", "0201", "0210", "0220", "0221", "0230",
    "0400", "0401", "0410", "0420", "0421", "0430", "0500", "0501", "0510", "0520", "0521", "0530",
    "0800", "0801", "0810", "0820", "0830",
];

/// A bounded metric label for an MTI.
pub fn mti_label(mti: crate::iso8583::Mti) -> &'static str {
    KNOWN_MTIS
        .iter()
        .find(|m| m.as_bytes() == mti.as_bytes())
        .copied()
        .unwrap_or("other")
}

/// A bounded metric label for a response code: two letters or digits as they came (a host
/// chooses it: at most 36² of them), anything else `??`.
pub fn code_label(code: &[u8]) -> [u8; 2] {
    match <[u8; 2]>::try_from(code) {
        Ok(c) if c.iter().all(u8::is_ascii_alphanumeric) => c,
        _ => *b"??",
    }
}

/// `cyberswitch_messages_total` of one link or listener, by direction and MTI.
pub struct MessageCounters {
    link: std::sync::Arc<str>,
    counters: Family<(Direction, &'static str), metrics::Counter>,
}

impl MessageCounters {
    pub fn new(link: std::sync::Arc<str>) -> Self {
        MessageCounters {
            link,
            counters: Family::new(),
        }
    }

    /// Count one message.
    pub fn count(&self, dir: Direction, mti: crate::iso8583::Mti) {
        self.counters
            .get((dir, mti_label(mti)), |(dir, mti)| {
                metrics::counter!("cyberswitch_messages_total", "link" => self.link.to_string(), "dir" => dir.label(), "mti" => mti)
            })
            .increment(1);
    }
}

/// How late the runtime runs a task that is ready (`cyberswitch_runtime_lag_seconds`): a
/// task asks to be woken every few milliseconds and records how much later it ran. A
/// worker thread held by one long computation or a blocking call shows here first.
pub async fn watch_runtime_lag(stop: CancellationToken) {
    const PERIOD: std::time::Duration = std::time::Duration::from_millis(5);
    let lag = metrics::histogram!("cyberswitch_runtime_lag_seconds");
    loop {
        let asked = std::time::Instant::now();
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tokio::time::sleep(PERIOD) => {}
        }
        lag.record(asked.elapsed().saturating_sub(PERIOD).as_secs_f64());
    }
}

#[cfg(test)]
mod tests {
    /// Every metric the Grafana dashboard under `config/` queries is one the switch emits
    /// (a renamed metric would otherwise leave an empty panel nobody notices).
    #[test]
    fn labels_a_peer_chooses_are_bounded() {
        use crate::iso8583::Mti;
        assert_eq!(super::mti_label(Mti(*b"0200")), "0200");
        assert_eq!(super::mti_label(Mti(*b"0421")), "0421");
        assert_eq!(super::mti_label(Mti(*b"9999")), "other");
        assert_eq!(super::mti_label(Mti(*b"0290")), "other");
        assert_eq!(&super::code_label(b"00"), b"00");
        assert_eq!(&super::code_label(b"\n\0"), b"??");
        assert_eq!(&super::code_label(b"123"), b"??");
    }

    #[test]
    fn the_dashboard_queries_only_metrics_the_switch_emits() {
        let root = env!("CARGO_MANIFEST_DIR");
        let dashboard = std::fs::read_to_string(format!("{root}/config/grafana-dashboard.json"))
            .unwrap_or_else(|e| panic!("config/grafana-dashboard.json: {e}"));
        let parsed: serde_json::Value = serde_json::from_str(&dashboard)
            .unwrap_or_else(|e| panic!("config/grafana-dashboard.json is not JSON: {e}"));
        let mut source = String::new();
        let mut dirs = vec![std::path::PathBuf::from(format!("{root}/src"))];
        while let Some(dir) = dirs.pop() {
            for entry in std::fs::read_dir(&dir).into_iter().flatten().flatten() {
                let path = entry.path();
                if path.is_dir() {
                    dirs.push(path);
                } else if path.extension().is_some_and(|e| e == "rs") {
                    source += &std::fs::read_to_string(&path).unwrap_or_default();
                }
            }
        }
        let mut queried = 0;
        for panel in parsed["panels"].as_array().into_iter().flatten() {
            for target in panel["targets"].as_array().into_iter().flatten() {
                let expr = target["expr"].as_str().unwrap_or_default();
                for name in metric_names(expr) {
                    let family = ["_bucket", "_sum", "_count"]
                        .iter()
                        .find_map(|s| name.strip_suffix(s))
                        .unwrap_or(name);
                    assert!(
                        source.contains(&format!("\"{family}\"")),
                        "panel '{}' queries {name}, which the switch does not emit",
                        panel["title"]
                    );
                    queried += 1;
                }
            }
        }
        assert!(queried > 20, "the dashboard queries {queried} metrics");
    }

    fn metric_names(expr: &str) -> impl Iterator<Item = &str> {
        expr.match_indices("cyberswitch_").map(|(start, _)| {
            let rest = &expr[start..];
            let end = rest
                .find(|c: char| !(c.is_ascii_lowercase() || c == '_'))
                .unwrap_or(rest.len());
            &rest[..end]
        })
    }
}
