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

/// One ingested record of the symbol, with the run that brought it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct IngestedRecord {
    /// The record's type
    pub record_type: String,
    /// The record's id
    pub record_id: String,
    /// created, updated, skipped
    pub operation: String,
    /// When the record itself happened (a trade date, a filing)
    pub occurred_at: Option<DateTime<Utc>>,
    /// When it was ingested
    pub ingested_at: DateTime<Utc>,
    /// The run
    pub run_id: Uuid,
    /// The run's task
    pub task: String,
    /// The run's data source
    pub source: String,
    /// The run's status
    pub run_status: String,
    /// When the data became available: the run's completion
    pub available_at: Option<DateTime<Utc>>,
}

/// One fill of the symbol, from Alpaca's stream or IBKR's executions.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct FillLine {
    /// alpaca or ibkr
    pub broker: String,
    /// Account
    pub account: String,
    /// The decision (Alpaca) or the IBKR exec id
    pub reference: String,
    /// buy or sell (Alpaca), BOT or SLD (IBKR)
    pub side: Option<String>,
    /// Quantity of this fill
    pub quantity: Option<Decimal>,
    /// Its price
    pub price: Option<Decimal>,
    /// When
    pub at: Option<DateTime<Utc>>,
}

/// "All of a symbol's activity": what was ingested, decided, executed and filled.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct SymbolActivity {
    /// The symbol
    pub symbol: String,
    /// The range
    pub range: Range,
    /// Data ingested for the symbol (at most `limit`, newest first)
    pub data_ingested: Vec<IngestedRecord>,
    /// How many records were ingested in all
    pub data_ingested_total: i64,
    /// Decisions with their executions (at most `limit`, newest first)
    pub decisions: Vec<DecisionLine>,
    /// Fills from Alpaca and IBKR (at most `limit`, newest first)
    pub fills: Vec<FillLine>,
    /// Orders refused before a decision (risk checks, kill switch): signal-side
    pub rejects: Vec<Count>,
    /// Over the whole range
    pub summary: Outcomes,
    /// Failures by normalized reason
    pub failure_breakdown: Vec<Count>,
}

