//! Partitions and retention: daily partitions are created ahead of time; partitions older than
//! the hot window are exported to compressed JSONL, checked, and only then detached and dropped.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Duration;

use chrono::{Days, NaiveDate};
use flate2::Compression;
use flate2::write::GzEncoder;
use serde::Serialize;
use tokio_postgres::Client;

use super::config::TradeLogConfig;
use crate::domain::now_us;
use crate::store::audit::archive::{self, ExportError};
use crate::store::{self, StoreError, tradelog};

/// What one maintenance run did.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct MaintenanceReport {
    /// Partitions created ahead
    pub created_partitions: i32,
    /// Partitions exported: day, file, rows
    pub exported: Vec<(NaiveDate, PathBuf, u64)>,
    /// Days archived as Parquet (`audit-YYYY-MM-DD/`, every audit table of the day) before
    /// their partition was dropped
    pub archived: Vec<(NaiveDate, PathBuf)>,
    /// Partitions detached and dropped
    pub dropped: Vec<NaiveDate>,
}

/// A maintenance step that failed; nothing is dropped unless its export succeeded.
#[derive(Debug, thiserror::Error)]
pub enum MaintenanceError {
    /// Connecting failed.
    #[error("connecting for trade-log maintenance: {0}")]
    Connect(#[source] tokio_postgres::Error),
    /// A statement failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// Exporting failed.
    #[error("exporting the trade log of {day}: {message}")]
    Export {
        /// The day
        day: NaiveDate,
        /// Why
        message: String,
    },
    /// There is no partition for the day.
    #[error("there is no trade-log partition for {0}")]
    NoPartition(NaiveDate),
}

/// Creates partitions ahead of `today` and retires partitions older than the hot window:
/// each is first detached and renamed (so no insert can reach it any more), then exported,
/// then dropped. A retired table whose export fails is kept and retried on the next run.
pub async fn run_maintenance(
    conninfo: &str,
    config: &TradeLogConfig,
    today: NaiveDate,
) -> Result<MaintenanceReport, MaintenanceError> {
    let mut client = store::connect(conninfo, Duration::from_secs(10))
        .await
        .map_err(MaintenanceError::Connect)?;
    // one maintenance at a time across processes; released when this connection closes
    store::lock_tradelog_maintenance(&client).await?;
    let mut report = MaintenanceReport {
        created_partitions: store::ensure_tradelog_partitions(
            &client,
            today - Days::new(1),
            i32::try_from(config.partition_days_ahead)
                .unwrap_or(i32::MAX)
                .saturating_add(2),
        )
        .await?,
        ..MaintenanceReport::default()
    };
    let cutoff = today - Days::new(u64::from(config.hot_days));
    for (day, _) in tradelog::list_partitions(&client).await? {
        if day < cutoff {
            let retired = tradelog::retire_partition(&mut client, day, now_us()).await?;
            tracing::info!(%day, table = %retired, "detached a trade-log partition past the hot window");
        }
    }
    for (day, table) in tradelog::list_retired(&client).await? {
        if config.export_before_drop {
            let (path, rows) = export_table(&client, &table, day, &config.export_dir).await?;
            tracing::info!(%day, rows, file = %path.display(), "exported a retired trade-log partition");
            report.exported.push((day, path, rows));
            // the whole day as Parquet, its trade log from the retired table; a day without
            // its day seal (the gateway was not running when it ended) keeps the JSONL only
            match archive::export_day(&mut client, day, &config.export_dir, Some(&table)).await {
                Ok(_) => {
                    let dir = archive::day_dir(&config.export_dir, day);
                    tracing::info!(%day, dir = %dir.display(), "archived the day as Parquet");
                    report.archived.push((day, dir));
                }
                Err(ExportError::Exists(dir)) => report.archived.push((day, dir)),
                Err(ExportError::NotSealed(_)) => {
                    tracing::warn!(%day, "the day has no day seal: its trade log is kept as JSONL only, not as a day archive");
                }
                Err(e) => {
                    return Err(MaintenanceError::Export {
                        day,
                        message: e.to_string(),
                    });
                }
            }
        }
        tradelog::drop_retired(&client, &table).await?;
        tracing::info!(%day, table = %table, "dropped a retired trade-log partition");
        report.dropped.push(day);
    }
    Ok(report)
}

/// Writes the live partition of `day` to `<dir>/tradelog-YYYY-MM-DD.jsonl.gz` (see
/// [`export_table`]). Returns the file and the row count.
pub async fn export_day(
    client: &Client,
    day: NaiveDate,
    dir: &Path,
) -> Result<(PathBuf, u64), MaintenanceError> {
    if tradelog::partition_row_count(client, day).await?.is_none() {
        return Err(MaintenanceError::NoPartition(day));
    }
    export_table(client, &tradelog::partition_name(day), day, dir).await
}

/// Writes `table` to `<dir>/tradelog-YYYY-MM-DD[.N].jsonl.gz`, one JSON object per row (every
/// column) in time order; the file is fsynced and renamed into place only when complete and
/// when its row count matches the table's. An earlier export of the day is never overwritten.
async fn export_table(
    client: &Client,
    table: &str,
    day: NaiveDate,
    dir: &Path,
) -> Result<(PathBuf, u64), MaintenanceError> {
    let export_error = |message: String| MaintenanceError::Export { day, message };
    let expected = tradelog::table_row_count(client, table).await?;
    std::fs::create_dir_all(dir)
        .map_err(|e| export_error(format!("creating {}: {e}", dir.display())))?;
    let path = (1..)
        .map(|n| {
            let suffix = if n == 1 {
                String::new()
            } else {
                format!(".{n}")
            };
            dir.join(format!(
                "tradelog-{}{suffix}.jsonl.gz",
                day.format("%Y-%m-%d")
            ))
        })
        .find(|p| !p.exists())
        .unwrap_or_else(|| dir.join("tradelog-export.jsonl.gz"));
    let partial = path.with_extension("gz.partial");
    let file = std::fs::File::create(&partial)
        .map_err(|e| export_error(format!("creating {}: {e}", partial.display())))?;
    let mut encoder = GzEncoder::new(std::io::BufWriter::new(file), Compression::default());
    let rows = tradelog::export_table_rows(client, table, |line| {
        encoder.write_all(line.as_bytes())?;
        encoder.write_all(b"\n")
    })
    .await
    .map_err(|e| export_error(e.to_string()))?;
    let file = encoder
        .finish()
        .and_then(|w| w.into_inner().map_err(|e| e.into_error()))
        .map_err(|e| export_error(format!("finishing {}: {e}", partial.display())))?;
    file.sync_all()
        .map_err(|e| export_error(format!("syncing {}: {e}", partial.display())))?;
    if i64::try_from(rows).unwrap_or(i64::MAX) != expected {
        let _ = std::fs::remove_file(&partial);
        return Err(export_error(format!(
            "exported {rows} rows but the table holds {expected}; not dropping it"
        )));
    }
    std::fs::rename(&partial, &path)
        .map_err(|e| export_error(format!("renaming {}: {e}", partial.display())))?;
    if let Ok(dir) = std::fs::File::open(dir) {
        let _ = dir.sync_all();
    }
    Ok((path, rows))
}
