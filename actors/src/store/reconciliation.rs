//! Reconciliation (`reconciliation_runs`, `reconciliation_breaks`): the windows between two
//! position snapshots of an account still to check, the fills on record inside one, and the
//! outcome of a check, recorded once per window.

use std::collections::HashMap;

use chrono::{DateTime, Utc};
use rust_decimal::Decimal;
use serde::Serialize;
use serde_json::Value;
use tokio_postgres::GenericClient;

use super::StoreError;

/// The IBKR broker name of snapshots and breaks.
pub const IBKR: &str = "ibkr";

/// One snapshot bounding a window: when it was asked and when it was answered.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct SnapshotBound {
    /// Its `position_snapshots` id
    pub id: i64,
    /// When the request was sent
    pub requested_at: DateTime<Utc>,
    /// When the answer was received
    pub as_of: DateTime<Utc>,
}

/// Two consecutive snapshots of one account: the broker's positions changed between them by
/// the fills made in between.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Window {
    /// The broker
    pub broker: String,
    /// The account
    pub account: String,
    /// The earlier snapshot
    pub from: SnapshotBound,
    /// The later snapshot
    pub to: SnapshotBound,
}

/// The windows not checked yet whose fills are all on record by now: for Alpaca, the later
/// snapshot is older than `settled_before` (the stream has had time to deliver); for IBKR, an
/// executions sync of the account completed that started after the later snapshot. Oldest
/// first; `broker` and `account` narrow them.
pub async fn open_windows(
    client: &impl GenericClient,
    broker: Option<&str>,
    account: Option<&str>,
    settled_before: DateTime<Utc>,
) -> Result<Vec<Window>, StoreError> {
    let rows = client
        .query(
            "SELECT p.broker, p.account, p.prev_id, p.prev_requested, p.prev_as_of, p.id, \
                    p.requested_at, p.as_of \
             FROM ( \
                 SELECT s.broker, s.account, s.id, s.requested_at, s.as_of, \
                        lag(s.id) OVER w AS prev_id, lag(s.requested_at) OVER w AS prev_requested, \
                        lag(s.as_of) OVER w AS prev_as_of \
                 FROM position_snapshots s \
                 WHERE ($1::text IS NULL OR s.broker = $1) AND ($2::text IS NULL OR s.account = $2) \
                   AND s.id >= COALESCE((SELECT max(r.to_snapshot_id) FROM reconciliation_runs r \
                                         WHERE r.broker = s.broker AND r.account = s.account), 0) \
                 WINDOW w AS (PARTITION BY s.broker, s.account ORDER BY s.id)) p \
             WHERE p.prev_id IS NOT NULL \
               AND NOT EXISTS (SELECT 1 FROM reconciliation_runs r WHERE r.to_snapshot_id = p.id) \
               AND CASE WHEN p.broker = $4 THEN EXISTS ( \
                            SELECT 1 FROM sync_runs y WHERE y.account_id = p.account \
                              AND y.status = 'completed' AND y.window_end >= p.as_of \
                              AND y.window_start <= p.prev_requested) \
                        ELSE p.as_of <= $3 END \
             ORDER BY p.id",
            &[&broker, &account, &settled_before, &IBKR],
        )
        .await
        .map_err(StoreError::new("reading the windows to reconcile"))?;
    rows.iter()
        .map(|r| {
            Ok(Window {
                broker: r.try_get(0)?,
                account: r.try_get(1)?,
                from: SnapshotBound {
                    id: r.try_get(2)?,
                    requested_at: r.try_get(3)?,
                    as_of: r.try_get(4)?,
                },
                to: SnapshotBound {
                    id: r.try_get(5)?,
                    requested_at: r.try_get(6)?,
                    as_of: r.try_get(7)?,
                },
            })
        })
        .collect::<Result<_, tokio_postgres::Error>>()
        .map_err(StoreError::new("reading the windows to reconcile"))
}

