//! Orders as strategies send them, what the gateway answers and pushes back, and the kill
//! switch: the payloads shared by the strategy API, the OrderRouter and the broker sessions.

use std::sync::Arc;

use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use uuid::Uuid;

use super::decision::{NewDecision, OrderType, PrimarySignal, TimeInForce};
use super::ingestion::ApiPayload;
use super::trade_log::Side;

/// `buy` / `sell` on the wire (the trade log stores sides as numbers).
pub mod side_str {
    use serde::{Deserialize, Deserializer, Serializer};

    use super::Side;

    /// Writes `buy` or `sell`.
    pub fn serialize<S: Serializer>(side: &Side, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(side.as_str())
    }

    /// Reads `buy` or `sell`.
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Side, D::Error> {
        let text = String::deserialize(d)?;
        match text.as_str() {
            "buy" => Ok(Side::Buy),
            "sell" => Ok(Side::Sell),
            other => Err(serde::de::Error::custom(format!(
                "unknown side `{other}`, expected `buy` or `sell`"
            ))),
        }
    }
}

/// One order as a strategy submits it (`submit_order`, or one entry of `submit_batch`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OrderRequest {
    /// The strategy's name; must be the one its token belongs to
    pub strategy: String,
    /// The strategy's version
    #[serde(default)]
    pub strategy_version: String,
    /// The broker account; default: the strategy's configured account
    #[serde(default)]
    pub account: Option<String>,
    /// The instrument
    pub symbol: String,
    /// buy or sell
    #[serde(with = "side_str")]
    pub side: Side,
    /// How many shares (a decimal string or number)
    #[serde(default)]
    pub qty: Option<Decimal>,
    /// How many dollars instead (a market order for the day; Alpaca buys fractional shares)
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub notional: Option<Decimal>,
    /// market, limit, stop, stop_limit, trailing_stop
    pub order_type: OrderType,
    /// Required by limit and stop-limit orders
    #[serde(default)]
    pub limit_price: Option<Decimal>,
    /// Required by stop and stop-limit orders
    #[serde(default)]
    pub stop_price: Option<Decimal>,
    /// day, gtc, opg, cls, ioc, fok
    pub time_in_force: TimeInForce,
    /// Orders a batch, strongest first
    #[serde(default)]
    pub signal_strength: Option<Decimal>,
    /// The signal acted on
    #[serde(default)]
    pub primary_signal: Option<PrimarySignal>,
    /// The ingestion run whose data the decision rests on
    #[serde(default)]
    pub primary_ingestion_run_id: Option<Uuid>,
    /// Strategy-specific context (a JSON object)
    #[serde(default)]
    pub rationale: Option<Value>,
    /// The price the strategy saw (a market order's notional and the price collar are
    /// checked against it; without it, against the last fill price the gateway recorded)
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reference_price: Option<Decimal>,
}

impl OrderRequest {
    /// The decision this order becomes, in `account`, with a fresh time-ordered id.
    pub fn to_decision(&self, account: &str) -> NewDecision {
        NewDecision {
            decision_id: Uuid::now_v7(),
            strategy_name: self.strategy.clone(),
            strategy_version: self.strategy_version.clone(),
            account: account.to_string(),
            symbol: self.symbol.clone(),
            side: self.side,
            quantity: self.qty,
            notional: self.notional,
            order_type: self.order_type,
            limit_price: self.limit_price,
            stop_price: self.stop_price,
            time_in_force: self.time_in_force,
            signal_strength: self.signal_strength,
            primary_signal: self.primary_signal.clone(),
            primary_ingestion_run_id: self.primary_ingestion_run_id,
            rationale: self.rationale.clone(),
        }
    }

    /// How much, for people: the quantity, or the notional as `$<amount>`.
    pub fn size(&self) -> String {
        match (self.qty, self.notional) {
            (_, Some(n)) => format!("${n}"),
            (Some(q), None) => q.to_string(),
            (None, None) => "nothing".into(),
        }
    }

    /// The price the order names: the limit price, else the stop price; market orders have
    /// none.
    pub fn order_price(&self) -> Option<Decimal> {
        self.limit_price.or(self.stop_price)
    }
}

