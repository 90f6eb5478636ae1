//! Assembles the running gateway: the database (given or private) migrated, the supervision
//! tree and the HTTP listener ([`Running`]), and how it stops.

use std::future::Future;
use std::net::SocketAddr;
use std::time::Duration;

use anyhow::{Context, Result};
use chrono::{Days, Utc};
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use tradegate_actors::alpaca_session::{self, AlpacaSession, AlpacaSessionArgs};
use tradegate_actors::gateway::{ChildSpec, Gateway, GatewayHandle};
use tradegate_actors::ibkr_syncer::{IbkrSyncClient, IbkrSyncer, IbkrSyncerArgs};
use tradegate_actors::ingestion_logger::{
    self, IngestionClient, IngestionLogger, IngestionLoggerArgs,
};
use tradegate_actors::order_router::{self, OrderRouter, OrderRouterArgs, OrderRouterClient};
use tradegate_actors::reporter::{self, Reporter, ReporterArgs};
use tradegate_actors::strategy_hub::StrategyHub;
use tradegate_actors::trade_log_writer::{
    self, TradeLog, TradeLogWriter, TradeLogWriterArgs, TradeLogWriterMessage,
};

use crate::api::{self, ApiState, Health};
use crate::config::Config;
use crate::database::Database;
use crate::migrate::MigrationReport;
use crate::telemetry;

/// Daily trade-log partitions created ahead of today at start-up.
const PARTITION_DAYS_AHEAD: i32 = 7;

/// The children of the supervision tree, in start order (stopped in reverse, so the
/// TradeLogWriter, started first, drains last).
fn children(
    config: &Config,
    conninfo: &str,
    trade_log: &TradeLog,
    pool: &deadpool_postgres::Pool,
    hub: &StrategyHub,
) -> Result<Vec<ChildSpec>> {
    let writer = TradeLogWriterArgs {
        log: trade_log.clone(),
        config: config.tradelog.clone(),
        conninfo: conninfo.to_string(),
    };
    let ingestion = IngestionLoggerArgs {
        pool: pool.clone(),
        config: config.ingestion.clone(),
    };
    // one trust store for every outbound connection; a CA file that cannot be used stops
    // the start, naming it
    let tls = tradegate_actors::tls::ClientTls::from_env(&config.tls)
        .context("loading the CA certificates brokers are verified with")?;
    let mut children = vec![
        ChildSpec::new(trade_log_writer::NAME, move || {
            (TradeLogWriter, writer.clone())
        }),
        ChildSpec::new(ingestion_logger::NAME, move || {
            (IngestionLogger, ingestion.clone())
        }),
    ];
    // one syncer per TWS session, serving every account of its login; the first also runs the
    // Flex backfill of every account
    let mut flex = flex_backfill(config, &tls)?;
    for session in config.ibkr.sessions() {
        let name = session.name();
        let args = IbkrSyncerArgs {
            session,
            config: config.ibkr.clone(),
            pool: pool.clone(),
            trade_log: Some(trade_log.clone()),
            flex: flex.take(),
            reconcile: config.reconcile,
        };
        children.push(ChildSpec::new(name, move || (IbkrSyncer, args.clone())));
    }
    // sessions before the router, so the router finds them when it routes
    for account in &config.alpaca.accounts {
        let credentials = config
            .alpaca_keys
            .get(&account.name)
            .cloned()
            .with_context(|| {
                format!(
                    "Alpaca account {}: set its credentials in the environment ({} and {})",
                    account.name, account.key_id_env, account.secret_key_env
                )
            })?;
        let args = AlpacaSessionArgs {
            account: account.clone(),
            credentials,
            config: config.alpaca.clone(),
            pool: pool.clone(),
            trade_log: Some(trade_log.clone()),
            hub: hub.clone(),
            tls: tls.clone(),
            reconcile: config.reconcile,
        };
        children.push(ChildSpec::new(
            alpaca_session::name_for(&account.name),
            move || (AlpacaSession, args.clone()),
        ));
    }
    let router = OrderRouterArgs {
        config: config.orders.clone(),
        accounts: config
            .alpaca
            .accounts
            .iter()
            .map(|a| a.name.clone())
            .collect(),
        pool: pool.clone(),
        lineage: config.ingestion.lineage(),
        hub: hub.clone(),
        prepare: alpaca_session::prepare_submission,
    };
    children.push(ChildSpec::new(order_router::NAME, move || {
        (OrderRouter, router.clone())
    }));
    let reporter = ReporterArgs {
        pool: pool.clone(),
        config: config.reporter.clone(),
        tls,
        audit: config.audit.clone(),
    };
    children.push(ChildSpec::new(reporter::NAME, move || {
        (Reporter, reporter.clone())
    }));
    Ok(children)
}

