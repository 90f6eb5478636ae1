//! Stored API payloads: request or response, checked and free of credentials, with their
//! accessors.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::{Invalid, check_name, redact_value};

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

pub(super) const HTTP_METHODS: [&str; 7] =
    ["GET", "POST", "PUT", "PATCH", "DELETE", "HEAD", "OPTIONS"];

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

    pub(super) fn request_field(&self, key: &str) -> Option<&Value> {
        (self.kind == ApiPayloadKind::ApiRequest)
            .then(|| self.payload.get(key))
            .flatten()
    }

    pub(super) fn response_field(&self, key: &str) -> Option<&Value> {
        (self.kind == ApiPayloadKind::ApiResponse)
            .then(|| self.payload.get(key))
            .flatten()
    }
}
