//! IB's Flex Web Service (version 3), over HTTPS: `SendRequest?t=TOKEN&q=QUERY&v=3` asks for
//! a statement and answers a reference code; `GetStatement?t=TOKEN&q=REFERENCE&v=3` answers the
//! report once generated (error 1019 until then). Every request sends a User-Agent (IB refuses
//! requests without one) and requests are paced at one per second and ten per minute, IB's
//! limit per token (a faster client is answered 1018). Busy and not-ready answers are retried
//! until the deadline; an invalid token or query, an expired token or a refused address is not.
//!
//! The token is a credential that IB puts in the query string: it is held in [`FlexToken`]
//! (redacted by `Debug`), and no URL is ever logged, stored or shown in an error (reqwest's
//! errors name their URL, so theirs are stripped of it).

use std::collections::VecDeque;
use std::fmt;
use std::time::Duration;

use tokio::time::Instant;

use super::flex::{FlexError, ServiceAnswer, parse_service_answer, retryable, root_element};
use crate::tls::ClientTls;

/// IB's Flex Web Service.
pub const DEFAULT_URL: &str =
    "https://ndcdyn.interactivebrokers.com/AccountManagement/FlexWebService";

/// The Flex Web Service token (Client Portal: Performance & Reports > Flex Queries > Flex Web
/// Service Configuration), from `TRADEGATE_IBKR_FLEX_TOKEN`.
#[derive(Clone)]
pub struct FlexToken(String);

impl FlexToken {
    /// Wraps a token.
    pub fn new(token: impl Into<String>) -> Self {
        Self(token.into())
    }
}

impl fmt::Debug for FlexToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("FlexToken(***)")
    }
}

/// Why the service gave no report.
#[derive(Debug, thiserror::Error)]
pub enum ServiceError {
    /// IB answered an error that asking again will not change
    #[error("IB's Flex Web Service refused the request: error {code}: {message}")]
    Refused {
        /// IB's code
        code: u32,
        /// IB's message
        message: String,
    },
    /// Still busy or generating when the deadline passed
    #[error(
        "IB's Flex Web Service gave no statement within {secs} s (last answer: error {code}: \
         {message}); try again later"
    )]
    Deadline {
        /// The deadline
        secs: u64,
        /// The last retryable code
        code: u32,
        /// Its message
        message: String,
    },
    /// The service could not be reached or answered something unreadable
    #[error("IB's Flex Web Service is unavailable: {0}")]
    Unavailable(String),
    /// Its answer was not a report
    #[error(transparent)]
    Report(#[from] FlexError),
}

impl ServiceError {
    /// A stable code.
    pub fn code(&self) -> &'static str {
        match self {
            Self::Refused { .. } => "flex_refused",
            Self::Deadline { .. } => "flex_deadline",
            Self::Unavailable(_) => "flex_unavailable",
            Self::Report(e) => e.code(),
        }
    }
}

/// Keeps requests within IB's limits: one a second, ten a minute.
#[derive(Debug)]
struct Pacer {
    sent: VecDeque<Instant>,
}

impl Pacer {
    const GAP: Duration = Duration::from_millis(1100);
    const PER_MINUTE: usize = 10;

    async fn wait(&mut self) {
        let now = Instant::now();
        while self
            .sent
            .front()
            .is_some_and(|t| now.duration_since(*t) >= Duration::from_secs(61))
        {
            self.sent.pop_front();
        }
        let mut at = now;
        if let Some(last) = self.sent.back() {
            at = at.max(*last + Self::GAP);
        }
        if self.sent.len() >= Self::PER_MINUTE
            && let Some(first) = self.sent.front()
        {
            at = at.max(*first + Duration::from_secs(61));
        }
        tokio::time::sleep_until(at).await;
        self.sent.push_back(Instant::now());
    }
}

/// A client of the Flex Web Service for one token and query.
#[derive(Debug, Clone)]
pub struct FlexClient {
    http: reqwest::Client,
    base: String,
    token: FlexToken,
    query_id: String,
    timeout: Duration,
    /// Shared by every fetch of this client (and its clones), so fetches that overlap keep to
    /// IB's limits together
    pacer: std::sync::Arc<tokio::sync::Mutex<Pacer>>,
}

impl FlexClient {
    /// A client of the service at `base` (its `.../FlexWebService` URL), verifying it with
    /// `tls`; `timeout` bounds one whole fetch.
    pub fn new(
        tls: &ClientTls,
        base: &str,
        token: FlexToken,
        query_id: &str,
        timeout: Duration,
    ) -> Result<Self, ServiceError> {
        let http = tls
            .http()
            .user_agent(concat!("tradegate/", env!("CARGO_PKG_VERSION")))
            .connect_timeout(Duration::from_secs(10))
            .timeout(Duration::from_secs(60))
            .build()
            .map_err(|e| ServiceError::Unavailable(e.without_url().to_string()))?;
        Ok(Self {
            http,
            base: base.trim_end_matches('/').to_string(),
            token,
            query_id: query_id.to_string(),
            timeout,
            pacer: std::sync::Arc::new(tokio::sync::Mutex::new(Pacer {
                sent: VecDeque::new(),
            })),
        })
    }

