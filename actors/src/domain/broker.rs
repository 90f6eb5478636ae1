//! The IBKR sync model: fills as the broker reported them (the source of truth) and the parent
//! trades aggregated from their canonical fills.

use chrono::{DateTime, NaiveDate, Utc};
use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::Side;

/// How a fill finds its parent trade, in the spec's resolution order.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum ParentKey {
    /// The broker's permanent order id (when above 0)
    PermId(i64),
    /// Else the order reference the client gave the order
    OrderRef(String),
    /// Else the composite of client id, order id, symbol, side and the UTC trade date
    Composite {
        /// The API client that placed the order
        client_id: i64,
        /// Its order id within that client
        order_id: i64,
        /// The instrument
        symbol: String,
        /// Buy or sell
        side: Side,
        /// The execution's date in UTC
        trade_date: NaiveDate,
    },
}

impl ParentKey {
    /// The key of a fill with these identifiers.
    pub fn resolve(fill: &NewFill) -> Self {
        if fill.perm_id > 0 {
            Self::PermId(fill.perm_id)
        } else if let Some(order_ref) = &fill.order_ref {
            Self::OrderRef(order_ref.clone())
        } else {
            Self::Composite {
                client_id: fill.client_id,
                order_id: fill.order_id,
                symbol: fill.symbol.clone(),
                side: fill.side,
                trade_date: fill.executed_at.date_naive(),
            }
        }
    }

    /// 1, 2 or 3: the resolution rule that applies (how the store tells them apart).
    pub fn kind(&self) -> i16 {
        match self {
            Self::PermId(_) => 1,
            Self::OrderRef(_) => 2,
            Self::Composite { .. } => 3,
        }
    }
}

/// One execution, normalized for storage: exact decimals, a UTC time, the exec id split into
/// base and revision, and the raw broker record kept for audit.
#[derive(Debug, Clone)]
pub struct NewFill {
    /// The IBKR account
    pub account_id: String,
    /// The broker's execution id
    pub exec_id: String,
    /// The exec id without its correction revision
    pub exec_id_base: String,
    /// The correction revision (0 when the id has none)
    pub exec_revision: i32,
    /// Permanent order id (0 when TWS gives none)
    pub perm_id: i64,
    /// Order id within the placing client
    pub order_id: i64,
    /// The order reference, when the order had one
    pub order_ref: Option<String>,
    /// The placing API client
    pub client_id: i64,
    /// The instrument
    pub symbol: String,
    /// Security type (STK, OPT, ...)
    pub sec_type: String,
    /// Buy or sell
    pub side: Side,
    /// Where it executed
    pub exchange: String,
    /// Currency of the price
    pub currency: String,
    /// Liquidity flag (`added`, `removed`, `routed_out`), when known
    pub liquidity: Option<String>,
    /// When it executed
    pub executed_at: DateTime<Utc>,
    /// Shares
    pub quantity: Decimal,
    /// Price
    pub price: Decimal,
    /// The order's cumulative quantity after this execution
    pub cum_quantity: Decimal,
    /// The order's average price after this execution
    pub avg_price: Decimal,
    /// Commission, when the report came and set it
    pub commission: Option<Decimal>,
    /// Commission currency
    pub commission_currency: Option<String>,
    /// Realized P&L, when set
    pub realized_pnl: Option<Decimal>,
    /// The broker record as received (execution, contract and commission report), as JSON
    /// text: written once, stored as it is
    pub raw: Box<serde_json::value::RawValue>,
}

/// Status of a parent trade as far as its fills show it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TradeStatus {
    /// Its canonical fills add up to the cumulative quantity the broker reports
    Filled,
    /// The broker reports more cumulative quantity than the canonical fills held
    Partial,
    /// Cancelled (not derivable from executions; kept for other sources)
    Cancelled,
    /// No canonical quantity
    Unknown,
}

