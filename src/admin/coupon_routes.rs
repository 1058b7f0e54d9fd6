//! Mobile coupons for operators and partners (F18): issue one (the token and its approval
//! number come back once, in this answer; the switch keeps no card number), and look one up
//! (its terms, masked card, and which purchase holds its use). A partner sees only the
//! coupons it issued.

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::routing::{get, post};
use axum::{Json, Router};
use serde_json::{json, Value};

use super::{ApiError, AppState, Body, Caller};
use crate::admin_bodies::CouponBody;
use crate::coupons::{Coupon, IssueError, IssueRequest};

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/v1/coupons", post(issue))
        .route("/v1/coupons/{id}", get(show))
}

fn storage(e: String) -> ApiError {
    ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "storage", e)
}

fn view(c: &Coupon) -> Value {
    json!({
        "id": c.id,
        "registration": c.registration,
        "card": c.card,
        "discount": c.discount,
        "expires": c.expires,
        "merchant": c.merchant,
        "auth_code": c.auth_code,
        "key_version": c.key_version,
        "status": if c.used_by.is_some() { "used" } else { "unused" },
        "used_by": c.used_by,
        "history": c.history,
    })
}

async fn issue(
    caller: Caller,
    State(s): State<AppState>,
    Body(b): Body<CouponBody>,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    let owner = caller.manager("issue coupons")?;
    let card = crate::admin_bodies::card_number(&b.card_number).map_err(ApiError::bad_request)?;
    let expires = crate::books::day::parse_iso(b.expires.trim())
        .ok_or_else(|| ApiError::bad_request("expires: expected YYYY-MM-DD"))?;
    let issued = s
        .switch
        .coupons
        .issue(IssueRequest {
            registration: b.registration,
            card,
            discount: b.discount,
            expires,
            merchant: b.merchant,
            owner,
        })
        .await
        .map_err(|e| match e {
            IssueError::Invalid(why) => ApiError::bad_request(why),
            IssueError::Storage(why) => storage(why),
        })?;
    tracing::info!(caller = %caller.name, coupon = %issued.coupon.id, "coupon issued");
    let mut body = view(&issued.coupon);
    body["token"] = json!(issued.token);
    Ok((StatusCode::CREATED, Json(body)))
}

async fn show(
    caller: Caller,
    State(s): State<AppState>,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let not_found = || ApiError::new(StatusCode::NOT_FOUND, "not_found", "no such coupon");
    let coupon = s
        .switch
        .coupons
        .get(&id)
        .map_err(storage)?
        .ok_or_else(not_found)?;
    // A partner is told of no coupon but its own (not even that another's exists).
    caller
        .owns(coupon.owner.as_deref(), "see this coupon")
        .map_err(|_| not_found())?;
    Ok(Json(view(&coupon)))
}
