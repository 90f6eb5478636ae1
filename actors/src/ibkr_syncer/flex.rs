//! IB Flex Query reports: the backfill of executions older than TWS's window. TWS and IB Gateway
//! serve executions since midnight (up to 7 days only where TWS's Trade Log setting says so), so
//! a gateway down across midnight would lose those fills; IB's Flex reports (an Activity Flex
//! Query with its Trades section at execution level, or a Trade Confirmation Flex Query) list
//! them for any range. This module reads such a report (IB's XML) into [`NewFill`]s with the
//! same exec ids, revisions and parent keys as TWS's, so they are applied through the same
//! idempotent path ([`super::backfill`]).
//!
//! What Flex writes: `FlexQueryResponse > FlexStatements > FlexStatement(accountId, fromDate,
//! toDate, whenGenerated) > Trades > Trade` (or `TradeConfirms > TradeConfirm`), every value an
//! attribute. Of a trade: `ibExecID` (TradeConfirm: `execID`) is TWS's exec id; `ibOrderID` the
//! perm id; `buySell` BUY/SELL (a ` (Ca.)` suffix marks a cancellation); `quantity` negative
//! for sells; `tradePrice`; `ibCommission` negative (a cost); `fifoPnlRealized`; `dateTime`
//! as the query's date and time formats put it (`yyyyMMdd;HHmmss` by default), in Eastern time.
//! Rows of other levels of detail (ORDER, CLOSED_LOT, summaries, or `Order`/`Lot` elements) are
//! not executions and are counted, not stored.

use std::borrow::Cow;
use std::collections::HashMap;
use std::str::FromStr;

use chrono::{NaiveDate, NaiveDateTime, NaiveTime};
use chrono_tz::Tz;
use quick_xml::events::{BytesStart, Event};
use rust_decimal::Decimal;
use serde::Serialize;
use serde::ser::SerializeMap;
use serde_json::value::RawValue;

use super::fills::{FillError, resolve_time};
use super::tws::{TwsTime, parse_exec_id};
use crate::domain::{NewFill, RejectedExecution, Side};

/// Why a Flex report cannot be read as a whole.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FlexError {
    /// Not well-formed XML, or not in any encoding tradegate reads
    #[error("the Flex report is not readable XML: {0}")]
    Malformed(String),
    /// The document is a Flex Web Service answer (an error), not a report
    #[error("IB's Flex Web Service answered error {code}: {message}")]
    Service {
        /// IB's error code (1001-1021)
        code: u32,
        /// IB's message
        message: String,
    },
    /// Some other document
    #[error(
        "the document is not a Flex Query report (its root element is <{0}>, not <FlexQueryResponse>)"
    )]
    NotAReport(String),
    /// Trades are listed, but none at the execution level
    #[error(
        "the Flex report lists {0} trade rows but none at the execution level: in the Flex \
         Query's Trades section, tick Options > Execution (tradegate stores executions, not \
         orders or closed lots)"
    )]
    NoExecutions(u64),
}

impl FlexError {
    /// A stable code for APIs and metrics.
    pub fn code(&self) -> &'static str {
        match self {
            Self::Malformed(_) => "flex_malformed",
            Self::Service { .. } => "flex_refused",
            Self::NotAReport(_) => "flex_not_a_report",
            Self::NoExecutions(_) => "flex_no_executions",
        }
    }
}

/// One `FlexStatement`: an account's report over a range.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FlexStatement {
    /// `accountId`
    pub account_id: String,
    /// `fromDate`, when it parses
    pub from_date: Option<NaiveDate>,
    /// `toDate`, when it parses
    pub to_date: Option<NaiveDate>,
    /// The statement's own attributes (kept with every fill it gives)
    pub attributes: Vec<(String, String)>,
    /// Its execution-level trade rows, in document order
    pub rows: Vec<FlexRow>,
    /// Trade rows of another level of detail (orders, lots, summaries): not executions
    pub ignored_rows: u64,
}

/// One execution-level row (`Trade` or `TradeConfirm`), its attributes as IB wrote them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FlexRow {
    /// `Trade` or `TradeConfirm`
    pub element: String,
    /// Its attributes (empty ones left out)
    pub attributes: Vec<(String, String)>,
}

impl FlexRow {
    /// The value of attribute `name`, if given and not empty.
    pub fn get(&self, name: &str) -> Option<&str> {
        attribute(&self.attributes, name)
    }
}

fn attribute<'a>(attributes: &'a [(String, String)], name: &str) -> Option<&'a str> {
    attributes
        .iter()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.trim())
        .filter(|v| !v.is_empty())
}

/// Decodes a report's bytes: UTF-8 (with or without a byte-order mark), else the encoding its
/// XML declaration names.
pub fn decode_document(bytes: &[u8]) -> Result<Cow<'_, str>, FlexError> {
    let bytes = bytes.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(bytes);
    if let Ok(text) = std::str::from_utf8(bytes) {
        return Ok(Cow::Borrowed(text));
    }
    let head = String::from_utf8_lossy(&bytes[..bytes.len().min(200)]).into_owned();
    let label = head
        .split_once("encoding=")
        .and_then(|(_, rest)| {
            let quote = rest.chars().next()?;
            rest.strip_prefix(quote)?
                .split(quote)
                .next()
                .map(str::to_string)
        })
        .ok_or_else(|| {
            FlexError::Malformed("not UTF-8, and no encoding is declared".to_string())
        })?;
    let encoding = encoding_rs::Encoding::for_label(label.as_bytes())
        .ok_or_else(|| FlexError::Malformed(format!("unknown encoding {label:?}")))?;
    let (text, _, had_errors) = encoding.decode(bytes);
    if had_errors {
        return Err(FlexError::Malformed(format!("not valid {label}")));
    }
    Ok(Cow::Owned(text.into_owned()))
}

