//! The admin API's routes: links (F12), issuer look-up (F11), hosted cards (F14, F15),
//! pre-registered purchases (F15), masters and sub-accounts (F16), transaction search.

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::{json, Value};

use super::link_routes as links;
use super::{ApiError, AppState, Body, Caller, Params};
use crate::admin_bodies::{
    ActivateBody, AmountBody, CardNumber, DateQuery, ExpiryBody, IssueRequest, MasterBody,
    PeriodQuery, PreregBody, SubRequest, TxnQuery,
};
use crate::hosted::{Card, CardStatus};
use crate::iso8583::Pan;
use crate::switch::search::{Search, SEARCH_MAX_EXAMINED};

/// Every route (method, path): what `docs/openapi.json` must describe, no more, no less.
pub const ROUTES: &[(&str, &str)] = &[
    ("get", "/v1/health"),
    ("post", "/v1/links"),
    ("delete", "/v1/links"),
    ("post", "/v1/links/query"),
    ("post", "/v1/links/confirm"),
    ("post", "/v1/links/history"),
    ("post", "/v1/keys/rotate"),
    ("post", "/v1/issuers/{issuer}/lookup"),
    ("post", "/v1/cards"),
    ("post", "/v1/cards/lookup"),
    ("get", "/v1/cards/{id}"),
    ("post", "/v1/cards/{id}/activate"),
    ("post", "/v1/cards/{id}/recharge"),
    ("post", "/v1/cards/{id}/refund"),
    ("post", "/v1/cards/{id}/status"),
    ("post", "/v1/cards/{id}/reset-pin-tries"),
    ("post", "/v1/cards/{id}/expiry"),
    ("get", "/v1/cards/{id}/history"),
    ("get", "/v1/cards/{id}/statement"),
    ("post", "/v1/preregistrations"),
    ("get", "/v1/preregistrations/{id}"),
    ("post", "/v1/masters"),
    ("get", "/v1/masters/{id}"),
    ("post", "/v1/masters/{id}/fund"),
    ("post", "/v1/masters/{id}/subs"),
    ("get", "/v1/transactions"),
    ("get", "/v1/saf/dead-letters"),
    ("post", "/v1/saf/dead-letters/{id}/retry"),
    ("post", "/v1/saf/dead-letters/{id}/resolve"),
    ("post", "/v1/coupons"),
    ("get", "/v1/coupons/{id}"),
    // F17 virtual accounts and the partner callback outbox (`va_routes.rs`).
    ("get", "/v1/va/pools"),
    ("post", "/v1/va/pools"),
    ("post", "/v1/va/pools/retire"),
    ("post", "/v1/va/orders"),
    ("get", "/v1/va/orders/{order}"),
    ("get", "/v1/va/mismatches"),
    ("get", "/v1/va/report"),
    ("get", "/v1/outbox"),
    ("post", "/v1/outbox/{id}/resend"),
];

pub fn router(state: AppState) -> Router {
    Router::new()
        .route("/v1/health", get(health))
        .route("/v1/links", post(links::add).delete(links::remove))
        .route("/v1/links/query", post(links::query))
        .route("/v1/links/confirm", post(links::confirm))
        .route("/v1/links/history", post(links::history))
        .route("/v1/keys/rotate", post(links::rotate_keys))
        .route("/v1/issuers/{issuer}/lookup", post(issuer_lookup))
        .route("/v1/cards", post(card_issue))
        .route("/v1/cards/lookup", post(card_lookup))
        .route("/v1/cards/{id}", get(card_show))
        .route("/v1/cards/{id}/activate", post(card_activate))
        .route("/v1/cards/{id}/recharge", post(card_recharge))
        .route("/v1/cards/{id}/refund", post(card_refund))
        .route("/v1/cards/{id}/status", post(card_status))
        .route("/v1/cards/{id}/reset-pin-tries", post(card_reset_pin))
        .route("/v1/cards/{id}/expiry", post(card_expiry))
        .route("/v1/cards/{id}/history", get(card_history))
        .route("/v1/cards/{id}/statement", get(card_statement))
        .route("/v1/preregistrations", post(prereg_add))
        .route("/v1/preregistrations/{id}", get(prereg_show))
        .route("/v1/masters", post(master_create))
        .route("/v1/masters/{id}", get(master_show))
        .route("/v1/masters/{id}/fund", post(master_fund))
        .route("/v1/masters/{id}/subs", post(master_add_sub))
        .route("/v1/transactions", get(transactions))
        .merge(super::saf_routes::router())
        .merge(super::books_routes::router())
        .merge(super::coupon_routes::router())
        .merge(super::va_routes::router())
        .fallback(|| async { ApiError::new(StatusCode::NOT_FOUND, "not_found", "no such route") })
        .method_not_allowed_fallback(|| async {
            ApiError::new(
                StatusCode::METHOD_NOT_ALLOWED,
                "method_not_allowed",
                "method not allowed here",
            )
        })
        .with_state(state)
}

