//! A thin Alpaca Trading API v2 client on reqwest: the calls the order path needs, each
//! returning the status and the body as received (errors are answers, not failures).

use std::time::{Duration, Instant};

use reqwest::Method;
use serde_json::Value;

use super::config::Credentials;
use crate::domain::RawJson;
use crate::tls::ClientTls;

/// One answered call.
#[derive(Debug, Clone)]
pub struct Exchange {
    /// HTTP status
    pub status: u16,
    /// The body as JSON (`null` when empty; `{"raw": text}` when not JSON)
    pub body: Value,
    /// The body exactly as received
    pub raw: String,
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

    /// The body as the trade log keeps it: the broker's JSON byte for byte (`null` when empty,
    /// a JSON string when it is not JSON).
    pub fn native(&self) -> RawJson {
        if self.raw.trim().is_empty() {
            return RawJson::from_value(&Value::Null);
        }
        RawJson::parse(self.raw.clone())
            .unwrap_or_else(|_| RawJson::from_value(&Value::String(self.raw.clone())))
    }
}

/// A call that got no answer.
#[derive(Debug, Clone, thiserror::Error)]
pub enum CallError {
    /// No answer within the timeout: the request may have reached the broker (outcome unknown)
    #[error("no answer within {0:?}")]
    Timeout(Duration),
    /// The request surely never reached the broker: the connection was refused, the name did
    /// not resolve, or the TLS handshake failed (nothing was written)
    #[error("not sent: {0}")]
    NotSent(String),
    /// The TLS handshake failed: the server's certificate was not accepted (nothing was sent)
    #[error("TLS handshake with {host} failed, nothing was sent: {reason}")]
    Tls {
        /// The server
        host: String,
        /// Why its certificate was refused
        reason: String,
    },
    /// The connection failed after the request was written: the outcome is unknown
    #[error("connection lost after the request was sent: {0}")]
    Lost(String),
}

impl CallError {
    /// `timeout`, `not_sent`, `tls` or `connection_lost`.
    pub fn code(&self) -> &'static str {
        match self {
            Self::Timeout(_) => "timeout",
            Self::NotSent(_) => "not_sent",
            Self::Tls { .. } => "tls",
            Self::Lost(_) => "connection_lost",
        }
    }

    /// Whether the request surely never reached the broker (so a decision can fail at once);
    /// otherwise the broker may hold the order and it must be looked up.
    pub fn surely_not_sent(&self) -> bool {
        matches!(self, Self::NotSent(_) | Self::Tls { .. })
    }
}

/// Order submissions one account has in flight at most: as many as its pool keeps
/// connections, so that under a burst every connection is reused instead of a new one (and,
/// over TLS, a new handshake) opened per request beyond what the pool keeps. Cancels, replaces
/// and look-ups never wait behind them.
pub const MAX_IN_FLIGHT: usize = 64;

/// The REST client of one account.
#[derive(Debug, Clone)]
pub struct AlpacaRest {
    http: reqwest::Client,
    in_flight: std::sync::Arc<tokio::sync::Semaphore>,
    base_url: String,
    credentials: Credentials,
    timeout: Duration,
}

impl AlpacaRest {
    /// A client of `base_url` with `credentials`, verifying the server with `tls`; each call
    /// gives up after `timeout`. Connections are kept alive and reused (one TLS handshake per
    /// connection, not per call).
    pub fn new(
        base_url: &str,
        credentials: Credentials,
        timeout: Duration,
        tls: &ClientTls,
    ) -> Result<Self, reqwest::Error> {
        let http = tls
            .http()
            .pool_max_idle_per_host(MAX_IN_FLIGHT)
            .tcp_nodelay(true)
            .build()?;
        Ok(Self {
            http,
            in_flight: std::sync::Arc::new(tokio::sync::Semaphore::new(MAX_IN_FLIGHT)),
            base_url: base_url.trim_end_matches('/').to_string(),
            credentials,
            timeout,
        })
    }

    /// How long a call may take before it is given up.
    pub fn timeout(&self) -> Duration {
        self.timeout
    }

    /// Sends one call with a JSON body.
    pub async fn call(
        &self,
        method: Method,
        path: &str,
        query: &[(String, String)],
        body: Option<&Value>,
    ) -> Result<Exchange, CallError> {
        let text = body.map(Value::to_string);
        self.call_text(method, path, query, text.as_deref()).await
    }

    /// Sends one call whose JSON body is already serialized.
    pub async fn call_text(
        &self,
        method: Method,
        path: &str,
        query: &[(String, String)],
        body: Option<&str>,
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
            request = request
                .header(reqwest::header::CONTENT_TYPE, "application/json")
                .body(body.to_owned());
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
            serde_json::from_str(&text).unwrap_or_else(|_| serde_json::json!({ "raw": &text }))
        };
        Ok(Exchange {
            status,
            body,
            raw: text,
            rate_limit: Value::Object(rate_limit),
            duration: started.elapsed(),
        })
    }

    /// A slot for one order submission (see [`MAX_IN_FLIGHT`]); held until its answer.
    /// Waiting for it sends nothing.
    pub async fn submission_slot(&self) -> Option<tokio::sync::OwnedSemaphorePermit> {
        std::sync::Arc::clone(&self.in_flight)
            .acquire_owned()
            .await
            .ok()
    }

    fn error(&self, e: reqwest::Error) -> CallError {
        let mut text = e.to_string();
        let mut source = std::error::Error::source(&e);
        while let Some(s) = source {
            text.push_str(": ");
            text.push_str(&s.to_string());
            source = s.source();
        }
        if e.is_timeout() {
            // a timeout may fire after the request was written: never "not sent"
            CallError::Timeout(self.timeout)
        } else if e.is_connect() {
            // refused, unresolvable, or the handshake failed: the connector wrote no request
            match crate::tls::tls_failure(&e) {
                Some(reason) => CallError::Tls {
                    host: e
                        .url()
                        .and_then(|u| u.host_str())
                        .unwrap_or("the broker")
                        .to_string(),
                    reason,
                },
                None => CallError::NotSent(text),
            }
        } else {
            // anything else (a TLS alert on a reused connection included) may have come after
            // the request was written
            CallError::Lost(text)
        }
    }
}
