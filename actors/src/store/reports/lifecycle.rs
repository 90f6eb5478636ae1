//! The order lifecycle export: one JSON object per event of an order's life, in the order they
//! happened, with what a regulator's or a broker's compliance desk asks of each (FINRA CAT's
//! new order, route, modification, cancel and fill events): the gateway's ids (decision,
//! execution, client order id), the broker's (order id), the strategy, account, symbol, side,
//! quantity and prices, and the event's time to the microsecond (UTC). Refused orders, which
//! never became a decision, are events of their own.
//!
//! Events: `refusal` (order_rejects), `new_order` (the decision), `route` (the submission to
//! the broker, with the order id its answer gave), `send_failed` (a submission that surely
//! never reached the broker), `decision_failed` (a decision that never became a submission),
//! `broker_reject` (the broker refused the submission), `cancel_request` (the strategy asked to
//! cancel), and each event the broker reported: `accepted` (Alpaca's `new`: routed to the
//! venue), `fill` (that fill's quantity and price), `modification` (replaced, with the id of
//! the order that replaced it), `cancel`, `expired`, `broker_reject`, or `broker_<event>` for
//! any other (`broker_accepted`, ...). A fill known only from a submission's answer or a
//! look-up (no event of it) is a `fill` from the execution (`recorded_from: "execution"`);
//! a fill event repeating one recorded that way (quantity 0) is left out. `source` names the
//! row each came from.

use serde_json::Value;
use tokio_postgres::GenericClient;

use super::Range;
use crate::store::StoreError;
use crate::store::tradelog::ExportError;

/// A timestamp as the export writes it: UTC, microseconds.
macro_rules! ts {
    ($col:literal) => {
        concat!(
            "to_char(",
            $col,
            " AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.US\"Z\"')"
        )
    };
}

