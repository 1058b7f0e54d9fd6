//! One load connection: a writer that sends on schedule (open loop) or whenever the window
//! has room (closed loop), and a reader that matches answers by STAN, checks them and records
//! latency. Answers may come in any order (the switch answers pipelined requests as they
//! complete).

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::net::tls::Io;
use bytes::BytesMut;
use futures::{SinkExt, StreamExt};
use hdrhistogram::Histogram;
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use tokio::sync::Semaphore;
use tokio_util::codec::Framed;

use super::flows::{self, Flow, Mix, RequestIds};
use super::pacer::Pacer;
use crate::iso8583::{OwnedMessage, Spec};
use crate::net::framing::{Frame, FrameCodec, Framing};

/// Counters shared by every connection, for the progress bar.
#[derive(Default)]
pub struct Live {
    pub sent: AtomicU64,
    pub ok: AtomicU64,
    pub failed: AtomicU64,
}

/// How requests are paced.
#[derive(Debug, Clone, Copy)]
pub enum Pace {
    /// Open loop: requests sent when they are due (see [`super::pacer`]), latency from the
    /// due time.
    Open,
    /// Closed loop: at most `window` requests in flight.
    Window(usize),
}

pub struct ConnConfig {
    pub addr: String,
    /// Over TLS, the server checked against this CA.
    pub tls_ca: Option<std::path::PathBuf>,
    pub spec: Arc<Spec>,
    pub framing: Framing,
    pub terminal: String,
    pub mix: Mix,
    pub cards: usize,
    pub pace: Pace,
    /// Against the echo server of the baseline: any answer with the request's MTI counts.
    pub echo: bool,
    pub started: Instant,
    pub until: Instant,
    pub seed: u64,
    pub answer_timeout: Duration,
}

/// What one connection measured.
pub struct ConnResult {
    pub latency: Histogram<u64>,
    /// Latency per second of the run, for the plot.
    pub per_second: Vec<Histogram<u64>>,
    pub sent: u64,
    pub ok: u64,
    pub mismatches: u64,
    pub errors: u64,
    /// Answers by flow and response code.
    pub codes: HashMap<(Flow, String), u64>,
    pub first_error: Option<String>,
    /// Open loop: how late the writer woke for its requests (µs).
    pub pacer_lateness: Option<Histogram<u64>>,
}

pub fn histogram() -> Histogram<u64> {
    // 1 µs .. 100 s at 3 significant digits; bounds are constants, so this cannot fail.
    Histogram::new_with_bounds(1, 100_000_000, 3)
        .unwrap_or_else(|_| unreachable!("valid histogram bounds"))
}

struct InFlight {
    flow: Flow,
    /// When it was due (open loop) or sent (closed loop).
    due: Instant,
    request: OwnedMessage,
}

type Pending = Arc<Mutex<HashMap<u32, InFlight>>>;

/// Drive one connection. `pacer`: in open loop, this connection's share of the schedule.
pub async fn run(cfg: ConnConfig, pacer: Option<Pacer>, live: Arc<Live>) -> ConnResult {
    let mut result = ConnResult {
        latency: histogram(),
        per_second: Vec::new(),
        sent: 0,
        ok: 0,
        mismatches: 0,
        errors: 0,
        codes: HashMap::new(),
        first_error: None,
        pacer_lateness: None,
    };
    let stream = match crate::net::tls::connect(&cfg.addr, cfg.tls_ca.as_deref()).await {
        Ok(s) => s,
        Err(e) => {
            result.errors += 1;
            result.first_error = Some(e);
            return result;
        }
    };
    let (sink, stream) = Framed::new(stream, FrameCodec::new(cfg.framing, 65_535)).split();
    let pending: Pending = Arc::new(Mutex::new(HashMap::new()));
    let approved: Arc<Mutex<Approved>> = Arc::default();
    let window = Arc::new(Semaphore::new(match cfg.pace {
        Pace::Window(w) => w,
        Pace::Open => Semaphore::MAX_PERMITS,
    }));
    let cfg = Arc::new(cfg);
    // The reader stops once the writer has stopped and every request is answered: a request
    // due just before the end can be written just after it, and must still be read.
    let (writer_done, writer_stopped) = tokio::sync::watch::channel(false);
    let writer = tokio::spawn({
        let (cfg, pending, approved, window, live) = (
            cfg.clone(),
            pending.clone(),
            approved.clone(),
            window.clone(),
            live.clone(),
        );
        async move {
            let mut pacer = pacer;
            let sent = write_loop(cfg, sink, pacer.as_mut(), pending, approved, window, live).await;
            let _ = writer_done.send(true);
            (sent, pacer.map(|p| p.lateness))
        }
    });
    let incoming = Incoming {
        answers: stream,
        writer_stopped,
    };
    read_loop(
        &cfg,
        incoming,
        &pending,
        &approved,
        &window,
        &live,
        &mut result,
    )
    .await;
    // The reader is done: a writer waiting for window room (answers that never came) or for
    // a peer that stopped reading must stop too.
    window.close();
    let writer = match tokio::time::timeout(Duration::from_secs(1), writer).await {
        Ok(joined) => joined,
        Err(_) => Ok((Err((0, "the peer stopped reading".to_string())), None)),
    };
    match writer {
        Ok((Ok(sent), lateness)) => {
            result.sent = sent;
            result.pacer_lateness = lateness;
        }
        Ok((Err((sent, e)), _)) => {
            result.sent = sent;
            result.errors += 1;
            result.first_error.get_or_insert(e);
        }
        Err(e) => {
            result.errors += 1;
            result.first_error.get_or_insert(e.to_string());
        }
    }
    // What is still pending got no answer in time.
    let unanswered = pending.lock().map_or(0, |p| p.len()) as u64;
    if unanswered > 0 {
        result.errors += unanswered;
        live.failed.fetch_add(unanswered, Ordering::Relaxed);
        result
            .first_error
            .get_or_insert(format!("{unanswered} request(s) without an answer"));
    }
    result
}