/// A change to a working order (`replace_order`): the fields given replace the order's.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReplaceRequest {
    /// New quantity
    #[serde(default)]
    pub qty: Option<Decimal>,
    /// New limit price
    #[serde(default)]
    pub limit_price: Option<Decimal>,
    /// New stop price
    #[serde(default)]
    pub stop_price: Option<Decimal>,
    /// New time in force
    #[serde(default)]
    pub time_in_force: Option<TimeInForce>,
}

/// Why an order was refused: a stable reason code (`risk.max_notional`, `risk.halted`,
/// `invalid`, `audit_unavailable`, ...) and a message for a person.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
#[error("{code}: {message}")]
pub struct OrderReject {
    /// The reason code
    pub code: String,
    /// What happened
    pub message: String,
}

impl OrderReject {
    /// A reject with `code` and `message`.
    pub fn new(code: RejectCode, message: impl Into<String>) -> Self {
        Self {
            code: code.as_str().to_string(),
            message: message.into(),
        }
    }

    /// The broker refused: `broker.<its code>` (Alpaca's error code, else the HTTP status).
    pub fn broker(code: impl std::fmt::Display, message: impl Into<String>) -> Self {
        Self {
            code: format!("{}{code}", RejectCode::BROKER_PREFIX),
            message: message.into(),
        }
    }

    /// A decision's refusal as the strategy is answered.
    pub fn from_decision(reject: crate::domain::DecisionReject) -> Self {
        Self {
            code: reject.code,
            message: reject.message,
        }
    }

    /// Whether its code is `code`.
    pub fn is(&self, code: RejectCode) -> bool {
        self.code == code.as_str()
    }
}

/// Every reason code a strategy can be answered with, but the broker's own (`broker.<code>`,
/// [`OrderReject::broker`]). The wire spells each as [`RejectCode::as_str`]; the README's table
/// lists them all (a test checks it against [`RejectCode::ALL`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum RejectCode {
    /// The order is not well formed (quantity, prices, symbol, ...), or the database refused
    /// its decision for what it carries
    Invalid,
    /// A value so large (or a price so small) that valuing the order overflows exact
    /// arithmetic: no limit could be checked against it
    OutOfRange,
    /// Quantity above `max_qty`
    MaxQty,
    /// Notional above `max_notional`
    MaxNotional,
    /// A market order under `max_notional` with no reference price to value it at
    NoReferencePrice,
    /// A limit or stop price farther from the reference price than `max_price_deviation`
    PriceCollar,
    /// Symbol not on the allow list
    SymbolNotAllowed,
    /// Symbol on the deny list
    SymbolDenied,
    /// More orders in the last second than `max_orders_per_sec`
    RateLimit,
    /// The same order within the duplicate window
    Duplicate,
    /// The kill switch is halted
    Halted,
    /// The kill switch is reduce-only and the order would not reduce a position
    ReduceOnly,
    /// No broker session for the order's account
    UnknownAccount,
    /// The order names a strategy other than the connection's
    WrongStrategy,
    /// The database could not record the decision (or the request), so nothing was sent
    AuditUnavailable,
    /// The account's broker session is not running
    SessionUnavailable,
    /// A cancel or replace of an order the broker no longer works
    NotWorking,
    /// A cancel or replace naming a decision the gateway does not know (or another strategy's)
    UnknownDecision,
    /// The order router did not answer (stopped, restarting, or overloaded)
    RouterUnavailable,
    /// The decision names a primary ingestion run that does not exist
    LineageUnknownRun,
    /// The decision names a primary ingestion run that has not completed
    LineageRunNotCompleted,
    /// A decision with this id is stored already
    DuplicateDecision,
    /// A strategy message that is not JSON, or not a JSON object
    Malformed,
    /// A strategy message whose `type` the gateway does not know
    UnknownType,
    /// A strategy message nested deeper than the gateway reads
    TooDeep,
}

impl RejectCode {
    /// The prefix of the broker's own codes.
    pub const BROKER_PREFIX: &'static str = "broker.";

