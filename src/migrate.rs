//! Schema migrations (refinery, embedded at compile time), applied under a PostgreSQL advisory
//! lock so that several processes starting at once apply each migration exactly once.

use tokio_postgres::Client;
use tradegate_actors::store::setup;

mod embedded {
    refinery::embed_migrations!("migrations");
}

/// A migration step that failed.
#[derive(Debug, thiserror::Error)]
pub enum MigrateError {
    /// Taking or releasing the advisory lock failed.
    #[error("migration lock: {0}")]
    Lock(#[source] tradegate_actors::store::StoreError),
    /// A migration failed; nothing of it was applied.
    #[error("migration failed: {0}")]
    Refinery(#[source] refinery::Error),
}

/// The migrations applied by one run, as `V<version>__<name>`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MigrationReport {
    /// Newly applied, in order
    pub applied: Vec<String>,
}

/// Applies every pending migration.
pub async fn run(client: &mut Client) -> Result<MigrationReport, MigrateError> {
    setup::lock_migrations(&*client)
        .await
        .map_err(MigrateError::Lock)?;
    let result = embedded::migrations::runner().run_async(client).await;
    let unlock = setup::unlock_migrations(&*client).await;
    let report = result.map_err(MigrateError::Refinery)?;
    unlock.map_err(MigrateError::Lock)?;
    Ok(MigrationReport {
        applied: report
            .applied_migrations()
            .iter()
            .map(|m| format!("V{}__{}", m.version(), m.name()))
            .collect(),
    })
}

/// Every migration embedded in this binary, as `V<version>__<name>`.
pub fn embedded() -> Vec<String> {
    let runner = embedded::migrations::runner();
    let mut migrations: Vec<_> = runner.get_migrations().iter().collect();
    // in version order (V10 after V9), as they are applied, not in file-name order
    migrations.sort_by_key(|m| m.version());
    migrations
        .iter()
        .map(|m| format!("V{}__{}", m.version(), m.name()))
        .collect()
}
