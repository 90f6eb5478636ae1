//! Payloads shared by several actors.

pub mod trade_log;

pub use trade_log::{
    EventType, ExecutionFields, OrderIds, RawJson, Side, TradeLogEvent, encode_http_request,
    is_sensitive_key, now_us, redact_json,
};
