//! `POST /v2/orders`: the submission checked field by field as Alpaca's definition and the
//! live API do, the order made, filled when marketable.

use std::str::FromStr;

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use chrono::{DateTime, Utc};
use rust_decimal::Decimal;
use serde_json::{Value, json};
use uuid::Uuid;

use super::SimAlpaca;
use super::http::{error, gate, with_headers};
use super::state::Order;

pub(super) fn dec_field(body: &Value, key: &str) -> Result<Option<Decimal>, String> {
    match body.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Decimal::from_str(s)
            .map(Some)
            .map_err(|_| format!("invalid {key}")),
        Some(Value::Number(n)) => Decimal::from_str(&n.to_string())
            .map(Some)
            .map_err(|_| format!("invalid {key}")),
        Some(_) => Err(format!("invalid {key}")),
    }
}

/// The order types and times in force Alpaca's definition lists.
pub(super) const ORDER_TYPES: [&str; 5] =
    ["market", "limit", "stop", "stop_limit", "trailing_stop"];
pub(super) const TIMES_IN_FORCE: [&str; 6] = ["day", "gtc", "opg", "cls", "ioc", "fok"];
/// Alpaca's longest client order id.
pub(super) const CLIENT_ORDER_ID_MAX: usize = 128;

/// A positive decimal field, or the 422 message.
pub(super) fn positive(body: &Value, key: &str) -> Result<Option<Decimal>, String> {
    match dec_field(body, key)? {
        Some(v) if v <= Decimal::ZERO => Err(format!("{key} must be > 0")),
        v => Ok(v),
    }
}

/// When an order submitted at `at` with `time_in_force` expires: a day order at the close
/// (20:00 UTC, 16:00 New York in summer) of its day, others after 90 days (Alpaca's GTC rule).
pub(super) fn expiry(at: DateTime<Utc>, time_in_force: &str) -> DateTime<Utc> {
    let close = at
        .date_naive()
        .and_hms_opt(20, 0, 0)
        .map(|t| t.and_utc())
        .unwrap_or(at);
    match time_in_force {
        "day" | "opg" | "cls" | "ioc" | "fok" if close > at => close,
        "day" | "opg" | "cls" | "ioc" | "fok" => close + chrono::Duration::days(1),
        _ => at + chrono::Duration::days(90),
    }
}

