//! From TWS executions and commission reports to [`NewFill`]s: exact decimals, UTC times (a time
//! without a zone name is in the zone the TWS login uses: `[ibkr] timezone`, else the zone TWS
//! named at connect), sides, and the raw broker record kept for audit. An execution that cannot
//! be read is refused alone, with a code; the rest of its batch is stored.

use std::collections::HashMap;

use chrono::{DateTime, LocalResult, TimeZone, Utc};
use chrono_tz::Tz;
use rust_decimal::Decimal;
use serde::Serialize;
use serde_json::value::RawValue;

use super::tws::{CommissionReport, ExecIdForm, Execution, TwsTime, parse_exec_id};
use crate::domain::{NewFill, RejectedExecution, Side};

/// Why an execution cannot be stored.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("execution {exec_id:?}: {message}")]
pub struct FillError {
    /// The execution
    pub exec_id: String,
    /// A stable code: `unknown_time_zone`, `no_login_zone`, `time_gap`, `unknown_side`,
    /// `negative_value`, `no_account`, `no_exec_id`, `raw_record`
    pub code: &'static str,
    /// What is wrong with it
    pub message: String,
}

/// IB's zone names that are not IANA names, or that mean another zone than the IANA name of the
/// same spelling: TWS writes the login's zone the way Java abbreviates it (`EST` for a New York
/// login in winter, `EDT` in summer; `MET`; `CTT`; in a Chinese locale the zone's Chinese name).
/// Each maps to the IANA zone that has the login's daylight-saving rules.
const IB_ZONES: &[(&str, Tz)] = &[
    ("EST", Tz::America__New_York),
    ("EDT", Tz::America__New_York),
    ("ET", Tz::America__New_York),
    ("Eastern Standard Time", Tz::America__New_York),
    ("CST", Tz::America__Chicago),
    ("CDT", Tz::America__Chicago),
    ("Central Standard Time", Tz::America__Chicago),
    ("MST", Tz::America__Denver),
    ("MDT", Tz::America__Denver),
    ("PST", Tz::America__Los_Angeles),
    ("PDT", Tz::America__Los_Angeles),
    ("Pacific Standard Time", Tz::America__Los_Angeles),
    ("GMT", Tz::UTC),
    ("UTC", Tz::UTC),
    ("UCT", Tz::UTC),
    ("Universal", Tz::UTC),
    ("Zulu", Tz::UTC),
    ("Coordinated Universal Time", Tz::UTC),
    ("BST", Tz::Europe__London),
    ("WET", Tz::Europe__Lisbon),
    ("WEST", Tz::Europe__Lisbon),
    ("MET", Tz::Europe__Brussels),
    ("MEST", Tz::Europe__Brussels),
    ("CET", Tz::Europe__Brussels),
    ("CEST", Tz::Europe__Brussels),
    ("Central European Time", Tz::Europe__Brussels),
    ("EET", Tz::Europe__Athens),
    ("EEST", Tz::Europe__Athens),
    ("MSK", Tz::Europe__Moscow),
    ("IST", Tz::Asia__Kolkata),
    ("SGT", Tz::Asia__Singapore),
    ("HKT", Tz::Asia__Hong_Kong),
    ("CTT", Tz::Asia__Shanghai),
    ("China Standard Time", Tz::Asia__Shanghai),
    ("中国标准时间", Tz::Asia__Shanghai),
    ("北京时间", Tz::Asia__Shanghai),
    ("JST", Tz::Asia__Tokyo),
    ("日本標準時", Tz::Asia__Tokyo),
    ("KST", Tz::Asia__Seoul),
    ("AEST", Tz::Australia__Sydney),
    ("AEDT", Tz::Australia__Sydney),
    ("NZST", Tz::Pacific__Auckland),
    ("NZDT", Tz::Pacific__Auckland),
];

