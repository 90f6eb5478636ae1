//! The order path's rows: broker submissions (`trade_executions` with their response payloads
//! and the decision's outcome), the orders as the stream, cancels and recovery read them, and
//! what the risk checks read (positions, last fill prices). The kill switch, broker events and
//! refusals have their own files.

use std::collections::HashMap;

use chrono::{DateTime, Utc};
use rust_decimal::Decimal;
use serde_json::Value;
use tokio_postgres::GenericClient;
use tokio_postgres::Row;
use uuid::Uuid;

use super::StoreError;
use super::db::Db;
use crate::domain::{
    ApiPayload, NewDecision, OrderType, PlacedOrder, PrimarySignal, Side, TimeInForce,
};

/// Reason a decision failed when recovery found no order at the broker.
pub const NOT_RECEIVED_BY_BROKER: &str = "not_received_by_broker";

/// The net filled position of `account` in `symbol` from our own executions (buys minus
/// sells), as reduce-only checks need it.
pub async fn position(
    client: &impl GenericClient,
    account: &str,
    symbol: &str,
) -> Result<Decimal, StoreError> {
    let row = client
        .query_one(
            "SELECT COALESCE(sum(CASE d.side WHEN 'buy' THEN e.filled_quantity \
                                             ELSE -e.filled_quantity END), 0) \
             FROM trade_decisions d JOIN trade_executions e ON e.trade_decision_id = d.id \
             WHERE d.account = $1 AND d.symbol = $2",
            &[&account, &symbol],
        )
        .await
        .map_err(StoreError::new("reading a position"))?;
    // a sum beyond what a Decimal holds is an error, not a panic of the router
    row.try_get(0)
        .map_err(StoreError::new("reading a position"))
}

/// The average fill price of the newest decision in `symbol` that has one (the reference
/// price of market orders' risk checks when the strategy sends none).
pub async fn last_fill_price(
    client: &impl GenericClient,
    symbol: &str,
) -> Result<Option<Decimal>, StoreError> {
    let row = client
        .query_opt(
            "SELECT e.filled_avg_price FROM trade_decisions d \
             JOIN trade_executions e ON e.trade_decision_id = d.id \
             WHERE d.symbol = $1 AND e.filled_avg_price IS NOT NULL \
             ORDER BY d.created_at DESC LIMIT 1",
            &[&symbol],
        )
        .await
        .map_err(StoreError::new("reading the last fill price"))?;
    Ok(row.map(|r| r.get(0)))
}

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
const RECORD_SUBMISSIONS: &str = "WITH s AS ( \
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

/// Ends a pending decision as failed with `reason` (nothing was sent, or recovery found no
/// order at the broker); false if it was no longer pending.
pub async fn fail_pending_decision(
    client: &impl GenericClient,
    decision_pk: i64,
    reason: &str,
) -> Result<bool, StoreError> {
    let n = client
        .execute(
            "UPDATE trade_decisions SET status = 'failed', failure_reason = $2, \
                 failed_at = now(), updated_at = now() \
             WHERE id = $1 AND status NOT IN ('executed', 'failed', 'cancelled')",
            &[&decision_pk, &reason],
        )
        .await
        .map_err(StoreError::new("failing a pending decision"))?;
    Ok(n == 1)
}

