//! All SQL that reads or writes tradegate's tables: one documented function per statement,
//! parameters always bound.

pub mod tradelog;

use chrono::NaiveDate;
use tokio_postgres::GenericClient;

/// A failed statement, with what was being done.
#[derive(Debug, thiserror::Error)]
#[error("{context}: {source}")]
pub struct StoreError {
    context: &'static str,
    #[source]
    source: tokio_postgres::Error,
}

impl StoreError {
    pub(crate) fn new(context: &'static str) -> impl FnOnce(tokio_postgres::Error) -> Self {
        move |source| Self { context, source }
    }

    /// The underlying database error.
    pub fn db_error(&self) -> &tokio_postgres::Error {
        &self.source
    }

    /// The underlying database error, owned.
    pub fn into_inner(self) -> tokio_postgres::Error {
        self.source
    }
}

/// Opens one connection (no TLS: tradegate talks to PostgreSQL on loopback or a unix socket)
/// and drives it on a background task.
pub async fn connect(
    conninfo: &str,
    timeout: std::time::Duration,
) -> Result<tokio_postgres::Client, tokio_postgres::Error> {
    let mut config: tokio_postgres::Config = conninfo.parse()?;
    config.connect_timeout(timeout);
    let (client, connection) = config.connect(tokio_postgres::NoTls).await?;
    tokio::spawn(async move {
        if let Err(e) = connection.await {
            tracing::debug!(error = %e, "database connection closed");
        }
    });
    Ok(client)
}

/// A trivial round trip, used by health checks.
pub async fn ping(client: &impl GenericClient) -> Result<(), StoreError> {
    client
        .query_one("SELECT 1", &[])
        .await
        .map_err(StoreError::new("health ping"))?;
    Ok(())
}

/// Creates the missing daily `tradelog` partitions for `[first_day, first_day + days)`;
/// returns how many were created.
pub async fn ensure_tradelog_partitions(
    client: &impl GenericClient,
    first_day: NaiveDate,
    days: i32,
) -> Result<i32, StoreError> {
    let row = client
        .query_one(
            "SELECT tradelog_ensure_partitions($1, $2)",
            &[&first_day, &days],
        )
        .await
        .map_err(StoreError::new("creating tradelog partitions"))?;
    Ok(row.get(0))
}