/// Symbol activity over `range`; lists capped at `limit` rows each, totals over everything.
/// An unknown symbol is an empty report, not an error.
pub async fn symbol_activity(
    client: &impl GenericClient,
    symbol: &str,
    range: Range,
    limit: i64,
) -> Result<SymbolActivity, StoreError> {
    let (from, to) = (&range.from, &range.to);
    let ingested = async {
        client
            .query(
                "SELECT r.record_type, r.record_id, r.operation, r.occurred_at, r.created_at, \
                    i.run_id, i.task_name, i.data_source, i.status, i.completed_at \
             FROM data_ingestion_run_records r \
             JOIN data_ingestion_runs i ON i.id = r.data_ingestion_run_id \
             WHERE r.symbol = $1 AND r.created_at >= $2 AND r.created_at < $3 \
             ORDER BY r.created_at DESC LIMIT $4",
                &[&symbol, from, to, &limit],
            )
            .await
            .map_err(StoreError::new("reading a symbol's ingested data"))
    };
    let ingested_total = async {
        client
            .query_one(
                "SELECT count(*) FROM data_ingestion_run_records \
             WHERE symbol = $1 AND created_at >= $2 AND created_at < $3",
                &[&symbol, from, to],
            )
            .await
            .map_err(StoreError::new("counting a symbol's ingested data"))
    };
    let decisions = async {
        client
            .query(
                &format!(
                    "SELECT {DECISION_LINE} FROM trade_decisions d \
                 LEFT JOIN trade_executions e ON e.trade_decision_id = d.id \
                 WHERE d.symbol = $1 AND d.created_at >= $2 AND d.created_at < $3 \
                 ORDER BY d.created_at DESC LIMIT $4"
                ),
                &[&symbol, from, to, &limit],
            )
            .await
            .map_err(StoreError::new("reading a symbol's decisions"))
    };
    let summary = async {
        client
            .query_one(
                &format!(
                    "SELECT {OUTCOME_COLUMNS} FROM trade_decisions d \
                 WHERE d.symbol = $1 AND d.created_at >= $2 AND d.created_at < $3"
                ),
                &[&symbol, from, to],
            )
            .await
            .map_err(StoreError::new("summing a symbol's decisions"))
    };
    let breakdown = failures_by_reason(client, Some(symbol), range);
    let fills = async {
        client
        .query(
            "(SELECT 'alpaca', o.account, d.decision_id::text, d.side, o.qty, o.price, o.event_at \
              FROM trade_decisions d \
              JOIN broker_order_events o ON o.trade_decision_id = d.id \
              WHERE d.symbol = $1 AND d.created_at >= $2 AND d.created_at < $3 \
                AND o.event IN ('fill', 'partial_fill') \
              ORDER BY d.created_at DESC, o.event_at DESC LIMIT $4) \
             UNION ALL \
             (SELECT 'ibkr', f.account_id, f.exec_id, f.side, f.quantity, f.price, f.executed_at \
              FROM broker_fills f \
              WHERE f.symbol = $1 AND f.executed_at >= $2 AND f.executed_at < $3 \
                AND f.is_canonical \
              ORDER BY f.executed_at DESC LIMIT $4) \
             ORDER BY 7 DESC NULLS LAST LIMIT $4",
            &[&symbol, from, to, &limit],
        )
        .await
        .map_err(StoreError::new("reading a symbol's fills"))
    };
    let rejects = rejects_by_code(client, Some(symbol), range);
    // one connection, the statements pipelined: their round trips overlap
    let (ingested, ingested_total, decisions, summary, breakdown, fills, rejects) = tokio::try_join!(
        ingested,
        ingested_total,
        decisions,
        summary,
        breakdown,
        fills,
        rejects
    )?;
    let ingested_total: i64 = ingested_total.get(0);
    Ok(SymbolActivity {
        symbol: symbol.to_string(),
        range,
        data_ingested: ingested
            .iter()
            .map(|r| IngestedRecord {
                record_type: r.get(0),
                record_id: r.get(1),
                operation: r.get(2),
                occurred_at: r.get(3),
                ingested_at: r.get(4),
                run_id: r.get(5),
                task: r.get(6),
                source: r.get(7),
                run_status: r.get(8),
                available_at: r.get(9),
            })
            .collect(),
        data_ingested_total: ingested_total,
        decisions: decisions.iter().map(decision_line).collect(),
        fills: fills
            .iter()
            .map(|r| FillLine {
                broker: r.get(0),
                account: r.get(1),
                reference: r.get(2),
                side: r.get(3),
                quantity: r.get(4),
                price: r.get(5),
                at: r.get(6),
            })
            .collect(),
        rejects,
        summary: Outcomes::from_row(&summary, 0),
        failure_breakdown: breakdown,
    })
}

/// A stored API payload.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct PayloadView {
    /// Its id
    pub id: i64,
    /// ApiRequest or ApiResponse
    pub kind: String,
    /// Where it went or came from
    pub source: String,
    /// When
    pub captured_at: DateTime<Utc>,
    /// The document
    pub payload: Value,
}

/// One API call of an ingestion run, with both payloads.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct CallView {
    /// The endpoint
    pub endpoint: String,
    /// HTTP method
    pub method: Option<String>,
    /// HTTP status
    pub http_status: Option<i32>,
    /// How long it took
    pub duration_ms: Option<i32>,
    /// When it was logged
    pub at: DateTime<Utc>,
    /// The request
    pub request: Option<PayloadView>,
    /// The response
    pub response: Option<PayloadView>,
}