fn attributes_of(e: &BytesStart<'_>) -> Result<Vec<(String, String)>, FlexError> {
    let mut out = Vec::new();
    for a in e.attributes() {
        let a = a.map_err(|e| FlexError::Malformed(e.to_string()))?;
        let value = a
            .unescape_value()
            .map_err(|e| FlexError::Malformed(e.to_string()))?;
        if value.trim().is_empty() {
            continue;
        }
        let key = String::from_utf8_lossy(a.key.as_ref()).into_owned();
        out.push((key, value.into_owned()));
    }
    Ok(out)
}

/// The answer of the Flex Web Service (`FlexStatementResponse`): a reference code, or an error.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ServiceAnswer {
    /// `Status` Success: the reference code to fetch the statement with
    Reference(String),
    /// `Status` Fail (or Warn): IB's code and message
    Error {
        /// `ErrorCode`
        code: u32,
        /// `ErrorMessage`
        message: String,
    },
}

/// Reads a `FlexStatementResponse` document.
pub fn parse_service_answer(xml: &str) -> Result<ServiceAnswer, FlexError> {
    let mut reader = quick_xml::Reader::from_str(xml);
    let mut current: Option<String> = None;
    let mut fields: HashMap<String, String> = HashMap::new();
    let mut root: Option<String> = None;
    loop {
        match reader
            .read_event()
            .map_err(|e| FlexError::Malformed(e.to_string()))?
        {
            Event::Start(e) => {
                let name = String::from_utf8_lossy(e.local_name().as_ref()).into_owned();
                if root.is_none() {
                    root = Some(name.clone());
                }
                current = Some(name);
            }
            Event::Text(t) => {
                if let Some(name) = &current {
                    let text = t
                        .decode()
                        .map_err(|e| FlexError::Malformed(e.to_string()))?;
                    let text = quick_xml::escape::unescape(&text)
                        .map_err(|e| FlexError::Malformed(e.to_string()))?;
                    fields
                        .entry(name.clone())
                        .or_default()
                        .push_str(text.trim());
                }
            }
            Event::CData(t) => {
                if let Some(name) = &current {
                    fields
                        .entry(name.clone())
                        .or_default()
                        .push_str(String::from_utf8_lossy(&t).trim());
                }
            }
            Event::End(_) => current = None,
            Event::Eof => break,
            _ => {}
        }
    }
    match root.as_deref() {
        Some("FlexStatementResponse") => {}
        Some(other) => return Err(FlexError::NotAReport(other.to_string())),
        None => return Err(FlexError::Malformed("an empty document".into())),
    }
    let status = fields.get("Status").map(String::as_str).unwrap_or_default();
    if status.eq_ignore_ascii_case("Success")
        && let Some(reference) = fields.get("ReferenceCode").filter(|r| !r.is_empty())
    {
        return Ok(ServiceAnswer::Reference(reference.clone()));
    }
    let code = fields
        .get("ErrorCode")
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let message = fields
        .get("ErrorMessage")
        .cloned()
        .unwrap_or_else(|| format!("status {status:?} without an error message"));
    Ok(ServiceAnswer::Error { code, message })
}

/// The local name of a document's root element (`FlexQueryResponse`, `FlexStatementResponse`).
pub fn root_element(xml: &str) -> Result<String, FlexError> {
    let mut reader = quick_xml::Reader::from_str(xml);
    loop {
        match reader
            .read_event()
            .map_err(|e| FlexError::Malformed(e.to_string()))?
        {
            Event::Start(e) | Event::Empty(e) => {
                return Ok(String::from_utf8_lossy(e.local_name().as_ref()).into_owned());
            }
            Event::Eof => return Err(FlexError::Malformed("an empty document".into())),
            _ => {}
        }
    }
}

/// Whether a trade row is an execution: `Trade`/`TradeConfirm` rows whose `levelOfDetail` is
/// `EXECUTION` (or absent, in queries that write no level).
fn is_execution(element: &str, attributes: &[(String, String)]) -> bool {
    matches!(element, "Trade" | "TradeConfirm")
        && attribute(attributes, "levelOfDetail")
            .is_none_or(|l| l.eq_ignore_ascii_case("EXECUTION"))
}

