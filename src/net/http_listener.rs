//! The listener of the HTTP endpoints (the admin API, `/metrics`): at most `max_connections` connections open at once (SPEC §10:
//! limits on everything a peer controls). One more is closed as soon as it is accepted and
//! counted (`cyberswitch_connections_refused_total{listener="admin"}`); the open ones go on.
//! Two deadlines that a peer's bytes cannot move (SPEC §10): a request must arrive whole
//! within `request_timeout` of its first byte (a client sending one byte a minute would
//! otherwise hold a place for ever), and a kept-alive connection waiting for its next
//! request is closed `idle_timeout` after the last answer. Only an answer written moves them
//! (counted in `cyberswitch_idle_timeouts_total{listener="admin", why}`). The request
//! deadline also bounds a route's own time while its request is being answered, so it is
//! set well above the slowest route.

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

pub struct CappedListener {
    /// The `listener` label of its metrics (`admin`, `metrics`).
    name: &'static str,
    inner: TcpListener,
    open: Arc<Semaphore>,
    idle_timeout: Duration,
    request_timeout: Duration,
}

impl CappedListener {
    pub fn new(
        inner: TcpListener,
        max_connections: usize,
        idle_timeout: Duration,
        request_timeout: Duration,
    ) -> CappedListener {
        CappedListener {
            name: "admin",
            inner,
            open: Arc::new(Semaphore::new(max_connections.max(1))),
            idle_timeout,
            request_timeout,
        }
    }

    /// The same limits for another HTTP endpoint, its metrics labelled `name`.
    pub fn named(mut self, name: &'static str) -> CappedListener {
        self.name = name;
        self
    }
}

/// An accepted connection, holding its place among the open ones until it closes.
pub struct CappedStream {
    name: &'static str,
    stream: TcpStream,
    idle_timeout: Duration,
    request_timeout: Duration,
    /// A request has begun arriving and no answer has been written since.
    in_request: bool,
    /// When the connection is closed: `request_timeout` after a request's first byte, or
    /// `idle_timeout` after the last answer (or the accept). Bytes read never move it.
    deadline: Pin<Box<tokio::time::Sleep>>,
    _place: OwnedSemaphorePermit,
}

impl CappedStream {
    /// Bytes of a request read: the first of a request starts its deadline.
    fn read_some(&mut self) {
        if !self.in_request {
            self.in_request = true;
            let next = tokio::time::Instant::now() + self.request_timeout;
            self.deadline.as_mut().reset(next);
        }
    }

    /// A write's outcome, passed through; an answer written starts the idle wait.
    fn wrote(&mut self, written: Poll<io::Result<usize>>) -> Poll<io::Result<usize>> {
        if matches!(written, Poll::Ready(Ok(n)) if n > 0) {
            self.in_request = false;
            let next = tokio::time::Instant::now() + self.idle_timeout;
            self.deadline.as_mut().reset(next);
        }
        written
    }
}

