//! The events brokers push for our orders (`broker_order_events`), and the execution and
//! decision changes each one makes, in the same statement.

use chrono::{DateTime, Utc};
use rust_decimal::Decimal;
use serde_json::Value;
use tokio_postgres::GenericClient;

use super::StoreError;
use super::db::Db;
use crate::domain::PlacedOrder;

// The execution follows the broker: a status never moves back from a final one, except that an
// execution recorded as rejected takes a fill (or, if the gateway itself concluded the broker
// never received it, any state the broker shows): the broker is the truth, and the database's
// state-machine trigger keeps the correction. A filled quantity never meets `rejected`. The
// decision follows its execution: cancelled when the strategy's own cancel completed, failed
// when the broker rejected it, executed once the broker shows the order in any other state
// (also out of failed: a correction). Both rows are locked and read at their newest version,
// so a concurrent write is never undone from a stale snapshot. A fill counts only what it adds
// to the execution's cumulative quantity (an event carries the order's `filled_qty`): a live
// fill the catch-up already recorded, or a repeat under another key, stores its event with a
// quantity of zero; a catch-up's fill counts what the stream missed, priced so that the
// cumulative average is right: (avg * filled - previous avg * previous filled) / added.
const RECORD_ORDER_EVENT: &str = "WITH cur AS ( \
                 SELECT c.id, c.prev, c.prev_avg, \
                        CASE WHEN c.next_status IN ('submitted', 'accepted') \
                               AND GREATEST(c.prev, COALESCE($14::numeric, 0)) > 0 \
                             THEN 'partial_fill' ELSE c.next_status END AS next \
                 FROM ( \
                 SELECT x.id, x.filled_quantity AS prev, x.filled_avg_price AS prev_avg, \
                        CASE WHEN $13::text IS NULL THEN x.status \
                             WHEN x.status = 'rejected' AND $13 <> 'rejected' \
                               AND (($13 IN ('partial_fill', 'filled') \
                                     AND COALESCE($14::numeric, 0) > x.filled_quantity) \
                                    OR x.error_code = 'not_received_by_broker') THEN $13 \
                             WHEN x.status IN ('filled', 'rejected', 'cancelled') THEN x.status \
                             WHEN $13 = 'rejected' \
                               AND (x.filled_quantity > 0 OR COALESCE($14::numeric, 0) > 0) \
                               THEN x.status \
                             WHEN x.status = 'partial_fill' \
                               AND $13 NOT IN ('filled', 'cancelled') THEN x.status \
                             ELSE $13 END AS next_status \
                 FROM trade_executions x WHERE x.id = $16::bigint \
                 FOR UPDATE) c), \
             fq AS ( \
                 SELECT CASE WHEN $6 NOT IN ('fill', 'partial_fill') THEN NULL \
                             WHEN $14::numeric IS NULL OR c.prev IS NULL THEN $8::numeric \
                             ELSE GREATEST($14::numeric - c.prev, 0) END AS qty, \
                        c.prev, c.prev_avg \
                 FROM (SELECT 1) one LEFT JOIN cur c ON true), \
             f AS ( \
                 SELECT CASE WHEN abs(fq.qty) < 1e27 THEN fq.qty END AS qty, \
                        CASE WHEN fq.qty IS NULL OR fq.qty = 0 THEN NULL \
                             WHEN fq.qty = $8::numeric AND $9::numeric IS NOT NULL THEN $9::numeric \
                             WHEN $15::numeric IS NULL THEN $9::numeric \
                             WHEN fq.prev IS NULL OR fq.prev = 0 THEN $15::numeric \
                             WHEN ($15::numeric * $14::numeric - COALESCE(fq.prev_avg, 0) * fq.prev) >= 0 \
                               THEN round(($15::numeric * $14::numeric \
                                           - COALESCE(fq.prev_avg, 0) * fq.prev) / fq.qty, 8) \
                        END AS price \
                 FROM fq), \
             fb AS ( \
                 SELECT f.qty, CASE WHEN f.price < 1e20 THEN f.price END AS price FROM f), \
             ev AS ( \
                 INSERT INTO broker_order_events (broker, account, event_key, trade_decision_id, \
                     broker_order_id, event, order_status, qty, price, position_qty, event_at, body) \
                 SELECT $1, $2, $3, $4, $5, $6, $7, fb.qty, fb.price, $10::numeric, $11::timestamptz, $12 \
                 FROM fb \
                 ON CONFLICT (broker, account, event_key) DO NOTHING RETURNING id, qty, price), \
             ex AS ( \
                 UPDATE trade_executions x SET \
                     status = cur.next, \
                     status_reason = CASE WHEN cur.next IS DISTINCT FROM x.status \
                                          THEN 'trade_updates ' || $6 || ' (' || $3 || ')' \
                                          ELSE x.status_reason END, \
                     broker_order_id = CASE WHEN $17::text IS NOT NULL \
                                              AND $17 = x.broker_order_id THEN $5 \
                                            ELSE COALESCE(x.broker_order_id, $5) END, \
                     filled_quantity = CASE WHEN cur.next = 'rejected' THEN x.filled_quantity \
                                            ELSE GREATEST(x.filled_quantity, COALESCE($14::numeric, 0)) END, \
                     filled_avg_price = CASE WHEN cur.next <> 'rejected' AND $14::numeric IS NOT NULL \
                                              AND $14::numeric >= x.filled_quantity \
                                             THEN COALESCE($15::numeric, x.filled_avg_price) \
                                             ELSE x.filled_avg_price END, \
                     filled_at = CASE WHEN cur.next = 'filled' THEN COALESCE(x.filled_at, $11, now()) \
                                      ELSE x.filled_at END, \
                     cancelled_at = CASE WHEN cur.next = 'cancelled' \
                                         THEN COALESCE(x.cancelled_at, $11, now()) \
                                         ELSE x.cancelled_at END, \
                     rejected_at = CASE WHEN cur.next = 'rejected' \
                                        THEN COALESCE(x.rejected_at, $11, now()) \
                                        ELSE x.rejected_at END, \
                     updated_at = now() \
                 FROM cur WHERE x.id = cur.id AND EXISTS (SELECT 1 FROM ev) \
                   AND (cur.next IS DISTINCT FROM x.status \
                        OR (cur.next <> 'rejected' \
                            AND COALESCE($14::numeric, 0) > x.filled_quantity) \
                        OR (x.broker_order_id IS NULL AND $5 IS NOT NULL) \
                        OR ($17::text IS NOT NULL AND $17 = x.broker_order_id)) \
                 RETURNING x.status, x.cancel_requested_at), \
             dn AS ( \
                 SELECT t.id, t.status AS old, t.failure_reason, \
                        CASE WHEN ex.status = 'cancelled' AND ex.cancel_requested_at IS NOT NULL \
                               AND t.status IN ('pending', 'executed') THEN 'cancelled' \
                             WHEN ex.status = 'rejected' \
                               AND t.status IN ('pending', 'executed') THEN 'failed' \
                             WHEN ex.status <> 'rejected' \
                               AND t.status IN ('pending', 'failed') THEN 'executed' \
                             ELSE t.status END AS next \
                 FROM trade_decisions t, ex WHERE t.id = $4 FOR UPDATE OF t), \
             d AS ( \
                 UPDATE trade_decisions t SET \
                     status = dn.next, \
                     status_reason = CASE WHEN dn.old = 'failed' \
                                          THEN 'trade_updates ' || $6 || ' (' || $3 || ')' \
                                               || ' after failed: ' || COALESCE(dn.failure_reason, '') \
                                          ELSE t.status_reason END, \
                     executed_at = CASE WHEN dn.next = 'executed' THEN COALESCE(t.executed_at, now()) \
                                        ELSE t.executed_at END, \
                     cancelled_at = CASE WHEN dn.next = 'cancelled' THEN now() \
                                         ELSE t.cancelled_at END, \
                     failed_at = CASE WHEN dn.next = 'failed' \
                                      THEN COALESCE(t.failed_at, now()) \
                                      WHEN dn.next = 'executed' THEN NULL ELSE t.failed_at END, \
                     failure_reason = CASE WHEN dn.next = 'failed' \
                                           THEN COALESCE(t.failure_reason, 'rejected by broker') \
                                           WHEN dn.next = 'executed' THEN NULL \
                                           ELSE t.failure_reason END, \
                     updated_at = now() \
                 FROM dn WHERE t.id = dn.id AND dn.next <> dn.old \
                 RETURNING t.status) \
             SELECT (SELECT id FROM ev), (SELECT status FROM ex), \
                    COALESCE((SELECT status FROM d), \
                             (SELECT status FROM trade_decisions WHERE id = $4)), \
                    (SELECT qty FROM ev), (SELECT price FROM ev)";

