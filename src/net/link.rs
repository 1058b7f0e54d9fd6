//! Upstream links to issuers and acquirers: sessions kept connected and signed on, echoes when
//! idle, reconnection with exponential back-off and jitter across the hosts in failover order,
//! answers matched to requests by the configured key, a per-request timeout, and a bound on
//! requests in flight. An answer that arrives after its request timed out goes to the
//! [`LateAnswers`] handler (which reverses a late approval).

use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::BytesMut;
use dashmap::DashMap;
use futures::StreamExt;
use rand::Rng;
use tokio::net::TcpStream;
use tokio::sync::{mpsc, oneshot, Semaphore};
use tokio_util::codec::FramedRead;
use tokio_util::sync::CancellationToken;

use super::framing::{send_batch, Batch, Frame, FrameCodec};
use crate::config::{LinkConfig, MatchField, Profile};
use crate::iso8583::{Message, Mti, OwnedMessage, ResponseCode};
use crate::observe::{Direction, MessageCounters};

/// Why a request got no answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum LinkError {
    /// No session is up: nothing was sent.
    #[error("link down")]
    Down,
    /// A request with the same match key is in flight (a queued advice carrying a STAN of
    /// an earlier run, say): the two answers could not be told apart, so nothing was sent.
    #[error("a request with the same match key is in flight")]
    Busy,
    /// Sent, but no answer in time: the outcome upstream is unknown.
    #[error("no answer in time")]
    Timeout,
    /// The request could not be encoded under the link's spec: nothing was sent.
    #[error("request does not fit the link's layout")]
    Encode,
}

/// Receives answers that came after their request timed out.
pub trait LateAnswers: Send + Sync + 'static {
    fn late_answer(&self, link: &str, request: OwnedMessage, answer: OwnedMessage);
}

/// A host inside the switch's own process (the hosted ledger): it answers requests through the
/// same interface as a remote host, so the flows, the journal, store-and-forward and recovery
/// treat it exactly like one — only there is no socket.
pub trait LocalHost: Send + Sync + 'static {
    /// Answer one request, given as the bytes a remote host would receive; `None`: no answer.
    fn handle(&self, request: bytes::Bytes)
        -> futures::future::BoxFuture<'_, Option<OwnedMessage>>;
}

/// An in-process host and how long its answers are waited for.
struct Local {
    host: Arc<dyn LocalHost>,
    wait: LocalWait,
}

#[derive(Clone, Copy)]
enum LocalWait {
    /// The hosted ledger: its answer is waited for however long its journal write takes.
    /// Timing it out would race the leg's reversal against the leg's own write: a void that
    /// lands first finds nothing to void, and the debit then stands.
    ToTheEnd,
    /// A stand-in for a configured remote host (the deterministic tests' scripted hosts):
    /// the link's timeout applies and a later answer goes to [`LateAnswers`], as on a socket.
    LikeRemote,
}

/// Matching key: the values of the configured fields (and the MTI class).
type MatchKey = Vec<Vec<u8>>;

struct Session {
    up: AtomicBool,
    sender: std::sync::Mutex<Option<mpsc::Sender<Frame>>>,
}

struct Pending {
    reply: oneshot::Sender<OwnedMessage>,
    /// Which request this is (the match key alone may come round again).
    request: u64,
    /// The first three digits of the MTI its answer has (0210 for 0200, 0230 for 0221).
    answered_by: [u8; 3],
}

/// The first three digits of the MTI that answers `request`.
fn answered_by(request: Mti) -> [u8; 3] {
    let r = request.response();
    [r.0[0], r.0[1], r.0[2]]
}

/// Does `answer` answer a request whose answer MTI starts with `expected`?
fn answers(answer: Mti, expected: [u8; 3]) -> bool {
    answer.0[..3] == expected
}

/// Is `new` another attempt of the request `old` (a queued reversal, completion or advice
/// sent again, naming the same leg in field 90; or the same message again)? Its answer and
/// a late answer of `old` mean the same.
fn same_request(old: &OwnedMessage, new: &OwnedMessage) -> bool {
    match (old.get(90), new.get(90)) {
        (Some(a), Some(b)) => a == b,
        (None, None) => old.get(7) == new.get(7) && old.mti().class() == new.mti().class(),
        _ => false,
    }
}