/// Parses a Flex Query report (see the module docs). A `FlexStatementResponse` (the Web
/// Service's error answer) is [`FlexError::Service`].
pub fn parse_report(xml: &str) -> Result<Vec<FlexStatement>, FlexError> {
    match root_element(xml)?.as_str() {
        "FlexQueryResponse" => {}
        "FlexStatementResponse" => {
            return match parse_service_answer(xml)? {
                ServiceAnswer::Error { code, message } => Err(FlexError::Service { code, message }),
                ServiceAnswer::Reference(_) => {
                    Err(FlexError::NotAReport("FlexStatementResponse".into()))
                }
            };
        }
        other => return Err(FlexError::NotAReport(other.to_string())),
    }
    let mut reader = quick_xml::Reader::from_str(xml);
    let mut statements: Vec<FlexStatement> = Vec::new();
    // the section a row is in (`Trades`, `TradeConfirms`), by depth
    let mut section: Option<(String, usize)> = None;
    let mut depth = 0usize;
    let mut trade_rows = 0u64;
    let mut root_closed = false;
    let mut declared: Option<usize> = None;
    loop {
        let event = reader
            .read_event()
            .map_err(|e| FlexError::Malformed(e.to_string()))?;
        let (e, empty) = match event {
            Event::Start(e) => (e, false),
            Event::Empty(e) => (e, true),
            Event::End(_) => {
                depth = depth.saturating_sub(1);
                if section.as_ref().is_some_and(|(_, d)| *d == depth) {
                    section = None;
                }
                root_closed |= depth == 0;
                continue;
            }
            Event::Eof => break,
            _ => continue,
        };
        let name = String::from_utf8_lossy(e.local_name().as_ref()).into_owned();
        match name.as_str() {
            "FlexStatements" => {
                declared = attribute(&attributes_of(&e)?, "count").and_then(|c| c.parse().ok());
            }
            "FlexStatement" => {
                let attributes = attributes_of(&e)?;
                let date = |key: &str| attribute(&attributes, key).and_then(parse_date);
                statements.push(FlexStatement {
                    account_id: attribute(&attributes, "accountId")
                        .unwrap_or_default()
                        .to_string(),
                    from_date: date("fromDate"),
                    to_date: date("toDate"),
                    rows: Vec::new(),
                    ignored_rows: 0,
                    attributes,
                });
            }
            "Trades" | "TradeConfirms" if !empty => section = Some((name.clone(), depth)),
            _ if section.is_some() => {
                let attributes = attributes_of(&e)?;
                let Some(statement) = statements.last_mut() else {
                    return Err(FlexError::Malformed(format!(
                        "a <{name}> outside any <FlexStatement>"
                    )));
                };
                // rows that are no exchange execution (an expiry, an assignment, a book
                // trade) carry no exec id: they are not fills TWS would send
                let not_exchange = attribute(&attributes, "transactionType")
                    .is_some_and(|t| t != "ExchTrade")
                    && attribute(&attributes, "ibExecID")
                        .or_else(|| attribute(&attributes, "execID"))
                        .is_none();
                if is_execution(&name, &attributes) && !not_exchange {
                    statement.rows.push(FlexRow {
                        element: name,
                        attributes,
                    });
                } else {
                    statement.ignored_rows += 1;
                    // rows of another level of detail (not rows that are no execution)
                    trade_rows += u64::from(!not_exchange);
                }
            }
            _ => {}
        }
        if !empty {
            depth += 1;
        }
    }
    if !root_closed {
        return Err(FlexError::Malformed(
            "the report ends before </FlexQueryResponse>: it was cut off (a download or a copy \
             that did not finish); nothing of it is imported"
                .into(),
        ));
    }
    if let Some(n) = declared
        && n != statements.len()
    {
        return Err(FlexError::Malformed(format!(
            "<FlexStatements count=\"{n}\"> but {} statements follow",
            statements.len()
        )));
    }
    let executions: usize = statements.iter().map(|s| s.rows.len()).sum();
    if executions == 0 && trade_rows > 0 {
        return Err(FlexError::NoExecutions(trade_rows));
    }
    Ok(statements)
}

/// A Flex date: `yyyyMMdd` or `yyyy-MM-dd` (the query's date format; the day-month orders
/// such as `MM/dd/yyyy` are refused, as `01/02` can be read two ways).
fn parse_date(text: &str) -> Option<NaiveDate> {
    NaiveDate::parse_from_str(text, "%Y%m%d")
        .or_else(|_| NaiveDate::parse_from_str(text, "%Y-%m-%d"))
        .ok()
}

/// A Flex time of day: `HHmmss` or `HH:mm:ss`.
fn parse_clock(text: &str) -> Option<NaiveTime> {
    NaiveTime::parse_from_str(text, "%H%M%S")
        .or_else(|_| NaiveTime::parse_from_str(text, "%H:%M:%S"))
        .ok()
}

/// How a Flex time should be written (the Flex Query's date and time formats).
const TIME_FORMATS: &str = "set the Flex query's date format to yyyyMMdd or yyyy-MM-dd and its \
    time format to HHmmss or HH:mm:ss";

/// Why a row's time cannot be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RowTimeError {
    /// `dateTime` in a form tradegate does not read
    #[error("dateTime {0:?} is not in a form tradegate reads: {TIME_FORMATS}")]
    DateTime(String),
    /// `dateTime` is a date only, and no `tradeTime` goes with it
    #[error(
        "dateTime {0:?} has no time of day: include the time in the Flex query ({TIME_FORMATS})"
    )]
    NoTimeOfDay(String),
    /// `tradeDate` / `tradeTime` in a form tradegate does not read
    #[error(
        "tradeDate {date:?} / tradeTime {clock:?} are not in a form tradegate reads: {TIME_FORMATS}"
    )]
    TradeDateTime {
        /// `tradeDate`
        date: String,
        /// `tradeTime`
        clock: String,
    },
    /// No time at all
    #[error("the row has no dateTime (nor tradeDate and tradeTime)")]
    Missing,
}