/// An ingestion run as lineage shows it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct RunView {
    /// The run
    pub run_id: Uuid,
    /// Task
    pub task: String,
    /// Source
    pub source: String,
    /// running, completed, failed
    pub status: String,
    /// Started
    pub started_at: DateTime<Utc>,
    /// When its data became available
    pub completed_at: Option<DateTime<Utc>>,
    /// Records fetched
    pub records_fetched: i32,
}

/// One event of the decision's order, from any of the trails, in time order.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct TimelineEntry {
    /// When
    pub at: DateTime<Utc>,
    /// decision, execution, broker_event, tradelog
    pub trail: String,
    /// What happened
    pub what: String,
    /// The native document, where there is one
    pub body: Option<Value>,
}

/// The execution of a decision with both payloads.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ExecutionView {
    /// The execution's id
    pub execution_id: Uuid,
    /// Its status
    pub status: String,
    /// The broker
    pub broker: String,
    /// The broker's order id
    pub broker_order_id: Option<String>,
    /// HTTP status of the submission
    pub http_status: Option<i32>,
    /// The broker's error code
    pub error_code: Option<String>,
    /// The broker's error message
    pub error_message: Option<String>,
    /// Filled quantity
    pub filled_quantity: Decimal,
    /// Average fill price
    pub filled_avg_price: Option<Decimal>,
    /// When it was sent
    pub submitted_at: Option<DateTime<Utc>>,
    /// The request as sent
    pub request: Option<PayloadView>,
    /// The response as received
    pub response: Option<PayloadView>,
}

/// "What data did we have when we made this trade": the decision and everything it rests on.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Lineage {
    /// The decision
    pub decision: DecisionLine,
    /// Its primary signal (type, id)
    pub primary_signal: Option<(String, String)>,
    /// The run that proves the primary data was there, and when
    pub primary_run: Option<RunView>,
    /// The API calls of that run with their payloads
    pub primary_run_calls: Vec<CallView>,
    /// The runs completed within the lineage window before the decision (from its rationale)
    pub lineage_runs: Value,
    /// Whether the primary run completed before the decision was made
    pub data_available_before_decision: Option<bool>,
    /// The execution, if the order was sent
    pub execution: Option<ExecutionView>,
    /// Decision, execution, broker events and trade-log events for the order, in time order
    pub timeline: Vec<TimelineEntry>,
}

async fn payload(
    client: &impl GenericClient,
    id: Option<i64>,
) -> Result<Option<PayloadView>, StoreError> {
    let Some(id) = id else { return Ok(None) };
    let row = client
        .query_opt(
            "SELECT id, type, source, captured_at, payload FROM api_payloads WHERE id = $1",
            &[&id],
        )
        .await
        .map_err(StoreError::new("reading a payload"))?;
    Ok(row.map(|r| PayloadView {
        id: r.get(0),
        kind: r.get(1),
        source: r.get(2),
        captured_at: r.get(3),
        payload: r.get(4),
    }))
}

