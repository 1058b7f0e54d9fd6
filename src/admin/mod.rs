//! The admin API (SPEC §8): HTTP/JSON on its own port, HTTPS when `[admin] tls` is configured.
//!
//! - Every call carries `Authorization: Bearer <token>`. Tokens come from the configuration,
//!   each with a role: operator (everything), issuer X (look-ups of X's own accounts), partner
//!   Y (links, and the hosted cards and masters Y created). Tokens are compared as SHA-256
//!   digests in constant time. No token or an unknown one: 401; a role that may not: 403.
//! - Errors are JSON: `{"error": {"code": "<stable code>", "message": "<text>"}}`.
//! - Card numbers travel in request bodies, never in paths (paths end up in logs), and come
//!   back masked (first six, last four) — always.
//! - `docs/openapi.json` describes exactly [`ROUTES`] (tested).

mod books_routes;
pub mod client;
mod coupon_routes;
mod link_routes;
mod routes;
mod saf_routes;
mod tls_listener;
mod va_routes;

use std::net::SocketAddr;
use std::sync::Arc;

use axum::extract::rejection::{JsonRejection, QueryRejection};
use axum::extract::{FromRequest, FromRequestParts, Request};
use axum::http::request::Parts;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;
use tokio_util::sync::CancellationToken;

use crate::config::{AdminConfig, RoleKind, TokenConfig};
use crate::hosted::HostedError;
use crate::switch::Switch;

pub use routes::{router, ROUTES};

/// Who is calling.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Role {
    Operator,
    Issuer(String),
    Partner(String),
}

struct Token {
    name: String,
    role: Role,
    digest: [u8; 32],
    /// Requests a second, and what is left of them now.
    rate: u32,
    limiter: governor::DefaultDirectRateLimiter,
    limited: metrics::Counter,
}

#[derive(Clone)]
pub struct AppState {
    pub switch: Arc<Switch>,
    tokens: Arc<Vec<Token>>,
}

impl AppState {
    pub fn new(switch: Arc<Switch>, admin: &AdminConfig) -> AppState {
        let tokens = admin.tokens.iter().map(Token::new).collect();
        AppState {
            switch,
            tokens: Arc::new(tokens),
        }
    }
}

impl Token {
    /// A configured token, kept as its digest with its rate limiter.
    fn new(t: &TokenConfig) -> Token {
        let scope = t.scope.clone().unwrap_or_default();
        Token {
            rate: t.rate_per_s.get(),
            limiter: governor::RateLimiter::direct(governor::Quota::per_second(t.rate_per_s)),
            limited: metrics::counter!(
                "cyberswitch_admin_rate_limited_total",
                "token" => t.name.clone()
            ),
            name: t.name.clone(),
            role: match t.role {
                RoleKind::Operator => Role::Operator,
                RoleKind::Issuer => Role::Issuer(scope),
                RoleKind::Partner => Role::Partner(scope),
            },
            digest: Sha256::digest(t.token.expose().as_bytes()).into(),
        }
    }
}

/// An error as the API answers it.
#[derive(Debug)]
pub struct ApiError {
    status: StatusCode,
    code: &'static str,
    message: String,
    /// Seconds, for `Retry-After`.
    retry_after: Option<u64>,
}

impl ApiError {
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> ApiError {
        ApiError {
            status,
            code,
            message: message.into(),
            retry_after: None,
        }
    }
    pub fn forbidden(what: &str) -> ApiError {
        ApiError::new(
            StatusCode::FORBIDDEN,
            "forbidden",
            format!("this token may not {what}"),
        )
    }
    pub fn bad_request(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::BAD_REQUEST, "invalid_request", message)
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        // Whatever a route wrote, no card-number-like run of digits leaves in an error.
        let message = without_card_numbers(&self.message);
        let body = serde_json::json!({"error": {"code": self.code, "message": message}});
        let mut response = (self.status, Json(body)).into_response();
        if let Some(s) = self.retry_after {
            response.headers_mut().insert(header::RETRY_AFTER, s.into());
        }
        response
    }
}

