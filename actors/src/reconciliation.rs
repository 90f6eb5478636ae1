//! Reconciliation with the brokers: for each window between two position snapshots of an
//! account, the broker's change of each position must be the sum of the fills on record for
//! that account and symbol in between. A difference is a break: a row, one alert
//! (`reconcile.position_break`, forwarded by the Reporter like every other), a metric.
//!
//! A snapshot shows the broker's state at some moment between its request and its answer, and
//! the broker's clock is not ours; a fill whose time is within `tolerance` of such an interval
//! may be on either side of it. Such fills are *uncertain*: the change is explained when some
//! choice of them, counted or not, makes the sums agree. A window is checked once, when its
//! fills are all on record: for Alpaca `settle` after its later snapshot (the stream delivers
//! within it), for IBKR once an executions sync started after that snapshot has completed.

use std::collections::{BTreeSet, HashMap, HashSet};
use std::time::Duration;

use chrono::Utc;
use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};
use serde_json::json;
use tokio_postgres::GenericClient;

use crate::store::StoreError;
use crate::store::alerts::{NewAlert, insert_alert};
use crate::store::jobs::{self, Enqueued};
use crate::store::reconciliation::{
    Bounds, CheckedWindow, NewBreak, SymbolFills, Window, fills_detail, open_windows, record_check,
    snapshot_quantities, window_fills,
};

/// The alert kind of a break.
pub const BREAK_ALERT: &str = "reconcile.position_break";
/// The alert kind of an order at a broker that no decision explains.
pub const EXTERNAL_ORDER_ALERT: &str = "reconcile.external_order";

/// Records the orders a broker listed for `account` that no decision explains, and raises one
/// alert for each found for the first time (a metric counts them too); the orders recorded.
pub async fn record_external(
    client: &mut impl GenericClient,
    broker: &str,
    account: &str,
    listed: &[crate::store::external_orders::ListedOrder],
) -> Result<Vec<crate::store::external_orders::ExternalOrder>, StoreError> {
    // the rows and their alerts together: a row found new is alerted, or not recorded at all
    let client = client
        .transaction()
        .await
        .map_err(StoreError::new("beginning to record external orders"))?;
    let found =
        crate::store::external_orders::record_unexplained(&client, broker, account, listed).await?;
    for order in found.iter().filter(|o| o.new) {
        let listed = listed
            .iter()
            .find(|l| l.broker_order_id == order.broker_order_id);
        metrics::counter!("tradegate_external_orders_total", "broker" => broker.to_string())
            .increment(1);
        tracing::error!(broker, account, order = %order.broker_order_id,
            symbol = order.symbol.as_deref(), status = %order.status,
            "an order at the broker that no decision explains");
        let alert = NewAlert {
            kind: EXTERNAL_ORDER_ALERT.into(),
            severity: "critical",
            message: format!(
                "{broker} {account}: order {} ({} {} {}, {}) was not placed by the gateway",
                order.broker_order_id,
                listed.and_then(|l| l.side.as_deref()).unwrap_or("?"),
                listed
                    .and_then(|l| l.quantity)
                    .map_or_else(|| "?".to_string(), |q| q.to_string()),
                order.symbol.as_deref().unwrap_or("?"),
                order.status,
            ),
            details: json!({
                "broker": broker,
                "account": account,
                "external_order_id": order.id,
                "broker_order_id": order.broker_order_id,
                "client_order_id": listed.and_then(|l| l.client_order_id.as_deref()),
                "symbol": order.symbol,
                "status": order.status,
            }),
            dedupe_key: Some(format!("external:{broker}:{}", order.broker_order_id)),
        };
        insert_alert(&client, &alert).await?;
    }
    client
        .commit()
        .await
        .map_err(StoreError::new("recording external orders"))?;
    Ok(found)
}

/// At most this many uncertain fills of one symbol are tried in every combination; beyond, the
/// change is explained when it lies between the sums of their negative and positive parts.
const EXACT_UNCERTAIN: usize = 16;

/// `[reconcile]`: how windows are judged.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ReconcileConfig {
    /// How far a broker's clock and ours may disagree, in milliseconds
    pub tolerance_ms: u64,
    /// How long after an Alpaca snapshot its window's fills are all on record, in milliseconds
    pub settle_ms: u64,
}

impl Default for ReconcileConfig {
    fn default() -> Self {
        Self {
            tolerance_ms: 1000,
            settle_ms: 2000,
        }
    }
}

impl ReconcileConfig {
    /// The clock tolerance.
    pub fn tolerance(&self) -> Duration {
        Duration::from_millis(self.tolerance_ms)
    }

