//! Order-path endpoints for operators: the kill switch (`tradegate halt|resume` call it), the
//! history of operator actions, and decisions with their executions.

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Extension, Path, Query, State};
use axum::http::StatusCode;
use axum::routing::get;
use serde::Deserialize;
use serde_json::json;
use tradegate_actors::domain::KillSwitch;
use tradegate_actors::store;
use tradegate_actors::store::operator_actions::MAX_REASON_CHARS;
use uuid::Uuid;

use super::ApiState;
use super::auth::Caller;
use super::error::{Answer, ApiError, json_answer, parse_body};

/// The routes.
pub fn routes() -> Router<ApiState> {
    Router::new()
        .route("/v1/strategy", get(super::strategy::upgrade))
        .route(
            "/api/v1/kill-switch",
            get(get_kill_switch).post(set_kill_switch),
        )
        .route("/api/v1/operator-actions", get(list_actions))
        .route("/api/v1/decisions", get(list_decisions))
        .route("/api/v1/decisions/{id}", get(get_decision))
}

fn unavailable(e: impl std::fmt::Display) -> ApiError {
    ApiError::new(
        StatusCode::SERVICE_UNAVAILABLE,
        "audit_unavailable",
        e.to_string(),
    )
}

async fn get_kill_switch(State(state): State<ApiState>) -> Answer {
    let kill = state.router.kill_switch().await.map_err(|r| {
        ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "router_unavailable",
            r.message,
        )
    })?;
    json_answer(StatusCode::OK, json!({"state": kill}))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct SetKillSwitch {
    state: KillSwitch,
    #[serde(default)]
    reason: Option<String>,
    /// Accepted for older clients and ignored: a change is recorded under the token's name
    #[serde(default)]
    #[allow(dead_code)]
    changed_by: Option<String>,
}

/// A reason an operator gives: at most [`MAX_REASON_CHARS`] characters, no NUL.
pub(crate) fn check_reason(reason: Option<&str>) -> Result<(), ApiError> {
    match reason {
        Some(r) if r.chars().count() > MAX_REASON_CHARS => Err(ApiError::invalid(format!(
            "reason: at most {MAX_REASON_CHARS} characters"
        ))),
        Some(r) if r.contains('\0') => Err(ApiError::invalid("reason: no NUL characters")),
        _ => Ok(()),
    }
}

async fn set_kill_switch(
    State(state): State<ApiState>,
    Extension(Caller(by)): Extension<Caller>,
    body: Bytes,
) -> Answer {
    let request: SetKillSwitch = parse_body(&body)?;
    check_reason(request.reason.as_deref())?;
    state
        .router
        .set_kill_switch(request.state, request.reason.clone(), &by)
        .await
        .map_err(|r| {
            ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "audit_unavailable",
                r.message,
            )
        })?;
    json_answer(
        StatusCode::OK,
        json!({"state": request.state, "reason": request.reason, "changed_by": by.name}),
    )
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ActionsQuery {
    since: Option<chrono::DateTime<chrono::Utc>>,
    until: Option<chrono::DateTime<chrono::Utc>>,
    actor: Option<String>,
    action: Option<String>,
    limit: Option<i64>,
}

/// `GET /api/v1/operator-actions?since=&until=&actor=&action=&limit=`: newest first.
async fn list_actions(State(state): State<ApiState>, Query(q): Query<ActionsQuery>) -> Answer {
    let limit = q.limit.unwrap_or(100);
    if !(1..=1000).contains(&limit) {
        return Err(ApiError::invalid("limit must be between 1 and 1000"));
    }
    let filter = store::operator_actions::ActionFilter {
        since: q.since,
        until: q.until,
        actor: q.actor,
        action: q.action,
        limit,
    };
    let client = state.pool.get().await.map_err(unavailable)?;
    let rows = store::operator_actions::list(&**client, &filter)
        .await
        .map_err(unavailable)?;
    json_answer(StatusCode::OK, rows)
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ListQuery {
    #[serde(default)]
    limit: Option<i64>,
}

async fn list_decisions(State(state): State<ApiState>, Query(q): Query<ListQuery>) -> Answer {
    let limit = q.limit.unwrap_or(100);
    if !(1..=1000).contains(&limit) {
        return Err(ApiError::invalid("limit must be between 1 and 1000"));
    }
    let client = state.pool.get().await.map_err(unavailable)?;
    let rows = store::reports::recent_decisions(&**client, limit)
        .await
        .map_err(unavailable)?;
    json_answer(StatusCode::OK, rows)
}

async fn get_decision(State(state): State<ApiState>, Path(id): Path<String>) -> Answer {
    let id = Uuid::parse_str(&id).map_err(|e| {
        ApiError::new(
            StatusCode::BAD_REQUEST,
            "malformed",
            format!("{id:?} is not a UUID: {e}"),
        )
    })?;
    let mut client = state.pool.get().await.map_err(unavailable)?;
    match store::reports::decision_view(&mut client, id)
        .await
        .map_err(unavailable)?
    {
        Some(view) => json_answer(StatusCode::OK, view),
        None => Err(ApiError::new(
            StatusCode::NOT_FOUND,
            "unknown_decision",
            format!("no decision {id}"),
        )),
    }
}
