//! Helpers for order-path tests: a gateway wired to a simulated Alpaca venue, and a strategy
//! WebSocket client.

use std::net::SocketAddr;
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use serde_json::Value;
use tokio::net::TcpListener;
use tokio_tungstenite::tungstenite::Message;
use tradegate::app::Running;
use tradegate::config::Config;
use tradegate::sim::alpaca::{SimAlpaca, SimConfig, spawn};
use tradegate_actors::alpaca_session::{AlpacaAccountConfig, Credentials};
use tradegate_actors::order_router::StrategyConfig;

use super::pgproxy::PgProxy;
use super::writer::OwnCluster;

/// Starts a venue on a free loopback port; its handle and base URL.
pub async fn start_venue(config: SimConfig) -> (SimAlpaca, String) {
    let listener = TcpListener::bind(SocketAddr::from(([127, 0, 0, 1], 0)))
        .await
        .unwrap();
    let addr = listener.local_addr().unwrap();
    (spawn(listener, config), format!("http://{addr}"))
}

/// A gateway configuration on `conninfo` with one Alpaca account `paper` at `base_url` and the
/// strategies `(name, token)`.
pub fn gateway_config(
    conninfo: &str,
    base_url: &str,
    strategies: &[(&str, &str)],
    spill: &std::path::Path,
) -> Config {
    let mut config = Config::default();
    config.database.url = conninfo.to_string();
    config.tradelog.spill_dir = spill.to_path_buf();
    super::api::secure(&mut config);
    config.alpaca.accounts = vec![AlpacaAccountConfig {
        name: "paper".into(),
        base_url: base_url.to_string(),
        ..AlpacaAccountConfig::default()
    }];
    config.alpaca.reconnect_max_backoff_secs = 1;
    config.alpaca.recovery_grace_secs = 1;
    config
        .alpaca_keys
        .insert("paper".into(), Credentials::new("SIMKEY", "SIMSECRET"));
    for (name, token) in strategies {
        config.orders.strategies.insert(
            name.to_string(),
            StrategyConfig {
                token: token.to_string(),
                ..StrategyConfig::default()
            },
        );
    }
    config
}

/// A gateway whose database connections go through a fault proxy, its venue, and strategy
/// `alpha` connected (token `alpha-token`).
pub struct BehindProxy {
    /// The cluster (direct connections bypass the proxy)
    pub db: OwnCluster,
    /// Between the gateway and the cluster
    pub proxy: PgProxy,
    /// The simulated Alpaca venue
    pub venue: SimAlpaca,
    /// The gateway
    pub running: Running,
    /// Strategy `alpha`
    pub alpha: StrategyWs,
}

/// Starts [`BehindProxy`] in its own cluster named `label`; `tune` adjusts the configuration.
pub async fn behind_proxy(label: &str, tune: impl FnOnce(&mut Config)) -> BehindProxy {
    let db = OwnCluster::start(label).await;
    let proxy = PgProxy::start(&db.socket_dir()).await;
    let (venue, base_url) = start_venue(SimConfig::default()).await;
    let mut config = gateway_config(
        &proxy.conninfo("tg"),
        &base_url,
        &[("alpha", "alpha-token")],
        &super::scratch_dir(label).join("spill"),
    );
    tune(&mut config);
    let running = Running::start(&config, SocketAddr::from(([127, 0, 0, 1], 0)))
        .await
        .unwrap();
    let alpha = StrategyWs::connect(running.api_addr(), "alpha-token")
        .await
        .unwrap();
    caught_up(&venue).await;
    BehindProxy {
        db,
        proxy,
        venue,
        running,
        alpha,
    }
}

/// Strategy `alpha` buying one AAPL at market.
pub fn market_buy(request_id: &str) -> Value {
    serde_json::json!({"type": "submit_order", "request_id": request_id, "strategy": "alpha",
        "symbol": "AAPL", "side": "buy", "qty": "1", "order_type": "market",
        "time_in_force": "day"})
}