/// One event a broker pushed (or recovery reconstructed) for one of our orders. The event is
/// always stored (once); the execution and the decision are updated only when the event changes
/// them, so a repeated status costs no row versions.
#[derive(Debug, Clone)]
pub struct OrderEvent<'a> {
    /// The broker
    pub broker: &'a str,
    /// The account
    pub account: &'a str,
    /// Dedupe key: the broker's execution id, or a synthetic key for recovered changes
    pub event_key: &'a str,
    /// The order
    pub order: &'a PlacedOrder,
    /// The broker's order id in the event
    pub broker_order_id: Option<&'a str>,
    /// The event name (`fill`, `canceled`, ...)
    pub event: &'a str,
    /// The broker's order status after the event
    pub order_status: Option<&'a str>,
    /// The mapped execution status, when the event changes it
    pub execution_status: Option<&'a str>,
    /// This fill's quantity
    pub qty: Option<Decimal>,
    /// This fill's price
    pub price: Option<Decimal>,
    /// The position after the event
    pub position_qty: Option<Decimal>,
    /// Cumulative filled quantity of the order
    pub filled_qty: Option<Decimal>,
    /// Average fill price of the order
    pub filled_avg_price: Option<Decimal>,
    /// When the broker says it happened
    pub event_at: Option<DateTime<Utc>>,
    /// The native event
    pub body: &'a Value,
    /// The order the event's order replaced (Alpaca's `replaces`): when it is the one
    /// recorded, the execution follows the replacement (a replace whose answer was lost)
    pub replaces: Option<&'a str>,
}

