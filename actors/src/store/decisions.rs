//! The outbox: `trade_decisions` rows, written with their data lineage.

use std::collections::HashMap;

use chrono::{DateTime, Utc};
use rust_decimal::Decimal;
use serde_json::Value;
use tokio_postgres::GenericClient;
use tokio_postgres::types::Type;
use uuid::Uuid;

use super::StoreError;
use crate::domain::decision::rationale_with_lineage;
use crate::domain::{
    CreatedDecision, DecisionReject, LineagePolicy, LineageRun, NewDecision, RunStatus,
};

/// Reason code: the named primary ingestion run does not exist.
pub const REJECT_UNKNOWN_RUN: &str = "lineage.unknown_run";
/// Reason code: the named primary ingestion run has not completed (running or failed).
pub const REJECT_RUN_NOT_COMPLETED: &str = "lineage.run_not_completed";
/// Reason code: a decision with this id exists already.
pub const REJECT_DUPLICATE: &str = "duplicate_decision";

/// Writes `decisions` as pending in one statement (one commit for all of them), each with
/// `data_lineage` filled in: the runs completed within the policy's window before the clock the
/// lineage was read at, which becomes the decisions' `created_at`, and, when named, its primary
/// ingestion run, which must exist and be completed. A decision that fails a check is answered
/// with its reject, in the same position, and the others are still written. An `Err` means the
/// database failed and nothing was written.
///
/// Two round trips: the reads (lineage and primary runs, pipelined), then the insert. Each
/// statement goes with its parameter types (`query_typed`), so none needs a prepare first.
pub async fn create_decisions(
    client: &impl GenericClient,
    decisions: &[NewDecision],
    policy: LineagePolicy,
) -> Result<Vec<Result<CreatedDecision, DecisionReject>>, StoreError> {
    let named: Vec<Uuid> = decisions
        .iter()
        .filter_map(|d| d.primary_ingestion_run_id)
        .collect();
    let ((clock, lineage), primaries) =
        futures_util::future::try_join(lineage_at(client, policy), primary_runs(client, &named))
            .await?;
    // the checks first; then every decision that passed in one multi-row statement
    let mut results: Vec<Result<CreatedDecision, DecisionReject>> =
        Vec::with_capacity(decisions.len());
    let mut rows = Vec::with_capacity(decisions.len());
    for (i, decision) in decisions.iter().enumerate() {
        let checked = decision
            .validate()
            .and_then(|()| match decision.primary_ingestion_run_id {
                None => Ok(None),
                Some(run_id) => match primaries.iter().find(|p| p.0.run_id == run_id) {
                    None => Err(DecisionReject::new(
                        REJECT_UNKNOWN_RUN,
                        format!("primary ingestion run {run_id} does not exist"),
                    )),
                    Some((run, _, status)) if *status != RunStatus::Completed => {
                        Err(DecisionReject::new(
                            REJECT_RUN_NOT_COMPLETED,
                            format!(
                                "primary ingestion run {run_id} ({}) is {status}, not completed: \
                             its data cannot be proven available",
                                run.task
                            ),
                        ))
                    }
                    Some((run, id, _)) => Ok(Some((run, *id))),
                },
            });
        match checked {
            Err(reject) => results.push(Err(reject)),
            Ok(primary) => {
                let rationale = rationale_with_lineage(
                    decision.rationale.as_ref(),
                    &lineage,
                    primary.map(|(run, _)| run),
                    policy,
                );
                rows.push((i, primary.map(|(_, id)| id), rationale));
                // a placeholder, replaced below by the row or a duplicate reject
                results.push(Err(DecisionReject::new(REJECT_DUPLICATE, String::new())));
            }
        }
    }
    let mut created = insert_decisions(client, decisions, &rows, clock).await?;
    for (i, _, _) in &rows {
        let id = decisions[*i].decision_id;
        results[*i] = match created.remove(&id) {
            Some(row) => Ok(row),
            None => Err(DecisionReject::new(
                REJECT_DUPLICATE,
                format!("decision {id} exists already"),
            )),
        };
    }
    Ok(results)
}

/// The named runs: each with its surrogate key and status.
async fn primary_runs(
    client: &impl GenericClient,
    run_ids: &[Uuid],
) -> Result<Vec<(LineageRun, i64, RunStatus)>, StoreError> {
    if run_ids.is_empty() {
        return Ok(Vec::new());
    }
    let rows = client
        .query_typed(
            "SELECT run_id, task_name, data_source, completed_at, id, status \
             FROM data_ingestion_runs WHERE run_id = ANY($1)",
            &[(&run_ids, Type::UUID_ARRAY)],
        )
        .await
        .map_err(StoreError::new("reading primary ingestion runs"))?;
    Ok(rows
        .iter()
        .map(|row| {
            let status = RunStatus::parse(row.get(5)).unwrap_or(RunStatus::Failed);
            let run = LineageRun {
                run_id: row.get(0),
                task: row.get(1),
                source: row.get(2),
                // only read when completed, and then it is set (CHECK constraint)
                completed_at: row
                    .get::<_, Option<chrono::DateTime<chrono::Utc>>>(3)
                    .unwrap_or_default(),
            };
            (run, row.get::<_, i64>(4), status)
        })
        .collect())
}