    async fn get(&self, endpoint: &str, q: &str) -> Result<String, ServiceError> {
        let response = self
            .http
            .get(format!("{}/{endpoint}", self.base))
            .query(&[("t", self.token.0.as_str()), ("q", q), ("v", "3")])
            .send()
            .await
            .map_err(|e| self.unavailable(e))?;
        let status = response.status();
        let body = response.text().await.map_err(|e| self.unavailable(e))?;
        if !status.is_success() {
            return Err(ServiceError::Unavailable(format!(
                "{endpoint} answered HTTP {status}"
            )));
        }
        Ok(body)
    }

    /// A client of the service and query `[ibkr.flex]` names, with `token`.
    pub fn for_config(
        tls: &ClientTls,
        config: &super::config::FlexConfig,
        token: FlexToken,
    ) -> Result<Self, ServiceError> {
        Self::new(
            tls,
            &config.url,
            token,
            config.query_id.trim(),
            Duration::from_secs(config.timeout_secs),
        )
    }

    /// The Flex Query id.
    pub fn query_id(&self) -> &str {
        &self.query_id
    }

    /// An unreachable service, said without the URL or the token.
    fn unavailable(&self, e: reqwest::Error) -> ServiceError {
        let text = without_url(e);
        ServiceError::Unavailable(if self.token.0.is_empty() {
            text
        } else {
            text.replace(&self.token.0, "***")
        })
    }

    /// One request in its turn, given up at `deadline`.
    async fn paced(
        &self,
        deadline: Instant,
        endpoint: &str,
        q: &str,
    ) -> Result<String, ServiceError> {
        let late = || {
            ServiceError::Unavailable(format!(
                "no answer to {endpoint} within the {} s deadline",
                self.timeout.as_secs()
            ))
        };
        tokio::time::timeout_at(deadline, async {
            self.pacer.lock().await.wait().await;
            self.get(endpoint, q).await
        })
        .await
        .map_err(|_| late())?
    }

    /// Asks for the statement and waits for it; the report's XML.
    pub async fn fetch(&self) -> Result<String, ServiceError> {
        let deadline = Instant::now() + self.timeout;
        let mut attempt = 0u32;
        let retry = |attempt: u32, code: u32, message: String| -> Result<Duration, ServiceError> {
            // told we are too fast (another client of the token, say): a minute clears IB's
            // per-minute window; otherwise 1, 2, ... 5 s
            let wait = if code == 1018 {
                Duration::from_secs(61)
            } else {
                Duration::from_secs(u64::from(attempt.min(5)))
            };
            if Instant::now() + wait >= deadline {
                return Err(ServiceError::Deadline {
                    secs: self.timeout.as_secs(),
                    code,
                    message,
                });
            }
            tracing::info!(code, %message, wait_secs = wait.as_secs(), "Flex Web Service not ready; asking again");
            Ok(wait)
        };
        let reference = loop {
            attempt += 1;
            let body = self.paced(deadline, "SendRequest", &self.query_id).await?;
            match parse_service_answer(&body)? {
                ServiceAnswer::Reference(reference) => break reference,
                ServiceAnswer::Error { code, message } if retryable(code) => {
                    tokio::time::sleep(retry(attempt, code, message)?).await;
                }
                ServiceAnswer::Error { code, message } => {
                    return Err(ServiceError::Refused { code, message });
                }
            }
        };
        attempt = 0;
        loop {
            attempt += 1;
            let body = self.paced(deadline, "GetStatement", &reference).await?;
            if root_element(&body)? != "FlexStatementResponse" {
                return Ok(body);
            }
            match parse_service_answer(&body)? {
                ServiceAnswer::Error { code, message } if retryable(code) => {
                    tokio::time::sleep(retry(attempt, code, message)?).await;
                }
                ServiceAnswer::Error { code, message } => {
                    return Err(ServiceError::Refused { code, message });
                }
                ServiceAnswer::Reference(_) => {
                    return Err(ServiceError::Unavailable(
                        "GetStatement answered a reference code, not a statement".into(),
                    ));
                }
            }
        }
    }
}

/// A reqwest error's text without its URL (which holds the token).
fn without_url(e: reqwest::Error) -> String {
    let e = e.without_url();
    let mut text = e.to_string();
    let mut source = std::error::Error::source(&e);
    while let Some(s) = source {
        text.push_str(": ");
        text.push_str(&s.to_string());
        source = s.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn requests_keep_to_one_a_second_and_ten_a_minute() {
        let mut pacer = Pacer {
            sent: VecDeque::new(),
        };
        let start = Instant::now();
        let mut at = Vec::new();
        for _ in 0..12 {
            pacer.wait().await;
            at.push(Instant::now().duration_since(start));
        }
        for pair in at.windows(2) {
            assert!(pair[1] - pair[0] >= Duration::from_secs(1), "{at:?}");
        }
        // the eleventh waits until the first is a minute old
        assert!(at[10] - at[0] >= Duration::from_secs(60), "{at:?}");
        assert!(at[9] - at[0] < Duration::from_secs(60), "{at:?}");
    }
}
