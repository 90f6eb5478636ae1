//! Orders after submission: list (with Alpaca's filters), look up, cancel, cancel all,
//! replace.

use std::collections::HashMap;

use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use chrono::{DateTime, Utc};
use serde_json::{Value, json};
use uuid::Uuid;

use super::SimAlpaca;
use super::http::{error, gate, not_found, with_headers};
use super::state::Order;
use super::submit::{CLIENT_ORDER_ID_MAX, TIMES_IN_FORCE, expiry, positive};

/// A query string as given (every value checked here, so a bad one gets Alpaca's JSON error
/// instead of a framework's plain-text 400).
pub(super) type RawQuery = Query<HashMap<String, String>>;

/// 422 with Alpaca's validation code.
pub(super) fn invalid(message: &str) -> Response {
    error(StatusCode::UNPROCESSABLE_ENTITY, 42210000, message)
}

/// The `GET /v2/orders` filters, checked.
pub(super) struct ListFilter {
    pub(super) status: String,
    pub(super) limit: usize,
    pub(super) after: Option<DateTime<Utc>>,
    pub(super) until: Option<DateTime<Utc>>,
    pub(super) ascending: bool,
    pub(super) symbols: Option<Vec<String>>,
    pub(super) side: Option<String>,
}

impl ListFilter {
    pub(super) fn parse(q: &HashMap<String, String>) -> Result<Self, String> {
        const KNOWN: [&str; 11] = [
            "status",
            "limit",
            "after",
            "until",
            "direction",
            "nested",
            "symbols",
            "side",
            "asset_class",
            "before_order_id",
            "after_order_id",
        ];
        if let Some(k) = q.keys().find(|k| !KNOWN.contains(&k.as_str())) {
            return Err(format!("unknown parameter {k}"));
        }
        let time = |k: &str| -> Result<Option<DateTime<Utc>>, String> {
            q.get(k)
                .map(|t| {
                    DateTime::parse_from_rfc3339(t)
                        .map(|t| t.with_timezone(&Utc))
                        .map_err(|_| format!("invalid {k}: {t}"))
                })
                .transpose()
        };
        let status = q.get("status").map_or("open", String::as_str).to_string();
        if !["open", "closed", "all"].contains(&status.as_str()) {
            return Err(format!("invalid status: {status}"));
        }
        let limit = match q.get("limit") {
            None => 50,
            Some(l) => match l.parse::<usize>() {
                Ok(n) if (1..=500).contains(&n) => n,
                _ => return Err(format!("invalid limit: {l} (1 to 500)")),
            },
        };
        let ascending = match q.get("direction").map(String::as_str) {
            None | Some("desc") => false,
            Some("asc") => true,
            Some(d) => return Err(format!("invalid direction: {d}")),
        };
        if let Some(n) = q.get("nested")
            && n != "true"
            && n != "false"
        {
            return Err(format!("invalid nested: {n}"));
        }
        let side = q.get("side").cloned();
        if let Some(side) = &side
            && side != "buy"
            && side != "sell"
        {
            return Err(format!("invalid side: {side}"));
        }
        Ok(Self {
            status,
            limit,
            after: time("after")?,
            until: time("until")?,
            ascending,
            symbols: q
                .get("symbols")
                .map(|s| s.split(',').map(|s| s.trim().to_string()).collect()),
            side,
        })
    }

    pub(super) fn keeps(&self, o: &Order) -> bool {
        (match self.status.as_str() {
            "open" => o.is_open(),
            "closed" => !o.is_open(),
            _ => true,
        }) && self.after.is_none_or(|a| o.created_at > a)
            && self.until.is_none_or(|u| o.created_at < u)
            && self
                .symbols
                .as_ref()
                .is_none_or(|s| s.iter().any(|s| s == &o.symbol))
            && self.side.as_ref().is_none_or(|s| s == &o.side)
    }
}

