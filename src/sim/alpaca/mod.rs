//! A simulated Alpaca venue: the Trading API v2 subset the order path uses (orders, account)
//! over HTTP and the `trade_updates` stream over WebSocket (JSON in binary frames, like the
//! paper endpoint). It checks the auth headers, keeps orders and buying power, fills market
//! orders at a per-symbol price and limit orders when marketable (optionally in two partial
//! fills), answers with Alpaca's error shapes (403 buying power, 422 validation, duplicate
//! client order id, 404, 429 with rate-limit headers), and has fault switches (delay, 500s,
//! dropped stream, doubled events) for tests.
//!
//! Its parts: the venue's [`state`], what every call goes through ([`http`]), order submission
//! ([`submit`]), the orders after it ([`orders`]), and the [`stream`]. This file holds the
//! handle, the routes and the listeners.
// handlers answer early with a ready HTTP response; boxing it would buy nothing here
#![allow(clippy::result_large_err)]

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard};

use axum::Router;
use axum::http::StatusCode;
use axum::routing::{get, post};
use axum::serve::ListenerExt;
use chrono::{DateTime, Utc};
use indexmap::IndexMap;
use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use tokio::net::TcpListener;
use uuid::Uuid;

use crate::sim::tls::{HandshakeStats, ServerTls, TlsListener};

mod http;
mod orders;
mod positions;
mod state;
mod stream;
mod submit;

use http::{account, control, delay_answers, error, requests, status};
use orders::{cancel_all, cancel_order, get_order, list_orders, order_by_client, replace_order};
use state::{Order, StreamCmd, StreamCmdBox, VenueState};
use stream::stream;
use submit::submit_order;

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
                holdings: HashMap::new(),
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

    /// Sets the position in `symbol` to `qty` shares (negative: short) at `avg_entry_price`,
    /// without a fill and without an event: a trade made elsewhere, as a reconciliation must
    /// notice. Zero closes it.
    pub fn set_position(&self, symbol: &str, qty: Decimal, avg_entry_price: Decimal) {
        self.lock().holdings.insert(
            symbol.to_string(),
            positions::Holding {
                qty,
                cost: qty * avg_entry_price,
            },
        );
    }

    /// The open positions, as `GET /v2/positions` answers them.
    pub fn positions(&self) -> Vec<Value> {
        self.lock().positions_json()
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
        .route("/v2/positions", get(positions::list_positions))
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
