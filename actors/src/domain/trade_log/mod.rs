//! Trade-log events (spec `trade-logs.md`): the typed columns, the event taxonomy, constructors
//! for each mapping of the spec, and the credential-free encoding of HTTP requests.

use std::time::{SystemTime, UNIX_EPOCH};

use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

mod columns;
mod events;
mod redact;

pub use columns::{EventType, ExecutionFields, OrderIds, RawJson, Side, UnknownCode};
pub use redact::{encode_http_request, is_sensitive_key, redact_json};

/// Microseconds since the Unix epoch, now (UTC).
pub fn now_us() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_micros()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

/// One row of `tradelog`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TradeLogEvent {
    /// Time-ordered id (UUID v7); replays deduplicate on it
    pub event_id: Uuid,
    /// When the event happened here, microseconds since the epoch (UTC)
    pub local_ts_us: i64,
    /// When the venue says it happened
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exchange_ts_us: Option<i64>,
    /// Classification
    pub event_type: EventType,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[allow(missing_docs)]
    pub req_id: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[allow(missing_docs)]
    pub cl_ord_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[allow(missing_docs)]
    pub native_ord_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[allow(missing_docs)]
    pub market_id: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[allow(missing_docs)]
    pub account_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[allow(missing_docs)]
    pub symbol: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[allow(missing_docs)]
    pub exec_type: Option<i16>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[allow(missing_docs)]
    pub ord_status: Option<i16>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[allow(missing_docs)]
    pub side: Option<Side>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[allow(missing_docs)]
    pub is_taker: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[allow(missing_docs)]
    pub last_px: Option<Decimal>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[allow(missing_docs)]
    pub last_qty: Option<Decimal>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[allow(missing_docs)]
    pub leaves_qty: Option<Decimal>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[allow(missing_docs)]
    pub ord_px: Option<Decimal>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[allow(missing_docs)]
    pub ord_qty: Option<Decimal>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[allow(missing_docs)]
    pub fee: Option<Decimal>,
    /// HTTP status (or venue status) of a response
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub response_status: Option<i16>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[allow(missing_docs)]
    pub error_code: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[allow(missing_docs)]
    pub error_message: Option<String>,
    /// Origin, e.g. `alpaca_rest`, `alpaca_ws`, `tradelog`
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source: Option<String>,
    /// The native JSON exactly as sent or received
    pub body: RawJson,
    /// Of a response: what the exchange carried around the body (endpoint, duration,
    /// rate-limit headers), so that `body` stays the broker's own JSON
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub response_meta: Option<RawJson>,
}

#[cfg(test)]
mod tests {
    use super::columns::*;
    use super::redact::*;
    use super::*;

    #[test]
    fn http_requests_are_encoded_without_credentials() {
        let body = r#"{"symbol":"AAPL","qty":"10","limit_price":42000.50,"secret":"s1","nested":{"apiKey":"k1","keep":[1.10,{"signature":"x","ok":true}]}}"#;
        let encoded = encode_http_request(
            "post",
            "/v2/orders",
            &[
                ("signature".into(), "abc".into()),
                ("status".into(), "all".into()),
                ("symbols".into(), "AAPL".into()),
                ("symbols".into(), "MSFT".into()),
            ],
            &[
                ("APCA-API-KEY-ID".into(), "PKID".into()),
                ("APCA-API-SECRET-KEY".into(), "SECRETVALUE".into()),
                ("X-MBX-APIKEY".into(), "binance".into()),
                ("Authorization".into(), "Bearer t".into()),
                ("Content-Type".into(), "application/json".into()),
            ],
            Some(body),
        );
        assert_eq!(
            encoded.as_str(),
            r#"{"transport":"http","method":"POST","path":"/v2/orders","query":{"status":"all","symbols":["AAPL","MSFT"]},"headers":{"content-type":"application/json"},"body":{"symbol":"AAPL","qty":"10","limit_price":42000.50,"nested":{"keep":[1.10,{"ok":true}]}}}"#
        );
        for secret in [
            "PKID",
            "SECRETVALUE",
            "binance",
            "Bearer",
            "s1",
            "k1",
            "abc",
        ] {
            assert!(!encoded.as_str().contains(secret), "{secret} leaked");
        }
    }

