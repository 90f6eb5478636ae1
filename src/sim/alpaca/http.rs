//! What every HTTP call goes through (auth, the request log, rate limit, faults, the kept
//! answers), Alpaca's error shapes, the account, and the venue's own `/sim` endpoints.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use chrono::Utc;
use rust_decimal::Decimal;
use serde::Deserialize;
use serde_json::{Value, json};
use uuid::Uuid;

use super::{Faults, KEPT_ANSWERS, SeenRequest, SentAnswer, SimAlpaca};

pub(super) fn not_found() -> Response {
    error(StatusCode::NOT_FOUND, 40410000, "order not found")
}

pub(super) fn error(status: StatusCode, code: u64, message: &str) -> Response {
    (
        status,
        axum::Json(json!({"code": code, "message": message})),
    )
        .into_response()
}

/// Auth, request log, rate limit and 500 faults: what every HTTP call goes through.
/// `Ok(headers)` to go on (with the rate-limit headers to send), `Err` to answer now.
pub(super) fn gate(
    sim: &SimAlpaca,
    headers: &HeaderMap,
    method: &str,
    path: &str,
    order: Option<&Value>,
) -> Result<HeaderMap, Response> {
    let mut state = sim.lock();
    {
        let seq = state.seen.len() as u64 + 1;
        state.seen.push(SeenRequest {
            seq,
            method: method.into(),
            path: path.into(),
            received_at: Utc::now(),
            client_order_id: order
                .and_then(|o| o["client_order_id"].as_str())
                .map(str::to_string),
            symbol: order.and_then(|o| o["symbol"].as_str()).map(str::to_string),
        });
        let key = headers.get("apca-api-key-id").and_then(|v| v.to_str().ok());
        let secret = headers
            .get("apca-api-secret-key")
            .and_then(|v| v.to_str().ok());

        if key != Some(state.config.key_id.as_str())
            || secret != Some(state.config.secret_key.as_str())
        {
            Err(error(
                StatusCode::UNAUTHORIZED,
                40110000,
                "request is not authorized",
            ))
        } else {
            let (limited, rl) = state.rate_limited(Instant::now());
            let throttled = state.faults.throttle_next > 0;
            if throttled {
                state.faults.throttle_next -= 1;
            }
            if limited || throttled {
                let mut r = error(
                    StatusCode::TOO_MANY_REQUESTS,
                    42910000,
                    "rate limit exceeded",
                );
                r.headers_mut().extend(rl);
                Err(r)
            } else if state.faults.fail_next > 0 {
                state.faults.fail_next -= 1;
                Err(error(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    50010000,
                    "internal server error",
                ))
            } else {
                Ok(rl)
            }
        }
    }
}

/// Every answer is kept as sent (tests compare the trail with it), and the delay fault: the
/// request is processed at once, its answer held back (a slow or lost response, the case
/// crash recovery must handle).
pub(super) async fn delay_answers(
    State(sim): State<SimAlpaca>,
    request: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    let (method, path) = (
        request.method().to_string(),
        request.uri().path().to_string(),
    );
    let method_path = (method.clone(), path.clone());
    let response = next.run(request).await;
    let (parts, body) = response.into_parts();
    let bytes = axum::body::to_bytes(body, usize::MAX)
        .await
        .unwrap_or_default();
    {
        let mut state = sim.lock();
        // the newest answers are kept (a long benchmark must not grow the venue without bound)
        if state.answers.len() >= KEPT_ANSWERS {
            state.answers.drain(..KEPT_ANSWERS / 10);
        }
        state.answers.push(SentAnswer {
            method,
            path,
            status: parts.status.as_u16(),
            body: String::from_utf8_lossy(&bytes).into_owned(),
        });
    }
    let cut = {
        let mut state = sim.lock();
        let cut = state.faults.cut_next_submissions > 0
            && method_path.0 == "POST"
            && method_path.1 == "/v2/orders";
        if cut {
            state.faults.cut_next_submissions -= 1;
        }
        cut
    };
    let delay = Duration::from_millis(sim.faults().delay_ms);
    if !delay.is_zero() {
        tokio::time::sleep(delay).await;
    }
    if cut {
        // half the body, then the connection fails: the client has the status, not the answer
        let half = bytes.slice(..bytes.len() / 2);
        let chunks: Vec<Result<axum::body::Bytes, std::io::Error>> = vec![
            Ok(half),
            Err(std::io::Error::new(
                std::io::ErrorKind::ConnectionReset,
                "the venue's connection broke mid-answer",
            )),
        ];
        let mut parts = parts;
        parts.headers.remove(axum::http::header::CONTENT_LENGTH);
        return Response::from_parts(
            parts,
            axum::body::Body::from_stream(futures_util::stream::iter(chunks)),
        );
    }
    Response::from_parts(parts, axum::body::Body::from(bytes))
}

