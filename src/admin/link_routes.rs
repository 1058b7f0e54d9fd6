//! Links (F12) under consent and scope (SPEC §10): a partner's link waits for the account's
//! issuer; partners see and change only the links they made, issuers only their own
//! accounts; every change is audited with who and when (see [`crate::directory`]).

use axum::extract::State;
use axum::http::StatusCode;
use axum::Json;
use serde_json::{json, Value};

use super::{ApiError, AppState, Body, Caller, Role};
use crate::admin_bodies::{CardNumber, LinkBody, LinkKey};
use crate::directory::{LinkError, LinkStatus, WalletLink};

type ApiResult = Result<Json<Value>, ApiError>;

/// How a caller is named in a link's `created_by` and in the audit.
fn who(caller: &Caller) -> String {
    match &caller.role {
        Role::Operator => format!("operator:{}", caller.name),
        Role::Partner(p) => format!("partner:{p}"),
        Role::Issuer(i) => format!("issuer:{i}"),
    }
}

/// May `caller` see (and, for partners, change) `link`? Operators every link; a partner
/// the links it made; an issuer the links to its own accounts.
fn in_scope(caller: &Caller, link: &WalletLink) -> bool {
    match &caller.role {
        Role::Operator => true,
        Role::Partner(_) => link.created_by == who(caller),
        Role::Issuer(i) => link.issuer == *i,
    }
}

fn view(l: &WalletLink) -> Value {
    json!({
        "issuer": l.issuer,
        "account": l.account,
        "priority": l.priority,
        "label": l.label,
        "status": l.status.as_str(),
        "created_by": l.created_by,
    })
}

fn refused(e: LinkError) -> ApiError {
    match e {
        LinkError::TooMany { .. } => {
            ApiError::new(StatusCode::CONFLICT, "too_many_links", e.to_string())
        }
        LinkError::NotYours => {
            ApiError::new(StatusCode::CONFLICT, "linked_by_another", e.to_string())
        }
        LinkError::Storage(_) => super::routes::internal(e),
    }
}

/// `POST /v1/links`: an operator's link is active at once (operators act for the issuers);
/// a partner's waits for the issuer (`pending`); issuers confirm, they do not link.
pub async fn add(
    caller: Caller,
    State(s): State<AppState>,
    Body(b): Body<LinkBody>,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    caller.manager("link wallets (issuers confirm links: POST /v1/links/confirm)")?;
    let pan = super::routes::pan(&b.card_number)?;
    if s.switch.config.issuer(&b.issuer).is_none() {
        return Err(ApiError::bad_request("no such issuer"));
    }
    let account = b.account().map_err(ApiError::bad_request)?.to_string();
    let status = match caller.role {
        Role::Operator => LinkStatus::Active,
        _ => LinkStatus::Pending,
    };
    let by = who(&caller);
    let link = WalletLink {
        label: b.label,
        status,
        ..WalletLink::active(&b.issuer, &account, b.priority, &by)
    };
    s.switch
        .directory
        .link(&pan, link.clone(), &by, |old| in_scope(&caller, old))
        .map_err(refused)?;
    tracing::info!(caller = %caller.name, card = %pan, issuer = %link.issuer, status = link.status.as_str(), "wallet linked");
    let mut v = view(&link);
    v["card_number"] = json!(pan.masked());
    Ok((StatusCode::CREATED, Json(v)))
}

/// `POST /v1/links/confirm`: the account's issuer (or an operator) makes a link active.
pub async fn confirm(
    caller: Caller,
    State(s): State<AppState>,
    Body(b): Body<LinkKey>,
) -> ApiResult {
    match &caller.role {
        Role::Operator => {}
        Role::Issuer(i) if *i == b.issuer => {}
        _ => {
            return Err(ApiError::forbidden(
                "confirm links to another issuer's accounts",
            ))
        }
    }
    let pan = super::routes::pan(&b.card_number)?;
    let by = who(&caller);
    let Some(link) = s
        .switch
        .directory
        .confirm(&pan, &b.issuer, b.account.trim(), &by)
        .map_err(refused)?
    else {
        return Err(ApiError::new(
            StatusCode::NOT_FOUND,
            "not_found",
            "no such link",
        ));
    };
    tracing::info!(caller = %caller.name, card = %pan, issuer = %link.issuer, "link confirmed");
    let mut v = view(&link);
    v["card_number"] = json!(pan.masked());
    Ok(Json(v))
}

/// `DELETE /v1/links`: operators any link, partners their own, issuers links to their
/// accounts (a revocation). A link out of the caller's scope reads as absent.
pub async fn remove(
    caller: Caller,
    State(s): State<AppState>,
    Body(b): Body<LinkKey>,
) -> ApiResult {
    let pan = super::routes::pan(&b.card_number)?;
    let removed = s
        .switch
        .directory
        .unlink(&pan, &b.issuer, b.account.trim(), &who(&caller), |l| {
            in_scope(&caller, l)
        })
        .map_err(refused)?;
    Ok(Json(
        json!({"card_number": pan.masked(), "removed": removed}),
    ))
}

/// `POST /v1/links/query`: the card's links in the caller's scope.
pub async fn query(
    caller: Caller,
    State(s): State<AppState>,
    Body(b): Body<CardNumber>,
) -> ApiResult {
    let pan = super::routes::pan(&b.card_number)?;
    let links = s
        .switch
        .directory
        .wallets(&pan)
        .map_err(super::routes::internal)?;
    Ok(Json(json!({
        "card_number": pan.masked(),
        "links": links.iter().filter(|l| in_scope(&caller, l)).map(view).collect::<Vec<_>>(),
    })))
}

/// `POST /v1/links/history`: every change to the card's links (operators only: it names
/// every party).
pub async fn history(
    caller: Caller,
    State(s): State<AppState>,
    Body(b): Body<CardNumber>,
) -> ApiResult {
    caller.operator("read a card's link history")?;
    let pan = super::routes::pan(&b.card_number)?;
    let changes = s
        .switch
        .directory
        .history(&pan)
        .map_err(super::routes::internal)?;
    Ok(Json(json!({
        "card_number": pan.masked(),
        "changes": changes.iter().map(|c| json!({
            "at_ms": c.at_ms, "who": c.who, "action": c.action,
            "issuer": c.issuer, "account": c.account, "status": c.status,
        })).collect::<Vec<_>>(),
    })))
}

/// `POST /v1/keys/rotate`: move every card link record and hosted card reference hashed
/// under an older card key version to the current one, online (operators). Look-ups find
/// a card under any version meanwhile; link changes wait for the move (one lock).
pub async fn rotate_keys(caller: Caller, State(s): State<AppState>) -> ApiResult {
    caller.operator("rotate card keys")?;
    let switch = s.switch.clone();
    let moved = tokio::task::spawn_blocking(move || switch.directory.rotate())
        .await
        .map_err(super::routes::internal)?
        .map_err(super::routes::internal)?;
    tracing::info!(caller = %caller.name, links = moved.0, hosted = moved.1, "card keys rotated");
    Ok(Json(json!({
        "key_version": s.switch.directory.key_version(),
        "card_links_moved": moved.0,
        "hosted_card_refs_moved": moved.1,
    })))
}
