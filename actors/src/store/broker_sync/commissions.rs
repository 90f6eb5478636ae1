//! Commission reports that came apart from their execution, and look-ups of stored exec ids.

use chrono::{DateTime, Utc};
use rust_decimal::Decimal;
use tokio_postgres::types::Json;
use tokio_postgres::{GenericClient, Transaction};

use super::stage::empty_to_none;
use crate::store::StoreError;

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
