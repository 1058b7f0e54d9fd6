//! TCP listeners: one task per connection (`connection.rs`: it reads, drives the requests and
//! writes their answers), requests pipelined (answers in completion order),
//! a bound on requests in flight per connection (reading pauses beyond it), an idle timeout,
//! keep-alive frames echoed, a cap on connections, and TLS when configured (the handshake in
//! the connection's own task, bounded in time). Whatever one connection does, the
//! others are not affected: a framing error closes that connection only.

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use tokio::net::TcpListener;
use tokio::sync::{Notify, Semaphore};
use tokio_util::sync::CancellationToken;

use super::framing::Framing;

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
                None => {
                    super::connection::serve(&name, stream, peer, &limits, service, stop, drain)
                        .await
                }
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
                            super::connection::serve(
                                &name, stream, peer, &limits, service, stop, drain,
                            )
                            .await
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

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::AsyncWriteExt;

    /// Answers every request with `size` bytes; counts what became of the answers.
    #[derive(Default)]
    struct Big {
        size: usize,
        calls: AtomicUsize,
        delivered: AtomicUsize,
        undelivered: AtomicUsize,
    }

    impl Service for Big {
        fn call(&self, _request: Bytes, _peer: Arc<str>) -> BoxFuture<Vec<Bytes>> {
            self.calls.fetch_add(1, Ordering::SeqCst);
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

    /// Answers waiting to be written count against the connection's requests in flight: a
    /// peer that stops reading stops being read, instead of its requests being handled (and
    /// their approvals undone) without bound until the write timeout.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_peer_that_never_reads_stops_being_read() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let service = Arc::new(Big {
            size: 32 * 1024,
            ..Big::default()
        });
        let stop = CancellationToken::new();
        tokio::spawn(serve(
            "test".into(),
            listener,
            limits(Duration::from_millis(500)),
            service.clone(),
            stop.clone(),
        ));
        let mut peer = tokio::net::TcpStream::connect(addr).await.unwrap();
        let requests = 3_000;
        let mut out = Vec::new();
        for _ in 0..requests {
            out.extend_from_slice(b"\x00\x04ping");
        }
        // Not all of it may be taken: the server stops reading.
        let _ = tokio::time::timeout(Duration::from_secs(5), peer.write_all(&out)).await;
        let calls = || service.calls.load(Ordering::SeqCst);
        let accounted = || {
            service.delivered.load(Ordering::SeqCst) + service.undelivered.load(Ordering::SeqCst)
        };
        // Given up (the write timeout: something undelivered), every answer accounted for.
        until(|| service.undelivered.load(Ordering::SeqCst) > 0 && accounted() == calls()).await;
        assert!(
            calls() < requests,
            "{} of {requests} requests handled for a peer that reads nothing",
            calls()
        );
        stop.cancel();
        drop(peer);
    }

    fn limits(idle: Duration) -> ServerLimits {
        ServerLimits {
            framing: "binary2".parse().unwrap(),
            max_frame: 60_000,
            max_connections: 4,
            max_connections_per_peer: 4,
            max_in_flight: 16,
            idle_timeout: idle,
            tls: None,
        }
    }

    async fn start(
        service: Arc<dyn Service>,
        idle: Duration,
    ) -> (std::net::SocketAddr, CancellationToken) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let stop = CancellationToken::new();
        tokio::spawn(serve(
            "test".into(),
            listener,
            limits(idle),
            service,
            stop.clone(),
        ));
        (addr, stop)
    }

    /// Holds every request until released; `b"boom"` panics instead.
    #[derive(Default)]
    struct Held {
        started: AtomicUsize,
        finished: AtomicUsize,
        delivered: AtomicUsize,
        undelivered: AtomicUsize,
        release: Notify,
        hold: std::sync::atomic::AtomicBool,
    }

    impl Service for Arc<Held> {
        fn call(&self, request: Bytes, _peer: Arc<str>) -> BoxFuture<Vec<Bytes>> {
            if &request[..] == b"bang" {
                panic!("a service that panics before its future (test)");
            }
            let me = self.clone();
            Box::pin(async move {
                me.started.fetch_add(1, Ordering::SeqCst);
                if &request[..] == b"boom" {
                    panic!("a request that panics (test)");
                }
                if me.hold.load(Ordering::SeqCst) {
                    me.release.notified().await;
                }
                me.finished.fetch_add(1, Ordering::SeqCst);
                vec![request]
            })
        }
        fn undelivered(&self, _answer: Bytes) {
            self.undelivered.fetch_add(1, Ordering::SeqCst);
        }
        fn delivered(&self, answers: &[Bytes]) {
            self.delivered.fetch_add(answers.len(), Ordering::SeqCst);
        }
    }

    async fn until(what: impl Fn() -> bool) {
        for _ in 0..600 {
            if what() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("not within 30 s");
    }

    /// A request read is run to its end even when its peer goes first (its answer is then
    /// undelivered, so that the switch undoes an approval nobody received), instead of being
    /// dropped half-way with the connection.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_request_in_flight_when_its_peer_goes_runs_to_its_end_undelivered() {
        let held = Arc::new(Held::default());
        held.hold.store(true, Ordering::SeqCst);
        let (addr, stop) = start(Arc::new(held.clone()), Duration::from_secs(60)).await;
        let mut peer = tokio::net::TcpStream::connect(addr).await.unwrap();
        peer.write_all(b"\x00\x04ping").await.unwrap();
        until(|| held.started.load(Ordering::SeqCst) == 1).await;
        drop(peer);
        // The connection sees the peer gone and closes; the request is still held.
        tokio::time::sleep(Duration::from_millis(200)).await;
        assert_eq!(held.finished.load(Ordering::SeqCst), 0);
        held.release.notify_waiters();
        until(|| held.undelivered.load(Ordering::SeqCst) == 1).await;
        assert_eq!(held.finished.load(Ordering::SeqCst), 1);
        assert_eq!(held.delivered.load(Ordering::SeqCst), 0);
        stop.cancel();
    }

    /// A request that panics, in its future or in the service's `call` itself, is not
    /// answered, and the connection's other requests are.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_request_that_panics_takes_down_only_itself() {
        let held = Arc::new(Held::default());
        let (addr, stop) = start(Arc::new(held.clone()), Duration::from_secs(60)).await;
        let mut peer = tokio::net::TcpStream::connect(addr).await.unwrap();
        peer.write_all(b"\x00\x04boom\x00\x04bang\x00\x04ping")
            .await
            .unwrap();
        let mut answer = [0u8; 6];
        tokio::io::AsyncReadExt::read_exact(&mut peer, &mut answer)
            .await
            .unwrap();
        assert_eq!(&answer, b"\x00\x04ping");
        assert_eq!(held.started.load(Ordering::SeqCst), 2);
        stop.cancel();
    }

    /// The connection's one timer: a silent peer is closed after the idle timeout, a peer
    /// that keeps sending is not, however many times the timer fires meanwhile.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn only_a_silent_peer_is_closed_for_idleness() {
        let held = Arc::new(Held::default());
        let (addr, stop) = start(Arc::new(held.clone()), Duration::from_secs(2)).await;
        let mut busy = tokio::net::TcpStream::connect(addr).await.unwrap();
        let mut silent = tokio::net::TcpStream::connect(addr).await.unwrap();
        let mut answer = [0u8; 6];
        for _ in 0..30 {
            busy.write_all(b"\x00\x04ping").await.unwrap();
            tokio::io::AsyncReadExt::read_exact(&mut busy, &mut answer)
                .await
                .unwrap();
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let mut rest = Vec::new();
        let read = tokio::io::AsyncReadExt::read_to_end(&mut silent, &mut rest).await;
        assert!(
            matches!(read, Ok(0)),
            "the silent peer's connection is closed"
        );
        busy.write_all(b"\x00\x04ping").await.unwrap();
        tokio::io::AsyncReadExt::read_exact(&mut busy, &mut answer)
            .await
            .unwrap();
        assert_eq!(&answer, b"\x00\x04ping");
        stop.cancel();
    }
}
