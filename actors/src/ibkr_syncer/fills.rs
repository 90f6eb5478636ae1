//! From TWS executions and commission reports to [`NewFill`]s: exact decimals, UTC times (a time
//! without a zone name is in the zone the TWS login uses, `[ibkr] timezone`), sides, and the
//! raw broker record kept for audit.

use std::collections::HashMap;

use chrono::{DateTime, LocalResult, TimeZone, Utc};
use chrono_tz::Tz;
use rust_decimal::Decimal;
use serde::Serialize;
use serde_json::value::RawValue;

use super::tws::{CommissionReport, Execution, TwsTime, split_exec_id};
use crate::domain::{NewFill, Side};

/// Why an execution cannot be stored.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("execution {exec_id:?}: {message}")]
pub struct FillError {
    /// The execution
    pub exec_id: String,
    /// What is wrong with it
    pub message: String,
}

/// Parses a zone name as TWS writes it (`US/Eastern`, `Europe/London`, `UTC`, ...).
pub fn parse_zone(name: &str) -> Result<Tz, String> {
    name.trim()
        .parse::<Tz>()
        .map_err(|_| format!("unknown time zone {name:?}"))
}

/// The UTC instant of a TWS time: its own zone if it names one, else `default_zone`. A wall time
/// the zone skips (spring forward) is an error; one it repeats (fall back) is the earlier.
pub fn resolve_time(time: &TwsTime, default_zone: Tz) -> Result<DateTime<Utc>, String> {
    let zone = match &time.zone {
        Some(name) => parse_zone(name)?,
        None => default_zone,
    };
    match zone.from_local_datetime(&time.local) {
        LocalResult::Single(t) | LocalResult::Ambiguous(t, _) => Ok(t.with_timezone(&Utc)),
        LocalResult::None => Err(format!(
            "time {:?} does not exist in {zone} (a daylight-saving gap)",
            time.text
        )),
    }
}

/// TWS's side names.
fn side(text: &str) -> Option<Side> {
    match text {
        "BOT" | "BUY" => Some(Side::Buy),
        "SLD" | "SELL" | "SSHORT" => Some(Side::Sell),
        _ => None,
    }
}

/// TWS's last-liquidity codes.
fn liquidity(code: i64) -> Option<&'static str> {
    match code {
        1 => Some("added"),
        2 => Some("removed"),
        3 => Some("routed_out"),
        _ => None,
    }
}

fn non_empty(text: &str) -> Option<String> {
    let text = text.trim();
    (!text.is_empty()).then(|| text.to_string())
}

/// A decimal written as a JSON string, so no digit is lost.
#[derive(Debug, Clone, Copy)]
struct DecimalText(Decimal);

impl Serialize for DecimalText {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(&self.0)
    }
}

fn dec(d: Option<Decimal>) -> Option<DecimalText> {
    d.map(DecimalText)
}

// The raw record's shape. Fields TWS sent empty (empty strings, unset numbers) are left out.
// Serialized straight to text: building a `serde_json::Value` tree first cost more than the
// rest of the normalization together.
#[derive(Serialize)]
struct RawRecord<'a> {
    execution: RawExecution<'a>,
    contract: RawContract<'a>,
    #[serde(skip_serializing_if = "Option::is_none")]
    commission_report: Option<RawCommission<'a>>,
}

#[derive(Serialize)]
struct RawExecution<'a> {
    #[serde(skip_serializing_if = "str::is_empty")]
    exec_id: &'a str,
    order_id: i64,
    #[serde(skip_serializing_if = "str::is_empty")]
    time: &'a str,
    #[serde(skip_serializing_if = "str::is_empty")]
    account: &'a str,
    #[serde(skip_serializing_if = "str::is_empty")]
    exchange: &'a str,
    #[serde(skip_serializing_if = "str::is_empty")]
    side: &'a str,
    shares: DecimalText,
    price: DecimalText,
    perm_id: i64,
    client_id: i64,
    liquidation: i64,
    cum_qty: DecimalText,
    avg_price: DecimalText,
    #[serde(skip_serializing_if = "str::is_empty")]
    order_ref: &'a str,
    #[serde(skip_serializing_if = "str::is_empty")]
    ev_rule: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    ev_multiplier: Option<DecimalText>,
    #[serde(skip_serializing_if = "str::is_empty")]
    model_code: &'a str,
    last_liquidity: i64,
}

