//! The simulated Alpaca venue speaks Alpaca's shapes: auth headers, error bodies and codes,
//! rate-limit headers, fault switches, and the trade_updates stream in binary frames.

mod common;

use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use rust_decimal::Decimal;
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::Message;
use tradegate::sim::alpaca::{Faults, SimConfig};

use common::orders::start_venue;

async fn call(
    http: &reqwest::Client,
    method: reqwest::Method,
    url: &str,
    body: Option<Value>,
) -> (u16, reqwest::header::HeaderMap, Value) {
    let mut request = http
        .request(method, url)
        .header("APCA-API-KEY-ID", "SIMKEY")
        .header("APCA-API-SECRET-KEY", "SIMSECRET");
    if let Some(body) = body {
        request = request.json(&body);
    }
    let response = request.send().await.unwrap();
    let status = response.status().as_u16();
    let headers = response.headers().clone();
    let text = response.text().await.unwrap();
    (
        status,
        headers,
        serde_json::from_str(&text).unwrap_or(Value::Null),
    )
}

#[tokio::test]
async fn the_venue_answers_with_alpacas_shapes() {
    let (venue, base) = start_venue(SimConfig {
        rate_limit_per_min: 12,
        buying_power: Decimal::from(10_000),
        ..SimConfig::default()
    })
    .await;
    let http = tradegate_actors::tls::local_http();
    let orders = format!("{base}/v2/orders");
    let no_auth = http.get(&orders).send().await.unwrap();
    assert_eq!(no_auth.status(), 401);

    // stream: authenticate and listen, then events arrive as binary frames
    let ws_url = format!("{}/stream", base.replace("http://", "ws://"));
    let (mut ws, _) = tokio_tungstenite::connect_async(&ws_url).await.unwrap();
    ws.send(Message::text(
        json!({"action": "authenticate", "data": {"key_id": "SIMKEY", "secret_key": "SIMSECRET"}})
            .to_string(),
    ))
    .await
    .unwrap();
    let frame = ws.next().await.unwrap().unwrap();
    assert!(matches!(frame, Message::Binary(_)), "{frame:?}");
    let auth: Value = serde_json::from_slice(&frame.into_data()).unwrap();
    assert_eq!(auth["data"]["status"], "authorized");
    ws.send(Message::text(
        json!({"action": "listen", "data": {"streams": ["trade_updates"]}}).to_string(),
    ))
    .await
    .unwrap();
    let listening: Value =
        serde_json::from_slice(&ws.next().await.unwrap().unwrap().into_data()).unwrap();
    assert_eq!(listening["stream"], "listening");

    let good = json!({"symbol": "AAPL", "qty": "2", "side": "buy", "type": "market",
                      "time_in_force": "day", "client_order_id": "c-1"});
    let (status, headers, order) =
        call(&http, reqwest::Method::POST, &orders, Some(good.clone())).await;
    assert_eq!(status, 200, "{order}");
    assert_eq!(order["client_order_id"], "c-1");
    assert_eq!(headers["x-ratelimit-limit"], "12");
    assert!(
        headers.contains_key("x-ratelimit-remaining") && headers.contains_key("x-ratelimit-reset")
    );
    let mut events = Vec::new();
    while events.len() < 2 {
        let frame = tokio::time::timeout(Duration::from_secs(5), ws.next())
            .await
            .unwrap()
            .unwrap()
            .unwrap();
        let v: Value = serde_json::from_slice(&frame.into_data()).unwrap();
        events.push(v["data"]["event"].as_str().unwrap().to_string());
    }
    assert_eq!(events, ["new", "fill"]);

    let (status, _, body) = call(&http, reqwest::Method::POST, &orders, Some(good)).await;
    assert_eq!(
        (status, body["code"].as_u64()),
        (422, Some(40010001)),
        "{body}"
    );
    let (status, _, body) = call(&http, reqwest::Method::POST, &orders,
        Some(json!({"symbol": "AAPL", "qty": "0", "side": "buy", "type": "market", "time_in_force": "day"}))).await;
    assert_eq!(
        (status, body["code"].as_u64()),
        (422, Some(42210000)),
        "{body}"
    );
    let (status, _, body) = call(&http, reqwest::Method::POST, &orders,
        Some(json!({"symbol": "AAPL", "qty": "500", "side": "buy", "type": "market", "time_in_force": "day"}))).await;
    assert_eq!(
        (status, body["code"].as_u64()),
        (403, Some(40310000)),
        "{body}"
    );
    assert_eq!(body["message"], "insufficient buying power");
    let (status, _, body) = call(
        &http,
        reqwest::Method::GET,
        &format!("{orders}/{}", uuid::Uuid::new_v4()),
        None,
    )
    .await;
    assert_eq!(
        (status, body["code"].as_u64()),
        (404, Some(40410000)),
        "{body}"
    );
    let (status, _, body) = call(
        &http,
        reqwest::Method::GET,
        &format!("{base}/v2/orders:by_client_order_id?client_order_id=c-1"),
        None,
    )
    .await;
    assert_eq!(
        (status, body["client_order_id"].as_str()),
        (200, Some("c-1"))
    );
    let (status, _, body) = call(
        &http,
        reqwest::Method::GET,
        &format!("{orders}?status=all"),
        None,
    )
    .await;
    assert_eq!((status, body.as_array().map(Vec::len)), (200, Some(1)));

    venue.set_faults(Faults {
        fail_next: 1,
        ..Faults::default()
    });
    let (status, _, _) = call(&http, reqwest::Method::GET, &orders, None).await;
    assert_eq!(status, 500);
    let (status, _, _) = call(&http, reqwest::Method::GET, &orders, None).await;
    assert_eq!(status, 200);

    // past the limit: 429 with the headers
    let mut limited = None;
    for _ in 0..20 {
        let (status, headers, body) = call(&http, reqwest::Method::GET, &orders, None).await;
        if status == 429 {
            limited = Some((headers, body));
            break;
        }
    }
    let (headers, body) = limited.expect("no 429 past the limit");
    assert_eq!(body["code"], 42910000);
    assert_eq!(headers["x-ratelimit-remaining"], "0");

    // a wrong stream key is refused
    let (mut ws2, _) = tokio_tungstenite::connect_async(&ws_url).await.unwrap();
    ws2.send(Message::text(
        json!({"action": "authenticate", "data": {"key_id": "SIMKEY", "secret_key": "nope"}})
            .to_string(),
    ))
    .await
    .unwrap();
    let refused: Value =
        serde_json::from_slice(&ws2.next().await.unwrap().unwrap().into_data()).unwrap();
    assert_eq!(refused["data"]["status"], "unauthorized");
}