/// The fills on record of an account, one row each: `symbol`, the signed quantity `q` (buys
/// positive), the earliest and latest time it can have happened at the broker (`lo`, `hi`),
/// and where it is recorded (`source`, `ref`). Parameters: $1 the account, $2 and $3 the
/// earliest `hi` and latest `lo` of interest.
///
/// Alpaca: the fill events of our orders, each counting only what it added to its order (so a
/// redelivered or recovered fill counts once), at the broker's time; and what a submission's
/// answer or a look-up recorded beyond the events, between the send and that answer.
const ALPACA_FILLS: &str = "SELECT d.symbol, CASE d.side WHEN 'buy' THEN e.qty ELSE -e.qty END AS q, \
            COALESCE(e.event_at, e.recorded_at) AS lo, COALESCE(e.event_at, e.recorded_at) AS hi, \
            'order_event' AS source, e.id AS ref \
     FROM broker_order_events e JOIN trade_decisions d ON d.id = e.trade_decision_id \
     WHERE e.broker = 'alpaca' AND e.account = $1 AND e.event IN ('fill', 'partial_fill') \
       AND e.qty > 0 \
       AND ((e.event_at > $2 AND e.event_at <= $3) \
            OR (e.event_at IS NULL AND e.recorded_at > $2 AND e.recorded_at <= $3)) \
     UNION ALL \
     SELECT d.symbol, CASE d.side WHEN 'buy' THEN r.rest ELSE -r.rest END, \
            x.submitted_at, COALESCE(p.captured_at, x.updated_at), 'execution', x.id \
     FROM trade_executions x JOIN trade_decisions d ON d.id = x.trade_decision_id \
     LEFT JOIN api_payloads p ON p.id = x.api_response_payload_id \
     CROSS JOIN LATERAL ( \
         SELECT x.filled_quantity - COALESCE(( \
             SELECT sum(e.qty) FROM broker_order_events e \
             WHERE e.trade_decision_id = d.id AND e.event IN ('fill', 'partial_fill')), 0) AS rest) r \
     WHERE x.broker = 'alpaca' AND d.account = $1 AND x.filled_quantity > 0 \
       AND x.submitted_at <= $3 AND x.updated_at > $2::timestamptz - interval '1 minute' \
       AND COALESCE(p.captured_at, x.updated_at) > $2 AND r.rest > 0";

/// IBKR: every revision of the account's executions, whose time TWS gives to the second, each
/// counting what it changed: its signed quantity less that of the revision it corrects (the
/// next lower one of its execution). A fill's first revision counts whole, at its time; a
/// correction counts the difference, sometime between its execution's time and when it was
/// recorded (TWS may keep the original time on a correction), so a window's sum is what the
/// canonical fills at its end add to those at its start. An instrument other than a stock is
/// keyed by its symbol and security type, as its position is.
const IBKR_FILLS: &str = "SELECT symbol, q, lo, hi, source, ref FROM ( \
     SELECT CASE WHEN COALESCE(NULLIF(f.sec_type, ''), 'STK') = 'STK' THEN f.symbol \
                 ELSE f.symbol || ' ' || f.sec_type END AS symbol, \
            CASE f.side WHEN 'buy' THEN f.quantity ELSE -f.quantity END - COALESCE(c.q, 0) AS q, \
            f.executed_at AS lo, \
            CASE WHEN c.q IS NULL THEN f.executed_at + interval '1 second' \
                 ELSE GREATEST(f.executed_at + interval '1 second', f.created_at) END AS hi, \
            'broker_fill' AS source, f.id AS ref \
     FROM broker_fills f \
     LEFT JOIN LATERAL ( \
         SELECT CASE p.side WHEN 'buy' THEN p.quantity ELSE -p.quantity END AS q \
         FROM broker_fills p \
         WHERE p.account_id = f.account_id AND p.exec_id_base = f.exec_id_base \
           AND p.exec_revision < f.exec_revision AND p.side IS NOT NULL \
         ORDER BY p.exec_revision DESC LIMIT 1) c ON true \
     WHERE f.account_id = $1 AND NULLIF(f.symbol, '') IS NOT NULL AND f.side IS NOT NULL \
       AND f.executed_at <= $3::timestamptz \
       AND (f.executed_at > $2::timestamptz - interval '1 second' \
            OR f.created_at > $2::timestamptz)) w \
     WHERE w.q <> 0 AND w.hi > $2::timestamptz";