/// Resolves an execution whose submission got no answer with the order a look-up found:
/// its status, broker order id and fills (the response payload stored with it), and the
/// decision executed (or failed, if the broker rejected it). Only an execution still
/// unresolved changes (the stream may have told its outcome first); whether it did.
pub async fn resolve_unknown_execution(
    client: &impl GenericClient,
    execution_pk: i64,
    found: &Submission,
    reason: &str,
) -> Result<bool, StoreError> {
    let (decision_status, failure) = match &found.outcome {
        DecisionOutcome::Executed | DecisionOutcome::Unknown => ("executed", None),
        DecisionOutcome::Failed(r) => ("failed", Some(r.as_str())),
    };
    let row = client
        .query_one(
            "WITH p AS ( \
                 INSERT INTO api_payloads (type, payload, source, captured_at) \
                 VALUES ('ApiResponse', $1, $2, $3) RETURNING id), \
             x AS ( \
                 UPDATE trade_executions SET status = $4, status_reason = $5, \
                     broker_order_id = $6, http_status_code = $7, \
                     api_response_payload_id = (SELECT id FROM p), error_code = NULL, \
                     error_message = NULL, error_details = NULL, \
                     filled_quantity = GREATEST(filled_quantity, $8), \
                     filled_avg_price = COALESCE($9, filled_avg_price), \
                     filled_at = COALESCE(filled_at, $10), \
                     cancelled_at = CASE WHEN $4 = 'cancelled' THEN now() END, \
                     rejected_at = CASE WHEN $4 = 'rejected' THEN now() END, updated_at = now() \
                 WHERE id = $11 AND status = 'submitted' AND broker_order_id IS NULL \
                 RETURNING trade_decision_id), \
             d AS ( \
                 UPDATE trade_decisions t SET status = $12, failure_reason = $13, \
                     status_reason = $5, \
                     executed_at = CASE WHEN $12 = 'executed' THEN now() END, \
                     failed_at = CASE WHEN $12 = 'failed' THEN now() END, updated_at = now() \
                 FROM x WHERE t.id = x.trade_decision_id AND t.status = 'pending' \
                 RETURNING t.id) \
             SELECT count(*) FROM x",
            &[
                &found.response.payload,
                &found.broker,
                &found.response.captured_at,
                &found.status,
                &reason,
                &found.broker_order_id,
                &found.http_status,
                &found.filled_qty,
                &found.filled_avg_price,
                &found.filled_at,
                &execution_pk,
                &decision_status,
                &failure,
            ],
        )
        .await
        .map_err(StoreError::new("resolving an unanswered submission"))?;
    Ok(row.get::<_, i64>(0) == 1)
}

/// The id of execution `execution_pk`.
pub async fn execution_id_of(
    client: &impl GenericClient,
    execution_pk: i64,
) -> Result<Uuid, StoreError> {
    let row = client
        .query_one(
            "SELECT execution_id FROM trade_executions WHERE id = $1",
            &[&execution_pk],
        )
        .await
        .map_err(StoreError::new("reading an execution id"))?;
    Ok(row.get(0))
}

/// Ends an execution whose submission got no answer, and its decision, as never received by
/// the broker (a look-up past the grace period did not find it); whether it was unresolved.
pub async fn fail_unknown_execution(
    client: &impl GenericClient,
    execution_pk: i64,
    reason: &str,
) -> Result<bool, StoreError> {
    let row = client
        .query_one(
            "WITH x AS ( \
                 UPDATE trade_executions SET status = 'rejected', status_reason = $2, \
                     error_code = $3, rejected_at = now(), updated_at = now() \
                 WHERE id = $1 AND status = 'submitted' AND broker_order_id IS NULL \
                 RETURNING trade_decision_id), \
             d AS ( \
                 UPDATE trade_decisions t SET status = 'failed', failure_reason = $3, \
                     status_reason = $2, failed_at = now(), updated_at = now() \
                 FROM x WHERE t.id = x.trade_decision_id AND t.status = 'pending' \
                 RETURNING t.id) \
             SELECT count(*) FROM x",
            &[&execution_pk, &reason, &NOT_RECEIVED_BY_BROKER],
        )
        .await
        .map_err(StoreError::new("failing an unanswered submission"))?;
    Ok(row.get::<_, i64>(0) == 1)
}

const ORDER_COLUMNS: &str = "d.id, d.decision_id, d.strategy_name, d.account, d.symbol, \
     d.status, e.id, e.execution_id, e.status, e.broker_order_id, \
     COALESCE(e.filled_quantity, 0)";

fn order_row(row: &Row) -> PlacedOrder {
    PlacedOrder {
        decision_pk: row.get(0),
        decision_id: row.get(1),
        strategy: row.get(2),
        account: row.get(3),
        symbol: row.get(4),
        decision_status: row.get(5),
        execution_pk: row.get(6),
        execution_id: row.get(7),
        execution_status: row.get(8),
        broker_order_id: row.get(9),
        filled_qty: row.get(10),
    }
}

/// The order of decision `decision_id`.
pub async fn order_by_decision(
    db: &impl Db,
    decision_id: Uuid,
) -> Result<Option<PlacedOrder>, StoreError> {
    let sql = format!(
        "SELECT {ORDER_COLUMNS} FROM trade_decisions d \
                 LEFT JOIN trade_executions e ON e.trade_decision_id = d.id \
                 WHERE d.decision_id = $1"
    );
    let statement = db
        .statement(&sql, &[])
        .await
        .map_err(StoreError::new("reading an order by decision"))?;
    let row = db
        .client()
        .query_opt(&statement, &[&decision_id])
        .await
        .map_err(StoreError::new("reading an order by decision"))?;
    Ok(row.as_ref().map(order_row))
}