impl axum::serve::Listener for CappedListener {
    type Io = CappedStream;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (CappedStream, SocketAddr) {
        loop {
            let (stream, peer) = match self.inner.accept().await {
                Ok(accepted) => accepted,
                Err(e) => {
                    // Out of descriptors, most likely: give the others a moment to close.
                    tracing::warn!(error = %e, "admin API: accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            };
            match self.open.clone().try_acquire_owned() {
                Ok(place) => {
                    let _ = stream.set_nodelay(true);
                    return (
                        CappedStream {
                            name: self.name,
                            stream,
                            idle_timeout: self.idle_timeout,
                            request_timeout: self.request_timeout,
                            in_request: false,
                            deadline: Box::pin(tokio::time::sleep(self.idle_timeout)),
                            _place: place,
                        },
                        peer,
                    );
                }
                Err(_) => {
                    metrics::counter!("cyberswitch_connections_refused_total", "listener" => self.name)
                        .increment(1);
                    tracing::warn!(listener = self.name, %peer, "connection limit reached; closing");
                }
            }
        }
    }

    fn local_addr(&self) -> io::Result<SocketAddr> {
        self.inner.local_addr()
    }
}

impl AsyncRead for CappedStream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let before = buf.filled().len();
        match Pin::new(&mut this.stream).poll_read(cx, buf) {
            Poll::Ready(result) => {
                if buf.filled().len() > before {
                    this.read_some();
                }
                Poll::Ready(result)
            }
            // Waiting for the peer: past the deadline, the connection ends here (the server
            // closes it as it would a reset one).
            Poll::Pending => match this.deadline.as_mut().poll(cx) {
                Poll::Ready(()) => {
                    let why = if this.in_request { "request" } else { "idle" };
                    metrics::counter!("cyberswitch_idle_timeouts_total", "listener" => this.name, "why" => why)
                        .increment(1);
                    Poll::Ready(Err(io::Error::new(
                        io::ErrorKind::TimedOut,
                        "admin connection: request too slow or idle",
                    )))
                }
                Poll::Pending => Poll::Pending,
            },
        }
    }
}

impl AsyncWrite for CappedStream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let written = Pin::new(&mut this.stream).poll_write(cx, buf);
        this.wrote(written)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let written = Pin::new(&mut this.stream).poll_write_vectored(cx, bufs);
        this.wrote(written)
    }

    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().stream).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().stream).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    /// A request on a kept-alive connection; the answer's status line.
    async fn get(conn: &mut TcpStream) -> String {
        conn.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
            .await
            .expect("request written");
        let mut buf = vec![0u8; 512];
        let n = conn.read(&mut buf).await.expect("answer read");
        String::from_utf8_lossy(&buf[..n])
            .lines()
            .next()
            .unwrap_or_default()
            .to_string()
    }

    /// An API answering `GET /` behind a capped listener; its address.
    async fn serve(max_connections: usize, idle_timeout: Duration) -> SocketAddr {
        let tcp = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = tcp.local_addr().expect("address");
        let app = axum::Router::new().route("/", axum::routing::get(|| async { "ok" }));
        let listener = CappedListener::new(tcp, max_connections, idle_timeout, idle_timeout);
        tokio::spawn(async move { axum::serve(listener, app).await });
        addr
    }

    #[tokio::test]
    async fn connections_beyond_the_limit_are_closed_and_the_open_ones_served() {
        let addr = serve(2, Duration::from_secs(3600)).await;

        let mut first = TcpStream::connect(addr).await.expect("connect");
        let mut second = TcpStream::connect(addr).await.expect("connect");
        assert_eq!(get(&mut first).await, "HTTP/1.1 200 OK");
        assert_eq!(get(&mut second).await, "HTTP/1.1 200 OK");
        // A third while two are open: closed without an answer.
        let mut third = TcpStream::connect(addr).await.expect("connect");
        let _ = third.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n").await;
        let mut buf = [0u8; 64];
        let n = tokio::time::timeout(Duration::from_secs(5), third.read(&mut buf))
            .await
            .expect("closed, not left hanging")
            .unwrap_or(0);
        assert_eq!(n, 0, "the connection over the limit was answered");
        // The open ones go on; once one closes, a new one is served.
        assert_eq!(get(&mut first).await, "HTTP/1.1 200 OK");
        drop(second);
        let mut fourth = None;
        for _ in 0..50 {
            let mut c = TcpStream::connect(addr).await.expect("connect");
            if c.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
                .await
                .is_ok()
            {
                let mut buf = vec![0u8; 512];
                if let Ok(n) = c.read(&mut buf).await {
                    if n > 0 {
                        fourth = Some(String::from_utf8_lossy(&buf[..n]).to_string());
                        break;
                    }
                }
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let fourth = fourth.expect("a place was freed for a new connection");
        assert!(fourth.starts_with("HTTP/1.1 200 OK"), "{fourth}");
    }

    #[tokio::test]
    async fn a_silent_connection_is_closed_and_its_place_freed() {
        // One place; a connection silent for 300 ms loses it.
        let addr = serve(1, Duration::from_millis(300)).await;
        let mut silent = TcpStream::connect(addr).await.expect("connect");
        // Used once, then held open and silent (a kept-alive connection left idle).
        assert_eq!(get(&mut silent).await, "HTTP/1.1 200 OK");
        let mut buf = [0u8; 64];
        let n = tokio::time::timeout(Duration::from_secs(30), silent.read(&mut buf))
            .await
            .expect("an idle connection is closed, not held for ever")
            .unwrap_or(0);
        assert_eq!(n, 0);
        // Its place is free: a new connection is served.
        let mut next = TcpStream::connect(addr).await.expect("connect");
        assert_eq!(get(&mut next).await, "HTTP/1.1 200 OK");
    }

    /// A client that sends its request a byte at a time (each byte well inside the idle
    /// time) is closed once the request deadline passes: bytes do not keep it alive.
    #[tokio::test]
    async fn a_request_trickled_byte_by_byte_is_cut_at_its_deadline() {
        let tcp = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = tcp.local_addr().expect("address");
        let app = axum::Router::new().route("/", axum::routing::get(|| async { "ok" }));
        let listener = CappedListener::new(
            tcp,
            4,
            Duration::from_secs(3600),
            Duration::from_millis(500),
        );
        tokio::spawn(async move { axum::serve(listener, app).await });
        let mut slow = TcpStream::connect(addr).await.expect("connect");
        let request = b"GET / HTTP/1.1\r\nHost: x\r\nX-Slow: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa\r\n\r\n";
        let mut cut = false;
        for b in request {
            if slow.write_all(&[*b]).await.is_err() {
                cut = true;
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        if !cut {
            // Every byte went out: the connection must be closed, not answered.
            let mut buf = vec![0u8; 256];
            let n = tokio::time::timeout(Duration::from_secs(30), slow.read(&mut buf))
                .await
                .expect("closed, not left hanging")
                .unwrap_or(0);
            cut = n == 0;
        }
        assert!(cut, "a trickled request was served past its deadline");
        // A request sent at once on a new connection is served.
        let mut quick = TcpStream::connect(addr).await.expect("connect");
        assert_eq!(get(&mut quick).await, "HTTP/1.1 200 OK");
    }
}
