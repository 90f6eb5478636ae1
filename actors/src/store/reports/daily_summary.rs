//! The daily summary: one day's decisions, outcomes, failures and alerts.

use chrono::{DateTime, NaiveDate, Utc};
use serde::Serialize;
use tokio_postgres::GenericClient;

use super::{
    API_ERROR_REASONS, Count, FAILURE_REASON, OUTCOME_COLUMNS, Outcomes, Range, counts,
    failures_by_reason, rejects_by_code,
};
use crate::store::StoreError;

/// One day's activity.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct DailySummary {
    /// The day (UTC, or the trading day of the Reporter's zone for a delivered summary)
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
    /// Position windows reconciled that day
    pub reconciled_windows: i64,
    /// Reconciliation breaks found that day, by account and symbol
    pub reconciliation_breaks: Vec<Count>,
    /// Alerts raised that day, by kind
    pub alerts: Vec<Count>,
}

impl DailySummary {
    /// The summary as a few lines of text (what a chat message of it says).
    pub fn text(&self) -> String {
        let d = &self.decisions;
        let list = |counts: &[Count]| {
            if counts.is_empty() {
                "none".to_string()
            } else {
                counts
                    .iter()
                    .map(|c| format!("{} {}", c.key, c.count))
                    .collect::<Vec<_>>()
                    .join(", ")
            }
        };
        let rate = d.success_rate.map_or_else(
            || "n/a".to_string(),
            |r| format!("{}%", (r * rust_decimal::Decimal::ONE_HUNDRED).round_dp(1)),
        );
        let mut out = format!(
            "tradegate daily summary {}\n\
             decisions: {} (executed {}, failed {}, cancelled {}, pending {}; success {rate})\n\
             executions: {}\n\
             failures: {}\n\
             refused orders: {}\n\
             alerts: {}\n\
             operator actions: {}\n\
             ingestion runs: {} ({} fetched nothing)",
            self.day,
            d.decisions,
            d.executed,
            d.failed,
            d.cancelled,
            d.pending,
            list(&self.executions),
            list(&self.failures),
            list(&self.rejects),
            list(&self.alerts),
            self.operator_actions.len(),
            list(&self.ingestion_runs),
            self.zero_record_runs,
        );
        if self.reconciled_windows > 0 || !self.reconciliation_breaks.is_empty() {
            out.push_str(&format!(
                "\nreconciliation: {} window(s) checked, breaks: {}",
                self.reconciled_windows,
                list(&self.reconciliation_breaks)
            ));
        }
        out
    }
}

/// A summary delivered, or waiting to be.
#[derive(Debug, Clone, PartialEq)]
pub struct StoredSummary {
    /// Its day
    pub day: NaiveDate,
    /// The summary
    pub summary: serde_json::Value,
    /// Its text
    pub text: String,
    /// Deliveries tried so far
    pub attempts: i32,
}

/// Stores the summary of its day unless one is stored already; whether this stored it.
pub async fn store_summary(
    client: &impl GenericClient,
    summary: &DailySummary,
) -> Result<bool, StoreError> {
    // plain data: serialising it cannot fail, and if it ever did the row says so
    let value = serde_json::to_value(summary)
        .unwrap_or_else(|e| serde_json::json!({"unserialisable": e.to_string()}));
    let stored = client
        .execute(
            "INSERT INTO daily_summaries (day, summary, text) VALUES ($1, $2, $3) \
             ON CONFLICT (day) DO NOTHING",
            &[&summary.day, &value, &summary.text()],
        )
        .await
        .map_err(StoreError::new("storing a daily summary"))?;
    Ok(stored == 1)
}

/// Whether the summary of `day` is stored.
pub async fn summary_stored(
    client: &impl GenericClient,
    day: NaiveDate,
) -> Result<bool, StoreError> {
    Ok(client
        .query_opt("SELECT 1 FROM daily_summaries WHERE day = $1", &[&day])
        .await
        .map_err(StoreError::new("reading the daily summaries"))?
        .is_some())
}

/// The newest day with a stored summary.
pub async fn newest_summary_day(
    client: &impl GenericClient,
) -> Result<Option<NaiveDate>, StoreError> {
    Ok(client
        .query_one("SELECT max(day) FROM daily_summaries", &[])
        .await
        .map_err(StoreError::new("reading the daily summaries"))?
        .get(0))
}

/// Claims the oldest summary of the last week that is waiting to be delivered (not delivered,
/// tried fewer than `max_attempts` times, its next attempt due, not claimed by another sender
/// within `hold`), counting the attempt; `None` when none waits.
pub async fn claim_undelivered(
    client: &impl GenericClient,
    max_attempts: i32,
    hold: chrono::Duration,
) -> Result<Option<StoredSummary>, StoreError> {
    let row = client
        .query_opt(
            "UPDATE daily_summaries SET attempts = attempts + 1, \
                 claimed_until = now() + $2::bigint * interval '1 millisecond' \
             WHERE day = (SELECT day FROM daily_summaries \
                          WHERE delivered_at IS NULL AND attempts < $1 \
                            AND next_attempt_at <= now() \
                            AND (claimed_until IS NULL OR claimed_until < now()) \
                            AND day > current_date - 7 \
                          ORDER BY day LIMIT 1 FOR UPDATE SKIP LOCKED) \
             RETURNING day, summary, text, attempts",
            &[&max_attempts, &hold.num_milliseconds()],
        )
        .await
        .map_err(StoreError::new("claiming a daily summary"))?;
    Ok(row.map(|r| StoredSummary {
        day: r.get(0),
        summary: r.get(1),
        text: r.get(2),
        attempts: r.get(3),
    }))
}

