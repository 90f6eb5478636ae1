//! Configuration: `config.toml` (every key documented there), overridden by `TRADEGATE_*`
//! environment variables and `DATABASE_URL`. Broker credentials come only from the environment
//! and never appear in `Debug` output.

use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};

/// Prefix of configuration overrides: `TRADEGATE_<SECTION>__<KEY>=value`, e.g.
/// `TRADEGATE_API__LISTEN=127.0.0.1:9000`. Other `TRADEGATE_*` variables are not config keys.
pub const ENV_PREFIX: &str = "TRADEGATE_";

/// The environment variable holding the IB Flex Web Service token.
pub const FLEX_TOKEN_ENV: &str = "TRADEGATE_IBKR_FLEX_TOKEN";

/// The whole configuration.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// Where the audit trail lives
    pub database: DatabaseConfig,
    /// The HTTP/WebSocket listener
    pub api: ApiConfig,
    /// The root supervisor's restart policy
    pub supervisor: SupervisorConfig,
    /// Logging
    pub log: LogConfig,
    /// The trade-log pipeline
    pub tradelog: tradegate_actors::trade_log_writer::TradeLogConfig,
    /// Data ingestion logging and decision lineage
    pub ingestion: tradegate_actors::ingestion_logger::IngestionConfig,
    /// IBKR executions sync
    pub ibkr: tradegate_actors::ibkr_syncer::IbkrConfig,
    /// Strategies, their tokens and accounts, pre-trade risk limits
    pub orders: tradegate_actors::order_router::OrdersConfig,
    /// Alpaca accounts (one AlpacaSession each)
    pub alpaca: tradegate_actors::alpaca_session::AlpacaConfig,
    /// Alerts and payload retention
    pub reporter: tradegate_actors::reporter::ReporterConfig,
    /// How brokers and webhooks are verified (TLS)
    pub tls: tradegate_actors::tls::TlsConfig,
    /// Alpaca credentials, read from the environment only
    #[serde(skip)]
    pub alpaca_credentials: Option<AlpacaCredentials>,
    /// The IB Flex Web Service token, from `TRADEGATE_IBKR_FLEX_TOKEN` only
    #[serde(skip)]
    pub ibkr_flex_token: Option<Secret>,
    /// Each Alpaca account's credentials, from the environment variables it names
    #[serde(skip)]
    pub alpaca_keys:
        std::collections::BTreeMap<String, tradegate_actors::alpaca_session::Credentials>,
}

/// `[database]`
#[derive(Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct DatabaseConfig {
    /// A PostgreSQL URL or key=value connection string; empty starts a private cluster.
    pub url: String,
    /// Data directory of the private cluster, relative to the working folder.
    pub data_dir: PathBuf,
    /// Directory holding `initdb` and `pg_ctl`; empty searches `PATH`, then
    /// `/usr/lib/postgresql/*/bin`.
    pub pg_bin_dir: PathBuf,
    /// How long to try to reach the database before giving up, in seconds.
    pub connect_timeout_secs: u64,
    /// Connections in the pool used by the HTTP API and reports.
    pub pool_size: usize,
}

impl Default for DatabaseConfig {
    fn default() -> Self {
        Self {
            url: String::new(),
            data_dir: PathBuf::from(".tradegate/pg"),
            pg_bin_dir: PathBuf::new(),
            connect_timeout_secs: 5,
            pool_size: 8,
        }
    }
}

impl fmt::Debug for DatabaseConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DatabaseConfig")
            .field("url", &redact_conninfo(&self.url))
            .field("data_dir", &self.data_dir)
            .field("pg_bin_dir", &self.pg_bin_dir)
            .field("connect_timeout_secs", &self.connect_timeout_secs)
            .field("pool_size", &self.pool_size)
            .finish()
    }
}

impl DatabaseConfig {
    /// The connect timeout as a duration.
    pub fn connect_timeout(&self) -> Duration {
        Duration::from_secs(self.connect_timeout_secs)
    }
}