pub(super) async fn list_orders(
    State(sim): State<SimAlpaca>,
    headers: HeaderMap,
    Query(q): RawQuery,
) -> Response {
    let rl = match gate(&sim, &headers, "GET", "/v2/orders", None) {
        Ok(rl) => rl,
        Err(r) => return r,
    };
    let filter = match ListFilter::parse(&q) {
        Ok(f) => f,
        Err(m) => return with_headers(invalid(&m), rl),
    };
    let state = sim.lock();
    let mut orders: Vec<&Order> = state.orders.values().filter(|o| filter.keeps(o)).collect();
    if !filter.ascending {
        orders.reverse();
    }
    let body: Vec<Value> = orders
        .into_iter()
        .take(filter.limit)
        .map(Order::json)
        .collect();
    drop(state);
    with_headers(axum::Json(body).into_response(), rl)
}

pub(super) async fn order_by_client(
    State(sim): State<SimAlpaca>,
    headers: HeaderMap,
    Query(q): RawQuery,
) -> Response {
    let rl = match gate(&sim, &headers, "GET", "/v2/orders:by_client_order_id", None) {
        Ok(rl) => rl,
        Err(r) => return r,
    };
    let Some(client_order_id) = q.get("client_order_id").filter(|c| !c.is_empty()) else {
        return with_headers(invalid("client_order_id is required"), rl);
    };
    let state = sim.lock();
    let found = state
        .by_client
        .get(client_order_id)
        .and_then(|id| state.orders.get(id))
        .map(Order::json);
    drop(state);
    with_headers(
        match found {
            Some(o) => axum::Json(o).into_response(),
            None => not_found(),
        },
        rl,
    )
}