    /// Every code.
    pub const ALL: [Self; 25] = [
        Self::Invalid,
        Self::OutOfRange,
        Self::MaxQty,
        Self::MaxNotional,
        Self::NoReferencePrice,
        Self::PriceCollar,
        Self::SymbolNotAllowed,
        Self::SymbolDenied,
        Self::RateLimit,
        Self::Duplicate,
        Self::Halted,
        Self::ReduceOnly,
        Self::UnknownAccount,
        Self::WrongStrategy,
        Self::AuditUnavailable,
        Self::SessionUnavailable,
        Self::NotWorking,
        Self::UnknownDecision,
        Self::RouterUnavailable,
        Self::LineageUnknownRun,
        Self::LineageRunNotCompleted,
        Self::DuplicateDecision,
        Self::Malformed,
        Self::UnknownType,
        Self::TooDeep,
    ];

    /// The code as the wire and the audit trail spell it.
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Invalid => "invalid",
            Self::OutOfRange => "invalid.out_of_range",
            Self::MaxQty => "risk.max_qty",
            Self::MaxNotional => "risk.max_notional",
            Self::NoReferencePrice => "risk.no_reference_price",
            Self::PriceCollar => "risk.price_collar",
            Self::SymbolNotAllowed => "risk.symbol_not_allowed",
            Self::SymbolDenied => "risk.symbol_denied",
            Self::RateLimit => "risk.rate_limit",
            Self::Duplicate => "risk.duplicate",
            Self::Halted => "risk.halted",
            Self::ReduceOnly => "risk.reduce_only",
            Self::UnknownAccount => "routing.unknown_account",
            Self::WrongStrategy => "auth.wrong_strategy",
            Self::AuditUnavailable => "audit_unavailable",
            Self::SessionUnavailable => "session_unavailable",
            Self::NotWorking => "not_working",
            Self::UnknownDecision => "unknown_decision",
            Self::RouterUnavailable => "router_unavailable",
            Self::LineageUnknownRun => "lineage.unknown_run",
            Self::LineageRunNotCompleted => "lineage.run_not_completed",
            Self::DuplicateDecision => "duplicate_decision",
            Self::Malformed => "malformed",
            Self::UnknownType => "unknown_type",
            Self::TooDeep => "too_deep",
        }
    }
}

impl PartialEq<RejectCode> for String {
    fn eq(&self, other: &RejectCode) -> bool {
        self == other.as_str()
    }
}

impl PartialEq<RejectCode> for &str {
    fn eq(&self, other: &RejectCode) -> bool {
        *self == other.as_str()
    }
}

impl std::fmt::Display for RejectCode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The answer to one submitted order: its decision id, or why it was refused.
pub type OrderOutcome = Result<Uuid, OrderReject>;

/// What the gateway pushes to a strategy (JSON text frames with a `type`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum StrategyEvent {
    /// The order's decision is committed; it is being routed.
    Ack {
        /// The strategy's request id
        request_id: String,
        /// The decision (= broker client order id); for a cancel or replace, the decision
        /// it was about; absent for `cancel_all`
        #[serde(default, skip_serializing_if = "Option::is_none")]
        decision_id: Option<Uuid>,
        /// The order's position in a batch (absent for single orders)
        #[serde(default, skip_serializing_if = "Option::is_none")]
        index: Option<usize>,
        /// A replacement's new broker order id
        #[serde(default, skip_serializing_if = "Option::is_none")]
        broker_order_id: Option<String>,
        /// How many cancels `cancel_all` sent
        #[serde(default, skip_serializing_if = "Option::is_none")]
        cancels: Option<usize>,
    },
    /// The order was refused before anything was sent.
    Reject {
        /// The strategy's request id
        request_id: String,
        /// The reason code
        code: String,
        /// What happened
        message: String,
        /// The order's position in a batch (absent for single orders)
        #[serde(default, skip_serializing_if = "Option::is_none")]
        index: Option<usize>,
    },
    /// The broker's answer to a submission (or a recovery's finding).
    Execution {
        /// The decision
        decision_id: Uuid,
        /// The `trade_executions` row
        execution_id: Uuid,
        /// submitted, accepted, filled, partial_fill, rejected, cancelled
        status: String,
        /// The broker's order id
        #[serde(default, skip_serializing_if = "Option::is_none")]
        broker_order_id: Option<String>,
        /// The HTTP status of the response
        #[serde(default, skip_serializing_if = "Option::is_none")]
        http_status: Option<u16>,
        /// The broker's error message
        #[serde(default, skip_serializing_if = "Option::is_none")]
        error: Option<String>,
    },
    /// An order status change pushed by the broker.
    OrderUpdate {
        /// The decision
        decision_id: Uuid,
        /// The broker's event name (`new`, `canceled`, `replaced`, ...)
        event: String,
        /// The broker's order status
        #[serde(default, skip_serializing_if = "Option::is_none")]
        status: Option<String>,
        /// The broker's order id
        #[serde(default, skip_serializing_if = "Option::is_none")]
        broker_order_id: Option<String>,
        /// Filled so far
        #[serde(default, skip_serializing_if = "Option::is_none")]
        filled_qty: Option<Decimal>,
    },
    /// A fill (or partial fill).
    Fill {
        /// The decision
        decision_id: Uuid,
        /// This fill's quantity
        qty: Decimal,
        /// This fill's price
        price: Decimal,
        /// Filled so far
        #[serde(default, skip_serializing_if = "Option::is_none")]
        filled_qty: Option<Decimal>,
        /// The position after the fill
        #[serde(default, skip_serializing_if = "Option::is_none")]
        position_qty: Option<Decimal>,
        /// Whether the order is completely filled
        partial: bool,
    },
    /// Input that could not be used (the connection stays open), or a failed cancel/replace.
    Error {
        /// The strategy's request id, when it could be read
        #[serde(default, skip_serializing_if = "Option::is_none")]
        request_id: Option<String>,
        /// `malformed`, `unknown_type`, `invalid`, `unknown_decision`, ...
        code: String,
        /// What happened
        message: String,
    },
}

