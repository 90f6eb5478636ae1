//! The catch-up after every connect: open and recent orders listed, working orders looked up
//! by id, what changed handed to the workers as recovered events; and the look-up after a
//! refused write.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use chrono::{DateTime, Utc};
use reqwest::Method;
use rust_decimal::Decimal;
use serde_json::{Value, json};
use tokio::sync::mpsc;

use super::{CATCH_UP_MARGIN, PAGE, Received, dead_letter, dispatch, log_received, received_row};
use crate::alpaca_session::error::SessionError;
use crate::alpaca_session::mapping::{decimal, decision_of, listed_order};
use crate::alpaca_session::orders::{BROKER, SessionCtx};
use crate::domain::PlacedOrder;
use crate::store;

/// Looks order `id` up at the broker now and hands what it shows to the worker that owns the
/// order, as a recovered event (after a pushed event of it could not be recorded).
pub(super) fn look_up_later(
    ctx: &SessionCtx,
    id: &str,
    workers: &[mpsc::UnboundedSender<Received>],
) {
    let (rest, id, workers) = (ctx.rest.clone(), id.to_string(), workers.to_vec());
    let (account, trade_log) = (ctx.account.clone(), ctx.trade_log.clone());
    tokio::spawn(async move {
        let path = format!("/v2/orders/{id}");
        let ex = match rest.call(Method::GET, &path, &[], None).await {
            Ok(ex) if ex.ok() => ex,
            Ok(ex) => {
                tracing::warn!(%account, order = %id, status = ex.status,
                    "looking up an order whose update was refused failed; the next catch-up lists it");
                return;
            }
            Err(e) => {
                tracing::warn!(%account, order = %id, error = %e,
                    "looking up an order whose update was refused failed; the next catch-up lists it");
                return;
            }
        };
        let status = ex.body["status"].as_str().unwrap_or("").to_string();
        let filled = decimal(ex.body.get("filled_qty")).unwrap_or(Decimal::ZERO);
        let event = match status.as_str() {
            "filled" => "fill".to_string(),
            _ if filled > Decimal::ZERO => "partial_fill".to_string(),
            other => other.to_string(),
        };
        let received = Received {
            value: json!({"stream": "trade_updates", "recovered": true, "data": {
                "event": event,
                "execution_id": format!("recovered:{id}:{}:{status}", filled.normalize()),
                "timestamp": ex.body["updated_at"],
                "order": ex.body,
            }}),
            at: Utc::now(),
            recovered: true,
        };
        if let Some(log) = &trade_log {
            log.log(received_row(&account, &received));
        }
        let _ = dispatch(&workers, received);
    });
}

/// Records the listed orders that no decision explains as external orders, with an alert for
/// each found for the first time.
pub(crate) async fn record_external(
    ctx: &SessionCtx,
    orders: &[Value],
) -> Result<(), SessionError> {
    let listed: Vec<_> = orders.iter().filter_map(listed_order).collect();
    let mut client = ctx.pool.get().await?;
    let found =
        crate::reconciliation::record_external(&mut **client, BROKER, &ctx.account, &listed)
            .await?;
    if !found.is_empty() {
        tracing::warn!(account = %ctx.account, external = found.len(),
            "orders at the broker that the gateway did not place");
    }
    Ok(())
}

/// The catch-up after a connect, retried until it completes or a newer connect starts its own.
pub(super) async fn catch_up(
    ctx: &Arc<SessionCtx>,
    workers: &[mpsc::UnboundedSender<Received>],
    generation: u64,
) {
    let mut pause = Duration::from_secs(1);
    while ctx.catch_up_generation.load(Ordering::SeqCst) == generation
        && !ctx.closing.load(Ordering::SeqCst)
    {
        match recover_missed(ctx, workers).await {
            Ok(recovered) => {
                tracing::info!(account = %ctx.account, recovered, "orders caught up after connecting");
                ctx.caught_up_generation.store(generation, Ordering::SeqCst);
                // the positions after what the stream missed, reconciled against the last
                // snapshot before it
                crate::alpaca_session::positions::sync_and_reconcile(
                    ctx,
                    if generation == 1 {
                        "start"
                    } else {
                        "reconnect"
                    },
                );
                return;
            }
            Err(e) => {
                tracing::warn!(account = %ctx.account, error = %e, "catch-up failed; retrying");
                tokio::time::sleep(pause).await;
                pause = (pause * 2).min(Duration::from_secs(30));
            }
        }
    }
}