/// When a row executed, as wall time: its `dateTime` (date and time joined by `;`, `,`, a space
/// or `T`), else `tradeDate` with `tradeTime`.
pub fn row_time(row: &FlexRow) -> Result<NaiveDateTime, RowTimeError> {
    if let Some(text) = row.get("dateTime") {
        if let Some((date, clock)) = text.split_once([';', ',', ' ', 'T']) {
            return match (parse_date(date.trim()), parse_clock(clock.trim())) {
                (Some(d), Some(t)) => Ok(d.and_time(t)),
                _ => Err(RowTimeError::DateTime(text.to_string())),
            };
        }
        if let (Some(d), Some(t)) = (parse_date(text), row.get("tradeTime").and_then(parse_clock)) {
            return Ok(d.and_time(t));
        }
        return Err(RowTimeError::NoTimeOfDay(text.to_string()));
    }
    match (row.get("tradeDate"), row.get("tradeTime")) {
        (Some(date), Some(clock)) => match (parse_date(date), parse_clock(clock)) {
            (Some(d), Some(t)) => Ok(d.and_time(t)),
            _ => Err(RowTimeError::TradeDateTime {
                date: date.to_string(),
                clock: clock.to_string(),
            }),
        },
        _ => Err(RowTimeError::Missing),
    }
}

/// Attributes serialized as a JSON object in document order.
struct Attributes<'a>(&'a [(String, String)]);

impl Serialize for Attributes<'_> {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut map = serializer.serialize_map(Some(self.0.len()))?;
        for (k, v) in self.0 {
            map.serialize_entry(k, v)?;
        }
        map.end()
    }
}

/// The raw record of a Flex fill: where it came from, its statement and the row as IB wrote it.
#[derive(Serialize)]
struct RawFlex<'a> {
    source: &'static str,
    element: &'a str,
    statement: Attributes<'a>,
    trade: Attributes<'a>,
}

/// The `source` of a raw record written from a Flex report.
pub const RAW_SOURCE: &str = "ib_flex";

fn raw(statement: &FlexStatement, row: &FlexRow) -> Result<Box<RawValue>, serde_json::Error> {
    serde_json::value::to_raw_value(&RawFlex {
        source: RAW_SOURCE,
        element: &row.element,
        statement: Attributes(&statement.attributes),
        trade: Attributes(&row.attributes),
    })
}

/// A commission from a Flex row, as the raw record's `commission_report` holds it when it is
/// given to a fill stored from TWS without one.
#[derive(Serialize)]
struct RawCommission<'a> {
    source: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    commission: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    currency: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    realized_pnl: Option<String>,
}

/// The commission report record of a Flex fill (see [`RawCommission`]).
pub fn commission_record(fill: &NewFill) -> Result<Box<RawValue>, serde_json::Error> {
    serde_json::value::to_raw_value(&RawCommission {
        source: RAW_SOURCE,
        commission: fill.commission.map(|c| c.to_string()),
        currency: fill.commission_currency.as_deref(),
        realized_pnl: fill.realized_pnl.map(|c| c.to_string()),
    })
}

fn decimal(row: &FlexRow, name: &str) -> Result<Option<Decimal>, String> {
    row.get(name)
        .map(|text| {
            Decimal::from_str(text)
                .or_else(|_| Decimal::from_scientific(text))
                .map_err(|_| format!("{name} {text:?} is not a number"))
        })
        .transpose()
}

/// A row refused: the exec id, code and message, the row kept as received.
fn refuse(
    statement: &FlexStatement,
    row: &FlexRow,
    code: &'static str,
    message: String,
) -> RejectedExecution {
    RejectedExecution {
        exec_id: exec_id_of(row).unwrap_or_default().to_string(),
        account_id: account_of(statement, row).to_string(),
        code: code.to_string(),
        message,
        raw: raw(statement, row)
            .ok()
            .and_then(|r| serde_json::from_str(r.get()).ok())
            .unwrap_or_default(),
    }
}

/// An IB account id: one to three capital letters and digits (`U1234567`, `DU1234567`, `F…`,
/// `I…`). An account alias, which a Flex Query can write instead, is not one.
fn is_account_id(text: &str) -> bool {
    let letters = text.bytes().take_while(u8::is_ascii_uppercase).count();
    let digits = &text[letters..];
    (1..=3).contains(&letters) && digits.len() >= 3 && digits.bytes().all(|b| b.is_ascii_digit())
}

fn exec_id_of(row: &FlexRow) -> Option<&str> {
    row.get("ibExecID").or_else(|| row.get("execID"))
}

fn account_of<'a>(statement: &'a FlexStatement, row: &'a FlexRow) -> &'a str {
    row.get("accountId").unwrap_or(&statement.account_id)
}

