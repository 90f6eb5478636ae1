//! Assembles the running gateway: the database (given or private), migrations, the supervision
//! tree and the HTTP listener; and the `run`, `migrate` and `demo` commands built on them.

use std::future::Future;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use chrono::{Days, Utc};
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use tradegate_actors::alpaca_session::{self, AlpacaSession, AlpacaSessionArgs};
use tradegate_actors::domain::{
    ApiCall, IngestionRun, NewRun, RawJson, RecordOperation, RunRecord, TradeLogEvent,
};
use tradegate_actors::gateway::{ChildSpec, Gateway, GatewayHandle};
use tradegate_actors::ibkr_syncer::{IbkrConfig, IbkrSyncClient, IbkrSyncer, IbkrSyncerArgs};
use tradegate_actors::ingestion_logger::{
    self, IngestionClient, IngestionLogger, IngestionLoggerArgs,
};
use tradegate_actors::order_router::{
    self, OrderRouter, OrderRouterArgs, OrderRouterClient, StrategyHub,
};
use tradegate_actors::reporter::{self, Reporter, ReporterArgs};
use tradegate_actors::trade_log_writer::{
    self, TradeLog, TradeLogWriter, TradeLogWriterArgs, TradeLogWriterMessage,
};

use crate::api::{self, ApiState, Health};
use crate::config::{Config, DatabaseConfig, redact_conninfo};
use crate::migrate::{self, MigrationReport};
use crate::postgres::{self, ClusterOptions, ClusterStart, EmbeddedCluster};
use crate::telemetry;

/// Name of the database tradegate uses inside its private cluster.
pub const EMBEDDED_DATABASE: &str = "tradegate";
/// Daily trade-log partitions created ahead of today at start-up.
const PARTITION_DAYS_AHEAD: i32 = 7;

/// Where the database came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DatabaseOrigin {
    /// `DATABASE_URL` or `[database] url`
    Url,
    /// The private cluster, and what starting it took
    Embedded(ClusterStart),
}

/// The database tradegate runs on, and the private cluster behind it when there is one.
#[derive(Debug)]
pub struct Database {
    conninfo: String,
    origin: DatabaseOrigin,
    cluster: Option<EmbeddedCluster>,
    connect_timeout: Duration,
}

impl Database {
    /// Connects to the configured server, or starts the private cluster; fails within the
    /// configured connect timeout when the server cannot be reached.
    pub async fn open(config: &DatabaseConfig) -> Result<Self> {
        let timeout = config.connect_timeout();
        if !config.url.is_empty() {
            // fail now, with a clear error, if the server cannot be reached
            postgres::connect(&config.url, timeout).await?;
            return Ok(Self {
                conninfo: config.url.clone(),
                origin: DatabaseOrigin::Url,
                cluster: None,
                connect_timeout: timeout,
            });
        }
        let mut options = ClusterOptions::new(&config.data_dir);
        if !config.pg_bin_dir.as_os_str().is_empty() {
            options.bin_dir = Some(config.pg_bin_dir.clone());
        }
        let cluster = tokio::task::spawn_blocking(move || EmbeddedCluster::start(&options))
            .await
            .context("the PostgreSQL bootstrap task failed")??;
        if let Some((asked, why)) = cluster.relocated() {
            eprintln!(
                "tradegate: the private PostgreSQL cluster is in {}, not {}: {why}",
                cluster.data_dir().display(),
                asked.display()
            );
        }
        postgres::ensure_database(&cluster.conninfo("postgres"), EMBEDDED_DATABASE, timeout)
            .await?;
        Ok(Self {
            conninfo: cluster.conninfo(EMBEDDED_DATABASE),
            origin: DatabaseOrigin::Embedded(cluster.start_kind()),
            cluster: Some(cluster),
            connect_timeout: timeout,
        })
    }

