//! The trail's seals for auditors: `GET /api/v1/audit/seals`.

use axum::Router;
use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::routing::get;
use serde::Deserialize;
use tradegate_actors::store::audit::seals;

use super::ApiState;
use super::error::{Answer, ApiError, json_answer};

/// The routes.
pub fn routes() -> Router<ApiState> {
    Router::new().route("/api/v1/audit/seals", get(list_seals))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct SealsQuery {
    /// Seals with ids below this (the next page)
    before: Option<i64>,
    limit: Option<i64>,
}

/// `GET /api/v1/audit/seals?before=&limit=`: newest first (at most `limit`, default 100).
async fn list_seals(State(state): State<ApiState>, Query(q): Query<SealsQuery>) -> Answer {
    let limit = q.limit.unwrap_or(100);
    if !(1..=1000).contains(&limit) {
        return Err(ApiError::invalid("limit must be between 1 and 1000"));
    }
    let unavailable = |e: &dyn std::fmt::Display| {
        ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "audit_unavailable",
            e.to_string(),
        )
    };
    let client = state.pool.get().await.map_err(|e| unavailable(&e))?;
    let rows = seals::list(&**client, q.before, limit)
        .await
        .map_err(|e| unavailable(&e))?;
    json_answer(StatusCode::OK, rows)
}
