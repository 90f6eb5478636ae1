//! Failure analysis over a range: by reason, by symbol, by weekday and hour.

use serde::Serialize;
use tokio_postgres::GenericClient;

use super::{Count, FAILURE_REASON, Range, rejects_by_code};
use crate::store::StoreError;

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