    /// The connection string (may hold a password: log [`Database::display_target`] instead).
    pub fn conninfo(&self) -> &str {
        &self.conninfo
    }

    /// The connection string with any password redacted.
    pub fn display_target(&self) -> String {
        redact_conninfo(&self.conninfo)
    }

    /// Where the database came from.
    pub fn origin(&self) -> DatabaseOrigin {
        self.origin
    }

    /// Where the private cluster is, when it is not where `[database] data_dir` says (see
    /// [`postgres::place_data_dir`]).
    pub fn relocated_to(&self) -> Option<&std::path::Path> {
        self.cluster
            .as_ref()
            .filter(|c| c.relocated().is_some())
            .map(EmbeddedCluster::data_dir)
    }

    /// A new connection.
    pub async fn connect(&self) -> Result<tokio_postgres::Client> {
        Ok(postgres::connect(&self.conninfo, self.connect_timeout).await?)
    }

    /// Applies pending migrations. A connection lost on the way (the database restarting, a
    /// network cut) is tried again on a new connection, a few times over some seconds: each
    /// migration commits with its record, so a second run applies only what the first did not.
    /// A migration the database refuses fails at once.
    pub async fn migrate(&self) -> Result<MigrationReport> {
        const ATTEMPTS: u32 = 5;
        let mut attempt = 1;
        loop {
            let mut client = self.connect().await?;
            match migrate::run(&mut client).await {
                Ok(report) => return Ok(report),
                Err(e) if client.is_closed() && attempt < ATTEMPTS => {
                    tracing::warn!(error = %e, attempt,
                        "the connection was lost while migrating; trying again");
                    tokio::time::sleep(Duration::from_secs(u64::from(attempt))).await;
                    attempt += 1;
                }
                Err(e) => return Err(e.into()),
            }
        }
    }

    /// A connection pool of `size` connections.
    pub fn pool(&self, size: usize) -> Result<deadpool_postgres::Pool> {
        pool(&self.conninfo, size, self.connect_timeout)
    }

    /// Releases the private cluster, stopping it when no other process uses it.
    pub async fn close(mut self) -> Result<bool> {
        let Some(mut cluster) = self.cluster.take() else {
            return Ok(false);
        };
        let stopped = tokio::task::spawn_blocking(move || cluster.stop())
            .await
            .context("the PostgreSQL stop task failed")??;
        Ok(stopped)
    }
}

/// A pool of `size` connections to `conninfo`; connecting and waiting for a free connection
/// each give up after `timeout`.
pub fn pool(conninfo: &str, size: usize, timeout: Duration) -> Result<deadpool_postgres::Pool> {
    let mut pg: tokio_postgres::Config = conninfo.parse()?;
    pg.connect_timeout(timeout);
    // an IBKR sync stages a whole fetched window in a temporary table (about 1 KB per
    // execution: 100,000 of them are ~100 MB); room for it in memory keeps it off disk
    // (allocated only as a session's temporary tables grow, so other sessions pay nothing)
    let options = pg.get_options().unwrap_or_default();
    pg.options(format!("{options} -c temp_buffers=256MB").trim());
    let manager = deadpool_postgres::Manager::new(pg, tokio_postgres::NoTls);
    Ok(deadpool_postgres::Pool::builder(manager)
        .max_size(size)
        .runtime(deadpool_postgres::Runtime::Tokio1)
        .wait_timeout(Some(timeout))
        .create_timeout(Some(timeout))
        .build()?)
}

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
    };
    children.push(ChildSpec::new(order_router::NAME, move || {
        (OrderRouter, router.clone())
    }));
    let reporter = ReporterArgs {
        pool: pool.clone(),
        config: config.reporter.clone(),
        tls,
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
    let client = FlexClient::new(
        tls,
        &flex.url,
        FlexToken::new(token.expose()),
        flex.query_id.trim(),
        Duration::from_secs(flex.timeout_secs),
    )?;
    Ok(Some(
        tradegate_actors::ibkr_syncer::backfill::FlexBackfill {
            client,
            zone: flex.zone(),
            accounts,
            interval: Duration::from_secs(flex.interval_secs),
        },
    ))
}