type ApiResult = Result<Json<Value>, ApiError>;
type Created = Result<(StatusCode, Json<Value>), ApiError>;

pub(super) fn pan(text: &str) -> Result<Pan, ApiError> {
    crate::admin_bodies::card_number(text).map_err(ApiError::bad_request)
}

pub(super) fn internal(e: impl std::fmt::Display) -> ApiError {
    ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "storage", e.to_string())
}

/// 200 while the switch can journal; 503 once its journal has halted (a failed write with
/// a leg sent ahead of its record pending: every transaction is answered 96 until a restart).
async fn health(_caller: Caller, State(s): State<AppState>) -> ApiResult {
    if s.switch.journal.is_halted() {
        return Err(ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "journal_halted",
            "the journal halted after a failed write; restart the switch",
        ));
    }
    Ok(Json(json!({"status": "ok"})))
}

// --- Issuer look-up (F11) ---

async fn issuer_lookup(
    caller: Caller,
    State(s): State<AppState>,
    Path(issuer): Path<String>,
    Body(b): Body<CardNumber>,
) -> ApiResult {
    match &caller.role {
        super::Role::Operator => {}
        super::Role::Issuer(own) if *own == issuer => {}
        _ => {
            return Err(ApiError::forbidden(&format!(
                "look up issuer {issuer}'s accounts"
            )))
        }
    }
    if s.switch.config.issuer(&issuer).is_none() {
        return Err(ApiError::new(
            StatusCode::NOT_FOUND,
            "not_found",
            format!("no issuer {issuer}"),
        ));
    }
    let pan = pan(&b.card_number)?;
    let accounts: Vec<Value> = s
        .switch
        .directory
        .wallets(&pan)
        .map_err(internal)?
        .iter()
        .filter(|l| l.issuer == issuer)
        .map(|l| json!({"account": l.account, "priority": l.priority, "label": l.label}))
        .collect();
    Ok(Json(
        json!({"issuer": issuer, "card_number": pan.masked(), "accounts": accounts}),
    ))
}

// --- Hosted cards (F14, F15) ---

fn card_for(s: &AppState, caller: &Caller, id: &str) -> Result<Card, ApiError> {
    let card = s.switch.hosted.card(id)?;
    caller.owns(card.owner.as_deref(), "act on this card")?;
    Ok(card)
}

async fn card_issue(
    caller: Caller,
    State(s): State<AppState>,
    Body(mut b): Body<IssueRequest>,
) -> Created {
    b.owner = caller.manager("issue cards")?;
    let (card, pan) = s.switch.hosted.issue(b).await?;
    tracing::info!(caller = %caller.name, card = %pan, id = %card.id, "card issued");
    Ok((StatusCode::CREATED, Json(s.switch.hosted.view(&card))))
}

async fn card_lookup(
    caller: Caller,
    State(s): State<AppState>,
    Body(b): Body<CardNumber>,
) -> ApiResult {
    caller.manager("look up cards")?;
    let pan = pan(&b.card_number)?;
    let card = s.switch.hosted.card_by_pan(&pan)?.ok_or_else(|| {
        ApiError::new(
            StatusCode::NOT_FOUND,
            "not_found",
            format!("no hosted card {}", pan.masked()),
        )
    })?;
    caller.owns(card.owner.as_deref(), "see this card")?;
    Ok(Json(s.switch.hosted.view(&card)))
}