/// The gateway's backfill from IB's Flex Web Service, when `[ibkr.flex] query_id` is set (the
/// token must then be in the environment) and there are IBKR accounts.
fn flex_backfill(
    config: &Config,
    tls: &tradegate_actors::tls::ClientTls,
) -> Result<Option<tradegate_actors::ibkr_syncer::backfill::FlexBackfill>> {
    use tradegate_actors::ibkr_syncer::flex_service::{FlexClient, FlexToken};
    let flex = &config.ibkr.flex;
    let accounts = config.ibkr.all_accounts();
    if flex.query_id.trim().is_empty() || accounts.is_empty() {
        return Ok(None);
    }
    let token = config.ibkr_flex_token.as_ref().with_context(|| {
        format!(
            "[ibkr.flex] query_id is set, so the gateway backfills from IB's Flex Web Service: \
             set its token in {}",
            crate::config::FLEX_TOKEN_ENV
        )
    })?;
    let client = FlexClient::for_config(tls, flex, FlexToken::new(token.expose()))?;
    Ok(Some(
        tradegate_actors::ibkr_syncer::backfill::FlexBackfill {
            client,
            zone: flex.zone(),
            accounts,
            interval: Duration::from_secs(flex.interval_secs),
        },
    ))
}

/// A running gateway.
#[derive(Debug)]
pub struct Running {
    database: Database,
    gateway: GatewayHandle,
    api_addr: SocketAddr,
    api_task: JoinHandle<std::io::Result<()>>,
    api_shutdown: oneshot::Sender<()>,
    migrations: MigrationReport,
    trade_log: TradeLog,
    hub: StrategyHub,
    audit: tradegate_actors::reporter::AuditConfig,
}

impl Running {
    /// Opens the database, migrates, starts the supervision tree and the HTTP listener on
    /// `listen` (port 0 picks a free port).
    pub async fn start(config: &Config, listen: SocketAddr) -> Result<Self> {
        let auth = api_auth(config, listen)?;
        let tls = if config.api.tls_cert_file.as_os_str().is_empty() {
            None
        } else {
            Some(
                api::tls::ServerTls::from_files(
                    &config.api.tls_cert_file,
                    &config.api.tls_key_file,
                )
                .context("the API listener's certificate ([api] tls_cert_file, tls_key_file)")?,
            )
        };
        crate::database::install_writer_key(config)?;
        let database = Database::open(&config.database).await?;
        let migrations = database.migrate().await?;
        {
            let client = database.connect().await?;
            let yesterday = Utc::now().date_naive() - Days::new(1);
            tradegate_actors::store::ensure_tradelog_partitions(
                &client,
                yesterday,
                PARTITION_DAYS_AHEAD + 2,
            )
            .await?;
        }
        let pool = database.pool(config.database.pool_size)?;
        let metrics = telemetry::metrics_handle();
        metrics::gauge!("tradegate_build_info", "version" => env!("CARGO_PKG_VERSION")).set(1.0);
        let trade_log = TradeLog::new(config.tradelog.queue_capacity, config.tradelog.overflow);
        let hub = StrategyHub::default();
        let gateway = Gateway::start(
            children(config, database.conninfo(), &trade_log, &pool, &hub)?,
            config.supervisor.policy(),
        )
        .await?;
        let listener = TcpListener::bind(listen)
            .await
            .with_context(|| format!("cannot listen on {listen} (api.listen)"))?;
        let api_addr = listener.local_addr()?;
        let (api_shutdown, shutdown_rx) = oneshot::channel::<()>();
        let state = ApiState {
            pool,
            gateway: gateway.actor().clone(),
            metrics,
            ingestion: IngestionClient::new(ingestion_logger::NAME),
            ibkr: IbkrSyncClient::new(config.ibkr.sync_call_timeout()),
            ibkr_accounts: config.ibkr.all_accounts(),
            alpaca_accounts: config
                .alpaca
                .accounts
                .iter()
                .map(|a| a.name.clone())
                .collect(),
            reconcile: config.reconcile,
            orders: config.orders.clone(),
            hub: hub.clone(),
            router: OrderRouterClient,
            auth: std::sync::Arc::new(auth),
            limits: api::Limits::of(&config.api),
            tls,
        };
        let api_task = tokio::spawn(api::serve(listener, state, async {
            let _ = shutdown_rx.await;
        }));
        tracing::info!(api = %api_addr, database = %database.display_target(), "tradegate running");
        Ok(Self {
            database,
            gateway,
            api_addr,
            api_task,
            api_shutdown,
            migrations,
            trade_log,
            hub,
            audit: config.audit.clone(),
        })
    }

