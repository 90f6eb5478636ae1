//! The messages a sync uses: executions, contracts and commission reports, decoded from frames
//! and written as a server sends them.

use super::fields::{Fields, TwsTime};
use super::{TwsError, VERSION_PENDING_PRICE_REVISION, inc, malformed};
use rust_decimal::Decimal;

/// The contract part of an execution (what sync keeps of it).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Contract {
    /// IB contract id
    pub con_id: i64,
    /// Ticker
    pub symbol: String,
    /// STK, OPT, FUT, ...
    pub sec_type: String,
    /// Expiry of derivatives
    pub last_trade_date: String,
    /// Strike of options
    pub strike: Option<Decimal>,
    /// C or P
    pub right: String,
    /// Contract multiplier
    pub multiplier: String,
    /// Listing exchange
    pub exchange: String,
    /// Currency
    pub currency: String,
    /// Local symbol
    pub local_symbol: String,
    /// Trading class
    pub trading_class: String,
}

/// One EXECUTION_DATA message.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Execution {
    /// The request it answers (-1 for unsolicited)
    pub req_id: i64,
    /// The API order id
    pub order_id: i64,
    /// The instrument
    pub contract: Contract,
    /// The execution id (a correction differs only after the final period)
    pub exec_id: String,
    /// When it executed
    pub time: TwsTime,
    /// The account
    pub account: String,
    /// Where it executed
    pub exchange: String,
    /// BOT or SLD
    pub side: String,
    /// Quantity of this fill
    pub shares: Decimal,
    /// Price of this fill
    pub price: Decimal,
    /// IB's permanent order id (0 when unknown)
    pub perm_id: i64,
    /// The API client that placed the order
    pub client_id: i64,
    /// Whether it was a liquidation
    pub liquidation: i64,
    /// Cumulative quantity of the order
    pub cum_qty: Decimal,
    /// Average price of the order so far
    pub avg_price: Decimal,
    /// The order reference the client set
    pub order_ref: String,
    /// EV rule
    pub ev_rule: String,
    /// EV multiplier
    pub ev_multiplier: Option<Decimal>,
    /// Model code
    pub model_code: String,
    /// 1 added, 2 removed, 3 routed out
    pub last_liquidity: i64,
    /// Whether the price may still be revised (server 178+)
    pub pending_price_revision: bool,
}

/// One COMMISSION_REPORT message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CommissionReport {
    /// The execution it belongs to
    pub exec_id: String,
    /// The commission; `None` when TWS sent the unset marker
    pub commission: Option<Decimal>,
    /// Its currency
    pub currency: String,
    /// Realized P&L, when known
    pub realized_pnl: Option<Decimal>,
}

/// One POSITION_DATA message: what the login holds in one instrument of one account.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Position {
    /// The account
    pub account: String,
    /// The instrument (its `exchange` is often empty: TWS names the primary exchange only)
    pub contract: Contract,
    /// Shares or contracts, negative when short; zero for a position closed today
    pub position: Decimal,
    /// TWS's average cost (per share for a stock; times the multiplier for a derivative)
    pub avg_cost: Option<Decimal>,
}

/// One incoming message, as far as sync cares.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Incoming {
    /// The next order id the client may use (TWS sends it after START_API)
    NextValidId(i64),
    /// The accounts of the login
    ManagedAccounts(Vec<String>),
    /// One execution
    Execution(Box<Execution>),
    /// The end of the executions of a request
    ExecutionDataEnd {
        /// The request
        req_id: i64,
    },
    /// A commission report
    Commission(CommissionReport),
    /// One position of a positions request (or an update TWS pushes until it is cancelled)
    Position(Box<Position>),
    /// The end of the positions TWS holds now
    PositionEnd,
    /// An error or notice
    Error {
        /// The request it concerns (-1 for none)
        id: i64,
        /// The TWS error code (2100+ are notices)
        code: i64,
        /// The text
        message: String,
    },
    /// A message sync does not need
    Other(u32),
}

