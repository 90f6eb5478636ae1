//! `[ibkr]`: where TWS (or IB Gateway) listens and how the executions sync runs.

use std::time::Duration;

use chrono_tz::Tz;
use serde::{Deserialize, Serialize};

/// `[ibkr]`
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct IbkrConfig {
    /// The accounts to sync behind `host`/`port` (one TWS login may serve several: an advisor
    /// or multi-account login); all are synced over one session; empty: none there
    pub accounts: Vec<String>,
    /// TWS / IB Gateway host
    pub host: String,
    /// Its API port (TWS paper 7497, live 7496; IB Gateway paper 4002, live 4001)
    pub port: u16,
    /// The API client id the gateway's sessions use. It must be TWS's "Master API client ID"
    /// (TWS: Global Configuration > API > Settings; IB Gateway: Configure > Settings > API >
    /// Settings): only the master sees the executions of other clients and of TWS itself and
    /// their commission reports, and tradegate places no IBKR orders of its own
    pub client_id: i64,
    /// The API client id of `tradegate sync ibkr` (TWS refuses a second session with one id;
    /// as it is no master, a CLI sync sees what the master sees only if TWS is told so)
    pub cli_client_id: i64,
    /// Seconds to wait for the connection and handshake
    pub connect_timeout_secs: u64,
    /// Seconds TWS may stay silent while a request is answered
    pub read_timeout_secs: u64,
    /// Seconds one executions request may take in all (a TWS that never sends the end marker,
    /// or trickles other messages, is given up after this)
    pub request_timeout_secs: u64,
    /// Days of executions each sync asks for (TWS keeps about 7)
    pub lookback_days: u32,
    /// Seconds between scheduled syncs of an account; 0: only on request and by jobs
    pub sync_interval_secs: u64,
    /// Seconds between looks for `trades.sync` jobs
    pub job_poll_secs: u64,
    /// The zone of execution times TWS sends without a zone name: the zone of the TWS login
    /// (TWS's login screen; `US/Eastern` for most US logins). Empty: the zone TWS names in its
    /// handshake, if it names one tradegate knows; without either, such executions are refused
    /// (never read as UTC). IB's own names (`EST`, `MET`, `CTT`, ...) are accepted
    pub timezone: String,
    /// Longest wait between reconnect attempts after a disconnect, in seconds
    pub reconnect_max_backoff_secs: u64,
    /// Accounts behind other TWS or IB Gateway instances, each reached over its own session
    pub gateways: Vec<IbkrGateway>,
    /// The backfill from IB's Flex reports (`tradegate sync ibkr --flex-file FILE | --flex`)
    pub flex: FlexConfig,
}

/// `[ibkr.flex]`: IB's Flex reports, which list executions older than TWS's window. The Web
/// Service's token is a credential: it is read from `TRADEGATE_IBKR_FLEX_TOKEN` only.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct FlexConfig {
    /// The Flex Query id of an Activity Flex Query (Trades at the Execution level) or a Trade
    /// Confirmation Flex Query, for `tradegate sync ibkr --flex`; empty: the Web Service is not
    /// used
    pub query_id: String,
    /// The Flex Web Service (its `.../FlexWebService` URL)
    pub url: String,
    /// The zone of the report's times (IB writes them in Eastern time)
    pub timezone: String,
    /// Seconds one Web Service fetch may take, statement generation included
    pub timeout_secs: u64,
    /// With a query id and the token set, the gateway backfills at start and then every this
    /// many seconds; 0: only at start
    pub interval_secs: u64,
}

impl Default for FlexConfig {
    fn default() -> Self {
        Self {
            query_id: String::new(),
            url: super::flex_service::DEFAULT_URL.into(),
            timezone: "America/New_York".into(),
            timeout_secs: 300,
            interval_secs: 86_400,
        }
    }
}

impl FlexConfig {
    /// The zone of the report's times.
    pub fn zone(&self) -> Tz {
        zone_of(&self.timezone).unwrap_or(Tz::America__New_York)
    }
}

/// `[[ibkr.gateways]]`: accounts behind another TWS or IB Gateway.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IbkrGateway {
    /// The accounts of this login
    pub accounts: Vec<String>,
    /// Its host
    pub host: String,
    /// Its API port
    pub port: u16,
    /// Its Master API client ID (see `[ibkr] client_id`); default `[ibkr] client_id`
    #[serde(default)]
    pub client_id: Option<i64>,
    /// Its login's zone (see `[ibkr] timezone`); default `[ibkr] timezone`
    #[serde(default)]
    pub timezone: Option<String>,
}

/// One TWS session the gateway keeps: where, as which client, and the accounts it syncs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionConfig {
    /// Host
    pub host: String,
    /// Port
    pub port: u16,
    /// Client id
    pub client_id: i64,
    /// The login's zone as configured (`None`: the handshake's)
    pub zone: Option<Tz>,
    /// The accounts synced over it
    pub accounts: Vec<String>,
}

impl SessionConfig {
    /// Its name, the syncer's registry name (`ibkr_syncer.127.0.0.1:7497.17`).
    pub fn name(&self) -> String {
        format!("ibkr_syncer.{}:{}.{}", self.host, self.port, self.client_id)
    }
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
            request_timeout_secs: 120,
            lookback_days: 7,
            sync_interval_secs: 300,
            job_poll_secs: 2,
            timezone: String::new(),
            reconnect_max_backoff_secs: 60,
            gateways: Vec::new(),
            flex: FlexConfig::default(),
        }
    }
}

