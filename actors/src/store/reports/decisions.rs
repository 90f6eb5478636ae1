//! Decisions with their executions, as the API and `demo` list them.

use chrono::{DateTime, Utc};
use rust_decimal::Decimal;
use serde::Serialize;
use serde_json::Value;
use tokio_postgres::{Client, GenericClient, IsolationLevel, Row};
use uuid::Uuid;

use crate::store::StoreError;

/// A decision with its execution and the events the broker pushed for it, as
/// `GET /api/v1/decisions/{id}` shows it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct DecisionView {
    /// The decision's public id
    pub decision_id: Uuid,
    /// The strategy that decided
    pub strategy: String,
    /// Its version
    pub strategy_version: String,
    /// The broker account
    pub account: String,
    /// The symbol
    pub symbol: String,
    /// buy or sell
    pub side: String,
    /// The quantity (absent for a notional order)
    pub qty: Option<Decimal>,
    /// The notional (absent for a quantity order)
    pub notional: Option<Decimal>,
    /// market, limit, stop or stop_limit
    pub order_type: String,
    /// The limit price
    pub limit_price: Option<Decimal>,
    /// The stop price
    pub stop_price: Option<Decimal>,
    /// day, gtc, ...
    pub time_in_force: String,
    /// How strong the signal was
    pub signal_strength: Option<Decimal>,
    /// pending, executed, failed or cancelled
    pub status: String,
    /// Why it failed
    pub failure_reason: Option<String>,
    /// The strategy's rationale, as sent
    pub rationale: Value,
    /// When it was decided
    pub created_at: DateTime<Utc>,
    /// When it reached the broker
    pub executed_at: Option<DateTime<Utc>>,
    /// When it failed
    pub failed_at: Option<DateTime<Utc>>,
    /// When it was cancelled
    pub cancelled_at: Option<DateTime<Utc>>,
    /// Its submission, once made
    pub execution: Option<ExecutionLine>,
    /// The events the broker pushed for it, oldest first
    pub events: Vec<EventLine>,
}

/// A decision's submission at the broker.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ExecutionLine {
    /// The execution's public id
    pub execution_id: Uuid,
    /// Its status, as the broker last showed it
    pub status: String,
    /// The broker
    pub broker: String,
    /// The broker's order id
    pub broker_order_id: Option<String>,
    /// The HTTP status of the submission
    pub http_status: Option<i32>,
    /// The broker's error code
    pub error_code: Option<String>,
    /// The broker's error message
    pub error_message: Option<String>,
    /// How much has filled
    pub filled_qty: Option<Decimal>,
    /// At what average price
    pub filled_avg_price: Option<Decimal>,
    /// The stored request
    pub request_payload_id: Option<i64>,
    /// The stored response
    pub response_payload_id: Option<i64>,
    /// When it was submitted
    pub submitted_at: Option<DateTime<Utc>>,
    /// When it filled
    pub filled_at: Option<DateTime<Utc>>,
}

/// One event the broker pushed for a decision's order.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct EventLine {
    /// new, fill, partial_fill, canceled, ...
    pub event: String,
    /// The order's status after it
    pub order_status: Option<String>,
    /// The quantity it filled
    pub qty: Option<Decimal>,
    /// At what price
    pub price: Option<Decimal>,
    /// When the broker says it happened
    pub event_at: Option<DateTime<Utc>>,
}

/// A decision and its execution in one line, as `GET /api/v1/decisions` lists them.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct RecentDecision {
    /// The decision's public id
    pub decision_id: Uuid,
    /// The strategy that decided
    pub strategy: String,
    /// The symbol
    pub symbol: String,
    /// buy or sell
    pub side: String,
    /// The quantity (absent for a notional order)
    pub qty: Option<Decimal>,
    /// How strong the signal was
    pub signal_strength: Option<Decimal>,
    /// pending, executed, failed or cancelled
    pub status: String,
    /// Why it failed
    pub failure_reason: Option<String>,
    /// The execution's status, once submitted
    pub execution_status: Option<String>,
    /// The HTTP status of the submission
    pub http_status: Option<i32>,
    /// The broker's error message
    pub error_message: Option<String>,
    /// How much has filled
    pub filled_qty: Option<Decimal>,
    /// At what average price
    pub filled_avg_price: Option<Decimal>,
    /// When it was decided
    pub created_at: DateTime<Utc>,
}

/// Decision `decision_id` with its execution and events, read in one snapshot (a read-only
/// repeatable-read transaction), so a fill committed meanwhile shows in all three or none.
pub async fn decision_view(
    client: &mut Client,
    decision_id: Uuid,
) -> Result<Option<DecisionView>, StoreError> {
    let snapshot = client
        .build_transaction()
        .isolation_level(IsolationLevel::RepeatableRead)
        .read_only(true)
        .start()
        .await
        .map_err(StoreError::new("starting a decision's snapshot"))?;
    let view = read_decision(&snapshot, decision_id).await?;
    snapshot
        .commit()
        .await
        .map_err(StoreError::new("ending a decision's snapshot"))?;
    Ok(view)
}

