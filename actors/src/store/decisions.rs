//! The outbox: `trade_decisions` rows, written with their data lineage.

use std::collections::HashMap;

use rust_decimal::Decimal;
use serde_json::Value;
use tokio_postgres::types::Type;
use uuid::Uuid;

use super::StoreError;
use super::db::Db;
use crate::domain::decision::rationale_with_lineage;
use crate::domain::{
    ApiPayload, CreatedDecision, DecisionReject, LineagePolicy, LineageRun, NewDecision,
    RejectCode, RunStatus,
};
use tokio_postgres::GenericClient;

/// Reason code: the named primary ingestion run does not exist.
pub const REJECT_UNKNOWN_RUN: &str = RejectCode::LineageUnknownRun.as_str();
/// Reason code: the named primary ingestion run has not completed (running or failed).
pub const REJECT_RUN_NOT_COMPLETED: &str = RejectCode::LineageRunNotCompleted.as_str();
/// Reason code: a decision with this id exists already.
pub const REJECT_DUPLICATE: &str = RejectCode::DuplicateDecision.as_str();

/// Writes `decisions` as pending in one statement (one commit for all of them), each with
/// `data_lineage` filled in: the runs completed within the policy's window before the clock the
/// lineage was read at, which becomes the decisions' `created_at`, and, when named, its primary
/// ingestion run, which must exist and be completed. A decision that fails a check is answered
/// with its reject, in the same position, and the others are still written. An `Err` means the
/// database failed and nothing was written.
///
/// One round trip: the insert reads the lineage at its own clock. Decisions that name a primary
/// run take a second one before it, to check the runs. Each statement is prepared once per
/// pooled connection (see `store::db`).
pub async fn create_decisions(
    db: &impl Db,
    decisions: &[NewDecision],
    policy: LineagePolicy,
) -> Result<Vec<Result<CreatedDecision, DecisionReject>>, StoreError> {
    let written = create_decisions_with_requests(db, decisions, &[], policy).await?;
    Ok(written
        .into_iter()
        .map(|r| r.map(|(created, _)| created))
        .collect())
}

