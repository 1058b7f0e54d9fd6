//! One accepted connection, served by one task: the same poll reads its frames, drives the
//! requests in flight and writes their answers (issue 24, "fewer hand-offs"). A request costs
//! no task of its own, no channel to a writer task and no timer: its future lives in the
//! connection's set, and when it finishes, its answers are written by the poll that saw it
//! finish, together with every other answer ready by then (one write system call for a
//! burst). One timer serves the connection, moved only when it fires: the idle timeout (no
//! frame for that long while the connection may read) and the write timeout (a batch the
//! socket has not taken whole for that long).
//!
//! The price: one connection's requests share one thread at a time. A request's own work is
//! short (it mostly waits for the journal and the hosts), so one connection still carries
//! some 20,000 requests a second; a VAN that needs more opens more connections.
//!
//! What a money path needs from this file is that every answer is accounted for, once:
//! written whole to the socket ([`Service::delivered`]) or not ([`Service::undelivered`]), and
//! that a request once read always runs to its end — when the connection ends first, its
//! requests still in flight move to a task of their own, and their answers are undelivered.

use std::collections::VecDeque;
use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use futures::Stream;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::time::{Instant, Sleep};
use tokio_util::codec::FramedRead;
use tokio_util::sync::{CancellationToken, WaitForCancellationFutureOwned};

use super::framing::{Batch, Frame, FrameCodec, MAX_BATCH};
use super::request_set::RequestSet;
use super::server::{BoxFuture, Drain, ServerLimits, Service, WorkGuard};

/// After the peer went or the server stopped, how long answers already computed may take to
/// be written before they count as undelivered.
const LAST_WRITES: Duration = Duration::from_secs(5);

/// Serve one connection until it ends; requests still in flight then finish on their own.
pub(super) async fn serve<S>(
    name: &Arc<str>,
    stream: S,
    peer: Arc<str>,
    limits: &ServerLimits,
    service: Arc<dyn Service>,
    stop: CancellationToken,
    drain: Drain,
) where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let mut conn = Connection::new(name, stream, peer, limits, service, &stop, drain);
    let ended = std::future::poll_fn(|cx| conn.poll_serving(cx)).await;
    match ended {
        Ended::Drain => {
            // Requests in flight are answered and their answers written, unless the drain is
            // abandoned or the socket fails first.
            std::future::poll_fn(|cx| conn.poll_draining(cx)).await;
        }
        Ended::Peer | Ended::Stop => {
            // Answers already computed go out; those of requests finishing from now on are
            // undelivered.
            let last = std::future::poll_fn(|cx| conn.poll_last_writes(cx));
            let _ = tokio::time::timeout(LAST_WRITES, last).await;
        }
    }
    // Dropping it accounts for what it still holds (see its `Drop`).
    drop(conn);
}

/// Why a connection stopped reading.
#[derive(PartialEq)]
enum Ended {
    /// The peer closed, a framing error, an idle timeout, a write that failed or timed out:
    /// answers still to come are undelivered.
    Peer,
    /// The server stops at once.
    Stop,
    /// A graceful stop: answers still to come are written.
    Drain,
}

/// A request read from the connection and not yet answered.
struct Request {
    state: RequestState,
    /// The request's framing (header, TPDU) without its message: what its answers reply to.
    framing: Frame,
    /// Its place in what a graceful stop waits for.
    _working: WorkGuard,
}

enum RequestState {
    /// Read, not yet handed to the service: the service's `call` runs at the first poll,
    /// inside the same guard against panics as the rest of the request.
    Read {
        message: Bytes,
        peer: Arc<str>,
        service: Arc<dyn Service>,
    },
    Running(BoxFuture<Vec<Bytes>>),
    Done,
}

