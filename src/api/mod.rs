//! The HTTP listener: `/health`, `/metrics`, the ingestion endpoints for data jobs (and, as they
//! are built, the read API and the strategy WebSocket).

pub mod audit;
pub mod auth;
pub mod error;
pub mod ingestion;
pub mod orders;
pub mod reconcile;
pub mod reports;
mod serve;
mod strategy;
pub mod tls;
pub mod trades;

use std::future::Future;
use std::time::{Duration, Instant};

use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use metrics_exporter_prometheus::PrometheusHandle;
use ractor::ActorRef;
use serde::Serialize;
use tokio::net::TcpListener;
use tradegate_actors::gateway::{GatewayMessage, GatewayStatus, status_of};
use tradegate_actors::ibkr_syncer::IbkrSyncClient;
use tradegate_actors::ingestion_logger::IngestionClient;

/// How long a health check waits for the database.
const HEALTH_DB_TIMEOUT: Duration = Duration::from_secs(2);

/// What the handlers share.
#[derive(Clone)]
pub struct ApiState {
    /// Connections for reads and health checks
    pub pool: deadpool_postgres::Pool,
    /// The root supervisor
    pub gateway: ActorRef<GatewayMessage>,
    /// Renders `/metrics`
    pub metrics: PrometheusHandle,
    /// The IngestionLogger behind the ingestion endpoints
    pub ingestion: IngestionClient,
    /// The IbkrSyncers behind `POST /api/v1/trades/sync`
    pub ibkr: IbkrSyncClient,
    /// The configured IBKR accounts (`[ibkr] accounts`)
    pub ibkr_accounts: Vec<String>,
    /// The configured Alpaca accounts (`[alpaca] accounts`)
    pub alpaca_accounts: Vec<String>,
    /// How position windows are reconciled (`[reconcile]`)
    pub reconcile: tradegate_actors::reconciliation::ReconcileConfig,
    /// Strategy tokens and accounts
    pub orders: tradegate_actors::order_router::OrdersConfig,
    /// The strategies' connections
    pub hub: tradegate_actors::strategy_hub::StrategyHub,
    /// The OrderRouter (kill switch)
    pub router: tradegate_actors::order_router::OrderRouterClient,
    /// The tokens the API accepts
    pub auth: std::sync::Arc<auth::Auth>,
    /// What any client may send
    pub limits: Limits,
    /// The listener's certificate, when it serves TLS (`[api] tls_cert_file`)
    pub tls: Option<tls::ServerTls>,
}

/// Limits on what any client can send (`[api]`).
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Largest request body (the ingestion batch endpoints take more)
    pub max_body_bytes: usize,
    /// Largest strategy WebSocket message and frame
    pub max_ws_message_bytes: usize,
    /// Open `/v1/strategy` connections per strategy
    pub max_connections_per_strategy: usize,
    /// How long a client has to send a request's headers (also how long an idle connection
    /// stays open)
    pub header_timeout: std::time::Duration,
    /// A strategy connection that sends nothing (not even a pong) this long is closed
    pub ws_idle_timeout: std::time::Duration,
    /// Open connections at most
    pub max_connections: usize,
}

impl Limits {
    /// The limits of `[api]`.
    pub fn of(api: &crate::config::ApiConfig) -> Self {
        Self {
            max_body_bytes: api.max_body_bytes,
            max_ws_message_bytes: api.max_ws_message_bytes,
            max_connections_per_strategy: api.max_connections_per_strategy,
            header_timeout: std::time::Duration::from_secs(api.header_timeout_secs),
            ws_idle_timeout: std::time::Duration::from_secs(api.ws_idle_timeout_secs),
            max_connections: api.max_connections,
        }
    }
}

impl Default for Limits {
    fn default() -> Self {
        Self::of(&crate::config::ApiConfig::default())
    }
}

impl std::fmt::Debug for ApiState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ApiState").finish_non_exhaustive()
    }
}