/// The lineage of `decision_id`; `None` when there is no such decision.
pub async fn lineage(
    client: &impl GenericClient,
    decision_id: Uuid,
) -> Result<Option<Lineage>, StoreError> {
    let Some(row) = client
        .query_opt(
            &format!(
                "SELECT {DECISION_LINE}, d.primary_signal_type, d.primary_signal_id, \
                        d.primary_ingestion_run_id, d.id, e.execution_id, e.broker, \
                        e.error_code, e.submitted_at, e.api_request_payload_id, \
                        e.api_response_payload_id, d.executed_at, d.failed_at, d.cancelled_at, \
                        greatest(d.updated_at, e.updated_at, \
                                 (SELECT max(recorded_at) FROM broker_order_events o \
                                  WHERE o.trade_decision_id = d.id)) \
                 FROM trade_decisions d \
                 LEFT JOIN trade_executions e ON e.trade_decision_id = d.id \
                 WHERE d.decision_id = $1"
            ),
            &[&decision_id],
        )
        .await
        .map_err(StoreError::new("reading a decision"))?
    else {
        return Ok(None);
    };
    let decision = decision_line(&row);
    let last_change: DateTime<Utc> = row
        .get::<_, Option<DateTime<Utc>>>(33)
        .unwrap_or(decision.created_at);
    let primary_signal = row
        .get::<_, Option<String>>(20)
        .zip(row.get::<_, Option<String>>(21));
    let run_pk: Option<i64> = row.get(22);
    let decision_pk: i64 = row.get(23);
    let primary_run = match run_pk {
        None => None,
        Some(pk) => client
            .query_opt(
                "SELECT run_id, task_name, data_source, status, started_at, completed_at, \
                        records_fetched FROM data_ingestion_runs WHERE id = $1",
                &[&pk],
            )
            .await
            .map_err(StoreError::new("reading the primary run"))?
            .map(|r| RunView {
                run_id: r.get(0),
                task: r.get(1),
                source: r.get(2),
                status: r.get(3),
                started_at: r.get(4),
                completed_at: r.get(5),
                records_fetched: r.get(6),
            }),
    };
    let mut primary_run_calls = Vec::new();
    if let Some(pk) = run_pk {
        let calls = client
            .query(
                "SELECT endpoint, http_method, http_status_code, duration_ms, created_at, \
                        api_request_payload_id, api_response_payload_id \
                 FROM api_call_logs WHERE data_ingestion_run_id = $1 ORDER BY id",
                &[&pk],
            )
            .await
            .map_err(StoreError::new("reading the run's API calls"))?;
        for c in &calls {
            primary_run_calls.push(CallView {
                endpoint: c.get(0),
                method: c.get(1),
                http_status: c.get(2),
                duration_ms: c.get(3),
                at: c.get(4),
                request: payload(client, c.get(5)).await?,
                response: payload(client, c.get(6)).await?,
            });
        }
    }
    let (request, response) =
        tokio::try_join!(payload(client, row.get(28)), payload(client, row.get(29)))?;
    let execution = match row.get::<_, Option<Uuid>>(24) {
        None => None,
        Some(execution_id) => Some(ExecutionView {
            execution_id,
            status: decision.execution_status.clone().unwrap_or_default(),
            broker: row.get(25),
            broker_order_id: decision.broker_order_id.clone(),
            http_status: decision.http_status,
            error_code: row.get(26),
            error_message: decision.error_message.clone(),
            filled_quantity: decision.filled_quantity.unwrap_or_default(),
            filled_avg_price: decision.filled_avg_price,
            submitted_at: row.get(27),
            request,
            response,
        }),
    };
    let mut timeline = vec![TimelineEntry {
        at: decision.created_at,
        trail: "decision".into(),
        what: "decision committed (pending)".into(),
        body: None,
    }];
    for (i, what) in [
        (30, "decision executed"),
        (31, "decision failed"),
        (32, "decision cancelled"),
    ] {
        if let Some(at) = row.get::<_, Option<DateTime<Utc>>>(i) {
            timeline.push(TimelineEntry {
                at,
                trail: "decision".into(),
                what: what.into(),
                body: None,
            });
        }
    }
    if let (Some(e), Some(at)) = (&execution, execution.as_ref().and_then(|e| e.submitted_at)) {
        timeline.push(TimelineEntry {
            at,
            trail: "execution".into(),
            what: format!("submitted to {}: {}", e.broker, e.status),
            body: None,
        });
    }
    let events = async {
        client
            .query(
                "SELECT coalesce(event_at, recorded_at), event, order_status, body \
             FROM broker_order_events WHERE trade_decision_id = $1 ORDER BY id",
                &[&decision_pk],
            )
            .await
            .map_err(StoreError::new("reading the order's broker events"))
    };
    let logged = async {
        client
            .query(
                "SELECT local_ts_us, event_type, body FROM tradelog \
             WHERE cl_ord_id = $1 AND local_ts_us >= $2 AND local_ts_us < $3 \
             ORDER BY local_ts_us",
                // only the days the order lived are searched (the log is partitioned by day): from
                // a minute before its decision to a week after its last recorded change (a refused
                // cancel or replace changes no row but is logged)
                &[
                    &decision_id.to_string(),
                    &(decision.created_at.timestamp_micros() - 60_000_000),
                    &(last_change.timestamp_micros() + 7 * 86_400_000_000),
                ],
            )
            .await
            .map_err(StoreError::new("reading the order's trade-log events"))
    };
    let (events, logged) = tokio::try_join!(events, logged)?;
    for e in &events {
        let status: Option<String> = e.get(2);
        timeline.push(TimelineEntry {
            at: e.get(0),
            trail: "broker_event".into(),
            what: match status {
                Some(s) => format!("{} ({s})", e.get::<_, String>(1)),
                None => e.get(1),
            },
            body: Some(e.get(3)),
        });
    }
    for l in &logged {
        let us: i64 = l.get(0);
        timeline.push(TimelineEntry {
            at: DateTime::from_timestamp_micros(us).unwrap_or_default(),
            trail: "tradelog".into(),
            what: event_name(l.get(1)).to_string(),
            body: Some(l.get(2)),
        });
    }
    timeline.sort_by_key(|t| t.at);
    let data_available_before_decision = primary_run
        .as_ref()
        .map(|r| r.completed_at.is_some_and(|c| c <= decision.created_at));
    Ok(Some(Lineage {
        lineage_runs: decision.rationale["data_lineage"]["ingestion_runs"].clone(),
        decision,
        primary_signal,
        primary_run,
        primary_run_calls,
        data_available_before_decision,
        execution,
        timeline,
    }))
}

