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
use crate::store::{self, StoreError, tradelog};

/// What one maintenance run did.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct MaintenanceReport {
    /// Partitions created ahead
    pub created_partitions: i32,
    /// Partitions exported: day, file, rows
    pub exported: Vec<(NaiveDate, PathBuf, u64)>,
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

/// Creates partitions ahead of `today` and retires partitions older than the hot window.
pub async fn run_maintenance(
    conninfo: &str,
    config: &TradeLogConfig,
    today: NaiveDate,
) -> Result<MaintenanceReport, MaintenanceError> {
    let client = store::connect(conninfo, Duration::from_secs(10))
        .await
        .map_err(MaintenanceError::Connect)?;
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
        if day >= cutoff {
            continue;
        }
        if config.export_before_drop {
            let (path, rows) = export_day(&client, day, &config.export_dir).await?;
            tracing::info!(%day, rows, file = %path.display(), "exported a trade-log partition before retiring it");
            report.exported.push((day, path, rows));
        }
        tradelog::drop_partition(&client, day).await?;
        tracing::info!(%day, "detached and dropped a trade-log partition past the hot window");
        report.dropped.push(day);
    }
    Ok(report)
}

/// Writes `day`'s partition to `<dir>/tradelog-YYYY-MM-DD.jsonl.gz` (one JSON object per row,
/// every column, in time order), fsynced and renamed into place only when complete and when its
/// row count matches the table's. Returns the file and the row count.
pub async fn export_day(
    client: &Client,
    day: NaiveDate,
    dir: &Path,
) -> Result<(PathBuf, u64), MaintenanceError> {
    let export_error = |message: String| MaintenanceError::Export { day, message };
    let expected = tradelog::partition_row_count(client, day)
        .await?
        .ok_or(MaintenanceError::NoPartition(day))?;
    std::fs::create_dir_all(dir)
        .map_err(|e| export_error(format!("creating {}: {e}", dir.display())))?;
    let path = dir.join(format!("tradelog-{}.jsonl.gz", day.format("%Y-%m-%d")));
    let partial = path.with_extension("gz.partial");
    let file = std::fs::File::create(&partial)
        .map_err(|e| export_error(format!("creating {}: {e}", partial.display())))?;
    let mut encoder = GzEncoder::new(std::io::BufWriter::new(file), Compression::default());
    let rows = tradelog::export_partition_rows(client, day, |line| {
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
        return Err(export_error(format!(
            "exported {rows} rows but the partition holds {expected}; not retiring it"
        )));
    }
    std::fs::rename(&partial, &path)
        .map_err(|e| export_error(format!("renaming {}: {e}", partial.display())))?;
    Ok((path, rows))
}
