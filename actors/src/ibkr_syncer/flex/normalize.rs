//! Flex rows turned into fills: raw records, one row normalized, a report's fills by account,
//! each order's cumulative quantity and average price.

use std::collections::HashMap;
use std::str::FromStr;

use chrono::NaiveDate;
use chrono_tz::Tz;
use rust_decimal::Decimal;
use serde::Serialize;
use serde::ser::SerializeMap;
use serde_json::value::RawValue;

use super::time::row_time;
use super::{FlexRow, FlexStatement};
use crate::domain::{NewFill, RejectedExecution, Side};
use crate::ibkr_syncer::fills::{FillError, resolve_time};
use crate::ibkr_syncer::tws::{TwsTime, parse_exec_id};

/// Attributes serialized as a JSON object in document order.
pub(super) struct Attributes<'a>(&'a [(String, String)]);

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
pub(super) struct RawFlex<'a> {
    pub(super) source: &'static str,
    pub(super) element: &'a str,
    pub(super) statement: Attributes<'a>,
    pub(super) trade: Attributes<'a>,
}

/// The `source` of a raw record written from a Flex report.
pub const RAW_SOURCE: &str = "ib_flex";

pub(super) fn raw(
    statement: &FlexStatement,
    row: &FlexRow,
) -> Result<Box<RawValue>, serde_json::Error> {
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
pub(super) struct RawCommission<'a> {
    pub(super) source: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(super) commission: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(super) currency: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(super) realized_pnl: Option<String>,
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

pub(super) fn decimal(row: &FlexRow, name: &str) -> Result<Option<Decimal>, String> {
    row.get(name)
        .map(|text| {
            Decimal::from_str(text)
                .or_else(|_| Decimal::from_scientific(text))
                .map_err(|_| format!("{name} {text:?} is not a number"))
        })
        .transpose()
}

/// A row refused: the exec id, code and message, the row kept as received.
pub(super) fn refuse(
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
pub(super) fn is_account_id(text: &str) -> bool {
    let letters = text.bytes().take_while(u8::is_ascii_uppercase).count();
    let digits = &text[letters..];
    (1..=3).contains(&letters) && digits.len() >= 3 && digits.bytes().all(|b| b.is_ascii_digit())
}

pub(super) fn exec_id_of(row: &FlexRow) -> Option<&str> {
    row.get("ibExecID").or_else(|| row.get("execID"))
}

pub(super) fn account_of<'a>(statement: &'a FlexStatement, row: &'a FlexRow) -> &'a str {
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

pub(super) fn min_date(a: Option<NaiveDate>, b: Option<NaiveDate>) -> Option<NaiveDate> {
    match (a, b) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    }
}

pub(super) fn max_date(a: Option<NaiveDate>, b: Option<NaiveDate>) -> Option<NaiveDate> {
    match (a, b) {
        (Some(a), Some(b)) => Some(a.max(b)),
        (a, b) => a.or(b),
    }
}

/// Sets each fill's order cumulative quantity and average price (orders known by perm id).
pub(super) fn order_progress(fills: &mut [NewFill]) {
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
