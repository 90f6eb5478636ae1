//! The daily summary, delivered: at `[reporter] daily_summary_at` in `daily_summary_timezone`
//! the Reporter builds the day's summary (that zone's trading day, local midnight to
//! midnight), stores it (`daily_summaries`, one row per day) and POSTs it to the webhook, as
//! tradegate's JSON or in Slack's form. The row makes it once per day whatever restarts: a day
//! stored is not built again, and days missed while the gateway was down (since the newest
//! stored one, at most a week back) are built when it is up again. A delivery is claimed
//! before it is sent (two gateways on one database send it once), and one that failed is
//! tried again later, backing off from `daily_summary_check_secs` to six hours, up to
//! [`MAX_ATTEMPTS`] times; then an alert says it was given up. The body carries the day, so a
//! receiver can drop a repeat (a crash between the send and its record sends it again).

use chrono::{DateTime, NaiveDate, NaiveTime, Utc};
use chrono_tz::Tz;
use serde_json::json;

use super::actor::ReporterError;
use super::config::{ReporterConfig, WebhookFormat};
use crate::store::alerts::{NewAlert, insert_alert};
use crate::store::reports;

/// How many times a summary's delivery is tried.
pub const MAX_ATTEMPTS: i32 = 8;
/// The alert raised when a summary could not be delivered at all.
pub const UNDELIVERED_ALERT: &str = "reporter.daily_summary_undelivered";
/// How far back days missed while the gateway was down are built.
const CATCH_UP_DAYS: i64 = 7;

/// The day whose summary is due at `now`: today in `zone` once its clock has passed `at`.
pub fn due_day(now: DateTime<Utc>, at: NaiveTime, zone: Tz) -> Option<NaiveDate> {
    let local = now.with_timezone(&zone);
    (local.time() >= at).then(|| local.date_naive())
}

/// The days to build at `now`: the due day, and those since the newest stored summary that
/// were missed (at most a week back). The latest is the due day, or yesterday before it.
pub fn days_to_build(
    now: DateTime<Utc>,
    at: NaiveTime,
    zone: Tz,
    newest: Option<NaiveDate>,
) -> Vec<NaiveDate> {
    let today = now.with_timezone(&zone).date_naive();
    let latest = due_day(now, at, zone).unwrap_or(today - chrono::Duration::days(1));
    let Some(newest) = newest else {
        // a first start builds nothing from before it, only a day that is due now
        return due_day(now, at, zone).into_iter().collect();
    };
    let first =
        (newest + chrono::Duration::days(1)).max(today - chrono::Duration::days(CATCH_UP_DAYS));
    first.iter_days().take_while(|d| *d <= latest).collect()
}

/// How long after its `attempt`-th failed try a delivery is tried again: the check interval,
/// four times longer after each failure, at most six hours.
pub fn retry_after(attempt: i32, check: std::time::Duration) -> chrono::Duration {
    let factor = 4u32.saturating_pow(u32::try_from(attempt.max(1) - 1).unwrap_or(0));
    let delay = check
        .saturating_mul(factor)
        .min(std::time::Duration::from_secs(6 * 3600));
    chrono::Duration::from_std(delay).unwrap_or_else(|_| chrono::Duration::hours(6))
}