impl From<HostedError> for ApiError {
    fn from(e: HostedError) -> ApiError {
        let status = match &e {
            HostedError::NotFound(_) => StatusCode::NOT_FOUND,
            HostedError::Invalid(_) => StatusCode::BAD_REQUEST,
            HostedError::Conflict(_) | HostedError::Status(_) => StatusCode::CONFLICT,
            HostedError::Storage(_) => StatusCode::INTERNAL_SERVER_ERROR,
            _ => StatusCode::UNPROCESSABLE_ENTITY,
        };
        ApiError::new(status, e.api_code(), e.to_string())
    }
}

/// The authenticated caller.
pub struct Caller {
    pub name: String,
    pub role: Role,
}

impl Caller {
    /// Operators and partners manage links and programs; issuers only look up.
    pub fn manager(&self, what: &str) -> Result<Option<String>, ApiError> {
        match &self.role {
            Role::Operator => Ok(None),
            Role::Partner(p) => Ok(Some(p.clone())),
            Role::Issuer(_) => Err(ApiError::forbidden(what)),
        }
    }

    pub fn operator(&self, what: &str) -> Result<(), ApiError> {
        match self.role {
            Role::Operator => Ok(()),
            _ => Err(ApiError::forbidden(what)),
        }
    }

    /// May this caller act on something created by `owner`?
    pub fn owns(&self, owner: Option<&str>, what: &str) -> Result<(), ApiError> {
        match (&self.role, owner) {
            (Role::Operator, _) => Ok(()),
            (Role::Partner(p), Some(o)) if p == o => Ok(()),
            _ => Err(ApiError::forbidden(what)),
        }
    }
}

impl FromRequestParts<AppState> for Caller {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Caller, ApiError> {
        let unauthorized = |m: &str| ApiError::new(StatusCode::UNAUTHORIZED, "unauthorized", m);
        let presented = parts
            .headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .ok_or_else(|| unauthorized("missing bearer token"))?;
        let digest: [u8; 32] = Sha256::digest(presented.trim().as_bytes()).into();
        // Every token is compared, in constant time, whatever matched before.
        let mut found = None;
        for t in state.tokens.iter() {
            if bool::from(t.digest.ct_eq(&digest)) {
                found = Some(t);
            }
        }
        let t = found.ok_or_else(|| unauthorized("unknown token"))?;
        if let Err(not_until) = t.limiter.check() {
            t.limited.increment(1);
            let wait = not_until.wait_time_from(governor::clock::Clock::now(
                &governor::clock::DefaultClock::default(),
            ));
            let mut e = ApiError::new(
                StatusCode::TOO_MANY_REQUESTS,
                "rate_limited",
                format!(
                    "token {} may make {} requests a second; retry in {} ms",
                    t.name,
                    t.rate,
                    wait.as_millis()
                ),
            );
            e.retry_after = Some(wait.as_secs_f64().ceil().max(1.0) as u64); // ok: under a second or so
            return Err(e);
        }
        Ok(Caller {
            name: t.name.clone(),
            role: t.role.clone(),
        })
    }
}

/// A JSON body whose rejection is a JSON error.
pub struct Body<T>(pub T);

impl<S: Send + Sync, T: serde::de::DeserializeOwned> FromRequest<S> for Body<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, ApiError> {
        match Json::<T>::from_request(req, state).await {
            Ok(Json(v)) => Ok(Body(v)),
            Err(e) => Err(ApiError::bad_request(json_rejection(&e))),
        }
    }
}

fn json_rejection(e: &JsonRejection) -> String {
    without_values(&e.body_text())
}

/// `text` with every run of twelve digits or more (a card number's length) as `…`.
fn without_card_numbers(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut run = String::new();
    for c in text.chars().chain(std::iter::once(' ')) {
        if c.is_ascii_digit() {
            run.push(c);
            continue;
        }
        out.push_str(if run.len() >= 12 { "…" } else { &run });
        run.clear();
        out.push(c);
    }
    out.pop();
    out
}