/// The name of a trade-log event type code.
fn event_name(code: i16) -> &'static str {
    match code {
        10 => "request_order_new",
        11 => "request_order_cancel",
        12 => "request_order_amend",
        13 => "request_cancel_all",
        20 => "api_response",
        30 => "api_event_execution",
        31 => "api_event_order_update",
        32 => "api_event_trade_lite",
        90 => "connectivity_info",
        _ => "unknown",
    }
}

/// "Why did this order fail": the outcome with the broker's own words.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct OrderFailure {
    /// The decision
    pub decision_id: Uuid,
    /// Symbol
    pub symbol: String,
    /// The decision's status
    pub decision_status: String,
    /// The decision's failure reason
    pub failure_reason: Option<String>,
    /// The normalized reason (see [`FAILURE_REASON`]); none unless the decision failed
    pub reason: Option<String>,
    /// signal-side or execution-side (`broker_reject`, `api_error`)
    pub side: Option<String>,
    /// The execution's status
    pub execution_status: Option<String>,
    /// The broker's order id
    pub broker_order_id: Option<String>,
    /// HTTP status
    pub http_status: Option<i32>,
    /// The broker's error code
    pub error_code: Option<String>,
    /// The broker's error message
    pub error_message: Option<String>,
    /// The full response payload
    pub response: Option<PayloadView>,
}

/// The outcome of the order `id`: a decision id (UUID) or a broker order id; `None` when
/// neither matches.
pub async fn order_failure(
    client: &impl GenericClient,
    id: &str,
) -> Result<Option<OrderFailure>, StoreError> {
    let decision = Uuid::parse_str(id).ok();
    let row = client
        .query_opt(
            &format!(
                "SELECT d.decision_id, d.symbol, d.status, d.failure_reason, \
                        CASE WHEN d.status = 'failed' THEN {FAILURE_REASON} END, \
                        e.status, e.broker_order_id, e.http_status_code, e.error_code, \
                        e.error_message, e.api_response_payload_id \
                 FROM trade_decisions d \
                 LEFT JOIN trade_executions e ON e.trade_decision_id = d.id \
                 WHERE ($1::uuid IS NOT NULL AND d.decision_id = $1) \
                    OR ($1::uuid IS NULL AND d.id = (SELECT trade_decision_id \
                        FROM trade_executions WHERE broker_order_id = $2 LIMIT 1)) \
                 LIMIT 1"
            ),
            &[&decision, &id],
        )
        .await
        .map_err(StoreError::new("reading an order's outcome"))?;
    let Some(r) = row else { return Ok(None) };
    let reason: Option<String> = r.get(4);
    Ok(Some(OrderFailure {
        decision_id: r.get(0),
        symbol: r.get(1),
        decision_status: r.get(2),
        failure_reason: r.get(3),
        side: reason.as_deref().map(|r| failure_side(r).to_string()),
        reason,
        execution_status: r.get(5),
        broker_order_id: r.get(6),
        http_status: r.get(7),
        error_code: r.get(8),
        error_message: r.get(9),
        response: payload(client, r.get(10)).await?,
    }))
}