/// Parses a zone name as TWS writes it: IB's own names ([`IB_ZONES`], case-insensitive), then
/// IANA names (`US/Eastern`, `Europe/London`, ...).
pub fn parse_zone(name: &str) -> Result<Tz, String> {
    let name = name.trim();
    IB_ZONES
        .iter()
        .find(|(ib, _)| ib.eq_ignore_ascii_case(name))
        .map(|(_, tz)| *tz)
        .or_else(|| name.parse::<Tz>().ok())
        .ok_or_else(|| format!("unknown time zone {name:?}"))
}

/// The zone a TWS handshake names after its connection time (`20240102 10:00:00 EST`, or
/// `... 中国标准时间`), if it names one this table or IANA knows.
pub fn handshake_zone(connection_time: &str) -> Option<Tz> {
    let t = connection_time.trim();
    let rest = t.get(8..)?.trim_start_matches(['-', ' ']);
    let (_clock, zone) = rest.split_once(' ')?;
    parse_zone(zone).ok()
}

/// What start-up says of the login zone when `[ibkr] timezone` is not set (`None` when it is):
/// the zone TWS named at connect is used, or, if it named none tradegate knows, zone-less times
/// are refused until it is set. Never a silent UTC.
pub fn login_zone_warning(configured: Option<Tz>, connection_time: &str) -> Option<String> {
    if configured.is_some() {
        return None;
    }
    Some(match handshake_zone(connection_time) {
        Some(zone) => format!(
            "[ibkr] timezone is not set: execution times without a zone are read in {zone}, the \
             zone TWS named at connect ({connection_time:?}); set it to the TWS login's zone"
        ),
        None => format!(
            "[ibkr] timezone is not set and TWS named no known zone at connect \
             ({connection_time:?}): executions with a zone-less time are refused until it is set"
        ),
    })
}

/// Why a time cannot be placed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TimeError {
    /// `unknown_time_zone`, `no_login_zone` or `time_gap`
    pub code: &'static str,
    /// Details
    pub message: String,
}

