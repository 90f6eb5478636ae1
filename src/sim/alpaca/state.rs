//! The venue's state: its orders, buying power and positions, what it received and sent,
//! and the events it emits as orders fill.

use std::collections::{HashMap, VecDeque};
use std::time::{Duration, Instant};

use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::Response;
use chrono::{DateTime, SecondsFormat, Utc};
use indexmap::IndexMap;
use rust_decimal::Decimal;
use serde_json::{Value, json};
use tokio::sync::mpsc;
use uuid::Uuid;

use super::http::{error, not_found};
use super::positions::Holding;
use super::{EmittedEvent, Faults, KEPT_ANSWERS, SeenRequest, SentAnswer, SimConfig};

#[derive(Debug, Clone)]
pub(super) struct Order {
    pub(super) id: Uuid,
    pub(super) client_order_id: String,
    pub(super) symbol: String,
    pub(super) side: String,
    /// shares: as ordered, or (a notional order) what the notional buys at submission
    pub(super) qty: Decimal,
    /// a dollar amount ordered instead of a quantity
    pub(super) notional: Option<Decimal>,
    pub(super) filled_qty: Decimal,
    pub(super) filled_avg_price: Option<Decimal>,
    pub(super) order_type: String,
    pub(super) time_in_force: String,
    pub(super) limit_price: Option<Decimal>,
    pub(super) stop_price: Option<Decimal>,
    pub(super) trail_price: Option<Decimal>,
    pub(super) trail_percent: Option<Decimal>,
    /// a trailing stop's high-water mark
    pub(super) hwm: Option<Decimal>,
    pub(super) extended_hours: bool,
    pub(super) status: String,
    pub(super) created_at: DateTime<Utc>,
    pub(super) expires_at: DateTime<Utc>,
    pub(super) updated_at: DateTime<Utc>,
    pub(super) filled_at: Option<DateTime<Utc>>,
    pub(super) canceled_at: Option<DateTime<Utc>>,
    pub(super) expired_at: Option<DateTime<Utc>>,
    pub(super) replaced_at: Option<DateTime<Utc>>,
    pub(super) replaced_by: Option<Uuid>,
    pub(super) replaces: Option<Uuid>,
    /// buying power held for the unfilled part of a buy
    pub(super) reserved_price: Decimal,
}

pub(super) fn ts(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Nanos, true)
}

pub(super) fn opt_ts(t: Option<DateTime<Utc>>) -> Value {
    t.map_or(Value::Null, |t| Value::String(ts(t)))
}

pub(super) fn opt_dec(d: Option<Decimal>) -> Value {
    d.map_or(Value::Null, |d| Value::String(d.normalize().to_string()))
}

impl Order {
    pub(super) fn is_open(&self) -> bool {
        matches!(
            self.status.as_str(),
            "new" | "accepted" | "partially_filled" | "pending_new"
        )
    }

    /// Alpaca's order object.
    pub(super) fn json(&self) -> Value {
        json!({
            "id": self.id,
            "client_order_id": self.client_order_id,
            "created_at": ts(self.created_at),
            "updated_at": ts(self.updated_at),
            "submitted_at": ts(self.created_at),
            "filled_at": opt_ts(self.filled_at),
            "expired_at": opt_ts(self.expired_at),
            "canceled_at": opt_ts(self.canceled_at),
            "failed_at": null,
            "replaced_at": opt_ts(self.replaced_at),
            "replaced_by": self.replaced_by,
            "replaces": self.replaces,
            "asset_id": Uuid::new_v5(&Uuid::NAMESPACE_OID, self.symbol.as_bytes()),
            "symbol": self.symbol,
            "asset_class": "us_equity",
            "notional": opt_dec(self.notional),
            "qty": if self.notional.is_some() { Value::Null } else { opt_dec(Some(self.qty)) },
            "filled_qty": self.filled_qty.normalize().to_string(),
            "filled_avg_price": opt_dec(self.filled_avg_price),
            "order_class": "",
            "order_type": self.order_type,
            "type": self.order_type,
            "side": self.side,
            "position_intent": if self.side == "buy" { "buy_to_open" } else { "sell_to_close" },
            "time_in_force": self.time_in_force,
            "limit_price": opt_dec(self.limit_price),
            "stop_price": opt_dec(self.stop_price),
            "status": self.status,
            "extended_hours": self.extended_hours,
            "legs": null,
            "trail_percent": opt_dec(self.trail_percent),
            "trail_price": opt_dec(self.trail_price),
            "hwm": opt_dec(self.hwm),
            "ratio_qty": null,
            "subtag": null,
            "source": null,
            "expires_at": ts(self.expires_at),
        })
    }
}