/// [`create_decisions`], storing with each decision written, in the same statement, the broker
/// request it is about to be sent as (`requests[i]` for `decisions[i]`, when given): so the
/// request payload is on record before the call without a commit of its own. Each written
/// decision comes with its request payload's id.
pub async fn create_decisions_with_requests(
    db: &impl Db,
    decisions: &[NewDecision],
    requests: &[Option<ApiPayload>],
    policy: LineagePolicy,
) -> Result<Vec<Result<(CreatedDecision, Option<i64>), DecisionReject>>, StoreError> {
    let named: Vec<Uuid> = decisions
        .iter()
        .filter_map(|d| d.primary_ingestion_run_id)
        .collect();
    // the runs of the lineage are read by the insert itself (one round trip fewer on the way
    // to the broker); only named primary runs are read first, to check them
    let primaries = primary_runs(db, &named).await?;
    // the checks first; then every decision that passed in one multi-row statement
    let mut results: Vec<Result<(CreatedDecision, Option<i64>), DecisionReject>> =
        Vec::with_capacity(decisions.len());
    let mut rows = Vec::with_capacity(decisions.len());
    for (i, decision) in decisions.iter().enumerate() {
        let checked = decision
            .validate()
            .and_then(|()| match decision.primary_ingestion_run_id {
                None => Ok(None),
                Some(run_id) => match primaries.iter().find(|p| p.0.run_id == run_id) {
                    None => Err(DecisionReject::new(
                        RejectCode::LineageUnknownRun,
                        format!("primary ingestion run {run_id} does not exist"),
                    )),
                    Some((run, _, status)) if *status != RunStatus::Completed => {
                        Err(DecisionReject::new(
                            RejectCode::LineageRunNotCompleted,
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
                    primary.map(|(run, _)| run),
                    policy,
                );
                rows.push((i, primary.map(|(_, id)| id), rationale));
                // a placeholder, replaced below by the row or a duplicate reject
                results.push(Err(DecisionReject::new(
                    RejectCode::DuplicateDecision,
                    String::new(),
                )));
            }
        }
    }
    // one request per decision id: a second copy of a decision is refused as a duplicate
    let mut seen = std::collections::HashSet::new();
    let with_requests: Vec<(Uuid, &ApiPayload)> = rows
        .iter()
        .filter_map(|(i, _, _)| {
            let id = decisions[*i].decision_id;
            let request = requests.get(*i)?.as_ref()?;
            seen.insert(id).then_some((id, request))
        })
        .collect();
    let (mut created, request_ids) =
        insert_decisions(db, decisions, &rows, &with_requests, policy).await?;
    for (i, _, _) in &rows {
        let id = decisions[*i].decision_id;
        results[*i] = match created.remove(&id) {
            Some(row) => Ok((row, request_ids.get(&id).copied())),
            None => Err(DecisionReject::new(
                RejectCode::DuplicateDecision,
                format!("decision {id} exists already"),
            )),
        };
    }
    Ok(results)
}

/// The named runs: each with its surrogate key and status.
async fn primary_runs(
    db: &impl Db,
    run_ids: &[Uuid],
) -> Result<Vec<(LineageRun, i64, RunStatus)>, StoreError> {
    if run_ids.is_empty() {
        return Ok(Vec::new());
    }
    let rows = db
        .client()
        .query(
            &db.statement(
                "SELECT run_id, task_name, data_source, completed_at, id, status \
             FROM data_ingestion_runs WHERE run_id = ANY($1)",
                &[Type::UUID_ARRAY],
            )
            .await
            .map_err(StoreError::new("preparing the primary runs read"))?,
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

/// The decisions insert: every row of the arrays is one decision; with them, the request
/// payloads of the decisions that were written (an id that exists already writes no request).
/// The statement's clock is the decisions' `created_at` and the requests' `captured_at`, and
/// the runs completed within the window ($17 seconds, at most $21, newest first) before it are
/// each decision's `data_lineage.ingestion_runs`. A run's `completed_at` is written as chrono
/// writes a `DateTime<Utc>` in JSON (RFC 3339 in UTC, `Z`, with 0, 3 or 6 fraction digits as
/// needed), so a lineage written here reads the same as one written in Rust.
const INSERT_DECISIONS: &str = "\
    WITH c AS (SELECT now() AS clock), \
    l AS ( \
        SELECT coalesce(jsonb_agg(jsonb_build_object('run_id', r.run_id, \
                   'task', r.task_name, 'source', r.data_source, \
                   'completed_at', \
                   to_char(r.completed_at AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS') \
                   || CASE WHEN date_part('microseconds', r.completed_at)::bigint % 1000000 = 0 \
                               THEN '' \
                           WHEN date_part('microseconds', r.completed_at)::bigint % 1000 = 0 \
                               THEN '.' || to_char(r.completed_at AT TIME ZONE 'UTC', 'MS') \
                           ELSE '.' || to_char(r.completed_at AT TIME ZONE 'UTC', 'US') END \
                   || 'Z') ORDER BY r.completed_at DESC), '[]'::jsonb) AS runs \
        FROM c, LATERAL ( \
            SELECT run_id, task_name, data_source, completed_at FROM data_ingestion_runs \
            WHERE status = 'completed' \
              AND completed_at > c.clock - $17::bigint * interval '1 second' \
              AND completed_at <= c.clock \
            ORDER BY completed_at DESC LIMIT $21::bigint) r), \
    d AS ( \
        INSERT INTO trade_decisions (decision_id, strategy_name, strategy_version, account, \
            symbol, side, quantity, notional, order_type, limit_price, stop_price, \
            time_in_force, primary_signal_type, primary_signal_id, primary_ingestion_run_id, \
            decision_rationale, signal_strength, created_at) \
        SELECT u.decision_id, u.strategy, u.version, u.account, u.symbol, u.side, \
            u.quantity, u.notional, u.order_type, u.limit_price, u.stop_price, u.tif, \
            u.signal_type, \
            u.signal_id, u.primary_run, \
            jsonb_set(u.rationale, '{data_lineage,ingestion_runs}', l.runs), \
            u.strength, c.clock \
        FROM unnest($1::uuid[], $2::text[], $3::text[], $4::text[], $5::text[], \
            $6::text[], $7::numeric[], $8::text[], $9::numeric[], $10::numeric[], \
            $11::text[], $12::text[], $13::text[], $14::bigint[], $15::jsonb[], \
            $16::numeric[], $22::numeric[]) AS u (decision_id, strategy, version, account, \
            symbol, side, quantity, order_type, limit_price, stop_price, tif, signal_type, \
            signal_id, primary_run, rationale, strength, notional), c, l \
        ON CONFLICT (decision_id) DO NOTHING \
        RETURNING id, decision_id, status, decision_rationale, primary_ingestion_run_id, \
            created_at), \
    p AS ( \
        INSERT INTO api_payloads (type, payload, source, captured_at) \
        SELECT 'ApiRequest', r.payload, r.source, c.clock \
        FROM unnest($18::uuid[], $19::jsonb[], $20::text[]) WITH ORDINALITY \
            AS r(decision_id, payload, source, n), c \
        WHERE r.decision_id IN (SELECT decision_id FROM d) \
        ORDER BY r.n \
        RETURNING id) \
    SELECT id, decision_id, status, decision_rationale, primary_ingestion_run_id, \
        created_at, NULL::bigint FROM d \
    UNION ALL \
    SELECT NULL, NULL, NULL, NULL, NULL, NULL, id FROM p";

/// Inserts the pending decisions `rows` (index into `decisions`, primary run key, rationale) in
/// one statement, with the request payloads `requests` (decision id, payload; at most one per
/// decision) of those written. The rows written, by decision id (an id that exists already, or
/// twice in `rows`, is written once: the others are missing from the answer), and the request
/// payload ids by decision id.
async fn insert_decisions(
    db: &impl Db,
    decisions: &[NewDecision],
    rows: &[(usize, Option<i64>, Value)],
    requests: &[(Uuid, &ApiPayload)],
    policy: LineagePolicy,
) -> Result<(HashMap<Uuid, CreatedDecision>, HashMap<Uuid, i64>), StoreError> {
    if rows.is_empty() {
        return Ok((HashMap::new(), HashMap::new()));
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
    let quantity = dec(&|d| d.quantity);
    let notional = dec(&|d| d.notional);
    let limit = dec(&|d| d.limit_price);
    let stop = dec(&|d| d.stop_price);
    let strength = dec(&|d| d.signal_strength);
    let primary: Vec<Option<i64>> = rows.iter().map(|(_, p, _)| *p).collect();
    let rationale: Vec<&Value> = rows.iter().map(|(_, _, r)| r).collect();
    let request_of: Vec<Uuid> = requests.iter().map(|(d, _)| *d).collect();
    let request_body: Vec<&Value> = requests.iter().map(|(_, p)| &p.payload).collect();
    let request_source: Vec<&str> = requests.iter().map(|(_, p)| p.source.as_str()).collect();
    use Type as T;
    let types = [
        T::UUID_ARRAY,
        T::TEXT_ARRAY,
        T::TEXT_ARRAY,
        T::TEXT_ARRAY,
        T::TEXT_ARRAY,
        T::TEXT_ARRAY,
        T::NUMERIC_ARRAY,
        T::TEXT_ARRAY,
        T::NUMERIC_ARRAY,
        T::NUMERIC_ARRAY,
        T::TEXT_ARRAY,
        T::TEXT_ARRAY,
        T::TEXT_ARRAY,
        T::INT8_ARRAY,
        T::JSONB_ARRAY,
        T::NUMERIC_ARRAY,
        T::INT8,
        T::UUID_ARRAY,
        T::JSONB_ARRAY,
        T::TEXT_ARRAY,
        T::INT8,
        T::NUMERIC_ARRAY,
    ];
    let window = i64::try_from(policy.window.as_secs()).unwrap_or(i64::MAX);
    let max_runs = i64::from(policy.max_runs);
    let statement = db
        .statement(INSERT_DECISIONS, &types)
        .await
        .map_err(StoreError::new("preparing the decisions insert"))?;
    let written = db
        .client()
        .query(
            &statement,
            &[
                &ids,
                &strategy,
                &version,
                &account,
                &symbol,
                &side,
                &quantity,
                &order_type,
                &limit,
                &stop,
                &tif,
                &signal_type,
                &signal_id,
                &primary,
                &rationale,
                &strength,
                &window,
                &request_of,
                &request_body,
                &request_source,
                &max_runs,
                &notional,
            ],
        )
        .await
        .map_err(StoreError::new("inserting trade decisions"))?;
    // the decisions' rows, then one row per request payload id
    let (payloads, decisions_written): (Vec<_>, Vec<_>) = written
        .iter()
        .partition(|row| row.get::<_, Option<i64>>(6).is_some());
    let created: HashMap<Uuid, CreatedDecision> = decisions_written
        .into_iter()
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
        .collect();
    // payloads were inserted in the order given, so their ids rise with it: matched in order
    // to the requests whose decisions were written
    let mut request_ids: Vec<i64> = payloads.iter().map(|r| r.get(6)).collect();
    request_ids.sort_unstable();
    let mut next = request_ids.into_iter();
    let requests = requests
        .iter()
        .filter(|(d, _)| created.contains_key(d))
        .filter_map(|(d, _)| Some((*d, next.next()?)))
        .collect();
    Ok((created, requests))
}
