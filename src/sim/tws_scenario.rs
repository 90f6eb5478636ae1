//! Generated scenarios for the simulated TWS: orders filled in one to four partial fills, some
//! corrected (`.01` then `.02`), most with a perm id, some with perm id 0 and an order ref, some
//! with neither (the composite fallback), over several accounts; times with and without a zone
//! name (IANA or IB's `EST`/`EDT`) and in IB's UTC form `yyyymmdd-hh:mm:ss`; most fills with a
//! commission report, some with an unset commission, some with none.
//! Deterministic for a seed.

use chrono::{DateTime, Duration, Utc};
use chrono_tz::Tz;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use rust_decimal::Decimal;
use tradegate_actors::ibkr_syncer::tws::{CommissionReport, Contract, Execution, TwsTime};

use super::tws::Scenario;

/// What to generate.
#[derive(Debug, Clone)]
pub struct Generate {
    /// The accounts (each order belongs to one)
    pub accounts: Vec<String>,
    /// How many executions in all (corrections included)
    pub executions: usize,
    /// The seed
    pub seed: u64,
    /// The latest execution time
    pub end: DateTime<Utc>,
    /// How far back executions go from `end`
    pub span: Duration,
}

const SYMBOLS: &[(&str, i64)] = &[
    ("AAPL", 18_512),
    ("MSFT", 41_130),
    ("NVDA", 12_345),
    ("AMZN", 17_820),
    ("GOOGL", 16_410),
    ("META", 50_275),
    ("TSLA", 24_890),
    ("JPM", 19_905),
    ("XOM", 11_760),
    ("SPY", 51_230),
];

/// The text TWS writes for `t`, in one of four forms: in US/Eastern with its IANA name,
/// zone-less in UTC (the simulated login's zone), `yyyymmdd-hh:mm:ss` (UTC), or in New York
/// time with IB's abbreviation (`EST`/`EDT`).
fn tws_time(t: DateTime<Utc>, form: i64) -> TwsTime {
    let eastern = t.with_timezone(&Tz::US__Eastern);
    let text = match form.rem_euclid(4) {
        0 => format!("{} US/Eastern", eastern.format("%Y%m%d %H:%M:%S")),
        1 => t.format("%Y%m%d  %H:%M:%S").to_string(),
        2 => t.format("%Y%m%d-%H:%M:%S").to_string(),
        _ => eastern.format("%Y%m%d %H:%M:%S %Z").to_string(),
    };
    TwsTime::parse(&text).expect("generated TWS times parse")
}

