//! The alert checks. An alert is logged, counted (`tradegate_alerts_total{kind}`), stored in
//! `alerts` and, with `[reporter] webhook_url`, POSTed as JSON. Each fires at most once per
//! window: its dedupe key is the window it was measured over, counted from the epoch.
//! Zero-record ingestion runs are raised by the IngestionLogger the moment such a run
//! completes (kind `ingestion.zero_records`).

use chrono::{DateTime, Utc};
use rust_decimal::Decimal;
use serde_json::json;

use super::config::ReporterConfig;
use crate::store::alerts::{NewAlert, RaisedAlert, insert_alert};
use crate::store::{StoreError, reports};

/// Kind of the failure-rate alert.
pub const FAILURE_RATE: &str = "orders.failure_rate";
/// Kind of the API-errors alert.
pub const API_ERRORS: &str = "broker.api_errors";

fn window_key(now: DateTime<Utc>, window_secs: u64) -> String {
    let w = i64::try_from(window_secs).unwrap_or(i64::MAX).max(1);
    (now.timestamp().div_euclid(w)).to_string()
}

fn since(now: DateTime<Utc>, window_secs: u64) -> DateTime<Utc> {
    now - chrono::Duration::seconds(i64::try_from(window_secs).unwrap_or(i64::MAX))
}

/// Runs every check as of `now`; the alerts raised (none when nothing crossed its threshold,
/// or when this window's alert of that kind was raised already).
pub async fn check(
    client: &impl tokio_postgres::GenericClient,
    config: &ReporterConfig,
    now: DateTime<Utc>,
) -> Result<Vec<RaisedAlert>, StoreError> {
    let mut candidates = Vec::new();
    let (executed, failed) =
        reports::outcomes_since(client, since(now, config.failure_window_secs)).await?;
    let decided = executed + failed;
    if decided >= config.failure_min_decisions && decided > 0 {
        let rate = Decimal::from(failed) / Decimal::from(decided);
        if rate > config.failure_rate_threshold {
            let percent = (rate * Decimal::from(100)).round_dp(1).normalize();
            candidates.push(NewAlert {
                kind: FAILURE_RATE.into(),
                severity: "critical",
                message: format!(
                    "{failed} of the last {decided} orders with an outcome failed ({percent}%, \
                     threshold {}%) over {} s",
                    (config.failure_rate_threshold * Decimal::from(100)).normalize(),
                    config.failure_window_secs
                ),
                details: json!({"failed": failed, "executed": executed,
                    "rate": rate.round_dp(4), "threshold": config.failure_rate_threshold,
                    "window_secs": config.failure_window_secs}),
                dedupe_key: Some(window_key(now, config.failure_window_secs)),
            });
        }
    }
    let (orders, calls) =
        reports::api_errors_since(client, since(now, config.api_error_window_secs)).await?;
    if orders + calls > config.api_error_threshold {
        candidates.push(NewAlert {
            kind: API_ERRORS.into(),
            severity: "warning",
            message: format!(
                "{} API errors ({orders} orders, {calls} data-job calls) over {} s, threshold {}",
                orders + calls,
                config.api_error_window_secs,
                config.api_error_threshold
            ),
            details: json!({"orders": orders, "calls": calls,
                "threshold": config.api_error_threshold,
                "window_secs": config.api_error_window_secs}),
            dedupe_key: Some(window_key(now, config.api_error_window_secs)),
        });
    }
    let mut raised = Vec::new();
    for alert in candidates {
        if let Some(id) = insert_alert(client, &alert).await? {
            raised.push(RaisedAlert {
                id,
                kind: alert.kind,
                message: alert.message,
                details: alert.details,
            });
        }
    }
    Ok(raised)
}

/// POSTs `body` to the webhook at `url`; a refusal or failure as text without the URL (a
/// webhook's URL is a credential: Slack's is), fit for a log or a row.
pub(super) async fn send(
    http: &reqwest::Client,
    url: &str,
    body: &serde_json::Value,
) -> Result<(), String> {
    http.post(url)
        .json(body)
        .send()
        .await
        .and_then(reqwest::Response::error_for_status)
        .map(|_| ())
        .map_err(|e| e.without_url().to_string())
}

/// Posts `alerts` to the webhook, when one is configured (best effort: a failure is logged).
pub async fn post(http: &reqwest::Client, config: &ReporterConfig, alerts: &[RaisedAlert]) {
    let Some(url) = &config.webhook_url else {
        return;
    };
    for alert in alerts {
        let body = match config.webhook_format {
            super::config::WebhookFormat::Json => json!({"id": alert.id, "kind": alert.kind,
                "message": alert.message, "details": alert.details}),
            super::config::WebhookFormat::Slack => {
                json!({"text": format!("tradegate alert {}: {}", alert.kind, alert.message)})
            }
        };
        if let Err(e) = send(http, url, &body).await {
            metrics::counter!("tradegate_alert_webhook_failures_total").increment(1);
            tracing::warn!(alert_id = alert.id, error = %e, "the alert webhook failed");
        }
    }
}

/// Logs, counts and (with a webhook) posts each raised alert.
pub async fn announce(http: &reqwest::Client, config: &ReporterConfig, raised: &[RaisedAlert]) {
    for alert in raised {
        metrics::counter!("tradegate_alerts_total", "kind" => alert.kind.clone()).increment(1);
        tracing::warn!(alert_id = alert.id, kind = %alert.kind, "ALERT {}: {}", alert.kind, alert.message);
    }
    post(http, config, raised).await;
}