    #[test]
    fn a_request_without_body_or_query_has_an_empty_query_object() {
        let encoded = encode_http_request("DELETE", "/v2/orders/abc", &[], &[], None);
        assert_eq!(
            encoded.as_str(),
            r#"{"transport":"http","method":"DELETE","path":"/v2/orders/abc","query":{}}"#
        );
    }

    #[test]
    fn non_json_bodies_are_strings_without_sensitive_form_fields() {
        let encoded = encode_http_request(
            "POST",
            "/api/v3/order",
            &[],
            &[],
            Some("symbol=BTCUSDT&quantity=1&signature=deadbeef&apiKey=k"),
        );
        let value: serde_json::Value = serde_json::from_str(encoded.as_str()).unwrap();
        assert_eq!(value["body"], "symbol=BTCUSDT&quantity=1");
    }

    #[test]
    fn sensitive_keys_are_recognised_in_any_spelling() {
        for key in [
            "APCA-API-SECRET-KEY",
            "apca-api-key-id",
            "apiKey",
            "api_key",
            "secret",
            "secret_key",
            "key_id",
            "signature",
            "X-MBX-APIKEY",
            "Authorization",
            "password",
            "access_token",
        ] {
            assert!(is_sensitive_key(key), "{key}");
        }
        for key in ["symbol", "client_order_id", "qty", "side", "status", "keep"] {
            assert!(!is_sensitive_key(key), "{key}");
        }
    }

    #[test]
    fn a_response_with_an_execution_is_logged_twice() {
        let ids = OrderIds {
            cl_ord_id: Some("d-1".into()),
            native_ord_id: Some("o-1".into()),
            symbol: Some("AAPL".into()),
            ..OrderIds::default()
        };
        let exec = ExecutionFields {
            last_px: Some(Decimal::new(15025, 2)),
            last_qty: Some(Decimal::from(10)),
            side: Some(Side::Buy),
            ..ExecutionFields::default()
        };
        let body = RawJson::parse(r#"{"id":"o-1","status":"filled","filled_avg_price":"150.25"}"#)
            .unwrap();
        let events =
            TradeLogEvent::api_response(&ids, Some(200), None, None, Some(&exec), body.clone());
        assert_eq!(events.len(), 2);
        assert_eq!(events[0].event_type, EventType::ApiResponse);
        assert_eq!(events[0].response_status, Some(200));
        assert_eq!(events[1].event_type, EventType::ApiEventExecution);
        assert_eq!(events[1].last_px, Some(Decimal::new(15025, 2)));
        assert_eq!(events[1].body, body);
        assert_ne!(events[0].event_id, events[1].event_id);
        let without =
            TradeLogEvent::api_response(&ids, Some(403), Some("40310000".into()), None, None, body);
        assert_eq!(without.len(), 1);
    }

    #[test]
    fn events_survive_a_json_round_trip_exactly() {
        let body = RawJson::parse(r#"{"price": 42000.500000000000000001, "qty":"0.4"}"#).unwrap();
        let mut e = TradeLogEvent::request_order_new(
            &OrderIds {
                cl_ord_id: Some("c".into()),
                ..OrderIds::default()
            },
            Some(Side::Sell),
            Some("0.400000000000000001".parse().unwrap()),
            None,
            body,
        );
        e.fee = Some("-0.0002".parse().unwrap());
        let line = serde_json::to_string(&e).unwrap();
        let back: TradeLogEvent = serde_json::from_str(&line).unwrap();
        assert_eq!(back, e);
        assert!(line.contains(r#""body":{"price": 42000.500000000000000001, "qty":"0.4"}"#));
    }

    #[test]
    fn event_ids_are_time_ordered() {
        let a = TradeLogEvent::new(EventType::ConnectivityInfo, RawJson::default());
        let b = TradeLogEvent::new(EventType::ConnectivityInfo, RawJson::default());
        assert_eq!(a.event_id.get_version_num(), 7);
        assert!(b.event_id > a.event_id);
        assert!(b.local_ts_us >= a.local_ts_us);
    }
}
