//! TCP listeners: one task per connection, requests pipelined (answers in completion order),
//! a bound on requests in flight per connection (reading pauses beyond it), an idle timeout,
//! keep-alive frames echoed, and a cap on connections. Whatever one connection does, the
//! others are not affected: a framing error closes that connection only.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures::StreamExt;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, Semaphore};
use tokio_util::codec::Framed;
use tokio_util::sync::CancellationToken;

use super::framing::{send_batch, Frame, FrameCodec, Framing};

/// What a server does with one request message: zero, one or more answers (a simulator may
/// stay silent or answer twice; the switch answers once).
pub trait Service: Send + Sync + 'static {
    fn call(&self, request: Bytes, peer: Arc<str>) -> BoxFuture<Vec<Bytes>>;

    /// An answer that could not be delivered: the peer had gone, or the write failed.
    fn undelivered(&self, _answer: Bytes) {}
}

pub type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send + 'static>>;

/// Listener limits.
#[derive(Debug, Clone)]
pub struct ServerLimits {
    pub framing: Framing,
    pub max_frame: usize,
    pub max_connections: usize,
    pub max_in_flight: usize,
    pub idle_timeout: Duration,
}

/// Accept connections until `stop` is cancelled.
pub async fn serve(
    name: Arc<str>,
    listener: TcpListener,
    limits: ServerLimits,
    service: Arc<dyn Service>,
    stop: CancellationToken,
) {
    let connections = Arc::new(Semaphore::new(limits.max_connections));
    loop {
        let accepted = tokio::select! {
            _ = stop.cancelled() => return,
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
            metrics::counter!("cyberswitch_connections_refused_total", "listener" => name.to_string())
                .increment(1);
            tracing::warn!(listener = %name, %peer, "connection limit reached; closing");
            drop(stream);
            continue;
        };
        let _ = stream.set_nodelay(true);
        let (name, limits, service, stop) =
            (name.clone(), limits.clone(), service.clone(), stop.clone());
        tokio::spawn(async move {
            let peer: Arc<str> = peer.to_string().into();
            metrics::gauge!("cyberswitch_connections", "listener" => name.to_string())
                .increment(1.0);
            connection(&name, stream, peer, &limits, service, stop).await;
            metrics::gauge!("cyberswitch_connections", "listener" => name.to_string())
                .decrement(1.0);
            drop(permit);
        });
    }
}

async fn connection(
    name: &str,
    stream: TcpStream,
    peer: Arc<str>,
    limits: &ServerLimits,
    service: Arc<dyn Service>,
    stop: CancellationToken,
) {
    let codec = FrameCodec::new(limits.framing, limits.max_frame);
    // A small first read buffer: most connections are idle most of the time, and the buffer
    // grows for a burst (bounded by the maximum frame) only when one comes.
    let (mut sink, mut frames) = Framed::with_capacity(stream, codec, 512).split();
    // Answers come back through a channel so that the reader keeps reading while earlier
    // requests are still being processed.
    let (tx, mut rx) = mpsc::channel::<Frame>(limits.max_in_flight * 2);
    // Set when the peer has gone: answers produced after that count as undelivered.
    let gone = CancellationToken::new();
    let writer_service = service.clone();
    let writer = tokio::spawn(async move {
        let mut unsent = Vec::new();
        while let Some(frame) = rx.recv().await {
            if let Err(e) = send_batch(&mut sink, &mut rx, frame, &mut unsent).await {
                tracing::debug!(error = %e, "write failed; closing");
                for answer in unsent.drain(..) {
                    writer_service.undelivered(answer);
                }
                rx.close();
                while let Some(rest) = rx.recv().await {
                    writer_service.undelivered(rest.message);
                }
                break;
            }
        }
    });
    let in_flight = Arc::new(Semaphore::new(limits.max_in_flight));
    loop {
        // Back-pressure: no new request is read while this connection has too many open.
        let permit = tokio::select! {
            _ = stop.cancelled() => break,
            p = in_flight.clone().acquire_owned() => match p { Ok(p) => p, Err(_) => break },
        };
        let next = tokio::select! {
            _ = stop.cancelled() => break,
            n = tokio::time::timeout(limits.idle_timeout, frames.next()) => n,
        };
        let frame = match next {
            Err(_) => {
                metrics::counter!("cyberswitch_idle_timeouts_total", "listener" => name.to_string())
                    .increment(1);
                tracing::info!(listener = name, %peer, "idle timeout; closing");
                break;
            }
            Ok(None) => break,
            Ok(Some(Err(e))) => {
                metrics::counter!("cyberswitch_frame_errors_total", "link" => name.to_string(), "reason" => e.label())
                    .increment(1);
                tracing::warn!(listener = name, %peer, error = %e, "framing error; closing");
                break;
            }
            Ok(Some(Ok(frame))) => frame,
        };
        if frame.is_keep_alive() {
            if tx.send(Frame::keep_alive()).await.is_err() {
                break;
            }
            continue;
        }
        let (service, tx, peer, gone) = (service.clone(), tx.clone(), peer.clone(), gone.clone());
        tokio::spawn(async move {
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
    }
    gone.cancel();
    drop(tx);
    // Let answers already computed go out, then close.
    let _ = tokio::time::timeout(Duration::from_secs(5), writer).await;
}