#[derive(Serialize)]
struct RawContract<'a> {
    con_id: i64,
    #[serde(skip_serializing_if = "str::is_empty")]
    symbol: &'a str,
    #[serde(skip_serializing_if = "str::is_empty")]
    sec_type: &'a str,
    #[serde(skip_serializing_if = "str::is_empty")]
    last_trade_date: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    strike: Option<DecimalText>,
    #[serde(skip_serializing_if = "str::is_empty")]
    right: &'a str,
    #[serde(skip_serializing_if = "str::is_empty")]
    multiplier: &'a str,
    #[serde(skip_serializing_if = "str::is_empty")]
    exchange: &'a str,
    #[serde(skip_serializing_if = "str::is_empty")]
    currency: &'a str,
    #[serde(skip_serializing_if = "str::is_empty")]
    local_symbol: &'a str,
    #[serde(skip_serializing_if = "str::is_empty")]
    trading_class: &'a str,
}

#[derive(Serialize)]
struct RawCommission<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    commission: Option<DecimalText>,
    #[serde(skip_serializing_if = "str::is_empty")]
    currency: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    realized_pnl: Option<DecimalText>,
}

/// The broker record as received (fields TWS sent empty are left out), decimals as strings so
/// no digit is lost.
fn raw(
    e: &Execution,
    commission: Option<&CommissionReport>,
) -> Result<Box<RawValue>, serde_json::Error> {
    let c = &e.contract;
    let record = RawRecord {
        execution: RawExecution {
            exec_id: &e.exec_id,
            order_id: e.order_id,
            time: &e.time.text,
            account: &e.account,
            exchange: &e.exchange,
            side: &e.side,
            shares: DecimalText(e.shares),
            price: DecimalText(e.price),
            perm_id: e.perm_id,
            client_id: e.client_id,
            liquidation: e.liquidation,
            cum_qty: DecimalText(e.cum_qty),
            avg_price: DecimalText(e.avg_price),
            order_ref: &e.order_ref,
            ev_rule: &e.ev_rule,
            ev_multiplier: dec(e.ev_multiplier),
            model_code: &e.model_code,
            last_liquidity: e.last_liquidity,
        },
        contract: RawContract {
            con_id: c.con_id,
            symbol: &c.symbol,
            sec_type: &c.sec_type,
            last_trade_date: &c.last_trade_date,
            strike: dec(c.strike),
            right: &c.right,
            multiplier: &c.multiplier,
            exchange: &c.exchange,
            currency: &c.currency,
            local_symbol: &c.local_symbol,
            trading_class: &c.trading_class,
        },
        commission_report: commission.map(|r| RawCommission {
            commission: dec(r.commission),
            currency: &r.currency,
            realized_pnl: dec(r.realized_pnl),
        }),
    };
    serde_json::value::to_raw_value(&record)
}