type Sink = futures::stream::SplitSink<Framed<Box<dyn Io>, FrameCodec>, Frame>;
type Source = futures::stream::SplitStream<Framed<Box<dyn Io>, FrameCodec>>;

async fn write_loop(
    cfg: Arc<ConnConfig>,
    mut sink: Sink,
    mut pacer: Option<&mut Pacer>,
    pending: Pending,
    approved: Arc<Mutex<Approved>>,
    window: Arc<Semaphore>,
    live: Arc<Live>,
) -> Result<u64, (u64, String)> {
    let mut rng = SmallRng::seed_from_u64(cfg.seed);
    let mut stan: u32 = 0;
    let mut sent = 0u64;
    loop {
        let due = match cfg.pace {
            Pace::Open => {
                let Some(p) = pacer.as_mut() else { break };
                match p.next_due().await {
                    Some(due) => due,
                    None => break,
                }
            }
            Pace::Window(_) => {
                let Ok(permit) = window.acquire().await else {
                    break;
                };
                permit.forget(); // given back by the reader
                if Instant::now() >= cfg.until {
                    break;
                }
                Instant::now()
            }
        };
        stan = stan % 999_999 + 1;
        let time = crate::clock::transmission_time();
        let ids = RequestIds {
            terminal: &cfg.terminal,
            stan,
            transmission_time: &time,
        };
        let mut flow = cfg.mix.pick(rng.random_range(0..cfg.mix.total()));
        let original = match flow {
            Flow::Reversal | Flow::Refund => approved
                .lock()
                .ok()
                .and_then(|mut a| a.purchases.pop_front()),
            Flow::Completion => approved
                .lock()
                .ok()
                .and_then(|mut a| a.authorizations.pop_front()),
            _ => None,
        };
        let request = match (flow, original) {
            (Flow::Reversal, Some(original)) => flows::reversal(&original, &ids),
            (Flow::Completion, Some(original)) => flows::completion(&original, &ids),
            (Flow::Refund, Some(original)) => flows::refund(&original, &ids),
            _ => {
                // Nothing to reverse (or complete) yet: what would make one, instead.
                flow = flow.origin();
                flows::request(flow, rng.random_range(0..cfg.cards), amount(&mut rng), &ids)
            }
        };
        let mut buf = BytesMut::new();
        if let Err(e) = cfg.spec.encode(&request, &mut buf) {
            return Err((sent, format!("request does not encode: {e}")));
        }
        if let Ok(mut p) = pending.lock() {
            p.insert(stan, InFlight { flow, due, request });
        }
        // In a window, requests that can go at once go in one write; paced ones go singly.
        let more_ready = !matches!(cfg.pace, Pace::Open) && window.available_permits() > 0;
        let written = match sink.feed(Frame::message(buf.freeze())).await {
            Ok(()) if more_ready => Ok(()),
            Ok(()) => sink.flush().await,
            Err(e) => Err(e),
        };
        if let Err(e) = written {
            return Err((sent, format!("send: {e}")));
        }
        sent += 1;
        live.sent.fetch_add(1, Ordering::Relaxed);
    }
    sink.flush()
        .await
        .map_err(|e| (sent, format!("send: {e}")))?;
    Ok(sent)
}

