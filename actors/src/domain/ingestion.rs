//! Data ingestion runs, their records and API calls, and the API payloads every part that talks
//! to an API stores (single-table inheritance: one `api_payloads` table, a `type` column).

use std::fmt;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use uuid::Uuid;

use super::trade_log::is_sensitive_key;

/// Longest text accepted for names, types, ids and endpoints.
const MAX_NAME_LEN: usize = 200;

/// A malformed ingestion input, with what is wrong in words a job author can act on.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct Invalid(pub String);

/// Where a run is: running, then exactly one of completed or failed, and never anything else.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RunStatus {
    /// Started, not finished
    Running,
    /// Finished successfully (terminal)
    Completed,
    /// Finished with an error (terminal)
    Failed,
}

impl RunStatus {
    /// The SQL spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Running => "running",
            Self::Completed => "completed",
            Self::Failed => "failed",
        }
    }

    /// Parses the SQL spelling.
    pub fn parse(text: &str) -> Option<Self> {
        match text {
            "running" => Some(Self::Running),
            "completed" => Some(Self::Completed),
            "failed" => Some(Self::Failed),
            _ => None,
        }
    }

    /// Whether `self -> next` is a transition of the state machine (the database's trigger
    /// enforces the same rule).
    pub fn can_become(self, next: Self) -> bool {
        matches!(
            (self, next),
            (Self::Running, Self::Completed) | (Self::Running, Self::Failed)
        )
    }

    /// Whether no transition leaves this status.
    pub fn is_terminal(self) -> bool {
        self != Self::Running
    }
}

impl fmt::Display for RunStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The counts a finished run reports (the keys of a job's summary line).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RunCounts {
    /// Records the job received from its source
    pub fetched: u32,
    /// Records it created
    pub created: u32,
    /// Records it updated
    pub updated: u32,
    /// Records it left alone
    pub skipped: u32,
}

impl RunCounts {
    /// Reads a job's summary line: one JSON object with the four counts as non-negative
    /// integers (other keys are ignored, a missing key is an error).
    pub fn from_summary_line(line: &str) -> Result<Self, Invalid> {
        let value: Value = serde_json::from_str(line.trim())
            .map_err(|e| Invalid(format!("the summary line is not JSON: {e}")))?;
        let Value::Object(map) = value else {
            return Err(Invalid("the summary line is not a JSON object".into()));
        };
        let count = |key: &str| -> Result<u32, Invalid> {
            let v = map
                .get(key)
                .ok_or_else(|| Invalid(format!("the summary line has no \"{key}\"")))?;
            v.as_u64()
                .and_then(|n| u32::try_from(n).ok())
                .ok_or_else(|| {
                    Invalid(format!(
                        "\"{key}\" in the summary line must be a non-negative integer, got {v}"
                    ))
                })
        };
        Ok(Self {
            fetched: count("fetched")?,
            created: count("created")?,
            updated: count("updated")?,
            skipped: count("skipped")?,
        })
    }
}

/// A run as stored.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct IngestionRun {
    /// Surrogate key (what foreign keys hold)
    pub id: i64,
    /// The run's public id
    pub run_id: Uuid,
    /// The job, e.g. `congress.daily`
    pub task_name: String,
    /// Where its data came from, e.g. `quiverquant`
    pub data_source: String,
    /// running, completed or failed
    pub status: RunStatus,
    /// fetched/created/updated/skipped
    pub counts: RunCounts,
    /// When it started
    pub started_at: DateTime<Utc>,
    /// When it completed (the moment its data became available)
    pub completed_at: Option<DateTime<Utc>>,
    /// When it failed
    pub failed_at: Option<DateTime<Utc>>,
    /// Why it failed
    pub error_message: Option<String>,
    /// Structured failure context (exit status, stderr tail, ...)
    pub error_details: Option<Value>,
    /// Anything the job attached at start (host, command, arguments, ...)
    pub metadata: Value,
}

/// What starting a run takes.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NewRun {
    /// The job name
    pub task: String,
    /// The data source
    pub source: String,
    /// Free-form context stored with the run (must be a JSON object)
    #[serde(default)]
    pub metadata: Option<Value>,
}