/// Generates a scenario.
pub fn generate(spec: &Generate) -> Scenario {
    let mut rng = StdRng::seed_from_u64(spec.seed);
    let mut executions = Vec::with_capacity(spec.executions);
    let span_secs = spec.span.num_seconds().max(3_600);
    let mut order_no: i64 = 0;
    while executions.len() < spec.executions && !spec.accounts.is_empty() {
        order_no += 1;
        let account =
            spec.accounts[usize::try_from(order_no).unwrap_or(0) % spec.accounts.len()].clone();
        let (symbol, base_cents) = SYMBOLS[rng.random_range(0..SYMBOLS.len())];
        let side = if rng.random_bool(0.5) { "BOT" } else { "SLD" };
        let kind = rng.random_range(0..100);
        let (perm_id, order_ref) = match kind {
            0..80 => (1_000_000_000 + order_no, String::new()),
            80..92 => (0, format!("strat-{order_no}")),
            _ => (0, String::new()),
        };
        let client_id = rng.random_range(0..4);
        let fills = rng.random_range(1..=4);
        let start = spec.end - Duration::seconds(rng.random_range(60..span_secs));
        let form = order_no;
        let mut cum = Decimal::ZERO;
        let mut notional = Decimal::ZERO;
        for fill in 0..fills {
            let shares = Decimal::from(rng.random_range(1..=200));
            let price = Decimal::new(base_cents * 100 + rng.random_range(-500..500), 4);
            cum += shares;
            notional += shares * price;
            let at = start + Duration::seconds(i64::from(fill) * 7);
            let base = format!("0000e0d5.{order_no:08x}.{:02x}", fill + 1);
            let execution = Execution {
                req_id: 0,
                order_id: order_no,
                contract: Contract {
                    con_id: 265_598 + base_cents,
                    symbol: symbol.into(),
                    sec_type: "STK".into(),
                    exchange: "SMART".into(),
                    currency: "USD".into(),
                    local_symbol: symbol.into(),
                    trading_class: "NMS".into(),
                    ..Contract::default()
                },
                exec_id: format!("{base}.01"),
                time: tws_time(at, form),
                account: account.clone(),
                exchange: "ISLAND".into(),
                side: side.into(),
                shares,
                price,
                perm_id,
                client_id,
                liquidation: 0,
                cum_qty: cum,
                avg_price: (notional / cum).round_dp(4),
                order_ref: order_ref.clone(),
                last_liquidity: rng.random_range(1..=2),
                ..Execution::default()
            };
            let n = executions.len();
            let commission = (n % 40 != 39).then(|| CommissionReport {
                exec_id: execution.exec_id.clone(),
                commission: (n % 50 != 49)
                    .then(|| (shares * Decimal::new(5, 3)).max(Decimal::ONE).round_dp(2)),
                currency: "USD".into(),
                realized_pnl: None,
            });
            let corrected = rng.random_ratio(1, 20);
            executions.push((execution.clone(), commission.clone()));
            if corrected && executions.len() < spec.executions {
                let mut fixed = execution;
                fixed.exec_id = format!("{base}.02");
                fixed.price += Decimal::new(1, 2);
                let commission = commission.map(|mut c| {
                    c.exec_id = fixed.exec_id.clone();
                    c
                });
                executions.push((fixed, commission));
            }
            if executions.len() >= spec.executions {
                break;
            }
        }
    }
    Scenario {
        accounts: spec.accounts.clone(),
        executions,
        ..Scenario::default()
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashSet;

    use tradegate_actors::ibkr_syncer::fills::resolve_time;
    use tradegate_actors::ibkr_syncer::tws::parse_exec_id;

    use super::*;

    #[test]
    fn a_generated_scenario_has_every_case_sync_must_handle() {
        let s = generate(&Generate {
            accounts: vec!["DU1".into(), "DU2".into()],
            executions: 2_000,
            seed: 7,
            end: Utc::now(),
            span: Duration::days(3),
        });
        assert_eq!(s.executions.len(), 2_000);
        let e = || s.executions.iter().map(|(e, _)| e);
        assert!(
            e().any(|e| parse_exec_id(&e.exec_id).revision == 2),
            "corrections"
        );
        assert!(
            e().any(|e| e.perm_id == 0 && !e.order_ref.is_empty()),
            "order refs"
        );
        assert!(
            e().any(|e| e.perm_id == 0 && e.order_ref.is_empty()),
            "composite"
        );
        assert!(e().any(|e| e.cum_qty > e.shares), "partial fills");
        assert!(e().any(|e| e.time.zone.is_some()) && e().any(|e| e.time.zone.is_none()));
        assert!(e().any(|e| e.time.utc), "IB's UTC form");
        assert!(e().any(|e| matches!(e.time.zone.as_deref(), Some("EST" | "EDT"))));
        assert!(
            e().all(|e| resolve_time(&e.time, Some(Tz::UTC)).is_ok()),
            "every generated time can be placed"
        );
        let accounts: HashSet<_> = e().map(|e| e.account.as_str()).collect();
        assert_eq!(accounts.len(), 2);
        assert!(s.executions.iter().any(|(_, c)| c.is_none()));
        assert!(
            s.executions
                .iter()
                .any(|(_, c)| c.as_ref().is_some_and(|c| c.commission.is_none()))
        );
        let ids: HashSet<_> = e().map(|e| e.exec_id.as_str()).collect();
        assert_eq!(ids.len(), 2_000, "exec ids are unique");
    }
}