/// What recording an event changed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EventApplied {
    /// The decision's status afterwards
    pub decision_status: String,
    /// The execution's status afterwards
    pub execution_status: Option<String>,
    /// A fill event's quantity not counted before, and its price: the event's own, or the
    /// one that makes the order's average right when part of the fill was counted already (a
    /// quantity of zero: all of it was)
    pub fill: Option<(Decimal, Option<Decimal>)>,
}

/// Records `e` once: a second event with the same key changes nothing and returns `None`.
/// Otherwise, in the same statement, the execution takes the event's cumulative fill and status
/// (a status never moves back from a final one), and the decision becomes cancelled when the
/// strategy's own cancel completed, or failed when the broker rejected the order.
pub async fn record_order_event(
    db: &impl Db,
    e: &OrderEvent<'_>,
) -> Result<Option<EventApplied>, StoreError> {
    let statement = db
        .statement(RECORD_ORDER_EVENT, &[])
        .await
        .map_err(StoreError::new("preparing a broker order event"))?;
    let row = db
        .client()
        .query_opt(
            &statement,
            &[
                &e.broker,
                &e.account,
                &e.event_key,
                &e.order.decision_pk,
                &e.broker_order_id,
                &e.event,
                &e.order_status,
                &e.qty,
                &e.price,
                &e.position_qty,
                &e.event_at,
                e.body,
                &e.execution_status,
                &e.filled_qty,
                &e.filled_avg_price,
                &e.order.execution_pk,
                &e.replaces,
            ],
        )
        .await
        .map_err(StoreError::new("recording a broker order event"))?;
    let Some(row) = row else { return Ok(None) };
    let inserted: Option<i64> = row.get(0);
    if inserted.is_none() {
        return Ok(None);
    }
    // the quantity and price are bounded by the statement, so they always fit a Decimal; an
    // error is still an error, never a panic of the committing task
    let fill_qty: Option<Decimal> = row
        .try_get(3)
        .map_err(StoreError::new("reading a broker order event"))?;
    let fill_price: Option<Decimal> = row
        .try_get(4)
        .map_err(StoreError::new("reading a broker order event"))?;
    Ok(Some(EventApplied {
        execution_status: row.get(1),
        decision_status: row.get::<_, Option<String>>(2).unwrap_or_default(),
        fill: fill_qty.map(|q| (q, fill_price)),
    }))
}

/// When the newest event of `account` recorded from `broker` happened (recovery lists orders
/// changed since then after a reconnect).
pub async fn last_event_at(
    client: &impl GenericClient,
    broker: &str,
    account: &str,
) -> Result<Option<DateTime<Utc>>, StoreError> {
    let row = client
        .query_one(
            "SELECT max(event_at) FROM broker_order_events WHERE broker = $1 AND account = $2",
            &[&broker, &account],
        )
        .await
        .map_err(StoreError::new("reading the last broker event"))?;
    Ok(row.get(0))
}
