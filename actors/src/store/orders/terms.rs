//! Decisions read back as they were decided: the shared columns, the row mapping, a decision's
//! terms (a replace is checked against them).

use serde_json::Value;
use tokio_postgres::GenericClient;
use tokio_postgres::Row;
use uuid::Uuid;

use crate::domain::{NewDecision, OrderType, PrimarySignal, Side, TimeInForce};
use crate::store::StoreError;

/// The decision of a row whose first 16 columns are [`DECISION_COLUMNS`] and whose column
/// `notional_at` is its notional.
pub(super) fn decision_of_row(row: &Row, notional_at: usize) -> NewDecision {
    let signal_type: Option<String> = row.get(13);
    let signal_id: Option<String> = row.get(14);
    NewDecision {
        decision_id: row.get(1),
        strategy_name: row.get(2),
        strategy_version: row.get(3),
        account: row.get(4),
        symbol: row.get(5),
        side: if row.get::<_, &str>(6) == "sell" {
            Side::Sell
        } else {
            Side::Buy
        },
        quantity: row.get(7),
        notional: row.get(notional_at),
        order_type: parse_order_type(row.get(8)),
        limit_price: row.get(9),
        stop_price: row.get(10),
        time_in_force: parse_tif(row.get(11)),
        signal_strength: row.get(12),
        primary_signal: signal_type
            .zip(signal_id)
            .map(|(signal_type, id)| PrimarySignal { signal_type, id }),
        primary_ingestion_run_id: None,
        rationale: Some(row.get(15)),
    }
}

/// The columns [`decision_of_row`] reads, over `trade_decisions d`.
pub(super) const DECISION_COLUMNS: &str = "d.id, d.decision_id, d.strategy_name, d.strategy_version, \
     d.account, d.symbol, d.side, d.quantity, d.order_type, d.limit_price, d.stop_price, \
     d.time_in_force, d.signal_strength, d.primary_signal_type, d.primary_signal_id, \
     d.decision_rationale";

/// Decision `decision_id` as it was decided (a replace is checked against its terms).
pub async fn decision_terms(
    client: &impl GenericClient,
    decision_id: Uuid,
) -> Result<Option<NewDecision>, StoreError> {
    let row = client
        .query_opt(
            &format!(
                "SELECT {DECISION_COLUMNS}, d.notional FROM trade_decisions d \
                 WHERE d.decision_id = $1"
            ),
            &[&decision_id],
        )
        .await
        .map_err(StoreError::new("reading a decision's terms"))?;
    Ok(row.map(|r| decision_of_row(&r, 16)))
}

// the CHECK constraints admit only these spellings
pub(super) fn parse_order_type(text: &str) -> OrderType {
    serde_json::from_value(Value::String(text.into())).unwrap_or(OrderType::Market)
}

pub(super) fn parse_tif(text: &str) -> TimeInForce {
    serde_json::from_value(Value::String(text.into())).unwrap_or(TimeInForce::Day)
}