    /// The settle time.
    pub fn settle(&self) -> Duration {
        Duration::from_millis(self.settle_ms)
    }
}

/// One window checked (or found checked by another process meanwhile: `run_id` is `None`).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Reconciled {
    /// The window
    pub window: Window,
    /// Its `reconciliation_runs` id
    pub run_id: Option<i64>,
    /// Symbols compared
    pub symbols_checked: usize,
    /// Fills considered
    pub fills_considered: i64,
    /// The breaks found
    pub breaks: Vec<NewBreak>,
}

/// Whether `need` is the sum of some of `uncertain` (none of them: zero).
fn explained(need: Decimal, uncertain: &[Decimal]) -> bool {
    if need.is_zero() {
        return true;
    }
    if uncertain.len() > EXACT_UNCERTAIN {
        let low: Decimal = uncertain.iter().filter(|q| q.is_sign_negative()).sum();
        let high: Decimal = uncertain.iter().filter(|q| q.is_sign_positive()).sum();
        return low <= need && need <= high;
    }
    let mut sums: HashSet<Decimal> = HashSet::from([Decimal::ZERO]);
    for q in uncertain {
        let more: Vec<Decimal> = sums.iter().filter_map(|s| s.checked_add(*q)).collect();
        sums.extend(more);
        if sums.contains(&need) {
            return true;
        }
    }
    false
}

/// The symbols whose change from `before` to `after` the fills do not explain, as breaks
/// without their fill list; and how many symbols were compared.
pub fn compare(
    before: &HashMap<String, Decimal>,
    after: &HashMap<String, Decimal>,
    fills: &HashMap<String, SymbolFills>,
) -> (usize, Vec<NewBreak>) {
    let symbols: BTreeSet<&str> = before
        .keys()
        .chain(after.keys())
        .chain(fills.keys())
        .map(String::as_str)
        .collect();
    let none = SymbolFills::default();
    let breaks = symbols
        .iter()
        .filter_map(|symbol| {
            let was = before.get(*symbol).copied().unwrap_or_default();
            let is = after.get(*symbol).copied().unwrap_or_default();
            let f = fills.get(*symbol).unwrap_or(&none);
            let unexplained = (is - was).checked_sub(f.certain);
            if unexplained.is_some_and(|u| explained(u, &f.uncertain)) {
                return None;
            }
            Some(NewBreak {
                symbol: (*symbol).to_string(),
                broker_before: was,
                broker_after: is,
                expected_change: f.certain,
                uncertain_change: f.uncertain.iter().sum(),
                fills_considered: f.certain_count + f.uncertain.len() as i64,
                fills: Vec::new(),
            })
        })
        .collect();
    (symbols.len(), breaks)
}

/// Checks one window and records the outcome (a break's alert included).
pub async fn check_window(
    client: &impl GenericClient,
    w: Window,
    config: &ReconcileConfig,
    trigger: &str,
) -> Result<Reconciled, StoreError> {
    let tolerance = chrono::Duration::from_std(config.tolerance()).unwrap_or_default();
    let bounds = Bounds::of(&w, tolerance);
    let before = snapshot_quantities(client, w.from.id).await?;
    let after = snapshot_quantities(client, w.to.id).await?;
    let fills = window_fills(client, &w, &bounds).await?;
    let fills_considered = fills
        .values()
        .map(|f| f.certain_count + f.uncertain.len() as i64)
        .sum();
    let (symbols_checked, mut breaks) = compare(&before, &after, &fills);
    if !breaks.is_empty() {
        let symbols: Vec<&str> = breaks.iter().map(|b| b.symbol.as_str()).collect();
        let mut detail = fills_detail(client, &w, &bounds, &symbols).await?;
        for b in &mut breaks {
            b.fills = detail.remove(&b.symbol).unwrap_or_default();
        }
    }
    let recorded = record_check(
        client,
        &CheckedWindow {
            window: &w,
            symbols_checked,
            fills_considered,
            breaks: &breaks,
            trigger,
        },
    )
    .await?;
    let run_id = match recorded {
        None => None,
        Some((run_id, recorded)) => {
            metrics::counter!("tradegate_reconciliation_windows_total", "broker" => w.broker.clone())
                .increment(1);
            for r in &recorded {
                let Some(b) = breaks.iter().find(|b| b.symbol == r.symbol) else {
                    continue;
                };
                metrics::counter!("tradegate_reconciliation_breaks_total",
                    "broker" => w.broker.clone())
                .increment(1);
                tracing::error!(broker = %w.broker, account = %w.account, symbol = %b.symbol,
                    broker_change = %(b.broker_after - b.broker_before),
                    expected = %b.expected_change, "reconciliation break");
                let alert = NewAlert {
                    kind: BREAK_ALERT.into(),
                    severity: "critical",
                    message: format!(
                        "{} {} {}: the broker's position went {} -> {} ({:+}) but the fills on \
                         record add {:+}{}",
                        w.broker,
                        w.account,
                        b.symbol,
                        b.broker_before,
                        b.broker_after,
                        b.broker_after - b.broker_before,
                        b.expected_change,
                        if b.uncertain_change.is_zero() {
                            String::new()
                        } else {
                            format!(" (and {:+} uncertain)", b.uncertain_change)
                        }
                    ),
                    details: json!({
                        "break_id": r.id, "run_id": run_id, "broker": w.broker,
                        "account": w.account, "symbol": b.symbol,
                        "window_start": w.from.as_of, "window_end": w.to.as_of,
                        "broker_before": b.broker_before, "broker_after": b.broker_after,
                        "expected_change": b.expected_change,
                        "uncertain_change": b.uncertain_change,
                        "fills_considered": b.fills_considered,
                    }),
                    dedupe_key: Some(format!("break:{}", r.id)),
                };
                insert_alert(client, &alert).await?;
            }
            Some(run_id)
        }
    };
    Ok(Reconciled {
        window: w,
        run_id,
        symbols_checked,
        fills_considered,
        breaks,
    })
}

