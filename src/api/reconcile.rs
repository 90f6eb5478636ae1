//! Reconciliation over HTTP:
//!
//! - `POST /api/v1/reconcile` `{"account"?}`: a `positions.sync` job enqueued for the account
//!   (every Alpaca and IBKR account without one; the sessions record fresh snapshots and
//!   reconcile them), and the windows ready now checked; answers 202 with both
//! - `GET /api/v1/reconciliation?account=&from=&to=&limit=`: the windows checked and the breaks
//!   found over the days (UTC, `to` included), newest first

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Extension, Query, State};
use axum::http::StatusCode;
use axum::routing::{get, post};
use serde::Deserialize;
use serde_json::json;
use tradegate_actors::domain::NewOperatorAction;

use super::ApiState;
use super::auth::Caller;
use super::error::{Answer, ApiError, json_answer, parse_body};
use crate::report::{ReportRequest, day_range, produce};

/// The routes.
pub fn routes() -> Router<ApiState> {
    Router::new()
        .route("/api/v1/reconcile", post(reconcile))
        .route("/api/v1/reconciliation", get(results))
}

fn unavailable(e: impl std::fmt::Display) -> ApiError {
    ApiError::new(
        StatusCode::SERVICE_UNAVAILABLE,
        "audit_unavailable",
        e.to_string(),
    )
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct ReconcileBody {
    account: Option<String>,
}

async fn reconcile(
    State(state): State<ApiState>,
    Extension(Caller(by)): Extension<Caller>,
    body: Bytes,
) -> Answer {
    let body: ReconcileBody = if body.is_empty() {
        ReconcileBody::default()
    } else {
        parse_body(&body)?
    };
    let known: Vec<String> = state
        .alpaca_accounts
        .iter()
        .chain(&state.ibkr_accounts)
        .cloned()
        .collect();
    let accounts = match body.account {
        Some(a) if known.contains(&a) => vec![a],
        Some(a) => {
            return Err(ApiError::new(
                StatusCode::NOT_FOUND,
                "unknown_account",
                format!("{a:?} is not a configured Alpaca or IBKR account"),
            ));
        }
        None => known,
    };
    let mut client = state.pool.get().await.map_err(unavailable)?;
    // the request is on record with the jobs it enqueued, or neither is
    let tx = client.transaction().await.map_err(unavailable)?;
    tradegate_actors::store::operator_actions::record(
        &*tx,
        &NewOperatorAction {
            by: &by,
            action: "reconcile",
            target: None,
            previous: None,
            new: Some(json!({ "accounts": &accounts })),
            reason: None,
        },
    )
    .await
    .map_err(unavailable)?;
    let jobs = tradegate_actors::reconciliation::enqueue_syncs(&*tx, &accounts)
        .await
        .map_err(unavailable)?;
    tx.commit().await.map_err(unavailable)?;
    // the windows ready now, checked after the request is on record: a window that cannot be
    // checked is logged and tried again, it does not refuse the request
    let checked = tradegate_actors::reconciliation::check_accounts(
        &mut **client,
        &accounts,
        &state.reconcile,
        "api",
    )
    .await
    .map_err(unavailable)?;
    json_answer(
        StatusCode::ACCEPTED,
        tradegate_actors::reconciliation::Requested { jobs, checked },
    )
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct ResultsQuery {
    account: Option<String>,
    from: Option<chrono::NaiveDate>,
    to: Option<chrono::NaiveDate>,
    limit: Option<i64>,
}

async fn results(
    State(state): State<ApiState>,
    query: Result<Query<ResultsQuery>, axum::extract::rejection::QueryRejection>,
) -> Answer {
    let Query(q) = query.map_err(|e| ApiError::invalid(e.body_text()))?;
    let limit = q.limit.unwrap_or(100);
    if !(1..=1000).contains(&limit) {
        return Err(ApiError::invalid("limit must be between 1 and 1000"));
    }
    let range = day_range(q.from, q.to).map_err(|e| ApiError::invalid(e.to_string()))?;
    let client = state.pool.get().await.map_err(unavailable)?;
    let report = produce(
        &**client,
        &ReportRequest::Reconciliation {
            range,
            account: q.account,
            limit,
        },
    )
    .await
    .map_err(|e| unavailable(e.to_string()))?;
    json_answer(StatusCode::OK, report.to_json())
}
