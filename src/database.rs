//! The database tradegate runs on: the configured server, or the private cluster it starts
//! (and stops when its last user exits); its migrations, connection pools, and
//! [`with_database`] for commands that need it for a moment.

use std::time::Duration;

use anyhow::{Context, Result};

use crate::config::{Config, DatabaseConfig, redact_conninfo};
use crate::migrate::{self, MigrationReport};
use crate::postgres::{self, ClusterOptions, ClusterStart, EmbeddedCluster};
use tradegate_actors::store::audit::{WriterKey, writer};

/// Name of the database tradegate uses inside its private cluster.
pub const EMBEDDED_DATABASE: &str = "tradegate";

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
                Ok(report) => {
                    // the trail's writer key: registered when the database has none yet
                    writer::register(&mut client).await?;
                    return Ok(report);
                }
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
    tradegate_actors::store::audit::writer::apply(&mut pg);
    let manager = deadpool_postgres::Manager::new(pg, tokio_postgres::NoTls);
    Ok(deadpool_postgres::Pool::builder(manager)
        .max_size(size)
        .runtime(deadpool_postgres::Runtime::Tokio1)
        .wait_timeout(Some(timeout))
        .create_timeout(Some(timeout))
        .build()?)
}

/// Makes this process's connections carry the audit writer key: `TRADEGATE_AUDIT_KEY` when
/// set, else the key in `[audit] writer_key_file` (created when missing). The first key a
/// process installs stays for its life.
pub fn install_writer_key(config: &Config) -> Result<&'static WriterKey> {
    if let Some(key) = writer::installed() {
        return Ok(key);
    }
    let key = match std::env::var(crate::config::AUDIT_KEY_ENV) {
        Ok(value) => WriterKey::new(&value)
            .with_context(|| format!("{} holds no usable key", crate::config::AUDIT_KEY_ENV))?,
        Err(_) => {
            let path = &config.audit.writer_key_file;
            let text = crate::api::auth::secret_file(path, "audit writer key")?;
            WriterKey::new(&text).with_context(|| format!("the key in {}", path.display()))?
        }
    };
    Ok(writer::install(key))
}

/// Runs `body` with the configured database open and migrated, then closes it; its
/// connections carry the audit writer key.
pub async fn with_database<T>(
    config: &Config,
    body: impl AsyncFnOnce(&Database) -> Result<T>,
) -> Result<T> {
    install_writer_key(config)?;
    with_database_as_reader(config, body).await
}

/// [`with_database`] without the writer key: for commands that only read the trail (`audit
/// verify`), which an auditor runs without holding the gateway's key.
pub async fn with_database_as_reader<T>(
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
