//! `tradegate migrate`.

use anyhow::Result;

use crate::config::Config;
use crate::database::Database;
use crate::migrate;

/// `tradegate migrate`.
pub async fn migrate_command(config: &Config) -> Result<()> {
    // a migration writes the trail as the gateway does
    crate::database::install_writer_key(config)?;
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