/// Checks every window whose fills are all on record by now, oldest first; `broker` and
/// `account` narrow them. Each window is checked in a transaction of its own (its run, its
/// breaks and their alerts, all or none); a window whose check fails is logged and counted and
/// the next run tries it again, and the windows after it are checked all the same.
pub async fn reconcile(
    client: &mut impl GenericClient,
    broker: Option<&str>,
    account: Option<&str>,
    config: &ReconcileConfig,
    trigger: &str,
) -> Result<Vec<Reconciled>, StoreError> {
    let settle = chrono::Duration::from_std(config.settle()).unwrap_or_default();
    let windows = open_windows(client, broker, account, Utc::now() - settle).await?;
    let mut done = Vec::with_capacity(windows.len());
    for w in windows {
        let (broker, account, to) = (w.broker.clone(), w.account.clone(), w.to.id);
        let checked = async {
            let tx = client
                .transaction()
                .await
                .map_err(StoreError::new("beginning a reconciliation"))?;
            let checked = check_window(&tx, w, config, trigger).await?;
            tx.commit()
                .await
                .map_err(StoreError::new("committing a reconciliation"))?;
            Ok::<_, StoreError>(checked)
        }
        .await;
        match checked {
            Ok(checked) => done.push(checked),
            Err(e) => {
                metrics::counter!("tradegate_reconciliation_failures_total", "broker" => broker.clone())
                    .increment(1);
                tracing::error!(%broker, %account, to_snapshot = to, error = %e,
                    "a reconciliation window could not be checked; the next run tries it again");
            }
        }
    }
    Ok(done)
}

/// Checks the ready windows of `account` at `broker` with a connection of `pool`, logging what
/// was found; a failure is logged too (the windows stay open: the next run checks them).
pub async fn reconcile_logged(
    pool: &deadpool_postgres::Pool,
    broker: &str,
    account: &str,
    config: &ReconcileConfig,
    trigger: &str,
) {
    let done = match pool.get().await {
        Ok(mut client) => reconcile(&mut **client, Some(broker), Some(account), config, trigger)
            .await
            .map_err(|e| e.to_string()),
        Err(e) => Err(format!("no database connection: {e}")),
    };
    match done {
        Ok(windows) if windows.is_empty() => {}
        Ok(windows) => {
            let breaks: usize = windows.iter().map(|w| w.breaks.len()).sum();
            tracing::info!(
                broker,
                account,
                windows = windows.len(),
                breaks,
                trigger,
                "positions reconciled"
            );
        }
        Err(e) => tracing::warn!(broker, account, error = %e, trigger,
            "could not reconcile positions; the next run checks these windows again"),
    }
}

/// What a reconciliation request did.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Requested {
    /// The `positions.sync` jobs pending for the accounts (new, or already waiting): the
    /// running gateway takes them, records fresh snapshots and reconciles them
    pub jobs: Vec<Enqueued>,
    /// The windows that were ready and checked now
    pub checked: Vec<Reconciled>,
}