impl TradeStatus {
    /// The stored name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Filled => "filled",
            Self::Partial => "partial",
            Self::Cancelled => "cancelled",
            Self::Unknown => "unknown",
        }
    }

    /// Parses a stored name.
    pub fn parse(text: &str) -> Option<Self> {
        Some(match text {
            "filled" => Self::Filled,
            "partial" => Self::Partial,
            "cancelled" => Self::Cancelled,
            "unknown" => Self::Unknown,
            _ => return None,
        })
    }
}

/// A parent trade, as stored.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BrokerTrade {
    /// Its id
    pub id: i64,
    /// The IBKR account
    pub account_id: String,
    /// Permanent order id, when above 0
    pub ib_perm_id: Option<i64>,
    /// Order reference
    pub order_ref: Option<String>,
    /// Order id within the placing client
    pub ib_order_id: Option<i64>,
    /// The placing client
    pub client_id: Option<i64>,
    /// The instrument
    pub symbol: Option<String>,
    /// Security type
    pub sec_type: Option<String>,
    /// buy or sell
    pub side: Option<String>,
    /// Exchange of the first fill
    pub exchange: Option<String>,
    /// Currency
    pub currency: Option<String>,
    /// UTC date of the first fill
    pub trade_date: Option<NaiveDate>,
    /// filled, partial, cancelled or unknown
    pub status: String,
    /// Sum of the canonical fills' quantities
    pub total_quantity: Decimal,
    /// Quantity-weighted average price of the canonical fills (8 places)
    pub avg_price: Option<Decimal>,
    /// Sum of the canonical fills' commissions
    pub total_commission: Option<Decimal>,
    /// First canonical fill
    pub first_executed_at: Option<DateTime<Utc>>,
    /// Last canonical fill
    pub last_executed_at: Option<DateTime<Utc>>,
    /// When the sync that last changed it fetched its fills
    pub fetched_at: DateTime<Utc>,
    /// Created
    pub created_at: DateTime<Utc>,
    /// Last changed
    pub updated_at: DateTime<Utc>,
}

/// A stored fill.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BrokerFill {
    /// Its id
    pub id: i64,
    /// The parent trade
    pub trade_id: i64,
    /// The IBKR account
    pub account_id: String,
    /// The broker's execution id
    pub exec_id: String,
    /// The exec id without its revision
    pub exec_id_base: String,
    /// The correction revision
    pub exec_revision: i32,
    /// Whether this is the revision that counts
    pub is_canonical: bool,
    /// Permanent order id
    pub ib_perm_id: Option<i64>,
    /// Order id
    pub ib_order_id: Option<i64>,
    /// Order reference
    pub order_ref: Option<String>,
    /// Placing client
    pub client_id: Option<i64>,
    /// Instrument
    pub symbol: Option<String>,
    /// buy or sell
    pub side: Option<String>,
    /// Exchange
    pub exchange: Option<String>,
    /// Currency
    pub currency: Option<String>,
    /// Liquidity flag
    pub liquidity: Option<String>,
    /// When it executed
    pub executed_at: DateTime<Utc>,
    /// Shares
    pub quantity: Decimal,
    /// Price
    pub price: Decimal,
    /// Commission
    pub commission: Option<Decimal>,
    /// Commission currency
    pub commission_currency: Option<String>,
    /// Realized P&L
    pub realized_pnl: Option<Decimal>,
    /// The broker record as received
    pub raw: Value,
    /// Fetched by the sync that last wrote it
    pub fetched_at: DateTime<Utc>,
}

/// Which trades to list.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TradeFilter {
    /// Only this account
    pub account_id: Option<String>,
    /// Only this status
    pub status: Option<String>,
    /// Only this symbol
    pub symbol: Option<String>,
    /// At most this many (default 100, at most 1000)
    pub limit: Option<u32>,
}

impl TradeFilter {
    /// The default page size.
    pub const DEFAULT_LIMIT: u32 = 100;
    /// The largest page.
    pub const MAX_LIMIT: u32 = 1000;