/// One upstream link.
pub struct Link {
    pub name: Arc<str>,
    /// The link's settings, its wire profile among them.
    config: LinkConfig,
    sessions: Vec<Arc<Session>>,
    next_session: AtomicUsize,
    in_flight: Arc<Semaphore>,
    pending: DashMap<MatchKey, Pending>,
    /// Requests that timed out, kept a while so that a late answer can be recognised.
    timed_out: DashMap<MatchKey, (OwnedMessage, Instant)>,
    stan: AtomicU32,
    /// Numbers the requests sent, to tell a request's pending entry from a later one's.
    requests: AtomicU64,
    last_activity_ms: AtomicU64,
    started: Instant,
    late: Arc<dyn LateAnswers>,
    terminal_id: String,
    /// Set for an in-process host: requests are answered by it, never sent.
    local: Option<Local>,
    metrics: LinkMetrics,
    /// Sessions running (each reads answers, late ones included, until it ends).
    sessions_running: crate::net::server::WorkCount,
}

/// The link's metric handles, registered once.
struct LinkMetrics {
    messages: MessageCounters,
    in_flight: metrics::Gauge,
    latency: metrics::Histogram,
}

impl LinkMetrics {
    fn new(name: &Arc<str>) -> LinkMetrics {
        LinkMetrics {
            messages: MessageCounters::new(name.clone()),
            in_flight: metrics::gauge!("cyberswitch_link_in_flight", "link" => name.to_string()),
            latency: metrics::histogram!("cyberswitch_upstream_latency_seconds", "link" => name.to_string()),
        }
    }
}

impl Link {
    /// Create the link and start its session tasks.
    pub fn start(
        config: LinkConfig,
        terminal_id: String,
        late: Arc<dyn LateAnswers>,
        stop: CancellationToken,
    ) -> Arc<Link> {
        let sessions = (0..config.sessions)
            .map(|_| {
                Arc::new(Session {
                    up: AtomicBool::new(false),
                    sender: std::sync::Mutex::new(None),
                })
            })
            .collect();
        let link = Arc::new(Link::build(config, sessions, late, terminal_id, None));
        for (i, s) in link.sessions.iter().enumerate() {
            let running = link.sessions_running.enter();
            let session = run_session(link.clone(), s.clone(), i, stop.clone());
            tokio::spawn(async move {
                let _running = running;
                session.await;
            });
        }
        tokio::spawn(sweep_timed_out(link.clone(), stop));
        link
    }

    /// A link to an in-process host of the switch's own (the hosted ledger): always up, no
    /// sessions, and its answers are waited for to the end (see [`LocalWait::ToTheEnd`]).
    pub fn local(
        name: &str,
        profile: Profile,
        host: Arc<dyn LocalHost>,
        late: Arc<dyn LateAnswers>,
    ) -> Arc<Link> {
        let local = Local {
            host,
            wait: LocalWait::ToTheEnd,
        };
        Arc::new(Link::build(
            LinkConfig::local(name, profile),
            Vec::new(),
            late,
            String::new(),
            Some(local),
        ))
    }

    /// A configured upstream link whose far end is in-process instead of across a socket
    /// (the deterministic tests' scripted hosts): always up, no sessions, but otherwise as
    /// the flows see a remote link: the configured timeout bounds each answer, and an
    /// answer that comes later is handed to `late`.
    pub fn in_process(
        config: LinkConfig,
        host: Arc<dyn LocalHost>,
        late: Arc<dyn LateAnswers>,
    ) -> Arc<Link> {
        let local = Local {
            host,
            wait: LocalWait::LikeRemote,
        };
        Arc::new(Link::build(
            config,
            Vec::new(),
            late,
            String::new(),
            Some(local),
        ))
    }

    fn build(
        config: LinkConfig,
        sessions: Vec<Arc<Session>>,
        late: Arc<dyn LateAnswers>,
        terminal_id: String,
        local: Option<Local>,
    ) -> Link {
        let name: Arc<str> = config.name.clone().into();
        Link {
            metrics: LinkMetrics::new(&name),
            name,
            in_flight: Arc::new(Semaphore::new(config.max_in_flight)),
            config,
            sessions,
            next_session: AtomicUsize::new(0),
            pending: DashMap::new(),
            timed_out: DashMap::new(),
            stan: AtomicU32::new(rand::rng().random_range(1..900_000)),
            requests: AtomicU64::new(0),
            last_activity_ms: AtomicU64::new(0),
            started: Instant::now(),
            late,
            terminal_id,
            local,
            sessions_running: Default::default(),
        }
    }

