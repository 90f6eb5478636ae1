//! Trade-log events (spec `trade-logs.md`): the typed columns, the event taxonomy, constructors
//! for each mapping of the spec, and the credential-free encoding of HTTP requests.

use std::fmt;
use std::time::{SystemTime, UNIX_EPOCH};

use indexmap::IndexMap;
use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;
use uuid::Uuid;

/// Microseconds since the Unix epoch, now (UTC).
pub fn now_us() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_micros()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

/// The event taxonomy; values are stable and stored as SMALLINT.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(into = "i16", try_from = "i16")]
pub enum EventType {
    /// 10: a new order request
    RequestOrderNew,
    /// 11: a cancel request
    RequestOrderCancel,
    /// 12: an amend (replace) request
    RequestOrderAmend,
    /// 13: a cancel-all request
    RequestCancelAll,
    /// 20: a response to a request, success or error
    ApiResponse,
    /// 30: an execution report
    ApiEventExecution,
    /// 31: an order status change without a trade
    ApiEventOrderUpdate,
    /// 32: a lightweight fill
    ApiEventTradeLite,
    /// 90: connectivity, and gaps in the log itself
    ConnectivityInfo,
}

impl EventType {
    /// The stored code.
    pub fn code(self) -> i16 {
        match self {
            Self::RequestOrderNew => 10,
            Self::RequestOrderCancel => 11,
            Self::RequestOrderAmend => 12,
            Self::RequestCancelAll => 13,
            Self::ApiResponse => 20,
            Self::ApiEventExecution => 30,
            Self::ApiEventOrderUpdate => 31,
            Self::ApiEventTradeLite => 32,
            Self::ConnectivityInfo => 90,
        }
    }
}

impl From<EventType> for i16 {
    fn from(t: EventType) -> i16 {
        t.code()
    }
}

impl TryFrom<i16> for EventType {
    type Error = String;
    fn try_from(code: i16) -> Result<Self, String> {
        Ok(match code {
            10 => Self::RequestOrderNew,
            11 => Self::RequestOrderCancel,
            12 => Self::RequestOrderAmend,
            13 => Self::RequestCancelAll,
            20 => Self::ApiResponse,
            30 => Self::ApiEventExecution,
            31 => Self::ApiEventOrderUpdate,
            32 => Self::ApiEventTradeLite,
            90 => Self::ConnectivityInfo,
            other => return Err(format!("unknown trade-log event type {other}")),
        })
    }
}

/// Order side, stored as SMALLINT 1 (buy) / 2 (sell).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(into = "i16", try_from = "i16")]
pub enum Side {
    /// 1
    Buy,
    /// 2
    Sell,
}

impl Side {
    /// The SQL and broker spelling: `buy` or `sell`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Buy => "buy",
            Self::Sell => "sell",
        }
    }
}

impl From<Side> for i16 {
    fn from(s: Side) -> i16 {
        match s {
            Side::Buy => 1,
            Side::Sell => 2,
        }
    }
}

impl TryFrom<i16> for Side {
    type Error = String;
    fn try_from(code: i16) -> Result<Self, String> {
        match code {
            1 => Ok(Self::Buy),
            2 => Ok(Self::Sell),
            other => Err(format!("unknown side {other}")),
        }
    }
}

/// JSON text kept exactly as sent or received: never re-serialized through floats, so decimal
/// numbers keep every digit. Validated when built.
#[derive(Clone)]
pub struct RawJson(Box<RawValue>);

/// Equal when the texts are equal, byte for byte.
impl PartialEq for RawJson {
    fn eq(&self, other: &Self) -> bool {
        self.as_str() == other.as_str()
    }
}

impl Eq for RawJson {}

impl RawJson {
    /// Checks that `text` is JSON and keeps it verbatim.
    pub fn parse(text: impl Into<String>) -> Result<Self, serde_json::Error> {
        RawValue::from_string(text.into()).map(Self)
    }

    /// Serializes a value.
    pub fn from_value(value: &serde_json::Value) -> Self {
        // Serializing a Value cannot fail, and its output is valid JSON.
        Self(serde_json::value::to_raw_value(value).unwrap_or_else(|_| Self::empty_object()))
    }

    fn empty_object() -> Box<RawValue> {
        RawValue::from_string("{}".into()).unwrap_or_default()
    }

    /// The JSON text.
    pub fn as_str(&self) -> &str {
        self.0.get()
    }
}

impl Default for RawJson {
    fn default() -> Self {
        Self(Self::empty_object())
    }
}

