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

/// The position of `account` in `symbol` that the reduce-only kill switch lets an order
/// reduce: what the account holds, less what the gateway's working orders (other than
/// `except`, an order being replaced) may still take off it. What it holds is the net of the
/// gateway's own fills (as fresh as they come) plus what the broker showed beyond them (its
/// first snapshot's position before the gateway traded, and every break reconciliation found
/// since; see [`outside_position`](super::reconciliation::outside_position)).
pub async fn position(
    client: &impl GenericClient,
    account: &str,
    symbol: &str,
    except: Option<uuid::Uuid>,
) -> Result<Decimal, StoreError> {
    let held = own_position(client, account, symbol).await?
        + super::reconciliation::outside_position(client, "alpaca", account, symbol).await?;
    let (buying, selling) = working_quantities(client, account, symbol, except).await?;
    Ok(if held > Decimal::ZERO {
        (held - selling).max(Decimal::ZERO)
    } else if held < Decimal::ZERO {
        (held + buying).min(Decimal::ZERO)
    } else {
        Decimal::ZERO
    })
}

/// What the gateway's orders in `symbol` that may still fill (a decision not sent yet, an
/// order the broker works) may still buy and sell; a notional order's shares are unknown and
/// not counted.
async fn working_quantities(
    client: &impl GenericClient,
    account: &str,
    symbol: &str,
    except: Option<uuid::Uuid>,
) -> Result<(Decimal, Decimal), StoreError> {
    let what = "reading the working orders of a position";
    let row = client
        .query_one(
            "SELECT COALESCE(sum(r.rest) FILTER (WHERE d.side = 'buy'), 0), \
                    COALESCE(sum(r.rest) FILTER (WHERE d.side = 'sell'), 0) \
             FROM trade_decisions d \
             LEFT JOIN LATERAL (SELECT e.status, e.filled_quantity FROM trade_executions e \
                                WHERE e.trade_decision_id = d.id ORDER BY e.id DESC LIMIT 1) x \
                 ON true \
             CROSS JOIN LATERAL (SELECT GREATEST(d.quantity - COALESCE(x.filled_quantity, 0), 0) \
                                 AS rest) r \
             WHERE d.account = $1 AND d.symbol = $2 AND d.quantity IS NOT NULL \
               AND ($3::uuid IS NULL OR d.decision_id <> $3) \
               AND ((x.status IS NULL AND d.status = 'pending') \
                    OR x.status IN ('submitted', 'accepted', 'partial_fill'))",
            &[&account, &symbol, &except],
        )
        .await
        .map_err(StoreError::new(what))?;
    Ok((
        row.try_get(0).map_err(StoreError::new(what))?,
        row.try_get(1).map_err(StoreError::new(what))?,
    ))
}

/// The net of the gateway's own executions of `account` in `symbol` (buys minus sells).
async fn own_position(
    client: &impl GenericClient,
    account: &str,
    symbol: &str,
) -> Result<Decimal, StoreError> {
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