    /// Resolves once every session of the link has ended (after the stop it was started
    /// with): no answer, late or not, is read from its hosts after that.
    pub async fn sessions_ended(&self) {
        self.sessions_running.idle().await;
    }

    pub fn spec(&self) -> &crate::iso8583::Spec {
        &self.config.profile.spec
    }

    pub fn is_up(&self) -> bool {
        self.local.is_some() || self.sessions.iter().any(|s| s.up.load(Ordering::Relaxed))
    }

    /// A fresh systems trace audit number for this link, 000001–999999.
    pub fn next_stan(&self) -> u32 {
        self.stan.fetch_add(1, Ordering::Relaxed) % 999_999 + 1
    }

    pub fn timeout(&self) -> Duration {
        self.config.timeout()
    }

    /// Send a request and wait for its answer (bounded by the link's timeout).
    pub async fn request(&self, msg: OwnedMessage) -> Result<OwnedMessage, LinkError> {
        let _permit = self
            .in_flight
            .acquire()
            .await
            .map_err(|_| LinkError::Down)?;
        if let Some(local) = &self.local {
            return self.ask_local(local, msg).await;
        }
        let session = self.pick_session().ok_or(LinkError::Down)?;
        self.send_on(&session, msg).await
    }

    /// An in-process host gets the request encoded under the link's layout, as a remote host
    /// would: what it reads is what went on the wire.
    async fn ask_local(&self, local: &Local, msg: OwnedMessage) -> Result<OwnedMessage, LinkError> {
        let buf = self.encode(&msg)?.freeze();
        self.metrics.messages.count(Direction::Out, msg.mti());
        let started = Instant::now();
        let answer = match local.wait {
            // `None`: the host chose not to answer (a request it cannot read).
            LocalWait::ToTheEnd => local.host.handle(buf).await.ok_or(LinkError::Timeout)?,
            LocalWait::LikeRemote => self.ask_like_remote(&local.host, buf, msg).await?,
        };
        self.metrics.latency.record(started.elapsed().as_secs_f64());
        Ok(answer)
    }

    /// Wait for an in-process host's answer no longer than the link's timeout. A host that
    /// answers nothing is waited for until the timeout, as a silent remote host is. When the
    /// timeout comes first, the host is left to finish on its own task and what it answers
    /// then is a late answer, as one arriving on a session after its request timed out.
    async fn ask_like_remote(
        &self,
        host: &Arc<dyn LocalHost>,
        request: bytes::Bytes,
        msg: OwnedMessage,
    ) -> Result<OwnedMessage, LinkError> {
        let deadline = tokio::time::Instant::now() + self.config.timeout();
        let host = host.clone();
        let mut answer: futures::future::BoxFuture<'static, Option<OwnedMessage>> =
            Box::pin(async move { host.handle(request).await });
        match tokio::time::timeout_at(deadline, &mut answer).await {
            Ok(Some(answer)) => return Ok(answer),
            Ok(None) => tokio::time::sleep_until(deadline).await,
            Err(_) => {
                let late = self.late.clone();
                let link = self.name.clone();
                // Past this, a remote link has forgotten the request too (`sweep_timed_out`).
                let remembered = self.remembered_after_timeout();
                tokio::spawn(async move {
                    if let Ok(Some(answer)) = tokio::time::timeout(remembered, answer).await {
                        report_late(late.as_ref(), &link, msg, answer);
                    }
                });
            }
        }
        self.count_timeout();
        Err(LinkError::Timeout)
    }

    fn count_timeout(&self) {
        metrics::counter!("cyberswitch_upstream_timeouts_total", "link" => self.name.to_string())
            .increment(1);
    }

    /// How long a timed-out request is remembered, so that its late answer is recognised.
    fn remembered_after_timeout(&self) -> Duration {
        self.config.timeout() * 30 + Duration::from_secs(60)
    }

    fn encode(&self, msg: &OwnedMessage) -> Result<BytesMut, LinkError> {
        let mut buf = BytesMut::new();
        self.config
            .profile
            .spec
            .encode(msg, &mut buf)
            .map_err(|e| {
                tracing::error!(link = %self.name, error = %e, "request does not encode");
                LinkError::Encode
            })?;
        Ok(buf)
    }