/// The order submissions (`POST`s) the venue has received.
pub fn venue_posts(venue: &SimAlpaca) -> usize {
    venue
        .requests()
        .iter()
        .filter(|r| r.method == "POST")
        .count()
}

/// Waits (at most 10 s) until the venue has received `n` order submissions.
pub async fn wait_for_posts(venue: &SimAlpaca, n: usize) {
    let reached = super::wait_until(Duration::from_secs(10), || async {
        (venue_posts(venue) == n).then_some(())
    })
    .await;
    assert!(reached.is_some(), "the venue did not receive {n} orders");
}

/// Whether an order was looked up at the venue by its client order id.
pub fn venue_looked_up(venue: &SimAlpaca) -> bool {
    venue
        .requests()
        .iter()
        .any(|r| r.method == "GET" && r.path == "/v2/orders:by_client_order_id")
}

/// The WebSocket of a strategy connection.
pub type Ws =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

/// A strategy's WebSocket connection.
pub struct StrategyWs {
    ws: Ws,
    /// Frames read but not yet asked for
    pub seen: Vec<Value>,
}

impl StrategyWs {
    /// Connects to `ws://addr/v1/strategy` with a bearer token.
    pub async fn connect(
        addr: SocketAddr,
        token: &str,
    ) -> Result<Self, tokio_tungstenite::tungstenite::Error> {
        use tokio_tungstenite::tungstenite::client::IntoClientRequest;
        let mut request = format!("ws://{addr}/v1/strategy")
            .into_client_request()
            .unwrap();
        request
            .headers_mut()
            .insert("authorization", format!("Bearer {token}").parse().unwrap());
        let (ws, _) = tokio_tungstenite::connect_async(request).await?;
        Ok(Self {
            ws,
            seen: Vec::new(),
        })
    }

    /// The WebSocket itself, for frames this type does not send.
    pub fn into_inner(self) -> Ws {
        self.ws
    }

    /// Sends a text frame.
    pub async fn send_text(&mut self, text: &str) {
        self.ws.send(Message::text(text.to_string())).await.unwrap();
    }

    /// Sends a JSON message.
    pub async fn send(&mut self, value: Value) {
        self.send_text(&value.to_string()).await;
    }

    /// The first message (already seen or arriving within `timeout`) that `matches`; it is
    /// taken out of the seen list.
    pub async fn wait_for(
        &mut self,
        timeout: Duration,
        matches: impl Fn(&Value) -> bool,
    ) -> Option<Value> {
        if let Some(i) = self.seen.iter().position(&matches) {
            return Some(self.seen.remove(i));
        }
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            let msg = tokio::time::timeout(left, self.ws.next())
                .await
                .ok()??
                .ok()?;
            let Message::Text(text) = msg else { continue };
            let value: Value = serde_json::from_str(text.as_str()).unwrap();
            if matches(&value) {
                return Some(value);
            }
            self.seen.push(value);
        }
    }

    /// The answer (ack, reject or error) to `request_id`.
    pub async fn answer(&mut self, request_id: &str) -> Value {
        self.wait_for(Duration::from_secs(20), |v| v["request_id"] == request_id)
            .await
            .unwrap_or_else(|| panic!("no answer to {request_id}; seen {:?}", self.seen))
    }
}

