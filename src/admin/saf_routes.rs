//! The store-and-forward dead letters, for operators: list them, put one back in its queue
//! (after fixing what made the host refuse it), or close one settled outside the switch. Every
//! change is a synced journal step naming who made it.

use crate::admin_bodies::Resolution;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::routing::{get, post};
use axum::{Json, Router};
use serde_json::{json, Value};

use super::{page_limit, ApiError, AppState, Body, Caller, Params};

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/v1/saf/dead-letters", get(list))
        .route("/v1/saf/dead-letters/{id}/retry", post(retry))
        .route("/v1/saf/dead-letters/{id}/resolve", post(resolve))
}

type ApiResult = Result<Json<Value>, ApiError>;

fn storage(e: String) -> ApiError {
    ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "storage", e)
}

fn no_such(id: &str) -> ApiError {
    // The id is hex of the queue key: safe to name back.
    let id: String = id
        .chars()
        .filter(char::is_ascii_hexdigit)
        .take(80)
        .collect();
    ApiError::new(
        StatusCode::NOT_FOUND,
        "not_found",
        format!("no dead letter {id}"),
    )
}

#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct PageQuery {
    /// The `next` of the page before.
    after: Option<String>,
    limit: Option<usize>,
}

async fn list(
    caller: Caller,
    State(s): State<AppState>,
    Params(q): Params<PageQuery>,
) -> ApiResult {
    caller.operator("list dead letters")?;
    let limit = page_limit(q.limit)?;
    let after = q
        .after
        .map(hex::decode)
        .transpose()
        .map_err(|_| ApiError::bad_request("after: a dead letter's id"))?;
    let (list, next) = s
        .switch
        .saf
        .dead_letter_page(after.as_deref(), limit)
        .map_err(storage)?;
    Ok(Json(json!({ "dead_letters": list, "next": next })))
}

async fn retry(caller: Caller, State(s): State<AppState>, Path(id): Path<String>) -> ApiResult {
    caller.operator("re-queue dead letters")?;
    let who = format!("operator {}", caller.name);
    match s.switch.saf.retry_dead_letter(&id, &who).await {
        Ok(true) => Ok(Json(json!({ "id": id, "status": "queued" }))),
        Ok(false) => Err(no_such(&id)),
        Err(e) => Err(storage(e)),
    }
}

async fn resolve(
    caller: Caller,
    State(s): State<AppState>,
    Path(id): Path<String>,
    Body(b): Body<Resolution>,
) -> ApiResult {
    caller.operator("resolve dead letters")?;
    let note = b.note().map_err(ApiError::bad_request)?;
    let who = format!("operator {}", caller.name);
    match s.switch.saf.resolve_dead_letter(&id, &who, note).await {
        Ok(true) => Ok(Json(json!({ "id": id, "status": "resolved" }))),
        Ok(false) => Err(no_such(&id)),
        Err(e) => Err(storage(e)),
    }
}
