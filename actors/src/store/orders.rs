//! The order path's rows: the kill switch, broker submissions (`trade_executions` with their
//! payloads), the events brokers push for our orders, and what recovery reads.

use std::collections::HashMap;

use chrono::{DateTime, Utc};
use rust_decimal::Decimal;
use serde::Serialize;
use serde_json::Value;
use tokio_postgres::GenericClient;
use tokio_postgres::Row;
use uuid::Uuid;

use super::StoreError;
use super::db::Db;
use crate::domain::{
    ApiPayload, KillSwitch, NewDecision, OrderType, PrimarySignal, Side, TimeInForce,
};

/// Reason a decision failed when recovery found no order at the broker.
pub const NOT_RECEIVED_BY_BROKER: &str = "not_received_by_broker";

/// The kill switch's state and why it was last changed.
pub async fn kill_switch(
    client: &impl GenericClient,
) -> Result<(KillSwitch, Option<String>), StoreError> {
    let row = client
        .query_one("SELECT state, reason FROM kill_switch WHERE id", &[])
        .await
        .map_err(StoreError::new("reading the kill switch"))?;
    Ok((
        KillSwitch::parse(row.get(0)).unwrap_or(KillSwitch::Halted),
        row.get(1),
    ))
}

/// Sets the kill switch and, in the same statement, keeps the change in `operator_actions`
/// under `by` (the state before and after, and the reason); `false`: its row is missing and
/// nothing changed.
pub async fn set_kill_switch(
    client: &impl GenericClient,
    state: KillSwitch,
    reason: Option<&str>,
    by: &crate::domain::Operator,
) -> Result<bool, StoreError> {
    let n = client
        .execute(
            "WITH before AS (SELECT state, reason FROM kill_switch WHERE id FOR UPDATE), \
                  changed AS (UPDATE kill_switch SET state = $1, reason = $2, changed_by = $3, \
                                  changed_at = now() WHERE id RETURNING state) \
             INSERT INTO operator_actions (actor, peer, action, target, previous, new, reason) \
             SELECT $3, $4, 'kill_switch.set', 'kill_switch', \
                    jsonb_build_object('state', before.state, 'reason', before.reason), \
                    jsonb_build_object('state', changed.state), $2 \
             FROM before, changed",
            &[&state.as_str(), &reason, &by.name, &by.peer],
        )
        .await
        .map_err(StoreError::new("setting the kill switch"))?;
    Ok(n == 1)
}

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

/// An order of ours as the stream and cancels need it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct OrderRow {
    /// Decision surrogate key
    pub decision_pk: i64,
    /// The decision (= client order id)
    pub decision_id: Uuid,
    /// The strategy that sent it
    pub strategy: String,
    /// The account
    pub account: String,
    /// The instrument
    pub symbol: String,
    /// The decision's status
    pub decision_status: String,
    /// The execution's surrogate key, once submitted
    pub execution_pk: Option<i64>,
    /// The execution's id
    pub execution_id: Option<Uuid>,
    /// The execution's status
    pub execution_status: Option<String>,
    /// The broker's current order id
    pub broker_order_id: Option<String>,
    /// Filled so far
    pub filled_qty: Decimal,
}

const ORDER_COLUMNS: &str = "d.id, d.decision_id, d.strategy_name, d.account, d.symbol, \
     d.status, e.id, e.execution_id, e.status, e.broker_order_id, \
     COALESCE(e.filled_quantity, 0)";