    /// The strategies' connections (for in-process strategies: [`StrategyHandle::connect`]).
    pub fn hub(&self) -> &StrategyHub {
        &self.hub
    }

    /// The producer handle of the trade log.
    pub fn trade_log(&self) -> &TradeLog {
        &self.trade_log
    }

    /// Persists everything queued in the trade log (replaying spill files if the database
    /// answers) and returns the writer's statistics.
    pub async fn flush_trade_log(&self) -> Result<trade_log_writer::WriterStats> {
        let writer = ractor::ActorRef::<TradeLogWriterMessage>::where_is(trade_log_writer::NAME)
            .context("the trade-log writer is not running")?;
        Ok(ractor::call_t!(
            writer,
            |reply| TradeLogWriterMessage::Flush { reply },
            60_000
        )?)
    }

    /// Where the HTTP API listens.
    pub fn api_addr(&self) -> SocketAddr {
        self.api_addr
    }

    /// The migrations its start applied.
    pub fn migrations(&self) -> &MigrationReport {
        &self.migrations
    }

    /// The database in use.
    pub fn database(&self) -> &Database {
        &self.database
    }

    /// Runs until `signal` completes (then stops cleanly) or the gateway gives up (then
    /// stops and returns its error).
    pub async fn run_until(mut self, signal: impl Future<Output = ()>) -> Result<()> {
        let outcome = tokio::select! {
            () = signal => {
                tracing::info!("shutting down");
                None
            }
            result = self.gateway.wait() => Some(result),
        };
        match outcome {
            None => self.stop().await.map(|_| ()),
            Some(result) => {
                let stopped = self.stop().await;
                result?;
                stopped.map(|_| ())
            }
        }
    }

    /// Stops the listener, then the tree (children drain first), then releases the database;
    /// returns whether the private cluster was stopped.
    pub async fn stop(self) -> Result<bool> {
        let _ = self.api_shutdown.send(());
        match self.api_task.await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => tracing::warn!(error = %e, "the HTTP listener ended with an error"),
            Err(e) => tracing::warn!(error = %e, "the HTTP listener task failed"),
        }
        let tree = self.gateway.shutdown().await;
        // everything the actors wrote is in: a clean stop seals it
        let sealed = async {
            let client = self.database.connect().await?;
            let kind = tradegate_actors::store::audit::SealKind::Stop;
            tradegate_actors::reporter::seals::run(&client, &self.audit, kind).await?;
            anyhow::Ok(())
        }
        .await;
        if let Err(e) = &sealed {
            tracing::warn!(error = %e, "could not seal the audit journal at stop");
        }
        let closed = self.database.close().await;
        tree?;
        closed
    }
}

/// Waits for Ctrl-C or SIGTERM.
pub async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {}
        () = terminate => {}
    }
}

/// The API's tokens: `[[api.tokens]]`, and the local operator token file when none of them is
/// an operator. A listener beyond loopback needs configured operator and auditor tokens.
fn api_auth(config: &Config, listen: SocketAddr) -> Result<api::auth::Auth> {
    use crate::config::Role;
    if !listen.ip().is_loopback() && !api::auth::configured_for_network(&config.api) {
        anyhow::bail!(
            "refusing to serve the API on {listen}, beyond this machine, without tokens: \
             configure [[api.tokens]] with an operator and an auditor token (README, \"Security\"), \
             or listen on 127.0.0.1"
        );
    }
    if !listen.ip().is_loopback() && config.api.tls_cert_file.as_os_str().is_empty() {
        tracing::warn!(
            %listen,
            "the API listens beyond this machine without TLS: tokens cross the network in the \
             clear (set [api] tls_cert_file and tls_key_file, or terminate TLS in front)"
        );
    }
    let configured_operator = config
        .api
        .tokens
        .iter()
        .any(|t| t.roles.contains(&Role::Operator));
    let local = if configured_operator {
        None
    } else {
        let token = api::auth::local_operator_token(&config.api.token_file)?;
        tracing::info!(
            file = %config.api.token_file.display(),
            "no operator token configured: the local operator token is in this file (mode 0600)"
        );
        Some(token)
    };
    api::auth::Auth::from_config(&config.api, local.as_deref())
}

/// GETs `/health` from the running API.
pub async fn check_health(addr: SocketAddr) -> Result<Health> {
    let response = tradegate_actors::tls::local_http()
        .get(format!("http://{addr}/health"))
        .timeout(Duration::from_secs(10))
        .send()
        .await
        .context("GET /health")?;
    response.json::<Health>().await.context("reading /health")
}
