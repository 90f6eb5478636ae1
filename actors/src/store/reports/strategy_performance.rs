//! Strategy performance: each strategy version's decisions, outcomes and fills.

use serde::Serialize;
use tokio_postgres::GenericClient;

use super::{API_ERROR_REASONS, FAILURE_REASON, OUTCOME_COLUMNS, Outcomes, Range};
use crate::store::StoreError;

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
