//! Recording broker submissions: how a submission leaves its decision, and the one statement
//! that writes the response payloads, executions and decision statuses of a group.

use std::collections::HashMap;

use chrono::{DateTime, Utc};
use rust_decimal::Decimal;
use serde_json::Value;
use tokio_postgres::GenericClient;
use uuid::Uuid;

use crate::domain::ApiPayload;
use crate::store::StoreError;
use crate::store::db::Db;

/// How a submission leaves its decision.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DecisionOutcome {
    /// The broker took the order
    Executed,
    /// The broker refused it, or the call surely never reached it (the reason is kept)
    Failed(String),
    /// The call may have reached the broker (no answer, a lost connection, a 5xx): the
    /// decision stays pending and the order is looked up by its client order id
    Unknown,
}

// "Still pending" is written as "none of the final states" (the same rows, by the CHECK on
// status) in the updates by primary key below: `status = 'pending'` would let the planner,
// with a generic plan for these prepared statements, walk the partial index of pending
// decisions (full of dead entries under load) instead of the primary key.
/// Submissions' response payloads, `trade_executions` rows and decision statuses, one array
/// element per submission. Payload ids rise with the order they are inserted in, which is how
/// each execution finds its own.
pub(super) const RECORD_SUBMISSIONS: &str = "WITH s AS ( \
                 SELECT * FROM unnest($1::jsonb[], $2::text[], $3::timestamptz[], $4::bigint[], \
                     $5::uuid[], $6::text[], $7::bigint[], $8::text[], $9::int[], $10::text[], \
                     $11::text[], $12::jsonb[], $13::numeric[], $14::numeric[], $15::numeric[], \
                     $16::timestamptz[], $17::timestamptz[], $18::timestamptz[], $19::text[], \
                     $20::text[]) WITH ORDINALITY AS s (response, broker, captured_at, \
                     decision_pk, execution_id, status, request_payload_id, broker_order_id, \
                     http_status, error_code, error_message, error_details, filled_qty, \
                     filled_avg_price, commission, submitted_at, filled_at, rejected_at, \
                     decision_status, failure, n)), \
             p AS ( \
                 INSERT INTO api_payloads (type, payload, source, captured_at) \
                 SELECT 'ApiResponse', response, broker, captured_at FROM s ORDER BY n \
                 RETURNING id), \
             pn AS (SELECT id, row_number() OVER (ORDER BY id) AS n FROM p), \
             e AS ( \
                 INSERT INTO trade_executions (trade_decision_id, execution_id, broker, status, \
                     api_request_payload_id, api_response_payload_id, broker_order_id, \
                     http_status_code, error_code, error_message, error_details, \
                     filled_quantity, filled_avg_price, commission, submitted_at, filled_at, \
                     rejected_at) \
                 SELECT s.decision_pk, s.execution_id, s.broker, s.status, \
                        s.request_payload_id, pn.id, s.broker_order_id, s.http_status, \
                        s.error_code, s.error_message, s.error_details, s.filled_qty, \
                        s.filled_avg_price, s.commission, s.submitted_at, s.filled_at, \
                        s.rejected_at \
                 FROM s JOIN pn ON pn.n = s.n ORDER BY s.n \
                 RETURNING id, execution_id), \
             d AS ( \
                 UPDATE trade_decisions t SET status = s.decision_status, \
                     failure_reason = s.failure, \
                     executed_at = CASE WHEN s.decision_status = 'executed' THEN now() END, \
                     failed_at = CASE WHEN s.decision_status = 'failed' THEN now() END, \
                     updated_at = now() \
                 FROM s WHERE t.id = s.decision_pk \
                   AND t.status NOT IN ('executed', 'failed', 'cancelled') \
                 RETURNING t.id) \
             SELECT id, execution_id FROM e";

