//! The outbox: `trade_decisions` rows, written with their data lineage.

use serde_json::Value;
use tokio_postgres::{Client, GenericClient};
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

/// Writes `decisions` as pending in one transaction (one commit for all of them), each with
/// `data_lineage` filled in: the runs completed within the policy's window before the commit's
/// clock and, when named, its primary ingestion run, which must exist and be completed. A
/// decision that fails a check is answered with its reject, in the same position, and the others
/// are still written. An `Err` means the database failed and nothing was written.
pub async fn create_decisions(
    client: &mut Client,
    decisions: &[NewDecision],
    policy: LineagePolicy,
) -> Result<Vec<Result<CreatedDecision, DecisionReject>>, StoreError> {
    let tx = client
        .transaction()
        .await
        .map_err(StoreError::new("beginning a decisions batch"))?;
    let named: Vec<Uuid> = decisions
        .iter()
        .filter_map(|d| d.primary_ingestion_run_id)
        .collect();
    let primaries = primary_runs(&tx, &named).await?;
    let lineage = lineage_runs(&tx, policy).await?;
    let mut results = Vec::with_capacity(decisions.len());
    for decision in decisions {
        if let Err(reject) = decision.validate() {
            results.push(Err(reject));
            continue;
        }
        let primary = match decision.primary_ingestion_run_id {
            None => None,
            Some(run_id) => match primaries.iter().find(|p| p.0.run_id == run_id) {
                None => {
                    results.push(Err(DecisionReject::new(
                        REJECT_UNKNOWN_RUN,
                        format!("primary ingestion run {run_id} does not exist"),
                    )));
                    continue;
                }
                Some((run, _, status)) if *status != RunStatus::Completed => {
                    results.push(Err(DecisionReject::new(
                        REJECT_RUN_NOT_COMPLETED,
                        format!(
                            "primary ingestion run {run_id} ({}) is {status}, not completed: \
                             its data cannot be proven available",
                            run.task
                        ),
                    )));
                    continue;
                }
                Some((run, id, _)) => Some((run, *id)),
            },
        };
        let rationale = rationale_with_lineage(
            decision.rationale.as_ref(),
            &lineage,
            primary.map(|(run, _)| run),
            policy,
        );
        match insert_decision(&tx, decision, primary.map(|(_, id)| id), &rationale).await? {
            Some(created) => results.push(Ok(created)),
            None => results.push(Err(DecisionReject::new(
                REJECT_DUPLICATE,
                format!("decision {} exists already", decision.decision_id),
            ))),
        }
    }
    tx.commit()
        .await
        .map_err(StoreError::new("committing a decisions batch"))?;
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
        .query(
            "SELECT run_id, task_name, data_source, completed_at, id, status \
             FROM data_ingestion_runs WHERE run_id = ANY($1)",
            &[&run_ids],
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

/// The runs completed within `policy.window` before the transaction's clock, newest first.
pub async fn lineage_runs(
    client: &impl GenericClient,
    policy: LineagePolicy,
) -> Result<Vec<LineageRun>, StoreError> {
    let window = i64::try_from(policy.window.as_secs()).unwrap_or(i64::MAX);
    let rows = client
        .query(
            "SELECT run_id, task_name, data_source, completed_at FROM data_ingestion_runs \
             WHERE status = 'completed' \
               AND completed_at > now() - $1::bigint * interval '1 second' \
               AND completed_at <= now() \
             ORDER BY completed_at DESC LIMIT $2",
            &[&window, &i64::from(policy.max_runs)],
        )
        .await
        .map_err(StoreError::new("reading the data lineage"))?;
    Ok(rows
        .iter()
        .map(|row| LineageRun {
            run_id: row.get(0),
            task: row.get(1),
            source: row.get(2),
            completed_at: row.get(3),
        })
        .collect())
}

/// Inserts one pending decision; `None` when its id exists already.
async fn insert_decision(
    client: &impl GenericClient,
    d: &NewDecision,
    primary_run: Option<i64>,
    rationale: &Value,
) -> Result<Option<CreatedDecision>, StoreError> {
    let row = client
        .query_opt(
            "INSERT INTO trade_decisions (decision_id, strategy_name, strategy_version, account, \
                 symbol, side, quantity, order_type, limit_price, stop_price, time_in_force, \
                 primary_signal_type, primary_signal_id, primary_ingestion_run_id, \
                 decision_rationale, signal_strength) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16) \
             ON CONFLICT (decision_id) DO NOTHING \
             RETURNING id, decision_id, status, decision_rationale, primary_ingestion_run_id, created_at",
            &[
                &d.decision_id,
                &d.strategy_name,
                &d.strategy_version,
                &d.account,
                &d.symbol,
                &d.side.as_str(),
                &d.quantity,
                &d.order_type.as_str(),
                &d.limit_price,
                &d.stop_price,
                &d.time_in_force.as_str(),
                &d.primary_signal.as_ref().map(|s| s.signal_type.as_str()),
                &d.primary_signal.as_ref().map(|s| s.id.as_str()),
                &primary_run,
                rationale,
                &d.signal_strength,
            ],
        )
        .await
        .map_err(StoreError::new("inserting a trade decision"))?;
    Ok(row.map(|row| CreatedDecision {
        id: row.get(0),
        decision_id: row.get(1),
        status: row.get(2),
        decision_rationale: row.get(3),
        primary_ingestion_run_id: row.get(4),
        created_at: row.get(5),
    }))
}
