//! The IBKR sync model's SQL: the statements that apply a fetched batch of fills (in the
//! caller's transaction; `ibkr_syncer::apply` puts them in order), the sync run rows, the
//! per-account advisory lock, and the trades read queries.

use std::pin::pin;

use chrono::{DateTime, NaiveDate, Utc};
use rust_decimal::Decimal;
use tokio_postgres::binary_copy::BinaryCopyInWriter;
use tokio_postgres::types::{Json, ToSql, Type};
use tokio_postgres::{GenericClient, Row, Transaction};

use super::StoreError;
use crate::domain::{
    BrokerFill, BrokerTrade, NewFill, RejectedExecution, SyncCounts, TradeFilter, TradeStatus,
};

/// The advisory lock key space of account syncs (hashed with the account id).
const LOCK_PREFIX: &str = "tradegate.ibkr.sync:";

/// Takes the account's sync lock for the rest of `tx`; false when another sync holds it.
pub async fn try_lock_account(tx: &Transaction<'_>, account_id: &str) -> Result<bool, StoreError> {
    let row = tx
        .query_one(
            "SELECT pg_try_advisory_xact_lock(hashtextextended($1, 0))",
            &[&format!("{LOCK_PREFIX}{account_id}")],
        )
        .await
        .map_err(StoreError::new("taking the account's sync lock"))?;
    Ok(row.get(0))
}

/// Takes the account's sync lock for the rest of `tx`, waiting up to `wait` for a sync that
/// holds it (a sync holds it only while it stores); false when the wait ran out.
pub async fn lock_account(
    tx: &Transaction<'_>,
    account_id: &str,
    wait: std::time::Duration,
) -> Result<bool, StoreError> {
    // the wait is bounded for this statement only; the session's own timeout comes back after
    let previous: String = tx
        .query_one("SELECT current_setting('lock_timeout')", &[])
        .await
        .map_err(StoreError::new("reading the lock timeout"))?
        .get(0);
    tx.execute(
        "SELECT set_config('lock_timeout', $1, true)",
        &[&wait.as_millis().max(1).to_string()],
    )
    .await
    .map_err(StoreError::new(
        "bounding the wait for the account's sync lock",
    ))?;
    match tx
        .execute(
            "SELECT pg_advisory_xact_lock(hashtextextended($1, 0))",
            &[&format!("{LOCK_PREFIX}{account_id}")],
        )
        .await
    {
        Ok(_) => {
            tx.execute("SELECT set_config('lock_timeout', $1, true)", &[&previous])
                .await
                .map_err(StoreError::new("resetting the lock timeout"))?;
            Ok(true)
        }
        Err(e) if e.code() == Some(&tokio_postgres::error::SqlState::LOCK_NOT_AVAILABLE) => {
            Ok(false)
        }
        Err(e) => Err(StoreError::new("taking the account's sync lock")(e)),
    }
}

/// Records the start of a sync (its own statement, so a failed sync stays on record).
pub async fn start_sync_run(
    client: &impl GenericClient,
    account_id: &str,
    window_start: DateTime<Utc>,
    window_end: DateTime<Utc>,
    ingestion_run: Option<i64>,
) -> Result<i64, StoreError> {
    let row = client
        .query_one(
            "INSERT INTO sync_runs (account_id, window_start, window_end, data_ingestion_run_id) \
             VALUES ($1, $2, $3, $4) RETURNING id",
            &[&account_id, &window_start, &window_end, &ingestion_run],
        )
        .await
        .map_err(StoreError::new("recording a sync run"))?;
    Ok(row.get(0))
}

fn count(n: u64) -> i32 {
    i32::try_from(n).unwrap_or(i32::MAX)
}

/// Marks a sync run completed with its counts, the executions it refused and its warnings.
pub async fn complete_sync_run(
    client: &impl GenericClient,
    id: i64,
    counts: &SyncCounts,
    rejected: &[RejectedExecution],
    warnings: &[String],
) -> Result<(), StoreError> {
    let rejected = Json(rejected);
    client
        .execute(
            "UPDATE sync_runs SET status = 'completed', finished_at = clock_timestamp(), \
                 fetched_count = $2, inserted_count = $3, updated_count = $4, \
                 canonical_changes_count = $5, touched_trades_count = $6, rejected_count = $7, \
                 rejected_executions = $8, unrecognised_exec_ids_count = $9, \
                 late_commissions_count = $10, warnings = $11 \
             WHERE id = $1",
            &[
                &id,
                &count(counts.fetched_executions_count),
                &count(counts.inserted_executions_count),
                &count(counts.updated_executions_count),
                &count(counts.canonical_changes_count),
                &count(counts.touched_trades_count),
                &count(counts.rejected_executions_count),
                &rejected,
                &count(counts.unrecognised_exec_ids_count),
                &count(counts.late_commissions_count),
                &warnings,
            ],
        )
        .await
        .map_err(StoreError::new("completing a sync run"))?;
    Ok(())
}

/// Marks a sync run failed with why.
pub async fn fail_sync_run(
    client: &impl GenericClient,
    id: i64,
    message: &str,
) -> Result<(), StoreError> {
    client
        .execute(
            "UPDATE sync_runs SET status = 'failed', finished_at = clock_timestamp(), \
                 error_message = $2 WHERE id = $1 AND status = 'running'",
            &[&id, &message],
        )
        .await
        .map_err(StoreError::new("failing a sync run"))?;
    Ok(())
}

