//! Test harness: every test gets its own fresh database, on the server named by
//! `TRADEGATE_TEST_DATABASE_URL` when set, otherwise on one private cluster the harness starts
//! under `target/tmp/test-pg` and leaves running for the next test binary (`.ci/run` stops it).
#![allow(dead_code)]

pub mod api;
pub mod ibkr;
pub mod orders;
pub mod pgproxy;
pub mod python;
pub mod tls;
pub mod writer;

use std::future::Future;
use std::path::PathBuf;
use std::time::Duration;

use tokio::sync::OnceCell;
use tokio_postgres::Client;
use tradegate::postgres::{self, ClusterOptions, EmbeddedCluster};
use tradegate_actors::store::setup::quote_ident;

const TIMEOUT: Duration = Duration::from_secs(10);

/// The server the test databases are created on.
struct Server {
    /// Connection string of a maintenance database on it
    admin: String,
    /// Keeps this process registered as a user of the private cluster
    _cluster: Option<EmbeddedCluster>,
}

static SERVER: OnceCell<Server> = OnceCell::const_new();

/// Settings of the test cluster: durability is not under test here, speed is welcome.
pub fn fast_settings() -> Vec<(String, String)> {
    [
        ("fsync", "off"),
        ("synchronous_commit", "off"),
        ("full_page_writes", "off"),
        ("max_connections", "300"),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect()
}

async fn server() -> &'static Server {
    SERVER
        .get_or_init(|| async {
            if let Ok(url) = std::env::var("TRADEGATE_TEST_DATABASE_URL") {
                return Server {
                    admin: url,
                    _cluster: None,
                };
            }
            let mut options = ClusterOptions::new(shared_cluster_dir());
            options.settings = fast_settings();
            options.stop_when_last_user_exits = false;
            let cluster = tokio::task::spawn_blocking(move || EmbeddedCluster::start(&options))
                .await
                .unwrap()
                .expect("start the test cluster");
            Server {
                admin: cluster.conninfo("postgres"),
                _cluster: Some(cluster),
            }
        })
        .await
}

/// Data directory of the shared test cluster.
pub fn shared_cluster_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("test-pg")
}

/// A scratch directory under `target/tmp`, unique to the caller.
pub fn scratch_dir(label: &str) -> PathBuf {
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR"))
        .join(format!("{label}-{}", uuid::Uuid::new_v4().simple()));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// `conninfo` (URL or key=value form) pointed at database `name`.
pub fn with_dbname(conninfo: &str, name: &str) -> String {
    if let Some(scheme_end) = conninfo.find("://") {
        let rest = &conninfo[scheme_end + 3..];
        let (authority, tail) = match rest.find(['/', '?']) {
            Some(i) => rest.split_at(i),
            None => (rest, ""),
        };
        let query = tail.find('?').map(|i| &tail[i..]).unwrap_or("");
        return format!("{}{authority}/{name}{query}", &conninfo[..scheme_end + 3]);
    }
    let kept: Vec<&str> = conninfo
        .split_whitespace()
        .filter(|p| !p.starts_with("dbname="))
        .collect();
    format!("{} dbname={name}", kept.join(" "))
}

/// A fresh database of its own, dropped when the value is dropped.
pub struct TestDb {
    /// Its connection string
    pub conninfo: String,
    name: String,
    admin: String,
}

impl TestDb {
    /// A fresh database with every migration applied.
    pub async fn new() -> Self {
        let db = Self::empty().await;
        let mut client = db.client().await;
        tradegate::migrate::run(&mut client)
            .await
            .expect("migrate the test database");
        db
    }

    /// A fresh database with no schema.
    pub async fn empty() -> Self {
        let server = server().await;
        let name = format!("tg_test_{}", uuid::Uuid::new_v4().simple());
        postgres::ensure_database(&server.admin, &name, TIMEOUT)
            .await
            .expect("create the test database");
        Self {
            conninfo: with_dbname(&server.admin, &name),
            name,
            admin: server.admin.clone(),
        }
    }

    /// A new connection to it.
    pub async fn client(&self) -> Client {
        postgres::connect(&self.conninfo, TIMEOUT)
            .await
            .expect("connect to the test database")
    }
}

impl Drop for TestDb {
    fn drop(&mut self) {
        let admin = self.admin.clone();
        let sql = format!(
            "DROP DATABASE IF EXISTS {} WITH (FORCE)",
            quote_ident(&self.name)
        );
        // Drop runs outside any runtime we may block; use a thread with its own.
        let _ = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .ok()?;
            runtime.block_on(async {
                let client = postgres::connect(&admin, TIMEOUT).await.ok()?;
                client.batch_execute(&sql).await.ok()
            })
        })
        .join();
    }
}

/// Polls `probe` until it yields `Some`, for at most `timeout`; `None` if it never did.
pub async fn wait_until<T, F, Fut>(timeout: Duration, mut probe: F) -> Option<T>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        if let Some(value) = probe().await {
            return Some(value);
        }
        if tokio::time::Instant::now() >= deadline {
            return None;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// The SQLSTATE of a failed statement.
pub fn sqlstate(result: Result<u64, tokio_postgres::Error>) -> String {
    match result {
        Ok(n) => panic!("the statement succeeded ({n} rows) but should have been refused"),
        Err(e) => e
            .code()
            .map(|c| c.code().to_string())
            .unwrap_or_else(|| panic!("no SQLSTATE in {e}")),
    }
}

/// A connection pool on `conninfo`, as the gateway builds one.
pub fn pool(conninfo: &str, size: usize) -> deadpool_postgres::Pool {
    tradegate::database::pool(conninfo, size, TIMEOUT).expect("build a pool")
}

/// The Prometheus text served at `{base}/metrics` (`base` as `http://host:port`).
pub async fn metrics_text(base: &str) -> String {
    tradegate_actors::tls::local_http()
        .get(format!("{base}/metrics"))
        .send()
        .await
        .expect("GET /metrics")
        .text()
        .await
        .expect("the /metrics body")
}

/// This test process's audit writer key (installed on first use, or the one an in-process
/// gateway installed), for the `tradegate` commands a test runs against a database the process
/// also writes: they write the same trail, so they hold the same key.
pub fn audit_key() -> String {
    use tradegate_actors::store::audit::{WriterKey, writer};
    writer::install(WriterKey::random()).expose().to_string()
}
