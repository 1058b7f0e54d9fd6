//! HTTPS for the admin API: the capped listener's connections (places, idle timeout) with a
//! TLS handshake on each, done in the connection's own task so that a slow or silent peer
//! delays no one else's accept. Handshakes that fail are counted
//! (`cyberswitch_tls_handshake_failures_total{listener="admin"}`) and the connection closed.

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;

use tokio::sync::mpsc;
use tokio_rustls::server::TlsStream;
use tokio_util::sync::CancellationToken;

use crate::net::http_listener::{CappedListener, CappedStream};
use crate::net::tls::ServerTls;

pub struct TlsListener {
    ready: mpsc::Receiver<(TlsStream<CappedStream>, SocketAddr)>,
    addr: SocketAddr,
}

impl TlsListener {
    /// Accept on `inner` until `stop`, handing over the connections whose handshake succeeded.
    pub fn new(
        mut inner: CappedListener,
        tls: Arc<ServerTls>,
        stop: CancellationToken,
    ) -> io::Result<TlsListener> {
        use axum::serve::Listener;
        let addr = inner.local_addr()?;
        let (tx, ready) = mpsc::channel(16);
        tokio::spawn(async move {
            loop {
                let (stream, peer) = tokio::select! {
                    _ = stop.cancelled() => return,
                    accepted = inner.accept() => accepted,
                };
                let (tls, tx) = (tls.clone(), tx.clone());
                tokio::spawn(async move {
                    match tls.accept(stream).await {
                        Ok(stream) => {
                            let _ = tx.send((stream, peer)).await;
                        }
                        Err(e) => {
                            metrics::counter!("cyberswitch_tls_handshake_failures_total", "listener" => "admin")
                                .increment(1);
                            tracing::info!(%peer, error = %e, "admin API: TLS handshake failed; closing");
                        }
                    }
                });
            }
        });
        Ok(TlsListener { ready, addr })
    }
}

impl axum::serve::Listener for TlsListener {
    type Io = TlsStream<CappedStream>;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Self::Io, SocketAddr) {
        match self.ready.recv().await {
            Some(accepted) => accepted,
            // Stopped: the server's graceful shutdown ends it; nothing more is accepted.
            None => std::future::pending().await,
        }
    }

    fn local_addr(&self) -> io::Result<SocketAddr> {
        Ok(self.addr)
    }
}
