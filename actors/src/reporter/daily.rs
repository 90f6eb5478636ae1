//! The daily summary, delivered: at `[reporter] daily_summary_at` in `daily_summary_timezone`
//! the Reporter builds the day's summary, stores it (`daily_summaries`, one row per day) and
//! POSTs it to the webhook, as tradegate's JSON or in Slack's form. The row makes it once per
//! day whatever restarts: a day already stored is not built again, and a delivery that failed
//! is retried at each check, up to [`MAX_ATTEMPTS`] times.

use chrono::{DateTime, NaiveDate, NaiveTime, Utc};
use chrono_tz::Tz;
use serde_json::json;

use super::actor::ReporterError;
use super::config::{ReporterConfig, WebhookFormat};
use crate::store::reports;

/// How many times a summary's delivery is tried.
pub const MAX_ATTEMPTS: i32 = 5;

/// The day whose summary is due at `now`: today in `zone` once its clock has passed `at`.
pub fn due_day(now: DateTime<Utc>, at: NaiveTime, zone: Tz) -> Option<NaiveDate> {
    let local = now.with_timezone(&zone);
    (local.time() >= at).then(|| local.date_naive())
}

/// Builds and stores the summary when it is due, then delivers what is waiting.
pub async fn run(
    http: &reqwest::Client,
    config: &ReporterConfig,
    pool: &deadpool_postgres::Pool,
) -> Result<(), ReporterError> {
    let client = pool.get().await?;
    if let Some((at, zone)) = config.daily_summary_time()
        && let Some(day) = due_day(Utc::now(), at, zone)
        && !reports::summary_stored(&**client, day).await?
    {
        let summary = reports::daily_summary(&**client, day).await?;
        if reports::store_summary(&**client, &summary).await? {
            metrics::counter!("tradegate_daily_summaries_total").increment(1);
            tracing::info!(%day, "the daily summary is built and stored");
        }
    }
    let Some(url) = &config.webhook_url else {
        return Ok(());
    };
    for stored in reports::undelivered_summaries(&**client, MAX_ATTEMPTS).await? {
        let body = match config.webhook_format {
            WebhookFormat::Json => json!({
                "kind": "daily_summary",
                "day": stored.day,
                "summary": stored.summary,
                "text": stored.text,
            }),
            WebhookFormat::Slack => json!({ "text": stored.text }),
        };
        let sent = http
            .post(url)
            .json(&body)
            .send()
            .await
            .and_then(reqwest::Response::error_for_status);
        let error = sent.err().map(|e| e.to_string());
        reports::record_delivery(&**client, stored.day, error.as_deref()).await?;
        match error {
            None => tracing::info!(day = %stored.day, "the daily summary is delivered"),
            Some(e) => {
                metrics::counter!("tradegate_daily_summary_webhook_failures_total").increment(1);
                tracing::warn!(day = %stored.day, attempt = stored.attempts + 1, error = %e,
                    "the daily summary could not be delivered; it is tried again at the next check");
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
}
