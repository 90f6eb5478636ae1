//! The `trade_updates` stream: authenticate, listen, then every event as a binary frame.

use axum::body::Bytes;
use axum::extract::State;
use axum::extract::ws::{Message, WebSocket, WebSocketUpgrade};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};
use tokio::sync::mpsc;

use super::SimAlpaca;
use super::state::{StreamCmd, StreamCmdBox};

pub(super) async fn stream(State(sim): State<SimAlpaca>, ws: WebSocketUpgrade) -> Response {
    if sim.faults().stream_down {
        return StatusCode::SERVICE_UNAVAILABLE.into_response();
    }
    ws.read_buffer_size(tradegate_actors::WS_READ_BUFFER_BYTES)
        .on_upgrade(move |socket| stream_session(sim, socket))
}

pub(super) fn binary(value: &Value) -> Message {
    Message::Binary(Bytes::from(value.to_string()))
}

pub(super) async fn stream_session(sim: SimAlpaca, mut socket: WebSocket) {
    let mut authorized = false;
    let mut commands: Option<mpsc::UnboundedReceiver<StreamCmdBox>> = None;
    loop {
        tokio::select! {
            incoming = socket.recv() => {
                let Some(Ok(msg)) = incoming else { return };
                let bytes = match &msg {
                    Message::Text(t) => t.as_bytes().to_vec(),
                    Message::Binary(b) => b.to_vec(),
                    Message::Close(_) => return,
                    _ => continue,
                };
                let Ok(request) = serde_json::from_slice::<Value>(&bytes) else {
                    let _ = socket.send(binary(&json!({"stream": "error", "data": {"error_message": "invalid syntax"}}))).await;
                    continue;
                };
                match request["action"].as_str() {
                    Some("authenticate" | "auth") => {
                        let data = &request["data"];
                        let key = data["key_id"].as_str().or(request["key"].as_str());
                        let secret = data["secret_key"].as_str().or(request["secret"].as_str());
                        let ok = {
                            let state = sim.lock();
                            key == Some(state.config.key_id.as_str()) && secret == Some(state.config.secret_key.as_str())
                        };
                        let status = if ok { "authorized" } else { "unauthorized" };
                        let _ = socket.send(binary(&json!({"stream": "authorization", "data": {"action": "authenticate", "status": status}}))).await;
                        if !ok {
                            let _ = socket.send(Message::Close(None)).await;
                            return;
                        }
                        authorized = true;
                    }
                    Some("listen") if authorized => {
                        let streams = request["data"]["streams"].clone();
                        if commands.is_none() && streams.as_array().is_some_and(|s| s.iter().any(|s| s == "trade_updates")) {
                            let (tx, rx) = mpsc::unbounded_channel();
                            sim.lock().listeners.push(tx);
                            commands = Some(rx);
                        }
                        let _ = socket.send(binary(&json!({"stream": "listening", "data": {"streams": streams}}))).await;
                    }
                    _ => {
                        let _ = socket.send(binary(&json!({"stream": "authorization", "data": {"action": "listen", "status": "unauthorized"}}))).await;
                    }
                }
            }
            cmd = async {
                match commands.as_mut() {
                    Some(rx) => rx.recv().await,
                    None => std::future::pending().await,
                }
            } => {
                match cmd {
                    Some(StreamCmdBox(StreamCmd::Event(event))) => {
                        if socket.send(binary(&event)).await.is_err() {
                            return;
                        }
                    }
                    Some(StreamCmdBox(StreamCmd::Drop)) | None => {
                        // an abrupt drop, as a network failure looks to the client
                        return;
                    }
                }
            }
        }
    }
}
