//! The IBKR sync model's SQL: applying a fetched batch of fills (set-based, in the caller's
//! transaction), the sync run rows, the per-account advisory lock, and the trades read queries.
//!
//! Applying a batch, in order (the spec's `sync_trades_once` after the fetch):
//! 1. the fills are copied (binary COPY) into a transaction-local stage table;
//! 2. repeats within the batch are collapsed (the last one wins) and fills received exactly as
//!    stored are dropped from the stage, so a re-sync of the same window writes nothing;
//! 3. stored canonical fills superseded by a higher revision in the batch are demoted first (the
//!    unique index allows one canonical fill per base at any moment);
//! 4. missing parents are created by perm id, order ref or the composite key, each with the
//!    aggregates of its new canonical fills;
//! 5. new fills are inserted, a new fill canonical only when no stored or staged fill of its
//!    base has a higher revision, and changed fills are updated in place (identity is
//!    `(account_id, exec_id)`, unique in the table);
//! 6. every other touched parent's aggregates (and a new one's that a stored fill moved into)
//!    are recomputed from its canonical fills;
//! 7. the ingestion run's records are added for what was created or updated.

use std::collections::HashSet;
use std::pin::pin;

use chrono::{DateTime, Utc};
use tokio_postgres::binary_copy::BinaryCopyInWriter;
use tokio_postgres::types::{Json, ToSql, Type};
use tokio_postgres::{GenericClient, Row, Transaction};

use super::StoreError;
use crate::domain::{BrokerFill, BrokerTrade, NewFill, ParentKey, SyncCounts, TradeFilter};

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