fn order_row(row: &Row) -> OrderRow {
    OrderRow {
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
) -> Result<Option<OrderRow>, StoreError> {
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
) -> Result<Option<OrderRow>, StoreError> {
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
) -> Result<Vec<OrderRow>, StoreError> {
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
) -> Result<Vec<OrderRow>, StoreError> {
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

// The execution follows the broker: a status never moves back from a final one, except that an
// execution recorded as rejected takes a fill (or, if the gateway itself concluded the broker
// never received it, any state the broker shows): the broker is the truth, and the database's
// state-machine trigger keeps the correction. A filled quantity never meets `rejected`. The
// decision follows its execution: cancelled when the strategy's own cancel completed, failed
// when the broker rejected it, executed once the broker shows the order in any other state
// (also out of failed: a correction). Both rows are locked and read at their newest version,
// so a concurrent write is never undone from a stale snapshot. A fill counts only what it adds
// to the execution's cumulative quantity (an event carries the order's `filled_qty`): a live
// fill the catch-up already recorded, or a repeat under another key, stores its event with a
// quantity of zero; a catch-up's fill counts what the stream missed, priced so that the
// cumulative average is right: (avg * filled - previous avg * previous filled) / added.
const RECORD_ORDER_EVENT: &str = "WITH cur AS ( \
                 SELECT c.id, c.prev, c.prev_avg, \
                        CASE WHEN c.next_status IN ('submitted', 'accepted') \
                               AND GREATEST(c.prev, COALESCE($14::numeric, 0)) > 0 \
                             THEN 'partial_fill' ELSE c.next_status END AS next \
                 FROM ( \
                 SELECT x.id, x.filled_quantity AS prev, x.filled_avg_price AS prev_avg, \
                        CASE WHEN $13::text IS NULL THEN x.status \
                             WHEN x.status = 'rejected' AND $13 <> 'rejected' \
                               AND (($13 IN ('partial_fill', 'filled') \
                                     AND COALESCE($14::numeric, 0) > x.filled_quantity) \
                                    OR x.error_code = 'not_received_by_broker') THEN $13 \
                             WHEN x.status IN ('filled', 'rejected', 'cancelled') THEN x.status \
                             WHEN $13 = 'rejected' \
                               AND (x.filled_quantity > 0 OR COALESCE($14::numeric, 0) > 0) \
                               THEN x.status \
                             WHEN x.status = 'partial_fill' \
                               AND $13 NOT IN ('filled', 'cancelled') THEN x.status \
                             ELSE $13 END AS next_status \
                 FROM trade_executions x WHERE x.id = $16::bigint \
                 FOR UPDATE) c), \
             fq AS ( \
                 SELECT CASE WHEN $6 NOT IN ('fill', 'partial_fill') THEN NULL \
                             WHEN $14::numeric IS NULL OR c.prev IS NULL THEN $8::numeric \
                             ELSE GREATEST($14::numeric - c.prev, 0) END AS qty, \
                        c.prev, c.prev_avg \
                 FROM (SELECT 1) one LEFT JOIN cur c ON true), \
             f AS ( \
                 SELECT CASE WHEN abs(fq.qty) < 1e27 THEN fq.qty END AS qty, \
                        CASE WHEN fq.qty IS NULL OR fq.qty = 0 THEN NULL \
                             WHEN fq.qty = $8::numeric AND $9::numeric IS NOT NULL THEN $9::numeric \
                             WHEN $15::numeric IS NULL THEN $9::numeric \
                             WHEN fq.prev IS NULL OR fq.prev = 0 THEN $15::numeric \
                             WHEN ($15::numeric * $14::numeric - COALESCE(fq.prev_avg, 0) * fq.prev) >= 0 \
                               THEN round(($15::numeric * $14::numeric \
                                           - COALESCE(fq.prev_avg, 0) * fq.prev) / fq.qty, 8) \
                        END AS price \
                 FROM fq), \
             fb AS ( \
                 SELECT f.qty, CASE WHEN f.price < 1e20 THEN f.price END AS price FROM f), \
             ev AS ( \
                 INSERT INTO broker_order_events (broker, account, event_key, trade_decision_id, \
                     broker_order_id, event, order_status, qty, price, position_qty, event_at, body) \
                 SELECT $1, $2, $3, $4, $5, $6, $7, fb.qty, fb.price, $10::numeric, $11::timestamptz, $12 \
                 FROM fb \
                 ON CONFLICT (broker, account, event_key) DO NOTHING RETURNING id, qty, price), \
             ex AS ( \
                 UPDATE trade_executions x SET \
                     status = cur.next, \
                     status_reason = CASE WHEN cur.next IS DISTINCT FROM x.status \
                                          THEN 'trade_updates ' || $6 || ' (' || $3 || ')' \
                                          ELSE x.status_reason END, \
                     broker_order_id = CASE WHEN $17::text IS NOT NULL \
                                              AND $17 = x.broker_order_id THEN $5 \
                                            ELSE COALESCE(x.broker_order_id, $5) END, \
                     filled_quantity = CASE WHEN cur.next = 'rejected' THEN x.filled_quantity \
                                            ELSE GREATEST(x.filled_quantity, COALESCE($14::numeric, 0)) END, \
                     filled_avg_price = CASE WHEN cur.next <> 'rejected' AND $14::numeric IS NOT NULL \
                                              AND $14::numeric >= x.filled_quantity \
                                             THEN COALESCE($15::numeric, x.filled_avg_price) \
                                             ELSE x.filled_avg_price END, \
                     filled_at = CASE WHEN cur.next = 'filled' THEN COALESCE(x.filled_at, $11, now()) \
                                      ELSE x.filled_at END, \
                     cancelled_at = CASE WHEN cur.next = 'cancelled' \
                                         THEN COALESCE(x.cancelled_at, $11, now()) \
                                         ELSE x.cancelled_at END, \
                     rejected_at = CASE WHEN cur.next = 'rejected' \
                                        THEN COALESCE(x.rejected_at, $11, now()) \
                                        ELSE x.rejected_at END, \
                     updated_at = now() \
                 FROM cur WHERE x.id = cur.id AND EXISTS (SELECT 1 FROM ev) \
                   AND (cur.next IS DISTINCT FROM x.status \
                        OR (cur.next <> 'rejected' \
                            AND COALESCE($14::numeric, 0) > x.filled_quantity) \
                        OR (x.broker_order_id IS NULL AND $5 IS NOT NULL) \
                        OR ($17::text IS NOT NULL AND $17 = x.broker_order_id)) \
                 RETURNING x.status, x.cancel_requested_at), \
             dn AS ( \
                 SELECT t.id, t.status AS old, t.failure_reason, \
                        CASE WHEN ex.status = 'cancelled' AND ex.cancel_requested_at IS NOT NULL \
                               AND t.status IN ('pending', 'executed') THEN 'cancelled' \
                             WHEN ex.status = 'rejected' \
                               AND t.status IN ('pending', 'executed') THEN 'failed' \
                             WHEN ex.status <> 'rejected' \
                               AND t.status IN ('pending', 'failed') THEN 'executed' \
                             ELSE t.status END AS next \
                 FROM trade_decisions t, ex WHERE t.id = $4 FOR UPDATE OF t), \
             d AS ( \
                 UPDATE trade_decisions t SET \
                     status = dn.next, \
                     status_reason = CASE WHEN dn.old = 'failed' \
                                          THEN 'trade_updates ' || $6 || ' (' || $3 || ')' \
                                               || ' after failed: ' || COALESCE(dn.failure_reason, '') \
                                          ELSE t.status_reason END, \
                     executed_at = CASE WHEN dn.next = 'executed' THEN COALESCE(t.executed_at, now()) \
                                        ELSE t.executed_at END, \
                     cancelled_at = CASE WHEN dn.next = 'cancelled' THEN now() \
                                         ELSE t.cancelled_at END, \
                     failed_at = CASE WHEN dn.next = 'failed' \
                                      THEN COALESCE(t.failed_at, now()) \
                                      WHEN dn.next = 'executed' THEN NULL ELSE t.failed_at END, \
                     failure_reason = CASE WHEN dn.next = 'failed' \
                                           THEN COALESCE(t.failure_reason, 'rejected by broker') \
                                           WHEN dn.next = 'executed' THEN NULL \
                                           ELSE t.failure_reason END, \
                     updated_at = now() \
                 FROM dn WHERE t.id = dn.id AND dn.next <> dn.old \
                 RETURNING t.status) \
             SELECT (SELECT id FROM ev), (SELECT status FROM ex), \
                    COALESCE((SELECT status FROM d), \
                             (SELECT status FROM trade_decisions WHERE id = $4)), \
                    (SELECT qty FROM ev), (SELECT price FROM ev)";

/// One event a broker pushed (or recovery reconstructed) for one of our orders. The event is
/// always stored (once); the execution and the decision are updated only when the event changes
/// them, so a repeated status costs no row versions.
#[derive(Debug, Clone)]
pub struct OrderEvent<'a> {
    /// The broker
    pub broker: &'a str,
    /// The account
    pub account: &'a str,
    /// Dedupe key: the broker's execution id, or a synthetic key for recovered changes
    pub event_key: &'a str,
    /// The order
    pub order: &'a OrderRow,
    /// The broker's order id in the event
    pub broker_order_id: Option<&'a str>,
    /// The event name (`fill`, `canceled`, ...)
    pub event: &'a str,
    /// The broker's order status after the event
    pub order_status: Option<&'a str>,
    /// The mapped execution status, when the event changes it
    pub execution_status: Option<&'a str>,
    /// This fill's quantity
    pub qty: Option<Decimal>,
    /// This fill's price
    pub price: Option<Decimal>,
    /// The position after the event
    pub position_qty: Option<Decimal>,
    /// Cumulative filled quantity of the order
    pub filled_qty: Option<Decimal>,
    /// Average fill price of the order
    pub filled_avg_price: Option<Decimal>,
    /// When the broker says it happened
    pub event_at: Option<DateTime<Utc>>,
    /// The native event
    pub body: &'a Value,
    /// The order the event's order replaced (Alpaca's `replaces`): when it is the one
    /// recorded, the execution follows the replacement (a replace whose answer was lost)
    pub replaces: Option<&'a str>,
}

/// What recording an event changed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EventApplied {
    /// The decision's status afterwards
    pub decision_status: String,
    /// The execution's status afterwards
    pub execution_status: Option<String>,
    /// A fill event's quantity not counted before, and its price: the event's own, or the
    /// one that makes the order's average right when part of the fill was counted already (a
    /// quantity of zero: all of it was)
    pub fill: Option<(Decimal, Option<Decimal>)>,
}