/// A stored fill of a base a batch touches: what applying the batch needs to know of it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredFill {
    /// Surrogate id
    pub id: i64,
    /// The account
    pub account_id: String,
    /// The broker's execution id
    pub exec_id: String,
    /// The exec id without its revision
    pub exec_id_base: String,
    /// The correction revision
    pub exec_revision: i32,
    /// Whether it is its base's canonical fill
    pub is_canonical: bool,
    /// Its parent trade
    pub trade_id: i64,
}

/// A trade's aggregates over its canonical fills.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TradeAggregates {
    /// Sum of quantities
    pub total_quantity: Decimal,
    /// Quantity-weighted average price, 8 places
    pub avg_price: Option<Decimal>,
    /// Sum of the commissions reported
    pub total_commission: Option<Decimal>,
    /// The first execution
    pub first_executed_at: Option<DateTime<Utc>>,
    /// The last execution
    pub last_executed_at: Option<DateTime<Utc>>,
    /// Filled, partial or unknown
    pub status: TradeStatus,
}

/// A parent trade to write with `COPY`, its id reserved.
#[derive(Debug)]
pub struct TradeRow<'a> {
    /// Reserved id
    pub id: i64,
    /// The fill its attributes come from
    pub first: &'a NewFill,
    /// Perm id as stored (only for a perm id parent)
    pub ib_perm_id: Option<i64>,
    /// Order ref as stored (not for a composite parent)
    pub order_ref: Option<&'a str>,
    /// UTC trade date
    pub trade_date: NaiveDate,
    /// Aggregates; `None` writes empty ones for a recompute to fill
    pub aggregates: Option<&'a TradeAggregates>,
}

/// A new fill to write with `COPY`, its id reserved and its parent resolved.
#[derive(Debug)]
pub struct FillRow<'a> {
    /// Reserved id
    pub id: i64,
    /// Parent trade
    pub trade_id: i64,
    /// Canonical for its base
    pub is_canonical: bool,
    /// The fill
    pub fill: &'a NewFill,
}

/// A junction row of an ingestion run for a row the sync created, for `COPY`.
#[derive(Debug)]
pub struct RunRecordRow<'a> {
    /// `broker_fill` or `broker_trade`
    pub record_type: &'static str,
    /// The record's id
    pub record_id: i64,
    /// Its symbol
    pub symbol: &'a str,
    /// When it happened
    pub occurred_at: Option<DateTime<Utc>>,
}

/// Sets this transaction up for one large batch: a whole window is hashed and sorted in memory
/// rather than in spill files, and its one-off statements are not JIT-compiled (at 100,000
/// fills compiling cost more than it saved).
pub async fn prepare_batch(tx: &Transaction<'_>) -> Result<(), StoreError> {
    tx.batch_execute("SET LOCAL work_mem = '256MB'; SET LOCAL jit = off")
        .await
        .map_err(StoreError::new("preparing a fill batch"))
}

/// Every stored fill of the `(account, base)` pairs given (all revisions).
pub async fn stored_fills_of_bases(
    tx: &Transaction<'_>,
    accounts: &[&str],
    bases: &[&str],
) -> Result<Vec<StoredFill>, StoreError> {
    let rows = tx
        .query(
            "SELECT f.id, f.account_id, f.exec_id, f.exec_id_base, f.exec_revision, \
                    f.is_canonical, f.trade_id \
             FROM unnest($1::text[], $2::text[]) AS k (account_id, base) \
             JOIN broker_fills f ON f.account_id = k.account_id AND f.exec_id_base = k.base",
            &[&accounts, &bases],
        )
        .await
        .map_err(StoreError::new("reading stored fills of the batch"))?;
    Ok(rows
        .iter()
        .map(|r| StoredFill {
            id: r.get(0),
            account_id: r.get(1),
            exec_id: r.get(2),
            exec_id_base: r.get(3),
            exec_revision: r.get(4),
            is_canonical: r.get(5),
            trade_id: r.get(6),
        })
        .collect())
}

const STAGE: &str = "CREATE TEMP TABLE broker_fill_stage (\
    ord INTEGER NOT NULL, account_id TEXT NOT NULL, exec_id TEXT NOT NULL, \
    exec_id_base TEXT NOT NULL, exec_revision INTEGER NOT NULL, ib_perm_id BIGINT NOT NULL, \
    ib_order_id BIGINT NOT NULL, order_ref TEXT, client_id BIGINT NOT NULL, symbol TEXT NOT NULL, \
    sec_type TEXT, side TEXT NOT NULL, exchange TEXT, currency TEXT, liquidity TEXT, \
    executed_at TIMESTAMPTZ NOT NULL, quantity NUMERIC NOT NULL, price NUMERIC NOT NULL, \
    cum_quantity NUMERIC NOT NULL, avg_price NUMERIC NOT NULL, commission NUMERIC, \
    commission_currency TEXT, realized_pnl NUMERIC, raw JSONB NOT NULL) ON COMMIT DROP";