/// Marks a sync run completed with its counts.
pub async fn complete_sync_run(
    client: &impl GenericClient,
    id: i64,
    counts: &SyncCounts,
) -> Result<(), StoreError> {
    client
        .execute(
            "UPDATE sync_runs SET status = 'completed', finished_at = clock_timestamp(), \
                 fetched_count = $2, inserted_count = $3, updated_count = $4, \
                 canonical_changes_count = $5, touched_trades_count = $6 \
             WHERE id = $1",
            &[
                &id,
                &count(counts.fetched_executions_count),
                &count(counts.inserted_executions_count),
                &count(counts.updated_executions_count),
                &count(counts.canonical_changes_count),
                &count(counts.touched_trades_count),
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

const STAGE: &str = "CREATE TEMP TABLE broker_fill_stage (\
    ord INTEGER NOT NULL, account_id TEXT NOT NULL, exec_id TEXT NOT NULL, \
    exec_id_base TEXT NOT NULL, exec_revision INTEGER NOT NULL, ib_perm_id BIGINT NOT NULL, \
    ib_order_id BIGINT NOT NULL, order_ref TEXT, client_id BIGINT NOT NULL, symbol TEXT NOT NULL, \
    sec_type TEXT, side TEXT NOT NULL, exchange TEXT, currency TEXT, liquidity TEXT, \
    executed_at TIMESTAMPTZ NOT NULL, quantity NUMERIC NOT NULL, price NUMERIC NOT NULL, \
    cum_quantity NUMERIC NOT NULL, avg_price NUMERIC NOT NULL, commission NUMERIC, \
    commission_currency TEXT, realized_pnl NUMERIC, raw JSONB NOT NULL, \
    parent_kind SMALLINT NOT NULL, trade_date DATE NOT NULL) ON COMMIT DROP";

const STAGE_COLUMNS: &str = "ord, account_id, exec_id, exec_id_base, exec_revision, ib_perm_id, \
    ib_order_id, order_ref, client_id, symbol, sec_type, side, exchange, currency, liquidity, \
    executed_at, quantity, price, cum_quantity, avg_price, commission, commission_currency, \
    realized_pnl, raw, parent_kind, trade_date";

const STAGE_TYPES: &[Type] = &[
    Type::INT4,
    Type::TEXT,
    Type::TEXT,
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
    Type::INT2,
    Type::DATE,
];

/// The broker-reported columns: a fill whose values all equal the stored ones is unchanged.
const FILL_DATA: &str = "exec_id_base, exec_revision, ib_perm_id, ib_order_id, order_ref, \
    client_id, symbol, sec_type, side, exchange, currency, liquidity, executed_at, quantity, \
    price, cum_quantity, avg_price, commission, commission_currency, realized_pnl, raw";

fn empty_to_none(text: &str) -> Option<&str> {
    (!text.is_empty()).then_some(text)
}

async fn copy_stage(tx: &Transaction<'_>, fills: &[NewFill]) -> Result<(), StoreError> {
    let sink = tx
        .copy_in(&format!(
            "COPY broker_fill_stage ({STAGE_COLUMNS}) FROM STDIN BINARY"
        ))
        .await
        .map_err(StoreError::new("staging fetched fills"))?;
    let mut writer = pin!(BinaryCopyInWriter::new(sink, STAGE_TYPES));
    for (i, f) in fills.iter().enumerate() {
        let key = ParentKey::resolve(f);
        let ord = i32::try_from(i).unwrap_or(i32::MAX);
        let trade_date = f.executed_at.date_naive();
        let row: [&(dyn ToSql + Sync); 26] = [
            &ord,
            &f.account_id,
            &f.exec_id,
            &f.exec_id_base,
            &f.exec_revision,
            &f.perm_id,
            &f.order_id,
            &f.order_ref,
            &f.client_id,
            &f.symbol,
            &empty_to_none(&f.sec_type),
            &f.side.as_str(),
            &empty_to_none(&f.exchange),
            &empty_to_none(&f.currency),
            &f.liquidity,
            &f.executed_at,
            &f.quantity,
            &f.price,
            &f.cum_quantity,
            &f.avg_price,
            &f.commission,
            &f.commission_currency,
            &f.realized_pnl,
            &Json(&*f.raw),
            &key.kind(),
            &trade_date,
        ];
        writer
            .as_mut()
            .write(&row)
            .await
            .map_err(StoreError::new("staging fetched fills"))?;
    }
    writer
        .finish()
        .await
        .map_err(StoreError::new("staging fetched fills"))?;
    Ok(())
}

async fn ids_and_count(
    tx: &Transaction<'_>,
    sql: &str,
    params: &[&(dyn ToSql + Sync)],
    context: &'static str,
) -> Result<(u64, Vec<i64>), StoreError> {
    let row = tx
        .query_one(sql, params)
        .await
        .map_err(StoreError::new(context))?;
    let n: i64 = row.get(0);
    let ids: Option<Vec<i64>> = row.get(1);
    Ok((n.unsigned_abs(), ids.unwrap_or_default()))
}

/// Applies one fetched batch in `tx` (see the module docs); `ingestion_run` is the surrogate id
/// of the run whose records list what was created and updated. The caller holds the account's
/// lock and sets `fetched_executions_count`.
pub async fn apply_fills(
    tx: &Transaction<'_>,
    fills: &[NewFill],
    fetched_at: DateTime<Utc>,
    ingestion_run: Option<i64>,
) -> Result<SyncCounts, StoreError> {
    let mut counts = SyncCounts::default();
    if fills.is_empty() {
        return Ok(counts);
    }
    // a whole window is hashed and sorted in memory rather than in spill files, and these
    // one-off statements are not JIT-compiled (at 100,000 fills compiling cost more than it
    // saved: about 0.6 s per sync in the benchmark's plans); this transaction only
    tx.batch_execute(&format!(
        "SET LOCAL work_mem = '256MB'; SET LOCAL jit = off; {STAGE}"
    ))
    .await
    .map_err(StoreError::new("creating the fill stage"))?;
    copy_stage(tx, fills).await?;

    // 2. the last of repeated exec ids wins; unchanged fills are dropped
    tx.execute(
        "DELETE FROM broker_fill_stage a USING broker_fill_stage b \
         WHERE a.account_id = b.account_id AND a.exec_id = b.exec_id AND a.ord < b.ord",
        &[],
    )
    .await
    .map_err(StoreError::new("collapsing repeated fills"))?;
    let unchanged = tx
        .execute(
            &format!(
                "DELETE FROM broker_fill_stage s USING broker_fills f \
                 WHERE f.account_id = s.account_id AND f.exec_id = s.exec_id \
                   AND ({f}) IS NOT DISTINCT FROM ({s})",
                f = prefixed("f", FILL_DATA),
                s = prefixed("s", FILL_DATA),
            ),
            &[],
        )
        .await
        .map_err(StoreError::new("dropping unchanged fills"))?;
    counts.unchanged_executions_count = unchanged;
    let remaining: i64 = tx
        .query_one("SELECT count(*) FROM broker_fill_stage", &[])
        .await
        .map_err(StoreError::new("counting changed fills"))?
        .get(0);
    if remaining == 0 {
        return Ok(counts);
    }

    // 3. demote stored canonical fills that a staged revision supersedes
    let (demoted, mut touched) = ids_and_count(
        tx,
        "WITH top AS (SELECT account_id, exec_id_base, max(exec_revision) AS rev \
                      FROM broker_fill_stage GROUP BY 1, 2), \
              d AS (UPDATE broker_fills f SET is_canonical = false, updated_at = clock_timestamp() \
                    FROM top WHERE f.account_id = top.account_id \
                      AND f.exec_id_base = top.exec_id_base AND f.is_canonical \
                      AND f.exec_revision < top.rev \
                    RETURNING f.trade_id) \
         SELECT count(*), array_agg(DISTINCT trade_id) FROM d",
        &[],
        "demoting corrected fills",
    )
    .await?;

    // which staged fills are new (not stored yet), and whether each new one is canonical: the
    // latest staged revision of its base, with no stored fill of the base a later revision
    tx.batch_execute(
        "CREATE TEMP TABLE broker_fill_existing ON COMMIT DROP AS \
         SELECT s.ord, f.id, f.trade_id AS old_trade_id FROM broker_fill_stage s \
         JOIN broker_fills f ON f.account_id = s.account_id AND f.exec_id = s.exec_id; \
         CREATE TEMP TABLE broker_fill_new ON COMMIT DROP AS \
         SELECT s.ord, s.exec_revision = m.rev \
                AND NOT EXISTS (SELECT 1 FROM broker_fills f2 \
                                WHERE f2.account_id = s.account_id \
                                  AND f2.exec_id_base = s.exec_id_base \
                                  AND f2.exec_revision > s.exec_revision) AS canonical \
         FROM broker_fill_stage s \
         JOIN (SELECT account_id, exec_id_base, max(exec_revision) AS rev \
               FROM broker_fill_stage GROUP BY 1, 2) m \
           ON m.account_id = s.account_id AND m.exec_id_base = s.exec_id_base \
         WHERE NOT EXISTS (SELECT 1 FROM broker_fill_existing e WHERE e.ord = s.ord)",
    )
    .await
    .map_err(StoreError::new("classifying staged fills"))?;

    // 4. parents, by perm id, order ref, or the composite key; a new parent is created with
    //    the aggregates of its new canonical fills (the same rules as step 6), so it needs no
    //    second write unless a stored fill moves into it
    let (created, created_ids) = ids_and_count(
        tx,
        &format!(
            "WITH p AS ({p}), r AS ({r}), c AS ({c}), \
             all_ids AS (SELECT id FROM p UNION ALL SELECT id FROM r UNION ALL SELECT id FROM c) \
             SELECT count(*), array_agg(id) FROM all_ids",
            p = create_parents(
                "account_id, ib_perm_id",
                "d.ib_perm_id, d.order_ref",
                1,
                "(account_id, ib_perm_id) WHERE ib_perm_id > 0",
                true,
            ),
            r = create_parents(
                "account_id, order_ref",
                "NULL::bigint, d.order_ref",
                2,
                "(account_id, order_ref) \
                 WHERE order_ref IS NOT NULL AND (ib_perm_id IS NULL OR ib_perm_id <= 0)",
                true,
            ),
            c = create_parents(
                "account_id, client_id, ib_order_id, symbol, side, trade_date",
                "NULL::bigint, NULL::text",
                3,
                "(account_id, client_id, ib_order_id, symbol, side, trade_date) \
                 WHERE order_ref IS NULL AND (ib_perm_id IS NULL OR ib_perm_id <= 0)",
                false,
            ),
        ),
        &[&fetched_at],
        "creating parent trades",
    )
    .await?;
    counts.created_trades_count = created;
    // each staged fill's parent, in a narrow table
    tx.batch_execute(
        "CREATE TEMP TABLE broker_fill_parent ON COMMIT DROP AS \
         SELECT s.ord, t.id AS trade_id FROM broker_fill_stage s JOIN broker_trades t \
           ON s.parent_kind = 1 AND t.account_id = s.account_id \
          AND t.ib_perm_id = s.ib_perm_id AND t.ib_perm_id > 0 \
         UNION ALL \
         SELECT s.ord, t.id FROM broker_fill_stage s JOIN broker_trades t \
           ON s.parent_kind = 2 AND t.account_id = s.account_id AND t.order_ref = s.order_ref \
          AND (t.ib_perm_id IS NULL OR t.ib_perm_id <= 0) \
         UNION ALL \
         SELECT s.ord, t.id FROM broker_fill_stage s JOIN broker_trades t \
           ON s.parent_kind = 3 AND t.account_id = s.account_id \
          AND t.order_ref IS NULL AND (t.ib_perm_id IS NULL OR t.ib_perm_id <= 0) \
          AND t.client_id = s.client_id AND t.ib_order_id = s.ib_order_id \
          AND t.symbol = s.symbol AND t.side = s.side AND t.trade_date = s.trade_date",
    )
    .await
    .map_err(StoreError::new("resolving parent trades"))?;

    // 5. new fills: a plain insert (the account lock keeps other syncs out; the unique index
    //    still guards), canonical as classified above;
    // 7. their ingestion records in the same statement, also a plain insert: the run is this
    //    sync's own and each new fill id comes once, so a conflict would be a bug, and failing
    //    the sync on it beats hiding it (a speculative insert cost ~40% more per record)
    let row = tx
        .query_one(
            &format!(
                "WITH ins AS ( \
                   INSERT INTO broker_fills (trade_id, account_id, exec_id, {FILL_DATA}, \
                       is_canonical, fetched_at) \
                   SELECT p.trade_id, s.account_id, s.exec_id, {staged}, n.canonical, $1 \
                   FROM broker_fill_stage s \
                   JOIN broker_fill_new n ON n.ord = s.ord \
                   JOIN broker_fill_parent p ON p.ord = s.ord \
                   ORDER BY s.ord \
                   RETURNING id, trade_id, is_canonical, symbol, executed_at), \
                 rec AS ( \
                   INSERT INTO data_ingestion_run_records \
                       (data_ingestion_run_id, record_type, record_id, operation, symbol, \
                        occurred_at) \
                   SELECT $2::bigint, 'broker_fill', id::text, 'created', symbol, executed_at \
                   FROM ins WHERE $2::bigint IS NOT NULL) \
                 SELECT count(*), count(*) FILTER (WHERE NOT is_canonical), \
                        array_agg(DISTINCT trade_id) FROM ins",
                staged = prefixed("s", FILL_DATA),
            ),
            &[&fetched_at, &ingestion_run],
        )
        .await
        .map_err(StoreError::new("inserting new fills"))?;
    counts.inserted_executions_count = row.get::<_, i64>(0).unsigned_abs();
    counts.canonical_changes_count = demoted + row.get::<_, i64>(1).unsigned_abs();
    touched.extend(row.get::<_, Option<Vec<i64>>>(2).unwrap_or_default());

    let changed: i64 = tx
        .query_one("SELECT count(*) FROM broker_fill_existing", &[])
        .await
        .map_err(StoreError::new("counting changed fills"))?
        .get(0);
    let moved_into = if changed > 0 {
        update_changed(tx, fetched_at, ingestion_run, &mut counts, &mut touched).await?
    } else {
        Vec::new()
    };
    touched.extend(created_ids.iter().copied());
    touched.sort_unstable();
    touched.dedup();
    counts.touched_trades_count = touched.len() as u64;
    // parents created above already hold their aggregates, unless a stored fill moved in
    let created_set: HashSet<i64> = created_ids.iter().copied().collect();
    let moved_set: HashSet<i64> = moved_into.into_iter().collect();
    let recompute: Vec<i64> = touched
        .iter()
        .copied()
        .filter(|id| !created_set.contains(id) || moved_set.contains(id))
        .collect();

    // 6. aggregates of every other touched parent, from canonical fills only
    tx.execute(
        &format!(
            "UPDATE broker_trades t SET \
                 total_quantity = a.qty, avg_price = a.avg_price, \
                 total_commission = a.commission, first_executed_at = a.first_at, \
                 last_executed_at = a.last_at, status = a.status, fetched_at = $2, \
                 trade_date = CASE WHEN t.order_ref IS NULL \
                                    AND (t.ib_perm_id IS NULL OR t.ib_perm_id <= 0) \
                                   THEN t.trade_date \
                                   ELSE {first_date} END, \
                 updated_at = clock_timestamp() \
             FROM (SELECT p.id, {AGGREGATES} \
                   FROM unnest($1::bigint[]) AS p (id) \
                   LEFT JOIN broker_fills f ON f.trade_id = p.id AND f.is_canonical \
                   GROUP BY p.id) a \
             WHERE t.id = a.id",
            first_date = first_trade_date("t.trade_date"),
        ),
        &[&recompute, &fetched_at],
    )
    .await
    .map_err(StoreError::new("recomputing trade aggregates"))?;
    if let Some(run) = ingestion_run {
        tx.execute(
            "INSERT INTO data_ingestion_run_records \
                 (data_ingestion_run_id, record_type, record_id, operation, symbol, occurred_at) \
             SELECT $1, 'broker_trade', t.id::text, \
                    CASE WHEN t.id = ANY($3) THEN 'created' ELSE 'updated' END, t.symbol, \
                    t.last_executed_at \
             FROM broker_trades t WHERE t.id = ANY($2)",
            &[&run, &touched, &created_ids],
        )
        .await
        .map_err(StoreError::new("recording touched trades"))?;
    }
    Ok(counts)
}

/// Step 5 for fills already stored whose data changed: updated in place (their canonical flag
/// is settled by step 3); a fill whose parent changed leaves its old parent to recompute.
/// Returns the parents the changed fills now belong to.
async fn update_changed(
    tx: &Transaction<'_>,
    fetched_at: DateTime<Utc>,
    ingestion_run: Option<i64>,
    counts: &mut SyncCounts,
    touched: &mut Vec<i64>,
) -> Result<Vec<i64>, StoreError> {
    let row = tx
        .query_one(
            &format!(
                "WITH upd AS ( \
                   UPDATE broker_fills f SET trade_id = p.trade_id, ({FILL_DATA}) = ({staged}), \
                       fetched_at = $1, updated_at = clock_timestamp() \
                   FROM broker_fill_stage s \
                   JOIN broker_fill_parent p ON p.ord = s.ord \
                   JOIN broker_fill_existing e ON e.ord = s.ord \
                   WHERE f.id = e.id \
                   RETURNING f.id, f.trade_id, e.old_trade_id, f.symbol, f.executed_at), \
                 rec AS ( \
                   INSERT INTO data_ingestion_run_records \
                       (data_ingestion_run_id, record_type, record_id, operation, symbol, \
                        occurred_at) \
                   SELECT $2::bigint, 'broker_fill', id::text, 'updated', symbol, executed_at \
                   FROM upd WHERE $2::bigint IS NOT NULL \
                   ON CONFLICT (record_type, record_id, data_ingestion_run_id) DO NOTHING) \
                 SELECT count(*), array_agg(DISTINCT trade_id), array_agg(DISTINCT old_trade_id) \
                 FROM upd",
                staged = prefixed("s", FILL_DATA),
            ),
            &[&fetched_at, &ingestion_run],
        )
        .await
        .map_err(StoreError::new("updating changed fills"))?;
    counts.updated_executions_count = row.get::<_, i64>(0).unsigned_abs();
    let parents = row.get::<_, Option<Vec<i64>>>(1).unwrap_or_default();
    touched.extend(parents.iter().copied());
    touched.extend(row.get::<_, Option<Vec<i64>>>(2).unwrap_or_default());
    Ok(parents)
}

/// The aggregates of a trade over its canonical fills `f` (steps 4 and 6 share them).
const AGGREGATES: &str = "coalesce(sum(f.quantity), 0) AS qty, \
    round(sum(f.quantity * f.price) / nullif(sum(f.quantity), 0), 8) AS avg_price, \
    sum(f.commission) AS commission, \
    min(f.executed_at) AS first_at, max(f.executed_at) AS last_at, \
    CASE WHEN coalesce(sum(f.quantity), 0) = 0 THEN 'unknown' \
         WHEN max(f.cum_quantity) > sum(f.quantity) THEN 'partial' \
         ELSE 'filled' END AS status";

/// A trade's date as its first canonical execution's UTC date (aggregates `a`), else
/// `fallback` (steps 4 and 6 share it; a composite key's date is its identity and stays).
fn first_trade_date(fallback: &str) -> String {
    format!("coalesce((a.first_at AT TIME ZONE 'UTC')::date, {fallback})")
}

/// One kind of parent (1 perm id, 2 order ref, 3 composite) created for staged fills that have
/// none: its attributes from the key's earliest staged fill, its aggregates from the key's new
/// canonical fills. `key` are the stage columns that identify the parent; `ids` its perm id and
/// order ref as stored; `conflict` the unique index's arbiter; `dated` whether the trade date
/// follows the first canonical execution (not for the composite key, whose date is identity).
fn create_parents(key: &str, ids: &str, kind: i16, conflict: &str, dated: bool) -> String {
    let join = key
        .split(", ")
        .map(|c| format!("a.{c} = d.{c}"))
        .collect::<Vec<_>>()
        .join(" AND ");
    let trade_date = if dated {
        first_trade_date("d.trade_date")
    } else {
        "d.trade_date".to_string()
    };
    format!(
        "INSERT INTO broker_trades (account_id, ib_perm_id, order_ref, ib_order_id, client_id, \
             symbol, sec_type, side, exchange, currency, trade_date, fetched_at, total_quantity, \
             avg_price, total_commission, first_executed_at, last_executed_at, status) \
         SELECT d.account_id, {ids}, d.ib_order_id, d.client_id, d.symbol, d.sec_type, d.side, \
                d.exchange, d.currency, {trade_date}, $1, coalesce(a.qty, 0), a.avg_price, \
                a.commission, a.first_at, a.last_at, coalesce(a.status, 'unknown') \
         FROM (SELECT DISTINCT ON ({key}) account_id, ib_perm_id, order_ref, ib_order_id, \
                      client_id, symbol, sec_type, side, exchange, currency, trade_date \
               FROM broker_fill_stage WHERE parent_kind = {kind} \
               ORDER BY {key}, executed_at) d \
         LEFT JOIN (SELECT {fkey}, {AGGREGATES} FROM broker_fill_stage f \
                    JOIN broker_fill_new n ON n.ord = f.ord AND n.canonical \
                    WHERE f.parent_kind = {kind} GROUP BY {fkey}) a ON {join} \
         ON CONFLICT {conflict} DO NOTHING \
         RETURNING id",
        fkey = prefixed("f", key),
    )
}

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