/// Normalizes one execution-level row; `zone` is the zone of Flex's times (Eastern unless
/// `[ibkr.flex] timezone` says otherwise). The order's cumulative quantity and average price
/// are set by [`normalize_report`].
pub fn normalize_row(
    statement: &FlexStatement,
    row: &FlexRow,
    zone: Tz,
) -> Result<NewFill, FillError> {
    let fail = |code, message| FillError {
        exec_id: exec_id_of(row).unwrap_or_default().to_string(),
        code,
        message,
    };
    let exec_id = exec_id_of(row)
        .ok_or_else(|| fail("no_exec_id", "the row has no ibExecID (nor execID)".into()))?;
    let account = account_of(statement, row);
    if account.is_empty() {
        return Err(fail("no_account", "the row has no accountId".into()));
    }
    if !is_account_id(account) {
        return Err(fail(
            "flex_not_an_account_id",
            format!(
                "accountId {account:?} is not an IB account id (U1234567, DU1234567, F...): \
                 untick \"Display Account Alias in Place of Account ID\" in the Flex Query"
            ),
        ));
    }
    let buy_sell = row.get("buySell").unwrap_or_default();
    let cancel_code = ["notes", "code"]
        .iter()
        .filter_map(|k| row.get(k))
        .any(|codes| codes.split(';').any(|c| c.trim() == "Ca"));
    if buy_sell.contains("(Ca.)") || cancel_code {
        return Err(fail(
            "flex_cancellation",
            format!(
                "IB cancelled this trade (buySell {buy_sell:?}): a cancellation is not a fill; \
                 the fill it cancels is left as stored, check it with IB"
            ),
        ));
    }
    let side = match buy_sell.to_ascii_uppercase().as_str() {
        "BUY" | "BOT" => Side::Buy,
        "SELL" | "SLD" => Side::Sell,
        _ => {
            return Err(fail(
                "unknown_side",
                format!("unknown buySell {buy_sell:?}"),
            ));
        }
    };
    let number = |name: &str| decimal(row, name).map_err(|m| fail("bad_number", m));
    let quantity = number("quantity")?
        .ok_or_else(|| fail("bad_number", "the row has no quantity".into()))?
        .abs();
    // Trade rows write `tradePrice`, TradeConfirm rows `price`
    let price = match number("tradePrice")? {
        Some(p) => p,
        None => number("price")?
            .ok_or_else(|| fail("bad_number", "the row has no tradePrice (nor price)".into()))?,
    };
    if price < Decimal::ZERO {
        return Err(fail(
            "negative_value",
            format!("negative tradePrice {price}"),
        ));
    }
    // Flex writes the commission as a cost (negative); TWS and tradegate as an amount paid
    let commission = number("ibCommission")?
        .or(number("commission")?)
        .map(|c| if c.is_zero() { Decimal::ZERO } else { -c });
    let realized_pnl = number("fifoPnlRealized")?;
    let local = row_time(row).map_err(|e| fail("bad_time", e.to_string()))?;
    let text = row
        .get("dateTime")
        .map_or_else(|| local.to_string(), str::to_string);
    let executed_at = resolve_time(
        &TwsTime {
            text,
            local,
            zone: None,
            utc: false,
        },
        Some(zone),
    )
    .map_err(|t| fail(t.code, t.message))?;
    // IB's order id is TWS's perm id: the parent trade is found by it, as a TWS sync finds it
    let perm_id = row
        .get("ibOrderID")
        .or_else(|| row.get("orderID"))
        .ok_or_else(|| {
            fail(
                "flex_no_order_id",
                "the row has no ibOrderID: tick \"IB Order ID\" in the Flex Query's Trades \
                 section (without it the fill's order is unknown)"
                    .into(),
            )
        })?
        .parse::<i64>()
        .ok()
        .filter(|id| *id > 0)
        .ok_or_else(|| {
            fail(
                "bad_number",
                "ibOrderID is not a positive whole number".into(),
            )
        })?;
    let sec_type = row.get("assetCategory").unwrap_or_default().to_string();
    // TWS names a derivative by its underlying (`symbol`), Flex by its local symbol
    let symbol = if sec_type == "STK" || sec_type.is_empty() {
        row.get("symbol")
    } else {
        row.get("underlyingSymbol").or_else(|| row.get("symbol"))
    }
    .ok_or_else(|| fail("no_symbol", "the row has no symbol".into()))?
    .to_string();
    let id = parse_exec_id(exec_id);
    Ok(NewFill {
        account_id: account.to_string(),
        exec_id: exec_id.to_string(),
        exec_id_base: id.base.into_owned(),
        exec_revision: id.revision,
        perm_id,
        order_id: 0,
        order_ref: row.get("orderReference").map(str::to_string),
        client_id: 0,
        symbol,
        sec_type,
        side,
        exchange: row.get("exchange").unwrap_or_default().to_string(),
        currency: row.get("currency").unwrap_or_default().to_string(),
        liquidity: None,
        executed_at,
        quantity,
        price,
        cum_quantity: quantity,
        avg_price: price,
        commission,
        commission_currency: row
            .get("ibCommissionCurrency")
            .or_else(|| row.get("commissionCurrency"))
            .map(str::to_string),
        realized_pnl,
        raw: raw(statement, row)
            .map_err(|e| fail("raw_record", format!("cannot write its raw record: {e}")))?,
    })
}

/// What one account's rows of a report gave.
#[derive(Debug, Default)]
pub struct AccountFills {
    /// The account
    pub account_id: String,
    /// Its statements' first and last day
    pub from_date: Option<NaiveDate>,
    /// See `from_date`
    pub to_date: Option<NaiveDate>,
    /// Its execution rows
    pub rows: u64,
    /// Rows of other levels of detail
    pub ignored_rows: u64,
    /// The fills, in document order
    pub fills: Vec<NewFill>,
    /// Rows refused
    pub rejected: Vec<RejectedExecution>,
}