/// The order whose broker order id is `broker_order_id`.
pub async fn order_by_broker_id(
    db: &impl Db,
    broker_order_id: &str,
) -> Result<Option<PlacedOrder>, StoreError> {
    let sql = format!(
        "SELECT {ORDER_COLUMNS} FROM trade_executions e \
                 JOIN trade_decisions d ON d.id = e.trade_decision_id \
                 WHERE e.broker_order_id = $1 LIMIT 1"
    );
    let statement = db
        .statement(&sql, &[])
        .await
        .map_err(StoreError::new("reading an order by broker id"))?;
    let row = db
        .client()
        .query_opt(&statement, &[&broker_order_id])
        .await
        .map_err(StoreError::new("reading an order by broker id"))?;
    Ok(row.as_ref().map(order_row))
}

/// The working orders (submitted, accepted or partly filled) of `strategy` in `account`.
pub async fn open_orders(
    client: &impl GenericClient,
    account: &str,
    strategy: &str,
) -> Result<Vec<PlacedOrder>, StoreError> {
    Ok(working_orders(client, account)
        .await?
        .into_iter()
        .filter(|o| o.strategy == strategy)
        .collect())
}

/// Every order of `account` that is working at the broker as far as the gateway knows
/// (submitted, accepted or partly filled, with a broker order id): what a catch-up looks up.
pub async fn working_orders(
    client: &impl GenericClient,
    account: &str,
) -> Result<Vec<PlacedOrder>, StoreError> {
    let rows = client
        .query(
            &format!(
                "SELECT {ORDER_COLUMNS} FROM trade_decisions d \
                 JOIN trade_executions e ON e.trade_decision_id = d.id \
                 WHERE d.account = $1 \
                   AND e.status IN ('submitted', 'accepted', 'partial_fill') \
                   AND e.broker_order_id IS NOT NULL \
                 ORDER BY d.id"
            ),
            &[&account],
        )
        .await
        .map_err(StoreError::new("reading working orders"))?;
    Ok(rows.iter().map(order_row).collect())
}

/// Notes that the strategy asked to cancel the order, so its cancel ends the decision as
/// cancelled.
pub async fn mark_cancel_requested(
    client: &impl GenericClient,
    execution_pk: i64,
) -> Result<(), StoreError> {
    client
        .execute(
            "UPDATE trade_executions SET cancel_requested_at = COALESCE(cancel_requested_at, now()), \
                 updated_at = now() WHERE id = $1",
            &[&execution_pk],
        )
        .await
        .map_err(StoreError::new("marking a cancel request"))?;
    Ok(())
}

/// The order id a replace gave the order.
pub async fn set_broker_order_id(
    client: &impl GenericClient,
    execution_pk: i64,
    broker_order_id: &str,
) -> Result<(), StoreError> {
    client
        .execute(
            "UPDATE trade_executions SET broker_order_id = $2, updated_at = now() WHERE id = $1",
            &[&execution_pk, &broker_order_id],
        )
        .await
        .map_err(StoreError::new("recording a replacement order id"))?;
    Ok(())
}

/// A pending decision whose outcome is unknown, as recovery sees it: no execution recorded
/// (the gateway may have died around the send), or an execution whose submission got no
/// answer (`submitted` without a broker order id).
#[derive(Debug, Clone)]
pub struct PendingDecision {
    /// Surrogate key
    pub decision_pk: i64,
    /// The execution of a submission whose answer was lost, and why it was lost
    pub unknown_execution: Option<(i64, String)>,
    /// The decision
    pub decision: NewDecision,
    /// Since when its outcome is unknown: its unanswered execution was recorded, or (none
    /// recorded) the decision was committed; the grace period counts from here
    pub created_at: DateTime<Utc>,
}

