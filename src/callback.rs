//! Signed HTTP callbacks to partners: where one goes ([`HttpTarget`]), its signature
//! (HMAC-SHA-256 over the exact body bytes, [`sign`] / [`verify`]) and one delivery attempt
//! ([`post`]). The durable queue that retries them is [`crate::outbox`]; the receiver that
//! checks them in the demo and the tests is `cyberswitch sim partner` ([`crate::sim::partner`]).
//!
//! Headers of a callback:
//! - `X-Cyberswitch-Signature: sha256=<lower-case hex of HMAC-SHA-256(secret, body)>`
//! - `X-Cyberswitch-Id: <outbox id>`: the same for every attempt and every resend, so that a
//!   receiver can drop what it has already taken (delivery is at least once).
//! - `X-Cyberswitch-Event: <event>` (`va.paid`, `card.statement`).

use std::time::Duration;

use bytes::Bytes;
use hmac::{Hmac, Mac};
use http_body_util::{BodyExt, Full};
use sha2::Sha256;

pub const SIGNATURE_HEADER: &str = "x-cyberswitch-signature";
pub const ID_HEADER: &str = "x-cyberswitch-id";
pub const EVENT_HEADER: &str = "x-cyberswitch-event";

/// The signature header's value for `body`.
pub fn sign(secret: &[u8], body: &[u8]) -> String {
    format!(
        "sha256={}",
        hex::encode(mac(secret, body).finalize().into_bytes())
    )
}

/// Does `header` (the signature header's value) sign `body` under `secret`? Compared in
/// constant time.
pub fn verify(secret: &[u8], body: &[u8], header: &str) -> bool {
    let Some(hex_sig) = header.trim().strip_prefix("sha256=") else {
        return false;
    };
    let Ok(sig) = hex::decode(hex_sig) else {
        return false;
    };
    mac(secret, body).verify_slice(&sig).is_ok()
}

fn mac(secret: &[u8], body: &[u8]) -> Hmac<Sha256> {
    // HMAC takes a key of any length: this cannot fail.
    let mut m = <Hmac<Sha256> as Mac>::new_from_slice(secret)
        .unwrap_or_else(|_| unreachable!("HMAC accepts keys of any length"));
    m.update(body);
    m
}

/// Where a callback goes: `http://host:port/path`. Only plain HTTP: callbacks are signed, not
/// secret (the body names an order and an amount); HTTPS is left for a TLS-capable client
/// (docs/decisions.md).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HttpTarget {
    /// `host:port`, what is connected to and sent as `Host`.
    pub authority: String,
    /// `/path?query`, at least `/`.
    pub path: String,
}

impl HttpTarget {
    pub fn parse(url: &str) -> Result<HttpTarget, String> {
        let rest = url
            .trim()
            .strip_prefix("http://")
            .ok_or("give the callback as http://host:port/path (https is not supported yet)")?;
        let (authority, path) = match rest.find('/') {
            Some(i) => (&rest[..i], &rest[i..]),
            None => (rest, "/"),
        };
        let port_ok = authority
            .rsplit_once(':')
            .is_some_and(|(h, p)| !h.is_empty() && p.parse::<u16>().is_ok_and(|p| p > 0));
        if !port_ok {
            return Err(format!("{authority:?}: give host:port"));
        }
        if path
            .bytes()
            .any(|b| b.is_ascii_whitespace() || b.is_ascii_control())
        {
            return Err("the path holds spaces or control characters".into());
        }
        Ok(HttpTarget {
            authority: authority.to_string(),
            path: path.to_string(),
        })
    }
}

/// One attempt: POST `body` (JSON) to `target` with the signature, id and event headers;
/// the answer's status, or why there was none. One connection per attempt, bounded by
/// `timeout` from connect to the end of the answer.
pub async fn post(
    target: &HttpTarget,
    secret: &[u8],
    id: &str,
    event: &str,
    body: &[u8],
    timeout: Duration,
) -> Result<u16, String> {
    let attempt = async {
        let stream = tokio::net::TcpStream::connect(&target.authority)
            .await
            .map_err(|e| format!("connect {}: {e}", target.authority))?;
        let io = hyper_util::rt::TokioIo::new(stream);
        let (mut sender, conn) = hyper::client::conn::http1::handshake(io)
            .await
            .map_err(|e| format!("HTTP handshake: {e}"))?;
        tokio::spawn(async move {
            let _ = conn.await;
        });
        let req = hyper::Request::builder()
            .method(hyper::Method::POST)
            .uri(&target.path)
            .header(hyper::header::HOST, &target.authority)
            .header(hyper::header::CONTENT_TYPE, "application/json")
            .header(SIGNATURE_HEADER, sign(secret, body))
            .header(ID_HEADER, id)
            .header(EVENT_HEADER, event)
            .body(Full::new(Bytes::copy_from_slice(body)))
            .map_err(|e| format!("request: {e}"))?;
        let resp = sender
            .send_request(req)
            .await
            .map_err(|e| format!("HTTP: {e}"))?;
        let status = resp.status().as_u16();
        // Read the answer to its end (bounded by the timeout), so the receiver is not cut off.
        let _ = resp.into_body().collect().await;
        Ok(status)
    };
    match tokio::time::timeout(timeout, attempt).await {
        Ok(r) => r,
        Err(_) => Err(format!("no answer within {} ms", timeout.as_millis())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_signature_verifies_and_any_change_breaks_it() {
        let s = sign(b"0123456789abcdef", b"{\"a\":1}");
        assert!(s.starts_with("sha256="));
        assert!(verify(b"0123456789abcdef", b"{\"a\":1}", &s));
        assert!(!verify(b"0123456789abcdef", b"{\"a\":2}", &s));
        assert!(!verify(b"0123456789abcdeF", b"{\"a\":1}", &s));
        assert!(!verify(b"0123456789abcdef", b"{\"a\":1}", "sha256=zz"));
        assert!(!verify(b"0123456789abcdef", b"{\"a\":1}", ""));
    }

    #[test]
    fn targets_are_plain_http_with_a_port() {
        let t = HttpTarget::parse("http://127.0.0.1:8590/cb?x=1").unwrap();
        assert_eq!(t.authority, "127.0.0.1:8590");
        assert_eq!(t.path, "/cb?x=1");
        assert_eq!(HttpTarget::parse("http://h:1").unwrap().path, "/");
        assert!(HttpTarget::parse("https://h:1/").is_err());
        assert!(HttpTarget::parse("http://h/").is_err());
        assert!(HttpTarget::parse("http://:80/").is_err());
    }
}
