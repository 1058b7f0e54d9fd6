//! Start-up and shutdown of a switch daemon: the stores, the links (remote and in-process),
//! store-and-forward, start-up recovery, the terminal listeners and the admin API, in that
//! order. `run` and `demo` both go through [`start`]; the flows themselves live in
//! [`crate::switch`], which knows nothing of how it was started. [`assemble`] is the part
//! that needs neither a disk nor a socket: the deterministic flow tests build their switch
//! with it, on a memory store and with in-process hosts for the upstream links.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use crate::clock::Clock;
use crate::config::Config;
use crate::directory::Directory;
use crate::journal::Journal;
use crate::net::link::{Link, LocalHost};
use crate::net::server::Drain;
use crate::store::Store;
use crate::switch::listener::ListenerService;
use crate::switch::saf::{Saf, SafTiming};
use crate::switch::{testhooks, txn, Parts, Switch};

/// Everything a running switch owns, for `run` and `demo`.
pub struct Running {
    pub switch: Arc<Switch>,
    pub addrs: Vec<(String, std::net::SocketAddr)>,
    /// Where the admin API listens, when configured.
    pub admin: Option<std::net::SocketAddr>,
    /// The terminal listeners' part in a graceful stop.
    drain: Drain,
}

/// How a graceful stop went.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Stopped {
    /// Every request in flight was answered and every answer written within the drain.
    pub drained: bool,
    /// Requests and connections still going when the drain was given up.
    pub abandoned: usize,
}

impl Running {
    /// A graceful stop (SIGTERM, Ctrl-C; SPEC §10): the listeners accept nothing more and
    /// read no new request; requests in flight are answered and their answers written, for at
    /// most `limits.shutdown_drain_s`. Past that, no answer is journaled any more (those
    /// transactions stay open: recovery reverses them at the next start), and answers not
    /// written are undelivered: their approvals are reversed through the queue before this
    /// returns. Then `stop` ends the rest (links, queue workers, admin API), the reversals of
    /// late approvals that came before the links stopped are recorded, and the journal is
    /// synced: every step, delivery markers included, is on disk.
    pub async fn shutdown(self, stop: &CancellationToken) -> Stopped {
        let config = &self.switch.config;
        let deadline = tokio::time::Instant::now() + config.limits.shutdown_drain();
        tracing::info!(
            drain_s = config.limits.shutdown_drain_s,
            "stopping: no new connection or request; draining what is in flight"
        );
        self.drain.draining.cancel();
        let work = &self.drain.work;
        let drained = tokio::time::timeout_at(deadline, work.idle()).await.is_ok();
        let abandoned = work.count();
        if !drained {
            tracing::warn!(
                abandoned,
                "drain time is up: requests still in flight are left to recovery"
            );
        }
        // Nothing more is journaled; what is being journaled lands first.
        self.switch.close().await;
        // Connections write no new batch; what they still hold is undelivered.
        self.drain.abandon.cancel();
        let _ = tokio::time::timeout(SETTLE, work.idle()).await;
        // Undelivered approvals: their reversals recorded (queued, sent at the next start if
        // not before).
        let reversals = &self.switch.deliveries.reversals;
        if tokio::time::timeout(SETTLE, reversals.idle())
            .await
            .is_err()
        {
            tracing::error!(
                left = reversals.count(),
                "undelivered approvals whose reversal was not recorded: recovery decides"
            );
        }
        stop.cancel();
        // The links' sessions ended: no late approval is read after the wait below (a
        // session's reader may be handling one as the stop comes).
        let sessions =
            futures::future::join_all(self.switch.links.values().map(|l| l.sessions_ended()));
        if tokio::time::timeout(SETTLE, sessions).await.is_err() {
            tracing::warn!("link sessions still running at stop");
        }
        // Late approvals that came before the links stopped: their reversals recorded.
        let late = &self.switch.saf.late_reversals;
        if tokio::time::timeout(SETTLE, late.idle()).await.is_err() {
            tracing::error!(
                left = late.count(),
                "late approvals whose reversal was not recorded"
            );
        }
        // Every record of a leg sent ahead on disk: its link is marked clean, and the next
        // start reverses nothing blind.
        for ahead in self.switch.legs_ahead.values() {
            if !ahead.stop_clean(&self.switch.journal, SETTLE).await {
                tracing::warn!(
                    link = ahead.link(),
                    "legs sent ahead not all on disk at stop: the next start reverses their window blind"
                );
            }
        }
        if let Err(e) = self.switch.journal.sync().await {
            tracing::error!(error = %e, "journal not synced at stop");
        }
        // The hosted ledger takes no more writes; what its memory holds is written so the
        // next start need not replay all its history (a kill -9 leaves none: full replay).
        match self.switch.hosted.ledger.checkpoint().await {
            Ok(accounts) => tracing::info!(accounts, "hosted ledger: checkpoint written"),
            Err(e) => tracing::error!(error = %e, "hosted ledger: checkpoint not written"),
        }
        let in_transit = self.switch.deliveries.in_transit();
        if in_transit > 0 {
            tracing::warn!(
                in_transit,
                "answers still being written at stop: in doubt at the next start"
            );
        }
        tracing::info!(drained, abandoned, "stopped");
        Stopped { drained, abandoned }
    }
}