/// What `account` holds in `symbol` at `broker` beyond the fills of the gateway on record:
/// what the first snapshot showed beyond the gateway's fills before it (a position the account
/// had before the gateway traded it), plus every break's unexplained change since (trades made
/// elsewhere, as reconciliation found them). Zero before the first snapshot. The gateway's own
/// fills plus this is the position by the freshest of both: the gateway's fills as they come,
/// the broker's word as each snapshot is reconciled.
pub async fn outside_position(
    client: &impl GenericClient,
    broker: &str,
    account: &str,
    symbol: &str,
) -> Result<Decimal, StoreError> {
    let what = "reading the position outside the gateway's fills";
    let Some(first) = client
        .query_opt(
            "SELECT s.as_of, COALESCE((SELECT p.quantity FROM broker_positions p \
                                       WHERE p.snapshot_id = s.id AND p.symbol = $3), 0) \
             FROM position_snapshots s WHERE s.broker = $1 AND s.account = $2 \
             ORDER BY s.id LIMIT 1",
            &[&broker, &account, &symbol],
        )
        .await
        .map_err(StoreError::new(what))?
    else {
        return Ok(Decimal::ZERO);
    };
    let (as_of, held): (DateTime<Utc>, Decimal) = (first.get(0), first.get(1));
    let sql = format!(
        "SELECT COALESCE((SELECT sum(q) FROM ({}) f WHERE symbol = $4), 0), \
                COALESCE((SELECT sum(b.broker_change - b.expected_change) \
                          FROM reconciliation_breaks b \
                          WHERE b.broker = $5 AND b.account = $1 AND b.symbol = $4), 0)",
        fills_of(broker)
    );
    let since = DateTime::<Utc>::UNIX_EPOCH;
    let row = client
        .query_one(&sql, &[&account, &since, &as_of, &symbol, &broker])
        .await
        .map_err(StoreError::new(what))?;
    let before: Decimal = row.try_get(0).map_err(StoreError::new(what))?;
    let breaks: Decimal = row.try_get(1).map_err(StoreError::new(what))?;
    Ok(held - before + breaks)
}

fn fills_of(broker: &str) -> &'static str {
    if broker == IBKR {
        IBKR_FILLS
    } else {
        ALPACA_FILLS
    }
}

/// The fills of one symbol inside a window.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SymbolFills {
    /// The signed sum of the fills certainly inside the window
    pub certain: Decimal,
    /// How many those are
    pub certain_count: i64,
    /// The signed quantities of fills that may be on either side of one of its ends
    pub uncertain: Vec<Decimal>,
}

/// Where the time of a fill falls against a window, with `tolerance` for the clocks of the
/// broker and the gateway: inside when it is after the earlier snapshot was answered and
/// before the later one was asked; outside when it is before the earlier one was asked or
/// after the later one was answered; uncertain otherwise.
#[derive(Debug, Clone, Copy)]
pub struct Bounds {
    /// The earliest `hi` of a fill of interest
    pub from: DateTime<Utc>,
    /// The latest `lo` of a fill of interest
    pub to: DateTime<Utc>,
    /// A fill whose `lo` is after this ...
    pub certain_after: DateTime<Utc>,
    /// ... and whose `hi` is at most this is certainly inside
    pub certain_until: DateTime<Utc>,
}

impl Bounds {
    /// The bounds of `w` with `tolerance`.
    pub fn of(w: &Window, tolerance: chrono::Duration) -> Self {
        Self {
            from: w.from.requested_at - tolerance,
            to: w.to.as_of + tolerance,
            certain_after: w.from.as_of + tolerance,
            certain_until: w.to.requested_at - tolerance,
        }
    }
}

