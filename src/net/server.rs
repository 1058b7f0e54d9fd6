//! TCP listeners: one task per connection, requests pipelined (answers in completion order),
//! a bound on requests in flight per connection (reading pauses beyond it), an idle timeout,
//! keep-alive frames echoed, a cap on connections, and TLS when configured (the handshake in
//! the connection's own task, bounded in time). Whatever one connection does, the
//! others are not affected: a framing error closes that connection only.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures::StreamExt;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpListener;
use tokio::sync::{mpsc, Notify, Semaphore};
use tokio_util::codec::FramedRead;
use tokio_util::sync::CancellationToken;

use super::framing::{send_batch, Batch, Frame, FrameCodec, Framing};

/// What a server does with one request message: zero, one or more answers (a simulator may
/// stay silent or answer twice; the switch answers once).
pub trait Service: Send + Sync + 'static {
    fn call(&self, request: Bytes, peer: Arc<str>) -> BoxFuture<Vec<Bytes>>;

    /// An answer that could not be delivered: the peer had gone, the write failed, or the
    /// server stopped before writing it.
    fn undelivered(&self, _answer: Bytes) {}

    /// Answers written to the peer's socket (the write returned), one call per write.
    fn delivered(&self, _answers: &[Bytes]) {}
}

pub type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send + 'static>>;

/// Work in progress (connections, requests, follow-ups) that a graceful stop waits for.
#[derive(Clone, Default)]
pub struct WorkCount(Arc<WorkInner>);

#[derive(Default)]
struct WorkInner {
    n: AtomicUsize,
    idle: Notify,
}

/// One piece of work in progress; dropping it says it is done.
pub struct WorkGuard(Arc<WorkInner>);

impl WorkCount {
    pub fn enter(&self) -> WorkGuard {
        self.0.n.fetch_add(1, Ordering::SeqCst);
        WorkGuard(self.0.clone())
    }

    /// How much is in progress now.
    pub fn count(&self) -> usize {
        self.0.n.load(Ordering::SeqCst)
    }

    /// Resolves once nothing is in progress.
    pub async fn idle(&self) {
        loop {
            let idle = self.0.idle.notified();
            tokio::pin!(idle);
            idle.as_mut().enable();
            if self.count() == 0 {
                return;
            }
            idle.await;
        }
    }
}

impl Drop for WorkGuard {
    fn drop(&mut self) {
        if self.0.n.fetch_sub(1, Ordering::SeqCst) == 1 {
            self.0.idle.notify_waiters();
        }
    }
}

/// A listener's part in a graceful stop (SIGTERM, Ctrl-C): once `draining`, it accepts no
/// connection and its connections read no new request, but requests in flight are answered
/// and their answers written; once `abandon`ed (the drain's time is up), connections write
/// nothing more and hand what they still hold to [`Service::undelivered`]. `work` counts the
/// connections and requests still going.
#[derive(Clone, Default)]
pub struct Drain {
    pub draining: CancellationToken,
    pub abandon: CancellationToken,
    pub work: WorkCount,
}

/// Listener limits.
#[derive(Debug, Clone)]
pub struct ServerLimits {
    pub framing: Framing,
    pub max_frame: usize,
    pub max_connections: usize,
    pub max_connections_per_peer: usize,
    pub max_in_flight: usize,
    pub idle_timeout: Duration,
    /// TLS on every connection (a handshake first, bounded in time); `None`: plain TCP.
    pub tls: Option<Arc<super::tls::ServerTls>>,
}

/// Connections open per peer address (SPEC §10): one address may not take every place of a
/// listener. An address is in the map only while it has a connection open.
#[derive(Clone, Default)]
struct PeerCounts(Arc<dashmap::DashMap<std::net::IpAddr, usize>>);

impl PeerCounts {
    /// A place for one more connection from `ip`, if it has fewer than `max` open.
    fn enter(&self, ip: std::net::IpAddr, max: usize) -> Option<PeerPlace> {
        let mut open = self.0.entry(ip).or_insert(0);
        if *open >= max {
            return None;
        }
        *open += 1;
        Some(PeerPlace {
            counts: self.clone(),
            ip,
        })
    }
}