pub(super) enum StreamCmd {
    Event(Value),
    Drop,
}

#[derive(Debug)]
pub(super) struct VenueState {
    pub(super) config: SimConfig,
    pub(super) faults: Faults,
    pub(super) orders: IndexMap<Uuid, Order>,
    pub(super) by_client: HashMap<String, Uuid>,
    pub(super) buying_power: Decimal,
    /// Each symbol's position and its cost, from the fills made (and the switch)
    pub(super) holdings: HashMap<String, Holding>,
    pub(super) seen: Vec<SeenRequest>,
    pub(super) answers: Vec<SentAnswer>,
    pub(super) window: VecDeque<Instant>,
    #[allow(clippy::type_complexity)]
    pub(super) listeners: Vec<mpsc::UnboundedSender<StreamCmdBox>>,
    pub(super) emitted: Vec<EmittedEvent>,
}

// the command type is private; a box keeps VenueState's Debug derive simple
pub(super) struct StreamCmdBox(pub(super) StreamCmd);

impl std::fmt::Debug for StreamCmdBox {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("StreamCmd")
    }
}

impl VenueState {
    pub(super) fn price(&self, symbol: &str) -> Decimal {
        self.config
            .prices
            .get(symbol)
            .copied()
            .unwrap_or(self.config.default_price)
    }

    pub(super) fn emit(&mut self, event: &str, order: &Order, fill: Option<(Decimal, Decimal)>) {
        let now = Utc::now();
        let mut data = json!({
            "event": event,
            "execution_id": Uuid::new_v4(),
            "order": order.json(),
            "timestamp": ts(now),
        });
        if let Some((qty, price)) = fill {
            data["qty"] = Value::String(qty.normalize().to_string());
            data["price"] = Value::String(price.normalize().to_string());
            data["position_qty"] = Value::String(
                self.holdings
                    .get(&order.symbol)
                    .map(|h| h.qty)
                    .unwrap_or_default()
                    .normalize()
                    .to_string(),
            );
        }
        let execution_id = data["execution_id"]
            .as_str()
            .unwrap_or_default()
            .to_string();
        let message = json!({"stream": "trade_updates", "data": data});
        let copies = if self.faults.duplicate_events { 2 } else { 1 };
        self.listeners.retain(|l| {
            (0..copies).all(|_| {
                l.send(StreamCmdBox(StreamCmd::Event(message.clone())))
                    .is_ok()
            })
        });
        if self.emitted.len() >= KEPT_ANSWERS {
            self.emitted.drain(..KEPT_ANSWERS / 10);
        }
        self.emitted.push(EmittedEvent {
            execution_id,
            client_order_id: order.client_order_id.clone(),
            event: event.to_string(),
            at: now,
            listeners: self.listeners.len(),
        });
    }