    /// Served by the switch's own hosted ledger? (A stand-in for a remote host is served
    /// in-process too, but the flows must treat it as the remote host it stands for.)
    pub fn is_local(&self) -> bool {
        self.local
            .as_ref()
            .is_some_and(|l| matches!(l.wait, LocalWait::ToTheEnd))
    }

    fn pick_session(&self) -> Option<Arc<Session>> {
        let n = self.sessions.len();
        let start = self.next_session.fetch_add(1, Ordering::Relaxed);
        (0..n)
            .map(|i| &self.sessions[(start + i) % n])
            .find(|s| s.up.load(Ordering::Relaxed))
            .cloned()
    }

    async fn send_on(
        &self,
        session: &Session,
        msg: OwnedMessage,
    ) -> Result<OwnedMessage, LinkError> {
        let buf = self.encode(&msg)?;
        let key = self.key_of_owned(&msg);
        let (tx, rx) = oneshot::channel();
        let request = self.requests.fetch_add(1, Ordering::Relaxed);
        // A request that timed out under this key may still be answered late: only another
        // attempt of that same request may go meanwhile.
        let late_may_come = self
            .timed_out
            .get(&key)
            .is_some_and(|t| !same_request(&t.0, &msg));
        let busy = match self.pending.entry(key.clone()) {
            dashmap::Entry::Occupied(_) => true,
            dashmap::Entry::Vacant(_) if late_may_come => true,
            dashmap::Entry::Vacant(v) => {
                v.insert(Pending {
                    reply: tx,
                    request,
                    answered_by: answered_by(msg.mti()),
                });
                false
            }
        };
        if busy {
            metrics::counter!("cyberswitch_upstream_key_collisions_total", "link" => self.name.to_string())
                .increment(1);
            tracing::warn!(link = %self.name, "another request with the same match key may still be answered: not sent");
            return Err(LinkError::Busy);
        }
        // This request's entry only: once its answer has come, the key may be another's.
        let mut waiting = Waiting {
            link: self,
            key,
            request,
            sent: None,
            ended: false,
        };
        let sender = session.sender.lock().ok().and_then(|s| s.clone());
        let Some(sender) = sender else {
            return Err(LinkError::Down);
        };
        let mti = msg.mti();
        if sender.send(Frame::message(buf.freeze())).await.is_err() {
            return Err(LinkError::Down);
        }
        self.touch();
        self.metrics.messages.count(Direction::Out, mti);
        self.metrics.in_flight.increment(1.0);
        waiting.sent = Some(msg);
        let started = Instant::now();
        let outcome = tokio::time::timeout(self.config.timeout(), rx).await;
        match outcome {
            Ok(Ok(answer)) => {
                waiting.ended = true;
                self.metrics.latency.record(started.elapsed().as_secs_f64());
                Ok(answer)
            }
            _ => {
                self.count_timeout();
                Err(LinkError::Timeout)
            }
        }
    }

    fn touch(&self) {
        let ms = self.started.elapsed().as_millis() as u64; // ok: u64 millis outlast the process
        self.last_activity_ms.store(ms, Ordering::Relaxed);
    }

    fn idle_for(&self) -> Duration {
        let now = self.started.elapsed().as_millis() as u64; // ok: as above
        Duration::from_millis(now.saturating_sub(self.last_activity_ms.load(Ordering::Relaxed)))
    }

    /// The configured match key: the MTI class and the values of the configured fields.
    fn match_key(&self, class: u8, field: impl Fn(u16) -> Option<Vec<u8>>) -> MatchKey {
        self.config
            .match_key
            .iter()
            .map(|k| match *k {
                MatchField::MtiClass => vec![class],
                MatchField::Field(n) => field(n).unwrap_or_default(),
            })
            .collect()
    }

    fn key_of_owned(&self, msg: &OwnedMessage) -> MatchKey {
        self.match_key(msg.mti().class(), |n| msg.get(n).map(<[u8]>::to_vec))
    }

    fn key_of(&self, msg: &Message<'_>) -> MatchKey {
        self.match_key(msg.mti().class(), |n| msg.text(n).map(|v| v.into_owned()))
    }