/// A parser's message without the values it quotes (SPEC §10: errors never echo input — a
/// card number sent as a JSON number would otherwise come back in the error). Serde quotes
/// what it found in backticks or double quotes; those become `…`, and so does any run of
/// six digits or more left (positions, "line 1 column 35", stay).
pub fn without_values(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '`' | '"' => {
                for d in chars.by_ref() {
                    if d == c {
                        break;
                    }
                }
                out.push('…');
            }
            c if c.is_ascii_digit() => {
                let mut run = String::from(c);
                while let Some(d) = chars.next_if(char::is_ascii_digit) {
                    run.push(d);
                }
                out.push_str(if run.len() >= 6 { "…" } else { &run });
            }
            c => out.push(c),
        }
    }
    out
}

/// At most this many records in one page of a listing (mismatches, callbacks, dead
/// letters).
pub const LIST_MAX: usize = 1_000;

/// A listing's `limit`: 1 to [`LIST_MAX`], [`LIST_MAX`] when not given.
pub fn page_limit(limit: Option<usize>) -> Result<usize, ApiError> {
    match limit {
        None => Ok(LIST_MAX),
        Some(n @ 1..=LIST_MAX) => Ok(n),
        Some(_) => Err(ApiError::bad_request(format!("limit: 1 to {LIST_MAX}"))),
    }
}

/// A query string whose rejection is a JSON error.
pub struct Params<T>(pub T);

impl<S: Send + Sync, T: serde::de::DeserializeOwned> FromRequestParts<S> for Params<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        axum::extract::Query::<T>::from_request_parts(parts, state)
            .await
            .map(|q| Params(q.0))
            .map_err(|e: QueryRejection| ApiError::bad_request(without_values(&e.body_text())))
    }
}

/// Bind and serve the API until `stop`; returns the bound address.
pub async fn serve(
    admin: &AdminConfig,
    switch: Arc<Switch>,
    stop: CancellationToken,
) -> Result<SocketAddr, String> {
    let state = AppState::new(switch, admin);
    let listener = tokio::net::TcpListener::bind(admin.addr)
        .await
        .map_err(|e| format!("admin API: bind {}: {e}", admin.addr))?;
    let addr = listener.local_addr().map_err(|e| e.to_string())?;
    let listener = crate::net::http_listener::CappedListener::new(
        listener,
        admin.max_connections,
        std::time::Duration::from_secs(admin.idle_timeout_s),
        std::time::Duration::from_secs(admin.request_timeout_s),
    );
    let app = router(state);
    let https = admin.tls.is_some();
    match &admin.tls {
        None => {
            tokio::spawn(async move {
                let served = axum::serve(listener, app)
                    .with_graceful_shutdown(async move { stop.cancelled().await })
                    .await;
                if let Err(e) = served {
                    tracing::error!(error = %e, "admin API stopped");
                }
            });
        }
        Some(tls) => {
            let listener = tls_listener::TlsListener::new(listener, tls.clone(), stop.clone())
                .map_err(|e| format!("admin API: {e}"))?;
            tokio::spawn(async move {
                let served = axum::serve(listener, app)
                    .with_graceful_shutdown(async move { stop.cancelled().await })
                    .await;
                if let Err(e) = served {
                    tracing::error!(error = %e, "admin API stopped");
                }
            });
        }
    }
    tracing::info!(%addr, https, "admin API listening");
    Ok(addr)
}

#[cfg(test)]
mod tests {
    #[test]
    fn errors_never_echo_what_was_sent() {
        let serde = "Failed to deserialize the JSON body into the target type: card_number: invalid type: integer `4111111111111111`, expected a string at line 1 column 35";
        let clean = super::without_values(serde);
        assert!(!clean.contains("4111"), "{clean}");
        assert!(
            clean.contains(
                "card_number: invalid type: integer …, expected a string at line 1 column 35"
            ),
            "{clean}"
        );
        assert_eq!(
            super::without_values(r#"unknown variant "9410000000000013x""#),
            "unknown variant …"
        );
        assert_eq!(
            super::without_card_numbers("card 9410000000000013 and 42"),
            "card … and 42"
        );
    }
}