/// Decodes one frame sent by a server of `server_version`.
pub fn decode(payload: &[u8], server_version: u32) -> Result<Incoming, TwsError> {
    let mut f = Fields::parse(payload)?;
    let id: u32 = f.int("message id")?;
    let message = match id {
        inc::NEXT_VALID_ID => {
            let _version: i64 = f.int("version")?;
            Incoming::NextValidId(f.int("order id")?)
        }
        inc::MANAGED_ACCOUNTS => {
            let _version: i64 = f.int("version")?;
            let list = f.string("accounts")?;
            Incoming::ManagedAccounts(
                list.split(',')
                    .map(str::trim)
                    .filter(|a| !a.is_empty())
                    .map(str::to_string)
                    .collect(),
            )
        }
        inc::EXECUTION_DATA => {
            Incoming::Execution(Box::new(decode_execution(&mut f, server_version)?))
        }
        inc::EXECUTION_DATA_END => {
            let _version: i64 = f.int("version")?;
            Incoming::ExecutionDataEnd {
                req_id: f.int("request id")?,
            }
        }
        inc::COMMISSION_REPORT => {
            let _version: i64 = f.int("version")?;
            let exec_id = f.string("exec id")?.to_string();
            let commission = f.decimal_or_unset("commission")?;
            let currency = f.string("currency")?.to_string();
            let realized_pnl = f.decimal_or_unset("realized pnl")?;
            Incoming::Commission(CommissionReport {
                exec_id,
                commission,
                currency,
                realized_pnl,
            })
        }
        inc::POSITION_DATA => Incoming::Position(Box::new(decode_position(&mut f)?)),
        inc::POSITION_END => {
            let _version: i64 = f.int("version")?;
            Incoming::PositionEnd
        }
        inc::ERROR => {
            let _version: i64 = f.int("version")?;
            Incoming::Error {
                id: f.int("id")?,
                code: f.int("code")?,
                message: f.string("message")?.to_string(),
            }
        }
        other => Incoming::Other(other),
    };
    Ok(message)
}

/// A contract as executions and positions carry it: id, symbol, type, expiry, strike, right,
/// multiplier, exchange, currency, local symbol, trading class.
fn decode_contract(f: &mut Fields<'_>) -> Result<Contract, TwsError> {
    Ok(Contract {
        con_id: f.int("con id")?,
        symbol: f.string("symbol")?.to_string(),
        sec_type: f.string("sec type")?.to_string(),
        last_trade_date: f.string("last trade date")?.to_string(),
        strike: f.decimal("strike")?,
        right: f.string("right")?.to_string(),
        multiplier: f.string("multiplier")?.to_string(),
        exchange: f.string("exchange")?.to_string(),
        currency: f.string("currency")?.to_string(),
        local_symbol: f.string("local symbol")?.to_string(),
        trading_class: f.string("trading class")?.to_string(),
    })
}

/// POSITION_DATA, version 3 (what every server version of the text protocol sends): the
/// account, the contract with its trading class, the position and the average cost.
fn decode_position(f: &mut Fields<'_>) -> Result<Position, TwsError> {
    let version: i64 = f.int("version")?;
    if version < 3 {
        return Err(malformed(format!(
            "position message version {version}: tradegate reads version 3"
        )));
    }
    let account = f.string("account")?.to_string();
    let contract = decode_contract(f)?;
    if contract.symbol.is_empty() {
        return Err(malformed(format!(
            "a position of {account} without a symbol"
        )));
    }
    let position = f.decimal("position")?.ok_or_else(|| {
        malformed(format!(
            "the {} position of {account} without a quantity",
            contract.symbol
        ))
    })?;
    let avg_cost = f.decimal_or_unset("average cost")?;
    Ok(Position {
        account,
        contract,
        position,
        avg_cost,
    })
}

