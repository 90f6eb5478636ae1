//! Secrets: a string `Debug` and `Display` hide, the Alpaca credentials, and a connection
//! string's password redacted.

use std::fmt;

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
