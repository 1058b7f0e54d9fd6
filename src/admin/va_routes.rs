//! F17 virtual accounts and the partner callback outbox. A partner token sees and changes
//! only its own pools, orders, mismatches and callbacks; an operator sees all. Every change
//! is a synced journal step naming who made it (see [`crate::va`], [`crate::outbox`]).

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use super::{page_limit, ApiError, AppState, Body, Caller, Params, Role};
use crate::outbox::{parse_cursor, ItemStatus};
use crate::va::report::parse_date;
use crate::va::VaError;

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/v1/va/pools", get(pools).post(pool_add))
        .route("/v1/va/pools/retire", post(pool_retire))
        .route("/v1/va/orders", post(assign))
        .route("/v1/va/orders/{order}", get(order))
        .route("/v1/va/mismatches", get(mismatches))
        .route("/v1/va/report", get(report))
        .route("/v1/outbox", get(outbox))
        .route("/v1/outbox/{id}/resend", post(resend))
}

type ApiResult = Result<Json<Value>, ApiError>;

impl From<VaError> for ApiError {
    fn from(e: VaError) -> ApiError {
        let (status, code) = match &e {
            VaError::Invalid(_) => (StatusCode::BAD_REQUEST, "invalid_request"),
            VaError::NotFound(_) => (StatusCode::NOT_FOUND, "not_found"),
            VaError::Conflict(_) => (StatusCode::CONFLICT, "conflict"),
            VaError::Exhausted(_) => (StatusCode::CONFLICT, "pool_exhausted"),
            VaError::Storage(_) => (StatusCode::INTERNAL_SERVER_ERROR, "storage"),
        };
        ApiError::new(status, code, e.to_string())
    }
}

fn storage(e: String) -> ApiError {
    ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "storage", e)
}

/// A record as the answer's JSON.
fn answer<T: Serialize>(record: T) -> ApiResult {
    Ok(Json(
        serde_json::to_value(record).map_err(|e| storage(e.to_string()))?,
    ))
}

/// A pool change's partner (a partner token changes only its own pools) and who makes it.
fn pool_change(caller: &Caller, b: &PoolBody) -> Result<(String, String), ApiError> {
    let partner = acting_for(caller, b.partner.as_deref(), "change other partners' pools")?;
    Ok((partner, caller.name.clone()))
}

/// The partner a call acts for: a partner token's own, whatever it names (naming another is
/// refused); an operator names one.
fn acting_for(caller: &Caller, named: Option<&str>, what: &str) -> Result<String, ApiError> {
    match (&caller.role, named) {
        (Role::Operator, Some(p)) => Ok(p.to_string()),
        (Role::Operator, None) => Err(ApiError::bad_request("name the partner")),
        (Role::Partner(p), None) => Ok(p.clone()),
        (Role::Partner(p), Some(n)) if n == p => Ok(p.clone()),
        _ => Err(ApiError::forbidden(what)),
    }
}

