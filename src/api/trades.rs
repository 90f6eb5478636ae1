//! The IBKR trades read API and the sync triggers:
//!
//! - `GET /api/v1/trades?account_id=&status=&symbol=&limit=` (most recently executed first)
//! - `GET /api/v1/trades/{id}`
//! - `GET /api/v1/trades/{id}/executions` (canonical and superseded fills)
//! - `POST /api/v1/trades/sync` `{"account_id"?, "lookback_days"?}`: sync now (every configured
//!   account without `account_id`) and answer with the reports
//! - `POST /api/v1/jobs/trades.sync` `{"account_id", "lookback_days"?, "host"?, "port"?,
//!   "client_id"?, "connect_timeout_seconds"?}`: enqueue a sync job
//!   (idempotent: while one is pending for the account, that one is returned, 200 instead of 202)

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Extension, Path, Query, State};
use axum::http::StatusCode;
use axum::routing::{get, post};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use tradegate_actors::domain::{NewOperatorAction, SyncReport, TradeFilter};
use tradegate_actors::ibkr_syncer::{JobOverrides, SyncError};
use tradegate_actors::store::{broker_sync, jobs};

use super::auth::Caller;
use super::error::{Answer, ApiError, json_answer, parse_body};
use super::{ApiState, record_action};

/// The routes.
pub fn routes() -> Router<ApiState> {
    Router::new()
        .route("/api/v1/trades", get(list))
        .route("/api/v1/trades/sync", post(sync_now))
        .route("/api/v1/trades/{id}", get(show))
        .route("/api/v1/trades/{id}/executions", get(executions))
        .route("/api/v1/jobs/trades.sync", post(enqueue))
}

impl From<SyncError> for ApiError {
    fn from(e: SyncError) -> Self {
        let status = match e {
            SyncError::InProgress(_) => StatusCode::CONFLICT,
            SyncError::UnknownAccount(_) => StatusCode::NOT_FOUND,
            SyncError::Tws(_) | SyncError::Positions(_) | SyncError::NotManaged { .. } => {
                StatusCode::BAD_GATEWAY
            }
            SyncError::TimedOut(_) => StatusCode::GATEWAY_TIMEOUT,
            SyncError::Job(_) => StatusCode::UNPROCESSABLE_ENTITY,
            SyncError::Store(_) | SyncError::Ingestion(_) | SyncError::Unavailable(_) => {
                StatusCode::SERVICE_UNAVAILABLE
            }
        };
        Self::new(status, e.code(), e.to_string())
    }
}

fn unavailable(e: impl std::fmt::Display) -> ApiError {
    ApiError::new(
        StatusCode::SERVICE_UNAVAILABLE,
        "audit_unavailable",
        e.to_string(),
    )
}

async fn connection(state: &ApiState) -> Result<deadpool_postgres::Object, ApiError> {
    state
        .pool
        .get()
        .await
        .map_err(|e| unavailable(format!("no database connection: {e}")))
}

fn parse_id(text: &str) -> Result<i64, ApiError> {
    text.parse().map_err(|_| {
        ApiError::new(
            StatusCode::BAD_REQUEST,
            "malformed",
            format!("trade id {text:?} is not a number"),
        )
    })
}

fn not_found(id: i64) -> ApiError {
    ApiError::new(
        StatusCode::NOT_FOUND,
        "unknown_trade",
        format!("no trade {id}"),
    )
}

async fn list(State(state): State<ApiState>, Query(filter): Query<TradeFilter>) -> Answer {
    filter.validate().map_err(ApiError::invalid)?;
    let client = connection(&state).await?;
    let trades = broker_sync::list_trades(&**client, &filter)
        .await
        .map_err(unavailable)?;
    json_answer(StatusCode::OK, trades)
}

async fn show(State(state): State<ApiState>, Path(id): Path<String>) -> Answer {
    let id = parse_id(&id)?;
    let client = connection(&state).await?;
    match broker_sync::get_trade(&**client, id)
        .await
        .map_err(unavailable)?
    {
        Some(trade) => json_answer(StatusCode::OK, trade),
        None => Err(not_found(id)),
    }
}