/// One strategy version's record.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct StrategyLine {
    /// Strategy
    pub strategy: String,
    /// Version
    pub version: String,
    /// Decisions by outcome
    pub outcomes: Outcomes,
    /// Signal side: orders refused before a decision (risk checks, kill switch, validation)
    pub risk_rejects: i64,
    /// Signal side: decisions the strategy cancelled
    pub cancels: i64,
    /// Execution side: the broker refused the order (buying power, validation, ...)
    pub broker_rejects: i64,
    /// Execution side: the broker's servers or the network failed (5xx, 429, timeouts)
    pub api_errors: i64,
}

/// Per strategy and version over `range` (one strategy when named), signal-side outcomes kept
/// apart from execution-side failures.
pub async fn strategy_performance(
    client: &impl GenericClient,
    strategy: Option<&str>,
    range: Range,
) -> Result<Vec<StrategyLine>, StoreError> {
    let rows = client
        .query(
            &format!(
                "WITH d AS ( \
                   SELECT d.strategy_name, d.strategy_version, d.status, \
                          CASE WHEN d.status = 'failed' THEN {FAILURE_REASON} END AS reason \
                   FROM trade_decisions d \
                   LEFT JOIN trade_executions e ON e.trade_decision_id = d.id \
                   WHERE d.created_at >= $2 AND d.created_at < $3 \
                     AND ($1::text IS NULL OR d.strategy_name = $1)), \
                 per AS ( \
                   SELECT d.strategy_name, d.strategy_version, {OUTCOME_COLUMNS}, \
                          count(*) FILTER (WHERE reason = ANY($4)) AS api_errors \
                   FROM d GROUP BY 1, 2), \
                 rej AS ( \
                   SELECT strategy_name, strategy_version, count(*) AS n FROM order_rejects \
                   WHERE rejected_at >= $2 AND rejected_at < $3 \
                     AND ($1::text IS NULL OR strategy_name = $1) GROUP BY 1, 2) \
                 SELECT coalesce(per.strategy_name, rej.strategy_name), \
                        coalesce(per.strategy_version, rej.strategy_version), \
                        coalesce(per.decisions, 0), coalesce(per.executed, 0), \
                        coalesce(per.failed, 0), coalesce(per.cancelled, 0), \
                        coalesce(per.pending, 0), coalesce(rej.n, 0), \
                        coalesce(per.api_errors, 0) \
                 FROM per FULL JOIN rej ON rej.strategy_name = per.strategy_name \
                                       AND rej.strategy_version = per.strategy_version \
                 ORDER BY 1, 2"
            ),
            &[
                &strategy,
                &range.from,
                &range.to,
                &API_ERROR_REASONS.as_slice(),
            ],
        )
        .await
        .map_err(StoreError::new("reading strategy performance"))?;
    Ok(rows
        .iter()
        .map(|r| {
            let outcomes = Outcomes::from_row(r, 2);
            let api_errors: i64 = r.get(8);
            StrategyLine {
                strategy: r.get(0),
                version: r.get(1),
                risk_rejects: r.get(7),
                cancels: outcomes.cancelled,
                broker_rejects: outcomes.failed - api_errors,
                api_errors,
                outcomes,
            }
        })
        .collect())
}