/// Builds and stores the summaries that are due, then delivers one that is waiting.
pub async fn run(
    http: &reqwest::Client,
    config: &ReporterConfig,
    pool: &deadpool_postgres::Pool,
) -> Result<(), ReporterError> {
    let client = pool.get().await?;
    if let Some((at, zone)) = config.daily_summary_time() {
        let newest = reports::newest_summary_day(&**client).await?;
        for day in days_to_build(Utc::now(), at, zone, newest) {
            let summary = reports::daily_summary_in(&**client, day, zone).await?;
            if reports::store_summary(&**client, &summary).await? {
                metrics::counter!("tradegate_daily_summaries_total").increment(1);
                tracing::info!(%day, "the daily summary is built and stored");
            }
        }
    }
    let Some(url) = &config.webhook_url else {
        return Ok(());
    };
    let check = std::time::Duration::from_secs(config.daily_summary_check_secs.max(1));
    // held while it is sent: another sender skips it until then
    let hold = chrono::Duration::minutes(2);
    while let Some(stored) = reports::claim_undelivered(&**client, MAX_ATTEMPTS, hold).await? {
        let body = match config.webhook_format {
            WebhookFormat::Json => json!({
                "kind": "daily_summary",
                "day": stored.day,
                "summary": stored.summary,
                "text": stored.text,
            }),
            WebhookFormat::Slack => json!({ "text": stored.text }),
        };
        let error = super::alerts::send(http, url, &body).await.err();
        let again = retry_after(stored.attempts, check);
        reports::record_delivery(&**client, stored.day, error.as_deref(), again).await?;
        match error {
            None => tracing::info!(day = %stored.day, "the daily summary is delivered"),
            Some(e) => {
                metrics::counter!("tradegate_daily_summary_webhook_failures_total").increment(1);
                tracing::warn!(day = %stored.day, attempt = stored.attempts, error = %e,
                    "the daily summary could not be delivered; it is tried again later");
                if stored.attempts >= MAX_ATTEMPTS {
                    let alert = NewAlert {
                        kind: UNDELIVERED_ALERT.into(),
                        severity: "warning",
                        message: format!(
                            "the daily summary of {} could not be delivered ({} tries, last: \
                             {e}); it is in daily_summaries",
                            stored.day, stored.attempts
                        ),
                        details: json!({"day": stored.day, "error": e}),
                        dedupe_key: Some(format!("summary:{}", stored.day)),
                    };
                    insert_alert(&**client, &alert).await?;
                }
                // one failure per check: the webhook is not hammered
                break;
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_summary_is_due_once_the_zones_clock_passes_its_time() {
        let at = NaiveTime::from_hms_opt(17, 30, 0).unwrap();
        let ny = Tz::America__New_York;
        let utc = |s: &str| s.parse::<DateTime<Utc>>().unwrap();
        // 17:29 and 17:30 in New York (winter, UTC-5)
        assert_eq!(due_day(utc("2026-12-03T22:29:59Z"), at, ny), None);
        assert_eq!(
            due_day(utc("2026-12-03T22:30:00Z"), at, ny),
            NaiveDate::from_ymd_opt(2026, 12, 3)
        );
        // past UTC midnight it is still the 3rd in New York
        assert_eq!(
            due_day(utc("2026-12-04T02:00:00Z"), at, ny),
            NaiveDate::from_ymd_opt(2026, 12, 3)
        );
        // the morning after: the 4th is not due yet
        assert_eq!(due_day(utc("2026-12-04T14:00:00Z"), at, ny), None);
        // summer time moves it an hour in UTC
        assert_eq!(due_day(utc("2026-07-01T21:29:00Z"), at, ny), None);
        assert!(due_day(utc("2026-07-01T21:30:00Z"), at, ny).is_some());
    }

    #[test]
    fn days_missed_while_down_are_built_and_a_first_start_builds_only_todays() {
        let at = NaiveTime::from_hms_opt(17, 30, 0).unwrap();
        let ny = Tz::America__New_York;
        let utc = |s: &str| s.parse::<DateTime<Utc>>().unwrap();
        let d = |day| NaiveDate::from_ymd_opt(2026, 12, day).unwrap();
        // first start, before the time: nothing; after: today
        assert!(days_to_build(utc("2026-12-03T15:00:00Z"), at, ny, None).is_empty());
        assert_eq!(
            days_to_build(utc("2026-12-03T23:00:00Z"), at, ny, None),
            [d(3)]
        );
        // down from the 1st's summary until the 4th's morning: the 2nd and 3rd
        assert_eq!(
            days_to_build(utc("2026-12-04T14:00:00Z"), at, ny, Some(d(1))),
            [d(2), d(3)]
        );
        // up to date
        assert!(days_to_build(utc("2026-12-04T14:00:00Z"), at, ny, Some(d(3))).is_empty());
        assert_eq!(
            days_to_build(utc("2026-12-04T23:00:00Z"), at, ny, Some(d(3))),
            [d(4)]
        );
        // a month down: a week back at most
        let caught = days_to_build(utc("2026-12-20T23:00:00Z"), at, ny, Some(d(1)));
        assert_eq!(caught.first(), Some(&d(13)));
        assert_eq!(caught.last(), Some(&d(20)));
    }

    #[test]
    fn a_failed_delivery_backs_off_to_six_hours() {
        let check = std::time::Duration::from_secs(30);
        assert_eq!(retry_after(1, check), chrono::Duration::seconds(30));
        assert_eq!(retry_after(2, check), chrono::Duration::minutes(2));
        assert_eq!(retry_after(3, check), chrono::Duration::minutes(8));
        assert_eq!(retry_after(8, check), chrono::Duration::hours(6));
        assert_eq!(retry_after(40, check), chrono::Duration::hours(6));
    }
}
