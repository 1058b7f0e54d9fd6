//! `cyberswitch demo`: the switch, three wallet issuer simulators and an acquirer simulator in
//! one process, with the demo cards and wallets seeded into a fresh data directory (an existing
//! one is resumed as it is).
//!
//! This file starts it; the parts, one a file: where it listens ([`ports`]), its simulators
//! ([`sims`]), the switch's configuration text ([`switch_toml`]), what a fresh directory is
//! seeded with ([`seed`]), the bulk cards of load runs ([`bulk`]), its secrets ([`secrets`]).

mod bulk;
mod ports;
mod secrets;
mod seed;
mod sims;
mod switch_toml;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use tokio_util::sync::CancellationToken;

use crate::config::Config;
use crate::sim::{SimConfig, Simulator};

pub use bulk::{
    add_bulk_accounts, bulk_cards, bulk_cards_one, link_bulk_cards, plain_card, BulkCard,
    LOAD_BALANCE,
};
pub use ports::{DemoPorts, DemoTls};
pub use secrets::{secret, write_secrets};
pub use seed::{demo_va_accounts, DEMO_LINKS, DEMO_PREPAID, DEMO_VA};
pub use sims::{sim_configs, start_demo_sims, start_sims};
pub use switch_toml::{switch_config_toml, switch_config_toml_tls, TLS_LISTENER};

/// A running demo.
pub struct Demo {
    pub running: crate::daemon::Running,
    pub sims: Vec<std::sync::Arc<Simulator>>,
    pub metrics: Option<SocketAddr>,
    pub dir: PathBuf,
    /// The partner receiver the demo's callbacks go to.
    pub partner: crate::sim::partner::PartnerSim,
}

impl Demo {
    pub fn sim(&self, name: &str) -> Option<&Simulator> {
        self.sims
            .iter()
            .find(|s| s.name == name)
            .map(|s| s.as_ref())
    }
    pub fn switch_addr(&self) -> SocketAddr {
        self.running.addrs[0].1
    }

    /// The TLS terminal listener, when the ports asked for one.
    pub fn tls_switch_addr(&self) -> Option<SocketAddr> {
        self.running
            .addrs
            .iter()
            .find(|(name, _)| name == TLS_LISTENER)
            .map(|(_, a)| *a)
    }

    /// The CA of the TLS listener and the HTTPS admin API.
    pub fn ca(&self) -> PathBuf {
        crate::net::pki::DemoPki::paths(&self.dir).ca
    }

    /// The bank listener (F17).
    pub fn bank_addr(&self) -> Option<SocketAddr> {
        self.running
            .addrs
            .iter()
            .find(|(name, _)| name == "bank")
            .map(|(_, a)| *a)
    }
}

/// The demo with `load_cards` bulk cards added (wallets of [`LOAD_BALANCE`] each), for
/// `cyberswitch load`. Cards are linked on a fresh directory only.
pub async fn start_for_load(
    dir: &Path,
    ports: DemoPorts,
    stop: CancellationToken,
    load_cards: usize,
) -> Result<Demo, String> {
    start_for_load_tls(dir, ports, &DemoTls::default(), stop, load_cards).await
}

/// As [`start_for_load`], with the TLS parts `tls` asks for.
pub async fn start_for_load_tls(
    dir: &Path,
    ports: DemoPorts,
    tls: &DemoTls,
    stop: CancellationToken,
    load_cards: usize,
) -> Result<Demo, String> {
    let bench = BenchDemo {
        load_cards,
        ..BenchDemo::default()
    };
    start_for_bench(dir, ports, tls, stop, bench).await
}

/// How `cyberswitch demo` runs for a benchmark (`scripts/perf-run.sh`).
#[derive(Debug, Clone, Default)]
pub struct BenchDemo {
    /// Bulk cards linked on a fresh directory (their accounts opened at the simulators).
    pub load_cards: usize,
    /// The simulators run in another process ([`start_demo_sims`]) on `ports`.
    pub external_sims: bool,
    /// TOML appended to the switch's configuration (a `[bench]` table).
    pub extra_toml: String,
}

