//! Data ingestion runs, their records and API calls, and the API payloads every part that talks
//! to an API stores (single-table inheritance: one `api_payloads` table, a `type` column).

use serde_json::Value;

use super::trade_log::is_sensitive_key;

mod api_calls;
mod payloads;
mod runs;

pub use api_calls::{ApiCall, ApiCallIds};
pub use payloads::{ApiPayload, ApiPayloadKind};
pub use runs::{
    IngestionRun, NewRun, RecordOperation, RecordsOutcome, RunCounts, RunRecord, RunStatus,
};

/// Longest text accepted for names, types, ids and endpoints.
const MAX_NAME_LEN: usize = 200;

/// A malformed ingestion input, with what is wrong in words a job author can act on.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct Invalid(pub String);

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
