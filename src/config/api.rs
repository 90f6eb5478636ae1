//! The `[api]` section: the listener, the tokens and their roles, and the section's checks.

use std::fmt;
use std::net::SocketAddr;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

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
