//! A terminal-side client: what `cyberswitch send`, the tests and the load generator use to talk
//! to a switch.

use std::sync::Arc;
use std::time::Duration;

use bytes::BytesMut;
use futures::{SinkExt, StreamExt};
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;
use tokio_util::codec::Framed;

use super::framing::{Frame, FrameCodec, Framing, DEFAULT_MAX_FRAME};
use crate::iso8583::{OwnedMessage, Spec};

pub struct Client {
    spec: Arc<Spec>,
    framed: Framed<TcpStream, FrameCodec>,
}

impl Client {
    pub async fn connect(addr: &str, spec: Arc<Spec>, framing: Framing) -> Result<Client, String> {
        let stream = TcpStream::connect(addr)
            .await
            .map_err(|e| format!("connect {addr}: {e}"))?;
        let _ = stream.set_nodelay(true);
        Ok(Client {
            spec,
            framed: Framed::new(stream, FrameCodec::new(framing, DEFAULT_MAX_FRAME * 8)),
        })
    }

    pub async fn send(&mut self, msg: &OwnedMessage) -> Result<(), String> {
        let mut buf = BytesMut::new();
        self.spec.encode(msg, &mut buf).map_err(|e| e.to_string())?;
        self.framed
            .send(Frame::message(buf.freeze()))
            .await
            .map_err(|e| e.to_string())
    }

    /// Send an already-encoded message body in one frame.
    pub async fn send_body(&mut self, body: &[u8]) -> Result<(), String> {
        self.framed
            .send(Frame::message(bytes::Bytes::copy_from_slice(body)))
            .await
            .map_err(|e| e.to_string())
    }

    /// Write raw bytes, bypassing the framing (for tests of what a bad peer sends).
    pub async fn send_raw(&mut self, raw: &[u8]) -> Result<(), String> {
        self.framed
            .get_mut()
            .write_all(raw)
            .await
            .map_err(|e| e.to_string())
    }

    /// The next frame (keep-alives included).
    pub async fn recv_frame(&mut self, timeout: Duration) -> Result<Frame, String> {
        match tokio::time::timeout(timeout, self.framed.next()).await {
            Err(_) => Err("no answer in time".into()),
            Ok(None) => Err("connection closed".into()),
            Ok(Some(Err(e))) => Err(e.to_string()),
            Ok(Some(Ok(f))) => Ok(f),
        }
    }

    /// The next message, keep-alives skipped.
    pub async fn recv(&mut self, timeout: Duration) -> Result<OwnedMessage, String> {
        loop {
            let frame = self.recv_frame(timeout).await?;
            if frame.is_keep_alive() {
                continue;
            }
            let msg = self
                .spec
                .decode(&frame.message)
                .map_err(|e| e.to_string())?;
            return Ok(msg.to_owned_message());
        }
    }

    pub async fn call(
        &mut self,
        msg: &OwnedMessage,
        timeout: Duration,
    ) -> Result<OwnedMessage, String> {
        self.send(msg).await?;
        self.recv(timeout).await
    }
}
