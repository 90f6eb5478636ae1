//! Trade decisions as the outbox stores them, and the data lineage that proves what data a
//! decision was based on.

use std::time::Duration;

use chrono::{DateTime, Utc};
use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use uuid::Uuid;

use super::trade_log::Side;

/// Order types (Alpaca's spelling).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OrderType {
    /// At the market
    Market,
    /// At `limit_price` or better
    Limit,
    /// A market order once `stop_price` trades
    Stop,
    /// A limit order once `stop_price` trades
    StopLimit,
    /// A stop that follows the price
    TrailingStop,
}

impl OrderType {
    /// The SQL and broker spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Market => "market",
            Self::Limit => "limit",
            Self::Stop => "stop",
            Self::StopLimit => "stop_limit",
            Self::TrailingStop => "trailing_stop",
        }
    }
}

/// Time in force (Alpaca's spelling).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TimeInForce {
    /// The trading day
    Day,
    /// Until cancelled
    Gtc,
    /// At the open
    Opg,
    /// At the close
    Cls,
    /// Immediate or cancel
    Ioc,
    /// Fill or kill
    Fok,
}

impl TimeInForce {
    /// The SQL and broker spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Day => "day",
            Self::Gtc => "gtc",
            Self::Opg => "opg",
            Self::Cls => "cls",
            Self::Ioc => "ioc",
            Self::Fok => "fok",
        }
    }
}

/// The signal a decision acts on: a polymorphic reference (type and id).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PrimarySignal {
    /// The kind of signal, e.g. `QuiverTrade`
    #[serde(rename = "type")]
    pub signal_type: String,
    /// Its id
    pub id: String,
}

/// A decision to be written to the outbox.
#[derive(Debug, Clone, PartialEq)]
pub struct NewDecision {
    /// Its id, also the broker `client_order_id`
    pub decision_id: Uuid,
    /// The strategy that made it
    pub strategy_name: String,
    /// The strategy's version
    pub strategy_version: String,
    /// The broker account it trades in
    pub account: String,
    /// The instrument
    pub symbol: String,
    /// buy or sell
    pub side: Side,
    /// How many shares; `None` for a notional order
    pub quantity: Option<Decimal>,
    /// How many dollars (a notional order: market, day, fractional shares); `None` for a
    /// quantity
    pub notional: Option<Decimal>,
    /// market, limit, ...
    pub order_type: OrderType,
    /// Required by limit and stop-limit orders
    pub limit_price: Option<Decimal>,
    /// Required by stop and stop-limit orders
    pub stop_price: Option<Decimal>,
    /// day, gtc, ...
    pub time_in_force: TimeInForce,
    /// How strong the signal is (orders a batch)
    pub signal_strength: Option<Decimal>,
    /// The signal acted on
    pub primary_signal: Option<PrimarySignal>,
    /// The ingestion run whose data the decision rests on; must exist and be completed
    pub primary_ingestion_run_id: Option<Uuid>,
    /// Strategy-specific context (a JSON object); `data_lineage` is filled in on insert
    pub rationale: Option<Value>,
}

/// How far back a decision's data lineage looks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LineagePolicy {
    /// Runs completed within this long before the decision are listed
    pub window: Duration,
    /// At most this many, newest first
    pub max_runs: u32,
}

/// One run in a decision's data lineage.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LineageRun {
    /// The run's public id
    pub run_id: Uuid,
    /// Its job
    pub task: String,
    /// Its data source
    pub source: String,
    /// When its data became available
    pub completed_at: DateTime<Utc>,
}

/// Why a decision was refused before it was written (an expected outcome, answered to the
/// strategy; nothing is stored or sent).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
#[error("{code}: {message}")]
pub struct DecisionReject {
    /// A stable reason code, e.g. `lineage.unknown_run`
    pub code: String,
    /// What happened, for a person
    pub message: String,
}