/// The fills on record of the window's account inside `bounds`, by symbol.
pub async fn window_fills(
    client: &impl GenericClient,
    w: &Window,
    bounds: &Bounds,
) -> Result<HashMap<String, SymbolFills>, StoreError> {
    let sql = format!(
        "SELECT symbol, COALESCE(sum(q) FILTER (WHERE certain), 0), \
                count(*) FILTER (WHERE certain), \
                COALESCE(array_agg(q) FILTER (WHERE NOT certain), '{{}}') \
         FROM (SELECT f.symbol, f.q, (f.lo > $4 AND f.hi <= $5) AS certain \
               FROM ({}) f) c \
         GROUP BY symbol",
        fills_of(&w.broker)
    );
    let rows = client
        .query(
            &sql,
            &[
                &w.account,
                &bounds.from,
                &bounds.to,
                &bounds.certain_after,
                &bounds.certain_until,
            ],
        )
        .await
        .map_err(StoreError::new("reading the fills of a window"))?;
    rows.iter()
        .map(|r| {
            Ok((
                r.try_get(0)?,
                SymbolFills {
                    certain: r.try_get(1)?,
                    certain_count: r.try_get(2)?,
                    uncertain: r.try_get(3)?,
                },
            ))
        })
        .collect::<Result<_, tokio_postgres::Error>>()
        .map_err(StoreError::new("reading the fills of a window"))
}

/// The fills of `symbols` inside `bounds`, each as `{"source", "id", "quantity", "at"}`, by
/// symbol: what a break row names.
pub async fn fills_detail(
    client: &impl GenericClient,
    w: &Window,
    bounds: &Bounds,
    symbols: &[&str],
) -> Result<HashMap<String, Vec<Value>>, StoreError> {
    let sql = format!(
        "SELECT symbol, jsonb_agg(jsonb_build_object('source', source, 'id', ref, \
                    'quantity', q::text, 'at', lo) ORDER BY lo, ref) \
         FROM ({}) f WHERE symbol = ANY($4) GROUP BY symbol",
        fills_of(&w.broker)
    );
    let rows = client
        .query(&sql, &[&w.account, &bounds.from, &bounds.to, &symbols])
        .await
        .map_err(StoreError::new("reading the fills of a break"))?;
    rows.iter()
        .map(|r| {
            let list: Value = r.try_get(1)?;
            let list = match list {
                Value::Array(items) => items,
                other => vec![other],
            };
            Ok((r.try_get(0)?, list))
        })
        .collect::<Result<_, tokio_postgres::Error>>()
        .map_err(StoreError::new("reading the fills of a break"))
}

/// A snapshot's positions, by symbol (an IBKR instrument other than a stock by its symbol
/// and security type, as [`IBKR_FILLS`] keys its fills).
pub async fn snapshot_quantities(
    client: &impl GenericClient,
    snapshot_id: i64,
) -> Result<HashMap<String, Decimal>, StoreError> {
    let rows = client
        .query(
            "SELECT symbol, quantity FROM broker_positions WHERE snapshot_id = $1",
            &[&snapshot_id],
        )
        .await
        .map_err(StoreError::new("reading a snapshot's positions"))?;
    rows.iter()
        .map(|r| Ok((r.try_get(0)?, r.try_get(1)?)))
        .collect::<Result<_, tokio_postgres::Error>>()
        .map_err(StoreError::new("reading a snapshot's positions"))
}

/// A difference found in a window.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct NewBreak {
    /// The instrument
    pub symbol: String,
    /// The broker's position at the window's start (0: none)
    pub broker_before: Decimal,
    /// ... and at its end
    pub broker_after: Decimal,
    /// The signed sum of the fills certainly inside the window
    pub expected_change: Decimal,
    /// The signed sum of the fills that may be on either side of an end
    pub uncertain_change: Decimal,
    /// How many fills were considered
    pub fills_considered: i64,
    /// The fills considered
    pub fills: Vec<Value>,
}

/// A window checked.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct CheckedWindow<'a> {
    /// The window
    pub window: &'a Window,
    /// How many symbols were compared
    pub symbols_checked: usize,
    /// How many fills were considered
    pub fills_considered: i64,
    /// Its breaks
    pub breaks: &'a [NewBreak],
    /// What asked for the check
    pub trigger: &'a str,
}

/// A recorded break, with its id.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct RecordedBreak {
    /// Its `reconciliation_breaks` id
    pub id: i64,
    /// The instrument
    pub symbol: String,
}