/// Normalizes one execution with its commission report, if one came.
pub fn normalize(
    e: &Execution,
    commission: Option<&CommissionReport>,
    default_zone: Tz,
) -> Result<NewFill, FillError> {
    let fail = |message: String| FillError {
        exec_id: e.exec_id.clone(),
        message,
    };
    if e.exec_id.trim().is_empty() {
        return Err(fail("empty exec id".into()));
    }
    if e.account.trim().is_empty() {
        return Err(fail("no account".into()));
    }
    let side = side(&e.side).ok_or_else(|| fail(format!("unknown side {:?}", e.side)))?;
    if e.shares < Decimal::ZERO || e.price < Decimal::ZERO {
        return Err(fail(format!(
            "negative shares {} or price {}",
            e.shares, e.price
        )));
    }
    let executed_at = resolve_time(&e.time, default_zone).map_err(fail)?;
    let (base, revision) = split_exec_id(&e.exec_id);
    Ok(NewFill {
        account_id: e.account.clone(),
        exec_id: e.exec_id.clone(),
        exec_id_base: base.to_string(),
        exec_revision: revision,
        perm_id: e.perm_id,
        order_id: e.order_id,
        order_ref: non_empty(&e.order_ref),
        client_id: e.client_id,
        symbol: e.contract.symbol.clone(),
        sec_type: e.contract.sec_type.clone(),
        side,
        exchange: e.exchange.clone(),
        currency: e.contract.currency.clone(),
        liquidity: liquidity(e.last_liquidity).map(str::to_string),
        executed_at,
        quantity: e.shares,
        price: e.price,
        cum_quantity: e.cum_qty,
        avg_price: e.avg_price,
        commission: commission.and_then(|c| c.commission),
        commission_currency: commission.and_then(|c| non_empty(&c.currency)),
        realized_pnl: commission.and_then(|c| c.realized_pnl),
        raw: raw(e, commission).map_err(|e| fail(format!("cannot write its raw record: {e}")))?,
    })
}

/// Normalizes what one executions request returned: each execution with the last commission
/// report for its exec id. One bad execution fails the whole batch (nothing is stored from a
/// fetch that cannot be read whole). A large batch is split over the machine's cores.
pub fn normalize_all(
    executions: &[Execution],
    commissions: &[CommissionReport],
    default_zone: Tz,
) -> Result<Vec<NewFill>, FillError> {
    /// Below this, one thread is quicker than starting others.
    const PER_THREAD: usize = 8192;
    let by_exec: HashMap<&str, &CommissionReport> = commissions
        .iter()
        .map(|c| (c.exec_id.as_str(), c))
        .collect();
    let one = |chunk: &[Execution]| -> Result<Vec<NewFill>, FillError> {
        chunk
            .iter()
            .map(|e| normalize(e, by_exec.get(e.exec_id.as_str()).copied(), default_zone))
            .collect()
    };
    let threads = std::thread::available_parallelism()
        .map_or(1, usize::from)
        .min(executions.len() / PER_THREAD)
        .max(1);
    if threads == 1 {
        return one(executions);
    }
    let chunk = executions.len().div_ceil(threads);
    // chunks in order, so the first bad execution in fetch order is the one reported
    let parts: Vec<Result<Vec<NewFill>, FillError>> = std::thread::scope(|scope| {
        let handles: Vec<_> = executions
            .chunks(chunk)
            .map(|part| scope.spawn(|| one(part)))
            .collect();
        handles
            .into_iter()
            .map(|h| {
                h.join()
                    .unwrap_or_else(|panic| std::panic::resume_unwind(panic))
            })
            .collect()
    });
    let mut fills = Vec::with_capacity(executions.len());
    for part in parts {
        fills.extend(part?);
    }
    Ok(fills)
}

#[cfg(test)]
mod tests {
    use chrono::NaiveDateTime;

    use super::*;

    fn time(text: &str) -> TwsTime {
        TwsTime::parse(text).unwrap()
    }

