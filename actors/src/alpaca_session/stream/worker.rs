//! The stream's workers: each holds an order's events back while its submission is in flight,
//! finds the order, records each event once (its fill counted once) and tells the strategy.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use chrono::{DateTime, Utc};
use rust_decimal::Decimal;
use serde_json::Value;
use tokio::sync::{mpsc, watch};

use super::catch_up::look_up_later;
use super::{RETRY_MAX, Received, dead_letter, event_at, event_ids, us};
use crate::alpaca_session::error::SessionError;
use crate::alpaca_session::mapping::{decimal, decision_of, execution_status, is_known_status};
use crate::alpaca_session::orders::{BROKER, SessionCtx};
use crate::domain::PlacedOrder;
use crate::domain::{ExecutionFields, RawJson, Side, StrategyEvent, TradeLogEvent};
use crate::store::{self, group, order_events::OrderEvent};

/// The decision an event is about, when it is one of ours by its client order id.
pub(super) fn decision_of_event(r: &Received) -> Option<uuid::Uuid> {
    r.value["data"]["order"]["client_order_id"]
        .as_str()
        .and_then(decision_of)
}

pub(super) fn in_flight(ctx: &SessionCtx, decision: uuid::Uuid) -> bool {
    ctx.in_flight.lock().is_ok_and(|f| f.contains(&decision))
}

/// Handles the events of the orders that hash to it, each order's in order. An event of an
/// order whose submission is still in flight is parked (with every later event of that order)
/// until the submission is recorded, so it applies to the execution the answer records; the
/// worker meanwhile goes on with other orders. A submission leaves `in_flight` only once its
/// outcome is committed (or could not be, and is being reconciled), so it is waited for as long
/// as it takes, never a fixed time.
pub(super) async fn worker(
    ctx: Arc<SessionCtx>,
    mut rx: mpsc::UnboundedReceiver<Received>,
    mut closing: watch::Receiver<bool>,
    workers: Vec<mpsc::UnboundedSender<Received>>,
) {
    let mut parked: Vec<(uuid::Uuid, std::collections::VecDeque<Received>)> = Vec::new();
    loop {
        let submitted = ctx.submitted.notified();
        tokio::pin!(submitted);
        submitted.as_mut().enable();
        // released first: a submission may have been recorded since the last look
        let mut i = 0;
        while i < parked.len() {
            if in_flight(&ctx, parked[i].0) {
                i += 1;
                continue;
            }
            let (_, queue) = parked.remove(i);
            for r in queue {
                handle(&ctx, &r, &workers).await;
            }
        }
        let waiting = !parked.is_empty();
        let received = tokio::select! {
            biased;
            received = rx.recv() => received,
            _ = closing.wait_for(|c| *c) => None,
            () = &mut submitted, if waiting => continue,
            () = tokio::time::sleep(Duration::from_millis(100)), if waiting => continue,
        };
        let Some(r) = received else { break };
        match decision_of_event(&r) {
            Some(d) if parked.iter().any(|(p, _)| *p == d) => {
                if let Some((_, queue)) = parked.iter_mut().find(|(p, _)| *p == d) {
                    queue.push_back(r);
                }
            }
            Some(d) if in_flight(&ctx, d) => parked.push((d, [r].into())),
            _ => handle(&ctx, &r, &workers).await,
        }
    }
    // stopping: every event received is recorded now, or dead-lettered; nothing waits
    for (_, queue) in parked {
        for r in queue {
            handle(&ctx, &r, &workers).await;
        }
    }
    while let Ok(r) = rx.try_recv() {
        handle(&ctx, &r, &workers).await;
    }
}

/// Finds the order an event is about (were its submission in flight, the worker parked the
/// event until it was recorded). "Not ours" (`Ok(None)`) is decided only on the database's
/// answer: while it is away the look-up is retried. `Err` only when the gateway is stopping.
pub(super) async fn find_order(
    ctx: &SessionCtx,
    order: &Value,
) -> Result<Option<PlacedOrder>, SessionError> {
    let decision = order["client_order_id"].as_str().and_then(decision_of);
    let broker_id = order["id"].as_str();
    if decision.is_none() && broker_id.is_none() {
        return Ok(None);
    }
    let mut pause = Duration::from_millis(100);
    loop {
        let found = async {
            let client = ctx.pool.get().await?;
            Ok::<_, SessionError>(match (decision, broker_id) {
                (Some(d), _) => store::orders::order_by_decision(&*client, d).await?,
                (None, Some(id)) => store::orders::order_by_broker_id(&*client, id).await?,
                (None, None) => None,
            })
        }
        .await;
        match found {
            Ok(found) => return Ok(found),
            Err(e) if ctx.closing.load(Ordering::SeqCst) => return Err(e),
            Err(e) => {
                tracing::warn!(account = %ctx.account, error = %e,
                    "the order of a trade update cannot be read yet; retrying");
                tokio::time::sleep(pause).await;
                pause = (pause * 2).min(RETRY_MAX);
            }
        }
    }
}