/// Records a checked window and its breaks in one statement; `None` when the window was
/// checked already (by another process at the same time), in which case nothing is written.
pub async fn record_check(
    client: &impl GenericClient,
    c: &CheckedWindow<'_>,
) -> Result<Option<(i64, Vec<RecordedBreak>)>, StoreError> {
    let w = c.window;
    let symbols: Vec<&str> = c.breaks.iter().map(|b| b.symbol.as_str()).collect();
    let before: Vec<Decimal> = c.breaks.iter().map(|b| b.broker_before).collect();
    let after: Vec<Decimal> = c.breaks.iter().map(|b| b.broker_after).collect();
    let expected: Vec<Decimal> = c.breaks.iter().map(|b| b.expected_change).collect();
    let uncertain: Vec<Decimal> = c.breaks.iter().map(|b| b.uncertain_change).collect();
    let counts: Vec<i32> = c
        .breaks
        .iter()
        .map(|b| i32::try_from(b.fills_considered).unwrap_or(i32::MAX))
        .collect();
    let fills: Vec<Value> = c
        .breaks
        .iter()
        .map(|b| Value::Array(b.fills.clone()))
        .collect();
    let symbols_checked = i32::try_from(c.symbols_checked).unwrap_or(i32::MAX);
    let fills_considered = i32::try_from(c.fills_considered).unwrap_or(i32::MAX);
    let breaks_count = i32::try_from(c.breaks.len()).unwrap_or(i32::MAX);
    let rows = client
        .query(
            "WITH run AS ( \
                 INSERT INTO reconciliation_runs (broker, account, from_snapshot_id, \
                     to_snapshot_id, window_start, window_end, symbols_checked, \
                     fills_considered, breaks_count, trigger) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10) \
                 ON CONFLICT (to_snapshot_id) DO NOTHING RETURNING id), \
             b AS ( \
                 INSERT INTO reconciliation_breaks (run_id, broker, account, symbol, \
                     window_start, window_end, broker_before, broker_after, broker_change, \
                     expected_change, uncertain_change, fills_considered, fills) \
                 SELECT run.id, $1, $2, x.symbol, $5, $6, x.before, x.after, x.after - x.before, \
                        x.expected, x.uncertain, x.n, x.fills \
                 FROM run, unnest($11::text[], $12::numeric[], $13::numeric[], $14::numeric[], \
                                  $15::numeric[], $16::int[], $17::jsonb[]) \
                     AS x(symbol, before, after, expected, uncertain, n, fills) \
                 RETURNING id, symbol) \
             SELECT run.id, b.id, b.symbol FROM run LEFT JOIN b ON true",
            &[
                &w.broker,
                &w.account,
                &w.from.id,
                &w.to.id,
                &w.from.as_of,
                &w.to.as_of,
                &symbols_checked,
                &fills_considered,
                &breaks_count,
                &c.trigger,
                &symbols,
                &before,
                &after,
                &expected,
                &uncertain,
                &counts,
                &fills,
            ],
        )
        .await
        .map_err(StoreError::new("recording a reconciliation"))?;
    let Some(first) = rows.first() else {
        return Ok(None);
    };
    let run: i64 = first.get(0);
    let breaks = rows
        .iter()
        .filter_map(|r| {
            Some(RecordedBreak {
                id: r.get::<_, Option<i64>>(1)?,
                symbol: r.get(2),
            })
        })
        .collect();
    Ok(Some((run, breaks)))
}

/// A window as it was checked.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct RunRow {
    /// Its id
    pub id: i64,
    /// The broker
    pub broker: String,
    /// The account
    pub account: String,
    /// The snapshots bounding it
    pub from_snapshot_id: i64,
    /// ...
    pub to_snapshot_id: i64,
    /// When the earlier snapshot was answered
    pub window_start: DateTime<Utc>,
    /// When the later one was
    pub window_end: DateTime<Utc>,
    /// Symbols compared
    pub symbols_checked: i32,
    /// Fills considered
    pub fills_considered: i32,
    /// Breaks found
    pub breaks_count: i32,
    /// What asked for it
    pub trigger: String,
    /// When
    pub checked_at: DateTime<Utc>,
}

