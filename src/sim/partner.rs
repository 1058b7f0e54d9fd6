//! `cyberswitch sim partner`: a partner's callback receiver (F17 paid orders, F15 daily
//! statements). It checks each callback's signature (HMAC-SHA-256 over the body with the
//! partner's secret), answers 401 to a bad or missing one and 200 to a good one, keeps what
//! it got (by callback id: a repeat is counted, not kept twice) and prints one JSON line per
//! callback.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::Router;
use serde::Serialize;
use tokio_util::sync::CancellationToken;

use crate::callback::{verify, EVENT_HEADER, ID_HEADER, SIGNATURE_HEADER};

/// A callback as received.
#[derive(Debug, Clone, Serialize)]
pub struct Received {
    pub id: String,
    pub event: String,
    pub path: String,
    pub body: serde_json::Value,
    /// How many times it came (at least once delivery: more than 1 is allowed).
    pub times: u32,
}

/// A running receiver.
pub struct PartnerSim {
    pub addr: SocketAddr,
    state: Arc<Inner>,
    stop: CancellationToken,
}

/// Callbacks kept for [`PartnerSim::received`]: the most recent this many ids (a demo left
/// running receives statements every day for ever).
const KEEP: usize = 10_000;

/// The callbacks received, by id, and the ids in arrival order (the oldest go first).
#[derive(Default)]
struct Log {
    by_id: std::collections::HashMap<String, Received>,
    order: std::collections::VecDeque<String>,
}

struct Inner {
    secret: Vec<u8>,
    received: Mutex<Log>,
    refused: Mutex<u32>,
    print: bool,
}

impl PartnerSim {
    /// Listen on `addr` (port 0: any) until `stop` (or [`PartnerSim::shut`]).
    pub async fn start(
        addr: SocketAddr,
        secret: &str,
        print: bool,
        stop: CancellationToken,
    ) -> Result<PartnerSim, String> {
        let listener = tokio::net::TcpListener::bind(addr)
            .await
            .map_err(|e| format!("partner receiver: bind {addr}: {e}"))?;
        let addr = listener.local_addr().map_err(|e| e.to_string())?;
        let state = Arc::new(Inner {
            secret: secret.as_bytes().to_vec(),
            received: Mutex::new(Log::default()),
            refused: Mutex::new(0),
            print,
        });
        let app = Router::new().fallback(receive).with_state(state.clone());
        let stop = stop.child_token();
        let until = stop.clone();
        tokio::spawn(async move {
            let served = axum::serve(listener, app)
                .with_graceful_shutdown(async move { until.cancelled().await })
                .await;
            if let Err(e) = served {
                tracing::error!(error = %e, "partner receiver stopped");
            }
        });
        Ok(PartnerSim { addr, state, stop })
    }

    /// Stop listening (the port is free again once this returns and connections close).
    pub fn shut(&self) {
        self.stop.cancel();
    }

    /// Callbacks accepted so far (the most recent [`KEEP`] ids), in arrival order (one per
    /// id).
    pub fn received(&self) -> Vec<Received> {
        self.state
            .received
            .lock()
            .map(|log| {
                log.order
                    .iter()
                    .filter_map(|id| log.by_id.get(id).cloned())
                    .collect()
            })
            .unwrap_or_default()
    }

    /// Callbacks refused for their signature.
    pub fn refused(&self) -> u32 {
        self.state.refused.lock().map(|r| *r).unwrap_or(0)
    }
}

async fn receive(
    State(s): State<Arc<Inner>>,
    uri: axum::http::Uri,
    headers: HeaderMap,
    body: Bytes,
) -> (StatusCode, &'static str) {
    let header = |name: &str| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_string()
    };
    if !verify(&s.secret, &body, &header(SIGNATURE_HEADER)) {
        if let Ok(mut n) = s.refused.lock() {
            *n += 1;
        }
        tracing::warn!(path = %uri.path(), "partner receiver: bad signature, refused");
        return (StatusCode::UNAUTHORIZED, "bad signature\n");
    }
    let id = header(ID_HEADER);
    let parsed: serde_json::Value = serde_json::from_slice(&body)
        .unwrap_or_else(|_| serde_json::Value::String(String::from_utf8_lossy(&body).into_owned()));
    let Ok(mut log) = s.received.lock() else {
        return (StatusCode::INTERNAL_SERVER_ERROR, "\n");
    };
    if let Some(r) = log.by_id.get_mut(&id) {
        r.times += 1;
    } else {
        let r = Received {
            id,
            event: header(EVENT_HEADER),
            path: uri.path().to_string(),
            body: parsed,
            times: 1,
        };
        tracing::info!(id = %r.id, event = %r.event, "partner receiver: callback received, signature good");
        if s.print {
            println!("{}", serde_json::to_string(&r).unwrap_or_default());
        }
        log.order.push_back(r.id.clone());
        log.by_id.insert(r.id.clone(), r);
        if log.order.len() > KEEP {
            if let Some(oldest) = log.order.pop_front() {
                log.by_id.remove(&oldest);
            }
        }
    }
    (StatusCode::OK, "ok\n")
}