/// Normalizes a report, by account in the order the accounts first appear. Each order's
/// cumulative quantity and average price after each fill are computed over its fills in the
/// report (the latest revision of each exec id counting once).
pub fn normalize_report(statements: &[FlexStatement], zone: Tz) -> Vec<AccountFills> {
    let mut out: Vec<AccountFills> = Vec::new();
    for statement in statements {
        if !statement.account_id.is_empty()
            && !out.iter().any(|a| a.account_id == statement.account_id)
        {
            out.push(AccountFills {
                account_id: statement.account_id.clone(),
                ..AccountFills::default()
            });
        }
        for row in &statement.rows {
            let account = account_of(statement, row).to_string();
            let entry = match out.iter().position(|a| a.account_id == account) {
                Some(i) => &mut out[i],
                None => {
                    out.push(AccountFills {
                        account_id: account,
                        ..AccountFills::default()
                    });
                    out.last_mut().expect("just pushed")
                }
            };
            entry.rows += 1;
            match normalize_row(statement, row, zone) {
                Ok(fill) => entry.fills.push(fill),
                Err(e) => entry
                    .rejected
                    .push(refuse(statement, row, e.code, e.message)),
            }
        }
        if let Some(entry) = out
            .iter_mut()
            .find(|a| a.account_id == statement.account_id)
        {
            entry.ignored_rows += statement.ignored_rows;
            entry.from_date = min_date(entry.from_date, statement.from_date);
            entry.to_date = max_date(entry.to_date, statement.to_date);
        }
    }
    for account in &mut out {
        order_progress(&mut account.fills);
    }
    out
}

fn min_date(a: Option<NaiveDate>, b: Option<NaiveDate>) -> Option<NaiveDate> {
    match (a, b) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    }
}

fn max_date(a: Option<NaiveDate>, b: Option<NaiveDate>) -> Option<NaiveDate> {
    match (a, b) {
        (Some(a), Some(b)) => Some(a.max(b)),
        (a, b) => a.or(b),
    }
}

/// Sets each fill's order cumulative quantity and average price (orders known by perm id).
fn order_progress(fills: &mut [NewFill]) {
    let mut by_order: HashMap<i64, Vec<usize>> = HashMap::new();
    for (i, f) in fills.iter().enumerate() {
        if f.perm_id > 0 {
            by_order.entry(f.perm_id).or_default().push(i);
        }
    }
    for mut indices in by_order.into_values() {
        indices.sort_by(|&a, &b| {
            (fills[a].executed_at, &fills[a].exec_id)
                .cmp(&(fills[b].executed_at, &fills[b].exec_id))
        });
        // the latest revision of each base seen so far: (revision, quantity, price)
        let mut bases: HashMap<String, (i32, Decimal, Decimal)> = HashMap::new();
        for i in indices {
            let f = &fills[i];
            let seen = bases.entry(f.exec_id_base.clone()).or_insert((
                f.exec_revision,
                f.quantity,
                f.price,
            ));
            if f.exec_revision >= seen.0 {
                *seen = (f.exec_revision, f.quantity, f.price);
            }
            // checked: a report's numbers are not to be trusted to fit
            let totals = bases.values().try_fold(
                (Decimal::ZERO, Decimal::ZERO),
                |(qty, notional), (_, q, p)| {
                    Some((
                        qty.checked_add(*q)?,
                        notional.checked_add(q.checked_mul(*p)?)?,
                    ))
                },
            );
            let f = &mut fills[i];
            if let Some((qty, notional)) = totals {
                f.cum_quantity = qty;
                f.avg_price = notional
                    .checked_div(qty)
                    .map_or(f.price, |avg| avg.round_dp(8));
            }
        }
    }
}

/// IB's Flex Web Service error codes worth asking again after a wait: the statement is being
/// generated (1019), the service is busy or the request came too fast (1001, 1004-1009, 1018,
/// 1021). Others (an invalid token or query, an expired token, an IP not allowed, ...) are
/// fatal.
pub fn retryable(code: u32) -> bool {
    matches!(code, 1001 | 1004..=1009 | 1018 | 1019 | 1021)
}

#[cfg(test)]
mod tests {
    use super::*;

    const REPORT: &str = r#"<?xml version="1.0" encoding="UTF-8"?>
<FlexQueryResponse queryName="tradegate" type="AF">
<FlexStatements count="1">
<FlexStatement accountId="U100" fromDate="20241202" toDate="20241203" period="Last2Days" whenGenerated="20241204;083000">
<Trades>
<Trade accountId="U100" currency="USD" assetCategory="STK" symbol="AAPL" conid="265598" listingExchange="NASDAQ" underlyingSymbol="AAPL" multiplier="1" dateTime="20241202;103015" tradeDate="20241202" exchange="ISLAND" quantity="60" tradePrice="190.5" ibCommission="-0.3" ibCommissionCurrency="USD" fifoPnlRealized="0" buySell="BUY" ibOrderID="9001" ibExecID="0000e0d5.674d1a01.01.01" orderReference="s-1" levelOfDetail="EXECUTION" />
<Trade accountId="U100" currency="USD" assetCategory="STK" symbol="AAPL" dateTime="20241202;103016" quantity="40" tradePrice="190.75" ibCommission="-0.2" ibCommissionCurrency="USD" buySell="BUY" ibOrderID="9001" ibExecID="0000e0d5.674d1a02.01.01" orderReference="s-1" levelOfDetail="EXECUTION" />
<Order accountId="U100" symbol="AAPL" quantity="100" buySell="BUY" ibOrderID="9001" levelOfDetail="ORDER" />
<Trade accountId="U100" assetCategory="OPT" symbol="AAPL  241220C00200000" underlyingSymbol="AAPL" dateTime="2024-12-03 15:59:59" quantity="-2" tradePrice="1.25" ibCommission="-1.3" buySell="SELL" ibOrderID="9002" ibExecID="0000e0d5.674d1a03.01.01" levelOfDetail="EXECUTION" />
<Trade accountId="U100" symbol="MSFT" dateTime="20241203;100000" quantity="5" tradePrice="420" buySell="BUY (Ca.)" ibOrderID="9003" ibExecID="0000e0d5.674d1a04.01.01" levelOfDetail="EXECUTION" />
</Trades>
</FlexStatement>
</FlexStatements>
</FlexQueryResponse>"#;

