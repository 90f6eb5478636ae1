//! A simulated Alpaca venue: the Trading API v2 subset the order path uses (orders, account)
//! over HTTP and the `trade_updates` stream over WebSocket (JSON in binary frames, like the
//! paper endpoint). It checks the auth headers, keeps orders and buying power, fills market
//! orders at a per-symbol price and limit orders when marketable (optionally in two partial
//! fills), answers with Alpaca's error shapes (403 buying power, 422 validation, duplicate
//! client order id, 404, 429 with rate-limit headers), and has fault switches (delay, 500s,
//! dropped stream, doubled events) for tests.
// handlers answer early with a ready HTTP response; boxing it would buy nothing here
#![allow(clippy::result_large_err)]

use std::collections::{HashMap, VecDeque};
use std::str::FromStr;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::Bytes;
use axum::extract::ws::{Message, WebSocket, WebSocketUpgrade};
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::serve::ListenerExt;
use chrono::{DateTime, SecondsFormat, Utc};
use indexmap::IndexMap;
use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use tokio::net::TcpListener;
use tokio::sync::mpsc;
use uuid::Uuid;

use super::tls::{HandshakeStats, ServerTls, TlsListener};

/// How the venue starts.
#[derive(Debug, Clone)]
pub struct SimConfig {
    /// The key id clients must send
    pub key_id: String,
    /// The secret clients must send
    pub secret_key: String,
    /// Cash available for buys
    pub buying_power: Decimal,
    /// Price per symbol; others trade at `default_price`
    pub prices: HashMap<String, Decimal>,
    /// The price of symbols not in `prices`
    pub default_price: Decimal,
    /// Fill marketable orders in two parts (half, then the rest)
    pub partial_fills: bool,
    /// Requests per rolling minute before 429 (Alpaca: 200); 0: no limit
    pub rate_limit_per_min: u32,
}

impl Default for SimConfig {
    fn default() -> Self {
        Self {
            key_id: "SIMKEY".into(),
            secret_key: "SIMSECRET".into(),
            buying_power: Decimal::from(100_000),
            prices: HashMap::new(),
            default_price: Decimal::from(100),
            partial_fills: false,
            rate_limit_per_min: 200,
        }
    }
}

/// The fault switches, settable while the venue runs.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Faults {
    /// Every HTTP answer waits this long
    pub delay_ms: u64,
    /// The next this-many HTTP requests fail with 500 (after being counted)
    pub fail_next: u32,
    /// Every stream event is delivered twice
    pub duplicate_events: bool,
    /// Stream clients are cut off and new ones refused while set (events in between are lost,
    /// as on the real stream)
    pub stream_down: bool,
    /// The next this-many HTTP requests are refused with 429 (rate limit), as when another
    /// client of the same account used the budget up
    pub throttle_next: u32,
    /// The next this-many order submissions (`POST /v2/orders`) are processed and answered
    /// with their status and headers, but the connection breaks in the middle of the body
    pub cut_next_submissions: u32,
}

/// One HTTP request the venue received.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SeenRequest {
    /// Arrival number, from 1
    pub seq: u64,
    /// HTTP method
    pub method: String,
    /// Path
    pub path: String,
    /// When it arrived
    pub received_at: DateTime<Utc>,
    /// The `client_order_id` of an order submission
    pub client_order_id: Option<String>,
    /// The symbol of an order submission
    pub symbol: Option<String>,
}

/// How many of its latest answers the venue keeps.
const KEPT_ANSWERS: usize = 10_000;

/// One HTTP answer the venue sent, its body byte for byte.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SentAnswer {
    /// The request's method
    pub method: String,
    /// The request's path
    pub path: String,
    /// The status sent
    pub status: u16,
    /// The body as sent
    pub body: String,
}

