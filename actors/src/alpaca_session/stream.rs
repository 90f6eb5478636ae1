//! The trade_updates stream: authenticate, listen, record each event once (execution id
//! dedupe), tell the strategy; on disconnect a connectivity event, reconnect with backoff and
//! jitter, then recover what was missed by listing orders.

use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use futures_util::{SinkExt, StreamExt};
use reqwest::Method;
use rust_decimal::Decimal;
use serde_json::{Value, json};
use tokio::sync::mpsc;
use tokio_tungstenite::tungstenite::Message;

use super::mapping::{decimal, decision_of, execution_status, is_known_status};
use super::orders::{BROKER, SessionCtx};
use crate::domain::{ExecutionFields, OrderIds, RawJson, Side, StrategyEvent, TradeLogEvent};
use crate::store::{self, group, orders::OrderEvent, orders::OrderRow};
use crate::tls::ClientTls;

/// Events are handled by this many workers, each owning the orders that hash to it, so one
/// order's events stay in order while different orders proceed in parallel.
const WORKERS: usize = 4;
/// How long an event waits for its order's submission to be recorded.
const AWAIT_SUBMISSION: Duration = Duration::from_secs(10);

/// Runs the stream for good: connect, listen, handle, reconnect.
pub async fn run(ctx: Arc<SessionCtx>, url: String, tls: ClientTls, max_backoff: Duration) {
    let mut workers = Vec::with_capacity(WORKERS);
    for _ in 0..WORKERS {
        let (tx, rx) = mpsc::unbounded_channel::<Value>();
        tokio::spawn(worker(Arc::clone(&ctx), rx));
        workers.push(tx);
    }
    let mut failures: u32 = 0;
    let mut connected_once = false;
    loop {
        match session(&ctx, &url, &tls, &workers, connected_once).await {
            Ok(()) => {
                failures = 0;
                connected_once = true;
                connectivity(&ctx, "disconnected", json!({"reason": "stream closed"}));
            }
            Err(e) => {
                failures = failures.saturating_add(1);
                if e.connected {
                    connected_once = true;
                    connectivity(&ctx, "disconnected", json!({"reason": e.message}));
                } else {
                    connectivity(&ctx, "connect_failed", json!({"reason": e.message}));
                }
                tracing::warn!(account = %ctx.account, error = %e.message, "trade_updates stream down");
            }
        }
        let delay = backoff(failures, max_backoff);
        tokio::time::sleep(delay).await;
    }
}

/// 250 ms doubling per failure up to `max`, plus up to 20 % jitter.
fn backoff(failures: u32, max: Duration) -> Duration {
    let base = Duration::from_millis(250)
        .saturating_mul(1u32 << failures.min(16))
        .min(max);
    let jitter = rand::random_range(0..=base.as_millis() as u64 / 5);
    base + Duration::from_millis(jitter)
}

fn connectivity(ctx: &SessionCtx, event: &str, details: Value) {
    metrics::counter!("tradegate_alpaca_stream_events_total", "event" => event.to_string())
        .increment(1);
    if let Some(log) = &ctx.trade_log {
        log.log(TradeLogEvent::connectivity(
            BROKER,
            Some(ctx.account.clone()),
            RawJson::from_value(
                &json!({"stream": "trade_updates", "event": event, "details": details}),
            ),
        ));
    }
}

struct StreamError {
    connected: bool,
    message: String,
}

fn err(connected: bool, message: impl Into<String>) -> StreamError {
    StreamError {
        connected,
        message: message.into(),
    }
}

/// JSON of a text or binary frame (the paper stream sends binary).
fn frame_json(msg: &Message) -> Option<Result<Value, String>> {
    let bytes: &[u8] = match msg {
        Message::Text(t) => t.as_bytes(),
        Message::Binary(b) => b,
        _ => return None,
    };
    Some(serde_json::from_slice(bytes).map_err(|e| format!("not JSON: {e}")))
}

