//! The payload of a `trades.sync` job: the overrides the trades-and-executions sync spec names
//! (`host`, `port`, `client_id`, `connect_timeout_seconds`, `lookback_days`), each checked, so a
//! bad value fails the job with its key named before anything is fetched or written. Any other
//! key is refused too: a mistyped override fails loudly instead of being ignored. A job whose
//! connection is the session's own syncs through the session.

use serde_json::Value;

/// A `trades.sync` job's overrides; each `None` keeps the account's configuration.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct JobOverrides {
    /// TWS or IB Gateway host
    pub host: Option<String>,
    /// Its API port
    pub port: Option<u16>,
    /// The API client id to connect with
    pub client_id: Option<i64>,
    /// How long the connect may take
    pub connect_timeout_secs: Option<u64>,
    /// How many days back to fetch
    pub lookback_days: Option<u32>,
}

/// Why a job's payload was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum JobPayloadError {
    /// The payload is not a JSON object.
    #[error("a trades.sync payload must be a JSON object")]
    NotAnObject,
    /// A key the job does not take.
    #[error(
        "unsupported trades.sync payload key {0:?} (it takes host, port, client_id, \
         connect_timeout_seconds and lookback_days)"
    )]
    Unsupported(String),
    /// A value out of its range or of the wrong type.
    #[error("{key} must be {expected}, got {got}")]
    Invalid {
        /// The key
        key: &'static str,
        /// What it must be
        expected: &'static str,
        /// What it was
        got: String,
    },
}

/// The longest host name DNS allows.
const MAX_HOST: usize = 253;

fn invalid(key: &'static str, expected: &'static str, got: &Value) -> JobPayloadError {
    JobPayloadError::Invalid {
        key,
        expected,
        got: got.to_string(),
    }
}

/// An integer in `range`, or why not.
fn integer(
    key: &'static str,
    expected: &'static str,
    value: &Value,
    range: std::ops::RangeInclusive<i64>,
) -> Result<i64, JobPayloadError> {
    value
        .as_i64()
        .filter(|n| range.contains(n))
        .ok_or_else(|| invalid(key, expected, value))
}

impl JobOverrides {
    /// The overrides of `payload`, every key checked.
    pub fn parse(payload: &Value) -> Result<Self, JobPayloadError> {
        let map = payload.as_object().ok_or(JobPayloadError::NotAnObject)?;
        let mut overrides = Self::default();
        for (key, value) in map {
            match key.as_str() {
                "host" => {
                    let host = value
                        .as_str()
                        .filter(|h| {
                            !h.is_empty()
                                && h.len() <= MAX_HOST
                                && !h.chars().any(|c| c.is_whitespace() || c.is_control())
                        })
                        .ok_or_else(|| {
                            invalid(
                                "host",
                                "a host name or address (1 to 253 characters)",
                                value,
                            )
                        })?;
                    overrides.host = Some(host.to_string());
                }
                "port" => {
                    let port = integer("port", "a port from 1 to 65535", value, 1..=65_535)?;
                    overrides.port = u16::try_from(port).ok();
                }
                "client_id" => {
                    let id = integer(
                        "client_id",
                        "a client id from 0 to 2147483647",
                        value,
                        0..=i64::from(i32::MAX),
                    )?;
                    overrides.client_id = Some(id);
                }
                "connect_timeout_seconds" => {
                    let secs = integer(
                        "connect_timeout_seconds",
                        "seconds from 1 to 300",
                        value,
                        1..=300,
                    )?;
                    overrides.connect_timeout_secs = u64::try_from(secs).ok();
                }
                "lookback_days" => {
                    let days = integer("lookback_days", "days from 1 to 365", value, 1..=365)?;
                    overrides.lookback_days = u32::try_from(days).ok();
                }
                other => return Err(JobPayloadError::Unsupported(other.to_string())),
            }
        }
        Ok(overrides)
    }

    /// The connection the job asks for when it is not the session's own: host, port and
    /// client id, what the job does not name taken from `session` (on another TWS the
    /// session's client id, the one TWS knows as the Master API client). `None`: the job
    /// syncs through the session (it names no connection, or the session's own; a connect
    /// timeout alone changes no connection).
    pub fn connection(&self, session: &super::SessionConfig) -> Option<(String, u16, i64)> {
        let host = self.host.clone().unwrap_or_else(|| session.host.clone());
        let port = self.port.unwrap_or(session.port);
        let client_id = self.client_id.unwrap_or(session.client_id);
        let own = host == session.host && port == session.port && client_id == session.client_id;
        (!own).then_some((host, port, client_id))
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn every_override_is_taken_in_range() {
        let o = JobOverrides::parse(&json!({"host": "127.0.0.1", "port": 4002, "client_id": 7,
            "connect_timeout_seconds": 5, "lookback_days": 3}))
        .unwrap();
        assert_eq!(
            o,
            JobOverrides {
                host: Some("127.0.0.1".into()),
                port: Some(4002),
                client_id: Some(7),
                connect_timeout_secs: Some(5),
                lookback_days: Some(3),
            }
        );
        let session = crate::ibkr_syncer::SessionConfig {
            host: "127.0.0.1".into(),
            port: 4002,
            client_id: 7,
            zone: None,
            accounts: vec!["DU1".into()],
        };
        // the session's own connection, named or not, is the session
        assert_eq!(o.connection(&session), None);
        let only_days = JobOverrides::parse(&json!({"lookback_days": 365})).unwrap();
        assert_eq!(only_days.connection(&session), None);
        let timeout = JobOverrides::parse(&json!({"connect_timeout_seconds": 3})).unwrap();
        assert_eq!(timeout.connection(&session), None);
        // another TWS: the session's client id unless the job names one
        let other = JobOverrides::parse(&json!({"port": 4001})).unwrap();
        assert_eq!(
            other.connection(&session),
            Some(("127.0.0.1".into(), 4001, 7))
        );
        let other_id = JobOverrides::parse(&json!({"client_id": 8})).unwrap();
        assert_eq!(
            other_id.connection(&session),
            Some(("127.0.0.1".into(), 4002, 8))
        );
        assert_eq!(
            JobOverrides::parse(&json!({})).unwrap(),
            JobOverrides::default()
        );
    }

    #[test]
    fn a_bad_value_is_refused_with_its_key() {
        for (payload, key) in [
            (json!({"port": 0}), "port"),
            (json!({"port": 65_536}), "port"),
            (json!({"port": "4002"}), "port"),
            (json!({"port": 4002.5}), "port"),
            (json!({"host": ""}), "host"),
            (json!({"host": "a b"}), "host"),
            (json!({"host": 1}), "host"),
            (json!({"client_id": -1}), "client_id"),
            (json!({"client_id": 2_147_483_648_i64}), "client_id"),
            (
                json!({"connect_timeout_seconds": 0}),
                "connect_timeout_seconds",
            ),
            (
                json!({"connect_timeout_seconds": 301}),
                "connect_timeout_seconds",
            ),
            (json!({"lookback_days": 0}), "lookback_days"),
            (json!({"lookback_days": 366}), "lookback_days"),
        ] {
            match JobOverrides::parse(&payload) {
                Err(JobPayloadError::Invalid { key: k, .. }) => assert_eq!(k, key, "{payload}"),
                other => panic!("{payload}: {other:?}"),
            }
        }
        assert_eq!(
            JobOverrides::parse(&json!({"hots": "x"})),
            Err(JobPayloadError::Unsupported("hots".into()))
        );
        assert_eq!(
            JobOverrides::parse(&json!([1])),
            Err(JobPayloadError::NotAnObject)
        );
    }
}