impl fmt::Debug for RawJson {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl Serialize for RawJson {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        self.0.serialize(serializer)
    }
}

impl<'de> Deserialize<'de> for RawJson {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        Box::<RawValue>::deserialize(deserializer).map(Self)
    }
}

/// Identifiers shared by the events of one order.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct OrderIds {
    /// Request id, when the venue uses one
    pub req_id: Option<i64>,
    /// Our client order id (the decision id)
    pub cl_ord_id: Option<String>,
    /// The venue's order id
    pub native_ord_id: Option<String>,
    /// Numeric market id, when the venue uses one
    pub market_id: Option<i64>,
    /// Broker account
    pub account_id: Option<String>,
    /// Instrument
    pub symbol: Option<String>,
}

/// What an execution report carries.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ExecutionFields {
    /// Venue-specific execution type code
    pub exec_type: Option<i16>,
    /// Venue-specific order status code
    pub ord_status: Option<i16>,
    /// Side
    pub side: Option<Side>,
    /// Whether we took liquidity
    pub is_taker: Option<bool>,
    /// Price of this fill
    pub last_px: Option<Decimal>,
    /// Quantity of this fill
    pub last_qty: Option<Decimal>,
    /// Quantity still open
    pub leaves_qty: Option<Decimal>,
    /// Order price
    pub ord_px: Option<Decimal>,
    /// Order quantity
    pub ord_qty: Option<Decimal>,
    /// Fee or commission
    pub fee: Option<Decimal>,
    /// The venue's timestamp of the event, in microseconds
    pub exchange_ts_us: Option<i64>,
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

impl TradeLogEvent {
    /// An event of `event_type` happening now, with a fresh time-ordered id.
    pub fn new(event_type: EventType, body: RawJson) -> Self {
        Self {
            event_id: Uuid::now_v7(),
            local_ts_us: now_us(),
            exchange_ts_us: None,
            event_type,
            req_id: None,
            cl_ord_id: None,
            native_ord_id: None,
            market_id: None,
            account_id: None,
            symbol: None,
            exec_type: None,
            ord_status: None,
            side: None,
            is_taker: None,
            last_px: None,
            last_qty: None,
            leaves_qty: None,
            ord_px: None,
            ord_qty: None,
            fee: None,
            response_status: None,
            error_code: None,
            error_message: None,
            source: None,
            body,
            response_meta: None,
        }
    }

    /// Sets what an HTTP exchange carried around a response's body.
    pub fn with_response_meta(mut self, meta: RawJson) -> Self {
        self.response_meta = Some(meta);
        self
    }

    /// Sets the origin.
    pub fn with_source(mut self, source: impl Into<String>) -> Self {
        self.source = Some(source.into());
        self
    }

    fn with_ids(mut self, ids: &OrderIds) -> Self {
        self.req_id = ids.req_id;
        self.cl_ord_id.clone_from(&ids.cl_ord_id);
        self.native_ord_id.clone_from(&ids.native_ord_id);
        self.market_id = ids.market_id;
        self.account_id.clone_from(&ids.account_id);
        self.symbol.clone_from(&ids.symbol);
        self
    }

    fn with_execution(mut self, exec: &ExecutionFields) -> Self {
        self.exec_type = exec.exec_type;
        self.ord_status = exec.ord_status;
        self.side = exec.side;
        self.is_taker = exec.is_taker;
        self.last_px = exec.last_px;
        self.last_qty = exec.last_qty;
        self.leaves_qty = exec.leaves_qty;
        self.ord_px = exec.ord_px;
        self.ord_qty = exec.ord_qty;
        self.fee = exec.fee;
        self.exchange_ts_us = exec.exchange_ts_us;
        self
    }

    /// 10: a new order as sent (`body`: the native request, HTTP requests encoded with
    /// [`encode_http_request`]).
    pub fn request_order_new(
        ids: &OrderIds,
        side: Option<Side>,
        ord_qty: Option<Decimal>,
        ord_px: Option<Decimal>,
        body: RawJson,
    ) -> Self {
        let mut e = Self::new(EventType::RequestOrderNew, body).with_ids(ids);
        e.side = side;
        e.ord_qty = ord_qty;
        e.ord_px = ord_px;
        e
    }

    /// 11: a cancel request.
    pub fn request_order_cancel(ids: &OrderIds, body: RawJson) -> Self {
        Self::new(EventType::RequestOrderCancel, body).with_ids(ids)
    }