/// The broker-reported columns: a fill whose values all equal the stored ones is unchanged.
const FILL_DATA: &str = "exec_id_base, exec_revision, ib_perm_id, ib_order_id, order_ref, \
    client_id, symbol, sec_type, side, exchange, currency, liquidity, executed_at, quantity, \
    price, cum_quantity, avg_price, commission, commission_currency, realized_pnl, raw";

/// The binary COPY types of [`FILL_DATA`], in order.
const FILL_DATA_TYPES: [Type; 21] = [
    Type::TEXT,
    Type::INT4,
    Type::INT8,
    Type::INT8,
    Type::TEXT,
    Type::INT8,
    Type::TEXT,
    Type::TEXT,
    Type::TEXT,
    Type::TEXT,
    Type::TEXT,
    Type::TEXT,
    Type::TIMESTAMPTZ,
    Type::NUMERIC,
    Type::NUMERIC,
    Type::NUMERIC,
    Type::NUMERIC,
    Type::NUMERIC,
    Type::TEXT,
    Type::NUMERIC,
    Type::JSONB,
];

fn empty_to_none(text: &str) -> Option<&str> {
    (!text.is_empty()).then_some(text)
}

/// Writes `f`'s [`FILL_DATA`] values after `head` (the row's leading columns) and `tail`.
async fn write_fill(
    writer: std::pin::Pin<&mut BinaryCopyInWriter>,
    head: &[&(dyn ToSql + Sync)],
    f: &NewFill,
    tail: &[&(dyn ToSql + Sync)],
) -> Result<(), tokio_postgres::Error> {
    let sec_type = empty_to_none(&f.sec_type);
    let side = f.side.as_str();
    let exchange = empty_to_none(&f.exchange);
    let currency = empty_to_none(&f.currency);
    let raw = Json(&*f.raw);
    let data: [&(dyn ToSql + Sync); 21] = [
        &f.exec_id_base,
        &f.exec_revision,
        &f.perm_id,
        &f.order_id,
        &f.order_ref,
        &f.client_id,
        &f.symbol,
        &sec_type,
        &side,
        &exchange,
        &currency,
        &f.liquidity,
        &f.executed_at,
        &f.quantity,
        &f.price,
        &f.cum_quantity,
        &f.avg_price,
        &f.commission,
        &f.commission_currency,
        &f.realized_pnl,
        &raw,
    ];
    let row: Vec<&(dyn ToSql + Sync)> = head
        .iter()
        .copied()
        .chain(data)
        .chain(tail.iter().copied())
        .collect();
    writer.write(&row).await
}

/// Stages fetched fills that are stored already (with their batch position) in a
/// transaction-local table, to compare them with what is stored.
pub async fn stage_stored(
    tx: &Transaction<'_>,
    fills: &[(i32, &NewFill)],
) -> Result<(), StoreError> {
    let context = "staging fetched fills";
    tx.batch_execute(STAGE)
        .await
        .map_err(StoreError::new(context))?;
    let sink = tx
        .copy_in(&format!(
            "COPY broker_fill_stage (ord, account_id, exec_id, {FILL_DATA}) FROM STDIN BINARY"
        ))
        .await
        .map_err(StoreError::new(context))?;
    let types: Vec<Type> = [Type::INT4, Type::TEXT, Type::TEXT]
        .into_iter()
        .chain(FILL_DATA_TYPES)
        .collect();
    let mut writer = pin!(BinaryCopyInWriter::new(sink, &types));
    for (ord, f) in fills {
        write_fill(writer.as_mut(), &[ord, &f.account_id, &f.exec_id], f, &[])
            .await
            .map_err(StoreError::new(context))?;
    }
    writer.finish().await.map_err(StoreError::new(context))?;
    Ok(())
}

/// The commission report of a fetch is kept from the stored row when the fetch has none, or one
/// without a commission while the stored row has one: a re-fetch in which the report has not
/// arrived (it trails its execution, the session is no master, TWS restarted) never clears
/// what was stored.
const KEEP_STORED_REPORT: &str = "(NOT (s.raw ? 'commission_report') \
    OR (s.commission IS NULL AND f.commission IS NOT NULL))";

/// [`FILL_DATA`] as a fetched fill (`s`) stores over the stored one (`f`): the fetched values,
/// with the stored commission report where [`KEEP_STORED_REPORT`] says so.
fn merged_fill_data() -> String {
    FILL_DATA
        .split(", ")
        .map(|c| match c {
            "commission" | "commission_currency" | "realized_pnl" => {
                format!("CASE WHEN {KEEP_STORED_REPORT} THEN f.{c} ELSE s.{c} END")
            }
            "raw" => format!(
                "CASE WHEN {KEEP_STORED_REPORT} AND f.raw ? 'commission_report' \
                      THEN jsonb_set(s.raw, '{{commission_report}}', f.raw -> 'commission_report') \
                      ELSE s.raw END"
            ),
            other => format!("s.{other}"),
        })
        .collect::<Vec<_>>()
        .join(", ")
}

/// The batch positions of staged fills whose broker data differs from the stored row's.
pub async fn changed_staged(tx: &Transaction<'_>) -> Result<Vec<i32>, StoreError> {
    let rows = tx
        .query(
            &format!(
                "SELECT s.ord FROM broker_fill_stage s JOIN broker_fills f \
                   ON f.account_id = s.account_id AND f.exec_id = s.exec_id \
                 WHERE ({f}) IS DISTINCT FROM ({s}) ORDER BY s.ord",
                f = prefixed("f", FILL_DATA),
                s = merged_fill_data(),
            ),
            &[],
        )
        .await
        .map_err(StoreError::new("comparing fetched fills with stored ones"))?;
    Ok(rows.iter().map(|r| r.get(0)).collect())
}

