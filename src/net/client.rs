//! A terminal-side client: what `cyberswitch send`, the tests and the load generator use to talk
//! to a switch.

use std::sync::Arc;
use std::time::Duration;

use bytes::BytesMut;
use futures::{SinkExt, StreamExt};
use std::path::Path;
use tokio::io::AsyncWriteExt;
use tokio_util::codec::Framed;

use super::framing::{Frame, FrameCodec, Framing, DEFAULT_MAX_FRAME};
use super::tls::Io;
use crate::iso8583::{OwnedMessage, Spec};

pub struct Client {
    spec: Arc<Spec>,
    framed: Framed<Box<dyn Io>, FrameCodec>,
}

impl Client {
    pub async fn connect(addr: &str, spec: Arc<Spec>, framing: Framing) -> Result<Client, String> {
        Client::connect_tls(addr, None, spec, framing).await
    }

    /// As [`Client::connect`], from the local address `from` (a load test opening more
    /// connections than a listener takes from one peer address uses several loopback ones).
    pub async fn connect_from(
        addr: &str,
        from: std::net::IpAddr,
        spec: Arc<Spec>,
        framing: Framing,
    ) -> Result<Client, String> {
        let target = tokio::net::lookup_host(addr)
            .await
            .map_err(|e| format!("{addr}: {e}"))?
            .find(|a| a.is_ipv4() == from.is_ipv4())
            .ok_or_else(|| format!("{addr}: no address of the family of {from}"))?;
        let socket = if from.is_ipv4() {
            tokio::net::TcpSocket::new_v4()
        } else {
            tokio::net::TcpSocket::new_v6()
        }
        .map_err(|e| format!("socket: {e}"))?;
        socket
            .bind(std::net::SocketAddr::new(from, 0))
            .map_err(|e| format!("bind {from}: {e}"))?;
        let stream = socket
            .connect(target)
            .await
            .map_err(|e| format!("{addr}: {e}"))?;
        let _ = stream.set_nodelay(true);
        Ok(Client::over(Box::new(stream), spec, framing))
    }

    /// As [`Client::connect`], over TLS when `ca` is given: the switch's certificate must
    /// chain to it and name the host of `addr`.
    pub async fn connect_tls(
        addr: &str,
        ca: Option<&Path>,
        spec: Arc<Spec>,
        framing: Framing,
    ) -> Result<Client, String> {
        let stream = super::tls::connect(addr, ca).await?;
        Ok(Client::over(stream, spec, framing))
    }

    /// A client over a stream already connected (and its TLS handshake done, for one that
    /// presents a client certificate).
    pub fn over(stream: Box<dyn Io>, spec: Arc<Spec>, framing: Framing) -> Client {
        Client {
            spec,
            framed: Framed::new(stream, FrameCodec::new(framing, DEFAULT_MAX_FRAME * 8)),
        }
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