impl NewRun {
    /// A run of `task` reading `source`.
    pub fn new(task: impl Into<String>, source: impl Into<String>) -> Self {
        Self {
            task: task.into(),
            source: source.into(),
            metadata: None,
        }
    }

    /// Checks the names and the metadata.
    pub fn validate(&self) -> Result<(), Invalid> {
        check_name("task", &self.task)?;
        check_name("source", &self.source)?;
        match &self.metadata {
            None | Some(Value::Object(_)) => Ok(()),
            Some(_) => Err(Invalid("metadata must be a JSON object".into())),
        }
    }
}

/// What a run did to one record.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RecordOperation {
    /// The run created it
    Created,
    /// The run changed it
    Updated,
    /// The run saw it and left it alone
    Skipped,
}

impl RecordOperation {
    /// The SQL spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Created => "created",
            Self::Updated => "updated",
            Self::Skipped => "skipped",
        }
    }

    /// Parses the SQL spelling.
    pub fn parse(text: &str) -> Option<Self> {
        match text {
            "created" => Some(Self::Created),
            "updated" => Some(Self::Updated),
            "skipped" => Some(Self::Skipped),
            _ => None,
        }
    }
}

/// One record a run touched (the junction row): a polymorphic reference, what was done, and
/// optionally the symbol and time it is about, so reports can find a symbol's data.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RunRecord {
    /// The kind of record, e.g. `QuiverTrade`
    pub record_type: String,
    /// Its id in its own table or system
    pub record_id: String,
    /// created, updated or skipped
    pub operation: RecordOperation,
    /// The instrument it concerns
    #[serde(default)]
    pub symbol: Option<String>,
    /// When the thing it records happened
    #[serde(default)]
    pub occurred_at: Option<DateTime<Utc>>,
}

impl RunRecord {
    /// A record without symbol or time.
    pub fn new(
        record_type: impl Into<String>,
        record_id: impl Into<String>,
        operation: RecordOperation,
    ) -> Self {
        Self {
            record_type: record_type.into(),
            record_id: record_id.into(),
            operation,
            symbol: None,
            occurred_at: None,
        }
    }

    /// Adds the symbol.
    pub fn with_symbol(mut self, symbol: impl Into<String>) -> Self {
        self.symbol = Some(symbol.into());
        self
    }

    /// Checks the reference and the symbol.
    pub fn validate(&self) -> Result<(), Invalid> {
        check_name("record_type", &self.record_type)?;
        check_name("record_id", &self.record_id)?;
        if let Some(symbol) = &self.symbol {
            check_name("symbol", symbol)?;
        }
        Ok(())
    }
}

/// How a batch of records landed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RecordsOutcome {
    /// Records in the batch
    pub received: u64,
    /// New junction rows
    pub inserted: u64,
    /// Records the run already had (or that appeared twice in the batch): kept once
    pub duplicates: u64,
}

/// The discriminator of `api_payloads`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum ApiPayloadKind {
    /// What was sent
    ApiRequest,
    /// What came back
    ApiResponse,
}

impl ApiPayloadKind {
    /// The SQL spelling (the STI type name).
    pub fn as_str(self) -> &'static str {
        match self {
            Self::ApiRequest => "ApiRequest",
            Self::ApiResponse => "ApiResponse",
        }
    }

    /// Parses the SQL spelling.
    pub fn parse(text: &str) -> Option<Self> {
        match text {
            "ApiRequest" => Some(Self::ApiRequest),
            "ApiResponse" => Some(Self::ApiResponse),
            _ => None,
        }
    }
}

const HTTP_METHODS: [&str; 7] = ["GET", "POST", "PUT", "PATCH", "DELETE", "HEAD", "OPTIONS"];

/// One stored API request or response. A request payload holds `endpoint`, `method` and
/// optionally `params` and `body`; a response payload holds `status_code` and optionally `body`
/// and `headers`. Construction checks the required keys and strips credentials at any depth.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ApiPayload {
    /// ApiRequest or ApiResponse
    pub kind: ApiPayloadKind,
    /// alpaca, ibkr, quiverquant, ...
    pub source: String,
    /// The JSON document
    pub payload: Value,
    /// When it was sent or received
    pub captured_at: DateTime<Utc>,
}