/// One trade_updates event (already on the trade log): recorded once, its fill counted once,
/// pushed to the strategy.
pub(crate) async fn handle(
    ctx: &SessionCtx,
    r: &Received,
    workers: &[mpsc::UnboundedSender<Received>],
) {
    let value = &r.value;
    let data = &value["data"];
    let Some(event) = data["event"].as_str().filter(|e| !e.is_empty()) else {
        dead_letter(ctx, r, "the update names no event (`data.event`)");
        return;
    };
    let order = &data["order"];
    let status = order["status"].as_str();
    let broker_id = order["id"].as_str();
    let cl = order["client_order_id"].as_str().unwrap_or("");
    let event_at = event_at(data);
    let is_fill = matches!(event, "fill" | "partial_fill");
    let qty = decimal(data.get("qty"));
    let price = decimal(data.get("price"));
    let filled_qty = decimal(order.get("filled_qty"));
    let side = match order["side"].as_str() {
        Some("sell") => Some(Side::Sell),
        Some("buy") => Some(Side::Buy),
        _ => None,
    };
    let known = status.is_none_or(is_known_status);
    if !known {
        tracing::warn!(account = %ctx.account, event, status = status.unwrap_or(""),
            "unknown Alpaca order status: logged, the execution keeps its status");
        metrics::counter!("tradegate_alpaca_unknown_statuses_total").increment(1);
    }
    let row = match find_order(ctx, order).await {
        Ok(Some(row)) if row.execution_pk.is_none() => {
            // the decision's outcome is being reconciled (its answer could not be stored, or
            // this gateway restarted around the send): the look-up records the order as the
            // broker holds it, this event included
            dead_letter(
                ctx,
                r,
                "the order has no execution recorded yet; it is looked up by its client order id",
            );
            ctx.reconcile.notify_one();
            return;
        }
        Ok(Some(row)) => row,
        Ok(None) => {
            tracing::info!(account = %ctx.account, event, order = broker_id.unwrap_or(""),
                "event of an order that is not ours: logged");
            return;
        }
        Err(e) => {
            dead_letter(
                ctx,
                r,
                &format!("the gateway stopped before the database answered: {e}"),
            );
            return;
        }
    };
    let key = match data["execution_id"].as_str() {
        Some(id) if !id.is_empty() => id.to_string(),
        _ => format!(
            "{}:{event}:{}",
            broker_id.unwrap_or(cl),
            data["timestamp"].as_str().unwrap_or("")
        ),
    };
    // the order an execution follows after a replace is the replacement: the replaced one's
    // last word (`replaced`) changes nothing
    let execution_status = status
        .filter(|s| *s != "replaced")
        .and_then(execution_status)
        .or(match event {
            "fill" => Some("filled"),
            "partial_fill" => Some("partial_fill"),
            "canceled" | "expired" => Some("cancelled"),
            "rejected" => Some("rejected"),
            _ => None,
        });
    let owned = Arc::new(EventRecord {
        account: ctx.account.clone(),
        key: key.clone(),
        order: row.clone(),
        broker_order_id: broker_id.map(str::to_string),
        event: event.to_string(),
        order_status: status.map(str::to_string),
        execution_status,
        qty: if is_fill { qty } else { None },
        price: if is_fill { price } else { None },
        position_qty: decimal(data.get("position_qty")),
        filled_qty,
        filled_avg_price: decimal(order.get("filled_avg_price")),
        event_at,
        body: value.clone(),
        replaces: order["replaces"].as_str().map(str::to_string),
    });
    let work = group::work(move |tx| {
        let e = Arc::clone(&owned);
        Box::pin(async move { store::order_events::record_order_event(tx, &e.as_event()).await })
    });
    let mut pause = Duration::from_millis(100);
    let applied = loop {
        match ctx.events.write(Arc::clone(&work)).await {
            Ok(applied) => break applied,
            Err(e) if e.refused => {
                dead_letter(ctx, r, &format!("the database refused it: {e}"));
                if !r.recovered
                    && let Some(id) = broker_id
                {
                    // the order's state as the broker holds it, recorded instead (once: a
                    // recovered event the database refuses is not looked up again)
                    look_up_later(ctx, id, workers);
                }
                return;
            }
            Err(e) if e.stopped || ctx.closing.load(Ordering::SeqCst) => {
                dead_letter(
                    ctx,
                    r,
                    &format!("the gateway stopped before it could be recorded: {e}"),
                );
                return;
            }
            Err(e) => {
                metrics::counter!("tradegate_alpaca_event_write_retries_total").increment(1);
                tracing::warn!(account = %ctx.account, key, error = %e,
                    "a trade update could not be recorded yet; retrying");
                tokio::time::sleep(pause).await;
                pause = (pause * 2).min(RETRY_MAX);
            }
        }
    };
    let Some(applied) = applied else {
        metrics::counter!("tradegate_alpaca_duplicate_events_total").increment(1);
        tracing::debug!(account = %ctx.account, key, "duplicate trade update ignored");
        return;
    };
    metrics::counter!("tradegate_alpaca_trade_updates_total", "event" => event.to_string())
        .increment(1);
    // an order that reached its final state here, or filled more after it (a look-up or the
    // submission's answer may have recorded the final state first): the account's positions
    // are asked again
    let is_final =
        |status: Option<&str>| matches!(status, Some("filled" | "rejected" | "cancelled"));
    let counted_fill = applied.fill.is_some_and(|(q, _)| q > Decimal::ZERO);
    if is_final(applied.execution_status.as_deref())
        && (!is_final(row.execution_status.as_deref()) || counted_fill)
    {
        crate::alpaca_session::positions::positions_due(ctx);
    }
    // the part of the fill not counted before (a fill the catch-up already recorded counts
    // nothing again), at the price that keeps the order's average right
    let counted = applied.fill.filter(|(q, _)| *q > Decimal::ZERO);
    if let Some((last_qty, last_px)) = counted {
        let ord_qty = decimal(order.get("qty"));
        let mut exec = TradeLogEvent::api_event_execution(
            &event_ids(&ctx.account, order),
            &ExecutionFields {
                side,
                last_px,
                last_qty: Some(last_qty),
                leaves_qty: ord_qty.zip(filled_qty).and_then(|(q, f)| q.checked_sub(f)),
                ord_qty,
                ord_px: decimal(order.get("limit_price")),
                exchange_ts_us: event_at.map(us),
                ..ExecutionFields::default()
            },
            RawJson::from_value(value),
        )
        .with_source(BROKER);
        exec.local_ts_us = us(r.at);
        if let Some(log) = &ctx.trade_log {
            log.log(exec);
        }
    }
    ctx.hub.push(
        &row.strategy,
        StrategyEvent::OrderUpdate {
            decision_id: row.decision_id,
            event: event.to_string(),
            status: status.map(str::to_string),
            broker_order_id: broker_id.map(str::to_string),
            filled_qty,
        },
    );
    if let Some((qty, price)) = counted
        && let Some(price) = price
    {
        ctx.hub.push(
            &row.strategy,
            StrategyEvent::Fill {
                decision_id: row.decision_id,
                qty,
                price,
                filled_qty,
                position_qty: decimal(data.get("position_qty")),
                partial: event == "partial_fill",
            },
        );
    }
}