/// The global kill switch.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum KillSwitch {
    /// Orders flow
    #[default]
    Active,
    /// Every new order is refused (`risk.halted`)
    Halted,
    /// Only orders that reduce an existing position are accepted (`risk.reduce_only`)
    ReduceOnly,
}

impl KillSwitch {
    /// The SQL spelling.
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Active => "active",
            Self::Halted => "halted",
            Self::ReduceOnly => "reduce_only",
        }
    }

    /// Parses the SQL spelling.
    pub fn parse(text: &str) -> Option<Self> {
        match text {
            "active" => Some(Self::Active),
            "halted" => Some(Self::Halted),
            "reduce_only" => Some(Self::ReduceOnly),
            _ => None,
        }
    }
}

/// A committed decision as a broker session needs it to send the order.
#[derive(Debug, Clone, PartialEq)]
pub struct RoutedOrder {
    /// Surrogate key of the decision
    pub decision_pk: i64,
    /// The decision (= client order id)
    pub decision: NewDecision,
    /// The broker request, stored with the decision (when it was)
    pub request_payload_id: Option<i64>,
    /// The wire body of that stored request, sent as is (`None`: the session builds it)
    pub body: Option<Arc<str>>,
}

/// A broker request prepared for a decision before the decision is committed: stored with it
/// (`payload`, as `api_payloads` keeps it) and later sent as is (`body`, the wire text), so it
/// is built once.
#[derive(Debug, Clone, PartialEq)]
pub struct PreparedRequest {
    /// The stored form: endpoint, method, body
    pub payload: ApiPayload,
    /// The body as sent
    pub body: Arc<str>,
}

/// How a broker session prepares a decision's request (each broker provides its own); `None`
/// when it cannot be prepared ahead (the session then builds and stores it itself).
pub type PrepareRequest = fn(&NewDecision) -> Option<PreparedRequest>;

/// An order of ours as the stream, cancels and replaces need it: its decision and, once
/// submitted, its execution at the broker.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct PlacedOrder {
    /// Decision surrogate key
    pub decision_pk: i64,
    /// The decision (= client order id)
    pub decision_id: Uuid,
    /// The strategy that sent it
    pub strategy: String,
    /// The account
    pub account: String,
    /// The instrument
    pub symbol: String,
    /// The decision's status
    pub decision_status: String,
    /// The execution's surrogate key, once submitted
    pub execution_pk: Option<i64>,
    /// The execution's id
    pub execution_id: Option<Uuid>,
    /// The execution's status
    pub execution_status: Option<String>,
    /// The broker's current order id
    pub broker_order_id: Option<String>,
    /// Filled so far
    pub filled_qty: Decimal,
}