/// Every order of `status` submitted after `after` (all of them when `None`), page by page
/// (Alpaca answers at most 500 per call; a page is asked for from the last submission time
/// seen, so orders submitted in the same instant are not skipped, and repeats are dropped).
pub(crate) async fn list_orders(
    ctx: &SessionCtx,
    status: &str,
    after: Option<DateTime<Utc>>,
    seen: &mut std::collections::HashSet<String>,
) -> Result<Vec<Value>, SessionError> {
    let mut orders = Vec::new();
    let mut cursor = after;
    loop {
        let mut query = vec![
            ("status".to_string(), status.to_string()),
            ("direction".to_string(), "asc".to_string()),
            ("limit".to_string(), PAGE.to_string()),
        ];
        if let Some(c) = cursor {
            query.push((
                "after".to_string(),
                c.to_rfc3339_opts(chrono::SecondsFormat::Nanos, true),
            ));
        }
        let ex = ctx
            .rest
            .call(Method::GET, "/v2/orders", &query, None)
            .await?;
        if !ex.ok() {
            return Err(SessionError::Listing {
                status: ex.status,
                body: ex.body.to_string(),
            });
        }
        let page = ex.body.as_array().cloned().unwrap_or_default();
        let full = page.len() >= PAGE;
        let mut last = None;
        for order in page {
            last = order["submitted_at"]
                .as_str()
                .and_then(|t| DateTime::parse_from_rfc3339(t).ok())
                .map(|t| t.with_timezone(&Utc))
                .or(last);
            if let Some(id) = order["id"].as_str()
                && seen.insert(id.to_string())
            {
                orders.push(order);
            }
        }
        // the next page starts just before the last submission time seen (so orders of that
        // instant are not skipped; the repeats are dropped above); it ends at a page that is
        // not full, or one whose last submission time does not move the cursor on
        let next = last.map(|t| t - chrono::Duration::nanoseconds(1));
        match next {
            Some(n) if full && cursor.is_none_or(|c| n > c) => cursor = Some(n),
            Some(_) if full => {
                tracing::warn!(account = %ctx.account, status,
                    "more than a page of orders submitted in one instant; the rest are looked up by id");
                return Ok(orders);
            }
            _ => return Ok(orders),
        }
    }
}

