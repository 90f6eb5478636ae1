//! From TWS executions and commission reports to [`NewFill`]s: exact decimals, UTC times (a time
//! without a zone name is in the zone the TWS login uses, `[ibkr] timezone`), sides, and the
//! raw broker record kept for audit.

use std::collections::HashMap;

use chrono::{DateTime, LocalResult, TimeZone, Utc};
use chrono_tz::Tz;
use rust_decimal::Decimal;
use serde_json::{Value, json};

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

fn decimal_json(d: Option<Decimal>) -> Value {
    d.map_or(Value::Null, |d| Value::String(d.to_string()))
}

/// Drops empty strings and nulls (fields TWS sent empty), at any depth.
fn compact(value: Value) -> Value {
    match value {
        Value::Object(map) => Value::Object(
            map.into_iter()
                .filter(|(_, v)| !matches!(v, Value::Null) && v.as_str() != Some(""))
                .map(|(k, v)| (k, compact(v)))
                .collect(),
        ),
        other => other,
    }
}

/// The broker record as received (fields TWS sent empty are left out), decimals as strings so
/// no digit is lost.
fn raw(e: &Execution, commission: Option<&CommissionReport>) -> Value {
    compact(raw_full(e, commission))
}

fn raw_full(e: &Execution, commission: Option<&CommissionReport>) -> Value {
    let c = &e.contract;
    json!({
        "execution": {
            "exec_id": e.exec_id,
            "order_id": e.order_id,
            "time": e.time.text,
            "account": e.account,
            "exchange": e.exchange,
            "side": e.side,
            "shares": e.shares.to_string(),
            "price": e.price.to_string(),
            "perm_id": e.perm_id,
            "client_id": e.client_id,
            "liquidation": e.liquidation,
            "cum_qty": e.cum_qty.to_string(),
            "avg_price": e.avg_price.to_string(),
            "order_ref": e.order_ref,
            "ev_rule": e.ev_rule,
            "ev_multiplier": decimal_json(e.ev_multiplier),
            "model_code": e.model_code,
            "last_liquidity": e.last_liquidity,
        },
        "contract": {
            "con_id": c.con_id,
            "symbol": c.symbol,
            "sec_type": c.sec_type,
            "last_trade_date": c.last_trade_date,
            "strike": decimal_json(c.strike),
            "right": c.right,
            "multiplier": c.multiplier,
            "exchange": c.exchange,
            "currency": c.currency,
            "local_symbol": c.local_symbol,
            "trading_class": c.trading_class,
        },
        "commission_report": commission.map(|r| json!({
            "commission": decimal_json(r.commission),
            "currency": r.currency,
            "realized_pnl": decimal_json(r.realized_pnl),
        })),
    })
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
        raw: raw(e, commission),
    })
}

/// Normalizes what one executions request returned: each execution with the last commission
/// report for its exec id. One bad execution fails the whole batch (nothing is stored from a
/// fetch that cannot be read whole).
pub fn normalize_all(
    executions: &[Execution],
    commissions: &[CommissionReport],
    default_zone: Tz,
) -> Result<Vec<NewFill>, FillError> {
    let by_exec: HashMap<&str, &CommissionReport> = commissions
        .iter()
        .map(|c| (c.exec_id.as_str(), c))
        .collect();
    executions
        .iter()
        .map(|e| normalize(e, by_exec.get(e.exec_id.as_str()).copied(), default_zone))
        .collect()
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
        assert_eq!(fill.exec_id_base, "0000e0d5.64305db8.01");
        assert_eq!(fill.exec_revision, 2);
        assert_eq!(fill.side, Side::Sell);
        assert_eq!(fill.liquidity.as_deref(), Some("removed"));
        assert_eq!(fill.commission, Some(Decimal::new(105, 2)));
        assert_eq!(fill.order_ref, None);
        assert_eq!(fill.raw["execution"]["price"], "142.46");
        assert_eq!(fill.raw["commission_report"]["commission"], "1.05");
        assert!(
            fill.raw["commission_report"].get("realized_pnl").is_none(),
            "unset is left out"
        );
        assert!(
            fill.raw["execution"].get("order_ref").is_none(),
            "empty is left out"
        );
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