/// `[api]`
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ApiConfig {
    /// Address of the HTTP listener (`/health`, `/metrics`, the read API).
    pub listen: SocketAddr,
    /// Whether `/metrics` is served without a token (for scrapers); `false`: an auditor or
    /// operator token is needed.
    pub public_metrics: bool,
    /// Where `tradegate run` keeps the local operator token when no `[[api.tokens]]` entry has
    /// the operator role (created mode 0600, reused), relative to the working folder; the CLI
    /// commands that call the gateway read it from there.
    pub token_file: PathBuf,
    /// The API's tokens, each with a name (what its actions are recorded under) and roles.
    pub tokens: Vec<ApiTokenConfig>,
    /// Largest request body, in bytes (the ingestion `records` and `api-calls` endpoints take
    /// up to 64 MiB, for 100,000-record batches).
    pub max_body_bytes: usize,
    /// Largest strategy WebSocket message (and frame), in bytes.
    pub max_ws_message_bytes: usize,
    /// Open `/v1/strategy` connections one strategy may hold.
    pub max_connections_per_strategy: usize,
    /// Requests one API token may make per second (a one-second window).
    pub max_requests_per_sec: u32,
    /// Open connections the listener holds at most; more wait to be accepted.
    pub max_connections: usize,
    /// Seconds a client has to send a request's headers; an idle connection is closed after
    /// as long.
    pub header_timeout_secs: u64,
    /// Seconds a strategy connection may send nothing (not even a pong to the gateway's pings)
    /// before it is closed.
    pub ws_idle_timeout_secs: u64,
    /// PEM certificate chain of the listener: with `tls_key_file`, the API is served over TLS
    /// only (`https://`, `wss://`). Empty: plain TCP.
    pub tls_cert_file: PathBuf,
    /// PEM private key of `tls_cert_file`.
    pub tls_key_file: PathBuf,
}

impl Default for ApiConfig {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from(([127, 0, 0, 1], 8080)),
            public_metrics: true,
            token_file: PathBuf::from(".tradegate/operator.token"),
            tokens: Vec::new(),
            max_body_bytes: 1024 * 1024,
            max_ws_message_bytes: 1024 * 1024,
            max_connections_per_strategy: 8,
            max_requests_per_sec: 1000,
            max_connections: 1024,
            header_timeout_secs: 10,
            ws_idle_timeout_secs: 90,
            tls_cert_file: PathBuf::new(),
            tls_key_file: PathBuf::new(),
        }
    }
}

/// What a token of the HTTP API may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// The kill switch, sync triggers, jobs and other changes
    Operator,
    /// Every read: decisions, executions, trades, reports, ingestion runs, operator actions
    Auditor,
    /// The ingestion write endpoints (data jobs)
    Ingest,
}

impl Role {
    /// The name used in `config.toml` and in error messages.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Operator => "operator",
            Self::Auditor => "auditor",
            Self::Ingest => "ingest",
        }
    }
}

/// One `[[api.tokens]]` entry: the token itself comes from `token_env` (preferred), or is
/// given by its SHA-256 (`token_sha256`, hex), or in the clear (`token`, warned about).
#[derive(Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ApiTokenConfig {
    /// The name its actions are recorded under (1 to 64 characters, unique)
    pub name: String,
    /// The environment variable holding the token
    pub token_env: String,
    /// The token's SHA-256 as 64 hex digits
    pub token_sha256: String,
    /// The token in the clear (prefer `token_env`: this file is not a secret store)
    pub token: String,
    /// `operator`, `auditor`, `ingest` (one or more)
    pub roles: Vec<Role>,
}

impl fmt::Debug for ApiTokenConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ApiTokenConfig")
            .field("name", &self.name)
            .field("token_env", &self.token_env)
            .field("token_sha256", &self.token_sha256)
            .field("token", &if self.token.is_empty() { "" } else { "***" })
            .field("roles", &self.roles)
            .finish()
    }
}

