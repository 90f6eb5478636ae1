//! A symbol's activity over a range: data ingested, decisions, fills, refusals, outcomes.

use chrono::{DateTime, Utc};
use rust_decimal::Decimal;
use serde::Serialize;
use tokio_postgres::GenericClient;
use uuid::Uuid;

use super::{
    Count, DECISION_LINE, DecisionLine, OUTCOME_COLUMNS, Outcomes, Range, decision_line,
    failures_by_reason, rejects_by_code,
};
use crate::store::StoreError;

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
    /// The UTC days of the range read from imported day archives (`tradegate audit import`)
    pub archived_days: Vec<chrono::NaiveDate>,
    /// The symbol's trade-log events of the range in those archives (their partitions left
    /// the hot table)
    pub archived_tradelog_events: i64,
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
    let archived = async {
        client
            .query_one(
                "SELECT coalesce(array_agg(day ORDER BY day), '{}'), \
                        (SELECT count(*) FROM archive.tradelog \
                         WHERE symbol = $1 \
                           AND local_ts_us >= (extract(epoch FROM $2::timestamptz) * 1000000)::int8 \
                           AND local_ts_us < (extract(epoch FROM $3::timestamptz) * 1000000)::int8) \
                 FROM archive.days \
                 WHERE day >= ($2::timestamptz AT TIME ZONE 'UTC')::date \
                   AND day <= ($3::timestamptz AT TIME ZONE 'UTC')::date",
                &[&symbol, from, to],
            )
            .await
            .map_err(StoreError::new("reading the archived days"))
    };
    // one connection, the statements pipelined: their round trips overlap
    let (ingested, ingested_total, decisions, summary, breakdown, fills, rejects, archived) = tokio::try_join!(
        ingested,
        ingested_total,
        decisions,
        summary,
        breakdown,
        fills,
        rejects,
        archived
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
        archived_days: archived.get(0),
        archived_tradelog_events: archived.get(1),
    })
}
