//! `[alpaca]`: the Alpaca accounts (one AlpacaSession each), their endpoints, and the names of
//! the environment variables holding their credentials.

use std::fmt;
use std::time::Duration;

use serde::{Deserialize, Serialize};

/// `[[alpaca.accounts]]`
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AlpacaAccountConfig {
    /// The account's name in tradegate (orders and decisions name it)
    pub name: String,
    /// Trading API base URL (paper: https://paper-api.alpaca.markets)
    pub base_url: String,
    /// The trade_updates stream URL; empty: `<base_url>/stream` with ws(s)
    pub stream_url: String,
    /// Environment variable holding the key id
    pub key_id_env: String,
    /// Environment variable holding the secret key
    pub secret_key_env: String,
}

impl Default for AlpacaAccountConfig {
    fn default() -> Self {
        Self {
            name: "paper".into(),
            base_url: "https://paper-api.alpaca.markets".into(),
            stream_url: String::new(),
            key_id_env: "APCA_API_KEY_ID".into(),
            secret_key_env: "APCA_API_SECRET_KEY".into(),
        }
    }
}

impl AlpacaAccountConfig {
    /// The stream URL, derived from the base URL when not set.
    pub fn stream_url(&self) -> String {
        if !self.stream_url.is_empty() {
            return self.stream_url.clone();
        }
        let base = self.base_url.trim_end_matches('/');
        let ws = if let Some(rest) = base.strip_prefix("https://") {
            format!("wss://{rest}")
        } else if let Some(rest) = base.strip_prefix("http://") {
            format!("ws://{rest}")
        } else {
            base.to_string()
        };
        format!("{ws}/stream")
    }

    /// The credentials from the environment variables this account names.
    pub fn credentials_from_env(&self) -> Option<Credentials> {
        let key_id = std::env::var(&self.key_id_env).ok()?;
        let secret_key = std::env::var(&self.secret_key_env).ok()?;
        Some(Credentials::new(key_id, secret_key))
    }
}

/// `[alpaca]`
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AlpacaConfig {
    /// The accounts; empty: no Alpaca routing
    pub accounts: Vec<AlpacaAccountConfig>,
    /// A REST call without an answer after this many milliseconds fails (no retry)
    pub request_timeout_ms: u64,
    /// After a restart, a pending decision the broker does not know is failed
    /// (`not_received_by_broker`) once it is this many seconds old
    pub recovery_grace_secs: u64,
    /// Longest wait between stream reconnect attempts, in seconds
    pub reconnect_max_backoff_secs: u64,
    /// Listen to trade_updates (fills and order updates)
    pub stream: bool,
    /// How often each session looks for its account's `positions.sync` jobs, in seconds
    pub job_poll_secs: u64,
}

impl Default for AlpacaConfig {
    fn default() -> Self {
        Self {
            accounts: Vec::new(),
            request_timeout_ms: 10_000,
            recovery_grace_secs: 30,
            reconnect_max_backoff_secs: 30,
            stream: true,
            job_poll_secs: 5,
        }
    }
}

impl AlpacaConfig {
    /// The REST timeout.
    pub fn request_timeout(&self) -> Duration {
        Duration::from_millis(self.request_timeout_ms)
    }

    /// Checks values that parse but cannot work: `Err((key, message))`.
    pub fn validate(&self) -> Result<(), (String, String)> {
        if self.request_timeout_ms == 0 {
            return Err((
                "alpaca.request_timeout_ms".into(),
                "must be at least 1".into(),
            ));
        }
        if self.reconnect_max_backoff_secs == 0 {
            return Err((
                "alpaca.reconnect_max_backoff_secs".into(),
                "must be at least 1".into(),
            ));
        }
        if self.job_poll_secs == 0 {
            return Err(("alpaca.job_poll_secs".into(), "must be at least 1".into()));
        }
        let mut names = std::collections::HashSet::new();
        for (i, a) in self.accounts.iter().enumerate() {
            let at = format!("alpaca.accounts[{i}]");
            if a.name.trim().is_empty() {
                return Err((format!("{at}.name"), "must not be empty".into()));
            }
            if !names.insert(a.name.as_str()) {
                return Err((format!("{at}.name"), format!("{} is listed twice", a.name)));
            }
            if !(a.base_url.starts_with("http://") || a.base_url.starts_with("https://")) {
                return Err((
                    format!("{at}.base_url"),
                    format!("must be an http(s) URL, got {:?}", a.base_url),
                ));
            }
        }
        Ok(())
    }
}

/// Alpaca API credentials: sent in headers, never logged or stored; `Debug` shows `***`.
#[derive(Clone, PartialEq, Eq)]
pub struct Credentials {
    key_id: String,
    secret_key: String,
}

impl Credentials {
    /// Wraps a key pair.
    pub fn new(key_id: impl Into<String>, secret_key: impl Into<String>) -> Self {
        Self {
            key_id: key_id.into(),
            secret_key: secret_key.into(),
        }
    }

    /// The key id, for the one place that sends it.
    pub fn key_id(&self) -> &str {
        &self.key_id
    }

    /// The secret, for the one place that sends it.
    pub fn secret_key(&self) -> &str {
        &self.secret_key
    }
}

impl fmt::Debug for Credentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Credentials(***)")
    }
}
