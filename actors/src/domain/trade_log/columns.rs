//! The typed column values of a trade-log row: event type and side codes, verbatim JSON
//! text, order identifiers, execution-report fields.

use std::fmt;

use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;

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

/// A stored code that names no value of its column.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("unknown trade-log {column} {code}")]
pub struct UnknownCode {
    /// The column: `event type` or `side`
    pub column: &'static str,
    /// The code found
    pub code: i16,
}

impl TryFrom<i16> for EventType {
    type Error = UnknownCode;
    fn try_from(code: i16) -> Result<Self, UnknownCode> {
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
            other => {
                return Err(UnknownCode {
                    column: "event type",
                    code: other,
                });
            }
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
    type Error = UnknownCode;
    fn try_from(code: i16) -> Result<Self, UnknownCode> {
        match code {
            1 => Ok(Self::Buy),
            2 => Ok(Self::Sell),
            other => Err(UnknownCode {
                column: "side",
                code: other,
            }),
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

    pub(super) fn empty_object() -> Box<RawValue> {
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