/// Records `e` once: a second event with the same key changes nothing and returns `None`.
/// Otherwise, in the same statement, the execution takes the event's cumulative fill and status
/// (a status never moves back from a final one), and the decision becomes cancelled when the
/// strategy's own cancel completed, or failed when the broker rejected the order.
pub async fn record_order_event(
    db: &impl Db,
    e: &OrderEvent<'_>,
) -> Result<Option<EventApplied>, StoreError> {
    let statement = db
        .statement(RECORD_ORDER_EVENT, &[])
        .await
        .map_err(StoreError::new("preparing a broker order event"))?;
    let row = db
        .client()
        .query_opt(
            &statement,
            &[
                &e.broker,
                &e.account,
                &e.event_key,
                &e.order.decision_pk,
                &e.broker_order_id,
                &e.event,
                &e.order_status,
                &e.qty,
                &e.price,
                &e.position_qty,
                &e.event_at,
                e.body,
                &e.execution_status,
                &e.filled_qty,
                &e.filled_avg_price,
                &e.order.execution_pk,
                &e.replaces,
            ],
        )
        .await
        .map_err(StoreError::new("recording a broker order event"))?;
    let Some(row) = row else { return Ok(None) };
    let inserted: Option<i64> = row.get(0);
    if inserted.is_none() {
        return Ok(None);
    }
    // the quantity and price are bounded by the statement, so they always fit a Decimal; an
    // error is still an error, never a panic of the committing task
    let fill_qty: Option<Decimal> = row
        .try_get(3)
        .map_err(StoreError::new("reading a broker order event"))?;
    let fill_price: Option<Decimal> = row
        .try_get(4)
        .map_err(StoreError::new("reading a broker order event"))?;
    Ok(Some(EventApplied {
        execution_status: row.get(1),
        decision_status: row.get::<_, Option<String>>(2).unwrap_or_default(),
        fill: fill_qty.map(|q| (q, fill_price)),
    }))
}