#[derive(Debug, Clone)]
struct Order {
    id: Uuid,
    client_order_id: String,
    symbol: String,
    side: String,
    /// shares: as ordered, or (a notional order) what the notional buys at submission
    qty: Decimal,
    /// a dollar amount ordered instead of a quantity
    notional: Option<Decimal>,
    filled_qty: Decimal,
    filled_avg_price: Option<Decimal>,
    order_type: String,
    time_in_force: String,
    limit_price: Option<Decimal>,
    stop_price: Option<Decimal>,
    trail_price: Option<Decimal>,
    trail_percent: Option<Decimal>,
    /// a trailing stop's high-water mark
    hwm: Option<Decimal>,
    extended_hours: bool,
    status: String,
    created_at: DateTime<Utc>,
    expires_at: DateTime<Utc>,
    updated_at: DateTime<Utc>,
    filled_at: Option<DateTime<Utc>>,
    canceled_at: Option<DateTime<Utc>>,
    expired_at: Option<DateTime<Utc>>,
    replaced_at: Option<DateTime<Utc>>,
    replaced_by: Option<Uuid>,
    replaces: Option<Uuid>,
    /// buying power held for the unfilled part of a buy
    reserved_price: Decimal,
}

fn ts(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Nanos, true)
}

fn opt_ts(t: Option<DateTime<Utc>>) -> Value {
    t.map_or(Value::Null, |t| Value::String(ts(t)))
}

fn opt_dec(d: Option<Decimal>) -> Value {
    d.map_or(Value::Null, |d| Value::String(d.normalize().to_string()))
}

impl Order {
    fn is_open(&self) -> bool {
        matches!(
            self.status.as_str(),
            "new" | "accepted" | "partially_filled" | "pending_new"
        )
    }

    /// Alpaca's order object.
    fn json(&self) -> Value {
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

enum StreamCmd {
    Event(Value),
    Drop,
}

#[derive(Debug)]
struct VenueState {
    config: SimConfig,
    faults: Faults,
    orders: IndexMap<Uuid, Order>,
    by_client: HashMap<String, Uuid>,
    buying_power: Decimal,
    positions: HashMap<String, Decimal>,
    seen: Vec<SeenRequest>,
    answers: Vec<SentAnswer>,
    window: VecDeque<Instant>,
    #[allow(clippy::type_complexity)]
    listeners: Vec<mpsc::UnboundedSender<StreamCmdBox>>,
    emitted: Vec<EmittedEvent>,
}

/// One `trade_updates` event the venue emitted (kept for oracles: the newest 10,000).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EmittedEvent {
    /// Its `execution_id`
    pub execution_id: String,
    /// The order's client order id
    pub client_order_id: String,
    /// The event (`new`, `fill`, ...)
    pub event: String,
    /// When it was emitted
    pub at: DateTime<Utc>,
    /// How many stream connections it was handed to (0: nobody listened, it is lost as on the
    /// real stream)
    pub listeners: usize,
}

// the command type is private; a box keeps VenueState's Debug derive simple
struct StreamCmdBox(StreamCmd);

impl std::fmt::Debug for StreamCmdBox {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("StreamCmd")
    }
}

/// A handle on a running venue: inspect what it received, move prices, switch faults.
#[derive(Debug, Clone)]
pub struct SimAlpaca {
    state: Arc<Mutex<VenueState>>,
    handshakes: Arc<HandshakeStats>,
}

impl SimAlpaca {
    /// A venue with `config` (not yet serving).
    pub fn new(config: SimConfig) -> Self {
        let buying_power = config.buying_power;
        Self {
            state: Arc::new(Mutex::new(VenueState {
                config,
                faults: Faults::default(),
                orders: IndexMap::new(),
                by_client: HashMap::new(),
                buying_power,
                positions: HashMap::new(),
                seen: Vec::new(),
                answers: Vec::new(),
                window: VecDeque::new(),
                listeners: Vec::new(),
                emitted: Vec::new(),
            })),
            handshakes: Arc::default(),
        }
    }

    /// The TLS handshakes of a venue served over TLS.
    pub fn handshakes(&self) -> &HandshakeStats {
        &self.handshakes
    }

    fn lock(&self) -> MutexGuard<'_, VenueState> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Every HTTP request received, in arrival order.
    pub fn requests(&self) -> Vec<SeenRequest> {
        self.lock().seen.clone()
    }

    /// Every HTTP answer sent, in the order sent, bodies byte for byte.
    pub fn answers(&self) -> Vec<SentAnswer> {
        self.lock().answers.clone()
    }

    /// How many order submissions carried `client_order_id`.
    pub fn submissions_of(&self, client_order_id: &str) -> usize {
        self.lock()
            .seen
            .iter()
            .filter(|r| r.method == "POST" && r.client_order_id.as_deref() == Some(client_order_id))
            .count()
    }

    /// The current fault switches.
    pub fn faults(&self) -> Faults {
        self.lock().faults.clone()
    }

