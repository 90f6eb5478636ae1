//! The audit reports' queries: one function per question, each answered from indexes (the
//! symbol's, the decision's, the time range's), so a year of data answers in milliseconds.
//!
//! Ranges are half-open, `[from, to)`, in UTC. Weekdays are ISO (1 = Monday) and hours are UTC.
//! A failure's *reason* is normalized from the execution (HTTP status, broker error code,
//! transport error) or the decision's own failure reason, so "403 insufficient buying power"
//! from one order and another count as the same reason: see [`FAILURE_REASON`].

use chrono::{DateTime, NaiveDate, Utc};
use rust_decimal::Decimal;
use serde::Serialize;
use serde_json::Value;
use tokio_postgres::{GenericClient, Row};
use uuid::Uuid;

use super::StoreError;

mod daily_summary;
mod decisions;
mod failure_analysis;
mod lifecycle;
mod lineage;
mod order_failure;
mod strategy_performance;
mod symbol_activity;

pub use daily_summary::{
    DailySummary, StoredSummary, api_errors_since, claim_undelivered, daily_summary,
    daily_summary_in, local_day, newest_summary_day, outcomes_since, record_delivery,
    store_summary, summary_stored,
};
pub use decisions::{
    DecisionView, EventLine, ExecutionLine, RecentDecision, decision_view, recent_decisions,
};
pub use failure_analysis::{FailureAnalysis, failure_analysis};
pub use lifecycle::{each_lifecycle_event, order_lifecycle};
pub use lineage::{CallView, ExecutionView, Lineage, PayloadView, RunView, TimelineEntry, lineage};
pub use order_failure::{OrderFailure, order_failure};
pub use strategy_performance::{StrategyLine, strategy_performance};
pub use symbol_activity::{FillLine, IngestedRecord, SymbolActivity, symbol_activity};

/// The normalized reason of a failed decision, as SQL over `trade_decisions d` left-joined to
/// its `trade_executions e`.
pub const FAILURE_REASON: &str = "CASE \
    WHEN e.http_status_code = 403 OR e.error_code = '40310000' THEN 'insufficient_buying_power' \
    WHEN e.http_status_code = 422 THEN 'validation_rejected' \
    WHEN e.http_status_code = 429 THEN 'rate_limited' \
    WHEN e.http_status_code >= 500 THEN 'broker_server_error' \
    WHEN e.error_code = 'timeout' THEN 'api_timeout' \
    WHEN e.error_code IN ('transport', 'not_sent', 'connection_lost') THEN 'api_transport_error' \
    WHEN e.error_code = 'tls' THEN 'tls_verification_failed' \
    WHEN e.error_code = 'not_received_by_broker' THEN 'not_received_by_broker' \
    WHEN e.http_status_code BETWEEN 400 AND 499 THEN 'broker_refused_' || e.http_status_code \
    WHEN e.status = 'rejected' THEN 'rejected_by_broker' \
    WHEN d.failure_reason = 'not_received_by_broker' THEN 'not_received_by_broker' \
    ELSE coalesce(nullif(d.failure_reason, ''), 'unknown') END";

/// The normalized reasons that are API errors (the broker's servers, its rate limit, the
/// network, an order that never reached it) rather than refusals of the order itself.
pub const API_ERROR_REASONS: [&str; 6] = [
    "broker_server_error",
    "api_timeout",
    "api_transport_error",
    "tls_verification_failed",
    "rate_limited",
    "not_received_by_broker",
];

/// Which side a normalized reason belongs to: `api_error` (see [`API_ERROR_REASONS`]) or
/// `broker_reject` for refusals of the order itself.
pub fn failure_side(reason: &str) -> &'static str {
    if API_ERROR_REASONS.contains(&reason) {
        "api_error"
    } else {
        "broker_reject"
    }
}

/// A `[from, to)` range in UTC.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Range {
    /// Inclusive start
    pub from: DateTime<Utc>,
    /// Exclusive end
    pub to: DateTime<Utc>,
}

impl Range {
    /// Whole days `[first, last]` (UTC midnights), the way people ask ("2025-01-01 to
    /// 2025-12-31").
    pub fn days(first: NaiveDate, last: NaiveDate) -> Result<Self, String> {
        if last < first {
            return Err(format!(
                "the range ends ({last}) before it starts ({first})"
            ));
        }
        let start = first
            .and_hms_opt(0, 0, 0)
            .ok_or("bad start date")?
            .and_utc();
        let end = last
            .succ_opt()
            .and_then(|d| d.and_hms_opt(0, 0, 0))
            .ok_or("bad end date")?
            .and_utc();
        Ok(Self {
            from: start,
            to: end,
        })
    }
}

/// A count under a label.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Count {
    /// What is counted (a reason, a symbol, a status)
    pub key: String,
    /// How many
    pub count: i64,
}

fn counts(rows: &[Row]) -> Vec<Count> {
    rows.iter()
        .map(|r| Count {
            key: r.get(0),
            count: r.get(1),
        })
        .collect()
}