/// Approved requests of this connection that later requests name in field 90 (at most 64 of
/// each kind are kept).
#[derive(Default)]
struct Approved {
    /// For reversals.
    purchases: VecDeque<OwnedMessage>,
    /// For completions.
    authorizations: VecDeque<OwnedMessage>,
}

fn amount(rng: &mut SmallRng) -> u64 {
    rng.random_range(1..=500u64) * 100
}

/// What the reader listens to: the answers, and the writer saying it has stopped.
struct Incoming {
    answers: Source,
    writer_stopped: tokio::sync::watch::Receiver<bool>,
}

async fn read_loop(
    cfg: &ConnConfig,
    incoming: Incoming,
    pending: &Pending,
    approved: &Mutex<Approved>,
    window: &Semaphore,
    live: &Live,
    result: &mut ConnResult,
) {
    let Incoming {
        answers: mut stream,
        mut writer_stopped,
    } = incoming;
    let echo = cfg.echo;
    // Also set when the writer task ended without saying so (it failed).
    let mut writer_gone = false;
    loop {
        // After the end of the run, wait for what is still in flight, up to the timeout.
        let done_sending = writer_gone || *writer_stopped.borrow();
        if done_sending && pending.lock().map_or(true, |p| p.is_empty()) {
            return;
        }
        let limit = if Instant::now() >= cfg.until {
            (cfg.until + cfg.answer_timeout).saturating_duration_since(Instant::now())
        } else {
            cfg.until.saturating_duration_since(Instant::now()) + cfg.answer_timeout
        };
        let next = tokio::select! {
            n = tokio::time::timeout(limit, stream.next()) => n,
            changed = writer_stopped.changed(), if !done_sending => {
                writer_gone |= changed.is_err();
                continue;
            }
        };
        let frame = match next {
            Err(_) => return,
            Ok(None) => {
                result.first_error.get_or_insert("connection closed".into());
                return;
            }
            Ok(Some(Err(e))) => {
                result.errors += 1;
                result.first_error.get_or_insert(e.to_string());
                return;
            }
            Ok(Some(Ok(f))) => f,
        };
        if frame.is_keep_alive() {
            continue;
        }
        let answered_at = Instant::now();
        let msg = match cfg.spec.decode(&frame.message) {
            Ok(m) => m,
            Err(e) => {
                result.errors += 1;
                live.failed.fetch_add(1, Ordering::Relaxed);
                result
                    .first_error
                    .get_or_insert(format!("undecodable answer: {e}"));
                continue;
            }
        };
        let Some(stan) = msg.stan() else {
            result.mismatches += 1;
            continue;
        };
        let Some(sent) = pending.lock().ok().and_then(|mut p| p.remove(&stan)) else {
            // An answer to nothing we asked (or asked twice).
            result.mismatches += 1;
            live.failed.fetch_add(1, Ordering::Relaxed);
            continue;
        };
        if !matches!(cfg.pace, Pace::Open) {
            window.add_permits(1); // the window has room again (closed loop)
        }
        let (mti, code) = sent.flow.expected();
        let got_code = msg.response_code().unwrap_or_default().into_owned();
        let right = if echo {
            msg.mti() == sent.request.mti()
        } else {
            msg.mti().as_bytes() == mti && got_code.as_bytes() == code
        };
        *result.codes.entry((sent.flow, got_code)).or_default() += 1;
        if !right {
            result.mismatches += 1;
            live.failed.fetch_add(1, Ordering::Relaxed);
            continue;
        }
        result.ok += 1;
        live.ok.fetch_add(1, Ordering::Relaxed);
        let micros = answered_at
            .saturating_duration_since(sent.due)
            .as_micros()
            .clamp(1, 100_000_000) as u64; // ok: clamped
        let _ = result.latency.record(micros);
        let second = answered_at.saturating_duration_since(cfg.started).as_secs() as usize;
        while result.per_second.len() <= second {
            result.per_second.push(histogram());
        }
        let _ = result.per_second[second].record(micros);
        if !echo {
            if let Ok(mut a) = approved.lock() {
                let kept = match sent.flow {
                    Flow::Wallet | Flow::Auto | Flow::Split => Some(&mut a.purchases),
                    Flow::Authorization => Some(&mut a.authorizations),
                    _ => None,
                };
                if let Some(kept) = kept.filter(|k| k.len() < 64) {
                    kept.push_back(sent.request);
                }
            }
        }
    }
}