async fn session(
    ctx: &Arc<SessionCtx>,
    url: &str,
    tls: &ClientTls,
    workers: &[mpsc::UnboundedSender<Value>],
    reconnect: bool,
) -> Result<(), StreamError> {
    let (mut ws, _) = tokio::time::timeout(
        Duration::from_secs(10),
        tokio_tungstenite::connect_async_tls_with_config(
            url,
            Some(crate::ws_client_config()),
            true,
            Some(tls.ws_connector()),
        ),
    )
    .await
    .map_err(|_| err(false, "connect timed out"))?
    .map_err(|e| match e {
        tokio_tungstenite::tungstenite::Error::Tls(t) => {
            err(false, format!("TLS handshake with {url} failed: {t}"))
        }
        e => err(false, e.to_string()),
    })?;
    let auth = json!({"action": "authenticate", "data": {
        "key_id": ctx.credentials.key_id(),
        "secret_key": ctx.credentials.secret_key(),
    }});
    ws.send(Message::text(auth.to_string()))
        .await
        .map_err(|e| err(false, e.to_string()))?;
    let authorized = next_json(&mut ws).await.map_err(|m| err(false, m))?;
    if authorized["stream"] != "authorization" || authorized["data"]["status"] != "authorized" {
        return Err(err(false, format!("not authorized: {authorized}")));
    }
    let listen = json!({"action": "listen", "data": {"streams": ["trade_updates"]}});
    ws.send(Message::text(listen.to_string()))
        .await
        .map_err(|e| err(false, e.to_string()))?;
    let listening = next_json(&mut ws).await.map_err(|m| err(false, m))?;
    if listening["stream"] != "listening" {
        return Err(err(false, format!("listen was not confirmed: {listening}")));
    }
    connectivity(
        ctx,
        if reconnect {
            "reconnected"
        } else {
            "connected"
        },
        json!({"url": url}),
    );
    tracing::info!(account = %ctx.account, "trade_updates stream listening");
    if reconnect {
        // events missed while disconnected: the orders changed since the last one seen
        let ctx = Arc::clone(ctx);
        let workers = workers.to_vec();
        tokio::spawn(async move {
            if let Err(e) = recover_missed(&ctx, &workers).await {
                tracing::warn!(account = %ctx.account, error = %e, "recovery after reconnect failed");
            }
        });
    }
    while let Some(msg) = ws.next().await {
        let msg = msg.map_err(|e| err(true, e.to_string()))?;
        if let Message::Close(_) = msg {
            return Ok(());
        }
        let Some(parsed) = frame_json(&msg) else {
            continue;
        };
        match parsed {
            Ok(value) => dispatch(workers, value),
            Err(e) => {
                tracing::warn!(account = %ctx.account, error = %e, "unreadable stream frame ignored")
            }
        }
    }
    Ok(())
}

async fn next_json<S>(ws: &mut S) -> Result<Value, String>
where
    S: futures_util::Stream<Item = Result<Message, tokio_tungstenite::tungstenite::Error>> + Unpin,
{
    loop {
        let msg = tokio::time::timeout(Duration::from_secs(10), ws.next())
            .await
            .map_err(|_| "no answer within 10 s".to_string())?
            .ok_or("the stream closed")?
            .map_err(|e| e.to_string())?;
        if let Some(parsed) = frame_json(&msg) {
            return parsed;
        }
    }
}

fn dispatch(workers: &[mpsc::UnboundedSender<Value>], value: Value) {
    let key = value["data"]["order"]["id"]
        .as_str()
        .unwrap_or("")
        .to_string();
    let shard = key
        .bytes()
        .fold(0usize, |h, b| h.wrapping_mul(31).wrapping_add(b as usize))
        % workers.len();
    let _ = workers[shard].send(value);
}

async fn worker(ctx: Arc<SessionCtx>, mut rx: mpsc::UnboundedReceiver<Value>) {
    while let Some(value) = rx.recv().await {
        if value["stream"] != "trade_updates" {
            tracing::debug!(account = %ctx.account, message = %value, "stream message ignored");
            continue;
        }
        handle(&ctx, &value).await;
    }
}

/// Finds the order an event is about; waits a while for a submission still being recorded.
async fn find_order(ctx: &SessionCtx, order: &Value) -> Option<OrderRow> {
    let deadline = tokio::time::Instant::now() + AWAIT_SUBMISSION;
    let decision = order["client_order_id"].as_str().and_then(decision_of);
    let broker_id = order["id"].as_str();
    loop {
        if let Some(d) = decision {
            // our own submission is still on its way: wait for it instead of asking the
            // database over and over
            let submitted = ctx.submitted.notified();
            tokio::pin!(submitted);
            submitted.as_mut().enable();
            let in_flight = ctx.in_flight.lock().is_ok_and(|f| f.contains(&d));
            if in_flight && tokio::time::Instant::now() < deadline {
                let _ = tokio::time::timeout(Duration::from_millis(100), submitted).await;
                continue;
            }
        }
        let found = async {
            let client = ctx.pool.get().await.ok()?;
            match decision {
                Some(d) => store::orders::order_by_decision(&*client, d)
                    .await
                    .ok()
                    .flatten(),
                None => match broker_id {
                    Some(id) => store::orders::order_by_broker_id(&*client, id)
                        .await
                        .ok()
                        .flatten(),
                    None => None,
                },
            }
        }
        .await;
        match found {
            Some(row) if row.execution_pk.is_some() => return Some(row),
            Some(row) if tokio::time::Instant::now() >= deadline => return Some(row),
            None if decision.is_none() || tokio::time::Instant::now() >= deadline => return None,
            _ => tokio::time::sleep(Duration::from_millis(20)).await,
        }
    }
}