impl ApiConfig {
    /// Checks values that parse but cannot work: `Err((key, message))`.
    pub fn validate(&self) -> Result<(), (String, String)> {
        let mut names = std::collections::HashSet::new();
        for (i, t) in self.tokens.iter().enumerate() {
            let at = format!("api.tokens[{i}]");
            if t.name.is_empty() || t.name.chars().count() > 64 || t.name.contains(char::is_control)
            {
                return Err((
                    format!("{at}.name"),
                    "must be 1 to 64 printable characters".into(),
                ));
            }
            if t.name == "local-operator"
                || t.name.starts_with("cli:")
                || t.name.starts_with("ingest-run:")
            {
                return Err((
                    format!("{at}.name"),
                    "local-operator, cli:... and ingest-run:... are reserved for the gateway's \
                     own credentials"
                        .into(),
                ));
            }
            if !names.insert(t.name.as_str()) {
                return Err((
                    format!("{at}.name"),
                    format!("{:?} names two tokens", t.name),
                ));
            }
            let given = [&t.token_env, &t.token_sha256, &t.token]
                .iter()
                .filter(|v| !v.is_empty())
                .count();
            if given != 1 {
                return Err((
                    format!("{at}.token_env"),
                    "set exactly one of token_env, token_sha256 and token".into(),
                ));
            }
            if !t.token_sha256.is_empty()
                && (t.token_sha256.len() != 64
                    || !t.token_sha256.chars().all(|c| c.is_ascii_hexdigit()))
            {
                return Err((
                    format!("{at}.token_sha256"),
                    "must be a SHA-256 as 64 hex digits".into(),
                ));
            }
            if !t.token.is_empty() && t.token.len() < 16 {
                return Err((
                    format!("{at}.token"),
                    "must be at least 16 characters".into(),
                ));
            }
            if t.roles.is_empty() {
                return Err((
                    format!("{at}.roles"),
                    "name at least one of operator, auditor, ingest".into(),
                ));
            }
        }
        if self.token_file.as_os_str().is_empty() {
            return Err(("api.token_file".into(), "must be set".into()));
        }
        let at_least = |key: &str, value: usize, min: usize| {
            if value < min {
                Err((format!("api.{key}"), format!("must be at least {min}")))
            } else {
                Ok(())
            }
        };
        at_least("max_body_bytes", self.max_body_bytes, 1024)?;
        at_least("max_ws_message_bytes", self.max_ws_message_bytes, 1024)?;
        at_least(
            "max_connections_per_strategy",
            self.max_connections_per_strategy,
            1,
        )?;
        at_least(
            "max_requests_per_sec",
            self.max_requests_per_sec as usize,
            1,
        )?;
        at_least("max_connections", self.max_connections, 16)?;
        let secs = |v: u64| usize::try_from(v).unwrap_or(usize::MAX);
        at_least("header_timeout_secs", secs(self.header_timeout_secs), 1)?;
        at_least("ws_idle_timeout_secs", secs(self.ws_idle_timeout_secs), 3)?;
        if self.tls_cert_file.as_os_str().is_empty() != self.tls_key_file.as_os_str().is_empty() {
            return Err((
                "api.tls_key_file".into(),
                "set both tls_cert_file and tls_key_file, or neither".into(),
            ));
        }
        Ok(())
    }
}

/// `[supervisor]`
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SupervisorConfig {
    /// Failures of one actor tolerated within the window; one more stops the gateway.
    pub max_restarts: u32,
    /// The window over which failures are counted, in seconds.
    pub restart_window_secs: u64,
    /// First restart delay in milliseconds; doubles per failure in the window.
    pub backoff_base_ms: u64,
    /// Largest restart delay in milliseconds.
    pub backoff_max_ms: u64,
}

impl Default for SupervisorConfig {
    fn default() -> Self {
        Self {
            max_restarts: 5,
            restart_window_secs: 60,
            backoff_base_ms: 100,
            backoff_max_ms: 5_000,
        }
    }
}

impl SupervisorConfig {
    /// The policy the Gateway applies.
    pub fn policy(&self) -> tradegate_actors::gateway::RestartPolicy {
        tradegate_actors::gateway::RestartPolicy {
            max_restarts: self.max_restarts,
            window: Duration::from_secs(self.restart_window_secs),
            backoff_base: Duration::from_millis(self.backoff_base_ms),
            backoff_max: Duration::from_millis(self.backoff_max_ms),
        }
    }
}