impl Future for Request {
    type Output = (Frame, Vec<Bytes>);

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.get_mut();
        // A request that panics takes only itself down, not the connection's other requests
        // (as when each request had a task of its own): it answers nothing.
        let polled = std::panic::catch_unwind(AssertUnwindSafe(|| {
            if let RequestState::Read { .. } = this.state {
                if let RequestState::Read {
                    message,
                    peer,
                    service,
                } = std::mem::replace(&mut this.state, RequestState::Done)
                {
                    this.state = RequestState::Running(service.call(message, peer));
                }
            }
            match &mut this.state {
                RequestState::Running(answers) => answers.as_mut().poll(cx),
                _ => Poll::Ready(Vec::new()),
            }
        }));
        match polled {
            Ok(Poll::Pending) => Poll::Pending,
            Ok(Poll::Ready(answers)) => {
                this.state = RequestState::Done;
                Poll::Ready((this.framing.clone(), answers))
            }
            Err(_) => {
                this.state = RequestState::Done;
                tracing::error!("handling a request panicked: it is not answered");
                Poll::Ready((this.framing.clone(), Vec::new()))
            }
        }
    }
}

struct Connection<S> {
    name: Arc<str>,
    peer: Arc<str>,
    /// The stream, read through the framing and written through `get_mut`.
    frames: FramedRead<S, FrameCodec>,
    codec: FrameCodec,
    service: Arc<dyn Service>,
    requests: RequestSet<Request>,
    max_in_flight: usize,
    work: super::server::WorkCount,
    /// Answers (and keep-alives) waiting for the next batch.
    queued: VecDeque<Frame>,
    batch: Batch,
    /// A batch is being written: the socket has not taken it whole yet.
    writing: bool,
    /// Since when the batch being written has been waiting for the socket.
    write_waiting_since: Option<Instant>,
    /// A write failed or timed out: nothing more is written.
    broken: bool,
    /// The last time a frame was read (or reading resumed after a pause).
    last_read: Instant,
    /// Reading is paused for back-pressure.
    paused: bool,
    timeout: Duration,
    /// The one timer: armed at the earliest deadline, and moved only when it fires.
    timer: Pin<Box<Sleep>>,
    stop: Pin<Box<WaitForCancellationFutureOwned>>,
    draining: Pin<Box<WaitForCancellationFutureOwned>>,
    abandon: Pin<Box<WaitForCancellationFutureOwned>>,
}

