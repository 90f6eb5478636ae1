//! `tradegate tradelog export`.

use anyhow::Result;
use tradegate_actors::trade_log_writer;

use crate::config::Config;
use crate::database::with_database_as_reader;

/// `tradegate tradelog export --day DATE`: writes one day of the trade log to
/// `<out>/tradelog-DATE.jsonl.gz`.
pub async fn export_trade_log(
    config: &Config,
    day: chrono::NaiveDate,
    out: Option<&std::path::Path>,
) -> Result<()> {
    let (path, rows) = with_database_as_reader(config, async |database| {
        let client = database.connect().await?;
        let dir = out.unwrap_or(&config.tradelog.export_dir);
        Ok(trade_log_writer::export_day(&client, day, dir).await?)
    })
    .await?;
    println!(
        "exported {rows} trade-log rows of {day} to {}",
        path.display()
    );
    Ok(())
}