/// How long an on-request sync is waited for: a fetch may take up to the read timeout per
/// frame, and a large window takes a while to store.
pub fn sync_call_timeout(config: &IbkrConfig) -> Duration {
    config.connect_timeout() + config.read_timeout() * 4 + Duration::from_secs(120)
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
            ibkr: IbkrSyncClient::new(sync_call_timeout(&config.ibkr)),
            ibkr_accounts: config.ibkr.all_accounts(),
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

/// `tradegate run`.
pub async fn run(config: &Config) -> Result<()> {
    let running = Running::start(config, config.api.listen).await?;
    println!(
        "tradegate running: api http://{}, database {}",
        running.api_addr(),
        running.database().display_target()
    );
    running.run_until(shutdown_signal()).await
}

/// Runs `body` with the configured database open and migrated, then closes it.
pub async fn with_database<T>(
    config: &Config,
    body: impl AsyncFnOnce(&Database) -> Result<T>,
) -> Result<T> {
    let database = Database::open(&config.database).await?;
    let result = async {
        database.migrate().await?;
        body(&database).await
    }
    .await;
    let closed = database.close().await;
    let value = result?;
    closed?;
    Ok(value)
}

/// `tradegate migrate`.
pub async fn migrate_command(config: &Config) -> Result<()> {
    let database = Database::open(&config.database).await?;
    let result = database.migrate().await;
    let closed = database.close().await;
    let report = result?;
    closed?;
    if report.applied.is_empty() {
        println!(
            "schema is up to date ({} migrations)",
            migrate::embedded().len()
        );
    } else {
        for name in &report.applied {
            println!("applied {name}");
        }
    }
    Ok(())
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

/// `tradegate demo`: everything embedded, end to end, then a clean stop.
pub async fn demo(config: &Config) -> Result<()> {
    let started = Instant::now();
    println!("tradegate demo");
    // the simulated TWS, and the gateway's IBKR syncers pointed at it (synced on request here)
    let tws_listener = TcpListener::bind(SocketAddr::from(([127, 0, 0, 1], 0)))
        .await
        .context("cannot open the simulated TWS on 127.0.0.1")?;
    let tws_addr = tws_listener.local_addr()?;
    let demo_accounts = vec!["DU0000001".to_string(), "DU0000002".to_string()];
    let scenario = crate::sim::tws_scenario::generate(&crate::sim::tws_scenario::Generate {
        accounts: demo_accounts.clone(),
        executions: 120,
        seed: 7,
        end: Utc::now() - chrono::Duration::minutes(1),
        span: chrono::Duration::days(3),
    });
    let served = scenario.executions.len();
    let _tws = crate::sim::tws::spawn(tws_listener, scenario);
    // the simulated Alpaca venue, and the gateway's session and a sample strategy on it
    let venue_listener = TcpListener::bind(SocketAddr::from(([127, 0, 0, 1], 0)))
        .await
        .context("cannot open the simulated Alpaca venue on 127.0.0.1")?;
    let venue_addr = venue_listener.local_addr()?;
    let _venue =
        crate::sim::alpaca::spawn(venue_listener, crate::sim::alpaca::SimConfig::default());
    let mut config = config.clone();
    config.alpaca.accounts = vec![tradegate_actors::alpaca_session::AlpacaAccountConfig {
        name: "demo".into(),
        base_url: format!("http://{venue_addr}"),
        ..Default::default()
    }];
    config.alpaca_keys.insert(
        "demo".into(),
        tradegate_actors::alpaca_session::Credentials::new("SIMKEY", "SIMSECRET"),
    );
    config.orders.risk.max_qty = Some(rust_decimal::Decimal::from(1000));
    config.ibkr.accounts = demo_accounts.clone();
    config.ibkr.host = tws_addr.ip().to_string();
    config.ibkr.port = tws_addr.port();
    config.ibkr.sync_interval_secs = 0;
    let config = &config;
    let running = Running::start(config, SocketAddr::from(([127, 0, 0, 1], 0))).await?;
    match running.database().origin() {
        DatabaseOrigin::Url => println!(
            "  database:   {} (from configuration)",
            running.database().display_target()
        ),
        DatabaseOrigin::Embedded(kind) => println!(
            "  database:   private PostgreSQL cluster in {} ({})",
            running
                .database()
                .relocated_to()
                .unwrap_or(&config.database.data_dir)
                .display(),
            match kind {
                ClusterStart::Initialized => "initialized now",
                ClusterStart::Started => "reused, started",
                ClusterStart::AlreadyRunning => "reused, already running",
            }
        ),
    }
    if running.migrations.applied.is_empty() {
        println!("  migrations: up to date");
    } else {
        println!(
            "  migrations: applied {}",
            running.migrations.applied.join(", ")
        );
    }
    running.trade_log().log(TradeLogEvent::connectivity(
        "demo",
        None,
        RawJson::from_value(&serde_json::json!({"event": "demo_started"})),
    ));
    let stats = running.flush_trade_log().await?;
    println!(
        "  trade log:  {} events written in {} batches, {} spilled, {} replayed",
        stats.written, stats.batches, stats.spilled, stats.replayed
    );
    let run = demo_ingestion_run().await?;
    println!(
        "  ingestion:  run {} of {} {}: {} records fetched, API call logged",
        run.run_id, run.task_name, run.status, run.counts.fetched
    );
    println!("  ibkr:       simulated TWS on {tws_addr}, {served} executions");
    let syncs = IbkrSyncClient::new(sync_call_timeout(&config.ibkr));
    for account in &demo_accounts {
        let first = syncs.sync(account, None).await?;
        let again = syncs.sync(account, None).await?;
        let (c, r) = (&first.counts, &again.counts);
        println!(
            "              {account}: fetched {}, inserted {}, {} superseded by corrections, \
             {} trades; re-sync: {} unchanged, {} writes",
            c.fetched_executions_count,
            c.inserted_executions_count,
            c.canonical_changes_count,
            c.touched_trades_count,
            r.unchanged_executions_count,
            r.writes()
        );
        anyhow::ensure!(r.writes() == 0, "the re-sync of {account} wrote rows");
    }
    println!("  alpaca:     simulated venue on {venue_addr}");
    let aapl = demo_strategy(&running, run.run_id).await?;
    demo_reports(&running, aapl).await?;
    let health = check_health(running.api_addr()).await;
    let stopped = match health {
        Ok(health) => {
            println!("  api:        http://{}", running.api_addr());
            println!(
                "  health:     {} (database ok: {}, latency {} ms)",
                health.status, health.database.ok, health.database.latency_ms
            );
            println!(
                "  actors:     gateway {}, {} children",
                if health.actors.gateway {
                    "running"
                } else {
                    "not answering"
                },
                health.actors.children.len()
            );
            for child in &health.actors.children {
                println!(
                    "              - {} {}",
                    child["name"].as_str().unwrap_or("?"),
                    child["state"].as_str().unwrap_or("?")
                );
            }
            let status = health.status.clone();
            let cluster_stopped = running.stop().await?;
            anyhow::ensure!(status == "ok", "the gateway reported {status}");
            Ok(cluster_stopped)
        }
        Err(e) => {
            let _ = running.stop().await;
            Err(e)
        }
    };
    let cluster_stopped = stopped?;
    println!(
        "  stopped cleanly after {:.1}s{}",
        started.elapsed().as_secs_f64(),
        if cluster_stopped {
            " (private cluster stopped)"
        } else {
            ""
        }
    );
    Ok(())
}

/// The sample strategy: one batch of four orders through the whole order path — one refused
/// by a risk check, one rejected by the venue for buying power, two filled — then the
/// decisions and executions as stored.
async fn demo_strategy(running: &Running, data_run: uuid::Uuid) -> Result<uuid::Uuid> {
    use rust_decimal::Decimal;
    use tradegate_actors::domain::{OrderRequest, OrderType, PrimarySignal, Side, TimeInForce};
    use tradegate_actors::order_router::StrategyHandle;
    let order = |symbol: &str, qty: i64, limit: Option<i64>, strength: &str| OrderRequest {
        strategy: "demo".into(),
        strategy_version: "1.0".into(),
        account: None,
        symbol: symbol.into(),
        side: Side::Buy,
        qty: Some(Decimal::from(qty)),
        notional: None,
        order_type: if limit.is_some() {
            OrderType::Limit
        } else {
            OrderType::Market
        },
        limit_price: limit.map(Decimal::from),
        stop_price: None,
        time_in_force: TimeInForce::Day,
        signal_strength: strength.parse().ok(),
        primary_signal: None,
        primary_ingestion_run_id: None,
        rationale: Some(serde_json::json!({"source": "demo"})),
        reference_price: None,
    };
    let mut strategy = StrategyHandle::connect(running.hub(), "demo");
    // the AAPL order rests on the price the demo's ingestion run brought in
    let aapl = OrderRequest {
        primary_signal: Some(PrimarySignal {
            signal_type: "Price".into(),
            id: "demo-AAPL".into(),
        }),
        primary_ingestion_run_id: Some(data_run),
        ..order("AAPL", 10, None, "0.9")
    };
    let outcomes = strategy
        .submit_batch(vec![
            aapl,
            order("NVDA", 5000, None, "0.8"),
            order("TSLA", 900, Some(200), "0.7"),
            order("MSFT", 5, None, "0.6"),
        ])
        .await
        .map_err(|r| anyhow::anyhow!("the batch was refused: {r}"))?;
    let accepted: Vec<uuid::Uuid> = outcomes
        .iter()
        .filter_map(|o| o.as_ref().ok().copied())
        .collect();
    let client = running.database().connect().await?;
    let settled = async {
        loop {
            let open: i64 = client
                .query_one(
                    "SELECT count(*) FROM trade_decisions d                      LEFT JOIN trade_executions e ON e.trade_decision_id = d.id                      WHERE d.decision_id = ANY($1)                        AND (e.id IS NULL OR e.status IN ('submitted', 'accepted', 'partial_fill'))",
                    &[&accepted],
                )
                .await?
                .get(0);
            if open == 0 {
                return Ok::<_, anyhow::Error>(());
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    };
    tokio::time::timeout(Duration::from_secs(30), settled)
        .await
        .context("the demo orders did not settle within 30 s")??;
    println!(
        "  strategy:   batch of {} orders, strongest signal first",
        outcomes.len()
    );
    for outcome in &outcomes {
        if let Err(r) = outcome {
            println!(
                "              refused before any decision: {} ({})",
                r.code, r.message
            );
        }
    }
    let rows =
        tradegate_actors::store::orders::recent_decisions(&client, accepted.len() as i64).await?;
    for row in rows.iter().rev() {
        let text = |k: &str| row[k].as_str().unwrap_or("-").to_string();
        println!(
            "              {} {} {} {}: decision {}, execution {}{}{}",
            text("symbol"),
            text("side"),
            text("qty"),
            text("decision_id"),
            text("status"),
            text("execution_status"),
            row["filled_avg_price"]
                .as_str()
                .map(|p| format!(" at {p}"))
                .unwrap_or_default(),
            row["error_message"]
                .as_str()
                .map(|m| format!(" (HTTP {}: {m})", row["http_status"]))
                .unwrap_or_default(),
        );
    }
    let filled = rows
        .iter()
        .filter(|r| r["execution_status"] == "filled")
        .count();
    let refused = rows.iter().filter(|r| r["status"] == "failed").count();
    anyhow::ensure!(
        filled == 2 && refused == 1 && outcomes.iter().filter(|o| o.is_err()).count() == 1,
        "the demo batch did not end as expected (2 filled, 1 rejected by the venue, 1 by risk)"
    );
    outcomes[0]
        .as_ref()
        .copied()
        .map_err(|r| anyhow::anyhow!("the AAPL order was refused: {r}"))
}

/// The end of the walk-through: what an auditor asks afterwards, answered from the trail.
async fn demo_reports(running: &Running, aapl: uuid::Uuid) -> Result<()> {
    use crate::report::{ReportRequest, day_range, produce};
    let client = running.database().connect().await?;
    let today = Utc::now().date_naive();
    let indent = |text: String| {
        text.lines()
            .map(|l| format!("              {l}"))
            .collect::<Vec<_>>()
            .join("\n")
    };
    let symbol = produce(
        &client,
        &ReportRequest::Symbol {
            symbol: "AAPL".into(),
            range: day_range(Some(today), Some(today))?,
            limit: 5,
        },
    )
    .await?;
    println!("  report:     tradegate report symbol AAPL --from {today} --to {today}");
    println!("{}", indent(symbol.to_text()));
    let lineage = produce(&client, &ReportRequest::Decision(aapl)).await?;
    println!("  report:     tradegate report decision {aapl}");
    println!("{}", indent(lineage.to_text()));
    // the order the venue refused (buying power)
    let failed: Option<uuid::Uuid> = client
        .query_opt(
            "SELECT decision_id FROM trade_decisions WHERE status = 'failed' \
             ORDER BY created_at DESC LIMIT 1",
            &[],
        )
        .await?
        .map(|r| r.get(0));
    if let Some(failed) = failed {
        let order = produce(&client, &ReportRequest::Order(failed.to_string())).await?;
        println!("  report:     tradegate report order {failed}");
        println!("{}", indent(order.to_text()));
    }
    Ok(())
}

/// One small ingestion run through the IngestionLogger, as a data job would log it.
async fn demo_ingestion_run() -> Result<IngestionRun> {
    let ingestion = IngestionClient::new(ingestion_logger::NAME);
    let run = ingestion
        .start_run(NewRun::new("demo.prices", "demo"))
        .await?;
    let call: ApiCall = serde_json::from_value(serde_json::json!({
        "endpoint": "/v1/prices",
        "params": {"symbols": "AAPL,MSFT"},
        "status_code": 200,
        "response_body": {"AAPL": "185.12", "MSFT": "411.30"},
        "duration_ms": 12
    }))?;
    ingestion.record_api_calls(run.run_id, vec![call]).await?;
    let records = ["AAPL", "MSFT"]
        .into_iter()
        .map(|symbol| {
            RunRecord::new("Price", format!("demo-{symbol}"), RecordOperation::Created)
                .with_symbol(symbol)
        })
        .collect();
    ingestion.record_records(run.run_id, records).await?;
    Ok(ingestion.complete(run.run_id, None).await?)
}

/// `tradegate tradelog export --day DATE`: writes one day of the trade log to
/// `<out>/tradelog-DATE.jsonl.gz`.
pub async fn export_trade_log(
    config: &Config,
    day: chrono::NaiveDate,
    out: Option<&std::path::Path>,
) -> Result<()> {
    let (path, rows) = with_database(config, async |database| {
        let client = database.connect().await?;
        let dir = out.unwrap_or(&config.tradelog.export_dir);
        Ok(trade_log_writer::export_day(&client, day, dir).await?)
    })
    .await?;
    println!(
        "exported {rows} trade-log rows of {day} to {}",
        path.display()
    );
    Ok(())
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