impl IbkrConfig {
    /// The configured login zone of times without a zone name (`None`: not set).
    pub fn zone(&self) -> Option<Tz> {
        zone_of(&self.timezone)
    }

    /// Every session the gateway keeps, the `[ibkr]` one first (if it has accounts).
    pub fn sessions(&self) -> Vec<SessionConfig> {
        let main = SessionConfig {
            host: self.host.clone(),
            port: self.port,
            client_id: self.client_id,
            zone: self.zone(),
            accounts: self.accounts.clone(),
        };
        let others = self.gateways.iter().map(|g| SessionConfig {
            host: g.host.clone(),
            port: g.port,
            client_id: g.client_id.unwrap_or(self.client_id),
            zone: g.timezone.as_deref().map_or_else(|| self.zone(), zone_of),
            accounts: g.accounts.clone(),
        });
        std::iter::once(main)
            .filter(|s| !s.accounts.is_empty())
            .chain(others)
            .collect()
    }

    /// The session an account is synced over.
    pub fn session_of(&self, account: &str) -> Option<SessionConfig> {
        self.sessions()
            .into_iter()
            .find(|s| s.accounts.iter().any(|a| a == account))
    }

    /// Every configured account, of every session.
    pub fn all_accounts(&self) -> Vec<String> {
        self.sessions()
            .into_iter()
            .flat_map(|s| s.accounts)
            .collect()
    }

    /// The whole-request deadline.
    pub fn request_timeout(&self) -> Duration {
        Duration::from_secs(self.request_timeout_secs)
    }

    /// The session timeouts.
    pub fn timeouts(&self) -> super::client::Timeouts {
        super::client::Timeouts {
            connect: self.connect_timeout(),
            read: self.read_timeout(),
            request: self.request_timeout(),
        }
    }

    /// Connect timeout.
    pub fn connect_timeout(&self) -> Duration {
        Duration::from_secs(self.connect_timeout_secs)
    }

    /// Read timeout.
    pub fn read_timeout(&self) -> Duration {
        Duration::from_secs(self.read_timeout_secs)
    }

    /// How long an on-request sync is waited for: a fetch may take up to the read timeout per
    /// frame, and a large window takes a while to store.
    pub fn sync_call_timeout(&self) -> Duration {
        self.connect_timeout() + self.read_timeout() * 4 + Duration::from_secs(120)
    }

    /// The look-back window.
    pub fn lookback(&self) -> chrono::Duration {
        chrono::Duration::days(i64::from(self.lookback_days))
    }

    /// Checks values that parse but cannot work; the error names the key.
    pub fn validate(&self) -> Result<(), (&'static str, String)> {
        if !self.timezone.trim().is_empty()
            && let Err(e) = super::fills::parse_zone(&self.timezone)
        {
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
        if !(1..=86_400).contains(&self.request_timeout_secs) {
            return Err(("ibkr.request_timeout_secs", "must be 1 to 86400".into()));
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
        if let Err(e) = super::fills::parse_zone(&self.flex.timezone) {
            return Err(("ibkr.flex.timezone", e));
        }
        if !(self.flex.url.starts_with("https://") || self.flex.url.starts_with("http://127.")) {
            return Err((
                "ibkr.flex.url",
                "must be an https:// URL (the token travels in it)".into(),
            ));
        }
        if !(10..=3600).contains(&self.flex.timeout_secs) {
            return Err(("ibkr.flex.timeout_secs", "must be 10 to 3600".into()));
        }
        if self.flex.interval_secs != 0 && self.flex.interval_secs < 600 {
            return Err((
                "ibkr.flex.interval_secs",
                "must be 0 (only at start) or at least 600: IB generates a report per request \
                 and limits requests per token"
                    .into(),
            ));
        }
        for g in &self.gateways {
            if g.host.trim().is_empty() {
                return Err(("ibkr.gateways.host", "must not be empty".into()));
            }
            if g.port == 0 {
                return Err(("ibkr.gateways.port", "must be a port number, not 0".into()));
            }
            if g.accounts.is_empty() {
                return Err((
                    "ibkr.gateways.accounts",
                    format!("the gateway at {}:{} lists no account", g.host, g.port),
                ));
            }
            if let Some(zone) = &g.timezone
                && let Err(e) = super::fills::parse_zone(zone)
            {
                return Err(("ibkr.gateways.timezone", e));
            }
        }
        let mut seen = std::collections::HashSet::new();
        let mut endpoints = std::collections::HashMap::new();
        for session in self.sessions() {
            for account in &session.accounts {
                if account.trim().is_empty() {
                    return Err(("ibkr.accounts", "an account id is empty".into()));
                }
                if !seen.insert(account.clone()) {
                    return Err(("ibkr.accounts", format!("{account} is listed twice")));
                }
            }
            let key = (session.host.clone(), session.port, session.client_id);
            if endpoints.insert(key, ()).is_some() {
                return Err((
                    "ibkr.gateways",
                    format!(
                        "two entries use {}:{} as client {}: TWS refuses a second session with \
                         one client id; list the accounts of one login together",
                        session.host, session.port, session.client_id
                    ),
                ));
            }
            if session.client_id == self.cli_client_id {
                return Err((
                    "ibkr.cli_client_id",
                    format!(
                        "must differ from the client id of the session at {}:{} ({}): TWS \
                         refuses a second session with one id",
                        session.host, session.port, session.client_id
                    ),
                ));
            }
        }
        Ok(())
    }
}

fn zone_of(name: &str) -> Option<Tz> {
    let name = name.trim();
    (!name.is_empty())
        .then(|| super::fills::parse_zone(name).ok())
        .flatten()
}
