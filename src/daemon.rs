//! Start-up and shutdown of a switch daemon: the stores, the links (remote and in-process),
//! store-and-forward, start-up recovery, the terminal listeners and the admin API, in that
//! order. `run` and `demo` both go through [`start`]; the flows themselves live in
//! [`crate::switch`], which knows nothing of how it was started.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use crate::config::Config;
use crate::directory::{CardKey, Directory};
use crate::journal::{Journal, Sealer};
use crate::net::link::Link;
use crate::switch::listener::ListenerService;
use crate::switch::saf::{Saf, SafTiming};
use crate::switch::{testhooks, txn, Parts, Switch};

/// Everything a running switch owns, for `run` and `demo`.
pub struct Running {
    pub switch: Arc<Switch>,
    pub addrs: Vec<(String, std::net::SocketAddr)>,
    /// Where the admin API listens, when configured.
    pub admin: Option<std::net::SocketAddr>,
}

/// Open the data directory, start links and listeners; serve until `stop`.
pub async fn start(config: Config, stop: CancellationToken) -> Result<Running, String> {
    let config = Arc::new(config);
    let key = CardKey::new(config.card_key.expose().to_vec());
    testhooks::warn_if_armed();
    tokio::spawn(crate::observe::watch_runtime_lag(stop.clone()));
    let journal = open_journal(&config, &stop)?;
    let directory = Directory::new(journal.store().clone(), key.clone());
    let saf = Saf::open(
        journal.clone(),
        SafTiming {
            retry_min: Duration::from_millis(config.limits.saf_retry_min_ms),
            retry_max: Duration::from_millis(config.limits.saf_retry_max_ms),
            expiry: Duration::from_secs(config.limits.saf_expiry_s),
        },
    )?;
    recover(&journal, &saf).await?;
    let hosted = crate::hosted::Hosted::open(journal.clone(), config.clone(), key.clone()).await?;
    hosted.start_expiry(stop.clone());
    let links = start_links(&config, &hosted, &saf, &stop)?;
    saf.start(links.clone(), stop.clone());
    let parts = Parts {
        config: config.clone(),
        directory,
        links,
        journal,
        saf,
        hosted,
        clock: Arc::new(crate::clock::SystemClock),
    };
    let switch = Switch::new(parts, stop.clone())?;
    let addrs = start_listeners(&config, &switch, &stop).await?;
    let admin = match &config.admin {
        Some(a) => Some(crate::admin::serve(a, switch.clone(), stop.clone()).await?),
        None => None,
    };
    Ok(Running {
        switch,
        addrs,
        admin,
    })
}

/// Wait for the operator's stop: Ctrl-C (SIGINT) or SIGTERM (systemd, containers).
pub async fn shutdown_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        if let Ok(mut term) = signal(SignalKind::terminate()) {
            tokio::select! {
                _ = tokio::signal::ctrl_c() => {}
                _ = term.recv() => {}
            }
            return;
        }
    }
    let _ = tokio::signal::ctrl_c().await;
}

/// The switch's database and its journal, with retention housekeeping running.
fn open_journal(config: &Config, stop: &CancellationToken) -> Result<Arc<Journal>, String> {
    let retention = config.limits.journal_retention();
    let db = crate::store::open_with(
        &config.data_dir,
        crate::store::Expiry {
            dedup_window: Some(Duration::from_secs(config.limits.duplicate_window_s)),
            txns: retention.map(|kept| (kept, txn::ended_at_ms as crate::store::EndedAt)),
        },
    )?;
    let journal = Journal::open(
        db.clone(),
        Sealer::from_card_key(config.card_key.expose()),
        config.limits.journal_batch_max,
    )?;
    let archive = config.limits.journal_archive_dir.clone();
    if let Some(dir) = &archive {
        // Found unwritable now, not at the first purge an hour from now.
        std::fs::create_dir_all(dir).map_err(|e| {
            format!(
                "limits.journal_archive_dir: {}: cannot create: {e}",
                dir.display()
            )
        })?;
    }
    tokio::spawn(crate::journal::retention::housekeeping(
        db,
        retention.map(|kept| crate::journal::retention::Retention { kept, archive }),
        Duration::from_secs(30),
        stop.clone(),
    ));
    Ok(journal)
}