/// The database's clock and the runs completed within `policy.window` before it, newest first.
pub async fn lineage_at(
    client: &impl GenericClient,
    policy: LineagePolicy,
) -> Result<(DateTime<Utc>, Vec<LineageRun>), StoreError> {
    let window = i64::try_from(policy.window.as_secs()).unwrap_or(i64::MAX);
    let rows = client
        .query_typed(
            "SELECT c.clock, r.run_id, r.task_name, r.data_source, r.completed_at \
             FROM (SELECT now() AS clock) c LEFT JOIN LATERAL ( \
                 SELECT run_id, task_name, data_source, completed_at FROM data_ingestion_runs \
                 WHERE status = 'completed' \
                   AND completed_at > c.clock - $1::bigint * interval '1 second' \
                   AND completed_at <= c.clock \
                 ORDER BY completed_at DESC LIMIT $2) r ON true \
             ORDER BY r.completed_at DESC",
            &[
                (&window, Type::INT8),
                (&i64::from(policy.max_runs), Type::INT8),
            ],
        )
        .await
        .map_err(StoreError::new("reading the data lineage"))?;
    let clock = rows.first().map(|r| r.get(0)).unwrap_or_else(Utc::now);
    Ok((
        clock,
        rows.iter()
            .filter_map(|row| {
                Some(LineageRun {
                    run_id: row.get::<_, Option<Uuid>>(1)?,
                    task: row.get(2),
                    source: row.get(3),
                    completed_at: row.get(4),
                })
            })
            .collect(),
    ))
}

/// Inserts the pending decisions `rows` (index into `decisions`, primary run key, rationale) in
/// one statement; the rows written, by decision id (an id that exists already, or twice in
/// `rows`, is written once: the others are missing from the answer).
async fn insert_decisions(
    client: &impl GenericClient,
    decisions: &[NewDecision],
    rows: &[(usize, Option<i64>, Value)],
    created_at: DateTime<Utc>,
) -> Result<HashMap<Uuid, CreatedDecision>, StoreError> {
    if rows.is_empty() {
        return Ok(HashMap::new());
    }
    let col = |f: &dyn Fn(&NewDecision) -> Option<String>| -> Vec<Option<String>> {
        rows.iter().map(|(i, _, _)| f(&decisions[*i])).collect()
    };
    let ids: Vec<Uuid> = rows
        .iter()
        .map(|(i, _, _)| decisions[*i].decision_id)
        .collect();
    let strategy = col(&|d| Some(d.strategy_name.clone()));
    let version = col(&|d| Some(d.strategy_version.clone()));
    let account = col(&|d| Some(d.account.clone()));
    let symbol = col(&|d| Some(d.symbol.clone()));
    let side = col(&|d| Some(d.side.as_str().to_string()));
    let order_type = col(&|d| Some(d.order_type.as_str().to_string()));
    let tif = col(&|d| Some(d.time_in_force.as_str().to_string()));
    let signal_type = col(&|d| d.primary_signal.as_ref().map(|s| s.signal_type.clone()));
    let signal_id = col(&|d| d.primary_signal.as_ref().map(|s| s.id.clone()));
    let dec = |f: &dyn Fn(&NewDecision) -> Option<Decimal>| -> Vec<Option<Decimal>> {
        rows.iter().map(|(i, _, _)| f(&decisions[*i])).collect()
    };
    let quantity = dec(&|d| Some(d.quantity));
    let limit = dec(&|d| d.limit_price);
    let stop = dec(&|d| d.stop_price);
    let strength = dec(&|d| d.signal_strength);
    let primary: Vec<Option<i64>> = rows.iter().map(|(_, p, _)| *p).collect();
    let rationale: Vec<&Value> = rows.iter().map(|(_, _, r)| r).collect();
    let written = client
        .query_typed(
            "INSERT INTO trade_decisions (decision_id, strategy_name, strategy_version, account, \
                 symbol, side, quantity, order_type, limit_price, stop_price, time_in_force, \
                 primary_signal_type, primary_signal_id, primary_ingestion_run_id, \
                 decision_rationale, signal_strength, created_at) \
             SELECT *, $17::timestamptz FROM unnest($1::uuid[], $2::text[], $3::text[], \
                 $4::text[], $5::text[], $6::text[], $7::numeric[], $8::text[], $9::numeric[], \
                 $10::numeric[], $11::text[], $12::text[], $13::text[], $14::bigint[], \
                 $15::jsonb[], $16::numeric[]) \
             ON CONFLICT (decision_id) DO NOTHING \
             RETURNING id, decision_id, status, decision_rationale, primary_ingestion_run_id, created_at",
            &[
                (&ids, Type::UUID_ARRAY),
                (&strategy, Type::TEXT_ARRAY),
                (&version, Type::TEXT_ARRAY),
                (&account, Type::TEXT_ARRAY),
                (&symbol, Type::TEXT_ARRAY),
                (&side, Type::TEXT_ARRAY),
                (&quantity, Type::NUMERIC_ARRAY),
                (&order_type, Type::TEXT_ARRAY),
                (&limit, Type::NUMERIC_ARRAY),
                (&stop, Type::NUMERIC_ARRAY),
                (&tif, Type::TEXT_ARRAY),
                (&signal_type, Type::TEXT_ARRAY),
                (&signal_id, Type::TEXT_ARRAY),
                (&primary, Type::INT8_ARRAY),
                (&rationale, Type::JSONB_ARRAY),
                (&strength, Type::NUMERIC_ARRAY),
                (&created_at, Type::TIMESTAMPTZ),
            ],
        )
        .await
        .map_err(StoreError::new("inserting trade decisions"))?;
    Ok(written
        .iter()
        .map(|row| {
            let created = CreatedDecision {
                id: row.get(0),
                decision_id: row.get(1),
                status: row.get(2),
                decision_rationale: row.get(3),
                primary_ingestion_run_id: row.get(4),
                created_at: row.get(5),
            };
            (created.decision_id, created)
        })
        .collect())
}