    /// Sets the fault switches; taking the stream down cuts off its clients now.
    pub fn set_faults(&self, faults: Faults) {
        let mut state = self.lock();
        if faults.stream_down {
            for l in state.listeners.drain(..) {
                let _ = l.send(StreamCmdBox(StreamCmd::Drop));
            }
        }
        state.faults = faults;
    }

    /// Sets a symbol's price and fills the resting orders it makes marketable.
    pub fn set_price(&self, symbol: &str, price: Decimal) {
        let mut state = self.lock();
        state.config.prices.insert(symbol.to_string(), price);
        let ids: Vec<Uuid> = state
            .orders
            .values()
            .filter(|o| o.symbol == symbol && o.is_open())
            .map(|o| o.id)
            .collect();
        for id in ids {
            state.try_fill(id);
        }
    }

    /// Ends an open order at the venue's own initiative, as the market does: `expired` (its
    /// time in force ran out) or `canceled` (e.g. by the broker's risk desk); the event goes
    /// out on the stream. Whether the order was open.
    pub fn end_order(&self, client_order_id: &str, expired: bool) -> bool {
        let mut state = self.lock();
        let Some(id) = state.by_client.get(client_order_id).copied() else {
            return false;
        };
        let Some(order) = state.orders.get_mut(&id).filter(|o| o.is_open()) else {
            return false;
        };
        let now = Utc::now();
        order.updated_at = now;
        if expired {
            order.status = "expired".into();
            order.expired_at = Some(now);
        } else {
            order.status = "canceled".into();
            order.canceled_at = Some(now);
        }
        let snapshot = order.clone();
        if snapshot.side == "buy" {
            state.buying_power += (snapshot.qty - snapshot.filled_qty) * snapshot.reserved_price;
        }
        state.emit(
            if expired { "expired" } else { "canceled" },
            &snapshot,
            None,
        );
        true
    }

    /// Fills `qty` of an open order at `price` whatever the market, as a counterparty
    /// crossing it would (tests use it for fills in parts at different prices); the event goes
    /// out on the stream. Whether the order was open with that much left.
    pub fn fill_part(&self, client_order_id: &str, qty: Decimal, price: Decimal) -> bool {
        let mut state = self.lock();
        let Some(id) = state.by_client.get(client_order_id).copied() else {
            return false;
        };
        let open = state
            .orders
            .get(&id)
            .is_some_and(|o| o.is_open() && qty > Decimal::ZERO && o.filled_qty + qty <= o.qty);
        if open {
            state.fill(id, qty, price);
        }
        open
    }

    /// Moves an order's submission back in time by `by` (tests use it for an order submitted
    /// long ago, e.g. a GTC order resting since the morning). Whether the order exists.
    pub fn backdate(&self, client_order_id: &str, by: chrono::Duration) -> bool {
        let mut state = self.lock();
        let Some(id) = state.by_client.get(client_order_id).copied() else {
            return false;
        };
        match state.orders.get_mut(&id) {
            Some(o) => {
                o.created_at -= by;
                true
            }
            None => false,
        }
    }

    /// Cash left for buys.
    pub fn buying_power(&self) -> Decimal {
        self.lock().buying_power
    }

    /// Every `trade_updates` event emitted, oldest first (the newest 10,000).
    pub fn emitted(&self) -> Vec<EmittedEvent> {
        self.lock().emitted.clone()
    }

    /// Every order the venue holds, as Alpaca shows them, in submission order.
    pub fn orders(&self) -> Vec<Value> {
        self.lock().orders.values().map(Order::json).collect()
    }

    /// The client order ids of the orders open now.
    pub fn open_client_ids(&self) -> Vec<String> {
        self.lock()
            .orders
            .values()
            .filter(|o| o.is_open())
            .map(|o| o.client_order_id.clone())
            .collect()
    }

    /// An order as Alpaca shows it, by client order id.
    pub fn order_by_client_id(&self, client_order_id: &str) -> Option<Value> {
        let state = self.lock();
        let id = state.by_client.get(client_order_id)?;
        state.orders.get(id).map(Order::json)
    }

    /// Pushes a raw `trade_updates` message to the listening clients (tests use it to send
    /// what the venue itself never would, e.g. an unknown status).
    pub fn push_message(&self, message: Value) {
        let mut state = self.lock();
        state.listeners.retain(|l| {
            l.send(StreamCmdBox(StreamCmd::Event(message.clone())))
                .is_ok()
        });
    }