/// Enqueues a `positions.sync` job for each of `accounts` (idempotently: one pending per
/// account).
pub async fn enqueue_syncs(
    client: &impl GenericClient,
    accounts: &[String],
) -> Result<Vec<Enqueued>, StoreError> {
    let empty = serde_json::Value::Object(serde_json::Map::new());
    let mut enqueued = Vec::with_capacity(accounts.len());
    for account in accounts {
        enqueued.push(jobs::enqueue(client, jobs::POSITIONS_SYNC, account, &empty).await?);
    }
    Ok(enqueued)
}

/// Checks the ready windows of each of `accounts`.
pub async fn check_accounts(
    client: &mut impl GenericClient,
    accounts: &[String],
    config: &ReconcileConfig,
    trigger: &str,
) -> Result<Vec<Reconciled>, StoreError> {
    let mut checked = Vec::new();
    for account in accounts {
        checked.extend(reconcile(client, None, Some(account), config, trigger).await?);
    }
    Ok(checked)
}

/// A reconciliation asked for (`tradegate reconcile`, `POST /api/v1/reconcile`): a
/// `positions.sync` job enqueued for each of `accounts` (idempotently), then the windows of
/// those accounts whose fills are all on record checked now.
pub async fn request(
    client: &mut impl GenericClient,
    accounts: &[String],
    config: &ReconcileConfig,
    trigger: &str,
) -> Result<Requested, StoreError> {
    let jobs = enqueue_syncs(client, accounts).await?;
    let checked = check_accounts(client, accounts, config, trigger).await?;
    Ok(Requested { jobs, checked })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn d(s: &str) -> Decimal {
        s.parse().unwrap()
    }

    fn map(items: &[(&str, &str)]) -> HashMap<String, Decimal> {
        items.iter().map(|(s, q)| ((*s).into(), d(q))).collect()
    }

    fn fills(items: &[(&str, &str, i64, &[&str])]) -> HashMap<String, SymbolFills> {
        items
            .iter()
            .map(|(s, certain, n, uncertain)| {
                (
                    (*s).into(),
                    SymbolFills {
                        certain: d(certain),
                        certain_count: *n,
                        uncertain: uncertain.iter().map(|q| d(q)).collect(),
                    },
                )
            })
            .collect()
    }

    #[test]
    fn changes_the_fills_explain_are_no_break() {
        let (n, breaks) = compare(
            &map(&[("AAPL", "10"), ("MSFT", "-5"), ("GONE", "3")]),
            &map(&[("AAPL", "12.5"), ("MSFT", "-5"), ("NEW", "7")]),
            &fills(&[
                ("AAPL", "2.5", 2, &[]),
                ("GONE", "-3", 1, &[]),
                ("NEW", "0", 0, &["7"]),
                ("FLAT", "0", 2, &[]),
            ]),
        );
        assert_eq!(n, 5);
        assert!(breaks.is_empty(), "{breaks:?}");
    }

    #[test]
    fn a_change_without_a_fill_is_one_break_with_its_numbers() {
        let (_, breaks) = compare(
            &map(&[("AAPL", "10"), ("MSFT", "4")]),
            &map(&[("AAPL", "17"), ("MSFT", "6")]),
            &fills(&[("MSFT", "2", 1, &[]), ("AAPL", "0", 0, &["5", "-1"])]),
        );
        assert_eq!(breaks.len(), 1);
        let b = &breaks[0];
        assert_eq!(
            (b.symbol.as_str(), b.broker_before, b.broker_after),
            ("AAPL", d("10"), d("17"))
        );
        assert_eq!((b.expected_change, b.uncertain_change), (d("0"), d("4")));
        assert_eq!(b.fills_considered, 2);
    }

    #[test]
    fn a_fill_on_record_the_broker_does_not_show_is_a_break() {
        let (_, breaks) = compare(&map(&[]), &map(&[]), &fills(&[("AAPL", "5", 1, &[])]));
        assert_eq!(breaks.len(), 1);
        assert_eq!(breaks[0].expected_change, d("5"));
    }

    #[test]
    fn uncertain_fills_explain_a_change_only_by_some_choice_of_them() {
        assert!(explained(d("0"), &[]));
        assert!(!explained(d("1"), &[]));
        assert!(explained(d("3"), &[d("1"), d("2"), d("-4")]));
        assert!(explained(d("-2"), &[d("1"), d("2"), d("-4")]));
        assert!(!explained(d("4"), &[d("1"), d("2"), d("-4")]));
        // beyond the exact limit, a range
        let many = vec![d("1"); EXACT_UNCERTAIN + 1];
        assert!(explained(d("17"), &many));
        assert!(!explained(d("18"), &many));
        assert!(!explained(d("-1"), &many));
    }
}
