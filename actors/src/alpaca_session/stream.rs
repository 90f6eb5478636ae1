//! The trade_updates stream: authenticate, listen, log each event the moment it is read, record
//! it once (execution id dedupe, and a fill counted once by its cumulative quantity), tell the
//! strategy; on disconnect a connectivity event, reconnect with backoff and jitter. After every
//! connect, the first one included, a catch-up brings every order up to date that may have
//! changed while no stream was listening.
//!
//! Nothing received is dropped: an event is on the trade log before any database work; its
//! database write is retried while the database is away, and an event the database refuses,
//! or one still unwritten when the gateway stops, is logged again as a dead letter with the
//! reason.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use chrono::{DateTime, Utc};
use futures_util::{SinkExt, StreamExt};
use reqwest::Method;
use rust_decimal::Decimal;
use serde_json::{Value, json};
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;
use tokio_tungstenite::tungstenite::Message;

use super::error::SessionError;
use super::mapping::{decimal, decision_of, execution_status, is_known_status};
use super::orders::{BROKER, SessionCtx};
use crate::domain::PlacedOrder;
use crate::domain::{ExecutionFields, OrderIds, RawJson, Side, StrategyEvent, TradeLogEvent};
use crate::store::{self, group, order_events::OrderEvent};
use crate::tls::ClientTls;

/// Events are handled by this many workers, each owning the orders that hash to it, so one
/// order's events stay in order while different orders proceed in parallel.
const WORKERS: usize = 4;
/// Longest pause between attempts to write an event while the database is away.
const RETRY_MAX: Duration = Duration::from_secs(5);
/// Alpaca's largest page of `GET /v2/orders`.
const PAGE: usize = 500;
/// How far before the newest recorded event the catch-up lists orders submitted since (clock
/// differences between the broker and the database).
const CATCH_UP_MARGIN: chrono::Duration = chrono::Duration::minutes(5);

/// One stream message as read off the socket: its JSON and when it was read (the trade log's
/// local timestamp, taken before any database work).
#[derive(Debug, Clone)]
pub(crate) struct Received {
    value: Value,
    at: DateTime<Utc>,
    /// Reconstructed from the broker's record (a catch-up or a look-up), not pushed by it
    recovered: bool,
}

/// The stream's tasks: the reader (connect, listen, reconnect) and the workers that record.
#[derive(Debug)]
pub(crate) struct StreamTasks {
    reader: JoinHandle<()>,
    workers: Vec<JoinHandle<()>>,
    closing: watch::Sender<bool>,
}

impl StreamTasks {
    /// Stops reading, then lets the workers finish every event already received (an event
    /// whose write fails meanwhile becomes a dead letter, not a retry) for up to `deadline`.
    pub(crate) async fn drain(self, ctx: &SessionCtx, deadline: Duration) {
        self.reader.abort();
        let _ = self.reader.await;
        ctx.closing.store(true, Ordering::SeqCst);
        ctx.catch_up_generation.fetch_add(1, Ordering::SeqCst);
        let _ = self.closing.send(true);
        let workers = futures_util::future::join_all(self.workers);
        if tokio::time::timeout(deadline, workers).await.is_err() {
            tracing::error!(account = %ctx.account,
                "the stream's events were not all recorded before the stop deadline; \
                 they are on the trade log, and the next start's catch-up lists their orders");
        }
    }
}

/// Starts the stream for good: connect, listen, handle, reconnect.
pub(crate) fn start(
    ctx: Arc<SessionCtx>,
    url: String,
    tls: ClientTls,
    max_backoff: Duration,
) -> StreamTasks {
    let (closing, closed) = watch::channel(false);
    let mut workers = Vec::with_capacity(WORKERS);
    let mut senders = Vec::with_capacity(WORKERS);
    let mut receivers = Vec::with_capacity(WORKERS);
    for _ in 0..WORKERS {
        let (tx, rx) = mpsc::unbounded_channel::<Received>();
        senders.push(tx);
        receivers.push(rx);
    }
    for rx in receivers {
        workers.push(tokio::spawn(worker(
            Arc::clone(&ctx),
            rx,
            closed.clone(),
            senders.clone(),
        )));
    }
    let reader = tokio::spawn(run(ctx, url, tls, max_backoff, senders));
    StreamTasks {
        reader,
        workers,
        closing,
    }
}

async fn run(
    ctx: Arc<SessionCtx>,
    url: String,
    tls: ClientTls,
    max_backoff: Duration,
    workers: Vec<mpsc::UnboundedSender<Received>>,
) {
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
                    connectivity(
                        &ctx,
                        "disconnected",
                        json!({"reason": e.source.to_string()}),
                    );
                } else {
                    connectivity(
                        &ctx,
                        "connect_failed",
                        json!({"reason": e.source.to_string()}),
                    );
                }
                tracing::warn!(account = %ctx.account, error = %e.source, "trade_updates stream down");
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