pub(super) fn decode_execution(
    f: &mut Fields<'_>,
    server_version: u32,
) -> Result<Execution, TwsError> {
    let req_id = f.int("request id")?;
    let order_id = f.int("order id")?;
    let contract = decode_contract(f)?;
    let exec_id = f.string("exec id")?.to_string();
    if exec_id.is_empty() {
        return Err(malformed("execution without exec id"));
    }
    let time = TwsTime::parse(f.string("time")?)?;
    let account = f.string("account")?.to_string();
    let exchange = f.string("exchange")?.to_string();
    let side = f.string("side")?.to_string();
    let required = |value: Option<Decimal>, what: &str| {
        value.ok_or_else(|| malformed(format!("execution {exec_id} without {what}")))
    };
    let shares = required(f.decimal("shares")?, "shares")?;
    let price = required(f.decimal("price")?, "price")?;
    let perm_id = f.int("perm id")?;
    let client_id = f.int("client id")?;
    let liquidation = f.int("liquidation")?;
    let cum_qty = f.decimal("cum qty")?.unwrap_or_default();
    let avg_price = f.decimal("avg price")?.unwrap_or_default();
    let order_ref = f.string("order ref")?.to_string();
    let ev_rule = f.string("ev rule")?.to_string();
    let ev_multiplier = f.decimal_or_unset("ev multiplier")?;
    let model_code = f.string("model code")?.to_string();
    let last_liquidity = f.int("last liquidity")?;
    let pending_price_revision = if server_version >= VERSION_PENDING_PRICE_REVISION {
        f.flag("pending price revision")?
    } else {
        false
    };
    Ok(Execution {
        req_id,
        order_id,
        contract,
        exec_id,
        time,
        account,
        exchange,
        side,
        shares,
        price,
        perm_id,
        client_id,
        liquidation,
        cum_qty,
        avg_price,
        order_ref,
        ev_rule,
        ev_multiplier,
        model_code,
        last_liquidity,
        pending_price_revision,
    })
}

/// The fields of an EXECUTION_DATA message as a server of `server_version` sends them (used by
/// the simulated TWS; `decode` reads them back).
pub fn execution_fields(e: &Execution, server_version: u32) -> Vec<String> {
    let opt = |d: Option<Decimal>| d.map(|d| d.to_string()).unwrap_or_default();
    let mut fields = vec![
        inc::EXECUTION_DATA.to_string(),
        e.req_id.to_string(),
        e.order_id.to_string(),
    ];
    fields.extend(contract_fields(&e.contract));
    fields.extend([
        e.exec_id.clone(),
        e.time.to_string(),
        e.account.clone(),
        e.exchange.clone(),
        e.side.clone(),
        e.shares.to_string(),
        e.price.to_string(),
        e.perm_id.to_string(),
        e.client_id.to_string(),
        e.liquidation.to_string(),
        e.cum_qty.to_string(),
        e.avg_price.to_string(),
        e.order_ref.clone(),
        e.ev_rule.clone(),
        opt(e.ev_multiplier),
        e.model_code.clone(),
        e.last_liquidity.to_string(),
    ]);
    if server_version >= VERSION_PENDING_PRICE_REVISION {
        fields.push(if e.pending_price_revision { "1" } else { "0" }.to_string());
    }
    fields
}

/// The fields of a POSITION_DATA message as a server sends them (used by the simulated TWS).
pub fn position_fields(p: &Position) -> Vec<String> {
    let mut fields = vec![
        inc::POSITION_DATA.to_string(),
        "3".into(),
        p.account.clone(),
    ];
    fields.extend(contract_fields(&p.contract));
    fields.push(p.position.to_string());
    fields.push(p.avg_cost.map(|d| d.to_string()).unwrap_or_default());
    fields
}

/// A contract's fields as [`decode_contract`] reads them.
fn contract_fields(c: &Contract) -> [String; 11] {
    [
        c.con_id.to_string(),
        c.symbol.clone(),
        c.sec_type.clone(),
        c.last_trade_date.clone(),
        c.strike.map(|d| d.to_string()).unwrap_or_default(),
        c.right.clone(),
        c.multiplier.clone(),
        c.exchange.clone(),
        c.currency.clone(),
        c.local_symbol.clone(),
        c.trading_class.clone(),
    ]
}

/// The fields of a COMMISSION_REPORT message as a server sends them; an unknown commission or
/// P&L is written as Java's `Double.MAX_VALUE`, as TWS does.
pub fn commission_fields(c: &CommissionReport) -> Vec<String> {
    const UNSET: &str = "1.7976931348623157E308";
    let value = |d: Option<Decimal>| d.map_or_else(|| UNSET.to_string(), |d| d.to_string());
    vec![
        inc::COMMISSION_REPORT.to_string(),
        "1".into(),
        c.exec_id.clone(),
        value(c.commission),
        c.currency.clone(),
        value(c.realized_pnl),
        String::new(),
        String::new(),
    ]
}