/// Demotes stored canonical fills a higher revision supersedes; returns their parents.
pub async fn demote_fills(tx: &Transaction<'_>, ids: &[i64]) -> Result<Vec<i64>, StoreError> {
    let rows = tx
        .query(
            "UPDATE broker_fills SET is_canonical = false, updated_at = clock_timestamp() \
             WHERE id = ANY($1) AND is_canonical RETURNING trade_id",
            &[&ids],
        )
        .await
        .map_err(StoreError::new("demoting corrected fills"))?;
    Ok(rows.iter().map(|r| r.get(0)).collect())
}

/// Stored parents by perm id (> 0): `(account, perm id, trade id)`.
pub async fn parents_by_perm_id(
    tx: &Transaction<'_>,
    accounts: &[&str],
    perm_ids: &[i64],
) -> Result<Vec<(String, i64, i64)>, StoreError> {
    let rows = tx
        .query(
            "SELECT t.account_id, t.ib_perm_id, t.id \
             FROM unnest($1::text[], $2::bigint[]) AS k (account_id, perm_id) \
             JOIN broker_trades t ON t.account_id = k.account_id AND t.ib_perm_id = k.perm_id \
             WHERE t.ib_perm_id > 0",
            &[&accounts, &perm_ids],
        )
        .await
        .map_err(StoreError::new("resolving parent trades by perm id"))?;
    Ok(rows
        .iter()
        .map(|r| (r.get(0), r.get(1), r.get(2)))
        .collect())
}

/// Stored parents by order ref (those without a perm id): `(account, order ref, trade id)`.
pub async fn parents_by_order_ref(
    tx: &Transaction<'_>,
    accounts: &[&str],
    order_refs: &[&str],
) -> Result<Vec<(String, String, i64)>, StoreError> {
    let rows = tx
        .query(
            "SELECT t.account_id, t.order_ref, t.id \
             FROM unnest($1::text[], $2::text[]) AS k (account_id, order_ref) \
             JOIN broker_trades t ON t.account_id = k.account_id AND t.order_ref = k.order_ref \
             WHERE t.order_ref IS NOT NULL AND (t.ib_perm_id IS NULL OR t.ib_perm_id <= 0)",
            &[&accounts, &order_refs],
        )
        .await
        .map_err(StoreError::new("resolving parent trades by order ref"))?;
    Ok(rows
        .iter()
        .map(|r| (r.get(0), r.get(1), r.get(2)))
        .collect())
}

/// The composite parent identity as the query takes and returns it.
pub type CompositeKey = (String, i64, i64, String, String, NaiveDate);

/// Stored parents by the composite key (neither perm id nor order ref): each key with its id.
pub async fn parents_by_composite(
    tx: &Transaction<'_>,
    keys: &[CompositeKey],
) -> Result<Vec<(CompositeKey, i64)>, StoreError> {
    let accounts: Vec<&str> = keys.iter().map(|k| k.0.as_str()).collect();
    let clients: Vec<i64> = keys.iter().map(|k| k.1).collect();
    let orders: Vec<i64> = keys.iter().map(|k| k.2).collect();
    let symbols: Vec<&str> = keys.iter().map(|k| k.3.as_str()).collect();
    let sides: Vec<&str> = keys.iter().map(|k| k.4.as_str()).collect();
    let dates: Vec<NaiveDate> = keys.iter().map(|k| k.5).collect();
    let rows = tx
        .query(
            "SELECT t.account_id, t.client_id, t.ib_order_id, t.symbol, t.side, t.trade_date, t.id \
             FROM unnest($1::text[], $2::bigint[], $3::bigint[], $4::text[], $5::text[], \
                         $6::date[]) AS k (account_id, client_id, order_id, symbol, side, day) \
             JOIN broker_trades t ON t.account_id = k.account_id AND t.client_id = k.client_id \
              AND t.ib_order_id = k.order_id AND t.symbol = k.symbol AND t.side = k.side \
              AND t.trade_date = k.day \
             WHERE t.order_ref IS NULL AND (t.ib_perm_id IS NULL OR t.ib_perm_id <= 0)",
            &[&accounts, &clients, &orders, &symbols, &sides, &dates],
        )
        .await
        .map_err(StoreError::new(
            "resolving parent trades by the composite key",
        ))?;
    Ok(rows
        .iter()
        .map(|r| {
            (
                (r.get(0), r.get(1), r.get(2), r.get(3), r.get(4), r.get(5)),
                r.get(6),
            )
        })
        .collect())
}

/// A table whose identity ids a batch reserves before writing rows with `COPY`.
#[derive(Debug, Clone, Copy)]
pub enum IdSequence {
    /// `broker_trades.id`
    Trades,
    /// `broker_fills.id`
    Fills,
}

