//! One account's order calls: submit (request payload stored first, one execution row after),
//! cancel, replace, cancel-all, and the look-up that reconciles decisions after a crash.

use std::collections::HashSet;
use std::sync::Mutex;

use chrono::Utc;
use serde_json::{Value, json};
use uuid::Uuid;

use super::error::SessionError;
use super::mapping::{self};
use super::rest::{AlpacaRest, CallError, Exchange};
use crate::domain::{
    ApiPayload, ApiPayloadKind, NewDecision, OrderIds, PreparedRequest, RawJson, TradeLogEvent,
};
use crate::store;
use crate::store::group::{BatchCommit, GroupCommit};
use crate::store::order_events::EventApplied;
use crate::store::orders::Submission;
use crate::strategy_hub::StrategyHub;
use crate::trade_log_writer::TradeLog;

mod amend;
mod look_up;
mod outcome;
mod submit;

/// The broker name stored with executions and payloads.
pub(crate) const BROKER: &str = "alpaca";

/// What one session's tasks share.
#[derive(Debug)]
pub(crate) struct SessionCtx {
    /// The account
    pub(crate) account: String,
    /// REST calls
    pub(crate) rest: AlpacaRest,
    /// The stream authenticates with these
    pub(crate) credentials: super::config::Credentials,
    /// The audit database
    pub(crate) pool: deadpool_postgres::Pool,
    /// The trade log
    pub(crate) trade_log: Option<TradeLog>,
    /// The strategies' connections
    pub(crate) hub: StrategyHub,
    /// Decisions being submitted right now (recovery leaves them alone)
    pub(crate) in_flight: Mutex<HashSet<Uuid>>,
    /// Woken whenever a submission leaves `in_flight` (the stream waits on it for the
    /// execution row of an order it hears about early)
    pub(crate) submitted: tokio::sync::Notify,
    /// Submission outcomes, written in group commits
    pub(crate) submissions: BatchCommit<Submission, Option<i64>>,
    /// Stream events, written in group commits
    pub(crate) events: GroupCommit<Option<EventApplied>>,
    /// Asks for another recovery pass (a permit is kept when none is waiting, so a request
    /// during a pass makes exactly one more)
    pub(crate) reconcile: tokio::sync::Notify,
    /// Set when the session stops: stream events still unwritten become dead letters instead
    /// of waiting for the database
    pub(crate) closing: std::sync::atomic::AtomicBool,
    /// Set when the session begins to stop: a batch being sent one order after another sends
    /// nothing more (its remaining decisions stay pending and are looked up, never sent, at
    /// the next start)
    pub(crate) stopping: std::sync::atomic::AtomicBool,
    /// Set while a `positions.sync` enqueue is under way (orders ending meanwhile add none)
    pub(crate) positions_due: std::sync::Arc<std::sync::atomic::AtomicBool>,
    /// One positions request of the account at a time, so snapshots are recorded in the order
    /// they were taken (a window runs from one to the next)
    pub(crate) positions_lock: tokio::sync::Mutex<()>,
    /// The stream's connects and disconnects so far: a catch-up gives way to a newer connect's
    pub(crate) catch_up_generation: std::sync::atomic::AtomicU64,
    /// The generation whose catch-up completed: the stream is caught up while this equals
    /// `catch_up_generation` (or there is no stream)
    pub(crate) caught_up_generation: std::sync::atomic::AtomicU64,
    /// Whether the session has a stream at all
    pub(crate) streaming: bool,
    /// How the account's position windows are judged
    pub(crate) reconciliation: crate::reconciliation::ReconcileConfig,
}

/// Alpaca's order endpoint.
const ORDERS: &str = "/v2/orders";

/// The stored form of a request: endpoint, method, query parameters, body.
fn request_payload(
    method: &str,
    path: &str,
    query: &[(String, String)],
    body: Option<&Value>,
) -> Result<ApiPayload, SessionError> {
    let mut payload = json!({ "endpoint": path, "method": method });
    if !query.is_empty() {
        payload["params"] = Value::Object(
            query
                .iter()
                .map(|(k, v)| (k.clone(), Value::String(v.clone())))
                .collect(),
        );
    }
    if let Some(body) = body {
        payload["body"] = body.clone();
    }
    Ok(ApiPayload::request(BROKER, payload)?)
}