    /// 12: an amend request with the new price and quantity, when given.
    pub fn request_order_amend(
        ids: &OrderIds,
        ord_px: Option<Decimal>,
        ord_qty: Option<Decimal>,
        body: RawJson,
    ) -> Self {
        let mut e = Self::new(EventType::RequestOrderAmend, body).with_ids(ids);
        e.ord_px = ord_px;
        e.ord_qty = ord_qty;
        e
    }

    /// 13: a cancel-all request.
    pub fn request_cancel_all(
        account_id: Option<String>,
        market_id: Option<i64>,
        req_id: Option<i64>,
        body: RawJson,
    ) -> Self {
        let ids = OrderIds {
            req_id,
            market_id,
            account_id,
            ..OrderIds::default()
        };
        Self::new(EventType::RequestCancelAll, body).with_ids(&ids)
    }

    /// 20, and 30 when the response carries an execution: a response yields both an
    /// `api_response` and an `api_event_execution` (spec: answer YES), sharing `body`.
    pub fn api_response(
        ids: &OrderIds,
        response_status: Option<i16>,
        error_code: Option<String>,
        error_message: Option<String>,
        execution: Option<&ExecutionFields>,
        body: RawJson,
    ) -> Vec<Self> {
        let mut response = Self::new(EventType::ApiResponse, body.clone()).with_ids(ids);
        response.response_status = response_status;
        response.error_code = error_code;
        response.error_message = error_message;
        let Some(exec) = execution else {
            return vec![response];
        };
        response = response.with_execution(exec);
        let mut execution = Self::new(EventType::ApiEventExecution, body)
            .with_ids(ids)
            .with_execution(exec);
        execution.local_ts_us = response.local_ts_us;
        vec![response, execution]
    }

    /// 30: an execution report pushed by the venue.
    pub fn api_event_execution(ids: &OrderIds, exec: &ExecutionFields, body: RawJson) -> Self {
        Self::new(EventType::ApiEventExecution, body)
            .with_ids(ids)
            .with_execution(exec)
    }

    /// 31: an order status change without a trade.
    pub fn api_event_order_update(
        ids: &OrderIds,
        ord_status: Option<i16>,
        exchange_ts_us: Option<i64>,
        body: RawJson,
    ) -> Self {
        let mut e = Self::new(EventType::ApiEventOrderUpdate, body).with_ids(ids);
        e.ord_status = ord_status;
        e.exchange_ts_us = exchange_ts_us;
        e
    }

    /// 32: a lightweight fill.
    pub fn api_event_trade_lite(ids: &OrderIds, exec: &ExecutionFields, body: RawJson) -> Self {
        Self::new(EventType::ApiEventTradeLite, body)
            .with_ids(ids)
            .with_execution(exec)
    }

    /// 90: a disconnect, reconnect or resubscribe of `source`.
    pub fn connectivity(source: &str, account_id: Option<String>, body: RawJson) -> Self {
        let mut e = Self::new(EventType::ConnectivityInfo, body).with_source(source);
        e.account_id = account_id;
        e
    }

    /// 90: a hole in the trade log itself: `count` events between `first_local_ts_us` and
    /// `last_local_ts_us` were lost for `reason`, so the gap is visible in the table.
    pub fn gap(count: u64, first_local_ts_us: i64, last_local_ts_us: i64, reason: &str) -> Self {
        let body = serde_json::json!({
            "gap": {
                "dropped": count,
                "first_local_ts_us": first_local_ts_us,
                "last_local_ts_us": last_local_ts_us,
                "reason": reason,
            }
        });
        let mut e = Self::new(EventType::ConnectivityInfo, RawJson::from_value(&body))
            .with_source("tradelog");
        e.error_code = Some("tradelog.gap".into());
        e.error_message = Some(format!("{count} trade-log events lost ({reason})"));
        e
    }
}

/// Whether a header, query parameter or JSON key names authentication material.
pub fn is_sensitive_key(key: &str) -> bool {
    let normalized: String = key
        .chars()
        .filter(|c| c.is_ascii_alphanumeric())
        .map(|c| c.to_ascii_lowercase())
        .collect();
    const MARKERS: [&str; 12] = [
        "apikey",
        "keyid",
        "secret",
        "signature",
        "password",
        "passphrase",
        "token",
        "authorization",
        "cookie",
        "credential",
        "privatekey",
        "accesskey",
    ];
    normalized == "sig" || normalized == "key" || MARKERS.iter().any(|m| normalized.contains(m))
}