/// As [`start_for_load_tls`], for benchmarks: simulators perhaps elsewhere, settings added.
pub async fn start_for_bench(
    dir: &Path,
    ports: DemoPorts,
    tls: &DemoTls,
    stop: CancellationToken,
    bench: BenchDemo,
) -> Result<Demo, String> {
    let fresh = !dir.join("switch").exists();
    let cards = bulk_cards(bench.load_cards);
    let demo = start_full(
        dir,
        ports,
        tls,
        stop,
        |sims| match bench.external_sims {
            true => sims.clear(),
            false => add_bulk_accounts(sims, &cards, LOAD_BALANCE),
        },
        &bench.extra_toml,
    )
    .await?;
    if fresh {
        link_bulk_cards(&demo.running.switch.directory, &cards)?;
    }
    Ok(demo)
}

/// Start everything; seed a fresh directory.
pub async fn start(dir: &Path, ports: DemoPorts, stop: CancellationToken) -> Result<Demo, String> {
    start_custom(dir, ports, stop, |_| {}).await
}

/// As [`start`], with a chance to change the simulators first (tests give them behaviours).
pub async fn start_custom(
    dir: &Path,
    ports: DemoPorts,
    stop: CancellationToken,
    adjust: impl FnOnce(&mut Vec<SimConfig>),
) -> Result<Demo, String> {
    start_with(dir, ports, stop, adjust, "").await
}

/// As [`start_custom`], with TOML appended to the switch's configuration (for example a
/// `[limits]` table).
pub async fn start_with(
    dir: &Path,
    ports: DemoPorts,
    stop: CancellationToken,
    adjust: impl FnOnce(&mut Vec<SimConfig>),
    extra_toml: &str,
) -> Result<Demo, String> {
    start_full(dir, ports, &DemoTls::default(), stop, adjust, extra_toml).await
}

/// As [`start_with`], with the TLS parts `tls` asks for.
pub async fn start_full(
    dir: &Path,
    ports: DemoPorts,
    tls: &DemoTls,
    stop: CancellationToken,
    adjust: impl FnOnce(&mut Vec<SimConfig>),
    extra_toml: &str,
) -> Result<Demo, String> {
    std::fs::create_dir_all(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    let fresh = !dir.join("switch").exists();
    write_secrets(dir)?;
    if tls.any() {
        crate::net::pki::DemoPki::ensure(dir)?;
    }
    let mut ports = ports;
    let mut configs = sim_configs(dir, &ports);
    adjust(&mut configs);
    let sims = start_sims(configs, &mut ports, &stop).await?;
    let partner_secret = secret(dir, "partner.secret")?;
    let partner = crate::sim::partner::PartnerSim::start(
        ports.partner(),
        &partner_secret,
        false,
        stop.clone(),
    )
    .await?;
    let metrics = match ports.metrics {
        Some(addr) => Some(crate::observe::serve_metrics(addr, stop.clone()).await?),
        None => None,
    };
    let text = format!(
        "{}{extra_toml}",
        switch_config_toml_tls(dir, &ports, tls, partner.addr)
    );
    let config_path = dir.join("cyberswitch.toml");
    std::fs::write(&config_path, &text).map_err(|e| format!("{}: {e}", config_path.display()))?;
    let config = Config::from_toml(&text, &config_path).map_err(|e| e.to_string())?;
    let running = crate::daemon::start(config, stop.clone()).await?;
    if fresh {
        seed::seed(&running.switch).await?;
    }
    // Wait until every link has signed on, so the first request finds them up.
    for _ in 0..100 {
        if running.switch.links.values().all(|l| l.is_up()) {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    Ok(Demo {
        running,
        sims,
        metrics,
        dir: dir.to_path_buf(),
        partner,
    })
}
