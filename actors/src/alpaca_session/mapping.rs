//! Alpaca's shapes and ours: the order request body, status mapping (the trade execution
//! model's table), error extraction, and exact decimals from JSON.

use std::str::FromStr;

use rust_decimal::Decimal;
use serde_json::{Value, json};

use crate::domain::NewDecision;

/// The `trade_executions` status of an Alpaca order status, and whether the status is one
/// tradegate knows. Unknown statuses change nothing (and are logged), never fail.
pub fn execution_status(alpaca: &str) -> Option<&'static str> {
    Some(match alpaca {
        "new"
        | "pending_new"
        | "accepted_for_bidding"
        | "held"
        | "pending_review"
        | "calculated"
        | "stopped"
        | "suspended"
        | "done_for_day" => "submitted",
        "accepted" | "pending_replace" | "pending_cancel" | "replaced" => "accepted",
        "partially_filled" => "partial_fill",
        "filled" => "filled",
        "rejected" => "rejected",
        "canceled" | "expired" => "cancelled",
        _ => return None,
    })
}

/// Whether a status is one of the documented Alpaca order statuses.
pub fn is_known_status(alpaca: &str) -> bool {
    execution_status(alpaca).is_some()
}

/// The `POST /v2/orders` body of a decision: numbers as decimal strings, the decision id as
/// `client_order_id`.
pub fn order_body(d: &NewDecision) -> Value {
    let mut body = json!({
        "symbol": d.symbol,
        "side": d.side.as_str(),
        "type": d.order_type.as_str(),
        "time_in_force": d.time_in_force.as_str(),
        "client_order_id": d.decision_id.to_string(),
    });
    match (d.quantity, d.notional) {
        (_, Some(n)) => body["notional"] = Value::String(n.normalize().to_string()),
        (Some(q), None) => body["qty"] = Value::String(q.normalize().to_string()),
        (None, None) => {}
    }
    if let Some(p) = d.limit_price {
        body["limit_price"] = Value::String(p.normalize().to_string());
    }
    if let Some(p) = d.stop_price {
        body["stop_price"] = Value::String(p.normalize().to_string());
    }
    body
}

/// An exact decimal from a JSON string or number (Alpaca sends strings).
pub fn decimal(v: Option<&Value>) -> Option<Decimal> {
    match v? {
        Value::String(s) => Decimal::from_str(s).ok(),
        Value::Number(n) => Decimal::from_str(&n.to_string()).ok(),
        _ => None,
    }
}

/// An order as Alpaca lists it, read for the external-order look-up; `None` without an id.
pub fn listed_order(order: &Value) -> Option<crate::store::external_orders::ListedOrder> {
    let text = |key: &str| {
        order[key]
            .as_str()
            .filter(|s| !s.is_empty())
            .map(str::to_string)
    };
    let broker_order_id = text("id")?;
    let client_order_id = text("client_order_id");
    Some(crate::store::external_orders::ListedOrder {
        decision: client_order_id.as_deref().and_then(decision_of),
        broker_order_id,
        client_order_id,
        replaces: text("replaces"),
        symbol: text("symbol"),
        side: text("side"),
        // a quantity that is not a non-negative number is not stored as one
        quantity: decimal(order.get("qty")).filter(|q| !q.is_sign_negative()),
        filled_quantity: decimal(order.get("filled_qty")).filter(|q| !q.is_sign_negative()),
        order_type: text("type").or_else(|| text("order_type")),
        status: text("status").unwrap_or_else(|| "unknown".into()),
        submitted_at: order["submitted_at"]
            .as_str()
            .and_then(|t| chrono::DateTime::parse_from_rfc3339(t).ok())
            .map(|t| t.with_timezone(&chrono::Utc)),
        raw: order.clone(),
    })
}

/// Alpaca's error code and message from an error body (`{"code": 40310000, "message": ...}`).
pub fn error_of(body: &Value) -> (Option<String>, Option<String>) {
    let code = match body.get("code") {
        Some(Value::Number(n)) => Some(n.to_string()),
        Some(Value::String(s)) => Some(s.clone()),
        _ => None,
    };
    let message = body
        .get("message")
        .and_then(Value::as_str)
        .map(str::to_string);
    (code, message)
}

/// The decision id in a client order id: ours are the decision id, or `<decision id>:r<n>` for
/// a replacement.
pub fn decision_of(client_order_id: &str) -> Option<uuid::Uuid> {
    let id = client_order_id.split(':').next()?;
    uuid::Uuid::parse_str(id).ok()
}