pub(super) async fn get_order(
    State(sim): State<SimAlpaca>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Response {
    let rl = match gate(&sim, &headers, "GET", &format!("/v2/orders/{id}"), None) {
        Ok(rl) => rl,
        Err(r) => return r,
    };
    let state = sim.lock();
    let found = Uuid::parse_str(&id)
        .ok()
        .and_then(|id| state.orders.get(&id))
        .map(Order::json);
    drop(state);
    with_headers(
        match found {
            Some(o) => axum::Json(o).into_response(),
            None => not_found(),
        },
        rl,
    )
}

pub(super) async fn cancel_order(
    State(sim): State<SimAlpaca>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Response {
    let rl = match gate(&sim, &headers, "DELETE", &format!("/v2/orders/{id}"), None) {
        Ok(rl) => rl,
        Err(r) => return r,
    };
    let Ok(id) = Uuid::parse_str(&id) else {
        return with_headers(not_found(), rl);
    };
    let result = sim.lock().cancel(id);
    with_headers(
        match result {
            Ok(_) => StatusCode::NO_CONTENT.into_response(),
            Err(r) => r,
        },
        rl,
    )
}

pub(super) async fn cancel_all(State(sim): State<SimAlpaca>, headers: HeaderMap) -> Response {
    let rl = match gate(&sim, &headers, "DELETE", "/v2/orders", None) {
        Ok(rl) => rl,
        Err(r) => return r,
    };
    let mut state = sim.lock();
    let open: Vec<Uuid> = state
        .orders
        .values()
        .filter(|o| o.is_open())
        .map(|o| o.id)
        .collect();
    let results: Vec<Value> = open
        .into_iter()
        .map(|id| match state.cancel(id) {
            Ok(order) => json!({"id": id, "status": 200, "body": order}),
            Err(_) => json!({"id": id, "status": 500, "body": {"code": 50010000, "message": "cancel failed"}}),
        })
        .collect();
    drop(state);
    with_headers(
        (StatusCode::MULTI_STATUS, axum::Json(results)).into_response(),
        rl,
    )
}

pub(super) async fn replace_order(
    State(sim): State<SimAlpaca>,
    headers: HeaderMap,
    Path(id): Path<String>,
    body: Bytes,
) -> Response {
    let rl = match gate(&sim, &headers, "PATCH", &format!("/v2/orders/{id}"), None) {
        Ok(rl) => rl,
        Err(r) => return r,
    };
    let Ok(changes) = serde_json::from_slice::<Value>(&body) else {
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
    let found: Option<Order> = Uuid::parse_str(&id)
        .ok()
        .and_then(|id| state.orders.get(&id).cloned());
    let Some(old) = found else {
        return with_headers(not_found(), rl);
    };
    if !old.is_open() {
        let message = format!("order is already in \"{}\" state", old.status);
        return with_headers(
            error(StatusCode::UNPROCESSABLE_ENTITY, 42210000, &message),
            rl,
        );
    }
    let mut new = old.clone();
    // as strict as a submission: known fields only, each of the right kind for the order
    let apply = |new: &mut Order| -> Result<(), String> {
        let Some(fields) = changes.as_object() else {
            return Err("the body must be a JSON object".into());
        };
        const FIELDS: [&str; 6] = [
            "qty",
            "time_in_force",
            "limit_price",
            "stop_price",
            "trail",
            "client_order_id",
        ];
        if let Some(k) = fields.keys().find(|k| !FIELDS.contains(&k.as_str())) {
            return Err(format!("{k} cannot be replaced"));
        }
        if new.notional.is_some() {
            return Err("a notional order cannot be replaced".into());
        }
        if let Some(q) = positive(&changes, "qty")? {
            if !q.fract().is_zero() {
                return Err("only whole shares can be replaced".into());
            }
            new.qty = q;
        }
        if let Some(p) = positive(&changes, "limit_price")? {
            if !matches!(new.order_type.as_str(), "limit" | "stop_limit") {
                return Err(format!("a {} order has no limit_price", new.order_type));
            }
            new.limit_price = Some(p);
        }
        if let Some(p) = positive(&changes, "stop_price")? {
            if !matches!(new.order_type.as_str(), "stop" | "stop_limit") {
                return Err(format!("a {} order has no stop_price", new.order_type));
            }
            new.stop_price = Some(p);
        }
        if let Some(t) = positive(&changes, "trail")? {
            if new.order_type != "trailing_stop" {
                return Err(format!("a {} order has no trail", new.order_type));
            }
            if new.trail_percent.is_some() {
                new.trail_percent = Some(t);
            } else {
                new.trail_price = Some(t);
            }
        }
        match changes.get("time_in_force") {
            None | Some(Value::Null) => {}
            Some(Value::String(t)) if TIMES_IN_FORCE.contains(&t.as_str()) => {
                new.time_in_force = t.clone();
                new.expires_at = expiry(Utc::now(), t);
            }
            Some(t) => return Err(format!("invalid time_in_force: {t}")),
        }
        match changes.get("client_order_id") {
            None | Some(Value::Null) => {}
            Some(Value::String(c)) if c.chars().count() <= CLIENT_ORDER_ID_MAX => {}
            Some(_) => {
                return Err(format!(
                    "client_order_id must be a string of at most {CLIENT_ORDER_ID_MAX} characters"
                ));
            }
        }
        Ok(())
    };
    if let Err(m) = apply(&mut new) {
        return with_headers(error(StatusCode::UNPROCESSABLE_ENTITY, 42210000, &m), rl);
    }
    let client_order_id = changes
        .get("client_order_id")
        .and_then(Value::as_str)
        .map_or_else(|| Uuid::new_v4().to_string(), str::to_string);
    if state.by_client.contains_key(&client_order_id) {
        return with_headers(
            error(
                StatusCode::UNPROCESSABLE_ENTITY,
                40010001,
                "client_order_id must be unique",
            ),
            rl,
        );
    }
    let now = Utc::now();
    new.id = Uuid::new_v4();
    new.client_order_id = client_order_id.clone();
    new.replaces = Some(old.id);
    new.created_at = now;
    new.updated_at = now;
    new.status = "new".into();
    if let Some(o) = state.orders.get_mut(&old.id) {
        o.status = "replaced".into();
        o.replaced_at = Some(now);
        o.replaced_by = Some(new.id);
        o.updated_at = now;
    }
    if let Some(o) = state.orders.get(&old.id).cloned() {
        state.emit("replaced", &o, None);
    }
    state.by_client.insert(client_order_id, new.id);
    state.orders.insert(new.id, new.clone());
    state.emit("new", &new, None);
    state.try_fill(new.id);
    let snapshot = state.orders.get(&new.id).map(Order::json);
    drop(state);
    with_headers(axum::Json(snapshot).into_response(), rl)
}
