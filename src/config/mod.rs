//! Configuration: `config.toml` (every key documented there), overridden by `TRADEGATE_*`
//! environment variables and `DATABASE_URL`. Broker credentials come only from the environment
//! and never appear in `Debug` output.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

mod api;
mod load;
mod secret;
mod sections;

pub use api::{ApiConfig, ApiTokenConfig, Role};
pub use secret::{AlpacaCredentials, Secret, redact_conninfo};
pub use sections::{DatabaseConfig, LogConfig, SupervisorConfig};

/// Prefix of configuration overrides: `TRADEGATE_<SECTION>__<KEY>=value`, e.g.
/// `TRADEGATE_API__LISTEN=127.0.0.1:9000`. Other `TRADEGATE_*` variables are not config keys.
pub const ENV_PREFIX: &str = "TRADEGATE_";

/// The environment variable holding the IB Flex Web Service token.
pub const FLEX_TOKEN_ENV: &str = "TRADEGATE_IBKR_FLEX_TOKEN";

/// The variable holding the audit writer key (else `[audit] writer_key_file`).
pub const AUDIT_KEY_ENV: &str = "TRADEGATE_AUDIT_KEY";

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
    /// The audit trail's seals and writer key
    pub audit: tradegate_actors::reporter::AuditConfig,
    /// How brokers and webhooks are verified (TLS)
    pub tls: tradegate_actors::tls::TlsConfig,
    /// How position windows are reconciled with the fills on record
    pub reconcile: tradegate_actors::reconciliation::ReconcileConfig,
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

#[cfg(test)]
mod tests {
    use super::secret::*;
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
