//! Recovery's rows: the pending decisions whose outcome is unknown, and failing or resolving
//! them and their unanswered executions.

use chrono::{DateTime, Utc};
use tokio_postgres::GenericClient;
use uuid::Uuid;

use super::NOT_RECEIVED_BY_BROKER;
use super::submissions::{DecisionOutcome, Submission};
use super::terms::{DECISION_COLUMNS, decision_of_row};
use crate::domain::NewDecision;
use crate::store::StoreError;

/// Ends a pending decision as failed with `reason` (nothing was sent, or recovery found no
/// order at the broker); false if it was no longer pending.
pub async fn fail_pending_decision(
    client: &impl GenericClient,
    decision_pk: i64,
    reason: &str,
) -> Result<bool, StoreError> {
    let n = client
        .execute(
            "UPDATE trade_decisions SET status = 'failed', failure_reason = $2, \
                 failed_at = now(), updated_at = now() \
             WHERE id = $1 AND status NOT IN ('executed', 'failed', 'cancelled')",
            &[&decision_pk, &reason],
        )
        .await
        .map_err(StoreError::new("failing a pending decision"))?;
    Ok(n == 1)
}

/// Resolves an execution whose submission got no answer with the order a look-up found:
/// its status, broker order id and fills (the response payload stored with it), and the
/// decision executed (or failed, if the broker rejected it). Only an execution still
/// unresolved changes (the stream may have told its outcome first); whether it did.
pub async fn resolve_unknown_execution(
    client: &impl GenericClient,
    execution_pk: i64,
    found: &Submission,
    reason: &str,
) -> Result<bool, StoreError> {
    let (decision_status, failure) = match &found.outcome {
        DecisionOutcome::Executed | DecisionOutcome::Unknown => ("executed", None),
        DecisionOutcome::Failed(r) => ("failed", Some(r.as_str())),
    };
    let row = client
        .query_one(
            "WITH p AS ( \
                 INSERT INTO api_payloads (type, payload, source, captured_at) \
                 VALUES ('ApiResponse', $1, $2, $3) RETURNING id), \
             x AS ( \
                 UPDATE trade_executions SET status = $4, status_reason = $5, \
                     broker_order_id = $6, http_status_code = $7, \
                     api_response_payload_id = (SELECT id FROM p), error_code = NULL, \
                     error_message = NULL, error_details = NULL, \
                     filled_quantity = GREATEST(filled_quantity, $8), \
                     filled_avg_price = COALESCE($9, filled_avg_price), \
                     filled_at = COALESCE(filled_at, $10), \
                     cancelled_at = CASE WHEN $4 = 'cancelled' THEN now() END, \
                     rejected_at = CASE WHEN $4 = 'rejected' THEN now() END, updated_at = now() \
                 WHERE id = $11 AND status = 'submitted' AND broker_order_id IS NULL \
                 RETURNING trade_decision_id), \
             d AS ( \
                 UPDATE trade_decisions t SET status = $12, failure_reason = $13, \
                     status_reason = $5, \
                     executed_at = CASE WHEN $12 = 'executed' THEN now() END, \
                     failed_at = CASE WHEN $12 = 'failed' THEN now() END, updated_at = now() \
                 FROM x WHERE t.id = x.trade_decision_id AND t.status = 'pending' \
                 RETURNING t.id) \
             SELECT count(*) FROM x",
            &[
                &found.response.payload,
                &found.broker,
                &found.response.captured_at,
                &found.status,
                &reason,
                &found.broker_order_id,
                &found.http_status,
                &found.filled_qty,
                &found.filled_avg_price,
                &found.filled_at,
                &execution_pk,
                &decision_status,
                &failure,
            ],
        )
        .await
        .map_err(StoreError::new("resolving an unanswered submission"))?;
    Ok(row.get::<_, i64>(0) == 1)
}

/// The id of execution `execution_pk`.
pub async fn execution_id_of(
    client: &impl GenericClient,
    execution_pk: i64,
) -> Result<Uuid, StoreError> {
    let row = client
        .query_one(
            "SELECT execution_id FROM trade_executions WHERE id = $1",
            &[&execution_pk],
        )
        .await
        .map_err(StoreError::new("reading an execution id"))?;
    Ok(row.get(0))
}

/// Ends an execution whose submission got no answer, and its decision, as never received by
/// the broker (a look-up past the grace period did not find it); whether it was unresolved.
pub async fn fail_unknown_execution(
    client: &impl GenericClient,
    execution_pk: i64,
    reason: &str,
) -> Result<bool, StoreError> {
    let row = client
        .query_one(
            "WITH x AS ( \
                 UPDATE trade_executions SET status = 'rejected', status_reason = $2, \
                     error_code = $3, rejected_at = now(), updated_at = now() \
                 WHERE id = $1 AND status = 'submitted' AND broker_order_id IS NULL \
                 RETURNING trade_decision_id), \
             d AS ( \
                 UPDATE trade_decisions t SET status = 'failed', failure_reason = $3, \
                     status_reason = $2, failed_at = now(), updated_at = now() \
                 FROM x WHERE t.id = x.trade_decision_id AND t.status = 'pending' \
                 RETURNING t.id) \
             SELECT count(*) FROM x",
            &[&execution_pk, &reason, &NOT_RECEIVED_BY_BROKER],
        )
        .await
        .map_err(StoreError::new("failing an unanswered submission"))?;
    Ok(row.get::<_, i64>(0) == 1)
}

/// A pending decision whose outcome is unknown, as recovery sees it: no execution recorded
/// (the gateway may have died around the send), or an execution whose submission got no
/// answer (`submitted` without a broker order id).
#[derive(Debug, Clone)]
pub struct PendingDecision {
    /// Surrogate key
    pub decision_pk: i64,
    /// The execution of a submission whose answer was lost, and why it was lost
    pub unknown_execution: Option<(i64, String)>,
    /// The decision
    pub decision: NewDecision,
    /// Since when its outcome is unknown: its unanswered execution was recorded, or (none
    /// recorded) the decision was committed; the grace period counts from here
    pub created_at: DateTime<Utc>,
}

/// The pending decisions of `account` whose outcome is unknown, oldest first.
pub async fn unresolved_decisions(
    client: &impl GenericClient,
    account: &str,
) -> Result<Vec<PendingDecision>, StoreError> {
    let rows = client
        .query(
            &format!(
                "SELECT {DECISION_COLUMNS}, \
                    COALESCE(e.created_at, d.created_at), e.id, \
                    COALESCE(e.error_code || ': ' || e.error_message, e.error_message, ''), \
                    d.notional \
             FROM trade_decisions d \
             LEFT JOIN trade_executions e ON e.trade_decision_id = d.id \
             WHERE d.account = $1 AND d.status = 'pending' \
               AND (e.id IS NULL OR (e.status = 'submitted' AND e.broker_order_id IS NULL)) \
             ORDER BY d.created_at"
            ),
            &[&account],
        )
        .await
        .map_err(StoreError::new("reading unresolved decisions"))?;
    Ok(rows
        .iter()
        .map(|row| {
            let execution_pk: Option<i64> = row.get(17);
            PendingDecision {
                decision_pk: row.get(0),
                unknown_execution: execution_pk.map(|pk| (pk, row.get(18))),
                decision: decision_of_row(row, 19),
                created_at: row.get(16),
            }
        })
        .collect())
}