impl<S> Connection<S>
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    fn new(
        name: &Arc<str>,
        stream: S,
        peer: Arc<str>,
        limits: &ServerLimits,
        service: Arc<dyn Service>,
        stop: &CancellationToken,
        drain: Drain,
    ) -> Connection<S> {
        let codec = FrameCodec::new(limits.framing, limits.max_frame);
        let now = Instant::now();
        Connection {
            name: name.clone(),
            peer,
            // A small first read buffer: most connections are idle most of the time, and the
            // buffer grows for a burst (bounded by the maximum frame) only when one comes.
            frames: FramedRead::with_capacity(stream, codec.clone(), 512),
            codec,
            service,
            requests: RequestSet::new(),
            max_in_flight: limits.max_in_flight,
            work: drain.work.clone(),
            queued: VecDeque::new(),
            // Over TLS a write hands the bytes to the TLS layer and only a flush puts them on
            // the socket: each frame is flushed before it counts as written.
            batch: match limits.tls.is_some() {
                true => Batch::flushing_each_frame(),
                false => Batch::default(),
            },
            writing: false,
            write_waiting_since: None,
            broken: false,
            last_read: now,
            paused: false,
            timeout: limits.idle_timeout,
            timer: Box::pin(tokio::time::sleep_until(now + limits.idle_timeout)),
            stop: Box::pin(stop.clone().cancelled_owned()),
            draining: Box::pin(drain.draining.cancelled_owned()),
            abandon: Box::pin(drain.abandon.cancelled_owned()),
        }
    }

    /// Read, answer and write until the connection ends, and say why.
    fn poll_serving(&mut self, cx: &mut Context<'_>) -> Poll<Ended> {
        if self.stop.as_mut().poll(cx).is_ready() {
            return Poll::Ready(Ended::Stop);
        }
        if self.draining.as_mut().poll(cx).is_ready() {
            return Poll::Ready(Ended::Drain);
        }
        loop {
            self.collect_answers(cx, false);
            if self.poll_write(cx).is_err() {
                return Poll::Ready(Ended::Peer);
            }
            if self.requests.len() + self.queued.len() >= self.max_in_flight {
                // Back-pressure: no new request is read while this many are open or answered
                // and not yet written (a peer that stops reading stops being read), and the
                // pause does not count as idleness.
                self.paused = true;
                break;
            }
            if self.paused {
                self.paused = false;
                self.last_read = Instant::now();
            }
            let frame = match Pin::new(&mut self.frames).poll_next(cx) {
                Poll::Pending => break,
                Poll::Ready(None) => return Poll::Ready(Ended::Peer),
                Poll::Ready(Some(Err(e))) => {
                    metrics::counter!("cyberswitch_frame_errors_total", "link" => self.name.to_string(), "reason" => e.label())
                        .increment(1);
                    tracing::warn!(listener = %self.name, peer = %self.peer, error = %e, "framing error; closing");
                    return Poll::Ready(Ended::Peer);
                }
                Poll::Ready(Some(Ok(frame))) => frame,
            };
            self.last_read = Instant::now();
            self.take_request(frame);
        }
        match self.poll_timer(cx, true) {
            Some(Expired::Idle) => {
                metrics::counter!("cyberswitch_idle_timeouts_total", "listener" => self.name.to_string())
                    .increment(1);
                tracing::info!(listener = %self.name, peer = %self.peer, "idle timeout; closing");
                Poll::Ready(Ended::Peer)
            }
            Some(Expired::Write) => {
                tracing::debug!(listener = %self.name, "the peer takes nothing; closing");
                self.broken = true;
                Poll::Ready(Ended::Peer)
            }
            None => Poll::Pending,
        }
    }

    /// A graceful stop: no more reading; done once every request in flight is answered and
    /// written, or once the drain is abandoned or a write fails.
    fn poll_draining(&mut self, cx: &mut Context<'_>) -> Poll<()> {
        if self.abandon.as_mut().poll(cx).is_ready() {
            return Poll::Ready(());
        }
        self.collect_answers(cx, false);
        if self.poll_write(cx).is_err() {
            return Poll::Ready(());
        }
        if self.requests.is_empty() && self.queued.is_empty() && !self.writing {
            return Poll::Ready(());
        }
        match self.poll_timer(cx, false) {
            Some(_) => Poll::Ready(()),
            None => Poll::Pending,
        }
    }

    /// The peer went or the server stops: write what is already answered; what is answered
    /// from now on is undelivered. Done once nothing is left to write.
    fn poll_last_writes(&mut self, cx: &mut Context<'_>) -> Poll<()> {
        if self.abandon.as_mut().poll(cx).is_ready() {
            return Poll::Ready(());
        }
        self.collect_answers(cx, true);
        if self.poll_write(cx).is_err() || (self.queued.is_empty() && !self.writing) {
            return Poll::Ready(());
        }
        Poll::Pending
    }

    /// A frame read: a keep-alive is echoed, a request begins.
    fn take_request(&mut self, frame: Frame) {
        if frame.is_keep_alive() {
            self.queued.push_back(Frame::keep_alive());
            return;
        }
        self.requests.push(Request {
            state: RequestState::Read {
                message: frame.message.clone(),
                peer: self.peer.clone(),
                service: self.service.clone(),
            },
            framing: frame.reply(Bytes::new()),
            _working: self.work.enter(),
        });
    }

    /// Poll the requests in flight; queue the answers of those done (or, once the peer is
    /// `gone`, count them undelivered).
    fn collect_answers(&mut self, cx: &mut Context<'_>, gone: bool) {
        let (service, queued) = (&self.service, &mut self.queued);
        self.requests.poll_done(cx, |(framing, answers)| {
            for answer in answers {
                if gone {
                    service.undelivered(answer);
                } else {
                    queued.push_back(Frame {
                        message: answer,
                        ..framing.clone()
                    });
                }
            }
        });
    }

    /// Write queued frames, a batch at a time, as far as the socket takes them. `Err` once a
    /// write failed: what the socket took whole is delivered, the rest of that batch not.
    fn poll_write(&mut self, cx: &mut Context<'_>) -> Result<(), ()> {
        if self.broken {
            return Err(());
        }
        loop {
            if !self.writing {
                if self.queued.is_empty() {
                    return Ok(());
                }
                self.batch.clear();
                let n = self.queued.len().min(MAX_BATCH);
                for frame in self.queued.drain(..n) {
                    self.batch.add(&mut self.codec, frame);
                }
                self.writing = true;
            }
            let written = match self.batch.poll_write_to(cx, self.frames.get_mut()) {
                Poll::Pending => {
                    if self.write_waiting_since.is_none() {
                        self.write_waiting_since = Some(Instant::now());
                    }
                    return Ok(());
                }
                Poll::Ready(r) => r,
            };
            self.writing = false;
            self.write_waiting_since = None;
            self.account_batch();
            if let Err(e) = written {
                tracing::debug!(listener = %self.name, error = %e, "write failed; closing");
                self.broken = true;
                return Err(());
            }
        }
    }

    /// Which deadline passed, if one did; else the timer is armed for the earliest one.
    fn poll_timer(&mut self, cx: &mut Context<'_>, reading: bool) -> Option<Expired> {
        loop {
            let idle_at = (reading && !self.paused).then(|| self.last_read + self.timeout);
            let write_at = self.write_waiting_since.map(|t| t + self.timeout);
            let next = match (idle_at, write_at) {
                (Some(i), Some(w)) => i.min(w),
                (Some(d), None) | (None, Some(d)) => d,
                (None, None) => return None,
            };
            if next < self.timer.deadline() {
                self.timer.as_mut().reset(next);
            }
            if self.timer.as_mut().poll(cx).is_pending() {
                return None;
            }
            let now = Instant::now();
            if write_at.is_some_and(|w| w <= now) {
                return Some(Expired::Write);
            }
            if idle_at.is_some_and(|i| i <= now) {
                return Some(Expired::Idle);
            }
            // Fired for a deadline that has since moved on: armed again for the next.
            self.timer.as_mut().reset(next);
        }
    }
}

