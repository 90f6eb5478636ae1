//! `tradegate run`.

use anyhow::Result;

use crate::app::{Running, shutdown_signal};
use crate::config::Config;

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