/// How long a stop waits, past the drain, for what it has already set going (a batch being
/// written, reversals being recorded).
const SETTLE: Duration = Duration::from_secs(2);

/// In-process hosts answering for configured upstream links, by link name: such a link is
/// not connected, its requests go to the host (see [`Link::in_process`]).
pub type StandIns = HashMap<String, Arc<dyn LocalHost>>;

/// Open the data directory, start links and listeners; serve until `stop`.
pub async fn start(config: Config, stop: CancellationToken) -> Result<Running, String> {
    let config = Arc::new(config);
    crate::fds::ensure(&config)?;
    testhooks::warn_if_armed();
    tokio::spawn(crate::observe::watch_runtime_lag(stop.clone()));
    let store = open_store(&config)?;
    let clock = Arc::new(crate::clock::SystemClock);
    let switch = assemble(config.clone(), store, clock.clone(), StandIns::new(), &stop).await?;
    start_housekeeping(&config, switch.journal.store(), &stop);
    tokio::spawn(crate::switch::delivery::heartbeat(
        switch.journal.clone(),
        clock,
        stop.clone(),
    ));
    watch_sighup(config.clone(), stop.clone());
    let drain = Drain::default();
    let addrs = start_listeners(&config, &switch, &stop, &drain).await?;
    let admin = match &config.admin {
        Some(a) => Some(crate::admin::serve(a, switch.clone(), stop.clone()).await?),
        None => None,
    };
    Ok(Running {
        switch,
        addrs,
        admin,
        drain,
    })
}

/// The switch over `store`, recovered and with its links up, binding nothing: the journal,
/// the card directory, store-and-forward, start-up recovery, the hosted programs and the
/// links — each configured link connected, or answered in-process by its host in
/// `stand_ins`. Serves until `stop`.
pub async fn assemble(
    config: Arc<Config>,
    store: Store,
    clock: Arc<dyn Clock>,
    stand_ins: StandIns,
    stop: &CancellationToken,
) -> Result<Arc<Switch>, String> {
    let grouping = crate::journal::Grouping {
        batch_max: config.limits.journal_batch_max,
        sync_delay: Duration::from_micros(config.limits.journal_sync_delay_us),
    };
    let journal = Journal::open_with(store, config.sealer(), grouping, config.durability)?;
    let key = config.card_key_chain();
    let directory = Directory::new(journal.store().clone(), key.clone())
        .with_max_links(config.limits.max_links_per_card);
    let books = crate::books::Books::open(journal.clone(), clock.clone(), &config).await?;
    let saf = Saf::open(
        journal.clone(),
        clock.clone(),
        books.clone(),
        SafTiming {
            retry_min: Duration::from_millis(config.limits.saf_retry_min_ms),
            retry_max: Duration::from_millis(config.limits.saf_retry_max_ms),
            expiry: Duration::from_secs(config.limits.saf_expiry_s),
        },
    )?;
    recover(&config, &journal, &saf).await?;
    let windows: Vec<(String, u32)> = config
        .links
        .iter()
        .map(|l| (l.name.clone(), l.legs_ahead))
        .collect();
    let reverse = !testhooks::skip_recovery();
    let legs_ahead =
        Arc::new(crate::switch::legs_ahead::open(&journal, &saf, &windows, reverse).await?);
    let hosted =
        crate::hosted::Hosted::open(journal.clone(), config.clone(), key.clone(), clock.clone())
            .await?;
    hosted.start_expiry(stop.clone());
    let links = start_links(&config, &hosted, &saf, stand_ins, stop)?;
    saf.start(links.clone(), stop.clone());
    tokio::spawn(crate::books::cutover::automatic(
        books.clone(),
        links.clone(),
        stop.clone(),
    ));
    let rrns = crate::switch::rrn::Rrns::open(journal.clone()).await?;
    let outbox = crate::outbox::Outbox::new(journal.clone(), clock.clone(), config.clone());
    tokio::spawn(outbox.clone().run(stop.clone()));
    let va = crate::va::VirtualAccounts::new(
        journal.clone(),
        clock.clone(),
        config.clone(),
        outbox.clone(),
    )?;
    tokio::spawn(va.clone().run_sweeper(stop.clone()));
    tokio::spawn(crate::statements::daily(
        hosted.clone(),
        outbox,
        config.clone(),
        clock.clone(),
        stop.clone(),
    ));
    let parts = Parts {
        config,
        directory,
        links,
        journal,
        saf,
        hosted,
        clock,
        rrns,
        legs_ahead,
        books,
        va,
    };
    Switch::new(parts, stop.clone())
}

