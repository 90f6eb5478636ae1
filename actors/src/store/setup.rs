//! Setting up a server for tradegate: the database itself, and the lock that lets several
//! processes starting at once apply each migration exactly once.

use tokio_postgres::GenericClient;

use super::StoreError;

/// Key of the advisory lock held while migrating ("tradegate" in ASCII).
const MIGRATION_LOCK: i64 = 0x7472_6164_6567_6174;

/// Whether database `name` exists on the server.
pub async fn database_exists(client: &impl GenericClient, name: &str) -> Result<bool, StoreError> {
    let row = client
        .query_opt("SELECT 1 FROM pg_database WHERE datname = $1", &[&name])
        .await
        .map_err(StoreError::new("looking up a database"))?;
    Ok(row.is_some())
}

/// Creates database `name` (an identifier, quoted here). Another process creating it at the
/// same moment fails this with SQLSTATE 42P04, which the caller may take as success.
pub async fn create_database(client: &impl GenericClient, name: &str) -> Result<(), StoreError> {
    client
        .batch_execute(&format!("CREATE DATABASE {}", quote_ident(name)))
        .await
        .map_err(StoreError::new("creating a database"))
}

/// Quotes an SQL identifier.
pub fn quote_ident(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

/// Takes the session-level migration lock; waits for a migration elsewhere to finish.
pub async fn lock_migrations(client: &impl GenericClient) -> Result<(), StoreError> {
    client
        .execute("SELECT pg_advisory_lock($1)", &[&MIGRATION_LOCK])
        .await
        .map_err(StoreError::new("taking the migration lock"))?;
    Ok(())
}

/// Releases the migration lock.
pub async fn unlock_migrations(client: &impl GenericClient) -> Result<(), StoreError> {
    client
        .execute("SELECT pg_advisory_unlock($1)", &[&MIGRATION_LOCK])
        .await
        .map_err(StoreError::new("releasing the migration lock"))?;
    Ok(())
}