/// `[log]`
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LogConfig {
    /// A `tracing` filter such as `info` or `tradegate=debug,info`; `RUST_LOG` wins when set.
    pub level: String,
}

impl Default for LogConfig {
    fn default() -> Self {
        Self {
            level: "info".into(),
        }
    }
}

/// A secret string: shown as `***` by `Debug` and `Display`.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    /// Wraps a secret.
    pub fn new(value: impl Into<String>) -> Self {
        Self(value.into())
    }

    /// The secret itself, for the one place that sends it.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("***")
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("***")
    }
}

/// Alpaca API credentials, from `APCA_API_KEY_ID` and `APCA_API_SECRET_KEY`.
#[derive(Debug, Clone, PartialEq)]
pub struct AlpacaCredentials {
    /// `APCA-API-KEY-ID`
    pub key_id: Secret,
    /// `APCA-API-SECRET-KEY`
    pub secret_key: Secret,
}

/// A configuration that cannot be used, naming the file, key or variable at fault.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The named config file does not exist.
    #[error("config file {} not found", .0.display())]
    NotFound(PathBuf),
    /// The config file exists but cannot be read.
    #[error("cannot read config file {}: {source}", path.display())]
    Read {
        /// The file
        path: PathBuf,
        /// Why
        source: std::io::Error,
    },
    /// The file is not valid TOML or has an unknown key or a value of the wrong type.
    #[error("config file {}: {source}", path.display())]
    Parse {
        /// The file
        path: PathBuf,
        /// What and where (line, column and key)
        source: Box<toml::de::Error>,
    },
    /// An environment override names an unknown key or has a bad value.
    #[error("environment variable {var}: {message}")]
    Env {
        /// The variable
        var: String,
        /// What is wrong
        message: String,
    },
    /// A value parses but is not usable (a key built from names in the file).
    #[error("config key {key} in {origin}: {message}")]
    InvalidKey {
        /// `section.key`
        key: String,
        /// The file (or "defaults")
        origin: String,
        /// What is wrong
        message: String,
    },
    /// A value parses but is not usable.
    #[error("config key {key} in {origin}: {message}")]
    Invalid {
        /// `section.key`
        key: &'static str,
        /// The file (or "defaults")
        origin: String,
        /// What is wrong
        message: String,
    },
}

impl Config {
    /// Loads the configuration the binary runs with: `path` if given (it must exist), else
    /// `config.toml` in the working folder if present, else the defaults; then the process
    /// environment's overrides.
    pub fn load(path: Option<&Path>) -> Result<Self, ConfigError> {
        Self::load_with_env(path, std::env::vars())
    }