/// What a TLS reload did: how many listeners, links and APIs read their files again, and
/// why the others kept what they had.
#[derive(Debug, Default)]
pub struct TlsReload {
    pub reloaded: usize,
    pub failed: Vec<String>,
}

/// Read every configured certificate, key and CA file again (SIGHUP): new connections use
/// them; connections already open keep theirs. A listener or link whose files do not load
/// keeps its previous ones, and the reason is logged (file and why, never the contents).
pub fn reload_tls(config: &Config) -> TlsReload {
    let mut done = TlsReload::default();
    let mut report = |what: String, result: Result<(), String>| match result {
        Ok(()) => {
            tracing::info!(%what, "TLS files reloaded");
            done.reloaded += 1;
        }
        Err(e) => {
            metrics::counter!("cyberswitch_tls_reload_failures_total").increment(1);
            tracing::error!(%what, error = %e, "TLS files not reloaded; keeping the previous ones");
            done.failed.push(format!("{what}: {e}"));
        }
    };
    for l in &config.listeners {
        if let Some(tls) = &l.tls {
            report(format!("listener {}", l.name), tls.reload());
        }
    }
    for l in &config.links {
        if let Some(tls) = &l.tls {
            report(format!("link {}", l.name), tls.reload());
        }
    }
    if let Some(tls) = config.admin.as_ref().and_then(|a| a.tls.as_ref()) {
        report("admin API".into(), tls.reload());
    }
    done
}

/// SIGHUP reloads the TLS files, until `stop`. The handler is installed now, before any
/// listener is up, so that a SIGHUP from then on never takes the default action (exit).
fn watch_sighup(config: Arc<Config>, stop: CancellationToken) {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        let mut hangups = match signal(SignalKind::hangup()) {
            Ok(s) => s,
            Err(e) => {
                tracing::warn!(error = %e, "SIGHUP handler not installed: TLS files reload only at start");
                return;
            }
        };
        tokio::spawn(async move {
            loop {
                tokio::select! {
                    _ = stop.cancelled() => return,
                    h = hangups.recv() => if h.is_none() { return },
                }
                tracing::info!("SIGHUP: reloading TLS files");
                reload_tls(&config);
            }
        });
    }
    #[cfg(not(unix))]
    let _ = (config, stop);
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

/// The switch's database, with what compactions may drop.
fn open_store(config: &Config) -> Result<Store, String> {
    let retention = config.limits.journal_retention();
    let store = crate::store::open_with(
        &config.data_dir,
        crate::store::Expiry {
            dedup_window: Some(Duration::from_secs(config.limits.duplicate_window_s)),
            txns: retention.map(|kept| (kept, txn::ended_at_ms as crate::store::EndedAt)),
        },
    )?;
    if let Some(dir) = &config.limits.journal_archive_dir {
        // Found unwritable now, not at the first purge an hour from now.
        std::fs::create_dir_all(dir).map_err(|e| {
            format!(
                "limits.journal_archive_dir: {}: cannot create: {e}",
                dir.display()
            )
        })?;
    }
    Ok(store)
}

/// Retention housekeeping of the database, until `stop`.
fn start_housekeeping(config: &Config, store: &Store, stop: &CancellationToken) {
    if let Some(db) = store.rocks().cloned() {
        tokio::spawn(rocks_gauges(db, stop.clone()));
    }
    let archive = config.limits.journal_archive_dir.clone();
    tokio::spawn(crate::journal::retention::housekeeping(
        store.clone(),
        config
            .limits
            .journal_retention()
            .map(|kept| crate::journal::retention::Retention { kept, archive }),
        Duration::from_secs(30),
        stop.clone(),
    ));
}

