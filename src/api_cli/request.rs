//! Where the API is and how one call is made: the connection flags every `cyberswitch api`,
//! `saf`, `cutover` and `report` takes, and the one helper that sends a call with the token
//! and gives back the JSON answer or the error it ended with.

use std::path::PathBuf;

use clap::Args;
use serde_json::Value;

use cyberswitch::admin::client::ApiClient;

/// The API to call and the credentials to call it with.
#[derive(Args)]
pub struct Endpoint {
    /// The admin API (`https://host:port` or `http://host:port`).
    #[arg(
        long,
        env = "CYBERSWITCH_API",
        default_value = "https://127.0.0.1:8580"
    )]
    url: String,
    /// The CA (PEM) that signed an `https://` API's certificate; by default the demo's,
    /// `demo-data/tls/ca.pem`, when it exists.
    #[arg(long, env = "CYBERSWITCH_CA")]
    ca: Option<PathBuf>,
    /// Bearer token (better in the environment than on the command line).
    #[arg(long, env = "CYBERSWITCH_TOKEN", hide_env_values = true)]
    token: Option<String>,
}

/// Where the demo keeps the CA of its HTTPS admin API (`cyberswitch demo`'s default data
/// directory).
const DEMO_CA: &str = "demo-data/tls/ca.pem";

/// One API call: method, path (its user-chosen parts encoded) and JSON body.
pub struct Call {
    pub method: &'static str,
    pub path: String,
    pub body: Option<Value>,
}

impl Call {
    pub fn get(path: impl Into<String>) -> Call {
        Call {
            method: "get",
            path: path.into(),
            body: None,
        }
    }

    pub fn post(path: impl Into<String>, body: Option<Value>) -> Call {
        Call {
            method: "post",
            path: path.into(),
            body,
        }
    }

    pub fn delete(path: impl Into<String>, body: Value) -> Call {
        Call {
            method: "delete",
            path: path.into(),
            body: Some(body),
        }
    }
}

impl Endpoint {
    /// The API's client: for `https://`, the CA given, else the demo's when it is there.
    fn client(&self) -> Result<ApiClient, String> {
        let ca = self.ca.clone().or_else(|| {
            let demo = PathBuf::from(DEMO_CA);
            (self.url.trim().starts_with("https://") && demo.exists()).then_some(demo)
        });
        Ok(ApiClient::new(&self.url, self.token.clone())?.with_ca(ca))
    }

    /// Make the call: its JSON answer, or the error answer as `STATUS CODE: message (path)`.
    pub async fn send(&self, call: &Call) -> Result<Value, String> {
        let resp = self
            .client()?
            .call(call.method, &call.path, call.body.as_ref())
            .await?;
        if resp.ok() {
            return Ok(resp.body);
        }
        let text = pretty(&resp.body);
        Err(format!(
            "{} {}: {} ({})",
            resp.status,
            resp.error_code().unwrap_or("error"),
            resp.body["error"]["message"].as_str().unwrap_or(&text),
            call.path
        ))
    }
}

/// An answer as the commands print it. A `serde_json::Value` always serializes (its map
/// keys are strings), so the empty default is never what is printed.
pub fn pretty(v: &Value) -> String {
    serde_json::to_string_pretty(v).unwrap_or_default()
}

/// Path segments chosen by the user are percent-encoded.
pub fn seg(s: &str) -> String {
    s.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) {
                char::from(b).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

/// The query string of the pairs that have a value (`""` when none has).
pub fn query(pairs: &[(&str, Option<String>)]) -> String {
    let parts: Vec<String> = pairs
        .iter()
        .filter_map(|(k, v)| v.as_ref().map(|v| format!("{k}={}", seg(v))))
        .collect();
    if parts.is_empty() {
        String::new()
    } else {
        format!("?{}", parts.join("&"))
    }
}
