//! The order path's rows: broker submissions (`trade_executions` with their response payloads
//! and the decision's outcome), the orders as the stream, cancels and recovery read them, and
//! what the risk checks read (positions, last fill prices). The kill switch, broker events and
//! refusals have their own files.

use rust_decimal::Decimal;
use tokio_postgres::GenericClient;
use uuid::Uuid;

use super::StoreError;

mod placed;
mod recovery;
mod submissions;
mod terms;

pub use placed::{
    mark_cancel_requested, open_orders, order_by_broker_id, order_by_decision, set_broker_order_id,
    working_orders,
};
pub use recovery::{
    PendingDecision, execution_id_of, fail_pending_decision, fail_unknown_execution,
    resolve_unknown_execution, unresolved_decisions,
};
pub use submissions::{DecisionOutcome, Submission, record_submissions};
pub use terms::decision_terms;

/// Reason a decision failed when recovery found no order at the broker.
pub const NOT_RECEIVED_BY_BROKER: &str = "not_received_by_broker";

/// The position of `account` in `symbol` that the reduce-only kill switch protects: the
/// broker's newest snapshot with the fills on record since it (so a position changed outside
/// the gateway counts once the broker has shown it); before any snapshot, the net of the
/// gateway's own executions (buys minus sells).
pub async fn position(
    client: &impl GenericClient,
    account: &str,
    symbol: &str,
) -> Result<Decimal, StoreError> {
    if let Some(held) =
        super::reconciliation::position_since_snapshot(client, "alpaca", account, symbol).await?
    {
        return Ok(held);
    }
    let row = client
        .query_one(
            "SELECT COALESCE(sum(CASE d.side WHEN 'buy' THEN e.filled_quantity \
                                             ELSE -e.filled_quantity END), 0) \
             FROM trade_decisions d JOIN trade_executions e ON e.trade_decision_id = d.id \
             WHERE d.account = $1 AND d.symbol = $2",
            &[&account, &symbol],
        )
        .await
        .map_err(StoreError::new("reading a position"))?;
    // a sum beyond what a Decimal holds is an error, not a panic of the router
    row.try_get(0)
        .map_err(StoreError::new("reading a position"))
}

/// The average fill price of the newest decision in `symbol` that has one (the reference
/// price of market orders' risk checks when the strategy sends none).
pub async fn last_fill_price(
    client: &impl GenericClient,
    symbol: &str,
) -> Result<Option<Decimal>, StoreError> {
    let row = client
        .query_opt(
            "SELECT e.filled_avg_price FROM trade_decisions d \
             JOIN trade_executions e ON e.trade_decision_id = d.id \
             WHERE d.symbol = $1 AND e.filled_avg_price IS NOT NULL \
             ORDER BY d.created_at DESC LIMIT 1",
            &[&symbol],
        )
        .await
        .map_err(StoreError::new("reading the last fill price"))?;
    Ok(row.map(|r| r.get(0)))
}

/// How many of `decisions` are not settled yet: no execution, or one the broker still works.
pub async fn unsettled_count(
    client: &impl GenericClient,
    decisions: &[Uuid],
) -> Result<i64, StoreError> {
    let row = client
        .query_one(
            "SELECT count(*) FROM trade_decisions d \
             LEFT JOIN trade_executions e ON e.trade_decision_id = d.id \
             WHERE d.decision_id = ANY($1) \
               AND (e.id IS NULL OR e.status IN ('submitted', 'accepted', 'partial_fill'))",
            &[&decisions],
        )
        .await
        .map_err(StoreError::new("counting unsettled decisions"))?;
    Ok(row.get(0))
}

/// The latest decision that failed, if any.
pub async fn latest_failed_decision(
    client: &impl GenericClient,
) -> Result<Option<Uuid>, StoreError> {
    let row = client
        .query_opt(
            "SELECT decision_id FROM trade_decisions WHERE status = 'failed' \
             ORDER BY created_at DESC LIMIT 1",
            &[],
        )
        .await
        .map_err(StoreError::new("reading the latest failed decision"))?;
    Ok(row.map(|r| r.get(0)))
}
