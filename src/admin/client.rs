//! A client of the admin API (what the CLI's `cyberswitch api …` uses): HTTP/1.1 over hyper,
//! one connection per call; HTTPS for `https://` addresses, the server's certificate checked
//! against the CA file given (never the system's roots: the API's CA is the operator's own).

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::header::{AUTHORIZATION, CONTENT_TYPE, HOST};
use serde_json::Value;

pub struct ApiClient {
    /// `host:port`.
    authority: String,
    token: Option<String>,
    /// `https://`: the CA the server's certificate must chain to.
    https: bool,
    ca: Option<std::path::PathBuf>,
}

/// An answer: status and JSON body (`Null` when empty).
#[derive(Debug)]
pub struct ApiResponse {
    pub status: u16,
    pub body: Value,
    /// `Retry-After` in seconds, when the API asked to wait (429).
    pub retry_after: Option<u64>,
}

impl ApiResponse {
    pub fn ok(&self) -> bool {
        (200..300).contains(&self.status)
    }
    /// The stable error code of an error answer.
    pub fn error_code(&self) -> Option<&str> {
        self.body["error"]["code"].as_str()
    }
}

impl ApiClient {
    /// `url` is `http://host:port` (or `host:port`); `https://host:port` needs
    /// [`with_ca`](ApiClient::with_ca).
    pub fn new(url: &str, token: Option<String>) -> Result<ApiClient, String> {
        let url = url.trim();
        let (https, rest) = match url.strip_prefix("https://") {
            Some(rest) => (true, rest),
            None => (false, url.strip_prefix("http://").unwrap_or(url)),
        };
        let authority = rest.trim_end_matches('/').to_string();
        if authority.is_empty() || authority.contains('/') {
            return Err(format!(
                "{url:?}: give the API as http://host:port or https://host:port"
            ));
        }
        Ok(ApiClient {
            authority,
            token,
            https,
            ca: None,
        })
    }

    /// The CA file (PEM) an `https://` API's certificate must chain to.
    pub fn with_ca(mut self, ca: Option<std::path::PathBuf>) -> ApiClient {
        self.ca = ca;
        self
    }

    pub async fn call(
        &self,
        method: &str,
        path: &str,
        body: Option<&Value>,
    ) -> Result<ApiResponse, String> {
        let ca = match (self.https, &self.ca) {
            (false, _) => None,
            (true, Some(ca)) => Some(ca.as_path()),
            (true, None) => {
                return Err(format!(
                    "https://{}: give the CA file that signed its certificate (--ca FILE)",
                    self.authority
                ))
            }
        };
        let stream = crate::net::tls::connect(&self.authority, ca).await?;
        let io = hyper_util::rt::TokioIo::new(stream);
        let (mut sender, conn) = hyper::client::conn::http1::handshake(io)
            .await
            .map_err(|e| format!("HTTP handshake: {e}"))?;
        tokio::spawn(async move {
            let _ = conn.await;
        });
        let method = hyper::Method::from_bytes(method.to_ascii_uppercase().as_bytes())
            .map_err(|e| format!("method {method:?}: {e}"))?;
        let mut req = hyper::Request::builder()
            .method(method)
            .uri(path)
            .header(HOST, &self.authority);
        if let Some(t) = &self.token {
            req = req.header(AUTHORIZATION, format!("Bearer {t}"));
        }
        let payload = match body {
            Some(b) => {
                req = req.header(CONTENT_TYPE, "application/json");
                Bytes::from(serde_json::to_vec(b).map_err(|e| e.to_string())?)
            }
            None => Bytes::new(),
        };
        let req = req
            .body(Full::new(payload))
            .map_err(|e| format!("request: {e}"))?;
        let resp = sender
            .send_request(req)
            .await
            .map_err(|e| format!("HTTP: {e}"))?;
        let status = resp.status().as_u16();
        let retry_after = resp
            .headers()
            .get(hyper::header::RETRY_AFTER)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().parse().ok());
        let bytes = resp
            .into_body()
            .collect()
            .await
            .map_err(|e| format!("HTTP body: {e}"))?
            .to_bytes();
        let body = if bytes.is_empty() {
            Value::Null
        } else {
            serde_json::from_slice(&bytes)
                .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&bytes).into_owned()))
        };
        Ok(ApiResponse {
            status,
            body,
            retry_after,
        })
    }
}