/// `raw` JSON with every sensitive key removed at any depth. Everything else — key order,
/// number text — is kept exactly.
pub fn redact_json(raw: &str) -> Result<String, serde_json::Error> {
    let value: &RawValue = serde_json::from_str(raw)?;
    let mut out = String::with_capacity(raw.len());
    redact_into(value, &mut out)?;
    Ok(out)
}

fn redact_into(value: &RawValue, out: &mut String) -> Result<(), serde_json::Error> {
    let text = value.get().trim();
    if text.starts_with('{') {
        let map: IndexMap<String, &RawValue> = serde_json::from_str(text)?;
        out.push('{');
        let mut first = true;
        for (key, value) in map {
            if is_sensitive_key(&key) {
                continue;
            }
            if !first {
                out.push(',');
            }
            first = false;
            out.push_str(&serde_json::to_string(&key)?);
            out.push(':');
            redact_into(value, out)?;
        }
        out.push('}');
    } else if text.starts_with('[') {
        let items: Vec<&RawValue> = serde_json::from_str(text)?;
        out.push('[');
        for (i, item) in items.into_iter().enumerate() {
            if i > 0 {
                out.push(',');
            }
            redact_into(item, out)?;
        }
        out.push(']');
    } else {
        out.push_str(text);
    }
    Ok(())
}

/// An HTTP request encoded for `body` as the spec requires:
/// `{"transport":"http","method":..,"path":..,"query":{..},"headers":{..},"body":..}`, with API
/// keys, secrets and signatures removed from headers, query and body. A JSON body stays JSON
/// (numbers verbatim); any other body is stored as a string, with sensitive form fields removed.
pub fn encode_http_request(
    method: &str,
    path: &str,
    query: &[(String, String)],
    headers: &[(String, String)],
    body: Option<&str>,
) -> RawJson {
    let mut out = String::with_capacity(128 + body.map_or(0, str::len));
    out.push_str("{\"transport\":\"http\",\"method\":");
    push_json_string(&mut out, &method.to_ascii_uppercase());
    out.push_str(",\"path\":");
    push_json_string(&mut out, path);

    let mut query_map: IndexMap<&str, Vec<&str>> = IndexMap::new();
    for (k, v) in query.iter().filter(|(k, _)| !is_sensitive_key(k)) {
        query_map.entry(k.as_str()).or_default().push(v.as_str());
    }
    out.push_str(",\"query\":{");
    for (i, (k, values)) in query_map.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        push_json_string(&mut out, k);
        out.push(':');
        if let [single] = values.as_slice() {
            push_json_string(&mut out, single);
        } else {
            out.push('[');
            for (j, v) in values.iter().enumerate() {
                if j > 0 {
                    out.push(',');
                }
                push_json_string(&mut out, v);
            }
            out.push(']');
        }
    }
    out.push('}');

    let kept_headers: Vec<&(String, String)> = headers
        .iter()
        .filter(|(k, _)| !is_sensitive_key(k))
        .collect();
    if !kept_headers.is_empty() {
        out.push_str(",\"headers\":{");
        for (i, (k, v)) in kept_headers.iter().enumerate() {
            if i > 0 {
                out.push(',');
            }
            push_json_string(&mut out, &k.to_ascii_lowercase());
            out.push(':');
            push_json_string(&mut out, v);
        }
        out.push('}');
    }

    if let Some(body) = body.filter(|b| !b.trim().is_empty()) {
        out.push_str(",\"body\":");
        match redact_json(body) {
            Ok(json) => out.push_str(&json),
            Err(_) => push_json_string(&mut out, &redact_form(body)),
        }
    }
    out.push('}');
    // Built from escaped strings and validated JSON, so it parses.
    RawJson::parse(out).unwrap_or_default()
}

/// A form-encoded (`a=1&b=2`) body without its sensitive fields; other text unchanged.
fn redact_form(body: &str) -> String {
    if !body.contains('=') || body.contains(char::is_whitespace) {
        return body.to_string();
    }
    body.split('&')
        .filter(|pair| {
            let key = pair.split('=').next().unwrap_or("");
            !is_sensitive_key(key)
        })
        .collect::<Vec<_>>()
        .join("&")
}

fn push_json_string(out: &mut String, s: &str) {
    // Serializing a str cannot fail.
    out.push_str(&serde_json::to_string(s).unwrap_or_default());
}

#[cfg(test)]
mod tests {
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