pub(super) fn with_headers(mut response: Response, headers: HeaderMap) -> Response {
    response.headers_mut().extend(headers);
    response
}

pub(super) async fn account(State(sim): State<SimAlpaca>, headers: HeaderMap) -> Response {
    let rl = match gate(&sim, &headers, "GET", "/v2/account", None) {
        Ok(rl) => rl,
        Err(r) => return r,
    };
    let bp = sim.buying_power().normalize().to_string();
    let today = Utc::now().date_naive().to_string();
    // every field of Alpaca's Account definition, and of its published example
    let mut body = json!({
        "id": Uuid::new_v5(&Uuid::NAMESPACE_OID, b"tradegate-sim-account"),
        "account_number": "PA0SIMULATED",
        "status": "ACTIVE",
        "crypto_status": "INACTIVE",
        "crypto_tier": 0,
        "currency": "USD",
        "buying_power": bp,
        "regt_buying_power": bp,
        "daytrading_buying_power": bp,
        "effective_buying_power": bp,
        "non_marginable_buying_power": bp,
        "options_buying_power": bp,
        "bod_dtbp": "0",
        "cash": bp,
        "accrued_fees": "0",
        "pending_reg_taf_fees": "0",
        "pending_transfer_in": "0",
        "pending_transfer_out": "0",
        "portfolio_value": bp,
    });
    let more = json!({
        "equity": bp,
        "last_equity": bp,
        "long_market_value": "0",
        "short_market_value": "0",
        "position_market_value": "0",
        "initial_margin": "0",
        "maintenance_margin": "0",
        "last_maintenance_margin": "0",
        "intraday_adjustments": "0",
        "sma": "0",
        "daytrade_count": 0,
        "balance_asof": today,
        "multiplier": "1",
        "options_approved_level": 0,
        "options_trading_level": 0,
        "pattern_day_trader": false,
        "trading_blocked": false,
        "transfers_blocked": false,
        "account_blocked": false,
        "trade_suspended_by_user": false,
        "shorting_enabled": true,
        "admin_configurations": {},
        "user_configurations": null,
        "created_at": "2024-01-02T15:04:05.123456Z",
    });
    if let (Some(body), Value::Object(more)) = (body.as_object_mut(), more) {
        body.extend(more);
    }
    with_headers(axum::Json(body).into_response(), rl)
}

pub(super) async fn control(State(sim): State<SimAlpaca>, body: Bytes) -> Response {
    #[derive(Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Control {
        #[serde(default)]
        faults: Option<Faults>,
        #[serde(default)]
        prices: HashMap<String, Decimal>,
        /// Positions changed without a fill (a trade made elsewhere)
        #[serde(default)]
        positions: HashMap<String, SetPosition>,
    }
    #[derive(Deserialize)]
    #[serde(deny_unknown_fields)]
    struct SetPosition {
        qty: Decimal,
        avg_entry_price: Decimal,
    }
    let control: Control = match serde_json::from_slice(&body) {
        Ok(c) => c,
        Err(e) => return error(StatusCode::UNPROCESSABLE_ENTITY, 42210000, &e.to_string()),
    };
    if let Some((symbol, _)) = control.prices.iter().find(|(_, p)| **p <= Decimal::ZERO) {
        return error(
            StatusCode::UNPROCESSABLE_ENTITY,
            42210000,
            &format!("the price of {symbol} must be positive"),
        );
    }
    if let Some((symbol, _)) = control
        .positions
        .iter()
        .find(|(_, p)| p.avg_entry_price <= Decimal::ZERO)
    {
        return error(
            StatusCode::UNPROCESSABLE_ENTITY,
            42210000,
            &format!("the average entry price of {symbol} must be positive"),
        );
    }
    if let Some(faults) = control.faults {
        sim.set_faults(faults);
    }
    for (symbol, price) in control.prices {
        sim.set_price(&symbol, price);
    }
    for (symbol, p) in control.positions {
        sim.set_position(&symbol, p.qty, p.avg_entry_price);
    }
    status(State(sim)).await
}

/// The venue's switches and state: faults, buying power, listening stream connections.
pub(super) async fn status(State(sim): State<SimAlpaca>) -> Response {
    axum::Json(json!({
        "faults": sim.faults(),
        "buying_power": sim.buying_power().to_string(),
        "stream_listeners": sim.stream_listeners(),
        "positions": sim.positions(),
    }))
    .into_response()
}

pub(super) async fn requests(State(sim): State<SimAlpaca>) -> Response {
    axum::Json(sim.requests()).into_response()
}