async fn read_decision(
    client: &impl GenericClient,
    decision_id: Uuid,
) -> Result<Option<DecisionView>, StoreError> {
    let Some(d) = client
        .query_opt(
            "SELECT d.id, d.decision_id, d.strategy_name, d.strategy_version, d.account, \
                    d.symbol, d.side, d.quantity, d.notional, d.order_type, d.limit_price, \
                    d.stop_price, d.time_in_force, d.signal_strength, d.status, \
                    d.failure_reason, d.decision_rationale, d.created_at, d.executed_at, \
                    d.failed_at, d.cancelled_at \
             FROM trade_decisions d WHERE d.decision_id = $1",
            &[&decision_id],
        )
        .await
        .map_err(StoreError::new("reading a decision"))?
    else {
        return Ok(None);
    };
    let pk: i64 = d
        .try_get(0)
        .map_err(StoreError::new("reading a decision"))?;
    let execution = client
        .query_opt(
            "SELECT e.execution_id, e.status, e.broker, e.broker_order_id, e.http_status_code, \
                    e.error_code, e.error_message, e.filled_quantity, e.filled_avg_price, \
                    e.api_request_payload_id, e.api_response_payload_id, e.submitted_at, \
                    e.filled_at \
             FROM trade_executions e WHERE e.trade_decision_id = $1",
            &[&pk],
        )
        .await
        .map_err(StoreError::new("reading a decision's execution"))?
        .map(|e| {
            Ok::<_, tokio_postgres::Error>(ExecutionLine {
                execution_id: e.try_get(0)?,
                status: e.try_get(1)?,
                broker: e.try_get(2)?,
                broker_order_id: e.try_get(3)?,
                http_status: e.try_get(4)?,
                error_code: e.try_get(5)?,
                error_message: e.try_get(6)?,
                filled_qty: e.try_get(7)?,
                filled_avg_price: e.try_get(8)?,
                request_payload_id: e.try_get(9)?,
                response_payload_id: e.try_get(10)?,
                submitted_at: e.try_get(11)?,
                filled_at: e.try_get(12)?,
            })
        })
        .transpose()
        .map_err(StoreError::new("reading a decision's execution"))?;
    let events = client
        .query(
            "SELECT v.event, v.order_status, v.qty, v.price, v.event_at \
             FROM broker_order_events v WHERE v.trade_decision_id = $1 ORDER BY v.id",
            &[&pk],
        )
        .await
        .map_err(StoreError::new("reading a decision's broker events"))?
        .iter()
        .map(|v| {
            Ok(EventLine {
                event: v.try_get(0)?,
                order_status: v.try_get(1)?,
                qty: v.try_get(2)?,
                price: v.try_get(3)?,
                event_at: v.try_get(4)?,
            })
        })
        .collect::<Result<Vec<_>, tokio_postgres::Error>>()
        .map_err(StoreError::new("reading a decision's broker events"))?;
    decision_of(&d, execution, events)
        .map(Some)
        .map_err(StoreError::new("reading a decision"))
}

// every column through `try_get`: a NUMERIC written by hand beyond what a Decimal holds is an
// error, never a panic in the handler
fn decision_of(
    d: &Row,
    execution: Option<ExecutionLine>,
    events: Vec<EventLine>,
) -> Result<DecisionView, tokio_postgres::Error> {
    Ok(DecisionView {
        decision_id: d.try_get(1)?,
        strategy: d.try_get(2)?,
        strategy_version: d.try_get(3)?,
        account: d.try_get(4)?,
        symbol: d.try_get(5)?,
        side: d.try_get(6)?,
        qty: d.try_get(7)?,
        notional: d.try_get(8)?,
        order_type: d.try_get(9)?,
        limit_price: d.try_get(10)?,
        stop_price: d.try_get(11)?,
        time_in_force: d.try_get(12)?,
        signal_strength: d.try_get(13)?,
        status: d.try_get(14)?,
        failure_reason: d.try_get(15)?,
        rationale: d.try_get(16)?,
        created_at: d.try_get(17)?,
        executed_at: d.try_get(18)?,
        failed_at: d.try_get(19)?,
        cancelled_at: d.try_get(20)?,
        execution,
        events,
    })
}

fn recent_decision(r: &Row) -> Result<RecentDecision, tokio_postgres::Error> {
    Ok(RecentDecision {
        decision_id: r.try_get(0)?,
        strategy: r.try_get(1)?,
        symbol: r.try_get(2)?,
        side: r.try_get(3)?,
        qty: r.try_get(4)?,
        signal_strength: r.try_get(5)?,
        status: r.try_get(6)?,
        failure_reason: r.try_get(7)?,
        execution_status: r.try_get(8)?,
        http_status: r.try_get(9)?,
        error_message: r.try_get(10)?,
        filled_qty: r.try_get(11)?,
        filled_avg_price: r.try_get(12)?,
        created_at: r.try_get(13)?,
    })
}

/// The most recent decisions, newest first.
pub async fn recent_decisions(
    client: &impl GenericClient,
    limit: i64,
) -> Result<Vec<RecentDecision>, StoreError> {
    let rows = client
        .query(
            "SELECT d.decision_id, d.strategy_name, d.symbol, d.side, d.quantity, \
                    d.signal_strength, d.status, d.failure_reason, e.status, \
                    e.http_status_code, e.error_message, e.filled_quantity, \
                    e.filled_avg_price, d.created_at \
             FROM trade_decisions d LEFT JOIN trade_executions e ON e.trade_decision_id = d.id \
             ORDER BY d.id DESC LIMIT $1",
            &[&limit],
        )
        .await
        .map_err(StoreError::new("listing decisions"))?;
    rows.iter()
        .map(recent_decision)
        .collect::<Result<_, _>>()
        .map_err(StoreError::new("listing decisions"))
}