const LIFECYCLE: &str = concat!(
    "SELECT line::text FROM ( \
     SELECT r.rejected_at AS at, 0 AS ord, r.id AS rid, json_build_object( \
         'event', 'refusal', 'event_at', ",
    ts!("r.rejected_at"),
    ", \
         'strategy', r.strategy_name, \
         'strategy_version', r.strategy_version, 'account', r.account, 'symbol', r.symbol, \
         'side', r.side, 'quantity', r.quantity::text, 'notional', r.notional::text, \
         'order_type', r.order_type, 'limit_price', r.limit_price::text, \
         'stop_price', r.stop_price::text, 'reason_code', r.reason_code, \
         'reason', r.reason_message, 'request', r.request, \
         'source', 'order_rejects:' || r.id) AS line \
     FROM order_rejects r WHERE r.rejected_at >= $1 AND r.rejected_at < $2 \
     UNION ALL \
     SELECT d.created_at, 1, d.id, json_build_object( \
         'event', 'new_order', 'event_at', ",
    ts!("d.created_at"),
    ", \
         'decision_id', d.decision_id, 'client_order_id', d.decision_id::text, \
         'strategy', d.strategy_name, 'strategy_version', d.strategy_version, \
         'account', d.account, 'symbol', d.symbol, 'side', d.side, \
         'quantity', d.quantity::text, 'notional', d.notional::text, \
         'order_type', d.order_type, 'limit_price', d.limit_price::text, \
         'stop_price', d.stop_price::text, 'time_in_force', d.time_in_force, \
         'signal_strength', d.signal_strength::text, 'source', 'trade_decisions:' || d.id) \
     FROM trade_decisions d WHERE d.created_at >= $1 AND d.created_at < $2 \
     UNION ALL \
     SELECT x.submitted_at, 2, x.id, json_build_object( \
         'event', 'route', 'event_at', ",
    ts!("x.submitted_at"),
    ", \
         'decision_id', d.decision_id, 'client_order_id', d.decision_id::text, \
         'execution_id', x.execution_id, 'broker', x.broker, \
         'broker_order_id', COALESCE(p.payload->'body'->>'id', x.broker_order_id), \
         'strategy', d.strategy_name, \
         'account', d.account, 'symbol', d.symbol, 'side', d.side, \
         'quantity', d.quantity::text, 'notional', d.notional::text, \
         'order_type', d.order_type, 'limit_price', d.limit_price::text, \
         'stop_price', d.stop_price::text, 'time_in_force', d.time_in_force, \
         'source', 'trade_executions:' || x.id) \
     FROM trade_executions x JOIN trade_decisions d ON d.id = x.trade_decision_id \
     LEFT JOIN api_payloads p ON p.id = x.api_response_payload_id \
     WHERE x.submitted_at >= $1 AND x.submitted_at < $2 \
       AND NOT (x.status = 'rejected' AND x.http_status_code IS NULL \
                AND x.broker_order_id IS NULL) \
     UNION ALL \
     SELECT COALESCE(x.rejected_at, x.updated_at), 3, x.id, json_build_object( \
         'event', 'send_failed', 'event_at', ",
    ts!("COALESCE(x.rejected_at, x.updated_at)"),
    ", \
         'decision_id', d.decision_id, 'execution_id', x.execution_id, 'broker', x.broker, \
         'strategy', d.strategy_name, 'account', d.account, 'symbol', d.symbol, \
         'side', d.side, 'reason', x.error_message, 'error_code', x.error_code, \
         'source', 'trade_executions:' || x.id) \
     FROM trade_executions x JOIN trade_decisions d ON d.id = x.trade_decision_id \
     WHERE x.status = 'rejected' AND x.http_status_code IS NULL AND x.broker_order_id IS NULL \
       AND COALESCE(x.rejected_at, x.updated_at) >= $1 \
       AND COALESCE(x.rejected_at, x.updated_at) < $2 \
     UNION ALL \
     SELECT d.failed_at, 3, d.id, json_build_object( \
         'event', 'decision_failed', 'event_at', ",
    ts!("d.failed_at"),
    ", \
         'decision_id', d.decision_id, 'strategy', d.strategy_name, 'account', d.account, \
         'symbol', d.symbol, 'side', d.side, 'reason', d.failure_reason, \
         'source', 'trade_decisions:' || d.id) \
     FROM trade_decisions d \
     WHERE d.status = 'failed' AND d.failed_at >= $1 AND d.failed_at < $2 \
       AND NOT EXISTS (SELECT 1 FROM trade_executions x WHERE x.trade_decision_id = d.id) \
     UNION ALL \
     SELECT x.rejected_at, 3, x.id, json_build_object( \
         'event', 'broker_reject', 'event_at', ",
    ts!("x.rejected_at"),
    ", \
         'decision_id', d.decision_id, 'execution_id', x.execution_id, 'broker', x.broker, \
         'broker_order_id', x.broker_order_id, 'strategy', d.strategy_name, \
         'account', d.account, 'symbol', d.symbol, 'side', d.side, \
         'http_status', x.http_status_code, 'reason', x.error_message, \
         'source', 'trade_executions:' || x.id) \
     FROM trade_executions x JOIN trade_decisions d ON d.id = x.trade_decision_id \
     WHERE x.status = 'rejected' AND x.rejected_at >= $1 AND x.rejected_at < $2 \
       AND (x.http_status_code IS NOT NULL OR x.broker_order_id IS NOT NULL) \
       AND NOT EXISTS (SELECT 1 FROM broker_order_events e \
                       WHERE e.trade_decision_id = d.id AND e.event = 'rejected') \
     UNION ALL \
     SELECT x.cancel_requested_at, 4, x.id, json_build_object( \
         'event', 'cancel_request', 'event_at', ",
    ts!("x.cancel_requested_at"),
    ", \
         'decision_id', d.decision_id, 'execution_id', x.execution_id, 'broker', x.broker, \
         'broker_order_id', x.broker_order_id, 'strategy', d.strategy_name, \
         'account', d.account, 'symbol', d.symbol, 'side', d.side, \
         'source', 'trade_executions:' || x.id) \
     FROM trade_executions x JOIN trade_decisions d ON d.id = x.trade_decision_id \
     WHERE x.cancel_requested_at >= $1 AND x.cancel_requested_at < $2 \
     UNION ALL \
     SELECT COALESCE(e.event_at, e.recorded_at), 5, e.id, json_build_object( \
         'event', CASE e.event WHEN 'new' THEN 'accepted' \
                      WHEN 'fill' THEN 'fill' WHEN 'partial_fill' THEN 'fill' \
                      WHEN 'replaced' THEN 'modification' WHEN 'canceled' THEN 'cancel' \
                      WHEN 'expired' THEN 'expired' WHEN 'rejected' THEN 'broker_reject' \
                      ELSE 'broker_' || e.event END, \
         'event_at', ",
    ts!("COALESCE(e.event_at, e.recorded_at)"),
    ", \
         'recorded_at', ",
    ts!("e.recorded_at"),
    ", 'broker_event', e.event, \
         'decision_id', d.decision_id, 'client_order_id', d.decision_id::text, \
         'broker', e.broker, 'broker_order_id', e.broker_order_id, \
         'strategy', d.strategy_name, 'account', e.account, 'symbol', d.symbol, \
         'side', d.side, 'order_status', e.order_status, \
         'fill_quantity', CASE WHEN e.event IN ('fill', 'partial_fill') THEN e.qty::text END, \
         'fill_price', CASE WHEN e.event IN ('fill', 'partial_fill') THEN e.price::text END, \
         'replaced_by', e.body->'order'->>'replaced_by', \
         'source', 'broker_order_events:' || e.id) \
     FROM broker_order_events e LEFT JOIN trade_decisions d ON d.id = e.trade_decision_id \
     WHERE COALESCE(e.event_at, e.recorded_at) >= $1 AND COALESCE(e.event_at, e.recorded_at) < $2 \
       AND NOT (e.event IN ('fill', 'partial_fill') AND COALESCE(e.qty, 0) = 0) \
     UNION ALL \
     SELECT COALESCE(x.filled_at, x.updated_at), 6, x.id, json_build_object( \
         'event', 'fill', 'event_at', ",
    ts!("COALESCE(x.filled_at, x.updated_at)"),
    ", \
         'recorded_from', 'execution', \
         'decision_id', d.decision_id, 'client_order_id', d.decision_id::text, \
         'execution_id', x.execution_id, 'broker', x.broker, \
         'broker_order_id', x.broker_order_id, 'strategy', d.strategy_name, \
         'account', d.account, 'symbol', d.symbol, 'side', d.side, \
         'fill_quantity', r.rest::text, 'fill_price', x.filled_avg_price::text, \
         'source', 'trade_executions:' || x.id) \
     FROM trade_executions x JOIN trade_decisions d ON d.id = x.trade_decision_id \
     CROSS JOIN LATERAL ( \
         SELECT x.filled_quantity - COALESCE(( \
             SELECT sum(e.qty) FROM broker_order_events e \
             WHERE e.trade_decision_id = d.id AND e.event IN ('fill', 'partial_fill')), 0) AS rest) r \
     WHERE x.filled_quantity > 0 AND r.rest > 0 \
       AND COALESCE(x.filled_at, x.updated_at) >= $1 AND COALESCE(x.filled_at, x.updated_at) < $2 \
     ) t ORDER BY at, ord, rid"
);