/// The pending decisions of `account` whose outcome is unknown, oldest first.
pub async fn unresolved_decisions(
    client: &impl GenericClient,
    account: &str,
) -> Result<Vec<PendingDecision>, StoreError> {
    let rows = client
        .query(
            &format!(
                "SELECT {DECISION_COLUMNS}, \
                    COALESCE(e.created_at, d.created_at), e.id, \
                    COALESCE(e.error_code || ': ' || e.error_message, e.error_message, ''), \
                    d.notional \
             FROM trade_decisions d \
             LEFT JOIN trade_executions e ON e.trade_decision_id = d.id \
             WHERE d.account = $1 AND d.status = 'pending' \
               AND (e.id IS NULL OR (e.status = 'submitted' AND e.broker_order_id IS NULL)) \
             ORDER BY d.created_at"
            ),
            &[&account],
        )
        .await
        .map_err(StoreError::new("reading unresolved decisions"))?;
    Ok(rows
        .iter()
        .map(|row| {
            let execution_pk: Option<i64> = row.get(17);
            PendingDecision {
                decision_pk: row.get(0),
                unknown_execution: execution_pk.map(|pk| (pk, row.get(18))),
                decision: decision_of_row(row, 19),
                created_at: row.get(16),
            }
        })
        .collect())
}

/// The decision of a row whose first 16 columns are [`DECISION_COLUMNS`] and whose column
/// `notional_at` is its notional.
fn decision_of_row(row: &Row, notional_at: usize) -> NewDecision {
    let signal_type: Option<String> = row.get(13);
    let signal_id: Option<String> = row.get(14);
    NewDecision {
        decision_id: row.get(1),
        strategy_name: row.get(2),
        strategy_version: row.get(3),
        account: row.get(4),
        symbol: row.get(5),
        side: if row.get::<_, &str>(6) == "sell" {
            Side::Sell
        } else {
            Side::Buy
        },
        quantity: row.get(7),
        notional: row.get(notional_at),
        order_type: parse_order_type(row.get(8)),
        limit_price: row.get(9),
        stop_price: row.get(10),
        time_in_force: parse_tif(row.get(11)),
        signal_strength: row.get(12),
        primary_signal: signal_type
            .zip(signal_id)
            .map(|(signal_type, id)| PrimarySignal { signal_type, id }),
        primary_ingestion_run_id: None,
        rationale: Some(row.get(15)),
    }
}

/// The columns [`decision_of_row`] reads, over `trade_decisions d`.
const DECISION_COLUMNS: &str = "d.id, d.decision_id, d.strategy_name, d.strategy_version, \
     d.account, d.symbol, d.side, d.quantity, d.order_type, d.limit_price, d.stop_price, \
     d.time_in_force, d.signal_strength, d.primary_signal_type, d.primary_signal_id, \
     d.decision_rationale";

/// Decision `decision_id` as it was decided (a replace is checked against its terms).
pub async fn decision_terms(
    client: &impl GenericClient,
    decision_id: Uuid,
) -> Result<Option<NewDecision>, StoreError> {
    let row = client
        .query_opt(
            &format!(
                "SELECT {DECISION_COLUMNS}, d.notional FROM trade_decisions d \
                 WHERE d.decision_id = $1"
            ),
            &[&decision_id],
        )
        .await
        .map_err(StoreError::new("reading a decision's terms"))?;
    Ok(row.map(|r| decision_of_row(&r, 16)))
}

// the CHECK constraints admit only these spellings
fn parse_order_type(text: &str) -> OrderType {
    serde_json::from_value(Value::String(text.into())).unwrap_or(OrderType::Market)
}

fn parse_tif(text: &str) -> TimeInForce {
    serde_json::from_value(Value::String(text.into())).unwrap_or(TimeInForce::Day)
}

/// How many of `decisions` are not settled yet: no execution, or one the broker still works.
pub async fn unsettled_count(
    client: &impl GenericClient,
    decisions: &[Uuid],
) -> Result<i64, StoreError> {
    let row = client
        .query_one(
            "SELECT count(*) FROM trade_decisions d \
             LEFT JOIN trade_executions e ON e.trade_decision_id = d.id \
             WHERE d.decision_id = ANY($1) \
               AND (e.id IS NULL OR e.status IN ('submitted', 'accepted', 'partial_fill'))",
            &[&decisions],
        )
        .await
        .map_err(StoreError::new("counting unsettled decisions"))?;
    Ok(row.get(0))
}

/// The latest decision that failed, if any.
pub async fn latest_failed_decision(
    client: &impl GenericClient,
) -> Result<Option<Uuid>, StoreError> {
    let row = client
        .query_opt(
            "SELECT decision_id FROM trade_decisions WHERE status = 'failed' \
             ORDER BY created_at DESC LIMIT 1",
            &[],
        )
        .await
        .map_err(StoreError::new("reading the latest failed decision"))?;
    Ok(row.map(|r| r.get(0)))
}
