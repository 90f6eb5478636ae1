//! The IBKR sync model's SQL: the statements that apply a fetched batch of fills (in the
//! caller's transaction; `ibkr_syncer::apply` puts them in order), the sync run rows, the
//! per-account advisory lock, and the trades read queries.

use chrono::{DateTime, NaiveDate, Utc};
use rust_decimal::Decimal;
use tokio_postgres::types::Json;
use tokio_postgres::{GenericClient, Transaction};

use super::StoreError;
use crate::domain::{NewFill, RejectedExecution, SyncCounts, TradeStatus};

mod commissions;
mod queries;
mod stage;
mod write;

pub use commissions::{
    LateApplied, LateCommission, apply_late_commissions, fill_id_by_exec_id, stored_exec_ids,
};
pub use queries::{get_trade, list_trade_fills, list_trades};
pub use stage::{changed_staged, demote_fills, prepare_batch, stage_stored, stored_fills_of_bases};
pub use write::{
    CompositeKey, IdSequence, copy_fills, copy_run_records, copy_trades, parents_by_composite,
    parents_by_order_ref, parents_by_perm_id, recompute_trades, record_trades, reserve_ids,
    update_changed_fills,
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