impl ApiPayload {
    /// A request payload; it must carry `endpoint` (a non-empty string) and `method` (an HTTP
    /// method), and `params`, when present, must be an object.
    pub fn request(source: impl Into<String>, payload: Value) -> Result<Self, Invalid> {
        let source = source.into();
        check_name("source", &source)?;
        let Value::Object(map) = &payload else {
            return Err(Invalid(
                "an ApiRequest payload must be a JSON object".into(),
            ));
        };
        match map.get("endpoint") {
            Some(Value::String(e)) if !e.trim().is_empty() => {}
            Some(_) => {
                return Err(Invalid(
                    "an ApiRequest's \"endpoint\" must be a non-empty string".into(),
                ));
            }
            None => return Err(Invalid("an ApiRequest must carry \"endpoint\"".into())),
        }
        match map.get("method") {
            Some(Value::String(m)) if HTTP_METHODS.contains(&m.as_str()) => {}
            Some(other) => {
                return Err(Invalid(format!(
                    "an ApiRequest's \"method\" must be one of {}, got {other}",
                    HTTP_METHODS.join(", ")
                )));
            }
            None => return Err(Invalid("an ApiRequest must carry \"method\"".into())),
        }
        if let Some(params) = map.get("params")
            && !params.is_object()
            && !params.is_null()
        {
            return Err(Invalid(
                "an ApiRequest's \"params\" must be a JSON object".into(),
            ));
        }
        Ok(Self {
            kind: ApiPayloadKind::ApiRequest,
            source,
            payload: redact_value(payload),
            captured_at: Utc::now(),
        })
    }

    /// A response payload; it must carry `status_code` (an integer from 100 to 599).
    pub fn response(source: impl Into<String>, payload: Value) -> Result<Self, Invalid> {
        let source = source.into();
        check_name("source", &source)?;
        let Value::Object(map) = &payload else {
            return Err(Invalid(
                "an ApiResponse payload must be a JSON object".into(),
            ));
        };
        match map.get("status_code") {
            None => return Err(Invalid("an ApiResponse must carry \"status_code\"".into())),
            Some(v) if !v.as_u64().is_some_and(|c| (100..=599).contains(&c)) => {
                return Err(Invalid(format!(
                    "an ApiResponse's \"status_code\" must be an integer from 100 to 599, got {v}"
                )));
            }
            Some(_) => {}
        }
        Ok(Self {
            kind: ApiPayloadKind::ApiResponse,
            source,
            payload: redact_value(payload),
            captured_at: Utc::now(),
        })
    }

    /// Sets when the payload was sent or received (default: when it was built).
    pub fn captured_at(mut self, at: DateTime<Utc>) -> Self {
        self.captured_at = at;
        self
    }

    /// A request's endpoint.
    pub fn endpoint(&self) -> Option<&str> {
        self.request_field("endpoint").and_then(Value::as_str)
    }

    /// A request's HTTP method.
    pub fn http_method(&self) -> Option<&str> {
        self.request_field("method").and_then(Value::as_str)
    }

    /// A request's parameters (an empty object when it has none).
    pub fn params(&self) -> Option<serde_json::Map<String, Value>> {
        if self.kind != ApiPayloadKind::ApiRequest {
            return None;
        }
        Some(
            self.payload
                .get("params")
                .and_then(Value::as_object)
                .cloned()
                .unwrap_or_default(),
        )
    }

    /// A response's HTTP status.
    pub fn status_code(&self) -> Option<u16> {
        self.response_field("status_code")
            .and_then(Value::as_u64)
            .and_then(|c| u16::try_from(c).ok())
    }

    /// A response with a 2xx status.
    pub fn is_success(&self) -> bool {
        self.status_code().is_some_and(|c| (200..300).contains(&c))
    }