/// Brings every order that may have changed while no stream listened up to date: each order
/// open at the broker, each submitted since shortly before the newest recorded event (both
/// listed by submission time, Alpaca's only time filter, and paged until done), and each order
/// the gateway holds as working that neither list showed (looked up by id: it ended while no
/// one listened). Each becomes an event handled like a pushed one, by the worker that owns the
/// order; the fill it carries is counted once, when it is recorded, against what is recorded
/// by then (`recovered:<order id>:<filled qty>` keys repeat catch-ups). How many were found
/// changed.
pub(super) async fn recover_missed(
    ctx: &Arc<SessionCtx>,
    workers: &[mpsc::UnboundedSender<Received>],
) -> Result<usize, SessionError> {
    let (since, working) = {
        let client = ctx.pool.get().await?;
        let since = store::order_events::last_event_at(&**client, BROKER, &ctx.account).await?;
        let working = store::orders::working_orders(&**client, &ctx.account).await?;
        (since, working)
    };
    let mut seen = std::collections::HashSet::new();
    let mut orders = list_orders(ctx, "open", None, &mut seen).await?;
    if let Some(since) = since {
        orders.extend(list_orders(ctx, "all", Some(since - CATCH_UP_MARGIN), &mut seen).await?);
    }
    let mut failed = None;
    // each working order, and the orders that replaced it (a replace whose answer was lost)
    let mut chains: Vec<(String, &PlacedOrder)> = working
        .iter()
        .filter_map(|row| {
            let id = row.broker_order_id.as_deref().filter(|id| !id.is_empty())?;
            Some((id.to_string(), row))
        })
        .collect();
    while let Some((id, row)) = chains.pop() {
        if seen.contains(&id) {
            // listed already; its replacement, if any, is listed or looked up below
            if let Some(next) = orders
                .iter()
                .find(|o| o["id"] == id.as_str())
                .and_then(|o| o["replaced_by"].as_str())
                .filter(|next| !seen.contains(*next))
            {
                chains.push((next.to_string(), row));
            }
            continue;
        }
        let path = format!("/v2/orders/{id}");
        match ctx.rest.call(Method::GET, &path, &[], None).await {
            Ok(ex) if ex.ok() => {
                seen.insert(id.clone());
                if let Some(next) = ex.body["replaced_by"]
                    .as_str()
                    .filter(|n| !seen.contains(*n))
                {
                    chains.push((next.to_string(), row));
                }
                orders.push(ex.body);
            }
            Ok(ex) if ex.status == 404 => {
                // nothing to catch up from; the order stays as recorded (and is reported)
                metrics::counter!("tradegate_alpaca_unknown_working_orders_total").increment(1);
                tracing::error!(account = %ctx.account, order = %id, decision = %row.decision_id,
                    "a working order is unknown to the broker");
            }
            // a 429, a 5xx, no answer: the pass is retried; what was found so far is handled
            // first (the keys make a second pass change nothing)
            Ok(ex) => {
                failed = Some(SessionError::OrderLookUp {
                    order: id.clone(),
                    problem: format!(" answered {}: {}", ex.status, ex.body),
                });
                break;
            }
            Err(e) => {
                failed = Some(SessionError::OrderLookUp {
                    order: id.clone(),
                    problem: format!(": {e}"),
                });
                break;
            }
        }
    }

    // what no decision explains is an external order (placed outside the gateway); a failure
    // to record them holds up no recovered fill: the next catch-up or positions.sync lists
    // them again
    if let Err(e) = record_external(ctx, &orders).await {
        tracing::warn!(account = %ctx.account, error = %e,
            "could not compare the listed orders with the decisions; they are compared again next time");
    }
    let mut recovered = 0;
    for order in orders {
        let Some(id) = order["id"].as_str().map(str::to_string) else {
            continue;
        };
        let Some(decision) = order["client_order_id"].as_str().and_then(decision_of) else {
            continue;
        };
        let row = {
            let client = ctx.pool.get().await?;
            store::orders::order_by_decision(&*client, decision).await?
        };
        let Some(row) = row else { continue };
        if row.execution_pk.is_none() {
            // its outcome is being reconciled: the look-up by client order id records the
            // order as listed here, fills included
            ctx.reconcile.notify_one();
            continue;
        }
        let filled = decimal(order.get("filled_qty")).unwrap_or(Decimal::ZERO);
        let status = order["status"].as_str().unwrap_or("").to_string();
        let now = Utc::now();
        let stamp = |field: &str| {
            order[field].as_str().map_or_else(
                || now.to_rfc3339_opts(chrono::SecondsFormat::Micros, true),
                str::to_string,
            )
        };
        // only a hint: the worker counts the fill against what is recorded when it writes
        let data = if filled > row.filled_qty {
            json!({
                "event": if status == "filled" { "fill" } else { "partial_fill" },
                "execution_id": format!("recovered:{id}:{}", filled.normalize()),
                "timestamp": stamp("updated_at"),
                "order": order,
            })
        } else if matches!(status.as_str(), "canceled" | "expired" | "rejected")
            && row
                .execution_status
                .as_deref()
                .is_some_and(|s| s != "cancelled" && s != "rejected")
        {
            json!({
                "event": status,
                "execution_id": format!("recovered:{id}:{status}"),
                "timestamp": stamp("updated_at"),
                "order": order,
            })
        } else if order["replaces"].as_str().is_some()
            && order["replaces"].as_str() == row.broker_order_id.as_deref()
        {
            // it replaced the order recorded (the replace's answer was lost): the execution
            // follows it
            json!({
                "event": "replaced",
                "execution_id": format!("recovered:{id}:replaces"),
                "timestamp": stamp("updated_at"),
                "order": order,
            })
        } else {
            continue;
        };
        if ctx.closing.load(Ordering::SeqCst) {
            return Err(SessionError::Stopping);
        }
        let received = Received {
            value: json!({"stream": "trade_updates", "recovered": true, "data": data}),
            at: now,
            recovered: true,
        };
        log_received(ctx, &received);
        if !dispatch(workers, received.clone()) {
            dead_letter(
                ctx,
                &received,
                "the session stopped before it could be recorded",
            );
        }
        recovered += 1;
    }
    match failed {
        Some(e) => Err(e),
        None => Ok(recovered),
    }
}
