//! Orders as the stream, cancels and catch-ups read them, and the cancel and replace marks on
//! their executions.

use tokio_postgres::GenericClient;
use tokio_postgres::Row;
use uuid::Uuid;

use crate::domain::PlacedOrder;
use crate::store::StoreError;
use crate::store::db::Db;

pub(super) const ORDER_COLUMNS: &str = "d.id, d.decision_id, d.strategy_name, d.account, d.symbol, \
     d.status, e.id, e.execution_id, e.status, e.broker_order_id, \
     COALESCE(e.filled_quantity, 0)";

pub(super) fn order_row(row: &Row) -> PlacedOrder {
    PlacedOrder {
        decision_pk: row.get(0),
        decision_id: row.get(1),
        strategy: row.get(2),
        account: row.get(3),
        symbol: row.get(4),
        decision_status: row.get(5),
        execution_pk: row.get(6),
        execution_id: row.get(7),
        execution_status: row.get(8),
        broker_order_id: row.get(9),
        filled_qty: row.get(10),
    }
}

/// The order of decision `decision_id`.
pub async fn order_by_decision(
    db: &impl Db,
    decision_id: Uuid,
) -> Result<Option<PlacedOrder>, StoreError> {
    let sql = format!(
        "SELECT {ORDER_COLUMNS} FROM trade_decisions d \
                 LEFT JOIN trade_executions e ON e.trade_decision_id = d.id \
                 WHERE d.decision_id = $1"
    );
    let statement = db
        .statement(&sql, &[])
        .await
        .map_err(StoreError::new("reading an order by decision"))?;
    let row = db
        .client()
        .query_opt(&statement, &[&decision_id])
        .await
        .map_err(StoreError::new("reading an order by decision"))?;
    Ok(row.as_ref().map(order_row))
}

/// The order whose broker order id is `broker_order_id`.
pub async fn order_by_broker_id(
    db: &impl Db,
    broker_order_id: &str,
) -> Result<Option<PlacedOrder>, StoreError> {
    let sql = format!(
        "SELECT {ORDER_COLUMNS} FROM trade_executions e \
                 JOIN trade_decisions d ON d.id = e.trade_decision_id \
                 WHERE e.broker_order_id = $1 LIMIT 1"
    );
    let statement = db
        .statement(&sql, &[])
        .await
        .map_err(StoreError::new("reading an order by broker id"))?;
    let row = db
        .client()
        .query_opt(&statement, &[&broker_order_id])
        .await
        .map_err(StoreError::new("reading an order by broker id"))?;
    Ok(row.as_ref().map(order_row))
}

/// The working orders (submitted, accepted or partly filled) of `strategy` in `account`.
pub async fn open_orders(
    client: &impl GenericClient,
    account: &str,
    strategy: &str,
) -> Result<Vec<PlacedOrder>, StoreError> {
    Ok(working_orders(client, account)
        .await?
        .into_iter()
        .filter(|o| o.strategy == strategy)
        .collect())
}

/// Every order of `account` that is working at the broker as far as the gateway knows
/// (submitted, accepted or partly filled, with a broker order id): what a catch-up looks up.
pub async fn working_orders(
    client: &impl GenericClient,
    account: &str,
) -> Result<Vec<PlacedOrder>, StoreError> {
    let rows = client
        .query(
            &format!(
                "SELECT {ORDER_COLUMNS} FROM trade_decisions d \
                 JOIN trade_executions e ON e.trade_decision_id = d.id \
                 WHERE d.account = $1 \
                   AND e.status IN ('submitted', 'accepted', 'partial_fill') \
                   AND e.broker_order_id IS NOT NULL \
                 ORDER BY d.id"
            ),
            &[&account],
        )
        .await
        .map_err(StoreError::new("reading working orders"))?;
    Ok(rows.iter().map(order_row).collect())
}

/// Notes that the strategy asked to cancel the order, so its cancel ends the decision as
/// cancelled.
pub async fn mark_cancel_requested(
    client: &impl GenericClient,
    execution_pk: i64,
) -> Result<(), StoreError> {
    client
        .execute(
            "UPDATE trade_executions SET cancel_requested_at = COALESCE(cancel_requested_at, now()), \
                 updated_at = now() WHERE id = $1",
            &[&execution_pk],
        )
        .await
        .map_err(StoreError::new("marking a cancel request"))?;
    Ok(())
}

/// The order id a replace gave the order.
pub async fn set_broker_order_id(
    client: &impl GenericClient,
    execution_pk: i64,
    broker_order_id: &str,
) -> Result<(), StoreError> {
    client
        .execute(
            "UPDATE trade_executions SET broker_order_id = $2, updated_at = now() WHERE id = $1",
            &[&execution_pk, &broker_order_id],
        )
        .await
        .map_err(StoreError::new("recording a replacement order id"))?;
    Ok(())
}
