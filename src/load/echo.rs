//! The baseline: a minimal echo server with the same framing, so a load report can say what
//! the loopback link itself carries on this machine with the same messages.

use std::net::SocketAddr;

use futures::{SinkExt, StreamExt};
use tokio::net::TcpListener;
use tokio_util::codec::Framed;
use tokio_util::sync::CancellationToken;

use crate::net::framing::{FrameCodec, Framing};

/// Serve on an ephemeral port until `stop`; every frame comes back as it was.
pub async fn start(framing: Framing, stop: CancellationToken) -> Result<SocketAddr, String> {
    let listener = TcpListener::bind("127.0.0.1:0")
        .await
        .map_err(|e| format!("echo server: {e}"))?;
    let addr = listener.local_addr().map_err(|e| e.to_string())?;
    tokio::spawn(async move {
        loop {
            let accepted = tokio::select! {
                _ = stop.cancelled() => return,
                a = listener.accept() => a,
            };
            let Ok((stream, _)) = accepted else { continue };
            let _ = stream.set_nodelay(true);
            let stop = stop.clone();
            tokio::spawn(async move {
                let (mut sink, mut source) =
                    Framed::new(stream, FrameCodec::new(framing, 65_535)).split();
                loop {
                    let frame = tokio::select! {
                        _ = stop.cancelled() => return,
                        f = source.next() => f,
                    };
                    match frame {
                        Some(Ok(f)) => {
                            if sink.send(f).await.is_err() {
                                return;
                            }
                        }
                        _ => return,
                    }
                }
            });
        }
    });
    Ok(addr)
}
