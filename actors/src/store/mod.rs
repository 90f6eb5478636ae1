//! All SQL that reads or writes tradegate's tables: one documented function per statement,
//! parameters always bound.

pub mod alerts;
pub mod audit;
pub mod broker_sync;
pub mod db;
pub mod decisions;
pub mod external_orders;
pub mod group;
pub mod ingestion;
pub mod jobs;
pub mod kill_switch;
pub mod operator_actions;
pub mod order_events;
pub mod order_rejects;
pub mod orders;
pub mod payloads;
pub mod positions;
pub mod reconciliation;
pub mod reports;
pub mod retention;
pub mod seed;
pub mod setup;
pub mod tradelog;

use chrono::NaiveDate;
use tokio_postgres::GenericClient;

/// A failed statement, with what was being done and the server's own message.
#[derive(Debug, thiserror::Error)]
#[error("{context}: {}", describe(source))]
pub struct StoreError {
    context: &'static str,
    #[source]
    source: tokio_postgres::Error,
}

/// A database error as a person needs it: the server's message, SQLSTATE and detail, or the
/// connection-level cause.
pub fn describe(e: &tokio_postgres::Error) -> String {
    match e.as_db_error() {
        Some(db) => {
            let mut text = format!("{} (SQLSTATE {})", db.message(), db.code().code());
            if let Some(detail) = db.detail() {
                text.push_str(": ");
                text.push_str(detail);
            }
            text
        }
        None => {
            let mut text = e.to_string();
            let mut source = std::error::Error::source(e);
            while let Some(s) = source {
                text.push_str(": ");
                text.push_str(&s.to_string());
                source = s.source();
            }
            text
        }
    }
}

/// Whether the server refused a statement for what it carried (a data exception, an integrity
/// violation, a value too large to index), as opposed to a connection or server failure: the
/// same write would be refused again, so it is not retried, and in a group only the writes that
/// carry such values are refused.
pub fn is_refusal(e: &tokio_postgres::Error) -> bool {
    e.as_db_error().is_some_and(|db| {
        let code = db.code().code();
        code.starts_with("22") || code.starts_with("23") || code == "42804" || code == "54000"
    })
}

impl StoreError {
    /// Whether the statement was refused for its values (see [`is_refusal`]).
    pub fn is_refusal(&self) -> bool {
        is_refusal(&self.source)
    }

    pub(crate) fn new(context: &'static str) -> impl FnOnce(tokio_postgres::Error) -> Self {
        move |source| Self { context, source }
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
    Ok(connect_with_task(conninfo, timeout).await?.0)
}

async fn connect_with_task(
    conninfo: &str,
    timeout: std::time::Duration,
) -> Result<(tokio_postgres::Client, tokio::task::AbortHandle), tokio_postgres::Error> {
    let mut config: tokio_postgres::Config = conninfo.parse()?;
    config.connect_timeout(timeout);
    audit::writer::apply(&mut config);
    let (client, connection) = config.connect(tokio_postgres::NoTls).await?;
    let task = tokio::spawn(async move {
        if let Err(e) = connection.await {
            tracing::debug!(error = %e, "database connection closed");
        }
    })
    .abort_handle();
    Ok((client, task))
}

/// A connection that is closed when this value is dropped, even with a request in flight.
///
/// Dropping a plain [`tokio_postgres::Client`] leaves its connection task waiting for the
/// answers still owed, forever on a server that has stopped answering; a writer that drops
/// connections on a timeout would then pile sockets (and server sessions) up. This one aborts
/// the task, which closes the socket.
#[derive(Debug)]
pub struct OwnedClient {
    /// The client
    pub client: tokio_postgres::Client,
    task: tokio::task::AbortHandle,
}

impl std::ops::Deref for OwnedClient {
    type Target = tokio_postgres::Client;
    fn deref(&self) -> &Self::Target {
        &self.client
    }
}

impl std::ops::DerefMut for OwnedClient {
    fn deref_mut(&mut self) -> &mut Self::Target {
        &mut self.client
    }
}

impl Drop for OwnedClient {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Connects like [`connect`]; the socket closes when the returned value is dropped.
pub async fn connect_owned(
    conninfo: &str,
    timeout: std::time::Duration,
) -> Result<OwnedClient, tokio_postgres::Error> {
    let (client, task) = connect_with_task(conninfo, timeout).await?;
    Ok(OwnedClient { client, task })
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

/// Takes the session-level advisory lock that serializes trade-log maintenance; waits for it.
pub async fn lock_tradelog_maintenance(client: &impl GenericClient) -> Result<(), StoreError> {
    client
        .execute(
            "SELECT pg_advisory_lock(hashtext('tradegate.tradelog_maintenance'))",
            &[],
        )
        .await
        .map_err(StoreError::new("locking trade-log maintenance"))?;
    Ok(())
}