/// Reserves `n` ids of `sequence`, in increasing order. The sequence is named as a constant:
/// `nextval` of a looked-up sequence resolved it again on every call, 8x slower.
pub async fn reserve_ids(
    tx: &Transaction<'_>,
    sequence: IdSequence,
    n: usize,
) -> Result<Vec<i64>, StoreError> {
    let sql = match sequence {
        IdSequence::Trades => {
            "SELECT array_agg(nextval('broker_trades_id_seq'::regclass)) \
             FROM generate_series(1, $1::bigint)"
        }
        IdSequence::Fills => {
            "SELECT array_agg(nextval('broker_fills_id_seq'::regclass)) \
             FROM generate_series(1, $1::bigint)"
        }
    };
    let n = i64::try_from(n).unwrap_or(i64::MAX);
    let row = tx
        .query_one(sql, &[&n])
        .await
        .map_err(StoreError::new("reserving row ids"))?;
    let mut ids: Vec<i64> = row.get::<_, Option<Vec<i64>>>(0).unwrap_or_default();
    ids.sort_unstable();
    Ok(ids)
}

/// Writes new parent trades (ids reserved) with one binary `COPY`; the unique indexes refuse a
/// parent that exists already.
pub async fn copy_trades(
    tx: &Transaction<'_>,
    trades: &[TradeRow<'_>],
    fetched_at: DateTime<Utc>,
) -> Result<(), StoreError> {
    let context = "creating parent trades";
    let sink = tx
        .copy_in(
            "COPY broker_trades (id, account_id, ib_perm_id, order_ref, ib_order_id, client_id, \
                 symbol, sec_type, side, exchange, currency, trade_date, fetched_at, \
                 total_quantity, avg_price, total_commission, first_executed_at, \
                 last_executed_at, status) FROM STDIN BINARY",
        )
        .await
        .map_err(StoreError::new(context))?;
    let types = [
        Type::INT8,
        Type::TEXT,
        Type::INT8,
        Type::TEXT,
        Type::INT8,
        Type::INT8,
        Type::TEXT,
        Type::TEXT,
        Type::TEXT,
        Type::TEXT,
        Type::TEXT,
        Type::DATE,
        Type::TIMESTAMPTZ,
        Type::NUMERIC,
        Type::NUMERIC,
        Type::NUMERIC,
        Type::TIMESTAMPTZ,
        Type::TIMESTAMPTZ,
        Type::TEXT,
    ];
    let mut writer = pin!(BinaryCopyInWriter::new(sink, &types));
    for t in trades {
        let f = t.first;
        let a = t.aggregates;
        let quantity = a.map_or(Decimal::ZERO, |a| a.total_quantity);
        let status = a.map_or(TradeStatus::Unknown, |a| a.status).as_str();
        let row: [&(dyn ToSql + Sync); 19] = [
            &t.id,
            &f.account_id,
            &t.ib_perm_id,
            &t.order_ref,
            &f.order_id,
            &f.client_id,
            &f.symbol,
            &empty_to_none(&f.sec_type),
            &f.side.as_str(),
            &empty_to_none(&f.exchange),
            &empty_to_none(&f.currency),
            &t.trade_date,
            &fetched_at,
            &quantity,
            &a.and_then(|a| a.avg_price),
            &a.and_then(|a| a.total_commission),
            &a.and_then(|a| a.first_executed_at),
            &a.and_then(|a| a.last_executed_at),
            &status,
        ];
        writer
            .as_mut()
            .write(&row)
            .await
            .map_err(StoreError::new(context))?;
    }
    writer.finish().await.map_err(StoreError::new(context))?;
    Ok(())
}

/// Writes new fills (ids reserved, parents resolved) with one binary `COPY`; the unique
/// indexes still refuse a repeated exec id or a second canonical fill of a base.
pub async fn copy_fills(
    tx: &Transaction<'_>,
    fills: &[FillRow<'_>],
    fetched_at: DateTime<Utc>,
) -> Result<(), StoreError> {
    let context = "inserting new fills";
    let sink = tx
        .copy_in(&format!(
            "COPY broker_fills (id, trade_id, account_id, exec_id, {FILL_DATA}, is_canonical, \
                 fetched_at) FROM STDIN BINARY"
        ))
        .await
        .map_err(StoreError::new(context))?;
    let types: Vec<Type> = [Type::INT8, Type::INT8, Type::TEXT, Type::TEXT]
        .into_iter()
        .chain(FILL_DATA_TYPES)
        .chain([Type::BOOL, Type::TIMESTAMPTZ])
        .collect();
    let mut writer = pin!(BinaryCopyInWriter::new(sink, &types));
    for r in fills {
        let f = r.fill;
        write_fill(
            writer.as_mut(),
            &[&r.id, &r.trade_id, &f.account_id, &f.exec_id],
            f,
            &[&r.is_canonical, &fetched_at],
        )
        .await
        .map_err(StoreError::new(context))?;
    }
    writer.finish().await.map_err(StoreError::new(context))?;
    Ok(())
}

/// Updates stored fills whose data changed from the stage (their canonical flag is settled
/// already), each with its resolved parent (`ords` and `trade_ids` pair up), and records them
/// as updated in run `ingestion_run`. Returns how many were updated.
pub async fn update_changed_fills(
    tx: &Transaction<'_>,
    ords: &[i32],
    trade_ids: &[i64],
    fetched_at: DateTime<Utc>,
    ingestion_run: Option<i64>,
) -> Result<u64, StoreError> {
    let row = tx
        .query_one(
            &format!(
                "WITH upd AS ( \
                   UPDATE broker_fills f SET trade_id = p.trade_id, ({FILL_DATA}) = ({staged}), \
                       fetched_at = $1, updated_at = clock_timestamp() \
                   FROM broker_fill_stage s \
                   JOIN unnest($3::int[], $4::bigint[]) AS p (ord, trade_id) ON p.ord = s.ord \
                   WHERE f.account_id = s.account_id AND f.exec_id = s.exec_id \
                   RETURNING f.id, f.symbol, f.executed_at), \
                 rec AS ( \
                   INSERT INTO data_ingestion_run_records \
                       (data_ingestion_run_id, record_type, record_id, operation, symbol, \
                        occurred_at) \
                   SELECT $2::bigint, 'broker_fill', id::text, 'updated', symbol, executed_at \
                   FROM upd WHERE $2::bigint IS NOT NULL \
                   ON CONFLICT (record_type, record_id, data_ingestion_run_id) DO NOTHING) \
                 SELECT count(*) FROM upd",
                staged = merged_fill_data(),
            ),
            &[&fetched_at, &ingestion_run, &ords, &trade_ids],
        )
        .await
        .map_err(StoreError::new("updating changed fills"))?;
    Ok(row.get::<_, i64>(0).unsigned_abs())
}

/// A commission report that came apart from its execution, for [`apply_late_commissions`].
#[derive(Debug)]
pub struct LateCommission<'a> {
    /// The execution it belongs to
    pub exec_id: &'a str,
    /// The commission, if TWS knew it
    pub commission: Option<Decimal>,
    /// Its currency (empty: none)
    pub currency: &'a str,
    /// Realized P&L, if known
    pub realized_pnl: Option<Decimal>,
    /// The report as the raw record holds it
    pub record: &'a serde_json::value::RawValue,
}

/// What [`apply_late_commissions`] did.
#[derive(Debug, Default)]
pub struct LateApplied {
    /// Fills whose report changed
    pub updated: u64,
    /// Their parents (to recompute)
    pub trades: Vec<i64>,
    /// The exec ids of `account` the reports named (changed or not)
    pub matched: Vec<String>,
}

/// Gives stored fills of `account` the commission reports that came apart from their execution
/// (a report after the end marker of an earlier request, or one TWS pushed). A report without a
/// commission never clears a stored one; with `only_missing` (a Flex backfill), only fills
/// without a commission take one, so what TWS reported stays; each changed fill is recorded as
/// updated in run `ingestion_run`.
pub async fn apply_late_commissions(
    tx: &Transaction<'_>,
    account: &str,
    reports: &[LateCommission<'_>],
    fetched_at: DateTime<Utc>,
    ingestion_run: Option<i64>,
    only_missing: bool,
) -> Result<LateApplied, StoreError> {
    if reports.is_empty() {
        return Ok(LateApplied::default());
    }
    let ids: Vec<&str> = reports.iter().map(|r| r.exec_id).collect();
    let commissions: Vec<Option<Decimal>> = reports.iter().map(|r| r.commission).collect();
    let currencies: Vec<Option<&str>> = reports.iter().map(|r| empty_to_none(r.currency)).collect();
    let pnls: Vec<Option<Decimal>> = reports.iter().map(|r| r.realized_pnl).collect();
    let records: Vec<Json<&serde_json::value::RawValue>> =
        reports.iter().map(|r| Json(r.record)).collect();
    let row = tx
        .query_one(
            "WITH r AS ( \
               SELECT DISTINCT ON (exec_id) * FROM unnest($2::text[], $3::numeric[], $4::text[], \
                   $5::numeric[], $6::jsonb[]) WITH ORDINALITY \
                   AS r (exec_id, commission, currency, realized_pnl, report, n) \
               ORDER BY exec_id, n DESC), \
             upd AS ( \
               UPDATE broker_fills f SET commission = r.commission, \
                   commission_currency = r.currency, realized_pnl = r.realized_pnl, \
                   raw = jsonb_set(f.raw, '{commission_report}', r.report), fetched_at = $7, \
                   updated_at = clock_timestamp() \
               FROM r WHERE f.account_id = $1 AND f.exec_id = r.exec_id \
                 AND NOT (f.commission IS NOT NULL AND r.commission IS NULL) \
                 AND NOT ($9::bool AND f.commission IS NOT NULL) \
                 AND (f.commission, f.commission_currency, f.realized_pnl, \
                      f.raw -> 'commission_report') \
                     IS DISTINCT FROM (r.commission, r.currency, r.realized_pnl, r.report) \
               RETURNING f.id, f.trade_id, f.symbol, f.executed_at), \
             rec AS ( \
               INSERT INTO data_ingestion_run_records \
                   (data_ingestion_run_id, record_type, record_id, operation, symbol, \
                    occurred_at) \
               SELECT $8::bigint, 'broker_fill', id::text, 'updated', symbol, executed_at \
               FROM upd WHERE $8::bigint IS NOT NULL \
               ON CONFLICT (record_type, record_id, data_ingestion_run_id) DO NOTHING) \
             SELECT (SELECT count(*) FROM upd), \
                    (SELECT coalesce(array_agg(DISTINCT trade_id), '{}') FROM upd), \
                    (SELECT coalesce(array_agg(f.exec_id), '{}') FROM broker_fills f \
                     JOIN r ON f.account_id = $1 AND f.exec_id = r.exec_id)",
            &[
                &account,
                &ids,
                &commissions,
                &currencies,
                &pnls,
                &records,
                &fetched_at,
                &ingestion_run,
                &only_missing,
            ],
        )
        .await
        .map_err(StoreError::new("applying late commission reports"))?;
    Ok(LateApplied {
        updated: row.get::<_, i64>(0).unsigned_abs(),
        trades: row.get(1),
        matched: row.get(2),
    })
}

/// Which of `exec_ids` of `account` are stored (any revision stored under that very id).
pub async fn stored_exec_ids(
    tx: &Transaction<'_>,
    account: &str,
    exec_ids: &[&str],
) -> Result<Vec<String>, StoreError> {
    let rows = tx
        .query(
            "SELECT exec_id FROM broker_fills WHERE account_id = $1 AND exec_id = ANY($2)",
            &[&account, &exec_ids],
        )
        .await
        .map_err(StoreError::new("reading stored exec ids"))?;
    Ok(rows.iter().map(|r| r.get(0)).collect())
}

/// The id of the fill `account` stores under `exec_id`, if any.
pub async fn fill_id_by_exec_id(
    client: &impl GenericClient,
    account: &str,
    exec_id: &str,
) -> Result<Option<i64>, StoreError> {
    let row = client
        .query_opt(
            "SELECT id FROM broker_fills WHERE account_id = $1 AND exec_id = $2",
            &[&account, &exec_id],
        )
        .await
        .map_err(StoreError::new("reading a fill by its exec id"))?;
    Ok(row.map(|r| r.get(0)))
}

/// Recomputes the aggregates of trades `ids` from their canonical fills.
pub async fn recompute_trades(
    tx: &Transaction<'_>,
    ids: &[i64],
    fetched_at: DateTime<Utc>,
) -> Result<(), StoreError> {
    if ids.is_empty() {
        return Ok(());
    }
    tx.execute(
        &format!(
            "UPDATE broker_trades t SET \
                 total_quantity = a.qty, avg_price = a.avg_price, \
                 total_commission = a.commission, first_executed_at = a.first_at, \
                 last_executed_at = a.last_at, status = a.status, fetched_at = $2, \
                 trade_date = CASE WHEN t.order_ref IS NULL \
                                    AND (t.ib_perm_id IS NULL OR t.ib_perm_id <= 0) \
                                   THEN t.trade_date \
                                   ELSE coalesce((a.first_at AT TIME ZONE 'UTC')::date, \
                                                 t.trade_date) END, \
                 updated_at = clock_timestamp() \
             FROM (SELECT p.id, {AGGREGATES} \
                   FROM unnest($1::bigint[]) AS p (id) \
                   LEFT JOIN broker_fills f ON f.trade_id = p.id AND f.is_canonical \
                   GROUP BY p.id) a \
             WHERE t.id = a.id"
        ),
        &[&ids, &fetched_at],
    )
    .await
    .map_err(StoreError::new("recomputing trade aggregates"))?;
    Ok(())
}

/// Records trades `ids` in run `run` as they are stored now: `created` for those in `created`,
/// else `updated`.
pub async fn record_trades(
    tx: &Transaction<'_>,
    run: i64,
    ids: &[i64],
    created: &[i64],
) -> Result<(), StoreError> {
    if ids.is_empty() {
        return Ok(());
    }
    tx.execute(
        "INSERT INTO data_ingestion_run_records \
             (data_ingestion_run_id, record_type, record_id, operation, symbol, occurred_at) \
         SELECT $1, 'broker_trade', t.id::text, \
                CASE WHEN t.id = ANY($3) THEN 'created' ELSE 'updated' END, t.symbol, \
                t.last_executed_at \
         FROM broker_trades t WHERE t.id = ANY($2) \
         ON CONFLICT (record_type, record_id, data_ingestion_run_id) DO NOTHING",
        &[&run, &ids, &created],
    )
    .await
    .map_err(StoreError::new("recording touched trades"))?;
    Ok(())
}

/// Writes run `run`'s records of rows this sync created with one binary `COPY` (the run is
/// the sync's own and each id comes once, so there is nothing to skip: a conflict fails the
/// sync rather than hiding a bug).
pub async fn copy_run_records(
    tx: &Transaction<'_>,
    run: i64,
    records: &[RunRecordRow<'_>],
) -> Result<(), StoreError> {
    let context = "recording the run's new fills and trades";
    let sink = tx
        .copy_in(
            "COPY data_ingestion_run_records (data_ingestion_run_id, record_type, record_id, \
                 operation, symbol, occurred_at) FROM STDIN BINARY",
        )
        .await
        .map_err(StoreError::new(context))?;
    let types = [
        Type::INT8,
        Type::TEXT,
        Type::TEXT,
        Type::TEXT,
        Type::TEXT,
        Type::TIMESTAMPTZ,
    ];
    let mut writer = pin!(BinaryCopyInWriter::new(sink, &types));
    for r in records {
        let id = r.record_id.to_string();
        let row: [&(dyn ToSql + Sync); 6] = [
            &run,
            &r.record_type,
            &id,
            &"created",
            &r.symbol,
            &r.occurred_at,
        ];
        writer
            .as_mut()
            .write(&row)
            .await
            .map_err(StoreError::new(context))?;
    }
    writer.finish().await.map_err(StoreError::new(context))?;
    Ok(())
}

/// The aggregates of a trade over its canonical fills `f`.
const AGGREGATES: &str = "coalesce(sum(f.quantity), 0) AS qty, \
    round(sum(f.quantity * f.price) / nullif(sum(f.quantity), 0), 8) AS avg_price, \
    sum(f.commission) AS commission, \
    min(f.executed_at) AS first_at, max(f.executed_at) AS last_at, \
    CASE WHEN coalesce(sum(f.quantity), 0) = 0 THEN 'unknown' \
         WHEN max(f.cum_quantity) > sum(f.quantity) THEN 'partial' \
         ELSE 'filled' END AS status";

fn prefixed(alias: &str, columns: &str) -> String {
    columns
        .split(", ")
        .map(|c| format!("{alias}.{c}"))
        .collect::<Vec<_>>()
        .join(", ")
}

const TRADE_COLUMNS: &str = "id, account_id, ib_perm_id, order_ref, ib_order_id, client_id, \
    symbol, sec_type, side, exchange, currency, trade_date, status, total_quantity, avg_price, \
    total_commission, first_executed_at, last_executed_at, fetched_at, created_at, updated_at";

fn trade_from_row(row: &Row) -> BrokerTrade {
    BrokerTrade {
        id: row.get(0),
        account_id: row.get(1),
        ib_perm_id: row.get(2),
        order_ref: row.get(3),
        ib_order_id: row.get(4),
        client_id: row.get(5),
        symbol: row.get(6),
        sec_type: row.get(7),
        side: row.get(8),
        exchange: row.get(9),
        currency: row.get(10),
        trade_date: row.get(11),
        status: row.get(12),
        total_quantity: row.get(13),
        avg_price: row.get(14),
        total_commission: row.get(15),
        first_executed_at: row.get(16),
        last_executed_at: row.get(17),
        fetched_at: row.get(18),
        created_at: row.get(19),
        updated_at: row.get(20),
    }
}

/// Trades matching `filter` (validated by the caller), most recently executed first.
pub async fn list_trades(
    client: &impl GenericClient,
    filter: &TradeFilter,
) -> Result<Vec<BrokerTrade>, StoreError> {
    let rows = client
        .query(
            &format!(
                "SELECT {TRADE_COLUMNS} FROM broker_trades \
                 WHERE ($1::text IS NULL OR account_id = $1) \
                   AND ($2::text IS NULL OR status = $2) \
                   AND ($3::text IS NULL OR symbol = $3) \
                 ORDER BY last_executed_at DESC NULLS LAST, id DESC LIMIT $4"
            ),
            &[
                &filter.account_id,
                &filter.status,
                &filter.symbol,
                &i64::from(filter.limit()),
            ],
        )
        .await
        .map_err(StoreError::new("listing trades"))?;
    Ok(rows.iter().map(trade_from_row).collect())
}

/// One trade by id.
pub async fn get_trade(
    client: &impl GenericClient,
    id: i64,
) -> Result<Option<BrokerTrade>, StoreError> {
    let row = client
        .query_opt(
            &format!("SELECT {TRADE_COLUMNS} FROM broker_trades WHERE id = $1"),
            &[&id],
        )
        .await
        .map_err(StoreError::new("reading a trade"))?;
    Ok(row.as_ref().map(trade_from_row))
}

/// A trade's fills (canonical and superseded), in execution order.
pub async fn list_trade_fills(
    client: &impl GenericClient,
    trade_id: i64,
) -> Result<Vec<BrokerFill>, StoreError> {
    let rows = client
        .query(
            "SELECT id, trade_id, account_id, exec_id, exec_id_base, exec_revision, is_canonical, \
                    ib_perm_id, ib_order_id, order_ref, client_id, symbol, side, exchange, \
                    currency, liquidity, executed_at, quantity, price, commission, \
                    commission_currency, realized_pnl, raw, fetched_at \
             FROM broker_fills WHERE trade_id = $1 \
             ORDER BY executed_at, exec_id_base, exec_revision",
            &[&trade_id],
        )
        .await
        .map_err(StoreError::new("listing a trade's fills"))?;
    Ok(rows
        .iter()
        .map(|row| BrokerFill {
            id: row.get(0),
            trade_id: row.get(1),
            account_id: row.get(2),
            exec_id: row.get(3),
            exec_id_base: row.get(4),
            exec_revision: row.get(5),
            is_canonical: row.get(6),
            ib_perm_id: row.get(7),
            ib_order_id: row.get(8),
            order_ref: row.get(9),
            client_id: row.get(10),
            symbol: row.get(11),
            side: row.get(12),
            exchange: row.get(13),
            currency: row.get(14),
            liquidity: row.get(15),
            executed_at: row.get(16),
            quantity: row.get(17),
            price: row.get(18),
            commission: row.get(19),
            commission_currency: row.get(20),
            realized_pnl: row.get(21),
            raw: row.get(22),
            fetched_at: row.get(23),
        })
        .collect())
}