/// One broker submission's result, stored in one statement with its response payload.
#[derive(Debug, Clone)]
pub struct Submission {
    /// The decision's surrogate key
    pub decision_pk: i64,
    /// The new execution's id
    pub execution_id: Uuid,
    /// The broker's name
    pub broker: &'static str,
    /// The stored request payload
    pub request_payload_id: i64,
    /// The response payload to store
    pub response: ApiPayload,
    /// The mapped execution status
    pub status: &'static str,
    /// The broker's order id
    pub broker_order_id: Option<String>,
    /// The HTTP status, when there was a response
    pub http_status: Option<i32>,
    /// The broker's error code (or `timeout`, `transport`)
    pub error_code: Option<String>,
    /// The error message
    pub error_message: Option<String>,
    /// The whole error body
    pub error_details: Option<Value>,
    /// Filled so far
    pub filled_qty: Decimal,
    /// Average fill price
    pub filled_avg_price: Option<Decimal>,
    /// Commission charged
    pub commission: Option<Decimal>,
    /// When the request was sent
    pub submitted_at: DateTime<Utc>,
    /// When it filled
    pub filled_at: Option<DateTime<Utc>>,
    /// What becomes of the decision
    pub outcome: DecisionOutcome,
}

/// Stores submissions' response payloads, their `trade_executions` rows, and moves each
/// decision to executed or failed, atomically (one statement for all); returns each
/// execution's surrogate key, in the order given (`None` would be a submission the statement
/// wrote no execution for).
pub async fn record_submissions(
    db: &impl Db,
    subs: &[Submission],
) -> Result<Vec<Option<i64>>, StoreError> {
    if subs.is_empty() {
        return Ok(Vec::new());
    }
    let now = Utc::now();
    let responses: Vec<&Value> = subs.iter().map(|s| &s.response.payload).collect();
    let brokers: Vec<&str> = subs.iter().map(|s| s.broker).collect();
    let captured: Vec<DateTime<Utc>> = subs.iter().map(|s| s.response.captured_at).collect();
    let decisions: Vec<i64> = subs.iter().map(|s| s.decision_pk).collect();
    let executions: Vec<Uuid> = subs.iter().map(|s| s.execution_id).collect();
    let statuses: Vec<&str> = subs.iter().map(|s| s.status).collect();
    let requests: Vec<i64> = subs.iter().map(|s| s.request_payload_id).collect();
    let broker_ids: Vec<Option<&str>> = subs.iter().map(|s| s.broker_order_id.as_deref()).collect();
    let http: Vec<Option<i32>> = subs.iter().map(|s| s.http_status).collect();
    let codes: Vec<Option<&str>> = subs.iter().map(|s| s.error_code.as_deref()).collect();
    let messages: Vec<Option<&str>> = subs.iter().map(|s| s.error_message.as_deref()).collect();
    let details: Vec<Option<&Value>> = subs.iter().map(|s| s.error_details.as_ref()).collect();
    let filled: Vec<Decimal> = subs.iter().map(|s| s.filled_qty).collect();
    let avg: Vec<Option<Decimal>> = subs.iter().map(|s| s.filled_avg_price).collect();
    let commission: Vec<Option<Decimal>> = subs.iter().map(|s| s.commission).collect();
    let submitted: Vec<DateTime<Utc>> = subs.iter().map(|s| s.submitted_at).collect();
    let filled_at: Vec<Option<DateTime<Utc>>> = subs.iter().map(|s| s.filled_at).collect();
    let rejected_at: Vec<Option<DateTime<Utc>>> = subs
        .iter()
        .map(|s| (s.status == "rejected").then_some(now))
        .collect();
    let (decision_status, failure): (Vec<&str>, Vec<Option<&str>>) = subs
        .iter()
        .map(|s| match &s.outcome {
            DecisionOutcome::Executed => ("executed", None),
            DecisionOutcome::Failed(reason) => ("failed", Some(reason.as_str())),
            DecisionOutcome::Unknown => ("pending", None),
        })
        .unzip();
    let statement = db
        .statement(RECORD_SUBMISSIONS, &[])
        .await
        .map_err(StoreError::new("preparing broker submissions"))?;
    let rows = db
        .client()
        .query(
            &statement,
            &[
                &responses,
                &brokers,
                &captured,
                &decisions,
                &executions,
                &statuses,
                &requests,
                &broker_ids,
                &http,
                &codes,
                &messages,
                &details,
                &filled,
                &avg,
                &commission,
                &submitted,
                &filled_at,
                &rejected_at,
                &decision_status,
                &failure,
            ],
        )
        .await
        .map_err(StoreError::new("recording broker submissions"))?;
    let by_execution: HashMap<Uuid, i64> = rows.iter().map(|r| (r.get(1), r.get(0))).collect();
    Ok(subs
        .iter()
        .map(|s| by_execution.get(&s.execution_id).copied())
        .collect())
}