/// Starts `tradegate run` with `config`, the simulated venue's keys in `SIM_KEY` and
/// `SIM_SECRET`, and `envs`; the process and its API address (once it says it runs).
pub async fn start_gateway_process(
    config: &std::path::Path,
    envs: &[(&str, &str)],
) -> (tokio::process::Child, SocketAddr) {
    use tokio::io::{AsyncBufReadExt, BufReader};
    let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_tradegate"))
        .args(["--config", config.to_str().unwrap(), "run"])
        .env("SIM_KEY", "SIMKEY")
        .env("SIM_SECRET", "SIMSECRET")
        .env("RUST_LOG", "warn")
        .envs(envs.iter().copied())
        .stdout(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let addr = tokio::time::timeout(Duration::from_secs(30), async {
        while let Some(line) = lines.next_line().await.unwrap() {
            if let Some(rest) = line.strip_prefix("tradegate running: api http://") {
                return rest.split(',').next().unwrap().parse().unwrap();
            }
        }
        panic!("the gateway exited before it ran");
    })
    .await
    .expect("the gateway did not start");
    // keep draining stdout so the child never blocks on a full pipe
    tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
    (child, addr)
}

/// The decision's status, its execution's status, filled quantity and average price, and its
/// failure reason, once the decision has an execution.
pub async fn decision_outcome(
    client: &tokio_postgres::Client,
    decision_id: uuid::Uuid,
) -> Option<(
    String,
    String,
    rust_decimal::Decimal,
    Option<rust_decimal::Decimal>,
    Option<String>,
)> {
    let row = client
        .query_opt(
            "SELECT d.status, e.status, e.filled_quantity, e.filled_avg_price, d.failure_reason \
             FROM trade_decisions d JOIN trade_executions e ON e.trade_decision_id = d.id \
             WHERE d.decision_id = $1",
            &[&decision_id],
        )
        .await
        .unwrap()?;
    Some((row.get(0), row.get(1), row.get(2), row.get(3), row.get(4)))
}

/// Held by a test while its in-process gateway runs: a gateway registers its actors by name,
/// so one test binary runs one at a time.
pub async fn one_gateway() -> tokio::sync::MutexGuard<'static, ()> {
    static GATEWAY: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());
    GATEWAY.lock().await
}

/// A gateway running in this process on its own database, with one Alpaca account `paper` at a
/// venue and strategy `alpha` (token `alpha-token`) connected; it holds [`one_gateway`].
pub struct Gateway {
    _one: tokio::sync::MutexGuard<'static, ()>,
    /// Its database
    pub db: super::TestDb,
    /// A direct connection to it
    pub client: tokio_postgres::Client,
    /// The venue
    pub venue: SimAlpaca,
    /// The gateway
    pub running: Running,
    /// Strategy `alpha`
    pub alpha: StrategyWs,
}

/// Starts a [`Gateway`] named `label` trading at `venue` (its handle and base URL, as
/// [`start_venue`] gives them); `tune` adjusts the configuration.
pub async fn gateway_at(
    label: &str,
    venue: (SimAlpaca, String),
    tune: impl FnOnce(&mut Config),
) -> Gateway {
    let one = one_gateway().await;
    let db = super::TestDb::new().await;
    let client = db.client().await;
    let (venue, base_url) = venue;
    let mut config = gateway_config(
        &db.conninfo,
        &base_url,
        &[("alpha", "alpha-token")],
        &super::scratch_dir(label).join("spill"),
    );
    tune(&mut config);
    let running = Running::start(&config, SocketAddr::from(([127, 0, 0, 1], 0)))
        .await
        .unwrap();
    let alpha = StrategyWs::connect(running.api_addr(), "alpha-token")
        .await
        .unwrap();
    caught_up(&venue).await;
    Gateway {
        _one: one,
        db,
        client,
        venue,
        running,
        alpha,
    }
}

/// Waits (at most 5 s: a venue that is not served never answers) until the gateway's first
/// catch-up has listed the venue's orders, and a moment more for it to finish, so a test's own
/// faults and counts start after it.
pub async fn caught_up(venue: &SimAlpaca) {
    let listed = super::wait_until(Duration::from_secs(5), || async {
        venue
            .requests()
            .iter()
            .any(|r| r.method == "GET" && r.path == "/v2/orders")
            .then_some(())
    })
    .await;
    if listed.is_some() {
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// A text column of the execution of `decision` (`error_code`, `status_reason`,
/// `broker_order_id`, ...).
pub async fn execution_text(
    client: &tokio_postgres::Client,
    decision: uuid::Uuid,
    column: &str,
) -> Option<String> {
    client
        .query_one(
            &format!(
                "SELECT e.{column} FROM trade_executions e JOIN trade_decisions d \
                 ON d.id = e.trade_decision_id WHERE d.decision_id = $1"
            ),
            &[&decision],
        )
        .await
        .unwrap()
        .get(0)
}
