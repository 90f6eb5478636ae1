//! The strategy WebSocket API at `/v1/strategy`: bearer-token auth at the handshake, JSON text
//! frames in (`submit_order`, `submit_batch`, `cancel_order`, `replace_order`, `cancel_all`)
//! and out (`ack`, `reject`, `execution`, `order_update`, `fill`, `error`). Bad input gets an
//! `error` and the connection stays open.

use axum::extract::ws::{Message, WebSocket, WebSocketUpgrade};
use axum::extract::{Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use serde_json::{Map, Value};
use tokio::sync::mpsc;
use tradegate_actors::domain::{OrderRequest, RejectCode, ReplaceRequest, StrategyEvent};
use tradegate_actors::order_router::OrderRouterClient;
use uuid::Uuid;

use super::ApiState;
use super::error::ApiError;

#[derive(Debug, Deserialize)]
pub(crate) struct TokenQuery {
    token: Option<String>,
}

/// The token of a request: `Authorization: Bearer ...`, else `?token=`.
fn token(headers: &HeaderMap, query: &TokenQuery) -> Option<String> {
    headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| {
            v.strip_prefix("Bearer ")
                .or_else(|| v.strip_prefix("bearer "))
        })
        .map(|t| t.trim().to_string())
        .or_else(|| query.token.clone())
}

pub(crate) async fn upgrade(
    State(state): State<ApiState>,
    headers: HeaderMap,
    Query(query): Query<TokenQuery>,
    ws: WebSocketUpgrade,
) -> Response {
    let Some(token) = token(&headers, &query) else {
        metrics::counter!("tradegate_strategy_auth_failures_total").increment(1);
        return ApiError::new(
            StatusCode::UNAUTHORIZED,
            "unauthorized",
            "a bearer token is required (Authorization: Bearer ... or ?token=)",
        )
        .into_response();
    };
    let Some(strategy) = state.orders.strategy_for_token(&token).map(str::to_string) else {
        metrics::counter!("tradegate_strategy_auth_failures_total").increment(1);
        tracing::warn!("strategy connection refused: unknown token");
        return ApiError::new(StatusCode::UNAUTHORIZED, "unauthorized", "unknown token")
            .into_response();
    };
    // the connection's place is taken at the handshake, so concurrent handshakes cannot
    // exceed the limit; a failed upgrade drops it again
    let max = state.limits.max_connections_per_strategy;
    let Some(subscription) = state.hub.try_subscribe(&strategy, max) else {
        metrics::counter!("tradegate_api_refused_total", "reason" => "too_many_connections")
            .increment(1);
        tracing::warn!(%strategy, max, "strategy connection refused: too many connections");
        return ApiError::new(
            StatusCode::TOO_MANY_REQUESTS,
            "too_many_connections",
            format!(
                "strategy {strategy} holds {max} connections already \
                 ([api] max_connections_per_strategy)"
            ),
        )
        .into_response();
    };
    let limits = state.limits;
    let max_message = limits.max_ws_message_bytes;
    ws.read_buffer_size(tradegate_actors::WS_READ_BUFFER_BYTES)
        .max_message_size(max_message)
        .max_frame_size(max_message)
        .on_upgrade(move |socket| connection(socket, subscription, strategy, limits))
}

async fn connection(
    mut socket: WebSocket,
    mut subscription: tradegate_actors::strategy_hub::Subscription,
    strategy: String,
    limits: super::Limits,
) {
    let max_message = limits.max_ws_message_bytes;
    let sender = subscription.sender();
    metrics::gauge!("tradegate_strategy_connections").increment(1.0);
    tracing::info!(%strategy, "strategy connected");
    // a ping every third of the idle limit; anything received (a pong too) shows the client
    // is there, and nothing for the whole limit closes the connection
    let mut pings = tokio::time::interval(limits.ws_idle_timeout / 3);
    pings.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut heard = tokio::time::Instant::now();
    loop {
        tokio::select! {
            _ = pings.tick() => {
                if heard.elapsed() >= limits.ws_idle_timeout {
                    metrics::counter!("tradegate_api_refused_total", "reason" => "ws_idle")
                        .increment(1);
                    tracing::warn!(%strategy, "strategy connection silent too long: closed");
                    close(
                        &mut socket,
                        1001,
                        "idle: no frame, not even a pong, within the idle timeout".into(),
                    )
                    .await;
                    break;
                }
                if !sent(&mut socket, Message::Ping(Default::default()), &limits, &strategy).await {
                    break;
                }
            }
            incoming = socket.recv() => {
                heard = tokio::time::Instant::now();
                let msg = match incoming {
                    Some(Ok(msg)) => msg,
                    Some(Err(e)) if is_too_long(&e) => {
                        // the frame was refused unread: say why in the close, then hang up
                        metrics::counter!(
                            "tradegate_api_refused_total",
                            "reason" => "ws_message_too_large"
                        )
                        .increment(1);
                        tracing::warn!(%strategy, max_message, "strategy message too large: closed");
                        close(
                            &mut socket,
                            1009,
                            format!("message_too_large: at most {max_message} bytes"),
                        )
                        .await;
                        break;
                    }
                    _ => break,
                };
                let bytes = match &msg {
                    Message::Text(t) => t.as_bytes().to_vec(),
                    Message::Binary(b) => b.to_vec(),
                    Message::Close(_) => break,
                    _ => continue,
                };
                handle(&strategy, &bytes, &sender);
            }
            out = subscription.events.recv() => {
                let Some(event) = out else { break };
                let Ok(text) = serde_json::to_string(&event) else { continue };
                if !sent(&mut socket, Message::text(text), &limits, &strategy).await {
                    break;
                }
            }
        }
    }
    metrics::gauge!("tradegate_strategy_connections").decrement(1.0);
    tracing::info!(%strategy, "strategy disconnected");
}

