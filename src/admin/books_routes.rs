//! The books for operators (F13): the business day, cut-over on demand, settlement reports.

use axum::extract::{Query, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::json;

use super::{ApiError, AppState, Caller};
use crate::books::{cutover, day, report};

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/v1/books", get(status))
        .route("/v1/books/cutover", post(cut_over))
        .route("/v1/reports/settlement", get(settlement))
}

fn storage(e: String) -> ApiError {
    ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "storage", e)
}

async fn status(caller: Caller, State(s): State<AppState>) -> Result<Response, ApiError> {
    caller.operator("read the books")?;
    let books = &s.switch.books;
    let c = &books.config;
    Ok(Json(json!({
        "open_business_date": day::iso(books.open_date()),
        "closed_through": day::iso(books.closed_through()),
        "cutover": c.cutover.format("%H:%M").to_string(),
        "time_zone": c.time_zone.name(),
        "automatic": c.automatic,
    }))
    .into_response())
}

async fn cut_over(caller: Caller, State(s): State<AppState>) -> Result<Response, ApiError> {
    caller.operator("cut over")?;
    let closed = cutover::cutover(&s.switch.books, &s.switch.links)
        .await
        .map_err(storage)?;
    tracing::info!(operator = %caller.name, days = closed.len(), "cut-over on demand");
    Ok(Json(json!({ "closed": closed })).into_response())
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ReportQuery {
    /// `YYYY-MM-DD`; absent: the open business date.
    date: Option<String>,
    /// `json` (default) or `csv`.
    format: Option<String>,
}

async fn settlement(
    caller: Caller,
    State(s): State<AppState>,
    Query(q): Query<ReportQuery>,
) -> Result<Response, ApiError> {
    caller.operator("read settlement reports")?;
    let books = &s.switch.books;
    let date = match q.date.as_deref() {
        None => books.open_date(),
        Some(text) => day::parse_iso(text)
            .ok_or_else(|| ApiError::bad_request("date: expected YYYY-MM-DD"))?,
    };
    let report = report::settlement(books, date, s.switch.config.currency).map_err(storage)?;
    match q.format.as_deref() {
        None | Some("json") => Ok(Json(report).into_response()),
        Some("csv") => Ok(([(header::CONTENT_TYPE, "text/csv")], report.to_csv()).into_response()),
        Some(_) => Err(ApiError::bad_request("format: json or csv")),
    }
}
