//! Helpers for trade-log tests: a writer under its own Gateway, sample events, an oracle table,
//! and a private cluster that a test may stop and start.

use std::path::{Path, PathBuf};
use std::time::Duration;

use ractor::ActorRef;
use rust_decimal::Decimal;
use tokio_postgres::Client;
use tradegate::postgres::{ClusterOptions, EmbeddedCluster, ensure_database};
use tradegate_actors::domain::{ExecutionFields, OrderIds, RawJson, Side, TradeLogEvent};
use tradegate_actors::gateway::{ChildSpec, Gateway, GatewayHandle, RestartPolicy};
use tradegate_actors::trade_log_writer::{
    TradeLog, TradeLogConfig, TradeLogWriter, TradeLogWriterArgs, TradeLogWriterMessage,
    WriterStats,
};

use super::{fast_settings, scratch_dir};

/// A TradeLogWriter under a Gateway of its own, with a unique registered name.
pub struct WriterUnderTest {
    /// The producer handle
    pub log: TradeLog,
    /// The writer's settings
    pub config: TradeLogConfig,
    gateway: GatewayHandle,
    name: String,
}

/// Settings for tests: small batches, short ages and backoff, a spill directory of the test's.
pub fn test_config(spill_dir: &Path) -> TradeLogConfig {
    TradeLogConfig {
        batch_size: 200,
        max_batch_size: 2_000,
        batch_max_age_ms: 10,
        backoff_base_ms: 20,
        backoff_max_ms: 200,
        spill_dir: spill_dir.to_path_buf(),
        export_dir: spill_dir.join("exports"),
        spill_file_max_bytes: 256 * 1024,
        // maintenance runs when a test asks for it
        maintenance_interval_secs: 3_600,
        ..TradeLogConfig::default()
    }
}

impl WriterUnderTest {
    /// Starts a writer on `conninfo` with a fresh queue.
    pub async fn start(conninfo: &str, config: TradeLogConfig) -> Self {
        let log = TradeLog::new(config.queue_capacity, config.overflow);
        Self::start_with(conninfo, config, log).await
    }

    /// Starts a writer on an existing queue.
    pub async fn start_with(conninfo: &str, config: TradeLogConfig, log: TradeLog) -> Self {
        let name = format!("trade_log_writer-{}", uuid::Uuid::new_v4().simple());
        let args = TradeLogWriterArgs {
            log: log.clone(),
            config: config.clone(),
            conninfo: conninfo.to_string(),
        };
        let spec = ChildSpec::new(name.clone(), move || (TradeLogWriter, args.clone()));
        let gateway = Gateway::start(vec![spec], RestartPolicy::default())
            .await
            .expect("start the writer");
        Self {
            log,
            config,
            gateway,
            name,
        }
    }

    fn actor(&self) -> ActorRef<TradeLogWriterMessage> {
        ActorRef::where_is(self.name.clone()).expect("the writer is registered")
    }

    /// Persists everything queued and replays spill files if the database answers.
    pub async fn flush(&self) -> WriterStats {
        ractor::call_t!(
            self.actor(),
            |reply| TradeLogWriterMessage::Flush { reply },
            60_000
        )
        .expect("flush")
    }

    /// The writer's statistics.
    pub async fn stats(&self) -> WriterStats {
        ractor::call_t!(
            self.actor(),
            |reply| TradeLogWriterMessage::Stats { reply },
            10_000
        )
        .expect("stats")
    }

    /// Runs maintenance as of `today`.
    pub async fn maintenance(
        &self,
        today: chrono::NaiveDate,
    ) -> Result<
        tradegate_actors::trade_log_writer::MaintenanceReport,
        tradegate_actors::trade_log_writer::MaintenanceError,
    > {
        ractor::call_t!(
            self.actor(),
            |reply| TradeLogWriterMessage::RunMaintenance { today, reply },
            120_000
        )
        .expect("maintenance call")
    }

    /// Stops the writer (it drains first) and its Gateway.
    pub async fn stop(self) {
        self.gateway.shutdown().await.expect("stop the writer");
    }
}

/// An execution event like the spec's example (about 500 bytes of body), numbered `i`, with
/// decimals that a float would not survive.
pub fn sample_event(i: u64) -> TradeLogEvent {
    let body = format!(
        r#"{{"timestamp":1737485965222000,"rcv_timestamp":1737485965223456,"market_id":10042,"account_id":7,"exec_type":"XTrade","side":"Buy","native_ord_id":"8745632190","cl_ord_id":{i},"orig_cl_ord_id":-1,"ord_status":"OStatusPartiallyFilled","last_qty":0.4,"last_px":42000.500000000000000001,"leaves_qty":0.6,"ord_qty":1.0,"ord_price":42000.5,"ord_mode":"MLimit","tif":"TifGoodTillCancel","fee":0.0002,"native_execution_id":"99887766-{i}","metadata":{{"seq":{i},"strategy":"naive_mm"}},"is_taker":false}}"#
    );
    let ids = OrderIds {
        cl_ord_id: Some(format!("cl-{i}")),
        native_ord_id: Some("8745632190".into()),
        market_id: Some(10042),
        account_id: Some("7".into()),
        symbol: Some("BTCUSD".into()),
        ..OrderIds::default()
    };
    let exec = ExecutionFields {
        exec_type: Some(2),
        ord_status: Some(2),
        side: Some(Side::Buy),
        is_taker: Some(false),
        last_px: Some("42000.500000000000000001".parse::<Decimal>().unwrap()),
        last_qty: Some(Decimal::new(4, 1)),
        leaves_qty: Some(Decimal::new(6, 1)),
        ord_px: Some(Decimal::new(420005, 1)),
        ord_qty: Some(Decimal::ONE),
        fee: Some(Decimal::new(2, 4)),
        exchange_ts_us: Some(1_737_485_965_222_000),
    };
    TradeLogEvent::api_event_execution(&ids, &exec, RawJson::parse(body).unwrap())
        .with_source("test")
}

