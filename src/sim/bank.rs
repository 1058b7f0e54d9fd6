//! `cyberswitch sim bank`: a bank asking the switch's bank listener whether to accept
//! deposits to virtual accounts (F17): one deposit (0200/21 with field 103 and field 4, or an
//! 0220 advice), or many for load (`--count N --concurrency C`: accounts taken in turn, each
//! deposit with its own RRN), reporting the answers by code and the latency percentiles.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::Serialize;

use crate::iso8583::{Mti, OwnedMessage, Spec};
use crate::net::client::Client;
use crate::net::framing::Framing;

/// One deposit message: `0200` (question) or `0220` (advice), processing code 210000.
pub fn deposit_message(
    account: &str,
    amount: u64,
    stan: u32,
    rrn: &str,
    advice: bool,
) -> OwnedMessage {
    let mti: &[u8; 4] = if advice { b"0220" } else { b"0200" };
    let mut m = OwnedMessage::new(Mti::new(mti).unwrap_or_else(|| unreachable!("a valid MTI")));
    m.set(3, b"210000")
        .set_number(4, amount, 12)
        .set(7, crate::clock::transmission_time().as_bytes())
        .set_number(11, u64::from(stan % 1_000_000), 6)
        .set(32, b"004")
        .set(37, rrn.as_bytes())
        .set(41, b"BANK0001")
        .set(49, b"410")
        .set(103, account.as_bytes());
    m
}

/// A bank's deposit run.
#[derive(Debug, Clone)]
pub struct BankRun {
    pub switch: String,
    pub spec: Arc<Spec>,
    pub framing: Framing,
    pub accounts: Vec<String>,
    pub amount: u64,
    pub advice: bool,
    /// A fixed RRN (one deposit, or repeats of one); `None`: a fresh one per deposit.
    pub rrn: Option<String>,
    pub count: u64,
    pub concurrency: usize,
    pub timeout: Duration,
}

#[derive(Debug, Clone, Serialize)]
pub struct BankReport {
    pub sent: u64,
    /// Answers by field 39 (`none`: no answer in time or the connection failed).
    pub codes: BTreeMap<String, u64>,
    pub seconds: f64,
    pub per_second: f64,
    pub p50_ms: f64,
    pub p99_ms: f64,
    pub max_ms: f64,
}

/// Send the deposits; the answers by code and the latencies.
pub async fn run(r: BankRun) -> Result<BankReport, String> {
    if r.accounts.is_empty() {
        return Err("give at least one account".into());
    }
    let next = Arc::new(AtomicU64::new(0));
    // RRNs unique to this run: 12 characters, the run's start second then a counter.
    // Random, not the time: two runs in one second must not reuse each other's RRNs (the
    // switch would take the second run's deposits for retransmissions of the first's).
    let run_id = rand::random::<u32>() % 1_000_000;
    let started = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..r.concurrency.max(1) {
        let r = r.clone();
        let next = next.clone();
        tasks.push(tokio::spawn(async move {
            let mut codes: BTreeMap<String, u64> = BTreeMap::new();
            let mut lat = hdrhistogram::Histogram::<u64>::new(3).map_err(|e| e.to_string())?;
            let mut client = None;
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= r.count {
                    break;
                }
                let account = &r.accounts[(i as usize) % r.accounts.len()];
                let rrn = r
                    .rrn
                    .clone()
                    .unwrap_or_else(|| format!("{run_id:06}{:06}", i % 1_000_000));
                let m =
                    deposit_message(account, r.amount, (i % 999_999 + 1) as u32, &rrn, r.advice);
                if client.is_none() {
                    client = Client::connect(&r.switch, r.spec.clone(), r.framing)
                        .await
                        .ok();
                }
                let t = Instant::now();
                let code = match client.as_mut() {
                    Some(c) => match c.call(&m, r.timeout).await {
                        Ok(a) => String::from_utf8_lossy(a.get(39).unwrap_or(b"none")).into_owned(),
                        Err(_) => {
                            client = None;
                            "none".into()
                        }
                    },
                    None => "none".into(),
                };
                let _ = lat.record(t.elapsed().as_micros() as u64);
                *codes.entry(code).or_default() += 1;
            }
            Ok::<_, String>((codes, lat))
        }));
    }
    let mut codes: BTreeMap<String, u64> = BTreeMap::new();
    let mut lat = hdrhistogram::Histogram::<u64>::new(3).map_err(|e| e.to_string())?;
    for t in tasks {
        let (c, l) = t.await.map_err(|e| e.to_string())??;
        for (k, v) in c {
            *codes.entry(k).or_default() += v;
        }
        lat.add(l).map_err(|e| e.to_string())?;
    }
    let seconds = started.elapsed().as_secs_f64();
    let sent = codes.values().sum();
    let ms = |q: f64| lat.value_at_quantile(q) as f64 / 1000.0;
    Ok(BankReport {
        sent,
        codes,
        seconds,
        per_second: if seconds > 0.0 {
            sent as f64 / seconds
        } else {
            0.0
        },
        p50_ms: ms(0.5),
        p99_ms: ms(0.99),
        max_ms: lat.max() as f64 / 1000.0,
    })
}