/// A recorded break.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct BreakRow {
    /// Its id
    pub id: i64,
    /// Its window's check
    pub run_id: i64,
    /// The broker
    pub broker: String,
    /// The account
    pub account: String,
    /// The instrument
    pub symbol: String,
    /// The window
    pub window_start: DateTime<Utc>,
    /// ...
    pub window_end: DateTime<Utc>,
    /// The broker's position at the start
    pub broker_before: Decimal,
    /// ... and at the end
    pub broker_after: Decimal,
    /// Their difference
    pub broker_change: Decimal,
    /// The fills on record inside the window
    pub expected_change: Decimal,
    /// Fills that may be on either side of an end
    pub uncertain_change: Decimal,
    /// How many fills were considered
    pub fills_considered: i32,
    /// The fills considered
    pub fills: Value,
    /// When it was found
    pub detected_at: DateTime<Utc>,
}

/// The checks and breaks recorded over `range`, newest first, at most `limit` of each;
/// `account` narrows them.
pub async fn recent(
    client: &impl GenericClient,
    account: Option<&str>,
    range: super::reports::Range,
    limit: i64,
) -> Result<Reconciliations, StoreError> {
    let (since, until) = (range.from, range.to);
    let runs = client
        .query(
            "SELECT id, broker, account, from_snapshot_id, to_snapshot_id, window_start, \
                    window_end, symbols_checked, fills_considered, breaks_count, trigger, \
                    checked_at \
             FROM reconciliation_runs \
             WHERE checked_at >= $1 AND checked_at < $4 AND ($2::text IS NULL OR account = $2) \
             ORDER BY id DESC LIMIT $3",
            &[&since, &account, &limit, &until],
        )
        .await
        .map_err(StoreError::new("reading reconciliations"))?;
    let runs = runs
        .iter()
        .map(|r| {
            Ok(RunRow {
                id: r.try_get(0)?,
                broker: r.try_get(1)?,
                account: r.try_get(2)?,
                from_snapshot_id: r.try_get(3)?,
                to_snapshot_id: r.try_get(4)?,
                window_start: r.try_get(5)?,
                window_end: r.try_get(6)?,
                symbols_checked: r.try_get(7)?,
                fills_considered: r.try_get(8)?,
                breaks_count: r.try_get(9)?,
                trigger: r.try_get(10)?,
                checked_at: r.try_get(11)?,
            })
        })
        .collect::<Result<_, tokio_postgres::Error>>()
        .map_err(StoreError::new("reading reconciliations"))?;
    let breaks = client
        .query(
            "SELECT id, run_id, broker, account, symbol, window_start, window_end, \
                    broker_before, broker_after, broker_change, expected_change, \
                    uncertain_change, fills_considered, fills, detected_at \
             FROM reconciliation_breaks \
             WHERE detected_at >= $1 AND detected_at < $4 \
               AND ($2::text IS NULL OR account = $2) \
             ORDER BY id DESC LIMIT $3",
            &[&since, &account, &limit, &until],
        )
        .await
        .map_err(StoreError::new("reading reconciliation breaks"))?;
    let breaks = breaks
        .iter()
        .map(|r| {
            Ok(BreakRow {
                id: r.try_get(0)?,
                run_id: r.try_get(1)?,
                broker: r.try_get(2)?,
                account: r.try_get(3)?,
                symbol: r.try_get(4)?,
                window_start: r.try_get(5)?,
                window_end: r.try_get(6)?,
                broker_before: r.try_get(7)?,
                broker_after: r.try_get(8)?,
                broker_change: r.try_get(9)?,
                expected_change: r.try_get(10)?,
                uncertain_change: r.try_get(11)?,
                fills_considered: r.try_get(12)?,
                fills: r.try_get(13)?,
                detected_at: r.try_get(14)?,
            })
        })
        .collect::<Result<_, tokio_postgres::Error>>()
        .map_err(StoreError::new("reading reconciliation breaks"))?;
    let external_orders = super::external_orders::recent(client, account, range, limit).await?;
    Ok(Reconciliations {
        runs,
        breaks,
        external_orders,
    })
}

/// The windows checked and the breaks found over a range, newest first.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Reconciliations {
    /// The windows checked
    pub runs: Vec<RunRow>,
    /// The breaks found
    pub breaks: Vec<BreakRow>,
    /// The orders found at a broker that no decision explains
    pub external_orders: Vec<super::external_orders::ExternalOrderRow>,
}
