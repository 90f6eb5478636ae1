//! Writing a batch: parent trades resolved, ids reserved, trades, fills and run records
//! copied, changed fills updated, trades recomputed and recorded.

use std::pin::pin;

use chrono::{DateTime, NaiveDate, Utc};
use rust_decimal::Decimal;
use tokio_postgres::Transaction;
use tokio_postgres::binary_copy::BinaryCopyInWriter;
use tokio_postgres::types::{ToSql, Type};

use super::stage::{FILL_DATA, FILL_DATA_TYPES, empty_to_none, merged_fill_data, write_fill};
use super::{FillRow, RunRecordRow, TradeRow};
use crate::domain::TradeStatus;
use crate::store::StoreError;

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
pub(super) const AGGREGATES: &str = "coalesce(sum(f.quantity), 0) AS qty, \
    round(sum(f.quantity * f.price) / nullif(sum(f.quantity), 0), 8) AS avg_price, \
    sum(f.commission) AS commission, \
    min(f.executed_at) AS first_at, max(f.executed_at) AS last_at, \
    CASE WHEN coalesce(sum(f.quantity), 0) = 0 THEN 'unknown' \
         WHEN max(f.cum_quantity) > sum(f.quantity) THEN 'partial' \
         ELSE 'filled' END AS status";