/// The stored form of a submission with order body `body`.
pub(crate) fn submission_payload(body: &Value) -> Result<ApiPayload, SessionError> {
    request_payload("POST", ORDERS, &[], Some(body))
}

/// The request a decision is submitted as (`POST /v2/orders` with its order body): the
/// router stores it with the decision, and the submission sends its body as is.
pub fn prepare_submission(decision: &NewDecision) -> Option<PreparedRequest> {
    let body = mapping::order_body(decision);
    let text = body.to_string();
    let payload = submission_payload(&body).ok()?;
    Some(PreparedRequest {
        payload,
        body: text.into(),
    })
}

impl SessionCtx {
    fn log(&self, events: impl IntoIterator<Item = TradeLogEvent>) {
        if let Some(log) = &self.trade_log {
            log.log_all(events.into_iter().map(|e| e.with_source(BROKER)));
        }
    }

    fn ids(&self, client_order_id: &str, symbol: &str, broker_order_id: Option<&str>) -> OrderIds {
        OrderIds {
            cl_ord_id: Some(client_order_id.to_string()),
            native_ord_id: broker_order_id.map(str::to_string),
            account_id: Some(self.account.clone()),
            symbol: Some(symbol.to_string()),
            ..OrderIds::default()
        }
    }

    /// Stores the request payload; its id.
    pub(crate) async fn store_request(
        &self,
        method: &str,
        path: &str,
        query: &[(String, String)],
        body: Option<&Value>,
    ) -> Result<i64, SessionError> {
        let payload = request_payload(method, path, query, body)?;
        let client = self.pool.get().await?;
        Ok(store::payloads::insert_payload(&**client, &payload).await?)
    }

    /// Stores a submission's outcome in the session's next group commit (one statement for
    /// the whole group).
    async fn record_submission(&self, submission: Submission) -> Result<i64, SessionError> {
        self.submissions
            .write(submission)
            .await?
            .ok_or(SessionError::Missing("the execution row was not written"))
    }

    /// Stores a response payload (used where no execution row is written with it).
    async fn store_response(&self, payload: &ApiPayload) {
        let stored = async {
            let client = self.pool.get().await?;
            Ok::<_, SessionError>(store::payloads::insert_payload(&**client, payload).await?)
        }
        .await;
        if let Err(e) = stored {
            tracing::error!(account = %self.account, error = %e, "a response payload could not be stored");
        }
    }
}

/// The body of an `api_response` trade-log row: the broker's JSON as received, or, when no
/// answer came, what happened instead.
fn native_body(answer: &Result<Exchange, CallError>) -> RawJson {
    match answer {
        Ok(ex) => ex.native(),
        Err(e) => RawJson::from_value(&json!({"error": e.code(), "message": e.to_string()})),
    }
}

/// What an exchange carried around the body: endpoint, status, duration, rate-limit headers.
fn response_meta(path: &str, answer: &Result<Exchange, CallError>) -> RawJson {
    RawJson::from_value(&match answer {
        Ok(ex) => json!({
            "endpoint": path,
            "status_code": ex.status,
            "duration_ms": u64::try_from(ex.duration.as_millis()).unwrap_or(u64::MAX),
            "rate_limit": ex.rate_limit,
        }),
        Err(e) => json!({"endpoint": path, "status_code": null, "error": e.code()}),
    })
}

/// `events` of one response, the response row carrying `meta`.
fn with_meta(mut events: Vec<TradeLogEvent>, meta: RawJson) -> Vec<TradeLogEvent> {
    if let Some(first) = events.first_mut() {
        first.response_meta = Some(meta);
    }
    events
}

/// The response payload of a call: status, body and rate-limit headers, or why there was none.
pub(crate) fn response_payload(path: &str, answer: &Result<Exchange, CallError>) -> ApiPayload {
    let payload = match answer {
        Ok(ex) => json!({
            "endpoint": path,
            "status_code": ex.status,
            "body": ex.body,
            "rate_limit": ex.rate_limit,
            "duration_ms": u64::try_from(ex.duration.as_millis()).unwrap_or(u64::MAX),
        }),
        Err(e) => json!({
            "endpoint": path,
            "status_code": null,
            "error": e.code(),
            "message": e.to_string(),
        }),
    };
    ApiPayload {
        kind: ApiPayloadKind::ApiResponse,
        source: BROKER.into(),
        payload,
        captured_at: Utc::now(),
    }
}