    #[test]
    fn times_resolve_in_their_own_zone_or_the_default() {
        let utc = resolve_time(&time("20240102 10:00:00 US/Eastern"), Tz::UTC).unwrap();
        assert_eq!(utc.to_rfc3339(), "2024-01-02T15:00:00+00:00");
        let summer = resolve_time(&time("20240702 10:00:00 US/Eastern"), Tz::UTC).unwrap();
        assert_eq!(summer.to_rfc3339(), "2024-07-02T14:00:00+00:00");
        let default = resolve_time(&time("20240102  10:00:00"), Tz::Europe__London).unwrap();
        assert_eq!(default.to_rfc3339(), "2024-01-02T10:00:00+00:00");
        let tokyo = resolve_time(&time("20240102-10:00:00"), Tz::Asia__Tokyo).unwrap();
        assert_eq!(tokyo.to_rfc3339(), "2024-01-02T01:00:00+00:00");
    }

    #[test]
    fn unknown_zones_and_skipped_times_are_errors() {
        let e = resolve_time(&time("20240102 10:00:00 Mars/Olympus"), Tz::UTC).unwrap_err();
        assert!(e.contains("unknown time zone"), "{e}");
        let e = resolve_time(&time("20240310 02:30:00 US/Eastern"), Tz::UTC).unwrap_err();
        assert!(e.contains("daylight-saving gap"), "{e}");
        // fall back: 01:30 happens twice; the earlier (EDT, UTC-4) is taken
        let t = resolve_time(&time("20241103 01:30:00 US/Eastern"), Tz::UTC).unwrap();
        assert_eq!(t.to_rfc3339(), "2024-11-03T05:30:00+00:00");
    }

    fn execution() -> Execution {
        Execution {
            exec_id: "0000e0d5.64305db8.01.02".into(),
            time: TwsTime {
                text: "20240102 10:00:00 UTC".into(),
                local: NaiveDateTime::parse_from_str("20240102 10:00:00", "%Y%m%d %H:%M:%S")
                    .unwrap(),
                zone: Some("UTC".into()),
            },
            account: "DU1".into(),
            side: "SLD".into(),
            shares: Decimal::new(3, 0),
            price: Decimal::new(14246, 2),
            perm_id: 7,
            last_liquidity: 2,
            ..Execution::default()
        }
    }

    #[test]
    fn an_execution_normalizes_with_its_commission() {
        let c = CommissionReport {
            exec_id: "0000e0d5.64305db8.01.02".into(),
            commission: Some(Decimal::new(105, 2)),
            currency: "USD".into(),
            realized_pnl: None,
        };
        let fill = normalize(&execution(), Some(&c), Tz::UTC).unwrap();
        let raw: serde_json::Value = serde_json::from_str(fill.raw.get()).unwrap();
        assert_eq!(fill.exec_id_base, "0000e0d5.64305db8.01");
        assert_eq!(fill.exec_revision, 2);
        assert_eq!(fill.side, Side::Sell);
        assert_eq!(fill.liquidity.as_deref(), Some("removed"));
        assert_eq!(fill.commission, Some(Decimal::new(105, 2)));
        assert_eq!(fill.order_ref, None);
        assert_eq!(raw["execution"]["price"], "142.46");
        assert_eq!(raw["execution"]["perm_id"], 7);
        assert_eq!(raw["contract"]["con_id"], 0);
        assert_eq!(raw["commission_report"]["commission"], "1.05");
        assert_eq!(raw["commission_report"]["currency"], "USD");
        assert!(
            raw["commission_report"].get("realized_pnl").is_none(),
            "unset is left out"
        );
        assert!(
            raw["execution"].get("order_ref").is_none(),
            "empty is left out"
        );
        assert!(
            raw["execution"].get("ev_multiplier").is_none(),
            "unset is left out"
        );
        let bare = normalize(&execution(), None, Tz::UTC).unwrap();
        let bare: serde_json::Value = serde_json::from_str(bare.raw.get()).unwrap();
        assert!(bare.get("commission_report").is_none(), "no report, no key");
    }

