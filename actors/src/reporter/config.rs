//! `[reporter]`: alert thresholds, the webhook, payload retention.

use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};

/// `[reporter]`
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ReporterConfig {
    /// How often the alert checks run, in seconds.
    pub alert_interval_secs: u64,
    /// Alert when more than this share of the decisions with an outcome failed (0.30 = 30%).
    pub failure_rate_threshold: Decimal,
    /// ...over this many seconds back...
    pub failure_window_secs: u64,
    /// ...once at least this many decisions have an outcome (two of three is not a trend).
    pub failure_min_decisions: i64,
    /// Alert when more than this many API errors happened...
    pub api_error_threshold: i64,
    /// ...over this many seconds back.
    pub api_error_window_secs: u64,
    /// Each alert is also POSTed as JSON here, when set (best effort: a failure is logged).
    pub webhook_url: Option<String>,
    /// API payloads older than this many days are purged, unless still referenced.
    pub payload_retention_days: u32,
    /// Payloads deleted per statement.
    pub purge_batch_size: i64,
    /// How often the payload purge runs inside the gateway, in seconds.
    pub retention_interval_secs: u64,
}

impl Default for ReporterConfig {
    fn default() -> Self {
        Self {
            alert_interval_secs: 60,
            failure_rate_threshold: Decimal::new(30, 2),
            failure_window_secs: 3_600,
            failure_min_decisions: 10,
            api_error_threshold: 10,
            api_error_window_secs: 3_600,
            webhook_url: None,
            payload_retention_days: 730,
            purge_batch_size: 10_000,
            retention_interval_secs: 86_400,
        }
    }
}

impl ReporterConfig {
    /// Checks values that parse but cannot work; the error names the key.
    pub fn validate(&self) -> Result<(), (&'static str, String)> {
        let positive = [
            ("reporter.alert_interval_secs", self.alert_interval_secs),
            ("reporter.failure_window_secs", self.failure_window_secs),
            ("reporter.api_error_window_secs", self.api_error_window_secs),
            (
                "reporter.retention_interval_secs",
                self.retention_interval_secs,
            ),
            (
                "reporter.payload_retention_days",
                u64::from(self.payload_retention_days),
            ),
        ];
        for (key, value) in positive {
            if value == 0 {
                return Err((key, "must be at least 1".into()));
            }
        }
        if self.failure_rate_threshold < Decimal::ZERO
            || self.failure_rate_threshold >= Decimal::ONE
        {
            return Err((
                "reporter.failure_rate_threshold",
                "must be a share from 0 up to (not including) 1, e.g. 0.30".into(),
            ));
        }
        if self.purge_batch_size < 1 {
            return Err(("reporter.purge_batch_size", "must be at least 1".into()));
        }
        if let Some(url) = &self.webhook_url
            && !(url.starts_with("http://") || url.starts_with("https://"))
        {
            return Err((
                "reporter.webhook_url",
                format!("{url:?} is not an http(s) URL"),
            ));
        }
        Ok(())
    }
}
