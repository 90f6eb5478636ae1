//! Connecting to the trade_updates stream: connect, authenticate, listen, read frames; the
//! reconnect with backoff and jitter, and the connectivity events in the trade log.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use chrono::Utc;
use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio::sync::mpsc;
use tokio_tungstenite::tungstenite::Message;

use super::catch_up::catch_up;
use super::{Received, dead_letter, dispatch, log_received};
use crate::alpaca_session::error::SessionError;
use crate::alpaca_session::orders::{BROKER, SessionCtx};
use crate::domain::{RawJson, TradeLogEvent};
use crate::tls::ClientTls;

pub(super) async fn run(
    ctx: Arc<SessionCtx>,
    url: String,
    tls: ClientTls,
    max_backoff: Duration,
    workers: Vec<mpsc::UnboundedSender<Received>>,
) {
    let mut failures: u32 = 0;
    let mut connected_once = false;
    loop {
        let outcome = session(&ctx, &url, &tls, &workers, connected_once).await;
        // no stream listens until the next connect's catch-up completes: windows closed
        // meanwhile wait for it (their fills may be among what it recovers)
        ctx.catch_up_generation.fetch_add(1, Ordering::SeqCst);
        match outcome {
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
pub(super) fn backoff(failures: u32, max: Duration) -> Duration {
    let base = Duration::from_millis(250)
        .saturating_mul(1u32 << failures.min(16))
        .min(max);
    let jitter = rand::random_range(0..=base.as_millis() as u64 / 5);
    base + Duration::from_millis(jitter)
}

pub(super) fn connectivity(ctx: &SessionCtx, event: &str, details: Value) {
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
pub(super) struct StreamError {
    pub(super) connected: bool,
    pub(super) source: SessionError,
}

pub(super) fn err(connected: bool, source: impl Into<SessionError>) -> StreamError {
    StreamError {
        connected,
        source: source.into(),
    }
}

/// JSON of a text or binary frame (the paper stream sends binary).
pub(super) fn frame_json(msg: &Message) -> Option<Result<Value, SessionError>> {
    let bytes: &[u8] = match msg {
        Message::Text(t) => t.as_bytes(),
        Message::Binary(b) => b,
        _ => return None,
    };
    Some(serde_json::from_slice(bytes).map_err(SessionError::NotJson))
}

pub(super) async fn session(
    ctx: &Arc<SessionCtx>,
    url: &str,
    tls: &ClientTls,
    workers: &[mpsc::UnboundedSender<Received>],
    reconnect: bool,
) -> Result<(), StreamError> {
    let (mut ws, _) = tokio::time::timeout(
        Duration::from_secs(CONNECT_TIMEOUT_SECS),
        tokio_tungstenite::connect_async_tls_with_config(
            url,
            Some(crate::ws_client_config()),
            true,
            Some(tls.ws_connector()),
        ),
    )
    .await
    .map_err(|_| err(false, SessionError::ConnectTimeout(CONNECT_TIMEOUT_SECS)))?
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
        .map_err(|e| match e {
            // this error would hold the frame, credentials and all
            tokio_tungstenite::tungstenite::Error::WriteBufferFull(_) => {
                err(false, SessionError::WriteBufferFull)
            }
            e => err(false, e),
        })?;
    let authorized = next_json(&mut ws).await.map_err(|e| err(false, e))?;
    if authorized["stream"] != "authorization" || authorized["data"]["status"] != "authorized" {
        return Err(err(
            false,
            SessionError::NotAuthorized(redacted(&authorized)),
        ));
    }
    let listen = json!({"action": "listen", "data": {"streams": ["trade_updates"]}});
    ws.send(Message::text(listen.to_string()))
        .await
        .map_err(|e| err(false, e))?;
    let listening = next_json(&mut ws).await.map_err(|e| err(false, e))?;
    if listening["stream"] != "listening" {
        return Err(err(false, SessionError::NotListening(redacted(&listening))));
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

pub(super) async fn next_json<S>(ws: &mut S) -> Result<Value, SessionError>
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

/// How long the stream's connect (TCP, TLS, WebSocket upgrade) may take.
const CONNECT_TIMEOUT_SECS: u64 = 10;

/// An answer of the stream as an error may carry it: without anything that names a credential
/// (Alpaca echoes none, but an error message is logged and stored).
fn redacted(answer: &Value) -> String {
    crate::domain::redact_json(&answer.to_string()).unwrap_or_else(|_| "(unreadable)".into())
}
