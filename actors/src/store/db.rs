//! Statements the hot paths run thousands of times a second are prepared once per pooled
//! connection (deadpool's per-connection statement cache), so PostgreSQL parses them once and
//! can settle on a generic plan instead of planning every execution. A plain connection (tests,
//! the CLI) prepares each time, with the same results.

use tokio_postgres::types::Type;
use tokio_postgres::{Error, GenericClient, Statement};

/// A connection or transaction the store can run statements on, with prepared statements
/// cached where the connection keeps a cache.
pub trait Db: Sync {
    /// The connection or transaction itself
    type Client: GenericClient + Sync;

    /// What statements run on.
    fn client(&self) -> &Self::Client;

    /// `sql` prepared with its parameter types, from the cache when there is one.
    fn statement(
        &self,
        sql: &str,
        types: &[Type],
    ) -> impl Future<Output = Result<Statement, Error>> + Send;
}

impl Db for tokio_postgres::Client {
    type Client = Self;
    fn client(&self) -> &Self {
        self
    }
    async fn statement(&self, sql: &str, types: &[Type]) -> Result<Statement, Error> {
        self.prepare_typed(sql, types).await
    }
}

impl Db for tokio_postgres::Transaction<'_> {
    type Client = Self;
    fn client(&self) -> &Self {
        self
    }
    async fn statement(&self, sql: &str, types: &[Type]) -> Result<Statement, Error> {
        self.prepare_typed(sql, types).await
    }
}

impl Db for deadpool_postgres::ClientWrapper {
    type Client = tokio_postgres::Client;
    fn client(&self) -> &tokio_postgres::Client {
        self
    }
    async fn statement(&self, sql: &str, types: &[Type]) -> Result<Statement, Error> {
        self.prepare_typed_cached(sql, types).await
    }
}

impl<'a> Db for deadpool_postgres::Transaction<'a> {
    type Client = tokio_postgres::Transaction<'a>;
    fn client(&self) -> &tokio_postgres::Transaction<'a> {
        self
    }
    async fn statement(&self, sql: &str, types: &[Type]) -> Result<Statement, Error> {
        self.prepare_typed_cached(sql, types).await
    }
}