/// An event as the group commit holds it until it is written.
pub(super) struct EventRecord {
    pub(super) account: String,
    pub(super) key: String,
    pub(super) order: PlacedOrder,
    pub(super) broker_order_id: Option<String>,
    pub(super) event: String,
    pub(super) order_status: Option<String>,
    pub(super) execution_status: Option<&'static str>,
    pub(super) qty: Option<Decimal>,
    pub(super) price: Option<Decimal>,
    pub(super) position_qty: Option<Decimal>,
    pub(super) filled_qty: Option<Decimal>,
    pub(super) filled_avg_price: Option<Decimal>,
    pub(super) event_at: Option<DateTime<Utc>>,
    pub(super) body: Value,
    pub(super) replaces: Option<String>,
}

impl EventRecord {
    pub(super) fn as_event(&self) -> OrderEvent<'_> {
        OrderEvent {
            broker: BROKER,
            account: &self.account,
            event_key: &self.key,
            order: &self.order,
            broker_order_id: self.broker_order_id.as_deref(),
            event: &self.event,
            order_status: self.order_status.as_deref(),
            execution_status: self.execution_status,
            qty: self.qty,
            price: self.price,
            position_qty: self.position_qty,
            filled_qty: self.filled_qty,
            filled_avg_price: self.filled_avg_price,
            event_at: self.event_at,
            body: &self.body,
            replaces: self.replaces.as_deref(),
        }
    }
}