/// Failed decisions created in `range` (of `symbol`, when given) by normalized reason, most
/// frequent first.
async fn failures_by_reason(
    client: &impl GenericClient,
    symbol: Option<&str>,
    range: Range,
) -> Result<Vec<Count>, StoreError> {
    let rows = client
        .query(
            &format!(
                "SELECT {FAILURE_REASON} AS reason, count(*) FROM trade_decisions d \
                 LEFT JOIN trade_executions e ON e.trade_decision_id = d.id \
                 WHERE d.status = 'failed' AND d.created_at >= $2 AND d.created_at < $3 \
                   AND ($1::text IS NULL OR d.symbol = $1) \
                 GROUP BY 1 ORDER BY 2 DESC, 1"
            ),
            &[&symbol, &range.from, &range.to],
        )
        .await
        .map_err(StoreError::new("grouping failures by reason"))?;
    Ok(counts(&rows))
}

/// Orders refused before a decision in `range` (of `symbol`, when given) by reason code, most
/// frequent first.
async fn rejects_by_code(
    client: &impl GenericClient,
    symbol: Option<&str>,
    range: Range,
) -> Result<Vec<Count>, StoreError> {
    let rows = client
        .query(
            "SELECT reason_code, count(*) FROM order_rejects \
             WHERE rejected_at >= $2 AND rejected_at < $3 \
               AND ($1::text IS NULL OR symbol = $1) \
             GROUP BY 1 ORDER BY 2 DESC, 1",
            &[&symbol, &range.from, &range.to],
        )
        .await
        .map_err(StoreError::new("counting refused orders"))?;
    Ok(counts(&rows))
}

/// Decisions by outcome, with the success rate (executed / (executed + failed), four places,
/// none when nothing has an outcome yet).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Outcomes {
    /// All decisions
    pub decisions: i64,
    /// Taken by the broker
    pub executed: i64,
    /// Refused by the broker or failed on the way
    pub failed: i64,
    /// Cancelled on the strategy's request
    pub cancelled: i64,
    /// Outcome not known yet
    pub pending: i64,
    /// executed / (executed + failed)
    pub success_rate: Option<Decimal>,
}

impl Outcomes {
    fn from_row(row: &Row, at: usize) -> Self {
        let executed: i64 = row.get(at + 1);
        let failed: i64 = row.get(at + 2);
        Self {
            decisions: row.get(at),
            executed,
            failed,
            cancelled: row.get(at + 3),
            pending: row.get(at + 4),
            success_rate: rate(executed, executed + failed),
        }
    }
}

fn rate(part: i64, whole: i64) -> Option<Decimal> {
    (whole > 0).then(|| (Decimal::from(part) / Decimal::from(whole)).round_dp(4))
}

const OUTCOME_COLUMNS: &str = "count(*) AS decisions, \
    count(*) FILTER (WHERE d.status = 'executed') AS executed, \
    count(*) FILTER (WHERE d.status = 'failed') AS failed, \
    count(*) FILTER (WHERE d.status = 'cancelled') AS cancelled, \
    count(*) FILTER (WHERE d.status = 'pending') AS pending";

/// A decision as the reports show it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct DecisionLine {
    /// The decision (= client order id)
    pub decision_id: Uuid,
    /// Strategy
    pub strategy: String,
    /// Its version
    pub strategy_version: String,
    /// Account
    pub account: String,
    /// Symbol
    pub symbol: String,
    /// buy or sell
    pub side: String,
    /// Quantity
    pub quantity: Option<Decimal>,
    /// Order type
    pub order_type: String,
    /// Limit price
    pub limit_price: Option<Decimal>,
    /// Signal strength
    pub signal_strength: Option<Decimal>,
    /// pending, executed, failed, cancelled
    pub status: String,
    /// Why it failed
    pub failure_reason: Option<String>,
    /// The rationale (with `data_lineage`)
    pub rationale: Value,
    /// When it was committed
    pub created_at: DateTime<Utc>,
    /// The execution's status
    pub execution_status: Option<String>,
    /// The broker's order id
    pub broker_order_id: Option<String>,
    /// Filled quantity
    pub filled_quantity: Option<Decimal>,
    /// Average fill price
    pub filled_avg_price: Option<Decimal>,
    /// HTTP status of the submission
    pub http_status: Option<i32>,
    /// The broker's error message
    pub error_message: Option<String>,
}

const DECISION_LINE: &str = "d.decision_id, d.strategy_name, d.strategy_version, d.account, \
    d.symbol, d.side, d.quantity, d.order_type, d.limit_price, d.signal_strength, d.status, \
    d.failure_reason, d.decision_rationale, d.created_at, e.status, e.broker_order_id, \
    e.filled_quantity, e.filled_avg_price, e.http_status_code, e.error_message";

fn decision_line(r: &Row) -> DecisionLine {
    DecisionLine {
        decision_id: r.get(0),
        strategy: r.get(1),
        strategy_version: r.get(2),
        account: r.get(3),
        symbol: r.get(4),
        side: r.get(5),
        quantity: r.get(6),
        order_type: r.get(7),
        limit_price: r.get(8),
        signal_strength: r.get(9),
        status: r.get(10),
        failure_reason: r.get(11),
        rationale: r.get(12),
        created_at: r.get(13),
        execution_status: r.get(14),
        broker_order_id: r.get(15),
        filled_quantity: r.get(16),
        filled_avg_price: r.get(17),
        http_status: r.get(18),
        error_message: r.get(19),
    }
}