/// When the newest event of `account` recorded from `broker` happened (recovery lists orders
/// changed since then after a reconnect).
pub async fn last_event_at(
    client: &impl GenericClient,
    broker: &str,
    account: &str,
) -> Result<Option<DateTime<Utc>>, StoreError> {
    let row = client
        .query_one(
            "SELECT max(event_at) FROM broker_order_events WHERE broker = $1 AND account = $2",
            &[&broker, &account],
        )
        .await
        .map_err(StoreError::new("reading the last broker event"))?;
    Ok(row.get(0))
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

/// A decision with its execution, as `GET /api/v1/decisions/{id}` shows it.
pub async fn decision_view(
    client: &impl GenericClient,
    decision_id: Uuid,
) -> Result<Option<Value>, StoreError> {
    let row = client
        .query_opt(
            "SELECT jsonb_build_object( \
                 'decision_id', d.decision_id, 'strategy', d.strategy_name, \
                 'strategy_version', d.strategy_version, 'account', d.account, \
                 'symbol', d.symbol, 'side', d.side, 'qty', d.quantity::text, \
                 'notional', d.notional::text, 'order_type', d.order_type, 'limit_price', d.limit_price::text, \
                 'stop_price', d.stop_price::text, 'time_in_force', d.time_in_force, \
                 'signal_strength', d.signal_strength::text, 'status', d.status, \
                 'failure_reason', d.failure_reason, 'rationale', d.decision_rationale, \
                 'created_at', d.created_at, 'executed_at', d.executed_at, \
                 'failed_at', d.failed_at, 'cancelled_at', d.cancelled_at, \
                 'execution', (SELECT jsonb_build_object( \
                     'execution_id', e.execution_id, 'status', e.status, \
                     'broker', e.broker, 'broker_order_id', e.broker_order_id, \
                     'http_status', e.http_status_code, 'error_code', e.error_code, \
                     'error_message', e.error_message, \
                     'filled_qty', e.filled_quantity::text, \
                     'filled_avg_price', e.filled_avg_price::text, \
                     'request_payload_id', e.api_request_payload_id, \
                     'response_payload_id', e.api_response_payload_id, \
                     'submitted_at', e.submitted_at, 'filled_at', e.filled_at) \
                   FROM trade_executions e WHERE e.trade_decision_id = d.id), \
                 'events', (SELECT COALESCE(jsonb_agg(jsonb_build_object( \
                     'event', v.event, 'order_status', v.order_status, 'qty', v.qty::text, \
                     'price', v.price::text, 'event_at', v.event_at) ORDER BY v.id), '[]') \
                   FROM broker_order_events v WHERE v.trade_decision_id = d.id)) \
             FROM trade_decisions d WHERE d.decision_id = $1",
            &[&decision_id],
        )
        .await
        .map_err(StoreError::new("reading a decision"))?;
    Ok(row.map(|r| r.get(0)))
}

/// The most recent decisions, newest first, as `demo` and `GET /api/v1/decisions` list them.
pub async fn recent_decisions(
    client: &impl GenericClient,
    limit: i64,
) -> Result<Vec<Value>, StoreError> {
    let rows = client
        .query(
            "SELECT jsonb_build_object('decision_id', d.decision_id, 'strategy', d.strategy_name, \
                 'symbol', d.symbol, 'side', d.side, 'qty', d.quantity::text, \
                 'signal_strength', d.signal_strength::text, 'status', d.status, \
                 'failure_reason', d.failure_reason, 'execution_status', e.status, \
                 'http_status', e.http_status_code, 'error_message', e.error_message, \
                 'filled_qty', e.filled_quantity::text, \
                 'filled_avg_price', e.filled_avg_price::text, 'created_at', d.created_at) \
             FROM trade_decisions d LEFT JOIN trade_executions e ON e.trade_decision_id = d.id \
             ORDER BY d.id DESC LIMIT $1",
            &[&limit],
        )
        .await
        .map_err(StoreError::new("listing decisions"))?;
    Ok(rows.iter().map(|r| r.get(0)).collect())
}

/// One refused order, as `order_rejects` keeps it.
#[derive(Debug, Clone)]
pub struct RejectRecord {
    /// The order as sent
    pub order: crate::domain::OrderRequest,
    /// The account it would have gone to, when known
    pub account: Option<String>,
    /// Why
    pub reject: crate::domain::OrderReject,
    /// When
    pub rejected_at: DateTime<Utc>,
}

impl RejectRecord {
    /// `order`, refused now with `reject`.
    pub fn now(
        order: &crate::domain::OrderRequest,
        account: Option<String>,
        reject: crate::domain::OrderReject,
    ) -> Self {
        Self {
            order: order.clone(),
            account,
            reject,
            rejected_at: Utc::now(),
        }
    }
}

/// Longest name a refusal record keeps, in characters.
const STORED_NAME_MAX: usize = 256;

/// `text` without NUL characters (PostgreSQL stores none) and at most [`STORED_NAME_MAX`]
/// characters long.
fn storable_name(text: &str) -> String {
    let mut clean: String = text
        .chars()
        .take(STORED_NAME_MAX)
        .map(|c| if c == '\0' { '\u{FFFD}' } else { c })
        .collect();
    if text.chars().count() > STORED_NAME_MAX {
        clean.push('…');
    }
    clean
}

/// `value` with every NUL character in its strings and keys replaced.
fn storable_json(value: Value) -> Value {
    match value {
        Value::String(s) if s.contains('\0') => Value::String(s.replace('\0', "\u{FFFD}")),
        Value::Array(items) => Value::Array(items.into_iter().map(storable_json).collect()),
        Value::Object(map) => Value::Object(
            map.into_iter()
                .map(|(k, v)| (k.replace('\0', "\u{FFFD}"), storable_json(v)))
                .collect(),
        ),
        other => other,
    }
}

/// Stores refused orders, in one transaction.
pub async fn insert_rejects(
    client: &mut tokio_postgres::Client,
    rejects: &[RejectRecord],
) -> Result<(), StoreError> {
    let tx = client
        .transaction()
        .await
        .map_err(StoreError::new("beginning an order-rejects batch"))?;
    let statement = tx
        .prepare(
            "INSERT INTO order_rejects (strategy_name, strategy_version, account, symbol, side, \
                 quantity, order_type, limit_price, stop_price, signal_strength, reason_code, \
                 reason_message, request, rejected_at, notional) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15)",
        )
        .await
        .map_err(StoreError::new("preparing an order reject"))?;
    for r in rejects {
        let o = &r.order;
        // an order is refused, among other things, for text the database cannot store: its
        // record keeps it storable (NUL characters replaced, names cut to a length that fits)
        let request = storable_json(serde_json::to_value(o).unwrap_or(Value::Null));
        let account = r.account.as_deref().map(storable_name);
        tx.execute(
            &statement,
            &[
                &storable_name(&o.strategy),
                &storable_name(&o.strategy_version),
                &account,
                &storable_name(&o.symbol),
                &o.side.as_str(),
                &o.qty,
                &o.order_type.as_str(),
                &o.limit_price,
                &o.stop_price,
                &o.signal_strength,
                &r.reject.code,
                &r.reject.message.replace('\0', "\u{FFFD}"),
                &request,
                &r.rejected_at,
                &o.notional,
            ],
        )
        .await
        .map_err(StoreError::new("storing an order reject"))?;
    }
    tx.commit()
        .await
        .map_err(StoreError::new("committing order rejects"))?;
    Ok(())
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