/// Creates `oracle(event_id, body)` holding what was sent, for comparisons in SQL.
pub async fn store_oracle(client: &Client, events: &[TradeLogEvent]) {
    client
        .batch_execute("CREATE TABLE IF NOT EXISTS oracle (event_id uuid PRIMARY KEY, body jsonb NOT NULL, last_px numeric)")
        .await
        .unwrap();
    for chunk in events.chunks(5_000) {
        let ids: Vec<uuid::Uuid> = chunk.iter().map(|e| e.event_id).collect();
        let bodies: Vec<&str> = chunk.iter().map(|e| e.body.as_str()).collect();
        let prices: Vec<Option<Decimal>> = chunk.iter().map(|e| e.last_px).collect();
        client
            .execute(
                "INSERT INTO oracle SELECT id, body::jsonb, px
                 FROM unnest($1::uuid[], $2::text[], $3::numeric[]) AS t(id, body, px)",
                &[&ids, &bodies, &prices],
            )
            .await
            .unwrap();
    }
}

/// What the table holds compared with the oracle.
#[derive(Debug, PartialEq, Eq)]
pub struct Conservation {
    /// Oracle events not in tradelog
    pub missing: i64,
    /// Event ids stored more than once
    pub doubled: i64,
    /// Stored events whose body or price differs from what was sent
    pub altered: i64,
    /// Stored non-gap events that were never sent
    pub unexpected: i64,
}

/// Compares `tradelog` with `oracle`.
pub async fn conservation(client: &Client) -> Conservation {
    let count = |sql: &'static str| async move {
        client.query_one(sql, &[]).await.unwrap().get::<_, i64>(0)
    };
    Conservation {
        missing: count(
            "SELECT count(*) FROM oracle o WHERE NOT EXISTS (SELECT 1 FROM tradelog t WHERE t.event_id = o.event_id)",
        )
        .await,
        doubled: count(
            "SELECT count(*) FROM (SELECT event_id FROM tradelog GROUP BY event_id HAVING count(*) > 1) d",
        )
        .await,
        altered: count(
            "SELECT count(*) FROM oracle o JOIN tradelog t USING (event_id)
             WHERE t.body::text <> o.body::text OR t.last_px IS DISTINCT FROM o.last_px",
        )
        .await,
        unexpected: count(
            "SELECT count(*) FROM tradelog t WHERE t.event_type <> 90
             AND NOT EXISTS (SELECT 1 FROM oracle o WHERE o.event_id = t.event_id)",
        )
        .await,
    }
}

/// The perfect outcome.
pub const CONSERVED: Conservation = Conservation {
    missing: 0,
    doubled: 0,
    altered: 0,
    unexpected: 0,
};

/// Sum of `dropped` over gap rows with `reason`.
pub async fn gap_total(client: &Client, reason: &str) -> i64 {
    client
        .query_one(
            "SELECT coalesce(sum((body->'gap'->>'dropped')::bigint), 0)::bigint FROM tradelog
             WHERE event_type = 90 AND body->'gap'->>'reason' = $1",
            &[&reason],
        )
        .await
        .unwrap()
        .get(0)
}

/// A private cluster of the test's own, which it may stop and start.
pub struct OwnCluster {
    /// The cluster
    pub cluster: Option<EmbeddedCluster>,
    /// Its folder
    pub dir: PathBuf,
    /// Connection string of database `tg` on it
    pub conninfo: String,
}

impl OwnCluster {
    /// Creates, starts and migrates a cluster in a scratch folder.
    pub async fn start(label: &str) -> Self {
        let dir = scratch_dir(label);
        let mut options = ClusterOptions::new(dir.join("pg"));
        options.settings = fast_settings();
        let cluster = tokio::task::spawn_blocking(move || EmbeddedCluster::start(&options))
            .await
            .unwrap()
            .unwrap();
        ensure_database(&cluster.conninfo("postgres"), "tg", Duration::from_secs(10))
            .await
            .unwrap();
        let conninfo = cluster.conninfo("tg");
        let mut client = tradegate::postgres::connect(&conninfo, Duration::from_secs(10))
            .await
            .unwrap();
        tradegate::migrate::run(&mut client).await.unwrap();
        Self {
            cluster: Some(cluster),
            dir,
            conninfo,
        }
    }

    /// The unix socket directory (the data directory).
    pub fn socket_dir(&self) -> PathBuf {
        self.dir.join("pg")
    }

    /// `pg_ctl stop -m fast`.
    pub async fn stop_server(&mut self) {
        let cluster = self.cluster.take().unwrap();
        let cluster = tokio::task::spawn_blocking(move || {
            cluster.force_stop().unwrap();
            cluster
        })
        .await
        .unwrap();
        self.cluster = Some(cluster);
    }

    /// Starts the server again.
    pub async fn start_server(&mut self) {
        let cluster = self.cluster.take().unwrap();
        let cluster = tokio::task::spawn_blocking(move || {
            cluster.restart().unwrap();
            cluster
        })
        .await
        .unwrap();
        self.cluster = Some(cluster);
    }

    /// A new connection.
    pub async fn client(&self) -> Client {
        tradegate::postgres::connect(&self.conninfo, Duration::from_secs(10))
            .await
            .unwrap()
    }
}

impl Drop for OwnCluster {
    fn drop(&mut self) {
        if let Some(cluster) = self.cluster.take() {
            // stopping blocks; do it off any runtime thread
            let _ = std::thread::spawn(move || drop(cluster)).join();
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