/// The UTC instant of a TWS time: its own zone if it names one; `yyyymmdd-hh:mm:ss` is UTC;
/// otherwise `login_zone`, and without one the time cannot be placed. A wall time the zone skips
/// (spring forward) is an error; one it repeats (fall back) is the earlier.
pub fn resolve_time(time: &TwsTime, login_zone: Option<Tz>) -> Result<DateTime<Utc>, TimeError> {
    let zone = match &time.zone {
        Some(name) => parse_zone(name).map_err(|message| TimeError {
            code: "unknown_time_zone",
            message,
        })?,
        None if time.utc => Tz::UTC,
        None => login_zone.ok_or_else(|| TimeError {
            code: "no_login_zone",
            message: format!(
                "time {:?} has no zone, and the TWS login's zone is unknown: set [ibkr] timezone",
                time.text
            ),
        })?,
    };
    match zone.from_local_datetime(&time.local) {
        LocalResult::Single(t) | LocalResult::Ambiguous(t, _) => Ok(t.with_timezone(&Utc)),
        LocalResult::None => Err(TimeError {
            code: "time_gap",
            message: format!(
                "time {:?} does not exist in {zone} (a daylight-saving gap)",
                time.text
            ),
        }),
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

/// A commission report as the raw record holds it (under `commission_report`).
pub fn commission_record(c: &CommissionReport) -> Result<Box<RawValue>, serde_json::Error> {
    serde_json::value::to_raw_value(&RawCommission {
        commission: dec(c.commission),
        currency: &c.currency,
        realized_pnl: dec(c.realized_pnl),
    })
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
    login_zone: Option<Tz>,
) -> Result<NewFill, FillError> {
    let fail = |code: &'static str, message: String| FillError {
        exec_id: e.exec_id.clone(),
        code,
        message,
    };
    if e.exec_id.trim().is_empty() {
        return Err(fail("no_exec_id", "empty exec id".into()));
    }
    if e.account.trim().is_empty() {
        return Err(fail("no_account", "no account".into()));
    }
    let side =
        side(&e.side).ok_or_else(|| fail("unknown_side", format!("unknown side {:?}", e.side)))?;
    if e.shares < Decimal::ZERO || e.price < Decimal::ZERO {
        return Err(fail(
            "negative_value",
            format!("negative shares {} or price {}", e.shares, e.price),
        ));
    }
    let executed_at = resolve_time(&e.time, login_zone).map_err(|t| fail(t.code, t.message))?;
    let id = parse_exec_id(&e.exec_id);
    Ok(NewFill {
        account_id: e.account.clone(),
        exec_id: e.exec_id.clone(),
        exec_id_base: id.base.into_owned(),
        exec_revision: id.revision,
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
        raw: raw(e, commission)
            .map_err(|e| fail("raw_record", format!("cannot write its raw record: {e}")))?,
    })
}

/// What normalizing one fetch gave.
#[derive(Debug, Default)]
pub struct Normalized {
    /// The fills to store, in fetch order
    pub fills: Vec<NewFill>,
    /// Executions refused, in fetch order (the rest of the batch is stored)
    pub rejected: Vec<RejectedExecution>,
    /// Executions whose id has neither of IB's forms (kept whole, never merged)
    pub unrecognised_exec_ids: u64,
    /// Commission reports for no execution of this fetch (a report that trailed its execution
    /// into a later request, or was pushed): applied to stored fills
    pub orphan_commissions: Vec<CommissionReport>,
}

fn rejected(
    e: &Execution,
    commission: Option<&CommissionReport>,
    error: FillError,
) -> RejectedExecution {
    RejectedExecution {
        exec_id: e.exec_id.clone(),
        account_id: e.account.clone(),
        code: error.code.to_string(),
        message: error.message,
        raw: raw(e, commission)
            .ok()
            .and_then(|raw| serde_json::from_str(raw.get()).ok())
            .unwrap_or_default(),
    }
}

/// Normalizes what one executions request returned: each execution with the last commission
/// report for its exec id. An execution that cannot be read is refused alone (see
/// [`Normalized::rejected`]). A large batch is split over the machine's cores.
pub fn normalize_all(
    executions: &[Execution],
    commissions: &[CommissionReport],
    login_zone: Option<Tz>,
) -> Normalized {
    /// Below this, one thread is quicker than starting others.
    const PER_THREAD: usize = 8192;
    let by_exec: HashMap<&str, &CommissionReport> = commissions
        .iter()
        .map(|c| (c.exec_id.as_str(), c))
        .collect();
    let one = |chunk: &[Execution]| -> Vec<Result<NewFill, Box<RejectedExecution>>> {
        chunk
            .iter()
            .map(|e| {
                let commission = by_exec.get(e.exec_id.as_str()).copied();
                normalize(e, commission, login_zone)
                    .map_err(|error| Box::new(rejected(e, commission, error)))
            })
            .collect()
    };
    let threads = std::thread::available_parallelism()
        .map_or(1, usize::from)
        .min(executions.len() / PER_THREAD)
        .max(1);
    let parts: Vec<Vec<Result<NewFill, Box<RejectedExecution>>>> = if threads == 1 {
        vec![one(executions)]
    } else {
        let chunk = executions.len().div_ceil(threads);
        // chunks in order, so fills and refusals keep fetch order
        std::thread::scope(|scope| {
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
        })
    };
    let mut out = Normalized {
        fills: Vec::with_capacity(executions.len()),
        ..Normalized::default()
    };
    for result in parts.into_iter().flatten() {
        match result {
            Ok(fill) => out.fills.push(fill),
            Err(r) => out.rejected.push(*r),
        }
    }
    out.unrecognised_exec_ids = executions
        .iter()
        .filter(|e| parse_exec_id(&e.exec_id).form == ExecIdForm::Unrecognised)
        .count() as u64;
    let fetched: std::collections::HashSet<&str> =
        executions.iter().map(|e| e.exec_id.as_str()).collect();
    // the last report of each exec id, in arrival order
    let mut seen = std::collections::HashSet::new();
    let mut orphans: Vec<CommissionReport> = commissions
        .iter()
        .rev()
        .filter(|c| !fetched.contains(c.exec_id.as_str()) && seen.insert(c.exec_id.as_str()))
        .cloned()
        .collect();
    orphans.reverse();
    out.orphan_commissions = orphans;
    out
}

#[cfg(test)]
mod tests {
    use chrono::NaiveDateTime;

    use super::*;

    fn time(text: &str) -> TwsTime {
        TwsTime::parse(text).unwrap()
    }

    const UTC: Option<Tz> = Some(Tz::UTC);

    #[test]
    fn times_resolve_in_their_own_zone_the_login_zone_or_utc_for_the_dashed_form() {
        let utc = resolve_time(&time("20240102 10:00:00 US/Eastern"), UTC).unwrap();
        assert_eq!(utc.to_rfc3339(), "2024-01-02T15:00:00+00:00");
        let summer = resolve_time(&time("20240702 10:00:00 US/Eastern"), UTC).unwrap();
        assert_eq!(summer.to_rfc3339(), "2024-07-02T14:00:00+00:00");
        let login = resolve_time(&time("20240702  10:00:00"), Some(Tz::Europe__London)).unwrap();
        assert_eq!(login.to_rfc3339(), "2024-07-02T09:00:00+00:00");
        // yyyymmdd-hh:mm:ss is UTC on the wire, whatever the login's zone
        let dashed = resolve_time(&time("20240102-10:00:00"), Some(Tz::Asia__Tokyo)).unwrap();
        assert_eq!(dashed.to_rfc3339(), "2024-01-02T10:00:00+00:00");
        let dashed = resolve_time(&time("20240102-10:00:00"), None).unwrap();
        assert_eq!(dashed.to_rfc3339(), "2024-01-02T10:00:00+00:00");
        // a zone-less time with no login zone cannot be placed: never silently UTC
        let e = resolve_time(&time("20240102 10:00:00"), None).unwrap_err();
        assert_eq!(e.code, "no_login_zone", "{e:?}");
    }

    /// IB's own zone names, as TWS writes them, each placed by the rules of its IANA zone.
    #[test]
    fn ib_zone_names_map_to_the_zones_they_mean() {
        let at = |text: &str| resolve_time(&time(text), None).unwrap().to_rfc3339();
        assert_eq!(at("20240102 10:00:00 EST"), "2024-01-02T15:00:00+00:00");
        assert_eq!(at("20240702 10:00:00 EDT"), "2024-07-02T14:00:00+00:00");
        assert_eq!(at("20240702 10:00:00 MET"), "2024-07-02T08:00:00+00:00");
        assert_eq!(at("20240102 10:00:00 MET"), "2024-01-02T09:00:00+00:00");
        assert_eq!(
            at("20240102 10:00:00 Universal"),
            "2024-01-02T10:00:00+00:00"
        );
        assert_eq!(at("20240102 10:00:00 CTT"), "2024-01-02T02:00:00+00:00");
        assert_eq!(
            at("20240102 10:00:00 中国标准时间"),
            "2024-01-02T02:00:00+00:00"
        );
        assert_eq!(at("20240102 10:00:00 cst"), "2024-01-02T16:00:00+00:00");
        assert_eq!(
            at("20240102 10:00:00 Europe/Zurich"),
            "2024-01-02T09:00:00+00:00"
        );
        assert_eq!(
            handshake_zone("20240102 10:00:00 中国标准时间"),
            Some(Tz::Asia__Shanghai)
        );
        assert_eq!(
            handshake_zone("20240102 10:00:00 EST"),
            Some(Tz::America__New_York)
        );
        assert_eq!(handshake_zone("20240102 10:00:00"), None);
        assert_eq!(handshake_zone("20240102 10:00:00 Mars/Olympus"), None);
        assert_eq!(handshake_zone(""), None);
    }

    #[test]
    fn unknown_zones_and_skipped_times_are_coded_errors() {
        let e = resolve_time(&time("20240102 10:00:00 Mars/Olympus"), UTC).unwrap_err();
        assert_eq!(e.code, "unknown_time_zone");
        assert!(e.message.contains("unknown time zone"), "{e:?}");
        let e = resolve_time(&time("20240310 02:30:00 US/Eastern"), UTC).unwrap_err();
        assert_eq!(e.code, "time_gap");
        assert!(e.message.contains("daylight-saving gap"), "{e:?}");
        // fall back: 01:30 happens twice; the earlier (EDT, UTC-4) is taken
        let t = resolve_time(&time("20241103 01:30:00 US/Eastern"), UTC).unwrap();
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
                utc: false,
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
        let fill = normalize(&execution(), Some(&c), UTC).unwrap();
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
        let bare = normalize(&execution(), None, UTC).unwrap();
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
        let fill = normalize(&e, Some(&c), UTC).unwrap();
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
    fn a_large_batch_keeps_fetch_order_and_refuses_only_its_bad_executions() {
        let executions: Vec<Execution> = (0..20_000)
            .map(|i| Execution {
                exec_id: format!("0000e0d5.{i:08x}.01.01"),
                ..execution()
            })
            .collect();
        let commissions = vec![
            CommissionReport {
                exec_id: executions[19_999].exec_id.clone(),
                commission: Some(Decimal::ONE),
                currency: "USD".into(),
                realized_pnl: None,
            },
            CommissionReport {
                exec_id: "0000e0d5.ffffffff.01.01".into(),
                commission: Some(Decimal::TWO),
                currency: "USD".into(),
                realized_pnl: None,
            },
        ];
        let all = normalize_all(&executions, &commissions, UTC);
        let fills = all.fills;
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
        assert_eq!(
            all.orphan_commissions
                .iter()
                .map(|c| c.exec_id.as_str())
                .collect::<Vec<_>>(),
            ["0000e0d5.ffffffff.01.01"],
            "a report for no execution of the fetch is kept for a stored fill"
        );
        assert_eq!(all.unrecognised_exec_ids, 0);
        let mut bad = executions;
        bad[15_000].side = "HOLD".into();
        bad[19_000].time = time("20240102 10:00:00 Mars/Olympus");
        bad[2].account.clear();
        bad[3].exec_id = "odd-id".into();
        let out = normalize_all(&bad, &[], UTC);
        assert_eq!(
            out.fills.len(),
            20_000 - 3,
            "only the bad ones are left out"
        );
        let refused: Vec<(&str, &str)> = out
            .rejected
            .iter()
            .map(|r| (r.exec_id.as_str(), r.code.as_str()))
            .collect();
        assert_eq!(
            refused,
            [
                (bad[2].exec_id.as_str(), "no_account"),
                (bad[15_000].exec_id.as_str(), "unknown_side"),
                (bad[19_000].exec_id.as_str(), "unknown_time_zone"),
            ],
            "in fetch order, each with its code"
        );
        assert_eq!(
            out.rejected[2].raw["execution"]["time"], "20240102 10:00:00 Mars/Olympus",
            "what TWS sent is kept"
        );
        assert_eq!(out.unrecognised_exec_ids, 1);
        let odd = out.fills.iter().find(|f| f.exec_id == "odd-id").unwrap();
        assert_eq!(
            (odd.exec_id_base.as_str(), odd.exec_revision),
            ("odd-id", 0)
        );
    }

    #[test]
    fn start_up_says_when_the_login_zone_is_not_configured() {
        assert_eq!(
            login_zone_warning(Some(Tz::America__New_York), "20241202 09:30:00 EST"),
            None
        );
        let named = login_zone_warning(None, "20241202 09:30:00 EST").unwrap();
        assert!(
            named.contains("[ibkr] timezone is not set") && named.contains("America/New_York"),
            "{named}"
        );
        let unknown = login_zone_warning(None, "20241202 09:30:00 Somewhere/Else").unwrap();
        assert!(unknown.contains("refused until it is set"), "{unknown}");
        assert!(!unknown.contains("UTC"), "never a silent UTC: {unknown}");
    }

    #[test]
    fn bad_executions_are_refused_with_the_exec_id() {
        let mut e = execution();
        e.side = "HOLD".into();
        let err = normalize(&e, None, UTC).unwrap_err();
        assert_eq!(err.exec_id, "0000e0d5.64305db8.01.02");
        assert!(err.message.contains("unknown side"), "{err}");
        let mut e = execution();
        e.account.clear();
        assert!(normalize(&e, None, UTC).is_err());
    }
}