    /// Open stream connections that are listening.
    pub fn stream_listeners(&self) -> usize {
        let mut state = self.lock();
        state.listeners.retain(|l| !l.is_closed());
        state.listeners.len()
    }
}

impl VenueState {
    fn price(&self, symbol: &str) -> Decimal {
        self.config
            .prices
            .get(symbol)
            .copied()
            .unwrap_or(self.config.default_price)
    }

    fn emit(&mut self, event: &str, order: &Order, fill: Option<(Decimal, Decimal)>) {
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
                self.positions
                    .get(&order.symbol)
                    .copied()
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
    fn try_fill(&mut self, id: Uuid) {
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
    fn fill(&mut self, id: Uuid, part: Decimal, price: Decimal) {
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
            *self.positions.entry(snapshot.symbol.clone()).or_default() += signed;
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

    fn rate_limited(&mut self, now: Instant) -> (bool, HeaderMap) {
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

fn not_found() -> Response {
    error(StatusCode::NOT_FOUND, 40410000, "order not found")
}

fn error(status: StatusCode, code: u64, message: &str) -> Response {
    (
        status,
        axum::Json(json!({"code": code, "message": message})),
    )
        .into_response()
}

/// Auth, request log, rate limit and 500 faults: what every HTTP call goes through.
/// `Ok(headers)` to go on (with the rate-limit headers to send), `Err` to answer now.
fn gate(
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
async fn delay_answers(
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

fn with_headers(mut response: Response, headers: HeaderMap) -> Response {
    response.headers_mut().extend(headers);
    response
}

fn dec_field(body: &Value, key: &str) -> Result<Option<Decimal>, String> {
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
const ORDER_TYPES: [&str; 5] = ["market", "limit", "stop", "stop_limit", "trailing_stop"];
const TIMES_IN_FORCE: [&str; 6] = ["day", "gtc", "opg", "cls", "ioc", "fok"];
/// Alpaca's longest client order id.
const CLIENT_ORDER_ID_MAX: usize = 128;

/// A positive decimal field, or the 422 message.
fn positive(body: &Value, key: &str) -> Result<Option<Decimal>, String> {
    match dec_field(body, key)? {
        Some(v) if v <= Decimal::ZERO => Err(format!("{key} must be > 0")),
        v => Ok(v),
    }
}

/// When an order submitted at `at` with `time_in_force` expires: a day order at the close
/// (20:00 UTC, 16:00 New York in summer) of its day, others after 90 days (Alpaca's GTC rule).
fn expiry(at: DateTime<Utc>, time_in_force: &str) -> DateTime<Utc> {
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
fn parse_order(body: &Value, price: impl Fn(&str) -> Decimal) -> Result<Order, String> {
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

async fn submit_order(State(sim): State<SimAlpaca>, headers: HeaderMap, body: Bytes) -> Response {
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

/// A query string as given (every value checked here, so a bad one gets Alpaca's JSON error
/// instead of a framework's plain-text 400).
type RawQuery = Query<HashMap<String, String>>;

/// 422 with Alpaca's validation code.
fn invalid(message: &str) -> Response {
    error(StatusCode::UNPROCESSABLE_ENTITY, 42210000, message)
}

/// The `GET /v2/orders` filters, checked.
struct ListFilter {
    status: String,
    limit: usize,
    after: Option<DateTime<Utc>>,
    until: Option<DateTime<Utc>>,
    ascending: bool,
    symbols: Option<Vec<String>>,
    side: Option<String>,
}

impl ListFilter {
    fn parse(q: &HashMap<String, String>) -> Result<Self, String> {
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

    fn keeps(&self, o: &Order) -> bool {
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

async fn list_orders(
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

async fn order_by_client(
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

async fn get_order(
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

impl VenueState {
    fn cancel(&mut self, id: Uuid) -> Result<Value, Response> {
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

async fn cancel_order(
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

async fn cancel_all(State(sim): State<SimAlpaca>, headers: HeaderMap) -> Response {
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

async fn replace_order(
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

async fn account(State(sim): State<SimAlpaca>, headers: HeaderMap) -> Response {
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

async fn stream(State(sim): State<SimAlpaca>, ws: WebSocketUpgrade) -> Response {
    if sim.faults().stream_down {
        return StatusCode::SERVICE_UNAVAILABLE.into_response();
    }
    ws.read_buffer_size(tradegate_actors::WS_READ_BUFFER_BYTES)
        .on_upgrade(move |socket| stream_session(sim, socket))
}

fn binary(value: &Value) -> Message {
    Message::Binary(Bytes::from(value.to_string()))
}

async fn stream_session(sim: SimAlpaca, mut socket: WebSocket) {
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

async fn control(State(sim): State<SimAlpaca>, body: Bytes) -> Response {
    #[derive(Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Control {
        #[serde(default)]
        faults: Option<Faults>,
        #[serde(default)]
        prices: HashMap<String, Decimal>,
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
    if let Some(faults) = control.faults {
        sim.set_faults(faults);
    }
    for (symbol, price) in control.prices {
        sim.set_price(&symbol, price);
    }
    status(State(sim)).await
}

/// The venue's switches and state: faults, buying power, listening stream connections.
async fn status(State(sim): State<SimAlpaca>) -> Response {
    axum::Json(json!({
        "faults": sim.faults(),
        "buying_power": sim.buying_power().to_string(),
        "stream_listeners": sim.stream_listeners(),
    }))
    .into_response()
}

async fn requests(State(sim): State<SimAlpaca>) -> Response {
    axum::Json(sim.requests()).into_response()
}

/// The venue's routes (`/sim/...` are its own control endpoints, not Alpaca's).
pub fn router(sim: SimAlpaca) -> Router {
    Router::new()
        .route(
            "/v2/orders",
            post(submit_order).get(list_orders).delete(cancel_all),
        )
        .route("/v2/orders:by_client_order_id", get(order_by_client))
        .route(
            "/v2/orders/{id}",
            get(get_order).delete(cancel_order).patch(replace_order),
        )
        .route("/v2/account", get(account))
        .route("/stream", get(stream))
        .route("/sim/control", get(status).post(control))
        .route("/sim/requests", get(requests))
        .fallback(|| async { error(StatusCode::NOT_FOUND, 40410000, "endpoint not found") })
        .method_not_allowed_fallback(|| async {
            error(
                StatusCode::METHOD_NOT_ALLOWED,
                40510000,
                "method not allowed",
            )
        })
        .route_layer(axum::middleware::from_fn_with_state(
            sim.clone(),
            delay_answers,
        ))
        .with_state(sim)
}

/// Serves `sim` on `listener` until `shutdown` completes.
pub async fn serve(
    listener: TcpListener,
    sim: SimAlpaca,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    // order messages are small and latency-bound: no Nagle delay on answers or pushes
    let listener = listener.tap_io(|tcp| {
        if let Err(e) = tcp.set_nodelay(true) {
            tracing::debug!(error = %e, "TCP_NODELAY not set");
        }
    });
    axum::serve(listener, router(sim))
        .with_graceful_shutdown(shutdown)
        .await
}

/// Serves `sim` over TLS (`https`, `wss`) on `listener` until `shutdown` completes.
pub async fn serve_tls(
    listener: TcpListener,
    sim: SimAlpaca,
    tls: &ServerTls,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let listener = TlsListener::new(listener, tls, Arc::clone(&sim.handshakes));
    axum::serve(listener, router(sim))
        .with_graceful_shutdown(shutdown)
        .await
}

/// Starts a venue with `config` on `listener` over TLS in the background; its handle.
pub fn spawn_tls(listener: TcpListener, config: SimConfig, tls: ServerTls) -> SimAlpaca {
    let sim = SimAlpaca::new(config);
    let served = sim.clone();
    tokio::spawn(async move {
        if let Err(e) = serve_tls(listener, served, &tls, std::future::pending()).await {
            tracing::error!(error = %e, "simulated Alpaca venue stopped");
        }
    });
    sim
}

/// Starts a venue with `config` on `listener` in the background; its handle.
pub fn spawn(listener: TcpListener, config: SimConfig) -> SimAlpaca {
    let sim = SimAlpaca::new(config);
    let served = sim.clone();
    tokio::spawn(async move {
        if let Err(e) = serve(listener, served, std::future::pending()).await {
            tracing::error!(error = %e, "simulated Alpaca venue stopped");
        }
    });
    sim
}
