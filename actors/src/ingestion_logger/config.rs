//! `[ingestion]`: data ingestion logging and decision lineage settings.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::domain::LineagePolicy;

/// `[ingestion]`
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct IngestionConfig {
    /// A decision's `data_lineage` lists the runs completed within this many seconds before it.
    pub lineage_window_secs: u64,
    /// ...at most this many, newest first.
    pub lineage_max_runs: u32,
    /// Records accepted in one batch (one HTTP request or message).
    pub max_records_per_batch: usize,
    /// `tradegate ingest` fails a job still running after this many seconds (`--timeout`
    /// overrides it).
    pub job_timeout_secs: u64,
    /// After the timeout, the job gets SIGTERM, then SIGKILL after this many seconds.
    pub kill_grace_secs: u64,
    /// Bytes of a failed job's stderr kept in the run's error details.
    pub stderr_tail_bytes: usize,
}

impl Default for IngestionConfig {
    fn default() -> Self {
        Self {
            lineage_window_secs: 86_400,
            lineage_max_runs: 50,
            max_records_per_batch: 100_000,
            job_timeout_secs: 3_600,
            kill_grace_secs: 5,
            stderr_tail_bytes: 4_096,
        }
    }
}

impl IngestionConfig {
    /// The lineage policy of decisions.
    pub fn lineage(&self) -> LineagePolicy {
        LineagePolicy {
            window: Duration::from_secs(self.lineage_window_secs),
            max_runs: self.lineage_max_runs,
        }
    }

    /// Checks values that parse but cannot work; the error names the key.
    pub fn validate(&self) -> Result<(), (&'static str, String)> {
        if self.lineage_window_secs == 0 {
            return Err(("ingestion.lineage_window_secs", "must be at least 1".into()));
        }
        if self.max_records_per_batch == 0 {
            return Err((
                "ingestion.max_records_per_batch",
                "must be at least 1".into(),
            ));
        }
        if self.job_timeout_secs == 0 {
            return Err(("ingestion.job_timeout_secs", "must be at least 1".into()));
        }
        Ok(())
    }
}
