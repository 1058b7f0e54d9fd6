//! Log context under concurrency: every event logged while a request is handled sits in
//! exactly one `txn` span, however many requests the runtime's threads interleave. (A span
//! guard held across `.await` once made each thread's spans nest without end: every log line
//! grew with every transaction the thread had run, and the switch slowed down with uptime.)
//!
//! Its own test binary: it installs the process-wide subscriber.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use cyberswitch::load::{self, LoadOptions};
use tracing::{Event, Subscriber};
use tracing_subscriber::filter::LevelFilter;
use tracing_subscriber::layer::{Context, SubscriberExt};
use tracing_subscriber::registry::LookupSpan;
use tracing_subscriber::Layer;

static DEEPEST: AtomicUsize = AtomicUsize::new(0);
static INSIDE_TXN: AtomicUsize = AtomicUsize::new(0);

/// Records, for every event, how many `txn` spans enclose it.
struct TxnDepth;

impl<S: Subscriber + for<'a> LookupSpan<'a>> Layer<S> for TxnDepth {
    fn on_event(&self, event: &Event<'_>, ctx: Context<'_, S>) {
        let depth = ctx
            .event_scope(event)
            .map_or(0, |scope| scope.filter(|s| s.name() == "txn").count());
        DEEPEST.fetch_max(depth, Ordering::SeqCst);
        if depth > 0 {
            INSIDE_TXN.fetch_add(1, Ordering::SeqCst);
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_event_sits_in_at_most_one_transaction_span() {
    let subscriber = tracing_subscriber::registry()
        .with(TxnDepth)
        .with(LevelFilter::DEBUG);
    tracing::subscriber::set_global_default(subscriber).unwrap();

    let report = load::run(LoadOptions {
        demo: true,
        connections: 4,
        window: 8,
        cards: 20,
        duration: Duration::from_millis(1500),
        answer_timeout: Duration::from_secs(5),
        progress: false,
        ..LoadOptions::default()
    })
    .await
    .unwrap();
    assert!(report.ok > 50, "{}", report.text());
    // Each answer logs one event in its span (at debug level).
    assert!(
        INSIDE_TXN.load(Ordering::SeqCst) as u64 >= report.ok,
        "{} events inside a transaction for {} answers",
        INSIDE_TXN.load(Ordering::SeqCst),
        report.ok
    );
    assert_eq!(DEEPEST.load(Ordering::SeqCst), 1, "transaction spans nest");
}
