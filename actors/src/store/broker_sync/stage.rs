//! A batch's stored fills read and the fetched ones staged to find what changed; the fill
//! columns, their COPY types and merge rule; superseded fills demoted.

use std::pin::pin;

use tokio_postgres::Transaction;
use tokio_postgres::binary_copy::BinaryCopyInWriter;
use tokio_postgres::types::{Json, ToSql, Type};

use super::StoredFill;
use crate::domain::NewFill;
use crate::store::StoreError;

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

pub(super) const STAGE: &str = "CREATE TEMP TABLE broker_fill_stage (\
    ord INTEGER NOT NULL, account_id TEXT NOT NULL, exec_id TEXT NOT NULL, \
    exec_id_base TEXT NOT NULL, exec_revision INTEGER NOT NULL, ib_perm_id BIGINT NOT NULL, \
    ib_order_id BIGINT NOT NULL, order_ref TEXT, client_id BIGINT NOT NULL, symbol TEXT NOT NULL, \
    sec_type TEXT, side TEXT NOT NULL, exchange TEXT, currency TEXT, liquidity TEXT, \
    executed_at TIMESTAMPTZ NOT NULL, quantity NUMERIC NOT NULL, price NUMERIC NOT NULL, \
    cum_quantity NUMERIC NOT NULL, avg_price NUMERIC NOT NULL, commission NUMERIC, \
    commission_currency TEXT, realized_pnl NUMERIC, raw JSONB NOT NULL) ON COMMIT DROP";

/// The broker-reported columns: a fill whose values all equal the stored ones is unchanged.
pub(super) const FILL_DATA: &str = "exec_id_base, exec_revision, ib_perm_id, ib_order_id, order_ref, \
    client_id, symbol, sec_type, side, exchange, currency, liquidity, executed_at, quantity, \
    price, cum_quantity, avg_price, commission, commission_currency, realized_pnl, raw";

/// The binary COPY types of [`FILL_DATA`], in order.
pub(super) const FILL_DATA_TYPES: [Type; 21] = [
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

pub(super) fn empty_to_none(text: &str) -> Option<&str> {
    (!text.is_empty()).then_some(text)
}

/// Writes `f`'s [`FILL_DATA`] values after `head` (the row's leading columns) and `tail`.
pub(super) async fn write_fill(
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
pub(super) const KEEP_STORED_REPORT: &str = "(NOT (s.raw ? 'commission_report') \
    OR (s.commission IS NULL AND f.commission IS NOT NULL))";

/// [`FILL_DATA`] as a fetched fill (`s`) stores over the stored one (`f`): the fetched values,
/// with the stored commission report where [`KEEP_STORED_REPORT`] says so.
pub(super) fn merged_fill_data() -> String {
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

pub(super) fn prefixed(alias: &str, columns: &str) -> String {
    columns
        .split(", ")
        .map(|c| format!("{alias}.{c}"))
        .collect::<Vec<_>>()
        .join(", ")
}