/// Failures over a range, grouped three ways.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct FailureAnalysis {
    /// The range
    pub range: Range,
    /// Failed decisions
    pub failures: i64,
    /// By normalized reason
    pub by_reason: Vec<Count>,
    /// By symbol (the 50 with most failures)
    pub by_symbol: Vec<Count>,
    /// By ISO weekday (1 = Monday) and UTC hour, as `"<weekday> <hour>"` keys
    pub by_weekday_hour: Vec<Count>,
    /// Failures per ISO weekday
    pub by_weekday: Vec<Count>,
    /// Orders refused before a decision, by reason code (signal side)
    pub rejects_by_code: Vec<Count>,
}

/// Failure analysis over `range`.
pub async fn failure_analysis(
    client: &impl GenericClient,
    range: Range,
) -> Result<FailureAnalysis, StoreError> {
    let (from, to) = (&range.from, &range.to);
    let rows = client
        .query(
            &format!(
                "WITH f AS MATERIALIZED ( \
                   SELECT {FAILURE_REASON} AS reason, d.symbol, \
                          extract(isodow FROM d.created_at AT TIME ZONE 'UTC')::int AS dow, \
                          extract(hour FROM d.created_at AT TIME ZONE 'UTC')::int AS hour \
                   FROM trade_decisions d \
                   LEFT JOIN trade_executions e ON e.trade_decision_id = d.id \
                   WHERE d.status = 'failed' AND d.created_at >= $1 AND d.created_at < $2) \
                 (SELECT 'reason', reason, count(*) FROM f GROUP BY reason \
                  ORDER BY 3 DESC, 2) \
                 UNION ALL \
                 (SELECT 'symbol', symbol, count(*) FROM f GROUP BY symbol \
                  ORDER BY 3 DESC, 2 LIMIT 50) \
                 UNION ALL \
                 (SELECT 'dow_hour', dow || ' ' || lpad(hour::text, 2, '0'), count(*) FROM f \
                  GROUP BY dow, hour ORDER BY dow, hour) \
                 UNION ALL \
                 (SELECT 'dow', dow::text, count(*) FROM f GROUP BY dow ORDER BY dow)"
            ),
            &[from, to],
        )
        .await
        .map_err(StoreError::new("analysing failures"))?;
    let pick = |kind: &str| -> Vec<Count> {
        rows.iter()
            .filter(|r| r.get::<_, &str>(0) == kind)
            .map(|r| Count {
                key: r.get(1),
                count: r.get(2),
            })
            .collect()
    };
    let by_reason = pick("reason");
    let rejects_by_code = rejects_by_code(client, None, range).await?;
    Ok(FailureAnalysis {
        range,
        failures: by_reason.iter().map(|c| c.count).sum(),
        by_reason,
        by_symbol: pick("symbol"),
        by_weekday_hour: pick("dow_hour"),
        by_weekday: pick("dow"),
        rejects_by_code,
    })
}

/// One day's activity.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct DailySummary {
    /// The day (UTC)
    pub day: NaiveDate,
    /// Decisions by outcome
    pub decisions: Outcomes,
    /// Executions by status
    pub executions: Vec<Count>,
    /// Failures by normalized reason
    pub failures: Vec<Count>,
    /// Refused orders by reason code
    pub rejects: Vec<Count>,
    /// Ingestion runs started that day, by status
    pub ingestion_runs: Vec<Count>,
    /// Completed runs that fetched nothing
    pub zero_record_runs: i64,
    /// What operators changed that day (kill switch, syncs, jobs, purges), oldest first, at
    /// most 1,000
    pub operator_actions: Vec<crate::domain::OperatorAction>,
}

