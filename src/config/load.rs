//! Loading the configuration: `config.toml` read, `TRADEGATE_*` overrides and credentials
//! applied from the environment, the values checked.

use std::path::{Path, PathBuf};

use super::secret::{AlpacaCredentials, Secret};
use super::{Config, ConfigError, ENV_PREFIX, FLEX_TOKEN_ENV, apply_override};

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
        if let Err((key, message)) = self.audit.validate() {
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

pub(super) fn read_table(path: &Path, required: bool) -> Result<toml::Table, ConfigError> {
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