impl DecisionReject {
    /// A reject with `code` and `message`.
    pub fn new(code: super::RejectCode, message: impl Into<String>) -> Self {
        Self {
            code: code.as_str().into(),
            message: message.into(),
        }
    }
}

/// A decision as committed.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CreatedDecision {
    /// Surrogate key
    pub id: i64,
    /// Its public id
    pub decision_id: Uuid,
    /// pending, executed, failed or cancelled
    pub status: String,
    /// The rationale with its `data_lineage`
    pub decision_rationale: Value,
    /// Surrogate key of the primary ingestion run
    pub primary_ingestion_run_id: Option<i64>,
    /// The commit's clock
    pub created_at: DateTime<Utc>,
}

impl NewDecision {
    /// The checks that need no database: names, a positive quantity, the prices the order type
    /// needs, a rationale that is an object.
    pub fn validate(&self) -> Result<(), DecisionReject> {
        let invalid =
            |message: String| Err(DecisionReject::new(super::RejectCode::Invalid, message));
        for (what, value) in [
            ("strategy", &self.strategy_name),
            ("account", &self.account),
            ("symbol", &self.symbol),
        ] {
            if value.trim().is_empty() {
                return invalid(format!("{what} must not be empty"));
            }
        }
        match (self.quantity, self.notional) {
            (Some(_), Some(_)) => return invalid("give qty or notional, not both".into()),
            (None, None) => return invalid("qty or notional is required".into()),
            (Some(q), None) if q <= Decimal::ZERO => {
                return invalid(format!("quantity must be positive, got {q}"));
            }
            (None, Some(n)) if n <= Decimal::ZERO => {
                return invalid(format!("notional must be positive, got {n}"));
            }
            (None, Some(_))
                if self.order_type != OrderType::Market
                    || self.time_in_force != crate::domain::TimeInForce::Day =>
            {
                return invalid("a notional order must be a market order for the day".into());
            }
            _ => {}
        }
        let needs_limit = matches!(self.order_type, OrderType::Limit | OrderType::StopLimit);
        let needs_stop = matches!(self.order_type, OrderType::Stop | OrderType::StopLimit);
        if needs_limit && self.limit_price.is_none() {
            return invalid(format!(
                "a {} order needs limit_price",
                self.order_type.as_str()
            ));
        }
        if needs_stop && self.stop_price.is_none() {
            return invalid(format!(
                "a {} order needs stop_price",
                self.order_type.as_str()
            ));
        }
        for (what, price) in [
            ("limit_price", self.limit_price),
            ("stop_price", self.stop_price),
        ] {
            if price.is_some_and(|p| p <= Decimal::ZERO) {
                return invalid(format!("{what} must be positive"));
            }
        }
        match &self.rationale {
            None | Some(Value::Object(_)) => Ok(()),
            Some(_) => invalid("rationale must be a JSON object".into()),
        }
    }
}

/// The rationale as written: the strategy's own keys, with `data_lineage.window_secs` (and
/// `data_lineage.primary_ingestion_run` when one is named) filled in, and
/// `data_lineage.ingestion_runs` empty for the decisions insert to fill at its own clock. Keys
/// the strategy put in `data_lineage` itself are kept.
pub fn rationale_with_lineage(
    rationale: Option<&Value>,
    primary: Option<&LineageRun>,
    policy: LineagePolicy,
) -> Value {
    let mut root = match rationale {
        Some(Value::Object(map)) => map.clone(),
        _ => serde_json::Map::new(),
    };
    let mut lineage = match root.remove("data_lineage") {
        Some(Value::Object(map)) => map,
        _ => serde_json::Map::new(),
    };
    lineage.insert("ingestion_runs".into(), Value::Array(Vec::new()));
    lineage.insert("window_secs".into(), Value::from(policy.window.as_secs()));
    if let Some(primary) = primary {
        lineage.insert(
            "primary_ingestion_run".into(),
            serde_json::to_value(primary).unwrap_or(Value::Null),
        );
    }
    root.insert("data_lineage".into(), Value::Object(lineage));
    Value::Object(root)
}
