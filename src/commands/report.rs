//! `tradegate report ...` and `tradegate purge`.

use anyhow::Result;
use chrono::{Duration, Utc};

use crate::config::Config;
use crate::database::{with_database, with_database_as_reader};
use crate::output::Format;
use crate::report::{ReportRequest, produce};

/// `tradegate report ...`: prints the report; an unknown decision or order is an error.
pub async fn report_command(config: &Config, request: ReportRequest, format: Format) -> Result<()> {
    // reading only: no writer key needed
    let report = with_database_as_reader(config, async |database| {
        let client = database.connect().await?;
        Ok(produce(&client, &request).await?)
    })
    .await?;
    match format {
        Format::Json => println!("{}", serde_json::to_string_pretty(&report.to_json())?),
        Format::Table => print!("{}", report.to_text()),
    }
    Ok(())
}

/// `tradegate purge`: the payload purge, then the trade log's partition retention.
pub async fn purge_command(
    config: &Config,
    payload_days: Option<u32>,
    format: Format,
) -> Result<()> {
    let days = payload_days.unwrap_or(config.reporter.payload_retention_days);
    anyhow::ensure!(days > 0, "--payload-days must be at least 1");
    let before = Utc::now() - Duration::days(i64::from(days));
    let (deleted, maintenance) = with_database(config, async |database| {
        let client = database.connect().await?;
        // on record before anything is deleted: a purge that cannot be recorded does not run
        tradegate_actors::store::operator_actions::record(
            &client,
            &tradegate_actors::domain::NewOperatorAction {
                by: &tradegate_actors::domain::Operator::local_command("purge"),
                action: "payloads.purge",
                target: Some("api_payloads"),
                previous: None,
                new: Some(serde_json::json!({
                    "payloads_before": before,
                    "tradelog_hot_days": config.tradelog.hot_days,
                })),
                reason: None,
            },
        )
        .await?;
        let deleted = tradegate_actors::store::retention::purge_payloads(
            &client,
            before,
            config.reporter.purge_batch_size,
        )
        .await?;
        let maintenance = tradegate_actors::trade_log_writer::run_maintenance(
            database.conninfo(),
            &config.tradelog,
            Utc::now().date_naive(),
        )
        .await?;
        Ok((deleted, maintenance))
    })
    .await?;
    match format {
        Format::Json => println!(
            "{}",
            serde_json::to_string_pretty(&serde_json::json!({
                "payloads_deleted": deleted,
                "payloads_before": before,
                "tradelog": maintenance,
            }))?
        ),
        Format::Table => {
            println!(
                "API payloads captured before {}: {deleted} deleted (referenced ones kept)",
                before.format("%Y-%m-%d %H:%M:%S")
            );
            println!(
                "trade log: {} partitions created ahead, {} exported, {} dropped",
                maintenance.created_partitions,
                maintenance.exported.len(),
                maintenance.dropped.len()
            );
            for (day, file, rows) in &maintenance.exported {
                println!("  {day}: {rows} rows -> {}", file.display());
            }
        }
    }
    Ok(())
}