/// The routes, each behind the access check of [`auth::ROUTES`].
pub fn router(state: ApiState) -> Router {
    let auth = state.auth.clone();
    Router::new()
        .route("/health", get(health))
        .route("/metrics", get(metrics))
        .merge(audit::routes())
        .merge(ingestion::routes())
        .merge(trades::routes())
        .merge(reports::routes())
        .merge(orders::routes())
        .merge(reconcile::routes())
        .layer(axum::extract::DefaultBodyLimit::max(
            state.limits.max_body_bytes,
        ))
        .layer(axum::middleware::from_fn_with_state(auth, auth::authorize))
        .layer(axum::middleware::map_response(error::coded_rejections))
        .with_state(state)
}

/// Keeps an operator's change in `operator_actions` before it is made: a change that cannot be
/// put on record is refused (503 `audit_unavailable`).
pub(crate) async fn record_action(
    state: &ApiState,
    action: &tradegate_actors::domain::NewOperatorAction<'_>,
) -> Result<i64, error::ApiError> {
    let unavailable =
        |e: String| error::ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "audit_unavailable", e);
    let client = state
        .pool
        .get()
        .await
        .map_err(|e| unavailable(e.to_string()))?;
    tradegate_actors::store::operator_actions::record(&**client, action)
        .await
        .map_err(|e| unavailable(e.to_string()))
}

/// Serves the API on `listener` until `shutdown` completes: over TLS when `state.tls` is set,
/// each connection with the header read timeout of `state.limits`.
pub async fn serve(
    listener: TcpListener,
    state: ApiState,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let (tls, limits) = (state.tls.clone(), state.limits);
    serve::serve(listener, router(state), tls, limits, shutdown).await
}

/// The body of `/health`.
#[derive(Debug, Serialize, serde::Deserialize)]
pub struct Health {
    /// "ok" when the database answers and every actor runs, else "degraded"
    pub status: String,
    /// The database check
    pub database: DatabaseHealth,
    /// The supervision tree
    pub actors: ActorsHealth,
}

/// The database part of `/health`.
#[derive(Debug, Serialize, serde::Deserialize)]
pub struct DatabaseHealth {
    /// Whether `SELECT 1` succeeded
    pub ok: bool,
    /// Round trip in milliseconds
    pub latency_ms: u64,
    /// Why it failed
    pub error: Option<String>,
}

/// The actor part of `/health`.
#[derive(Debug, Serialize, serde::Deserialize)]
pub struct ActorsHealth {
    /// Whether the Gateway answered
    pub gateway: bool,
    /// Each child: name, state, restarts, last error
    pub children: Vec<serde_json::Value>,
}

async fn health(State(state): State<ApiState>) -> Response {
    let started = Instant::now();
    let db = tokio::time::timeout(HEALTH_DB_TIMEOUT, async {
        let client = state.pool.get().await.map_err(|e| e.to_string())?;
        tradegate_actors::store::ping(&**client)
            .await
            .map_err(|e| e.to_string())
    })
    .await
    .unwrap_or_else(|_| Err("timed out".into()));
    let database = DatabaseHealth {
        ok: db.is_ok(),
        latency_ms: u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX),
        error: db.err(),
    };
    let status: Option<GatewayStatus> = status_of(&state.gateway).await.ok();
    let actors = ActorsHealth {
        gateway: status.is_some(),
        children: status
            .as_ref()
            .map(|s| {
                s.children
                    .iter()
                    .filter_map(|c| serde_json::to_value(c).ok())
                    .collect()
            })
            .unwrap_or_default(),
    };
    let healthy = database.ok && status.as_ref().is_some_and(GatewayStatus::all_running);
    metrics::counter!(
        "tradegate_health_checks_total",
        "result" => if healthy { "ok" } else { "degraded" }
    )
    .increment(1);
    let body = Health {
        status: if healthy { "ok" } else { "degraded" }.into(),
        database,
        actors,
    };
    let code = if healthy {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (code, axum::Json(body)).into_response()
}

async fn metrics(State(state): State<ApiState>) -> Response {
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        state.metrics.render(),
    )
        .into_response()
}