/// Sends `msg`; `false` when the connection is gone or the client has not taken it within
/// the idle limit (its TCP window stays full: a client that stopped reading holds nothing).
async fn sent(
    socket: &mut WebSocket,
    msg: Message,
    limits: &super::Limits,
    strategy: &str,
) -> bool {
    match tokio::time::timeout(limits.ws_idle_timeout, socket.send(msg)).await {
        Ok(Ok(())) => true,
        Ok(Err(_)) => false,
        Err(_) => {
            metrics::counter!("tradegate_api_refused_total", "reason" => "ws_stalled").increment(1);
            tracing::warn!(%strategy, "strategy connection takes nothing: closed");
            false
        }
    }
}

/// Closes with `code` and `reason` and waits (briefly) for the client's close in return, so
/// the close frame is not lost to a reset of a socket dropped too early.
async fn close(socket: &mut WebSocket, code: u16, reason: String) {
    let frame = axum::extract::ws::CloseFrame {
        code,
        reason: reason.into(),
    };
    if socket.send(Message::Close(Some(frame))).await.is_err() {
        return;
    }
    let _ = tokio::time::timeout(std::time::Duration::from_secs(2), async {
        while let Some(Ok(msg)) = socket.recv().await {
            if matches!(msg, Message::Close(_)) {
                return;
            }
        }
    })
    .await;
}

/// Whether a read failed because a message or frame was over the size limit.
fn is_too_long(e: &axum::Error) -> bool {
    let text = e.to_string();
    text.contains("Space limit exceeded") || text.contains("too long") || text.contains("too big")
}

fn error(
    request_id: Option<String>,
    code: RejectCode,
    message: impl Into<String>,
) -> StrategyEvent {
    StrategyEvent::Error {
        request_id,
        code: code.as_str().into(),
        message: message.into(),
    }
}

/// One order of a `submit_order` or `submit_batch`: the fields of [`OrderRequest`]; the
/// strategy defaults to the connection's.
fn order_of(
    strategy: &str,
    mut fields: Map<String, Value>,
) -> Result<OrderRequest, serde_json::Error> {
    fields.remove("type");
    fields.remove("request_id");
    fields
        .entry("strategy")
        .or_insert_with(|| Value::String(strategy.to_string()));
    serde_json::from_value(Value::Object(fields))
}