    /// A response with a 4xx or 5xx status.
    pub fn is_error(&self) -> bool {
        self.status_code().is_some_and(|c| c >= 400)
    }

    /// A failed response's message: the body's `message` or `error`, when it has one.
    pub fn error_message(&self) -> Option<&str> {
        if !self.is_error() {
            return None;
        }
        let body = self.response_field("body")?;
        body.get("message")
            .or_else(|| body.get("error"))
            .and_then(Value::as_str)
    }

    fn request_field(&self, key: &str) -> Option<&Value> {
        (self.kind == ApiPayloadKind::ApiRequest)
            .then(|| self.payload.get(key))
            .flatten()
    }

    fn response_field(&self, key: &str) -> Option<&Value> {
        (self.kind == ApiPayloadKind::ApiResponse)
            .then(|| self.payload.get(key))
            .flatten()
    }
}

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

fn default_method() -> String {
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

    fn source<'a>(&'a self, default_source: &'a str) -> &'a str {
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

/// `value` with every sensitive key (API keys, secrets, tokens, signatures) removed at any
/// depth.
pub fn redact_value(value: Value) -> Value {
    match value {
        Value::Object(map) => Value::Object(
            map.into_iter()
                .filter(|(k, _)| !is_sensitive_key(k))
                .map(|(k, v)| (k, redact_value(v)))
                .collect(),
        ),
        Value::Array(items) => Value::Array(items.into_iter().map(redact_value).collect()),
        other => other,
    }
}

fn check_name(what: &str, value: &str) -> Result<(), Invalid> {
    if value.trim().is_empty() {
        return Err(Invalid(format!("{what} must not be empty")));
    }
    if value.len() > MAX_NAME_LEN {
        return Err(Invalid(format!(
            "{what} is longer than {MAX_NAME_LEN} bytes ({} bytes)",
            value.len()
        )));
    }
    if value.chars().any(char::is_control) {
        return Err(Invalid(format!("{what} must not hold control characters")));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn only_running_runs_change_and_only_to_a_terminal_status() {
        use RunStatus::*;
        let all = [Running, Completed, Failed];
        for from in all {
            for to in all {
                let legal = from == Running && to != Running;
                assert_eq!(from.can_become(to), legal, "{from} -> {to}");
            }
        }
        assert!(!Running.is_terminal());
        assert!(Completed.is_terminal() && Failed.is_terminal());
        for s in all {
            assert_eq!(RunStatus::parse(s.as_str()), Some(s));
        }
        assert_eq!(RunStatus::parse("done"), None);
    }

    #[test]
    fn a_request_needs_endpoint_and_method() {
        let ok = ApiPayload::request("quiver", json!({"endpoint": "/v1/x", "method": "GET"}))
            .expect("valid");
        assert_eq!(ok.endpoint(), Some("/v1/x"));
        assert_eq!(ok.http_method(), Some("GET"));
        assert_eq!(ok.params(), Some(serde_json::Map::new()));
        assert_eq!(ok.status_code(), None, "a request has no status");
        let missing = ApiPayload::request("quiver", json!({"method": "GET"})).unwrap_err();
        assert!(missing.0.contains("endpoint"), "{missing}");
        let no_method = ApiPayload::request("quiver", json!({"endpoint": "/x"})).unwrap_err();
        assert!(no_method.0.contains("method"), "{no_method}");
        let bad_method =
            ApiPayload::request("quiver", json!({"endpoint": "/x", "method": "FETCH"}))
                .unwrap_err();
        assert!(bad_method.0.contains("FETCH"), "{bad_method}");
        let bad_params = ApiPayload::request(
            "quiver",
            json!({"endpoint": "/x", "method": "GET", "params": [1]}),
        )
        .unwrap_err();
        assert!(bad_params.0.contains("params"), "{bad_params}");
        assert!(ApiPayload::request("quiver", json!([1, 2])).is_err());
        assert!(ApiPayload::request("", json!({"endpoint": "/x", "method": "GET"})).is_err());
    }

    #[test]
    fn a_response_needs_a_status_and_knows_success_from_error() {
        assert!(ApiPayload::response("alpaca", json!({"body": {}})).is_err());
        assert!(ApiPayload::response("alpaca", json!({"status_code": 42})).is_err());
        assert!(ApiPayload::response("alpaca", json!({"status_code": "200"})).is_err());
        let ok = ApiPayload::response("alpaca", json!({"status_code": 201, "body": {}})).unwrap();
        assert!(ok.is_success() && !ok.is_error());
        assert_eq!(ok.error_message(), None);
        assert_eq!(ok.endpoint(), None, "a response has no endpoint");
        let rejected = ApiPayload::response(
            "alpaca",
            json!({"status_code": 403, "body": {"code": 40310000, "message": "insufficient buying power"}}),
        )
        .unwrap();
        assert!(rejected.is_error() && !rejected.is_success());
        assert_eq!(rejected.status_code(), Some(403));
        assert_eq!(rejected.error_message(), Some("insufficient buying power"));
        let redirect = ApiPayload::response("alpaca", json!({"status_code": 302})).unwrap();
        assert!(!redirect.is_success() && !redirect.is_error());
    }

    #[test]
    fn credentials_never_reach_a_stored_payload() {
        let p = ApiPayload::request(
            "quiver",
            json!({"endpoint": "/x", "method": "GET",
                   "params": {"api_key": "k", "ticker": "AAPL"},
                   "headers": {"Authorization": "Bearer t", "Accept": "json"},
                   "body": [{"secret": "s", "n": 1}]}),
        )
        .unwrap();
        let text = p.payload.to_string();
        for secret in ["api_key", "Bearer", "Authorization", "\"secret\""] {
            assert!(!text.contains(secret), "{secret} leaked: {text}");
        }
        assert!(text.contains("AAPL") && text.contains("Accept") && text.contains("\"n\":1"));
    }

    #[test]
    fn summary_lines_are_strict_about_counts() {
        let c = RunCounts::from_summary_line(
            r#" {"fetched":10,"created":4,"updated":3,"skipped":3,"note":"x"} "#,
        )
        .unwrap();
        assert_eq!(
            c,
            RunCounts {
                fetched: 10,
                created: 4,
                updated: 3,
                skipped: 3
            }
        );
        for (line, needle) in [
            ("done", "not JSON"),
            ("[1]", "not a JSON object"),
            (r#"{"fetched":1,"created":0,"updated":0}"#, "skipped"),
            (
                r#"{"fetched":-1,"created":0,"updated":0,"skipped":0}"#,
                "non-negative",
            ),
            (
                r#"{"fetched":1.5,"created":0,"updated":0,"skipped":0}"#,
                "fetched",
            ),
        ] {
            let e = RunCounts::from_summary_line(line).unwrap_err();
            assert!(e.0.contains(needle), "{line}: {e}");
        }
    }

    #[test]
    fn api_calls_need_a_status_or_an_error() {
        let mut call: ApiCall =
            serde_json::from_value(json!({"endpoint": "/v1/trades", "status_code": 200})).unwrap();
        assert_eq!(call.method, "GET");
        call.validate().unwrap();
        assert!(call.response_payload("q").unwrap().is_some());
        call.status_code = None;
        assert!(call.validate().is_err());
        call.error = Some("timed out".into());
        call.validate().unwrap();
        assert!(call.response_payload("q").unwrap().is_none());
        let unknown: Result<ApiCall, _> =
            serde_json::from_value(json!({"endpoint": "/x", "status": 200}));
        assert!(unknown.is_err(), "unknown keys are refused");
    }

    #[test]
    fn records_need_a_type_and_an_id() {
        RunRecord::new("QuiverTrade", "1", RecordOperation::Created)
            .validate()
            .unwrap();
        assert!(
            RunRecord::new("", "1", RecordOperation::Created)
                .validate()
                .is_err()
        );
        assert!(
            RunRecord::new("T", " ", RecordOperation::Created)
                .validate()
                .is_err()
        );
        assert!(
            RunRecord::new("T", "1", RecordOperation::Created)
                .with_symbol("A\nB")
                .validate()
                .is_err()
        );
    }
}