/// The partner whose records a listing is limited to (`None`: all, operators only); a
/// partner lists its own, as [`acting_for`].
fn scope(caller: &Caller, named: Option<&str>, what: &str) -> Result<Option<String>, ApiError> {
    match caller.role {
        Role::Operator => Ok(named.map(str::to_string)),
        _ => acting_for(caller, named, what).map(Some),
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PoolBody {
    partner: Option<String>,
    bank: String,
    region: String,
    accounts: Vec<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PartnerQuery {
    partner: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct MismatchQuery {
    partner: Option<String>,
    /// The `next` of the page before.
    after: Option<String>,
    limit: Option<usize>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct AssignBody {
    partner: Option<String>,
    bank: String,
    region: String,
    order: String,
    amount: u64,
    expires_min: Option<u64>,
    /// Finer than minutes (short-lived payment pages, tests); not with `expires_min`.
    expires_s: Option<u64>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ReportQuery {
    partner: Option<String>,
    from: Option<String>,
    to: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct OutboxQuery {
    partner: Option<String>,
    status: Option<String>,
    /// The `next` of the page before.
    after: Option<String>,
    limit: Option<usize>,
}

async fn pools(
    caller: Caller,
    State(s): State<AppState>,
    Params(q): Params<PartnerQuery>,
) -> ApiResult {
    let partner = scope(&caller, q.partner.as_deref(), "see other partners' pools")?;
    Ok(Json(s.switch.va.pools(partner.as_deref())?))
}

async fn pool_add(caller: Caller, State(s): State<AppState>, Body(b): Body<PoolBody>) -> ApiResult {
    let (partner, who) = pool_change(&caller, &b)?;
    Ok(Json(
        s.switch
            .va
            .pool_add(&partner, &b.bank, &b.region, &b.accounts, &who)
            .await?,
    ))
}

async fn pool_retire(
    caller: Caller,
    State(s): State<AppState>,
    Body(b): Body<PoolBody>,
) -> ApiResult {
    let (partner, who) = pool_change(&caller, &b)?;
    Ok(Json(
        s.switch
            .va
            .pool_retire(&partner, &b.bank, &b.region, &b.accounts, &who)
            .await?,
    ))
}

async fn assign(caller: Caller, State(s): State<AppState>, Body(b): Body<AssignBody>) -> ApiResult {
    let partner = acting_for(
        &caller,
        b.partner.as_deref(),
        "assign other partners' accounts",
    )?;
    let expires_s = match (b.expires_min, b.expires_s) {
        (Some(_), Some(_)) => {
            return Err(ApiError::bad_request(
                "give expires_min or expires_s, not both",
            ))
        }
        (Some(m), None) => Some(m.saturating_mul(60)),
        (None, s) => s,
    };
    let o = s
        .switch
        .va
        .assign(&partner, &b.bank, &b.region, &b.order, b.amount, expires_s)
        .await?;
    answer(o)
}

async fn order(caller: Caller, State(s): State<AppState>, Path(id): Path<String>) -> ApiResult {
    let not_found = || ApiError::new(StatusCode::NOT_FOUND, "not_found", "no such order");
    let o = s.switch.va.order(&id)?.ok_or_else(not_found)?;
    // Another partner's order is as absent as one that does not exist.
    if caller.owns(Some(&o.partner), "see this order").is_err() {
        return Err(not_found());
    }
    answer(o)
}

async fn mismatches(
    caller: Caller,
    State(s): State<AppState>,
    Params(q): Params<MismatchQuery>,
) -> ApiResult {
    let partner = scope(
        &caller,
        q.partner.as_deref(),
        "see other partners' mismatches",
    )?;
    let limit = page_limit(q.limit)?;
    let (list, next) = s
        .switch
        .va
        .mismatches(partner.as_deref(), q.after.as_deref(), limit)?;
    Ok(Json(json!({ "mismatches": list, "next": next })))
}

async fn report(
    caller: Caller,
    State(s): State<AppState>,
    Params(q): Params<ReportQuery>,
) -> ApiResult {
    let partner = acting_for(&caller, q.partner.as_deref(), "see other partners' reports")?;
    let day = |d: &Option<String>| d.as_deref().map(parse_date).transpose();
    let from = day(&q.from).map_err(ApiError::bad_request)?;
    let to = day(&q.to).map_err(ApiError::bad_request)?;
    let r = s.switch.va.report(&partner, from, to)?;
    answer(r)
}

async fn outbox(
    caller: Caller,
    State(s): State<AppState>,
    Params(q): Params<OutboxQuery>,
) -> ApiResult {
    let partner = scope(
        &caller,
        q.partner.as_deref(),
        "see other partners' callbacks",
    )?;
    let status = match q.status.as_deref() {
        None => None,
        Some("pending") => Some(ItemStatus::Pending),
        Some("delivered") => Some(ItemStatus::Delivered),
        Some(_) => return Err(ApiError::bad_request("status: pending or delivered")),
    };
    let limit = page_limit(q.limit)?;
    if q.after
        .as_deref()
        .is_some_and(|a| parse_cursor(a).is_none())
    {
        return Err(ApiError::bad_request("after: the `next` of a listing"));
    }
    let (items, next) = s
        .switch
        .va
        .outbox()
        .page(partner.as_deref(), status, q.after.as_deref(), limit)
        .map_err(storage)?;
    Ok(Json(json!({ "items": items, "next": next })))
}

async fn resend(caller: Caller, State(s): State<AppState>, Path(id): Path<String>) -> ApiResult {
    caller.operator("send callbacks again")?;
    let who = format!("operator {}", caller.name);
    match s
        .switch
        .va
        .outbox()
        .resend(&id, &who)
        .await
        .map_err(storage)?
    {
        Some(item) => Ok(Json(
            json!({"id": item.id, "status": item.status, "resends": item.resends}),
        )),
        None => Err(ApiError::new(
            StatusCode::NOT_FOUND,
            "not_found",
            "no such callback",
        )),
    }
}