/// Hands each lifecycle event of `range` to `sink` as a line of JSON (no newline), oldest
/// first (ties in the order an order lives them), as the rows arrive: a day of any size is
/// written without being held; how many there were.
pub async fn each_lifecycle_event(
    client: &impl GenericClient,
    range: Range,
    mut sink: impl FnMut(&str) -> std::io::Result<()>,
) -> Result<u64, ExportError> {
    let what = "reading the order lifecycle";
    let params: [&(dyn tokio_postgres::types::ToSql + Sync); 2] = [&range.from, &range.to];
    let stream = client
        .query_raw(LIFECYCLE, params)
        .await
        .map_err(|e| ExportError::Db(StoreError::new(what)(e)))?;
    futures_util::pin_mut!(stream);
    let mut events = 0;
    while let Some(row) = futures_util::StreamExt::next(&mut stream).await {
        let row = row.map_err(|e| ExportError::Db(StoreError::new(what)(e)))?;
        let line: &str = row
            .try_get(0)
            .map_err(|e| ExportError::Db(StoreError::new(what)(e)))?;
        sink(line).map_err(ExportError::Io)?;
        events += 1;
    }
    Ok(events)
}

/// The lifecycle events of `range`, oldest first, parsed (for tests and small ranges; an
/// export streams them with [`each_lifecycle_event`]).
pub async fn order_lifecycle(
    client: &impl GenericClient,
    range: Range,
) -> Result<Vec<Value>, ExportError> {
    let mut events = Vec::new();
    each_lifecycle_event(client, range, |line| {
        events.push(serde_json::from_str(line).map_err(std::io::Error::other)?);
        Ok(())
    })
    .await?;
    Ok(events)
}
