//! The API's error answers (`{"code","message"}` with a status) and JSON body helpers, shared
//! by every route.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::de::DeserializeOwned;
use serde_json::json;

/// An error answer: `{"code","message"}` with its status.
#[derive(Debug)]
pub struct ApiError {
    status: StatusCode,
    code: &'static str,
    message: String,
}

impl ApiError {
    pub(crate) fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        Self {
            status,
            code,
            message: message.into(),
        }
    }

    pub(crate) fn invalid(message: impl Into<String>) -> Self {
        Self::new(StatusCode::UNPROCESSABLE_ENTITY, "invalid", message)
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (
            self.status,
            axum::Json(json!({"code": self.code, "message": self.message})),
        )
            .into_response()
    }
}

pub(crate) type Answer = Result<Response, ApiError>;

/// The deepest nesting of arrays and objects any JSON the API reads may have (bodies and
/// strategy messages); deeper input is refused with `too_deep` before it is parsed.
pub const MAX_JSON_DEPTH: usize = 64;

/// Whether `bytes`, read as JSON, nests arrays and objects deeper than `max` (brackets inside
/// strings do not count). A linear scan that allocates nothing, so deep input costs no stack.
pub fn nested_deeper_than(bytes: &[u8], max: usize) -> bool {
    let (mut depth, mut in_string, mut escaped) = (0usize, false, false);
    for &b in bytes {
        if in_string {
            match (escaped, b) {
                (true, _) => escaped = false,
                (false, b'\\') => escaped = true,
                (false, b'"') => in_string = false,
                _ => {}
            }
            continue;
        }
        match b {
            b'"' => in_string = true,
            b'[' | b'{' => {
                depth += 1;
                if depth > max {
                    return true;
                }
            }
            b']' | b'}' => depth = depth.saturating_sub(1),
            _ => {}
        }
    }
    false
}

/// The `too_deep` refusal, counted.
pub(crate) fn too_deep() -> ApiError {
    metrics::counter!("tradegate_api_refused_total", "reason" => "too_deep").increment(1);
    ApiError::new(
        StatusCode::BAD_REQUEST,
        "too_deep",
        format!("JSON nested deeper than {MAX_JSON_DEPTH} levels"),
    )
}

/// `bytes` with every `\u0000` escape inside a JSON string turned into `\ufffd`: PostgreSQL
/// holds no NUL in `text` or `jsonb`, and one NUL in a vendor's response must not cost the
/// record of the whole call (the same replacement the trail makes elsewhere). An escaped
/// backslash followed by `u0000` is text, and stays.
pub fn without_nul_escapes(bytes: &[u8]) -> std::borrow::Cow<'_, [u8]> {
    const NUL: &[u8] = b"\\u0000";
    if !bytes.windows(NUL.len()).any(|w| w == NUL) {
        return std::borrow::Cow::Borrowed(bytes);
    }
    let mut out = Vec::with_capacity(bytes.len());
    let (mut in_string, mut i) = (false, 0);
    while i < bytes.len() {
        let b = bytes[i];
        if in_string && b == b'\\' {
            if bytes[i..].starts_with(NUL) {
                out.extend_from_slice(b"\\ufffd");
                i += NUL.len();
            } else {
                // an escape of two characters (\\, \", \n, or the start of \uXXXX)
                out.extend_from_slice(&bytes[i..(i + 2).min(bytes.len())]);
                i += 2;
            }
            continue;
        }
        if b == b'"' {
            in_string = !in_string;
        }
        out.push(b);
        i += 1;
    }
    std::borrow::Cow::Owned(out)
}

pub(crate) fn parse_body<T: DeserializeOwned>(body: &[u8]) -> Result<T, ApiError> {
    if nested_deeper_than(body, MAX_JSON_DEPTH) {
        return Err(too_deep());
    }
    let body = without_nul_escapes(body);
    serde_json::from_slice(&body).map_err(|e| {
        if e.is_data() {
            ApiError::invalid(format!("request body: {e}"))
        } else {
            ApiError::new(
                StatusCode::BAD_REQUEST,
                "malformed",
                format!("request body: {e}"),
            )
        }
    })
}

pub(crate) fn json_answer<T: serde::Serialize>(status: StatusCode, value: T) -> Answer {
    Ok((status, axum::Json(value)).into_response())
}

/// Gives the router's own refusals (an oversize body, a bad query string, an unknown route or
/// method: plain text from axum) the API's `{"code","message"}` shape; counts an oversize body.
pub(crate) async fn coded_rejections(response: Response) -> Response {
    let status = response.status();
    let is_json = response
        .headers()
        .get(axum::http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/json"));
    if is_json || !(status.is_client_error() || status.is_server_error()) {
        return response;
    }
    let code = match status {
        StatusCode::BAD_REQUEST => "malformed",
        StatusCode::NOT_FOUND => "not_found",
        StatusCode::METHOD_NOT_ALLOWED => "method_not_allowed",
        StatusCode::PAYLOAD_TOO_LARGE => "too_large",
        StatusCode::UNSUPPORTED_MEDIA_TYPE => "unsupported_media_type",
        StatusCode::UNPROCESSABLE_ENTITY => "invalid",
        s if s.is_server_error() => "internal",
        _ => "refused",
    };
    if status == StatusCode::PAYLOAD_TOO_LARGE {
        metrics::counter!("tradegate_api_refused_total", "reason" => "body_too_large").increment(1);
    }
    let (parts, body) = response.into_parts();
    // an error text is short: a cap keeps a surprise from being read whole
    let text = axum::body::to_bytes(body, 4096).await.unwrap_or_default();
    let mut message = String::from_utf8_lossy(&text).trim().to_string();
    if message.is_empty() {
        message = status.canonical_reason().unwrap_or("refused").to_string();
    }
    let mut coded = ApiError::new(status, code, message).into_response();
    // headers the refusal set (Allow, Retry-After, ...) are kept
    for (name, value) in &parts.headers {
        if name != axum::http::header::CONTENT_TYPE && name != axum::http::header::CONTENT_LENGTH {
            coded.headers_mut().insert(name, value.clone());
        }
    }
    coded
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nul_escapes_become_replacement_characters_and_escaped_backslashes_stay() {
        let v: serde_json::Value =
            serde_json::from_slice(&without_nul_escapes(br#"{"a":"x\u0000y","\u0000":1}"#))
                .unwrap();
        assert_eq!(v["a"], "x\u{fffd}y");
        assert_eq!(v["\u{fffd}"], 1);
        let text = br#"{"a":"\\u0000"}"#;
        assert_eq!(&*without_nul_escapes(text), &text[..]);
        let v: serde_json::Value = serde_json::from_slice(&without_nul_escapes(text)).unwrap();
        assert_eq!(v["a"], "\\u0000");
    }

    #[test]
    fn nesting_is_measured_outside_strings_only() {
        assert!(!nested_deeper_than(br#"{"a":[1,{"b":2}]}"#, 3));
        assert!(nested_deeper_than(br#"{"a":[1,{"b":[]}]}"#, 3));
        assert!(!nested_deeper_than(br#"{"a":"[[[[[[[[[[[[{{{{"}"#, 1));
        assert!(!nested_deeper_than(br#"{"a":"\"[[[[[[["}"#, 1));
        assert!(nested_deeper_than(&[b'['; 100_000], MAX_JSON_DEPTH));
        assert!(!nested_deeper_than(b"", 0));
    }
}
