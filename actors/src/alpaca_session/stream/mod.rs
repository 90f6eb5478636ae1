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
use serde_json::Value;
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;

use super::orders::{BROKER, SessionCtx};
use crate::domain::{OrderIds, RawJson, TradeLogEvent};
use crate::tls::ClientTls;

pub(crate) mod catch_up;
mod connection;
mod worker;

use connection::run;
use worker::worker;

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

fn us(t: DateTime<Utc>) -> i64 {
    t.timestamp_micros()
}