/// One trade_updates event: logged, recorded once, pushed to the strategy.
pub(crate) async fn handle(ctx: &SessionCtx, value: &Value) {
    let data = &value["data"];
    let event = data["event"].as_str().unwrap_or("");
    let order = &data["order"];
    let status = order["status"].as_str();
    let broker_id = order["id"].as_str();
    let cl = order["client_order_id"].as_str().unwrap_or("");
    let symbol = order["symbol"].as_str().unwrap_or("");
    let event_at = data["timestamp"]
        .as_str()
        .and_then(|t| DateTime::parse_from_rfc3339(t).ok())
        .map(|t| t.with_timezone(&Utc));
    let is_fill = matches!(event, "fill" | "partial_fill");
    let qty = decimal(data.get("qty"));
    let price = decimal(data.get("price"));
    let filled_qty = decimal(order.get("filled_qty"));
    let side = match order["side"].as_str() {
        Some("sell") => Some(Side::Sell),
        Some("buy") => Some(Side::Buy),
        _ => None,
    };
    let ids = OrderIds {
        cl_ord_id: Some(cl.to_string()),
        native_ord_id: broker_id.map(str::to_string),
        account_id: Some(ctx.account.clone()),
        symbol: Some(symbol.to_string()),
        ..OrderIds::default()
    };
    let raw = RawJson::from_value(value);
    let known = status.is_none_or(is_known_status);
    if !known {
        tracing::warn!(account = %ctx.account, event, status = status.unwrap_or(""),
            "unknown Alpaca order status: logged, the execution keeps its status");
        metrics::counter!("tradegate_alpaca_unknown_statuses_total").increment(1);
    }
    let Some(row) = find_order(ctx, order).await else {
        if let Some(log) = &ctx.trade_log {
            log.log(
                TradeLogEvent::api_event_order_update(&ids, None, event_at.map(us), raw)
                    .with_source(BROKER),
            );
        }
        tracing::info!(account = %ctx.account, event, order = broker_id.unwrap_or(""), "event of an order that is not ours: logged");
        return;
    };
    let key = match data["execution_id"].as_str() {
        Some(id) if !id.is_empty() => id.to_string(),
        _ => format!(
            "{}:{event}:{}",
            broker_id.unwrap_or(cl),
            data["timestamp"].as_str().unwrap_or("")
        ),
    };
    let execution_status = status.and_then(execution_status).or(match event {
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
    });
    let recorded = ctx
        .events
        .write(group::work(move |tx| {
            let e = Arc::clone(&owned);
            Box::pin(async move { store::orders::record_order_event(tx, &e.as_event()).await })
        }))
        .await;
    let mut events = Vec::with_capacity(2);
    if is_fill {
        let exec = ExecutionFields {
            side,
            last_px: price,
            last_qty: qty,
            leaves_qty: decimal(order.get("qty"))
                .zip(filled_qty)
                .map(|(q, f)| q - f),
            ord_qty: decimal(order.get("qty")),
            ord_px: decimal(order.get("limit_price")),
            exchange_ts_us: event_at.map(us),
            ..ExecutionFields::default()
        };
        events.push(TradeLogEvent::api_event_execution(&ids, &exec, raw.clone()));
    }
    events.push(TradeLogEvent::api_event_order_update(
        &ids,
        None,
        event_at.map(us),
        raw,
    ));
    match recorded {
        Ok(Some(_)) => {}
        Ok(None) => {
            metrics::counter!("tradegate_alpaca_duplicate_events_total").increment(1);
            tracing::debug!(account = %ctx.account, key, "duplicate trade update ignored");
            return;
        }
        Err(e) => {
            // the trail keeps it even so (the trade log spills when the database is away),
            // marked as not applied to the order's records
            log_events(
                ctx,
                events
                    .into_iter()
                    .map(|mut event| {
                        event.error_code = Some("not_recorded".into());
                        event.error_message = Some(format!("not applied to the order: {e}"));
                        event
                    })
                    .collect(),
            );
            tracing::error!(account = %ctx.account, key, error = %e,
                "a trade update could not be recorded; the next reconnect's recovery lists the order again");
            return;
        }
    }
    log_events(ctx, events);
    metrics::counter!("tradegate_alpaca_trade_updates_total", "event" => event.to_string())
        .increment(1);
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
    if is_fill && let (Some(qty), Some(price)) = (qty, price) {
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

fn log_events(ctx: &SessionCtx, events: Vec<TradeLogEvent>) {
    if let Some(log) = &ctx.trade_log {
        log.log_all(events.into_iter().map(|e| e.with_source(BROKER)));
    }
}

fn us(t: DateTime<Utc>) -> i64 {
    t.timestamp_micros()
}

/// After a reconnect: lists the orders changed since the last event seen (and every open
/// one) and turns what the stream missed into events — a fill the stream did not deliver is
/// recorded once, under the key `recovered:<order id>:<filled qty>`.
async fn recover_missed(
    ctx: &Arc<SessionCtx>,
    workers: &[mpsc::UnboundedSender<Value>],
) -> Result<(), String> {
    let since = {
        let client = ctx.pool.get().await.map_err(|e| e.to_string())?;
        store::orders::last_event_at(&**client, BROKER, &ctx.account)
            .await
            .map_err(|e| e.to_string())?
    };
    let after = since.unwrap_or_else(Utc::now) - chrono::Duration::minutes(5);
    let mut orders: Vec<Value> = Vec::new();
    for query in [
        vec![
            ("status".to_string(), "all".to_string()),
            (
                "after".to_string(),
                after.to_rfc3339_opts(chrono::SecondsFormat::Micros, true),
            ),
            ("direction".to_string(), "asc".to_string()),
            ("limit".to_string(), "500".to_string()),
        ],
        vec![
            ("status".to_string(), "open".to_string()),
            ("limit".to_string(), "500".to_string()),
        ],
    ] {
        let ex = ctx
            .rest
            .call(Method::GET, "/v2/orders", &query, None)
            .await
            .map_err(|e| e.to_string())?;
        if !ex.ok() {
            return Err(format!(
                "listing orders answered {}: {}",
                ex.status, ex.body
            ));
        }
        if let Some(list) = ex.body.as_array() {
            orders.extend(list.iter().cloned());
        }
    }
    let mut seen = std::collections::HashSet::new();
    let mut recovered = 0;
    for order in orders {
        let Some(id) = order["id"].as_str().map(str::to_string) else {
            continue;
        };
        if !seen.insert(id.clone()) {
            continue;
        }
        let Some(decision) = order["client_order_id"].as_str().and_then(decision_of) else {
            continue;
        };
        let row = {
            let client = ctx.pool.get().await.map_err(|e| e.to_string())?;
            store::orders::order_by_decision(&*client, decision)
                .await
                .map_err(|e| e.to_string())?
        };
        let Some(row) = row else { continue };
        let filled = decimal(order.get("filled_qty")).unwrap_or(Decimal::ZERO);
        let status = order["status"].as_str().unwrap_or("");
        let now = Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Micros, true);
        if filled > row.filled_qty {
            let event = if status == "filled" {
                "fill"
            } else {
                "partial_fill"
            };
            dispatch(
                workers,
                json!({
                    "stream": "trade_updates",
                    "recovered": true,
                    "data": {
                        "event": event,
                        "execution_id": format!("recovered:{id}:{}", filled.normalize()),
                        "order": order,
                        "qty": (filled - row.filled_qty).normalize().to_string(),
                        "price": order["filled_avg_price"],
                        "timestamp": order["filled_at"].as_str().unwrap_or(&now),
                    }
                }),
            );
            recovered += 1;
        } else if matches!(status, "canceled" | "expired" | "rejected")
            && row
                .execution_status
                .as_deref()
                .and_then(|s| (s != "cancelled" && s != "rejected").then_some(()))
                .is_some()
        {
            dispatch(
                workers,
                json!({
                    "stream": "trade_updates",
                    "recovered": true,
                    "data": {
                        "event": status,
                        "execution_id": format!("recovered:{id}:{status}"),
                        "order": order,
                        "timestamp": order["updated_at"].as_str().unwrap_or(&now),
                    }
                }),
            );
            recovered += 1;
        }
    }
    tracing::info!(account = %ctx.account, recovered, "orders reconciled after reconnect");
    Ok(())
}

/// An event as the group commit holds it until it is written.
struct EventRecord {
    account: String,
    key: String,
    order: OrderRow,
    broker_order_id: Option<String>,
    event: String,
    order_status: Option<String>,
    execution_status: Option<&'static str>,
    qty: Option<Decimal>,
    price: Option<Decimal>,
    position_qty: Option<Decimal>,
    filled_qty: Option<Decimal>,
    filled_avg_price: Option<Decimal>,
    event_at: Option<DateTime<Utc>>,
    body: Value,
}

impl EventRecord {
    fn as_event(&self) -> OrderEvent<'_> {
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
        }
    }
}