    /// Checks the filter; the error says what is wrong.
    pub fn validate(&self) -> Result<(), String> {
        if let Some(status) = &self.status
            && TradeStatus::parse(status).is_none()
        {
            return Err(format!(
                "status must be one of filled, partial, cancelled, unknown; got {status:?}"
            ));
        }
        match self.limit {
            Some(0) => Err("limit must be at least 1".into()),
            Some(n) if n > Self::MAX_LIMIT => Err(format!(
                "limit must be at most {}, got {n}",
                Self::MAX_LIMIT
            )),
            _ => Ok(()),
        }
    }

    /// The effective page size.
    pub fn limit(&self) -> u32 {
        self.limit.unwrap_or(Self::DEFAULT_LIMIT)
    }
}

/// What one sync of one account did (the spec's metrics, plus what was unchanged).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SyncCounts {
    /// Executions received from the broker
    pub fetched_executions_count: u64,
    /// New fills stored
    pub inserted_executions_count: u64,
    /// Stored fills whose data changed (e.g. a commission report arrived)
    pub updated_executions_count: u64,
    /// Fills received exactly as stored (nothing written)
    pub unchanged_executions_count: u64,
    /// Fills that became or arrived non-canonical because a higher revision supersedes them
    pub canonical_changes_count: u64,
    /// Parent trades created or whose aggregates were recomputed
    pub touched_trades_count: u64,
    /// Parent trades created
    pub created_trades_count: u64,
    /// Executions refused alone (an unknown zone, side, ...), listed in the report
    #[serde(default)]
    pub rejected_executions_count: u64,
    /// Executions whose id has neither of IB's forms: kept whole, revision 0
    #[serde(default)]
    pub unrecognised_exec_ids_count: u64,
    /// Stored fills given a commission report that came apart from their execution
    #[serde(default)]
    pub late_commissions_count: u64,
}

impl SyncCounts {
    /// Row writes to fills and trades this sync made, counted per step (a fill stored already
    /// superseded counts twice), so an upper bound: 0 means nothing was written.
    pub fn writes(&self) -> u64 {
        self.inserted_executions_count
            + self.updated_executions_count
            + self.canonical_changes_count
            + self.touched_trades_count
    }
}

/// A finished sync.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SyncReport {
    /// The `sync_runs` row
    pub sync_run_id: i64,
    /// The ingestion run that logged it
    pub ingestion_run_id: uuid::Uuid,
    /// The account
    pub account_id: String,
    /// Start of the look-back window
    pub window_start: DateTime<Utc>,
    /// End of the window (when the fetch began)
    pub window_end: DateTime<Utc>,
    /// The counts
    #[serde(flatten)]
    pub counts: SyncCounts,
    /// Wall time of the whole sync, in milliseconds
    pub duration_ms: u64,
    /// Of which: fetching from TWS
    #[serde(default)]
    pub fetch_ms: u64,
    /// normalizing what it sent
    #[serde(default)]
    pub normalize_ms: u64,
    /// storing it (stage, fills, parents, aggregates, records) and committing
    #[serde(default)]
    pub store_ms: u64,
    /// The executions refused, each with its code and what TWS sent
    #[serde(default)]
    pub rejected: Vec<RejectedExecution>,
    /// What the sync noticed and the user should know (e.g. a session that is not TWS's
    /// Master API client)
    #[serde(default)]
    pub warnings: Vec<String>,
}

/// An execution a sync could not store, kept with why and what TWS sent.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RejectedExecution {
    /// The execution id
    pub exec_id: String,
    /// Its account
    pub account_id: String,
    /// A stable code (`unknown_time_zone`, `no_login_zone`, `time_gap`, `unknown_side`, ...)
    pub code: String,
    /// What is wrong
    pub message: String,
    /// The execution as received
    pub raw: serde_json::Value,
}