/// One connection's place in [`PeerCounts`], given back when dropped.
struct PeerPlace {
    counts: PeerCounts,
    ip: std::net::IpAddr,
}

impl Drop for PeerPlace {
    fn drop(&mut self) {
        if let Some(mut open) = self.counts.0.get_mut(&self.ip) {
            *open = open.saturating_sub(1);
        }
        self.counts.0.remove_if(&self.ip, |_, open| *open == 0);
    }
}

/// Accept connections until `stop` is cancelled.
pub async fn serve(
    name: Arc<str>,
    listener: TcpListener,
    limits: ServerLimits,
    service: Arc<dyn Service>,
    stop: CancellationToken,
) {
    serve_draining(name, listener, limits, service, stop, Drain::default()).await
}

/// As [`serve`], until `drain` begins too (a graceful stop: see [`Drain`]).
pub async fn serve_draining(
    name: Arc<str>,
    listener: TcpListener,
    limits: ServerLimits,
    service: Arc<dyn Service>,
    stop: CancellationToken,
    drain: Drain,
) {
    let connections = Arc::new(Semaphore::new(limits.max_connections));
    let peers = PeerCounts::default();
    loop {
        let accepted = tokio::select! {
            _ = stop.cancelled() => return,
            _ = drain.draining.cancelled() => return,
            a = listener.accept() => a,
        };
        let (stream, peer) = match accepted {
            Ok(x) => x,
            Err(e) => {
                // Out of file descriptors and the like: back off briefly, keep serving.
                tracing::warn!(listener = %name, error = %e, "accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let Ok(permit) = connections.clone().try_acquire_owned() else {
            metrics::counter!("cyberswitch_connections_refused_total", "listener" => name.to_string(), "why" => "listener")
                .increment(1);
            tracing::warn!(listener = %name, %peer, "connection limit reached; closing");
            drop(stream);
            continue;
        };
        let Some(place) = peers.enter(peer.ip(), limits.max_connections_per_peer) else {
            metrics::counter!("cyberswitch_connections_refused_total", "listener" => name.to_string(), "why" => "peer")
                .increment(1);
            tracing::warn!(listener = %name, %peer, "connection limit of this address reached; closing");
            drop(stream);
            continue;
        };
        let _ = stream.set_nodelay(true);
        let (name, limits, service, stop, drain) = (
            name.clone(),
            limits.clone(),
            service.clone(),
            stop.clone(),
            drain.clone(),
        );
        let working = drain.work.enter();
        tokio::spawn(async move {
            let _working = working;
            let peer: Arc<str> = peer.to_string().into();
            metrics::gauge!("cyberswitch_connections", "listener" => name.to_string())
                .increment(1.0);
            match &limits.tls {
                None => connection(&name, stream, peer, &limits, service, stop, drain).await,
                Some(tls) => {
                    // The handshake happens here, in the connection's own task, so that a
                    // slow or silent peer delays no one else's accept.
                    let handshake = tokio::select! {
                        _ = stop.cancelled() => None,
                        _ = drain.draining.cancelled() => None,
                        h = tls.accept(stream) => Some(h),
                    };
                    match handshake {
                        Some(Ok(stream)) => {
                            connection(&name, stream, peer, &limits, service, stop, drain).await
                        }
                        Some(Err(e)) => {
                            metrics::counter!("cyberswitch_tls_handshake_failures_total", "listener" => name.to_string())
                                .increment(1);
                            tracing::info!(listener = %name, %peer, error = %e, "TLS handshake failed; closing");
                        }
                        None => {}
                    }
                }
            }
            metrics::gauge!("cyberswitch_connections", "listener" => name.to_string())
                .decrement(1.0);
            drop((permit, place));
        });
    }
}

/// Why a connection stopped reading.
#[derive(PartialEq)]
enum Ended {
    /// The peer closed, a framing error, an idle timeout: answers still to come are
    /// undelivered.
    Peer,
    /// The server stops at once.
    Stop,
    /// A graceful stop: answers still to come are written.
    Drain,
}

async fn connection<S>(
    name: &str,
    stream: S,
    peer: Arc<str>,
    limits: &ServerLimits,
    service: Arc<dyn Service>,
    stop: CancellationToken,
    drain: Drain,
) where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let codec = FrameCodec::new(limits.framing, limits.max_frame);
    // A small first read buffer: most connections are idle most of the time, and the buffer
    // grows for a burst (bounded by the maximum frame) only when one comes.
    let (reading, mut writing) = tokio::io::split(stream);
    let mut frames = FramedRead::with_capacity(reading, codec.clone(), 512);
    let mut codec = codec;
    // Answers come back through a channel so that the reader keeps reading while earlier
    // requests are still being processed.
    let (tx, mut rx) = mpsc::channel::<Frame>(limits.max_in_flight * 2);
    // Set when the peer has gone: answers produced after that count as undelivered.
    let gone = CancellationToken::new();
    let writer_service = service.clone();
    let abandon = drain.abandon.clone();
    let tls = limits.tls.is_some();
    // A peer that takes nothing written to it for this long has stopped reading: what it
    // did not take is undelivered, and the connection closes.
    let write_timeout = limits.idle_timeout;
    // Set when the writer gave up: the reader stops too.
    let writer_done = CancellationToken::new();
    let writer_gave_up = writer_done.clone();
    let writer = tokio::spawn(async move {
        let mut batch = if tls {
            Batch::flushing_each_frame()
        } else {
            Batch::default()
        };
        loop {
            // A batch being written is finished; once abandoned, no new one begins.
            let next = tokio::select! {
                biased;
                _ = abandon.cancelled() => None,
                f = rx.recv() => f,
            };
            let Some(frame) = next else { break };
            let write = send_batch(&mut writing, &mut codec, &mut rx, frame, &mut batch);
            let sent = tokio::select! {
                biased;
                r = tokio::time::timeout(write_timeout, write) => r.unwrap_or_else(|_| {
                    Err(io::Error::new(io::ErrorKind::TimedOut, "the peer takes nothing").into())
                }),
                // Past the drain, a write stuck on a peer that does not read is given up too.
                _ = abandon.cancelled() => Err(io::Error::other("stopping").into()),
            };
            // What the socket took whole counts as delivered even when a later frame of the
            // batch failed: the peer may hold it.
            writer_service.delivered(batch.written());
            for answer in batch.unwritten() {
                writer_service.undelivered(answer);
            }
            if let Err(e) = sent {
                tracing::debug!(error = %e, "write failed; closing");
                break;
            }
        }
        writer_gave_up.cancel();
        // Whatever is still queued will never be written.
        rx.close();
        while let Some(rest) = rx.recv().await {
            if !rest.is_keep_alive() {
                writer_service.undelivered(rest.message);
            }
        }
    });
    let in_flight = Arc::new(Semaphore::new(limits.max_in_flight));
    let ended = loop {
        // Back-pressure: no new request is read while this connection has too many open.
        let permit = tokio::select! {
            _ = stop.cancelled() => break Ended::Stop,
            _ = drain.draining.cancelled() => break Ended::Drain,
            _ = writer_done.cancelled() => break Ended::Peer,
            p = in_flight.clone().acquire_owned() => match p { Ok(p) => p, Err(_) => break Ended::Stop },
        };
        let next = tokio::select! {
            _ = stop.cancelled() => break Ended::Stop,
            _ = drain.draining.cancelled() => break Ended::Drain,
            _ = writer_done.cancelled() => break Ended::Peer,
            n = tokio::time::timeout(limits.idle_timeout, frames.next()) => n,
        };
        let frame = match next {
            Err(_) => {
                metrics::counter!("cyberswitch_idle_timeouts_total", "listener" => name.to_string())
                    .increment(1);
                tracing::info!(listener = name, %peer, "idle timeout; closing");
                break Ended::Peer;
            }
            Ok(None) => break Ended::Peer,
            Ok(Some(Err(e))) => {
                metrics::counter!("cyberswitch_frame_errors_total", "link" => name.to_string(), "reason" => e.label())
                    .increment(1);
                tracing::warn!(listener = name, %peer, error = %e, "framing error; closing");
                break Ended::Peer;
            }
            Ok(Some(Ok(frame))) => frame,
        };
        if frame.is_keep_alive() {
            if tx.send(Frame::keep_alive()).await.is_err() {
                break Ended::Peer;
            }
            continue;
        }
        let (service, tx, peer, gone) = (service.clone(), tx.clone(), peer.clone(), gone.clone());
        let working = drain.work.enter();
        tokio::spawn(async move {
            let _working = working;
            let answers = service.call(frame.message.clone(), peer).await;
            for answer in answers {
                if gone.is_cancelled() {
                    service.undelivered(answer);
                } else if let Err(e) = tx.send(frame.reply(answer)).await {
                    service.undelivered(e.0.message);
                }
            }
            drop(permit);
        });
    };
    drop(tx);
    if ended == Ended::Drain {
        // Requests in flight are answered and their answers written; the writer ends once
        // they are all done (or the drain is abandoned), then the connection closes.
        let _ = writer.await;
        return;
    }
    gone.cancel();
    // Let answers already computed go out, then close.
    let _ = tokio::time::timeout(Duration::from_secs(5), writer).await;
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::AsyncWriteExt;

    /// Answers every request with `size` bytes; counts what became of the answers.
    #[derive(Default)]
    struct Big {
        size: usize,
        delivered: AtomicUsize,
        undelivered: AtomicUsize,
    }

    impl Service for Big {
        fn call(&self, _request: Bytes, _peer: Arc<str>) -> BoxFuture<Vec<Bytes>> {
            let answer = Bytes::from(vec![b'a'; self.size]);
            Box::pin(async move { vec![answer] })
        }
        fn undelivered(&self, _answer: Bytes) {
            self.undelivered.fetch_add(1, Ordering::SeqCst);
        }
        fn delivered(&self, answers: &[Bytes]) {
            self.delivered.fetch_add(answers.len(), Ordering::SeqCst);
        }
    }

    /// A peer that sends requests and never reads its answers: once the socket takes nothing
    /// more for the idle timeout, the connection is given up, and every answer is accounted
    /// for — delivered (taken by the socket) or undelivered (undone) — instead of a writer
    /// waiting on it for ever with its approvals neither.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_peer_that_never_reads_is_given_up_and_every_answer_accounted_for() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let service = Arc::new(Big {
            size: 32 * 1024,
            ..Big::default()
        });
        let limits = ServerLimits {
            framing: "binary2".parse().unwrap(),
            max_frame: 60_000,
            max_connections: 4,
            max_connections_per_peer: 4,
            max_in_flight: 2_000,
            idle_timeout: Duration::from_millis(500),
            tls: None,
        };
        let stop = CancellationToken::new();
        tokio::spawn(serve(
            "test".into(),
            listener,
            limits,
            service.clone(),
            stop.clone(),
        ));
        let mut peer = tokio::net::TcpStream::connect(addr).await.unwrap();
        // 1,000 answers of 32 KiB: more than any socket buffers hold.
        let requests = 1_000;
        let mut out = Vec::new();
        for _ in 0..requests {
            out.extend_from_slice(&[0, 4]);
            out.extend_from_slice(b"ping");
        }
        peer.write_all(&out).await.unwrap();
        let accounted = || {
            service.delivered.load(Ordering::SeqCst) + service.undelivered.load(Ordering::SeqCst)
        };
        for _ in 0..600 {
            if accounted() == requests {
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        assert_eq!(accounted(), requests, "every answer delivered or undone");
        assert!(
            service.undelivered.load(Ordering::SeqCst) > 0,
            "a peer that reads nothing cannot have taken them all"
        );
        stop.cancel();
        drop(peer);
    }
}
