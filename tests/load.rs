//! `cyberswitch load` end to end: against the demo (every answer checked and counted right),
//! against its own echo server (the baseline), and against peers that answer wrongly, which
//! must never be counted as successes.

use std::sync::Arc;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use cyberswitch::iso8583::Spec;
use cyberswitch::load::{self, LoadOptions};
use cyberswitch::net::server::{serve, BoxFuture, ServerLimits, Service};
use tokio_util::sync::CancellationToken;

fn options(duration_ms: u64) -> LoadOptions {
    LoadOptions {
        connections: 4,
        window: 4,
        cards: 20,
        duration: Duration::from_millis(duration_ms),
        answer_timeout: Duration::from_secs(5),
        progress: false,
        ..LoadOptions::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_default_mix_against_the_demo_is_all_answered_right() {
    let report = load::run(LoadOptions {
        demo: true,
        ..options(1500)
    })
    .await
    .unwrap();
    assert!(report.ok > 50, "{}", report.text());
    assert_eq!(report.errors, 0, "{}", report.text());
    assert_eq!(report.mismatches, 0, "{}", report.text());
    assert_eq!(report.ok, report.sent, "{}", report.text());
    for flow in ["inquiry", "wallet", "auto", "split", "credit"] {
        assert!(
            report
                .codes
                .get(flow)
                .is_some_and(|c| c.get("00").is_some()),
            "{flow} missing: {}",
            report.text()
        );
    }
    assert!(report.latency_ms.p50 > 0.0 && report.latency_ms.p50 <= report.latency_ms.max);
    let json = serde_json::to_value(&report).unwrap();
    for key in [
        "throughput_per_s",
        "sent",
        "ok",
        "errors",
        "mismatches",
        "duration_s",
    ] {
        assert!(json.get(key).is_some(), "{key} missing from {json}");
    }
    for key in ["p50", "p90", "p99", "p999", "max"] {
        assert!(
            json["latency_ms"].get(key).is_some(),
            "latency_ms.{key} missing"
        );
    }
    let svg = load::plot::svg("t", report.histogram.as_ref().unwrap(), &report.per_second);
    assert!(svg.starts_with("<svg") && svg.contains("polyline"));
}

/// Authorizations and their completions (SPEC §7): every 0110 and 0230 checked, and the
/// completions delivered to the acquirer through the queue.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn authorizations_and_their_completions_are_all_answered_right() {
    let report = load::run(LoadOptions {
        demo: true,
        mix: "auth=1,complete=1".parse().unwrap(),
        ..options(1500)
    })
    .await
    .unwrap();
    assert_eq!(report.errors, 0, "{}", report.text());
    assert_eq!(report.mismatches, 0, "{}", report.text());
    assert_eq!(report.ok, report.sent, "{}", report.text());
    for flow in ["auth", "complete"] {
        let approved = report.codes.get(flow).and_then(|c| c.get("00")).copied();
        assert!(approved.unwrap_or(0) > 10, "{flow}: {}", report.text());
    }
}

/// Purchases and their refunds (F8): every refund of a whole purchase answered 00.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn purchases_and_their_refunds_are_all_answered_right() {
    let report = load::run(LoadOptions {
        demo: true,
        mix: "wallet=1,refund=1".parse().unwrap(),
        ..options(1500)
    })
    .await
    .unwrap();
    assert_eq!(report.errors, 0, "{}", report.text());
    assert_eq!(report.mismatches, 0, "{}", report.text());
    assert_eq!(report.ok, report.sent, "{}", report.text());
    let refunded = report
        .codes
        .get("refund")
        .and_then(|c| c.get("00"))
        .copied();
    assert!(refunded.unwrap_or(0) > 10, "{}", report.text());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_open_loop_run_sends_at_the_rate_asked() {
    let report = load::run(LoadOptions {
        demo: true,
        rate: Some(400.0),
        ..options(1000)
    })
    .await
    .unwrap();
    // 400/s for one second: requests due at 0, 2.5, 5 … 997.5 ms, each sent (the run waits
    // for the last answers), spread over the 4 connections.
    assert_eq!(report.sent, 400, "{}", report.text());
    assert_eq!(report.ok, report.sent, "{}", report.text());
    assert_eq!(report.rate_per_s, Some(400.0));
    // How precisely the schedule was kept is part of the report.
    let late = report
        .pacer_late_ms
        .as_ref()
        .expect("open loop reports pacer lateness");
    assert!(late.p50 <= late.max, "{}", report.text());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_echo_baseline_runs_the_same_messages_and_compares() {
    let report = load::run(LoadOptions {
        echo_baseline: true,
        ..options(800)
    })
    .await
    .unwrap();
    assert_eq!(report.mode, "echo-baseline");
    assert!(
        report.ok > 50 && report.mismatches == 0,
        "{}",
        report.text()
    );
    // The baseline at a fixed rate: every echo counts, whatever the pacing.
    let paced = load::run(LoadOptions {
        echo_baseline: true,
        rate: Some(200.0),
        ..options(500)
    })
    .await
    .unwrap();
    assert_eq!(paced.sent, 100, "{}", paced.text());
    assert_eq!(paced.ok, 100, "{}", paced.text());
    assert_eq!(paced.mismatches, 0, "{}", paced.text());
}

/// A peer that answers every request wrongly, in one way.
struct Wrong(fn(&mut cyberswitch::iso8583::OwnedMessage));

impl Service for Wrong {
    fn call(&self, request: Bytes, _peer: Arc<str>) -> BoxFuture<Vec<Bytes>> {
        let spec = Spec::resolve("iso87-ascii").unwrap();
        let msg = spec.decode(&request).unwrap();
        let mut answer =
            cyberswitch::iso8583::answer(&msg, cyberswitch::iso8583::ResponseCode::Approved);
        (self.0)(&mut answer);
        let mut out = BytesMut::new();
        spec.encode(&answer, &mut out).unwrap();
        Box::pin(async move { vec![out.freeze()] })
    }
}

async fn against(wrong: Wrong) -> load::Report {
    let stop = CancellationToken::new();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let limits = ServerLimits {
        framing: "binary2".parse().unwrap(),
        max_frame: 8192,
        max_connections: 100,
        max_connections_per_peer: 100,
        max_in_flight: 64,
        idle_timeout: Duration::from_secs(60),
        tls: None,
    };
    tokio::spawn(serve(
        "wrong".into(),
        listener,
        limits,
        Arc::new(wrong),
        stop.clone(),
    ));
    let report = load::run(LoadOptions {
        target: addr.to_string(),
        mix: "wallet=1,inquiry=1".parse().unwrap(),
        answer_timeout: Duration::from_millis(500),
        ..options(500)
    })
    .await
    .unwrap();
    stop.cancel();
    eprintln!("{}", report.text());
    report
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn wrong_answers_are_never_counted_as_successes() {
    // Declines where approvals are expected.
    let r = against(Wrong(|a| {
        a.set(39, b"05");
    }))
    .await;
    assert!(r.sent > 0);
    assert_eq!(r.ok, 0, "{}", r.text());
    assert_eq!(r.mismatches, r.sent, "{}", r.text());
    // The wrong MTI.
    let r = against(Wrong(|a| {
        a.set_mti(cyberswitch::iso8583::Mti::new(b"0810").unwrap())
    }))
    .await;
    assert_eq!(r.ok, 0, "{}", r.text());
    assert_eq!(r.mismatches, r.sent, "{}", r.text());
    // Another STAN: an answer to nothing asked, and the request itself never answered.
    let r = against(Wrong(|a| {
        let stan: u64 = std::str::from_utf8(a.get(11).unwrap())
            .unwrap()
            .parse()
            .unwrap();
        a.set_number(11, (stan + 500_000) % 1_000_000, 6);
    }))
    .await;
    assert_eq!(r.ok, 0, "{}", r.text());
    assert!(r.mismatches > 0 && r.errors > 0, "{}", r.text());
}