    /// Like [`Config::load`], with the environment given explicitly.
    pub fn load_with_env(
        path: Option<&Path>,
        env: impl IntoIterator<Item = (String, String)>,
    ) -> Result<Self, ConfigError> {
        let (origin, table) = match path {
            Some(path) => (path.to_path_buf(), read_table(path, true)?),
            None => {
                let default = PathBuf::from("config.toml");
                let table = read_table(&default, false)?;
                (default, table)
            }
        };
        let mut config: Config = table
            .clone()
            .try_into()
            .map_err(|source| ConfigError::Parse {
                path: origin.clone(),
                source: Box::new(source),
            })?;

        let mut table = table;
        let mut env: Vec<(String, String)> = env.into_iter().collect();
        env.sort();
        let mut key_id = None;
        let mut secret_key = None;
        let mut flex_token = None;
        let all_env: std::collections::HashMap<String, String> = env.iter().cloned().collect();
        for (var, value) in env {
            match var.as_str() {
                "APCA_API_KEY_ID" => key_id = Some(Secret::new(value)),
                "APCA_API_SECRET_KEY" => secret_key = Some(Secret::new(value)),
                FLEX_TOKEN_ENV => {
                    flex_token = Some(Secret::new(value.trim())).filter(|t| !t.expose().is_empty());
                }
                "DATABASE_URL" => {
                    config = apply_override(&mut table, &var, "database", "url", &value)?;
                }
                _ => {
                    let Some(rest) = var.strip_prefix(ENV_PREFIX) else {
                        continue;
                    };
                    let Some((section, key)) = rest.split_once("__") else {
                        continue;
                    };
                    config = apply_override(
                        &mut table,
                        &var,
                        &section.to_ascii_lowercase(),
                        &key.to_ascii_lowercase(),
                        &value,
                    )?;
                }
            }
        }
        config.ibkr_flex_token = flex_token;
        config.alpaca_credentials = match (key_id, secret_key) {
            (Some(key_id), Some(secret_key)) => Some(AlpacaCredentials { key_id, secret_key }),
            (None, None) => None,
            (Some(_), None) => {
                return Err(ConfigError::Env {
                    var: "APCA_API_SECRET_KEY".into(),
                    message: "not set, but APCA_API_KEY_ID is".into(),
                });
            }
            (None, Some(_)) => {
                return Err(ConfigError::Env {
                    var: "APCA_API_KEY_ID".into(),
                    message: "not set, but APCA_API_SECRET_KEY is".into(),
                });
            }
        };
        for account in &config.alpaca.accounts {
            if let (Some(k), Some(s)) = (
                all_env.get(&account.key_id_env),
                all_env.get(&account.secret_key_env),
            ) {
                config.alpaca_keys.insert(
                    account.name.clone(),
                    tradegate_actors::alpaca_session::Credentials::new(k, s),
                );
            }
        }
        config.validate(&origin.display().to_string())?;
        Ok(config)
    }

    /// Checks values that parse but cannot work.
    pub fn validate(&self, origin: &str) -> Result<(), ConfigError> {
        let invalid = |key: &'static str, message: String| ConfigError::Invalid {
            key,
            origin: origin.to_string(),
            message,
        };
        if !(1..=300).contains(&self.database.connect_timeout_secs) {
            return Err(invalid(
                "database.connect_timeout_secs",
                format!(
                    "must be between 1 and 300, got {}",
                    self.database.connect_timeout_secs
                ),
            ));
        }
        if self.database.pool_size == 0 {
            return Err(invalid("database.pool_size", "must be at least 1".into()));
        }
        if self.database.url.is_empty() && self.database.data_dir.as_os_str().is_empty() {
            return Err(invalid(
                "database.data_dir",
                "must be set when database.url is empty".into(),
            ));
        }
        if self.supervisor.restart_window_secs == 0 {
            return Err(invalid(
                "supervisor.restart_window_secs",
                "must be at least 1".into(),
            ));
        }
        if self.supervisor.backoff_base_ms == 0 {
            return Err(invalid(
                "supervisor.backoff_base_ms",
                "must be at least 1".into(),
            ));
        }
        if self.supervisor.backoff_max_ms < self.supervisor.backoff_base_ms {
            return Err(invalid(
                "supervisor.backoff_max_ms",
                format!(
                    "must not be below supervisor.backoff_base_ms ({})",
                    self.supervisor.backoff_base_ms
                ),
            ));
        }
        if let Err((key, message)) = self.tradelog.validate() {
            return Err(invalid(key, message));
        }
        if let Err((key, message)) = self.ingestion.validate() {
            return Err(invalid(key, message));
        }
        if let Err((key, message)) = self.ibkr.validate() {
            return Err(invalid(key, message));
        }
        if let Err((key, message)) = self.reporter.validate() {
            return Err(invalid(key, message));
        }
        let invalid_owned = |key: String, message: String| ConfigError::InvalidKey {
            key,
            origin: origin.to_string(),
            message,
        };
        if let Err((key, message)) = self.api.validate() {
            return Err(invalid_owned(key, message));
        }
        if let Err((key, message)) = self.orders.validate() {
            return Err(invalid_owned(key, message));
        }
        if let Err((key, message)) = self.alpaca.validate() {
            return Err(invalid_owned(key, message));
        }
        if let Err(e) = tracing_subscriber::EnvFilter::try_new(&self.log.level) {
            return Err(invalid("log.level", format!("not a valid filter: {e}")));
        }
        Ok(())
    }
}