/// Records the outcome of a claimed delivery of the summary of `day`: delivered, or failed
/// with `error` and tried again after `retry_after`.
pub async fn record_delivery(
    client: &impl GenericClient,
    day: NaiveDate,
    error: Option<&str>,
    retry_after: chrono::Duration,
) -> Result<(), StoreError> {
    client
        .execute(
            "UPDATE daily_summaries SET last_error = $2, claimed_until = NULL, \
                 delivered_at = CASE WHEN $2::text IS NULL THEN now() END, \
                 next_attempt_at = now() + $3::bigint * interval '1 millisecond' \
             WHERE day = $1",
            &[&day, &error, &retry_after.num_milliseconds()],
        )
        .await
        .map_err(StoreError::new("recording a daily summary's delivery"))?;
    Ok(())
}

/// The UTC range of `day` in `zone`: from its local midnight to the next (23 or 25 hours on
/// the days clocks change).
pub fn local_day(day: NaiveDate, zone: chrono_tz::Tz) -> Range {
    let midnight = |d: NaiveDate| {
        let local = d.and_time(chrono::NaiveTime::MIN);
        use chrono::TimeZone;
        match zone.from_local_datetime(&local) {
            chrono::LocalResult::Single(t) | chrono::LocalResult::Ambiguous(t, _) => {
                t.with_timezone(&Utc)
            }
            // a zone whose clocks jump over midnight: the day starts an hour in
            chrono::LocalResult::None => zone
                .from_local_datetime(&(local + chrono::Duration::hours(1)))
                .earliest()
                .map_or_else(|| local.and_utc(), |t| t.with_timezone(&Utc)),
        }
    };
    Range {
        from: midnight(day),
        to: midnight(day + chrono::Duration::days(1)),
    }
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
    summary_of(client, day, range).await
}

/// The summary of `day` as the trading day of `zone` (its local midnight to the next).
pub async fn daily_summary_in(
    client: &impl GenericClient,
    day: NaiveDate,
    zone: chrono_tz::Tz,
) -> Result<DailySummary, StoreError> {
    summary_of(client, day, local_day(day, zone)).await
}

async fn summary_of(
    client: &impl GenericClient,
    day: NaiveDate,
    range: Range,
) -> Result<DailySummary, StoreError> {
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
    let mut operator_actions = crate::store::operator_actions::list(
        client,
        &crate::store::operator_actions::ActionFilter {
            since: Some(range.from),
            until: Some(range.to),
            limit: 1000,
            ..Default::default()
        },
    )
    .await?;
    operator_actions.reverse();
    let reconciled_windows: i64 = client
        .query_one(
            "SELECT count(*) FROM reconciliation_runs WHERE checked_at >= $1 AND checked_at < $2",
            &[from, to],
        )
        .await
        .map_err(StoreError::new("counting a day's reconciliations"))?
        .get(0);
    let breaks = client
        .query(
            "SELECT broker || ' ' || account || ' ' || symbol, count(*) \
             FROM reconciliation_breaks WHERE detected_at >= $1 AND detected_at < $2 \
             GROUP BY 1 ORDER BY 2 DESC, 1",
            &[from, to],
        )
        .await
        .map_err(StoreError::new("counting a day's reconciliation breaks"))?;
    let alerts = client
        .query(
            "SELECT kind, count(*) FROM alerts WHERE raised_at >= $1 AND raised_at < $2 \
             GROUP BY 1 ORDER BY 2 DESC, 1",
            &[from, to],
        )
        .await
        .map_err(StoreError::new("counting a day's alerts"))?;
    Ok(DailySummary {
        alerts: counts(&alerts),
        day,
        decisions: Outcomes::from_row(&decisions, 0),
        executions: counts(&executions),
        failures,
        rejects,
        ingestion_runs: counts(&runs),
        zero_record_runs: zero,
        operator_actions,
        reconciled_windows,
        reconciliation_breaks: counts(&breaks),
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_local_day_is_its_zones_midnight_to_the_next() {
        let d = |y, m, day| NaiveDate::from_ymd_opt(y, m, day).unwrap();
        let ny = chrono_tz::Tz::America__New_York;
        let r = local_day(d(2026, 12, 3), ny);
        assert_eq!(r.from.to_rfc3339(), "2026-12-03T05:00:00+00:00");
        assert_eq!(r.to.to_rfc3339(), "2026-12-04T05:00:00+00:00");
        // the day clocks go forward has 23 hours, the day they go back 25
        let spring = local_day(d(2026, 3, 8), ny);
        assert_eq!((spring.to - spring.from).num_hours(), 23);
        let autumn = local_day(d(2026, 11, 1), ny);
        assert_eq!((autumn.to - autumn.from).num_hours(), 25);
        let tokyo = local_day(d(2026, 12, 3), chrono_tz::Tz::Asia__Tokyo);
        assert_eq!(tokyo.from.to_rfc3339(), "2026-12-02T15:00:00+00:00");
    }
}
