//! API calls reported by data jobs, the request and response payloads they become, and the ids
//! they are stored under.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::payloads::ApiPayload;
use super::{Invalid, check_name};

/// One API call a data job made, as it reports it: the request, and the response or the error
/// that stood in for one. Becomes an `ApiRequest`, an `ApiResponse` (when there was one) and an
/// `api_call_logs` row.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ApiCall {
    /// The API, e.g. `quiverquant` (default: the run's data source)
    #[serde(default)]
    pub source: Option<String>,
    /// Path or URL of the endpoint
    pub endpoint: String,
    /// HTTP method (default GET)
    #[serde(default = "default_method")]
    pub method: String,
    /// Query or form parameters
    #[serde(default)]
    pub params: Option<Value>,
    /// Request body
    #[serde(default)]
    pub request_body: Option<Value>,
    /// HTTP status of the response; absent when there was none (timeout, connection error)
    #[serde(default)]
    pub status_code: Option<u16>,
    /// Response body
    #[serde(default)]
    pub response_body: Option<Value>,
    /// Response headers
    #[serde(default)]
    pub response_headers: Option<Value>,
    /// How long the call took, in milliseconds
    #[serde(default)]
    pub duration_ms: Option<u32>,
    /// What went wrong, when something did
    #[serde(default)]
    pub error: Option<String>,
    /// When the request was sent (default: when it was logged)
    #[serde(default)]
    pub requested_at: Option<DateTime<Utc>>,
}

pub(super) fn default_method() -> String {
    "GET".into()
}

impl ApiCall {
    /// The stored request payload.
    pub fn request_payload(&self, default_source: &str) -> Result<ApiPayload, Invalid> {
        let mut map = serde_json::Map::new();
        map.insert("endpoint".into(), Value::String(self.endpoint.clone()));
        map.insert(
            "method".into(),
            Value::String(self.method.to_ascii_uppercase()),
        );
        if let Some(params) = &self.params {
            map.insert("params".into(), params.clone());
        }
        if let Some(body) = &self.request_body {
            map.insert("body".into(), body.clone());
        }
        let payload = ApiPayload::request(self.source(default_source), Value::Object(map))?;
        Ok(match self.requested_at {
            Some(at) => payload.captured_at(at),
            None => payload,
        })
    }

    /// The stored response payload, when there was a response.
    pub fn response_payload(&self, default_source: &str) -> Result<Option<ApiPayload>, Invalid> {
        let Some(status) = self.status_code else {
            return Ok(None);
        };
        let mut map = serde_json::Map::new();
        map.insert("status_code".into(), Value::from(status));
        if let Some(body) = &self.response_body {
            map.insert("body".into(), body.clone());
        }
        if let Some(headers) = &self.response_headers {
            map.insert("headers".into(), headers.clone());
        }
        let payload = ApiPayload::response(self.source(default_source), Value::Object(map))?;
        Ok(Some(match (self.requested_at, self.duration_ms) {
            (Some(at), Some(ms)) => {
                payload.captured_at(at + chrono::Duration::milliseconds(i64::from(ms)))
            }
            _ => payload,
        }))
    }

    /// Checks the call as a whole (both payloads are checked when built).
    pub fn validate(&self) -> Result<(), Invalid> {
        check_name("endpoint", &self.endpoint)?;
        if let Some(source) = &self.source {
            check_name("source", source)?;
        }
        if self.status_code.is_none() && self.error.is_none() {
            return Err(Invalid(format!(
                "API call to {}: give its status_code, or an error when there was no response",
                self.endpoint
            )));
        }
        if let Some(status) = self.status_code
            && !(100..=599).contains(&status)
        {
            return Err(Invalid(format!(
                "API call to {}: status_code must be from 100 to 599, got {status}",
                self.endpoint
            )));
        }
        Ok(())
    }

    pub(super) fn source<'a>(&'a self, default_source: &'a str) -> &'a str {
        self.source.as_deref().unwrap_or(default_source)
    }
}

/// The ids an API call was stored under.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct ApiCallIds {
    /// The `api_call_logs` row
    pub call_log_id: i64,
    /// The `ApiRequest` payload
    pub request_payload_id: i64,
    /// The `ApiResponse` payload, when there was a response
    pub response_payload_id: Option<i64>,
}
