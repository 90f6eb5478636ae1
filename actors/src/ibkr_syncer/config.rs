//! `[ibkr]`: where TWS (or IB Gateway) listens and how the executions sync runs.

use std::time::Duration;

use chrono_tz::Tz;
use serde::{Deserialize, Serialize};

/// `[ibkr]`
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct IbkrConfig {
    /// The accounts to sync, one IbkrSyncer each; empty: no IBKR sync
    pub accounts: Vec<String>,
    /// TWS / IB Gateway host
    pub host: String,
    /// Its API port (TWS paper 7497, live 7496; IB Gateway paper 4002, live 4001)
    pub port: u16,
    /// The API client id the gateway's syncers use
    pub client_id: i64,
    /// The API client id of `tradegate sync ibkr` (TWS refuses a second session with one id)
    pub cli_client_id: i64,
    /// Seconds to wait for the connection and handshake
    pub connect_timeout_secs: u64,
    /// Seconds TWS may stay silent while a request is answered
    pub read_timeout_secs: u64,
    /// Days of executions each sync asks for (TWS keeps about 7)
    pub lookback_days: u32,
    /// Seconds between scheduled syncs of an account; 0: only on request and by jobs
    pub sync_interval_secs: u64,
    /// Seconds between looks for `trades.sync` jobs
    pub job_poll_secs: u64,
    /// The zone of execution times TWS sends without a zone name (the TWS login's zone)
    pub timezone: String,
    /// Longest wait between reconnect attempts after a disconnect, in seconds
    pub reconnect_max_backoff_secs: u64,
}

impl Default for IbkrConfig {
    fn default() -> Self {
        Self {
            accounts: Vec::new(),
            host: "127.0.0.1".into(),
            port: 7497,
            client_id: 17,
            cli_client_id: 18,
            connect_timeout_secs: 5,
            read_timeout_secs: 30,
            lookback_days: 7,
            sync_interval_secs: 300,
            job_poll_secs: 2,
            timezone: "UTC".into(),
            reconnect_max_backoff_secs: 60,
        }
    }
}

impl IbkrConfig {
    /// The zone of times without a zone name.
    pub fn zone(&self) -> Tz {
        super::fills::parse_zone(&self.timezone).unwrap_or(Tz::UTC)
    }

    /// Connect timeout.
    pub fn connect_timeout(&self) -> Duration {
        Duration::from_secs(self.connect_timeout_secs)
    }

    /// Read timeout.
    pub fn read_timeout(&self) -> Duration {
        Duration::from_secs(self.read_timeout_secs)
    }

    /// The look-back window.
    pub fn lookback(&self) -> chrono::Duration {
        chrono::Duration::days(i64::from(self.lookback_days))
    }

    /// Checks values that parse but cannot work; the error names the key.
    pub fn validate(&self) -> Result<(), (&'static str, String)> {
        if let Err(e) = super::fills::parse_zone(&self.timezone) {
            return Err(("ibkr.timezone", e));
        }
        if self.host.trim().is_empty() {
            return Err(("ibkr.host", "must not be empty".into()));
        }
        if self.port == 0 {
            return Err(("ibkr.port", "must be a port number, not 0".into()));
        }
        if self.client_id == self.cli_client_id {
            return Err((
                "ibkr.cli_client_id",
                format!(
                    "must differ from ibkr.client_id ({}): TWS refuses a second session with one id",
                    self.client_id
                ),
            ));
        }
        if !(1..=300).contains(&self.connect_timeout_secs) {
            return Err(("ibkr.connect_timeout_secs", "must be 1 to 300".into()));
        }
        if !(1..=3600).contains(&self.read_timeout_secs) {
            return Err(("ibkr.read_timeout_secs", "must be 1 to 3600".into()));
        }
        if !(1..=365).contains(&self.lookback_days) {
            return Err(("ibkr.lookback_days", "must be 1 to 365".into()));
        }
        if self.job_poll_secs == 0 {
            return Err(("ibkr.job_poll_secs", "must be at least 1".into()));
        }
        if self.reconnect_max_backoff_secs == 0 {
            return Err((
                "ibkr.reconnect_max_backoff_secs",
                "must be at least 1".into(),
            ));
        }
        let mut seen = std::collections::HashSet::new();
        for account in &self.accounts {
            if account.trim().is_empty() {
                return Err(("ibkr.accounts", "an account id is empty".into()));
            }
            if !seen.insert(account) {
                return Err(("ibkr.accounts", format!("{account} is listed twice")));
            }
        }
        Ok(())
    }
}