/// SPEC §9: transactions left open by a crash have their legs reversed before anything new
/// is accepted.
async fn recover(journal: &Journal, saf: &Saf) -> Result<(), String> {
    if testhooks::skip_recovery() {
        tracing::warn!("recovery skipped (test-only switch)");
        return Ok(());
    }
    let recovered = crate::switch::followup::recover(journal, saf).await?;
    if recovered > 0 {
        tracing::warn!(
            recovered,
            "start-up recovery: unanswered transactions reversed"
        );
    }
    Ok(())
}

/// Every link by name: the in-process ones of the hosted programs, then the configured
/// upstream links, each started (signing on, echoing).
fn start_links(
    config: &Config,
    hosted: &Arc<crate::hosted::Hosted>,
    saf: &Arc<Saf>,
    stop: &CancellationToken,
) -> Result<HashMap<String, Arc<Link>>, String> {
    let mut links = local_links(config, hosted, saf);
    for lc in &config.links {
        let terminal = format!("CSW{:>05}", lc.name.len() % 100000);
        let link = Link::start(lc.clone(), terminal, saf.clone(), stop.clone());
        links.insert(lc.name.clone(), link);
    }
    Ok(links)
}

/// In-process links: one per hosted wallet issuer (named after it), and one for the hosted
/// card programs.
fn local_links(
    config: &Config,
    hosted: &Arc<crate::hosted::Hosted>,
    saf: &Arc<Saf>,
) -> HashMap<String, Arc<Link>> {
    use crate::hosted::host::{CardHost, WalletHost};
    let profile = &config.local_profile;
    let mut links = HashMap::new();
    for iss in config.issuers.iter().filter(|i| i.hosted) {
        let host = Arc::new(WalletHost::new(
            hosted.clone(),
            &iss.id,
            profile.spec.clone(),
        ));
        let link = Link::local(&iss.id, profile.clone(), host, saf.clone());
        links.insert(iss.id.clone(), link);
    }
    if !config.hosted.programs.is_empty() {
        let name = crate::config::HOSTED_CARDS_LINK;
        let host = Arc::new(CardHost::new(hosted.clone(), profile.spec.clone()));
        links.insert(
            name.to_string(),
            Link::local(name, profile.clone(), host, saf.clone()),
        );
    }
    links
}

/// The terminal listeners, each bound and serving; returns where each listens.
async fn start_listeners(
    config: &Config,
    switch: &Arc<Switch>,
    stop: &CancellationToken,
) -> Result<Vec<(String, std::net::SocketAddr)>, String> {
    let mut addrs = Vec::new();
    for lc in &config.listeners {
        let profile = lc.profile.clone();
        let listener = tokio::net::TcpListener::bind(lc.addr)
            .await
            .map_err(|e| format!("listener {}: bind {}: {e}", lc.name, lc.addr))?;
        let addr = listener.local_addr().map_err(|e| e.to_string())?;
        let limits = crate::net::server::ServerLimits {
            framing: profile.framing,
            max_frame: profile.max_frame,
            max_connections: lc.max_connections,
            max_in_flight: lc.max_in_flight,
            idle_timeout: lc.idle_timeout(),
        };
        let service = Arc::new(ListenerService::new(switch.clone(), &lc.name, profile));
        tokio::spawn(crate::net::server::serve(
            lc.name.clone().into(),
            listener,
            limits,
            service,
            stop.clone(),
        ));
        tracing::info!(listener = %lc.name, %addr, "listening");
        addrs.push((lc.name.clone(), addr));
    }
    Ok(addrs)
}