async fn executions(State(state): State<ApiState>, Path(id): Path<String>) -> Answer {
    let id = parse_id(&id)?;
    let client = connection(&state).await?;
    if broker_sync::get_trade(&**client, id)
        .await
        .map_err(unavailable)?
        .is_none()
    {
        return Err(not_found(id));
    }
    let fills = broker_sync::list_trade_fills(&**client, id)
        .await
        .map_err(unavailable)?;
    json_answer(StatusCode::OK, fills)
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct SyncBody {
    account_id: Option<String>,
    lookback_days: Option<u32>,
}

/// One account's outcome in a sync answer.
#[derive(Debug, Serialize)]
struct AccountOutcome {
    account_id: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    report: Option<SyncReport>,
    #[serde(skip_serializing_if = "Option::is_none")]
    error: Option<Value>,
}

fn check_lookback(days: Option<u32>) -> Result<(), ApiError> {
    match days {
        Some(d) if !(1..=365).contains(&d) => Err(ApiError::invalid(format!(
            "lookback_days must be 1 to 365, got {d}"
        ))),
        _ => Ok(()),
    }
}

fn known_account(state: &ApiState, account: &str) -> Result<(), ApiError> {
    if state.ibkr_accounts.iter().any(|a| a == account) {
        Ok(())
    } else {
        Err(SyncError::UnknownAccount(account.to_string()).into())
    }
}

async fn sync_now(
    State(state): State<ApiState>,
    Extension(Caller(by)): Extension<Caller>,
    body: Bytes,
) -> Answer {
    let body: SyncBody = if body.is_empty() {
        SyncBody {
            account_id: None,
            lookback_days: None,
        }
    } else {
        parse_body(&body)?
    };
    check_lookback(body.lookback_days)?;
    if let Some(account) = &body.account_id {
        known_account(&state, account)?;
    } else if state.ibkr_accounts.is_empty() {
        return Err(ApiError::invalid(
            "no IBKR accounts are configured ([ibkr] accounts)",
        ));
    }
    record_action(
        &state,
        &NewOperatorAction {
            by: &by,
            action: "trades.sync",
            target: Some(body.account_id.as_deref().unwrap_or("all")),
            previous: None,
            new: Some(json!({"lookback_days": body.lookback_days})),
            reason: None,
        },
    )
    .await?;
    if let Some(account) = &body.account_id {
        let report = state.ibkr.sync(account, body.lookback_days).await?;
        return json_answer(StatusCode::OK, report);
    }
    let mut outcomes = Vec::new();
    let mut failed = false;
    for account in &state.ibkr_accounts {
        let outcome = match state.ibkr.sync(account, body.lookback_days).await {
            Ok(report) => AccountOutcome {
                account_id: account.clone(),
                report: Some(report),
                error: None,
            },
            Err(e) => {
                failed = true;
                AccountOutcome {
                    account_id: account.clone(),
                    report: None,
                    error: Some(json!({"code": e.code(), "message": e.to_string()})),
                }
            }
        };
        outcomes.push(outcome);
    }
    // 207: some accounts synced and some did not; each outcome says which
    let status = if failed {
        StatusCode::MULTI_STATUS
    } else {
        StatusCode::OK
    };
    json_answer(status, json!({ "accounts": outcomes }))
}

/// The account, and the job's overrides (each checked by [`JobOverrides::parse`]: any other
/// key is refused).
#[derive(Debug, Deserialize)]
struct EnqueueBody {
    account_id: String,
    #[serde(flatten)]
    overrides: serde_json::Map<String, Value>,
}

async fn enqueue(
    State(state): State<ApiState>,
    Extension(Caller(by)): Extension<Caller>,
    body: Bytes,
) -> Answer {
    let body: EnqueueBody = parse_body(&body)?;
    known_account(&state, &body.account_id)?;
    let payload = Value::Object(body.overrides);
    JobOverrides::parse(&payload).map_err(|e| ApiError::invalid(e.to_string()))?;
    // the job and its record commit together, on one connection: no job without its record
    let mut client = connection(&state).await?;
    let tx = client.transaction().await.map_err(unavailable)?;
    let enqueued = jobs::enqueue(&*tx, jobs::TRADES_SYNC, &body.account_id, &payload)
        .await
        .map_err(unavailable)?;
    // the job already pending keeps its own overrides: different ones are not silently dropped
    if !enqueued.created && enqueued.job.payload != payload {
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            "job_pending",
            format!(
                "job {} is pending for {} with other overrides ({}); enqueue again once it ran",
                enqueued.job.id, body.account_id, enqueued.job.payload
            ),
        ));
    }
    tradegate_actors::store::operator_actions::record(
        &*tx,
        &NewOperatorAction {
            by: &by,
            action: "job.enqueue",
            target: Some(&body.account_id),
            previous: None,
            new: Some(json!({"type": jobs::TRADES_SYNC, "job": &enqueued, "payload": payload})),
            reason: None,
        },
    )
    .await
    .map_err(unavailable)?;
    tx.commit().await.map_err(unavailable)?;
    let status = if enqueued.created {
        StatusCode::ACCEPTED
    } else {
        StatusCode::OK
    };
    json_answer(status, enqueued)
}