    #[test]
    fn a_report_reads_as_fills_in_eastern_time() {
        let statements = parse_report(REPORT).unwrap();
        assert_eq!(statements.len(), 1);
        assert_eq!(statements[0].rows.len(), 4);
        assert_eq!(statements[0].ignored_rows, 1);
        let accounts = normalize_report(&statements, Tz::America__New_York);
        assert_eq!(accounts.len(), 1);
        let a = &accounts[0];
        assert_eq!(a.fills.len(), 3);
        assert_eq!(a.rejected.len(), 1);
        assert_eq!(a.rejected[0].code, "flex_cancellation");
        let first = &a.fills[0];
        assert_eq!(first.exec_id_base, "0000e0d5.674d1a01.01");
        assert_eq!(first.exec_revision, 1);
        assert_eq!(first.perm_id, 9001);
        assert_eq!(first.side, Side::Buy);
        assert_eq!(first.commission, Some(Decimal::new(3, 1)));
        // 10:30:15 EST is 15:30:15 UTC
        assert_eq!(first.executed_at.to_rfc3339(), "2024-12-02T15:30:15+00:00");
        let second = &a.fills[1];
        assert_eq!(second.cum_quantity, Decimal::from(100));
        assert_eq!(second.avg_price, Decimal::new(1906, 1));
        let option = &a.fills[2];
        assert_eq!(option.symbol, "AAPL");
        assert_eq!(option.sec_type, "OPT");
        assert_eq!(option.side, Side::Sell);
        assert_eq!(option.quantity, Decimal::from(2));
        assert_eq!(option.executed_at.to_rfc3339(), "2024-12-03T20:59:59+00:00");
        assert!(first.raw.get().contains(r#""source":"ib_flex""#));
    }

    #[test]
    fn a_report_cut_off_between_rows_is_refused_whole() {
        let cut = REPORT
            .find("<Trade accountId=\"U100\" assetCategory=\"OPT\"")
            .unwrap();
        let err = parse_report(&REPORT[..cut]).unwrap_err();
        assert_eq!(err.code(), "flex_malformed");
        assert!(err.to_string().contains("cut off"), "{err}");
        let miscounted = REPORT.replace("count=\"1\"", "count=\"2\"");
        let err = parse_report(&miscounted).unwrap_err();
        assert!(err.to_string().contains("count=\"2\""), "{err}");
    }

    fn one_row(row: &str) -> AccountFills {
        let xml = format!(
            "<FlexQueryResponse><FlexStatements count=\"1\"><FlexStatement accountId=\"U100\">\
             <TradeConfirms>{row}</TradeConfirms></FlexStatement></FlexStatements>\
             </FlexQueryResponse>"
        );
        let statements = parse_report(&xml).unwrap();
        // every account's rows together (a row may name another account than its statement)
        let mut all = AccountFills::default();
        for a in normalize_report(&statements, Tz::America__New_York) {
            all.fills.extend(a.fills);
            all.rejected.extend(a.rejected);
            all.ignored_rows += a.ignored_rows;
        }
        all
    }

    #[test]
    fn trade_confirmation_rows_read_with_their_own_names() {
        let a = one_row(
            r#"<TradeConfirm accountId="U100" assetCategory="STK" symbol="IBM" dateTime="20241202;101010" quantity="-3" price="220.5" amount="-661.5" commission="-1" commissionCurrency="USD" buySell="SELL" orderID="4411" execID="0001f4e8.674d9b01.01.01" code="P" levelOfDetail="EXECUTION" />"#,
        );
        assert!(a.rejected.is_empty(), "{:?}", a.rejected);
        let f = &a.fills[0];
        assert_eq!(
            (f.exec_id.as_str(), f.perm_id, f.price, f.quantity),
            (
                "0001f4e8.674d9b01.01.01",
                4411,
                Decimal::new(2205, 1),
                Decimal::from(3)
            )
        );
        assert_eq!(f.commission, Some(Decimal::ONE));
        let cancelled = one_row(
            r#"<TradeConfirm accountId="U100" symbol="IBM" dateTime="20241202;101010" quantity="3" price="220.5" buySell="BUY" orderID="4412" execID="0001f4e8.674d9b02.01.01" code="Ca" />"#,
        );
        assert_eq!(cancelled.rejected[0].code, "flex_cancellation");
    }

    #[test]
    fn rows_without_what_a_fill_needs_are_refused_each_with_a_code() {
        let base = r#"symbol="IBM" dateTime="20241202;101010" quantity="3" tradePrice="1" buySell="BUY" execID="0001f4e8.674d9b03.01.01""#;
        let cases = [
            (format!(r#"<Trade accountId="U100" {base} />"#), "flex_no_order_id"),
            (
                format!(r#"<Trade accountId="Main account" {base} ibOrderID="1" />"#),
                "flex_not_an_account_id",
            ),
            (
                format!(r#"<Trade accountId="U100" {base} ibOrderID="-4" />"#),
                "bad_number",
            ),
            (
                r#"<Trade accountId="U100" symbol="IBM" dateTime="20241202;101010" quantity="3" tradePrice="1" buySell="BUY" ibOrderID="5" />"#
                    .to_string(),
                "no_exec_id",
            ),
            (
                r#"<Trade accountId="U100" symbol="IBM" dateTime="20240310;023000" quantity="3" tradePrice="1" buySell="BUY" ibOrderID="5" ibExecID="a.b.01.01" />"#
                    .to_string(),
                "time_gap",
            ),
        ];
        for (row, code) in cases {
            let a = one_row(&row);
            assert!(a.fills.is_empty(), "{row}");
            assert_eq!(a.rejected[0].code, code, "{row}");
        }
        // an expiry or assignment has no exec id and is no execution: left out, not refused
        let a = one_row(
            r#"<Trade accountId="U100" symbol="X 241220C" transactionType="BookTrade" quantity="-1" tradePrice="0" buySell="SELL" ibOrderID="5" levelOfDetail="EXECUTION" />"#,
        );
        assert!(a.rejected.is_empty() && a.fills.is_empty());
        assert_eq!(a.ignored_rows, 1);
    }

    #[test]
    fn numbers_too_large_to_multiply_do_not_panic() {
        let a = one_row(
            r#"<Trade accountId="U100" symbol="X" dateTime="20241202;101010" quantity="70000000000000000000000000000" tradePrice="9" buySell="BUY" ibOrderID="5" ibExecID="a.b.01.01" /><Trade accountId="U100" symbol="X" dateTime="20241202;101011" quantity="70000000000000000000000000000" tradePrice="9" buySell="BUY" ibOrderID="5" ibExecID="a.c.01.01" />"#,
        );
        assert_eq!(a.fills.len(), 2);
        let huge = one_row(
            r#"<Trade accountId="U100" symbol="X" dateTime="20241202;101010" quantity="1e400" tradePrice="9" buySell="BUY" ibOrderID="5" ibExecID="a.b.01.01" />"#,
        );
        assert_eq!(huge.rejected[0].code, "bad_number");
        assert!(decode_document(b"<?xml encoding=\xff\xfe?>\xff").is_err());
    }

    #[test]
    fn order_level_only_reports_are_refused_with_what_to_change() {
        let xml = r#"<FlexQueryResponse><FlexStatements><FlexStatement accountId="U1"><Trades>
            <Trade accountId="U1" symbol="X" levelOfDetail="ORDER" /></Trades></FlexStatement>
            </FlexStatements></FlexQueryResponse>"#;
        let err = parse_report(xml).unwrap_err();
        assert_eq!(err.code(), "flex_no_executions");
        assert!(err.to_string().contains("Execution"), "{err}");
    }

    #[test]
    fn service_answers_are_read() {
        let ok = "<FlexStatementResponse timestamp='x'><Status>Success</Status>\
            <ReferenceCode>1234567890</ReferenceCode><Url>https://x</Url></FlexStatementResponse>";
        assert_eq!(
            parse_service_answer(ok).unwrap(),
            ServiceAnswer::Reference("1234567890".into())
        );
        let fail = "<FlexStatementResponse><Status>Fail</Status><ErrorCode>1019</ErrorCode>\
            <ErrorMessage>Statement generation in progress. Please try again shortly.</ErrorMessage>\
            </FlexStatementResponse>";
        assert_eq!(
            parse_service_answer(fail).unwrap(),
            ServiceAnswer::Error {
                code: 1019,
                message: "Statement generation in progress. Please try again shortly.".into()
            }
        );
        assert!(matches!(
            parse_report(fail),
            Err(FlexError::Service { code: 1019, .. })
        ));
        assert!(retryable(1019) && retryable(1018) && !retryable(1012) && !retryable(1015));
    }

    #[test]
    fn times_in_the_forms_flex_writes_and_refusals_of_others() {
        let row = |attrs: &[(&str, &str)]| FlexRow {
            element: "Trade".into(),
            attributes: attrs
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        };
        let want = NaiveDate::from_ymd_opt(2024, 12, 2)
            .unwrap()
            .and_hms_opt(9, 31, 5)
            .unwrap();
        for text in [
            "20241202;093105",
            "2024-12-02, 09:31:05",
            "20241202 09:31:05",
            "2024-12-02T093105",
        ] {
            assert_eq!(
                row_time(&row(&[("dateTime", text)])).unwrap(),
                want,
                "{text}"
            );
        }
        assert_eq!(
            row_time(&row(&[("tradeDate", "20241202"), ("tradeTime", "093105")])).unwrap(),
            want
        );
        let err = row_time(&row(&[("dateTime", "12/02/2024;093105")]))
            .unwrap_err()
            .to_string();
        assert!(err.contains("yyyyMMdd"), "{err}");
        assert!(row_time(&row(&[("dateTime", "20241202")])).is_err());
    }

    #[test]
    fn a_non_utf8_report_is_decoded_by_its_declaration() {
        let (bytes, _, _) = encoding_rs::WINDOWS_1252
            .encode("<?xml version=\"1.0\" encoding=\"windows-1252\"?><a n=\"caf\u{e9}\"/>");
        let text = decode_document(&bytes).unwrap();
        assert!(text.contains("caf\u{e9}"));
        assert!(decode_document(b"\xff\xfe<a/>").is_err());
    }
}