    /// An answer (or a request from upstream) arrived on a session.
    fn on_message(&self, bytes: &[u8], reply: &mpsc::Sender<Frame>) {
        self.touch();
        let msg = match self.config.profile.spec.decode(bytes) {
            Ok(m) => m,
            Err(e) => {
                metrics::counter!("cyberswitch_decode_errors_total", "link" => self.name.to_string(), "reason" => e.label()).increment(1);
                tracing::warn!(link = %self.name, error = %e, "undecodable message from upstream");
                return;
            }
        };
        self.metrics.messages.count(Direction::In, msg.mti());
        if !msg.mti().is_response() {
            self.answer_upstream_request(&msg, reply);
            return;
        }
        let key = self.key_of(&msg);
        let mti = msg.mti();
        if let Some((_, p)) = self
            .pending
            .remove_if(&key, |_, p| answers(mti, p.answered_by))
        {
            let _ = p.reply.send(msg.to_owned_message());
        } else if let Some((_, (request, _))) = self
            .timed_out
            .remove_if(&key, |_, (r, _)| answers(mti, answered_by(r.mti())))
        {
            report_late(
                self.late.as_ref(),
                &self.name,
                request,
                msg.to_owned_message(),
            );
        } else {
            metrics::counter!("cyberswitch_unmatched_answers_total", "link" => self.name.to_string()).increment(1);
            tracing::warn!(link = %self.name, mti = %msg.mti(), stan = ?msg.stan(), "answer matches no request");
        }
    }

    /// Upstream hosts may echo or sign on towards us: answer network management, ignore the rest.
    fn answer_upstream_request(&self, msg: &Message<'_>, reply: &mpsc::Sender<Frame>) {
        if msg.mti().class() != 8 {
            tracing::warn!(link = %self.name, mti = %msg.mti(), "unexpected request from upstream ignored");
            return;
        }
        let mut answer = OwnedMessage::new(msg.mti().response());
        for n in [7, 11, 41, 70] {
            answer.copy_from(msg, n);
        }
        answer.set_code(ResponseCode::Approved);
        let mut buf = BytesMut::new();
        if self.config.profile.spec.encode(&answer, &mut buf).is_ok() {
            let _ = reply.try_send(Frame::message(buf.freeze()));
        }
    }

    /// 0800 network management request (001 sign-on, 301 echo).
    fn network_message(&self, code: &str) -> OwnedMessage {
        let mut m = self.own_message(*b"0800");
        m.set(70, code.as_bytes());
        m
    }

    /// A request of the switch's own to this host (network management, reconciliation):
    /// transmission time, a STAN of this link's and the switch's terminal id, which are what
    /// answers are matched by.
    pub fn own_message(&self, mti: [u8; 4]) -> OwnedMessage {
        let mut m = OwnedMessage::new(Mti(mti));
        m.set(7, crate::clock::transmission_time().as_bytes())
            .set_number(11, u64::from(self.next_stan()), 6)
            .set(41, self.terminal_id.as_bytes());
        m
    }
}

/// An answer that came after its request timed out: counted, logged, and handed to the
/// link's [`LateAnswers`].
/// A request waiting for its answer. Whatever ends the wait — the answer, a timeout, the
/// link down, or the caller no longer waiting (its future dropped: an admin call cut off) —
/// the request's own pending entry goes, and a request that was sent and got no answer is
/// remembered as timed out: its key is free again, and a late answer is recognised (a late
/// approval of a money request reversed) instead of holding the key for ever.
struct Waiting<'a> {
    link: &'a Link,
    key: MatchKey,
    request: u64,
    /// The request, once sent.
    sent: Option<OwnedMessage>,
    /// Answered.
    ended: bool,
}

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        let link = self.link;
        if self.sent.is_some() {
            link.metrics.in_flight.decrement(1.0);
        }
        if self.ended {
            return; // the reader took the entry with the answer
        }
        let request = self.request;
        link.pending
            .remove_if(&self.key, |_, p| p.request == request);
        if let Some(msg) = self.sent.take() {
            link.timed_out
                .insert(self.key.clone(), (msg, Instant::now()));
        }
    }
}

fn report_late(late: &dyn LateAnswers, link: &str, request: OwnedMessage, answer: OwnedMessage) {
    metrics::counter!("cyberswitch_late_answers_total", "link" => link.to_string()).increment(1);
    let stan = answer
        .get(11)
        .and_then(|s| std::str::from_utf8(s).ok())
        .and_then(|s| s.parse::<u32>().ok());
    tracing::warn!(link, mti = %answer.mti(), stan = ?stan, "answer after timeout");
    late.late_answer(link, request, answer);
}

#[path = "link_session.rs"]
mod session;
use session::{run_session, sweep_timed_out};

#[cfg(test)]
#[path = "link_tests.rs"]
mod tests;