    /// Fills order `id` if it is marketable at its symbol's price.
    pub(super) fn try_fill(&mut self, id: Uuid) {
        let Some(order) = self.orders.get(&id).cloned() else {
            return;
        };
        if !order.is_open() {
            return;
        }
        let price = self.price(&order.symbol);
        let marketable = match (order.order_type.as_str(), order.limit_price) {
            ("market", _) => true,
            ("limit", Some(limit)) => {
                if order.side == "buy" {
                    price <= limit
                } else {
                    price >= limit
                }
            }
            _ => false,
        };
        if !marketable {
            return;
        }
        let left = order.qty - order.filled_qty;
        let half = (left / Decimal::TWO).floor();
        let parts =
            if self.config.partial_fills && half > Decimal::ZERO && order.filled_qty.is_zero() {
                vec![half, left - half]
            } else {
                vec![left]
            };
        for part in parts {
            self.fill(id, part, price);
        }
    }

    /// Fills `part` of open order `id` at `price`: its cumulative quantity and average, the
    /// position, buying power, and the event on the stream.
    pub(super) fn fill(&mut self, id: Uuid, part: Decimal, price: Decimal) {
        {
            let Some(o) = self.orders.get_mut(&id) else {
                return;
            };
            let before = o.filled_qty;
            o.filled_qty += part;
            o.filled_avg_price = Some(match o.filled_avg_price {
                Some(avg) => ((avg * before + price * part) / o.filled_qty).round_dp(8),
                None => price,
            });
            let now = Utc::now();
            o.updated_at = now;
            let done = o.filled_qty >= o.qty;
            o.status = if done { "filled" } else { "partially_filled" }.into();
            if done {
                o.filled_at = Some(now);
            }
            let signed = if o.side == "buy" { part } else { -part };
            let snapshot = o.clone();
            let holding = self.holdings.entry(snapshot.symbol.clone()).or_default();
            *holding = holding.fill(signed, price);
            if snapshot.side == "buy" {
                // the reservation was at the order's reference price; settle at the fill price
                self.buying_power += (snapshot.reserved_price - price) * part;
            } else {
                self.buying_power += price * part;
            }
            self.emit(
                if done { "fill" } else { "partial_fill" },
                &snapshot,
                Some((part, price)),
            );
        }
    }

    pub(super) fn rate_limited(&mut self, now: Instant) -> (bool, HeaderMap) {
        let limit = self.config.rate_limit_per_min;
        let mut headers = HeaderMap::new();
        if limit == 0 {
            return (false, headers);
        }
        while self
            .window
            .front()
            .is_some_and(|t| now.duration_since(*t) >= Duration::from_secs(60))
        {
            self.window.pop_front();
        }
        let limited = self.window.len() >= limit as usize;
        if !limited {
            self.window.push_back(now);
        }
        let remaining = limit as usize - self.window.len().min(limit as usize);
        let reset = Utc::now().timestamp()
            + self
                .window
                .front()
                .map_or(60, |t| 60 - now.duration_since(*t).as_secs() as i64);
        for (name, value) in [
            ("x-ratelimit-limit", limit.to_string()),
            ("x-ratelimit-remaining", remaining.to_string()),
            ("x-ratelimit-reset", reset.to_string()),
        ] {
            if let Ok(v) = HeaderValue::from_str(&value) {
                headers.insert(name, v);
            }
        }
        (limited, headers)
    }
}

impl VenueState {
    pub(super) fn cancel(&mut self, id: Uuid) -> Result<Value, Response> {
        let Some(order) = self.orders.get_mut(&id) else {
            return Err(not_found());
        };
        if !order.is_open() {
            let message = format!("order is already in \"{}\" state", order.status);
            return Err(error(StatusCode::UNPROCESSABLE_ENTITY, 42210000, &message));
        }
        let now = Utc::now();
        order.status = "canceled".into();
        order.canceled_at = Some(now);
        order.updated_at = now;
        let snapshot = order.clone();
        if snapshot.side == "buy" {
            self.buying_power += (snapshot.qty - snapshot.filled_qty) * snapshot.reserved_price;
        }
        self.emit("canceled", &snapshot, None);
        Ok(snapshot.json())
    }
}