/// Handles one frame; answers go into the connection's own queue, in order with pushes.
fn handle(strategy: &str, bytes: &[u8], out: &mpsc::UnboundedSender<StrategyEvent>) {
    if super::error::nested_deeper_than(bytes, super::error::MAX_JSON_DEPTH) {
        metrics::counter!("tradegate_api_refused_total", "reason" => "too_deep").increment(1);
        let _ = out.send(error(
            None,
            RejectCode::TooDeep,
            format!(
                "JSON nested deeper than {} levels",
                super::error::MAX_JSON_DEPTH
            ),
        ));
        return;
    }
    let value: Value = match serde_json::from_slice(bytes) {
        Ok(v) => v,
        Err(e) => {
            let _ = out.send(error(None, RejectCode::Malformed, format!("not JSON: {e}")));
            return;
        }
    };
    let Value::Object(mut fields) = value else {
        let _ = out.send(error(
            None,
            RejectCode::Malformed,
            "a message must be a JSON object",
        ));
        return;
    };
    let request_id = match fields.get("request_id") {
        Some(Value::String(id)) if !id.is_empty() => id.clone(),
        Some(Value::Number(n)) => n.to_string(),
        _ => {
            let _ = out.send(error(
                None,
                RejectCode::Invalid,
                "request_id (a non-empty string) is required",
            ));
            return;
        }
    };
    let kind = fields
        .get("type")
        .and_then(Value::as_str)
        .unwrap_or("")
        .to_string();
    let router = OrderRouterClient;
    let strategy = strategy.to_string();
    let out = out.clone();
    match kind.as_str() {
        "submit_order" => {
            let order = match order_of(&strategy, fields) {
                Ok(o) => o,
                Err(e) => {
                    let _ = out.send(error(Some(request_id), RejectCode::Invalid, e.to_string()));
                    return;
                }
            };
            let queued = router.enqueue(
                &strategy,
                &request_id,
                vec![order],
                false,
                Some(out.clone()),
            );
            tokio::spawn(async move {
                let result = match queued {
                    Ok(answer) => OrderRouterClient::outcomes(answer).await.map(|_| ()),
                    Err(r) => Err(r),
                };
                if let Err(r) = result {
                    let _ = out.send(StrategyEvent::Reject {
                        request_id,
                        code: r.code,
                        message: r.message,
                        index: None,
                    });
                }
            });
        }
        "submit_batch" => {
            let Some(Value::Array(items)) = fields.remove("orders") else {
                let _ = out.send(error(
                    Some(request_id),
                    RejectCode::Invalid,
                    "submit_batch needs orders: [...]",
                ));
                return;
            };
            if items.is_empty() {
                let _ = out.send(error(
                    Some(request_id),
                    RejectCode::Invalid,
                    "submit_batch has no orders",
                ));
                return;
            }
            let mut orders = Vec::with_capacity(items.len());
            for (i, item) in items.into_iter().enumerate() {
                let Value::Object(item) = item else {
                    let _ = out.send(error(
                        Some(request_id),
                        RejectCode::Invalid,
                        format!("orders[{i}] must be an object"),
                    ));
                    return;
                };
                match order_of(&strategy, item) {
                    Ok(o) => orders.push(o),
                    Err(e) => {
                        // a batch is checked whole before any of it is committed
                        let _ = out.send(error(
                            Some(request_id),
                            RejectCode::Invalid,
                            format!("orders[{i}]: {e}"),
                        ));
                        return;
                    }
                }
            }
            let n = orders.len();
            let queued = router.enqueue(&strategy, &request_id, orders, true, Some(out.clone()));
            tokio::spawn(async move {
                let result = match queued {
                    Ok(answer) => OrderRouterClient::outcomes(answer).await.map(|_| ()),
                    Err(r) => Err(r),
                };
                if let Err(r) = result {
                    for i in 0..n {
                        let _ = out.send(StrategyEvent::Reject {
                            request_id: request_id.clone(),
                            code: r.code.clone(),
                            message: r.message.clone(),
                            index: Some(i),
                        });
                    }
                }
            });
        }
        "cancel_order" | "replace_order" => {
            let decision_id = match fields
                .get("decision_id")
                .and_then(Value::as_str)
                .map(Uuid::parse_str)
            {
                Some(Ok(id)) => id,
                _ => {
                    let _ = out.send(error(
                        Some(request_id),
                        RejectCode::Invalid,
                        "decision_id (a UUID) is required",
                    ));
                    return;
                }
            };
            let changes = if kind == "replace_order" {
                fields.remove("type");
                fields.remove("request_id");
                fields.remove("decision_id");
                match serde_json::from_value::<ReplaceRequest>(Value::Object(fields)) {
                    Ok(c) => Some(c),
                    Err(e) => {
                        let _ =
                            out.send(error(Some(request_id), RejectCode::Invalid, e.to_string()));
                        return;
                    }
                }
            } else {
                None
            };
            tokio::spawn(async move {
                let result = match changes {
                    None => router.cancel(&strategy, decision_id).await.map(|()| None),
                    Some(c) => router.replace(&strategy, decision_id, c).await.map(Some),
                };
                let _ = out.send(match result {
                    Ok(broker_order_id) => StrategyEvent::Ack {
                        request_id,
                        decision_id: Some(decision_id),
                        index: None,
                        broker_order_id,
                        cancels: None,
                    },
                    Err(r) => StrategyEvent::Error {
                        request_id: Some(request_id),
                        code: r.code,
                        message: r.message,
                    },
                });
            });
        }
        "cancel_all" => {
            tokio::spawn(async move {
                let _ = out.send(match router.cancel_all(&strategy).await {
                    Ok(n) => StrategyEvent::Ack {
                        request_id,
                        decision_id: None,
                        index: None,
                        broker_order_id: None,
                        cancels: Some(n),
                    },
                    Err(r) => StrategyEvent::Error {
                        request_id: Some(request_id),
                        code: r.code,
                        message: r.message,
                    },
                });
            });
        }
        "" => {
            let _ = out.send(error(
                Some(request_id),
                RejectCode::UnknownType,
                "a message needs a type",
            ));
        }
        other => {
            let _ = out.send(error(
                Some(request_id),
                RejectCode::UnknownType,
                format!(
                    "unknown message type `{other}` (submit_order, submit_batch, cancel_order, \
                     replace_order, cancel_all)"
                ),
            ));
        }
    }
}