/// Why a stream session ended, and whether it had been listening.
struct StreamError {
    connected: bool,
    source: SessionError,
}

fn err(connected: bool, source: impl Into<SessionError>) -> StreamError {
    StreamError {
        connected,
        source: source.into(),
    }
}

/// JSON of a text or binary frame (the paper stream sends binary).
fn frame_json(msg: &Message) -> Option<Result<Value, SessionError>> {
    let bytes: &[u8] = match msg {
        Message::Text(t) => t.as_bytes(),
        Message::Binary(b) => b,
        _ => return None,
    };
    Some(serde_json::from_slice(bytes).map_err(SessionError::NotJson))
}

async fn session(
    ctx: &Arc<SessionCtx>,
    url: &str,
    tls: &ClientTls,
    workers: &[mpsc::UnboundedSender<Received>],
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
    .map_err(|_| err(false, SessionError::ConnectTimeout(10)))?
    .map_err(|e| match e {
        tokio_tungstenite::tungstenite::Error::Tls(source) => err(
            false,
            SessionError::TlsHandshake {
                url: url.to_string(),
                source,
            },
        ),
        e => err(false, e),
    })?;
    let auth = json!({"action": "authenticate", "data": {
        "key_id": ctx.credentials.key_id(),
        "secret_key": ctx.credentials.secret_key(),
    }});
    ws.send(Message::text(auth.to_string()))
        .await
        .map_err(|e| err(false, e))?;
    let authorized = next_json(&mut ws).await.map_err(|e| err(false, e))?;
    if authorized["stream"] != "authorization" || authorized["data"]["status"] != "authorized" {
        return Err(err(false, SessionError::NotAuthorized(authorized)));
    }
    let listen = json!({"action": "listen", "data": {"streams": ["trade_updates"]}});
    ws.send(Message::text(listen.to_string()))
        .await
        .map_err(|e| err(false, e))?;
    let listening = next_json(&mut ws).await.map_err(|e| err(false, e))?;
    if listening["stream"] != "listening" {
        return Err(err(false, SessionError::NotListening(listening)));
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
    // whatever changed while no stream listened (down, or before this start): brought up to
    // date now that new events are heard again
    let generation = ctx.catch_up_generation.fetch_add(1, Ordering::SeqCst) + 1;
    {
        let ctx = Arc::clone(ctx);
        let workers = workers.to_vec();
        tokio::spawn(async move { catch_up(&ctx, &workers, generation).await });
    }
    while let Some(msg) = ws.next().await {
        let msg = msg.map_err(|e| err(true, e))?;
        let at = Utc::now();
        if let Message::Close(_) = msg {
            return Ok(());
        }
        let Some(parsed) = frame_json(&msg) else {
            continue;
        };
        match parsed {
            Ok(value) if value["stream"] == "trade_updates" => {
                let received = Received {
                    value,
                    at,
                    recovered: false,
                };
                log_received(ctx, &received);
                if !dispatch(workers, received.clone()) {
                    dead_letter(
                        ctx,
                        &received,
                        "the session stopped before it could be recorded",
                    );
                }
            }
            // anything else the broker pushes is on the trail too, as a connectivity event
            Ok(value) => {
                tracing::debug!(account = %ctx.account, message = %value, "stream message kept");
                connectivity(ctx, "message", value);
            }
            Err(e) => {
                tracing::warn!(account = %ctx.account, error = %e, "unreadable stream frame kept");
                let text = match &msg {
                    Message::Text(t) => t.as_str().to_string(),
                    Message::Binary(b) => String::from_utf8_lossy(b).into_owned(),
                    _ => String::new(),
                };
                connectivity(
                    ctx,
                    "unreadable_frame",
                    json!({"error": e.to_string(), "frame": text}),
                );
            }
        }
    }
    Ok(())
}

async fn next_json<S>(ws: &mut S) -> Result<Value, SessionError>
where
    S: futures_util::Stream<Item = Result<Message, tokio_tungstenite::tungstenite::Error>> + Unpin,
{
    loop {
        let msg = tokio::time::timeout(Duration::from_secs(10), ws.next())
            .await
            .map_err(|_| SessionError::Silent(10))?
            .ok_or(SessionError::Closed)??;
        if let Some(parsed) = frame_json(&msg) {
            return parsed;
        }
    }
}

/// Hands an event to the worker that owns its order; false if the workers have stopped.
fn dispatch(workers: &[mpsc::UnboundedSender<Received>], received: Received) -> bool {
    let key = received.value["data"]["order"]["id"]
        .as_str()
        .unwrap_or("")
        .to_string();
    let shard = key
        .bytes()
        .fold(0usize, |h, b| h.wrapping_mul(31).wrapping_add(b as usize))
        % workers.len();
    workers[shard].send(received).is_ok()
}

/// The decision an event is about, when it is one of ours by its client order id.
fn decision_of_event(r: &Received) -> Option<uuid::Uuid> {
    r.value["data"]["order"]["client_order_id"]
        .as_str()
        .and_then(decision_of)
}

fn in_flight(ctx: &SessionCtx, decision: uuid::Uuid) -> bool {
    ctx.in_flight.lock().is_ok_and(|f| f.contains(&decision))
}

/// Handles the events of the orders that hash to it, each order's in order. An event of an
/// order whose submission is still in flight is parked (with every later event of that order)
/// until the submission is recorded, so it applies to the execution the answer records; the
/// worker meanwhile goes on with other orders. A submission leaves `in_flight` only once its
/// outcome is committed (or could not be, and is being reconciled), so it is waited for as long
/// as it takes, never a fixed time.
async fn worker(
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

/// The identifiers of the order an event is about, as the trade log keys it.
fn event_ids(account: &str, order: &Value) -> OrderIds {
    OrderIds {
        cl_ord_id: order["client_order_id"].as_str().map(str::to_string),
        native_ord_id: order["id"].as_str().map(str::to_string),
        account_id: Some(account.to_string()),
        symbol: order["symbol"].as_str().map(str::to_string),
        ..OrderIds::default()
    }
}

fn event_at(data: &Value) -> Option<DateTime<Utc>> {
    data["timestamp"]
        .as_str()
        .and_then(|t| DateTime::parse_from_rfc3339(t).ok())
        .map(|t| t.with_timezone(&Utc))
}

/// The trade-log row of an event as received (`api_event_order_update`, stamped with its
/// receipt and the broker's time).
fn received_row(account: &str, r: &Received) -> TradeLogEvent {
    let data = &r.value["data"];
    let mut event = TradeLogEvent::api_event_order_update(
        &event_ids(account, &data["order"]),
        None,
        event_at(data).map(us),
        RawJson::from_value(&r.value),
    )
    .with_source(BROKER);
    event.local_ts_us = us(r.at);
    event
}

/// The event on the trade log as received, whatever becomes of its database write.
fn log_received(ctx: &SessionCtx, r: &Received) {
    if let Some(log) = &ctx.trade_log {
        log.log(received_row(&ctx.account, r));
    }
}

/// An event that will not be recorded in the order's rows: logged again with the reason (the
/// trade log spills to disk while the database is away, so the record survives), counted and
/// reported. Its order is brought up to date by the next catch-up.
fn dead_letter(ctx: &SessionCtx, r: &Received, reason: &str) {
    let data = &r.value["data"];
    let mut event = received_row(&ctx.account, r);
    event.error_code = Some("dead_letter".into());
    event.error_message = Some(reason.to_string());
    if let Some(log) = &ctx.trade_log {
        log.log(event);
    }
    metrics::counter!("tradegate_alpaca_dead_letters_total").increment(1);
    tracing::error!(account = %ctx.account, reason, event = %data["event"],
        order = %data["order"]["id"], "a trade update is a dead letter: not applied to its order");
}

/// Finds the order an event is about (were its submission in flight, the worker parked the
/// event until it was recorded). "Not ours" (`Ok(None)`) is decided only on the database's
/// answer: while it is away the look-up is retried. `Err` only when the gateway is stopping.
async fn find_order(ctx: &SessionCtx, order: &Value) -> Result<Option<PlacedOrder>, SessionError> {
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

fn us(t: DateTime<Utc>) -> i64 {
    t.timestamp_micros()
}

/// Looks order `id` up at the broker now and hands what it shows to the worker that owns the
/// order, as a recovered event (after a pushed event of it could not be recorded).
fn look_up_later(ctx: &SessionCtx, id: &str, workers: &[mpsc::UnboundedSender<Received>]) {
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

/// The catch-up after a connect, retried until it completes or a newer connect starts its own.
async fn catch_up(
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
async fn list_orders(
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
async fn recover_missed(
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

/// An event as the group commit holds it until it is written.
struct EventRecord {
    account: String,
    key: String,
    order: PlacedOrder,
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
    replaces: Option<String>,
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
            replaces: self.replaces.as_deref(),
        }
    }
}
