//! "Why did this order fail": a decision's outcome in the broker's own words.

use serde::Serialize;
use tokio_postgres::GenericClient;
use uuid::Uuid;

use super::lineage::{PayloadView, payload};
use super::{FAILURE_REASON, failure_side};
use crate::store::StoreError;

/// "Why did this order fail": the outcome with the broker's own words.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct OrderFailure {
    /// The decision
    pub decision_id: Uuid,
    /// Symbol
    pub symbol: String,
    /// The decision's status
    pub decision_status: String,
    /// The decision's failure reason
    pub failure_reason: Option<String>,
    /// The normalized reason (see [`FAILURE_REASON`]); none unless the decision failed
    pub reason: Option<String>,
    /// signal-side or execution-side (`broker_reject`, `api_error`)
    pub side: Option<String>,
    /// The execution's status
    pub execution_status: Option<String>,
    /// The broker's order id
    pub broker_order_id: Option<String>,
    /// HTTP status
    pub http_status: Option<i32>,
    /// The broker's error code
    pub error_code: Option<String>,
    /// The broker's error message
    pub error_message: Option<String>,
    /// The full response payload
    pub response: Option<PayloadView>,
}

/// The outcome of the order `id`: a decision id (UUID) or a broker order id; `None` when
/// neither matches.
pub async fn order_failure(
    client: &impl GenericClient,
    id: &str,
) -> Result<Option<OrderFailure>, StoreError> {
    let decision = Uuid::parse_str(id).ok();
    let row = client
        .query_opt(
            &format!(
                "SELECT d.decision_id, d.symbol, d.status, d.failure_reason, \
                        CASE WHEN d.status = 'failed' THEN {FAILURE_REASON} END, \
                        e.status, e.broker_order_id, e.http_status_code, e.error_code, \
                        e.error_message, e.api_response_payload_id \
                 FROM trade_decisions d \
                 LEFT JOIN trade_executions e ON e.trade_decision_id = d.id \
                 WHERE ($1::uuid IS NOT NULL AND d.decision_id = $1) \
                    OR ($1::uuid IS NULL AND d.id = (SELECT trade_decision_id \
                        FROM trade_executions WHERE broker_order_id = $2 LIMIT 1)) \
                 LIMIT 1"
            ),
            &[&decision, &id],
        )
        .await
        .map_err(StoreError::new("reading an order's outcome"))?;
    let Some(r) = row else { return Ok(None) };
    let reason: Option<String> = r.get(4);
    Ok(Some(OrderFailure {
        decision_id: r.get(0),
        symbol: r.get(1),
        decision_status: r.get(2),
        failure_reason: r.get(3),
        side: reason.as_deref().map(|r| failure_side(r).to_string()),
        reason,
        execution_status: r.get(5),
        broker_order_id: r.get(6),
        http_status: r.get(7),
        error_code: r.get(8),
        error_message: r.get(9),
        response: payload(client, r.get(10)).await?,
    }))
}