/// RocksDB's stalls and background work as gauges, every second, until `stop`.
async fn rocks_gauges(db: Arc<rocksdb::DB>, stop: CancellationToken) {
    let stall = metrics::gauge!("cyberswitch_rocksdb_stall_seconds");
    let compactions = metrics::gauge!("cyberswitch_rocksdb_running_compactions");
    let flushes = metrics::gauge!("cyberswitch_rocksdb_running_flushes");
    let pending = metrics::gauge!("cyberswitch_rocksdb_pending_compaction_bytes");
    let mut every = tokio::time::interval(Duration::from_secs(1));
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = every.tick() => {}
        }
        let s = crate::store::rocks_stats(&db);
        stall.set(s.stall_s);
        compactions.set(s.running_compactions as f64);
        flushes.set(s.running_flushes as f64);
        pending.set(s.pending_compaction_bytes as f64);
    }
}

/// SPEC §9: transactions left open by a crash have their legs reversed before anything new
/// is accepted.
async fn recover(config: &Config, journal: &Journal, saf: &Saf) -> Result<(), String> {
    if testhooks::skip_recovery() {
        tracing::warn!("recovery skipped (test-only switch)");
        return Ok(());
    }
    // A repeat of an undelivered approval, once reversed, gets it withdrawn (96), encoded
    // under its listener's layout.
    let withdraw = |listener: &str, answer: &[u8]| {
        let l = config.listeners.iter().find(|l| l.name == listener)?;
        crate::switch::delivery::withdrawn(&l.profile.spec, answer)
    };
    let policy = crate::switch::followup::Recovery {
        doubt_ms: i64::try_from(config.limits.delivery_doubt_s.saturating_mul(1000))
            .unwrap_or(i64::MAX),
        withdraw: &withdraw,
    };
    let done = crate::switch::followup::recover(journal, saf, &policy).await?;
    if done != Default::default() {
        tracing::warn!(
            unanswered = done.open,
            undelivered = done.undelivered,
            in_doubt = done.in_doubt,
            "start-up recovery: unanswered transactions and undelivered approvals reversed"
        );
    }
    Ok(())
}

/// Every link by name: the in-process ones of the hosted programs, then the configured
/// upstream links, each started (signing on, echoing) or, when `stand_ins` has a host for
/// it, answered by that host.
fn start_links(
    config: &Config,
    hosted: &Arc<crate::hosted::Hosted>,
    saf: &Arc<Saf>,
    mut stand_ins: StandIns,
    stop: &CancellationToken,
) -> Result<HashMap<String, Arc<Link>>, String> {
    if let Some(name) = stand_ins
        .keys()
        .find(|name| !config.links.iter().any(|l| &l.name == *name))
    {
        return Err(format!(
            "in-process host for {name:?}: no such link is configured"
        ));
    }
    let mut links = local_links(config, hosted, saf);
    for lc in &config.links {
        let link = match stand_ins.remove(&lc.name) {
            Some(host) => Link::in_process(lc.clone(), host, saf.clone()),
            None => {
                let terminal = format!("CSW{:>05}", lc.name.len() % 100000);
                Link::start(lc.clone(), terminal, saf.clone(), stop.clone())
            }
        };
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
    drain: &Drain,
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
            max_connections_per_peer: lc.max_connections_per_peer,
            max_in_flight: lc.max_in_flight,
            idle_timeout: lc.idle_timeout(),
            tls: lc.tls.clone(),
        };
        let service: Arc<dyn crate::net::server::Service> = match (lc.role, &lc.bank) {
            (crate::config::ListenerRole::Bank, Some(bank)) => {
                Arc::new(crate::va::bank::BankService::new(
                    switch.va.clone(),
                    switch.journal.clone(),
                    &lc.name,
                    bank,
                    profile.spec.clone(),
                ))
            }
            _ => Arc::new(ListenerService::new(switch.clone(), &lc.name, profile)),
        };
        tokio::spawn(crate::net::server::serve_draining(
            lc.name.clone().into(),
            listener,
            limits,
            service,
            stop.clone(),
            drain.clone(),
        ));
        tracing::info!(listener = %lc.name, %addr, tls = lc.tls.is_some(), "listening");
        addrs.push((lc.name.clone(), addr));
    }
    Ok(addrs)
}