impl<S> Connection<S> {
    /// The batch is over (written, or given up): say which of its answers the socket took.
    fn account_batch(&mut self) {
        if !self.batch.written().is_empty() {
            self.service.delivered(self.batch.written());
        }
        for answer in self.batch.unwritten() {
            self.service.undelivered(answer);
        }
    }
}

/// The connection is over (served to its end, or dropped by a panic or the runtime's stop):
/// what is still queued or half-written is undelivered, the socket closes, and requests still
/// in flight finish on a task of their own, their answers undelivered.
impl<S> Drop for Connection<S> {
    fn drop(&mut self) {
        if self.writing {
            self.writing = false;
            self.account_batch();
        }
        for frame in std::mem::take(&mut self.queued) {
            if !frame.is_keep_alive() {
                self.service.undelivered(frame.message);
            }
        }
        let requests = std::mem::take(&mut self.requests);
        if requests.is_empty() {
            return;
        }
        let service = self.service.clone();
        // Without a runtime (it is shutting down) nothing can drive them: recovery at the
        // next start finds their transactions open, as after a crash.
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            runtime.spawn(requests.finish(move |(_, answers)| {
                for answer in answers {
                    service.undelivered(answer);
                }
            }));
        }
    }
}

/// A deadline of the connection's timer that passed.
enum Expired {
    /// No frame for the idle timeout while the connection could read.
    Idle,
    /// The socket took nothing of a batch for the timeout: the peer stopped reading.
    Write,
}