/// The summary of `day` (UTC).
pub async fn daily_summary(
    client: &impl GenericClient,
    day: NaiveDate,
) -> Result<DailySummary, StoreError> {
    let start = day.and_time(chrono::NaiveTime::MIN).and_utc();
    let range = Range {
        from: start,
        to: start + chrono::Duration::days(1),
    };
    let (from, to) = (&range.from, &range.to);
    let decisions = client
        .query_one(
            &format!(
                "SELECT {OUTCOME_COLUMNS} FROM trade_decisions d \
                 WHERE d.created_at >= $1 AND d.created_at < $2"
            ),
            &[from, to],
        )
        .await
        .map_err(StoreError::new("summing a day's decisions"))?;
    let executions = client
        .query(
            "SELECT e.status, count(*) FROM trade_decisions d \
             JOIN trade_executions e ON e.trade_decision_id = d.id \
             WHERE d.created_at >= $1 AND d.created_at < $2 GROUP BY 1 ORDER BY 2 DESC, 1",
            &[from, to],
        )
        .await
        .map_err(StoreError::new("counting a day's executions"))?;
    let failures = failures_by_reason(client, None, range).await?;
    let rejects = rejects_by_code(client, None, range).await?;
    let runs = client
        .query(
            "SELECT status, count(*) FROM data_ingestion_runs \
             WHERE started_at >= $1 AND started_at < $2 GROUP BY 1 ORDER BY 1",
            &[from, to],
        )
        .await
        .map_err(StoreError::new("counting a day's ingestion runs"))?;
    let zero: i64 = client
        .query_one(
            "SELECT count(*) FROM data_ingestion_runs \
             WHERE started_at >= $1 AND started_at < $2 \
               AND status = 'completed' AND records_fetched = 0",
            &[from, to],
        )
        .await
        .map_err(StoreError::new("counting a day's empty runs"))?
        .get(0);
    let mut operator_actions = super::operator_actions::list(
        client,
        &super::operator_actions::ActionFilter {
            since: Some(range.from),
            until: Some(range.to),
            limit: 1000,
            ..Default::default()
        },
    )
    .await?;
    operator_actions.reverse();
    Ok(DailySummary {
        day,
        decisions: Outcomes::from_row(&decisions, 0),
        executions: counts(&executions),
        failures,
        rejects,
        ingestion_runs: counts(&runs),
        zero_record_runs: zero,
        operator_actions,
    })
}

/// Decisions created since `since` that have an outcome: (executed, failed).
pub async fn outcomes_since(
    client: &impl GenericClient,
    since: DateTime<Utc>,
) -> Result<(i64, i64), StoreError> {
    let row = client
        .query_one(
            "SELECT (SELECT count(*) FROM trade_decisions \
                     WHERE status = 'executed' AND created_at >= $1), \
                    (SELECT count(*) FROM trade_decisions \
                     WHERE status = 'failed' AND created_at >= $1)",
            &[&since],
        )
        .await
        .map_err(StoreError::new("counting recent outcomes"))?;
    Ok((row.get(0), row.get(1)))
}

/// API errors since `since`: orders that failed for an API reason (see
/// [`API_ERROR_REASONS`]) plus data jobs' API calls answered 5xx or not answered at all.
pub async fn api_errors_since(
    client: &impl GenericClient,
    since: DateTime<Utc>,
) -> Result<(i64, i64), StoreError> {
    let row = client
        .query_one(
            &format!(
                "SELECT (SELECT count(*) FROM trade_decisions d \
                         LEFT JOIN trade_executions e ON e.trade_decision_id = d.id \
                         WHERE d.status = 'failed' AND d.created_at >= $1 \
                           AND {FAILURE_REASON} = ANY($2)), \
                        (SELECT count(*) FROM api_call_logs \
                         WHERE created_at >= $1 \
                           AND (http_status_code >= 500 \
                                OR (http_status_code IS NULL AND error_message IS NOT NULL)))"
            ),
            &[&since, &API_ERROR_REASONS.as_slice()],
        )
        .await
        .map_err(StoreError::new("counting recent API errors"))?;
    Ok((row.get(0), row.get(1)))
}