async fn card_show(caller: Caller, State(s): State<AppState>, Path(id): Path<String>) -> ApiResult {
    let card = card_for(&s, &caller, &id)?;
    Ok(Json(s.switch.hosted.view(&card)))
}

async fn card_activate(
    caller: Caller,
    State(s): State<AppState>,
    Path(id): Path<String>,
    Body(b): Body<ActivateBody>,
) -> ApiResult {
    card_for(&s, &caller, &id)?;
    let card = s.switch.hosted.activate(&id, b.pin.as_deref()).await?;
    Ok(Json(s.switch.hosted.view(&card)))
}

async fn card_recharge(
    caller: Caller,
    State(s): State<AppState>,
    Path(id): Path<String>,
    Body(b): Body<AmountBody>,
) -> ApiResult {
    card_for(&s, &caller, &id)?;
    let leg = b.leg(&id).map_err(ApiError::bad_request)?;
    s.switch.hosted.recharge(&id, b.amount, &leg).await?;
    let card = s.switch.hosted.card(&id)?;
    Ok(Json(s.switch.hosted.view(&card)))
}

async fn card_refund(
    caller: Caller,
    State(s): State<AppState>,
    Path(id): Path<String>,
) -> ApiResult {
    card_for(&s, &caller, &id)?;
    let refunded = s.switch.hosted.refund(&id).await?;
    let card = s.switch.hosted.card(&id)?;
    let mut v = s.switch.hosted.view(&card);
    v["refunded"] = json!(refunded);
    Ok(Json(v))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct StatusBody {
    status: CardStatus,
}

async fn card_status(
    caller: Caller,
    State(s): State<AppState>,
    Path(id): Path<String>,
    Body(b): Body<StatusBody>,
) -> ApiResult {
    card_for(&s, &caller, &id)?;
    let card = s.switch.hosted.set_status(&id, b.status).await?;
    Ok(Json(s.switch.hosted.view(&card)))
}

async fn card_reset_pin(
    caller: Caller,
    State(s): State<AppState>,
    Path(id): Path<String>,
) -> ApiResult {
    caller.operator("reset PIN tries")?;
    let card = s.switch.hosted.reset_pin_tries(&id).await?;
    Ok(Json(s.switch.hosted.view(&card)))
}

async fn card_expiry(
    caller: Caller,
    State(s): State<AppState>,
    Path(id): Path<String>,
    Body(b): Body<ExpiryBody>,
) -> ApiResult {
    caller.operator("change expiry dates")?;
    let card = s.switch.hosted.set_expiry(&id, b.expiry.trim()).await?;
    Ok(Json(s.switch.hosted.view(&card)))
}

async fn card_history(
    caller: Caller,
    State(s): State<AppState>,
    Path(id): Path<String>,
    Params(q): Params<PeriodQuery>,
) -> ApiResult {
    let card = card_for(&s, &caller, &id)?;
    let (from, to) = q.months().map_err(ApiError::bad_request)?;
    let entries = s.switch.hosted.history_between(&card, from, to)?;
    Ok(Json(
        json!({"card": card.id, "from": q.from, "to": q.to, "entries": entries}),
    ))
}

async fn card_statement(
    caller: Caller,
    State(s): State<AppState>,
    Path(id): Path<String>,
    Params(q): Params<DateQuery>,
) -> ApiResult {
    let card = card_for(&s, &caller, &id)?;
    let day = q.day().map_err(ApiError::bad_request)?;
    let st = s.switch.hosted.statement(&card, day).await?;
    Ok(Json(serde_json::to_value(st).map_err(internal)?))
}

// --- Pre-registered purchases (F15) ---

async fn prereg_add(
    caller: Caller,
    State(s): State<AppState>,
    Body(b): Body<PreregBody>,
) -> Created {
    let owner = caller.manager("pre-register purchases")?;
    card_for(&s, &caller, &b.card_id)?;
    let until = b.valid_until_ms().map_err(ApiError::bad_request)?;
    let p = s
        .switch
        .hosted
        .preregister(&b.card_id, &b.merchant_id, b.amount, until, owner)
        .await?;
    Ok((
        StatusCode::CREATED,
        Json(serde_json::to_value(p).map_err(internal)?),
    ))
}

async fn prereg_show(
    caller: Caller,
    State(s): State<AppState>,
    Path(id): Path<String>,
) -> ApiResult {
    let p = s.switch.hosted.prereg(&id)?;
    caller.owns(p.owner.as_deref(), "see this purchase")?;
    Ok(Json(serde_json::to_value(p).map_err(internal)?))
}

// --- Masters and sub-accounts (F16) ---

fn master_view(s: &AppState, id: &str) -> Result<Value, ApiError> {
    let hosted = &s.switch.hosted;
    let m = hosted.master(id)?;
    let balance = hosted
        .ledger
        .balance(&crate::hosted::master_account(id))
        .unwrap_or_default();
    let subs: Vec<Value> = hosted.subs(id)?.iter().map(|c| hosted.view(c)).collect();
    Ok(json!({
        "id": m.id, "owner": m.owner, "unit": m.unit,
        "balance": balance.posted, "available": balance.available(), "subs": subs,
    }))
}

fn master_for(s: &AppState, caller: &Caller, id: &str) -> Result<(), ApiError> {
    let m = s.switch.hosted.master(id)?;
    caller.owns(m.owner.as_deref(), "act on this master account")
}

async fn master_create(
    caller: Caller,
    State(s): State<AppState>,
    Body(b): Body<MasterBody>,
) -> Created {
    let owner = caller.manager("create master accounts")?;
    let m = s.switch.hosted.create_master(b.id, owner).await?;
    Ok((StatusCode::CREATED, Json(master_view(&s, &m.id)?)))
}

async fn master_show(
    caller: Caller,
    State(s): State<AppState>,
    Path(id): Path<String>,
) -> ApiResult {
    master_for(&s, &caller, &id)?;
    Ok(Json(master_view(&s, &id)?))
}

async fn master_fund(
    caller: Caller,
    State(s): State<AppState>,
    Path(id): Path<String>,
    Body(b): Body<AmountBody>,
) -> ApiResult {
    master_for(&s, &caller, &id)?;
    let leg = b.leg(&id).map_err(ApiError::bad_request)?;
    s.switch.hosted.fund_master(&id, b.amount, &leg).await?;
    Ok(Json(master_view(&s, &id)?))
}

async fn master_add_sub(
    caller: Caller,
    State(s): State<AppState>,
    Path(id): Path<String>,
    Body(b): Body<SubRequest>,
) -> Created {
    master_for(&s, &caller, &id)?;
    let owner = caller.manager("add sub-accounts")?;
    let (card, _pan) = s.switch.hosted.add_sub(&id, b, owner).await?;
    Ok((StatusCode::CREATED, Json(s.switch.hosted.view(&card))))
}

// --- Transactions (disputes) ---

async fn transactions(
    caller: Caller,
    State(s): State<AppState>,
    Params(q): Params<TxnQuery>,
) -> ApiResult {
    caller.operator("search transactions")?;
    let bounds = q
        .day()
        .map_err(ApiError::bad_request)?
        .map(crate::hosted::cards::day_bounds);
    let search = Search {
        limit: q.limit(),
        rrn: q.rrn.map(|r| r.trim().to_string()),
        stan: q.stan,
        between_ms: bounds,
    };
    let store = s.switch.journal.store().clone();
    // Off the runtime's threads: a search reads records by the million on a busy switch.
    let found = tokio::task::spawn_blocking(move || search.run(&store, SEARCH_MAX_EXAMINED))
        .await
        .map_err(internal)?
        .map_err(internal)?;
    Ok(Json(
        json!({"transactions": found.transactions, "truncated": found.truncated}),
    ))
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    #[test]
    fn openapi_describes_exactly_the_routes() {
        let text = include_str!("../../docs/openapi.json");
        let doc: serde_json::Value = serde_json::from_str(text).unwrap();
        let documented: BTreeSet<(String, String)> = doc["paths"]
            .as_object()
            .unwrap()
            .iter()
            .flat_map(|(path, methods)| {
                methods
                    .as_object()
                    .unwrap()
                    .keys()
                    .map(move |m| (m.clone(), path.clone()))
            })
            .collect();
        let served: BTreeSet<(String, String)> = super::ROUTES
            .iter()
            .map(|(m, p)| (m.to_string(), p.to_string()))
            .collect();
        assert_eq!(documented, served);
    }
}
