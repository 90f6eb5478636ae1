//! The `[database]`, `[supervisor]` and `[log]` sections, their defaults and helpers.

use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

use super::secret::redact_conninfo;
use serde::{Deserialize, Serialize};

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