    /// The stored record's exact shape: a change here would make the next re-sync of every
    /// stored fill an update.
    #[test]
    fn the_raw_record_keeps_every_field_sent_and_leaves_out_the_empty_ones() {
        let mut e = execution();
        e.order_id = 12;
        e.exchange = "ISLAND".into();
        e.client_id = 3;
        e.liquidation = 1;
        e.cum_qty = Decimal::new(5, 0);
        e.avg_price = Decimal::new(142_455, 3);
        e.order_ref = "rebalance".into();
        e.ev_multiplier = Some(Decimal::new(25, 1));
        e.contract = super::super::tws::Contract {
            con_id: 265_598,
            symbol: "AAPL".into(),
            sec_type: "STK".into(),
            strike: Some(Decimal::ZERO),
            exchange: "SMART".into(),
            currency: "USD".into(),
            local_symbol: "AAPL".into(),
            ..Default::default()
        };
        let c = CommissionReport {
            exec_id: e.exec_id.clone(),
            commission: None,
            currency: String::new(),
            realized_pnl: Some(Decimal::new(-1_000_000_001, 8)),
        };
        let fill = normalize(&e, Some(&c), Tz::UTC).unwrap();
        let raw: serde_json::Value = serde_json::from_str(fill.raw.get()).unwrap();
        assert_eq!(
            raw,
            serde_json::json!({
                "execution": {
                    "exec_id": "0000e0d5.64305db8.01.02", "order_id": 12,
                    "time": "20240102 10:00:00 UTC", "account": "DU1", "exchange": "ISLAND",
                    "side": "SLD", "shares": "3", "price": "142.46", "perm_id": 7,
                    "client_id": 3, "liquidation": 1, "cum_qty": "5", "avg_price": "142.455",
                    "order_ref": "rebalance", "ev_multiplier": "2.5", "last_liquidity": 2
                },
                "contract": {
                    "con_id": 265_598, "symbol": "AAPL", "sec_type": "STK", "strike": "0",
                    "exchange": "SMART", "currency": "USD", "local_symbol": "AAPL"
                },
                "commission_report": { "realized_pnl": "-10.00000001" }
            })
        );
    }

    #[test]
    fn a_large_batch_keeps_fetch_order_and_reports_its_first_bad_execution() {
        let executions: Vec<Execution> = (0..20_000)
            .map(|i| Execution {
                exec_id: format!("0000e0d5.{i:08x}.01.01"),
                ..execution()
            })
            .collect();
        let commissions = vec![CommissionReport {
            exec_id: executions[19_999].exec_id.clone(),
            commission: Some(Decimal::ONE),
            currency: "USD".into(),
            realized_pnl: None,
        }];
        let fills = normalize_all(&executions, &commissions, Tz::UTC).unwrap();
        assert_eq!(fills.len(), 20_000);
        assert!(
            fills
                .iter()
                .zip(&executions)
                .all(|(f, e)| f.exec_id == e.exec_id),
            "fills come out in fetch order"
        );
        assert_eq!(fills[19_999].commission, Some(Decimal::ONE));
        assert_eq!(fills[0].commission, None);
        let mut bad = executions;
        bad[15_000].side = "HOLD".into();
        bad[19_000].side = "HOLD".into();
        bad[2].account.clear();
        let err = normalize_all(&bad, &[], Tz::UTC).unwrap_err();
        assert_eq!(
            err.exec_id, bad[2].exec_id,
            "the first bad one in fetch order"
        );
        bad[2].account = "DU1".into();
        let err = normalize_all(&bad, &[], Tz::UTC).unwrap_err();
        assert_eq!(err.exec_id, bad[15_000].exec_id);
    }

    #[test]
    fn bad_executions_are_refused_with_the_exec_id() {
        let mut e = execution();
        e.side = "HOLD".into();
        let err = normalize(&e, None, Tz::UTC).unwrap_err();
        assert_eq!(err.exec_id, "0000e0d5.64305db8.01.02");
        assert!(err.message.contains("unknown side"), "{err}");
        let mut e = execution();
        e.account.clear();
        assert!(normalize(&e, None, Tz::UTC).is_err());
    }
}
