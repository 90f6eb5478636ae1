//! A thin Alpaca Trading API v2 client on reqwest: the calls the order path needs, each
//! returning the status and the body as received (errors are answers, not failures).

use std::time::{Duration, Instant};

use reqwest::Method;
use serde_json::Value;

use super::config::Credentials;

/// One answered call.
#[derive(Debug, Clone)]
pub struct Exchange {
    /// HTTP status
    pub status: u16,
    /// The body as JSON (`null` when empty; `{"raw": text}` when not JSON)
    pub body: Value,
    /// The rate-limit headers, when sent
    pub rate_limit: Value,
    /// Round trip
    pub duration: Duration,
}

impl Exchange {
    /// Whether the status is 2xx.
    pub fn ok(&self) -> bool {
        (200..300).contains(&self.status)
    }
}

/// A call that got no answer.
#[derive(Debug, Clone, thiserror::Error)]
pub enum CallError {
    /// No answer within the timeout (the request may still have reached the broker)
    #[error("no answer within {0:?}")]
    Timeout(Duration),
    /// Connecting or sending failed
    #[error("transport error: {0}")]
    Transport(String),
}

impl CallError {
    /// `timeout` or `transport`.
    pub fn code(&self) -> &'static str {
        match self {
            Self::Timeout(_) => "timeout",
            Self::Transport(_) => "transport",
        }
    }
}

/// The REST client of one account.
#[derive(Debug, Clone)]
pub struct AlpacaRest {
    http: reqwest::Client,
    base_url: String,
    credentials: Credentials,
    timeout: Duration,
}

impl AlpacaRest {
    /// A client of `base_url` with `credentials`; each call gives up after `timeout`.
    pub fn new(base_url: &str, credentials: Credentials, timeout: Duration) -> Self {
        let http = reqwest::Client::builder()
            .pool_max_idle_per_host(64)
            .tcp_nodelay(true)
            .build()
            .unwrap_or_default();
        Self {
            http,
            base_url: base_url.trim_end_matches('/').to_string(),
            credentials,
            timeout,
        }
    }

    /// Sends one call.
    pub async fn call(
        &self,
        method: Method,
        path: &str,
        query: &[(String, String)],
        body: Option<&Value>,
    ) -> Result<Exchange, CallError> {
        let started = Instant::now();
        let mut request = self
            .http
            .request(method, format!("{}{path}", self.base_url))
            .header("APCA-API-KEY-ID", self.credentials.key_id())
            .header("APCA-API-SECRET-KEY", self.credentials.secret_key())
            .timeout(self.timeout);
        if !query.is_empty() {
            request = request.query(query);
        }
        if let Some(body) = body {
            request = request.json(body);
        }
        let response = request.send().await.map_err(|e| self.error(e))?;
        let status = response.status().as_u16();
        let mut rate_limit = serde_json::Map::new();
        for name in [
            "x-ratelimit-limit",
            "x-ratelimit-remaining",
            "x-ratelimit-reset",
        ] {
            if let Some(v) = response.headers().get(name).and_then(|v| v.to_str().ok()) {
                rate_limit.insert(name.into(), Value::String(v.into()));
            }
        }
        let text = response.text().await.map_err(|e| self.error(e))?;
        let body = if text.trim().is_empty() {
            Value::Null
        } else {
            serde_json::from_str(&text).unwrap_or_else(|_| serde_json::json!({ "raw": text }))
        };
        Ok(Exchange {
            status,
            body,
            rate_limit: Value::Object(rate_limit),
            duration: started.elapsed(),
        })
    }

    fn error(&self, e: reqwest::Error) -> CallError {
        if e.is_timeout() {
            CallError::Timeout(self.timeout)
        } else {
            let mut text = e.to_string();
            let mut source = std::error::Error::source(&e);
            while let Some(s) = source {
                text.push_str(": ");
                text.push_str(&s.to_string());
                source = s.source();
            }
            CallError::Transport(text)
        }
    }
}