fn read_table(path: &Path, required: bool) -> Result<toml::Table, ConfigError> {
    let text = match std::fs::read_to_string(path) {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            if required {
                return Err(ConfigError::NotFound(path.to_path_buf()));
            }
            return Ok(toml::Table::new());
        }
        Err(source) => {
            return Err(ConfigError::Read {
                path: path.to_path_buf(),
                source,
            });
        }
    };
    // Parsing straight into Config gives errors with line, column and the offending key.
    toml::from_str::<Config>(&text).map_err(|source| ConfigError::Parse {
        path: path.to_path_buf(),
        source: Box::new(source),
    })?;
    toml::from_str(&text).map_err(|source| ConfigError::Parse {
        path: path.to_path_buf(),
        source: Box::new(source),
    })
}

/// Sets `section.key` from an environment variable and re-checks the whole configuration, so
/// an error names the variable that caused it.
fn apply_override(
    table: &mut toml::Table,
    var: &str,
    section: &str,
    key: &str,
    raw: &str,
) -> Result<Config, ConfigError> {
    // A value is read as TOML when it is one (numbers, booleans, arrays such as
    // `["DU1","DU2"]`), else as a plain string.
    let value = toml::from_str::<toml::Table>(&format!("v = {raw}"))
        .ok()
        .and_then(|mut t| t.remove("v"))
        .filter(|v| !v.is_table())
        .unwrap_or_else(|| toml::Value::String(raw.to_string()));
    let entry = table
        .entry(section.to_string())
        .or_insert_with(|| toml::Value::Table(toml::Table::new()));
    let Some(section_table) = entry.as_table_mut() else {
        return Err(ConfigError::Env {
            var: var.into(),
            message: format!("{section} is not a section"),
        });
    };
    section_table.insert(key.to_string(), value);
    table
        .clone()
        .try_into::<Config>()
        .map_err(|e| ConfigError::Env {
            var: var.into(),
            message: format!("{section}.{key}: {e}"),
        })
}

/// A connection string with its password replaced by `***`; URL (`postgres://u:p@h/db`) and
/// key=value (`password=p`) forms.
pub fn redact_conninfo(conninfo: &str) -> String {
    if let Some(scheme_end) = conninfo.find("://") {
        let rest = &conninfo[scheme_end + 3..];
        let authority_end = rest.find(['/', '?']).unwrap_or(rest.len());
        if let Some(at) = rest[..authority_end].rfind('@') {
            let userinfo = &rest[..at];
            if let Some(colon) = userinfo.find(':') {
                return format!(
                    "{}{}:***{}",
                    &conninfo[..scheme_end + 3],
                    &userinfo[..colon],
                    &rest[at..]
                );
            }
        }
        return conninfo.to_string();
    }
    conninfo
        .split_whitespace()
        .map(|part| match part.split_once('=') {
            Some((k, _)) if k.eq_ignore_ascii_case("password") => format!("{k}=***"),
            _ => part.to_string(),
        })
        .collect::<Vec<_>>()
        .join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redacts_url_and_keyvalue_passwords() {
        assert_eq!(
            redact_conninfo("postgres://trader:hunter2@db:5432/tg?sslmode=disable"),
            "postgres://trader:***@db:5432/tg?sslmode=disable"
        );
        assert_eq!(
            redact_conninfo("postgres://trader@db/tg"),
            "postgres://trader@db/tg"
        );
        assert_eq!(
            redact_conninfo("host=db user=trader password=hunter2 dbname=tg"),
            "host=db user=trader password=*** dbname=tg"
        );
    }

    #[test]
    fn env_values_are_typed_when_they_parse_as_toml() {
        let mut table = toml::Table::new();
        let config = apply_override(&mut table, "V", "supervisor", "max_restarts", "3").unwrap();
        assert_eq!(config.supervisor.max_restarts, 3);
        let config = apply_override(&mut table, "V", "api", "listen", "127.0.0.1:9100").unwrap();
        assert_eq!(config.api.listen.port(), 9100);
    }
}