/// The order a submission describes, or the 422 message.
pub(super) fn parse_order(body: &Value, price: impl Fn(&str) -> Decimal) -> Result<Order, String> {
    let text = |k: &str| -> Result<String, String> {
        match body.get(k) {
            None | Some(Value::Null) => Ok(String::new()),
            Some(Value::String(s)) => Ok(s.clone()),
            Some(_) => Err(format!("{k} must be a string")),
        }
    };
    let symbol = text("symbol")?;
    if symbol.is_empty() {
        return Err("symbol is required".into());
    }
    let side = text("side")?;
    if side != "buy" && side != "sell" {
        return Err("invalid side".into());
    }
    let order_type = text("type")?;
    if !ORDER_TYPES.contains(&order_type.as_str()) {
        return Err("invalid order type".into());
    }
    let time_in_force = text("time_in_force")?;
    if !TIMES_IN_FORCE.contains(&time_in_force.as_str()) {
        return Err("invalid time_in_force".into());
    }
    let qty = positive(body, "qty")?;
    let notional = positive(body, "notional")?;
    let qty = match (qty, notional) {
        (Some(_), Some(_)) => return Err("only one of qty or notional may be given".into()),
        (None, None) => return Err("qty or notional is required".into()),
        (Some(q), None) => {
            if !q.fract().is_zero() && (order_type != "market" || time_in_force != "day") {
                return Err(
                    "fractional orders must be market orders with time_in_force day".into(),
                );
            }
            q
        }
        (None, Some(n)) => {
            if order_type != "market" || time_in_force != "day" {
                return Err("notional orders must be market orders with time_in_force day".into());
            }
            let shares = n
                .checked_div(price(&symbol))
                .map(|q| q.round_dp_with_strategy(9, rust_decimal::RoundingStrategy::ToZero))
                .unwrap_or_default();
            if shares <= Decimal::ZERO {
                return Err("notional is too small to buy any share".into());
            }
            shares
        }
    };
    let limit_price = positive(body, "limit_price")?;
    let stop_price = positive(body, "stop_price")?;
    let trail_price = positive(body, "trail_price")?;
    let trail_percent = positive(body, "trail_percent")?;
    if matches!(order_type.as_str(), "limit" | "stop_limit") && limit_price.is_none() {
        return Err("limit_price is required".into());
    }
    if matches!(order_type.as_str(), "stop" | "stop_limit") && stop_price.is_none() {
        return Err("stop_price is required".into());
    }
    if !matches!(order_type.as_str(), "limit" | "stop_limit") && limit_price.is_some() {
        return Err(format!(
            "limit_price is not allowed for a {order_type} order"
        ));
    }
    if !matches!(order_type.as_str(), "stop" | "stop_limit") && stop_price.is_some() {
        return Err(format!(
            "stop_price is not allowed for a {order_type} order"
        ));
    }
    if order_type == "trailing_stop" {
        if trail_price.is_some() == trail_percent.is_some() {
            return Err("exactly one of trail_price or trail_percent is required".into());
        }
    } else if trail_price.is_some() || trail_percent.is_some() {
        return Err("trail_price and trail_percent are only for trailing_stop orders".into());
    }
    let extended_hours = match body.get("extended_hours") {
        None | Some(Value::Null) => false,
        Some(Value::Bool(b)) => *b,
        Some(_) => return Err("extended_hours must be a boolean".into()),
    };
    if extended_hours && (order_type != "limit" || time_in_force != "day") {
        return Err("extended hours orders must be limit orders with time_in_force day".into());
    }
    let client_order_id = match text("client_order_id")?.as_str() {
        c if c.chars().count() > CLIENT_ORDER_ID_MAX => {
            return Err(format!(
                "client_order_id must be at most {CLIENT_ORDER_ID_MAX} characters"
            ));
        }
        "" => Uuid::new_v4().to_string(),
        c => c.to_string(),
    };
    let now = Utc::now();
    let market = price(&symbol);
    let reserved_price = limit_price.or(stop_price).unwrap_or(market);
    Ok(Order {
        id: Uuid::new_v4(),
        client_order_id,
        symbol,
        side,
        qty,
        notional,
        filled_qty: Decimal::ZERO,
        filled_avg_price: None,
        hwm: (order_type == "trailing_stop").then_some(market),
        order_type,
        expires_at: expiry(now, &time_in_force),
        time_in_force,
        limit_price,
        stop_price,
        trail_price,
        trail_percent,
        extended_hours,
        status: "new".into(),
        created_at: now,
        updated_at: now,
        filled_at: None,
        canceled_at: None,
        expired_at: None,
        replaced_at: None,
        replaced_by: None,
        replaces: None,
        reserved_price,
    })
}

pub(super) async fn submit_order(
    State(sim): State<SimAlpaca>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let parsed: Result<Value, _> = serde_json::from_slice(&body);
    let rl = match gate(&sim, &headers, "POST", "/v2/orders", parsed.as_ref().ok()) {
        Ok(rl) => rl,
        Err(r) => return r,
    };
    let Ok(body) = parsed else {
        return with_headers(
            error(
                StatusCode::BAD_REQUEST,
                40010000,
                "request body format is invalid",
            ),
            rl,
        );
    };
    let mut state = sim.lock();
    let order = match parse_order(&body, |s| state.price(s)) {
        Ok(o) => o,
        Err(m) => return with_headers(error(StatusCode::UNPROCESSABLE_ENTITY, 42210000, &m), rl),
    };
    if state.by_client.contains_key(&order.client_order_id) {
        return with_headers(
            error(
                StatusCode::UNPROCESSABLE_ENTITY,
                40010001,
                "client_order_id must be unique",
            ),
            rl,
        );
    }
    if order.side == "buy" {
        let cost = order.qty * order.reserved_price;
        if cost > state.buying_power {
            let mut r = (
                StatusCode::FORBIDDEN,
                axum::Json(json!({
                    "code": 40310000,
                    "message": "insufficient buying power",
                    "buying_power": state.buying_power.normalize().to_string(),
                    "cost_basis": cost.normalize().to_string(),
                })),
            )
                .into_response();
            r.headers_mut().extend(rl);
            return r;
        }
        state.buying_power -= cost;
    }
    let id = order.id;
    state.by_client.insert(order.client_order_id.clone(), id);
    let snapshot = order.json();
    state.orders.insert(id, order.clone());
    state.emit("new", &order, None);
    state.try_fill(id);
    drop(state);
    with_headers((StatusCode::OK, axum::Json(snapshot)).into_response(), rl)
}
