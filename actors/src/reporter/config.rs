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
    /// API payloads older than this many days are purged: unreferenced ones, and those of an
    /// archived day, referenced or not.
    pub payload_retention_days: u32,
    /// Payloads deleted per statement.
    pub purge_batch_size: i64,
    /// How often the payload purge runs inside the gateway, in seconds.
    pub retention_interval_secs: u64,
    /// When the day's summary is built, stored and sent to the webhook: `HH:MM` in
    /// `daily_summary_timezone` (after the close); empty: never on its own
    pub daily_summary_at: String,
    /// The zone of `daily_summary_at` (an IANA name)
    pub daily_summary_timezone: String,
    /// How often the Reporter looks whether the summary is due, in seconds
    pub daily_summary_check_secs: u64,
    /// The webhook's body: `json` (tradegate's own objects) or `slack` (`{"text": ...}`, what
    /// Slack's and compatible incoming webhooks take)
    pub webhook_format: WebhookFormat,
}

/// The form of what is POSTed to the webhook.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum WebhookFormat {
    /// tradegate's own JSON objects
    #[default]
    Json,
    /// `{"text": ...}`
    Slack,
}

impl ReporterConfig {
    /// `daily_summary_at` read, with its zone; `None` when the summary is not delivered on its
    /// own. Call after [`validate`](Self::validate).
    pub fn daily_summary_time(&self) -> Option<(chrono::NaiveTime, chrono_tz::Tz)> {
        let at = chrono::NaiveTime::parse_from_str(self.daily_summary_at.trim(), "%H:%M").ok()?;
        let zone = self.daily_summary_timezone.parse().ok()?;
        Some((at, zone))
    }
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
            daily_summary_at: "17:30".into(),
            daily_summary_timezone: "America/New_York".into(),
            daily_summary_check_secs: 30,
            webhook_format: WebhookFormat::Json,
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
            (
                "reporter.daily_summary_check_secs",
                self.daily_summary_check_secs,
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
        if !self.daily_summary_at.trim().is_empty()
            && chrono::NaiveTime::parse_from_str(self.daily_summary_at.trim(), "%H:%M").is_err()
        {
            return Err((
                "reporter.daily_summary_at",
                format!(
                    "{:?} is not a time of day as HH:MM (e.g. \"17:30\"), or empty for none",
                    self.daily_summary_at
                ),
            ));
        }
        if self
            .daily_summary_timezone
            .parse::<chrono_tz::Tz>()
            .is_err()
        {
            return Err((
                "reporter.daily_summary_timezone",
                format!(
                    "{:?} is not an IANA time zone (e.g. \"America/New_York\")",
                    self.daily_summary_timezone
                ),
            ));
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
