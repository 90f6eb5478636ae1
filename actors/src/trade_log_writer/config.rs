//! `[tradelog]`: the trade-log pipeline's settings.

use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize};

/// What a producer does when the queue is full.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Overflow {
    /// Drop the oldest queued event, count it, warn, and record a gap row (the default)
    DropOldest,
    /// Wait until the writer makes room (the producer blocks)
    Block,
}

/// How batches are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum WriteMode {
    /// Binary `COPY` (the default; falls back to insert on errors COPY cannot survive)
    Copy,
    /// Prepared multi-row `INSERT`
    Insert,
}

/// `[tradelog]`
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TradeLogConfig {
    /// Events the queue holds before overflow applies.
    pub queue_capacity: usize,
    /// `drop_oldest` or `block`.
    pub overflow: Overflow,
    /// A batch is written when it has this many events...
    pub batch_size: usize,
    /// ...and, when more are already waiting, it takes up to this many into the same
    /// transaction, so that a burst is not throttled by one commit per `batch_size`.
    pub max_batch_size: usize,
    /// ...or when its oldest event has waited this long, in milliseconds.
    pub batch_max_age_ms: u64,
    /// `copy` or `insert`.
    pub write_mode: WriteMode,
    /// Where batches that could not be written are spilled (JSONL), relative to the working
    /// folder; quarantined and dead-letter files go in subfolders.
    pub spill_dir: PathBuf,
    /// A spill file is closed and a new one started beyond this size, in bytes.
    pub spill_file_max_bytes: u64,
    /// Events kept in memory when even the spill directory cannot be written.
    pub memory_buffer_events: usize,
    /// First retry delay after a database failure, in milliseconds (doubles, with jitter).
    pub backoff_base_ms: u64,
    /// Longest retry delay, in milliseconds.
    pub backoff_max_ms: u64,
    /// Daily partitions kept created ahead of today.
    pub partition_days_ahead: u32,
    /// Days of trade log kept in the table; older partitions are exported, then dropped.
    pub hot_days: u32,
    /// Export a partition before dropping it.
    pub export_before_drop: bool,
    /// Where exports go.
    pub export_dir: PathBuf,
    /// How often the retention and partition job runs, in seconds.
    pub maintenance_interval_secs: u64,
}

impl Default for TradeLogConfig {
    fn default() -> Self {
        Self {
            queue_capacity: 65_536,
            overflow: Overflow::DropOldest,
            batch_size: 1_000,
            max_batch_size: 10_000,
            batch_max_age_ms: 50,
            write_mode: WriteMode::Copy,
            spill_dir: PathBuf::from(".tradegate/spill"),
            spill_file_max_bytes: 64 * 1024 * 1024,
            memory_buffer_events: 100_000,
            backoff_base_ms: 100,
            backoff_max_ms: 10_000,
            partition_days_ahead: 7,
            hot_days: 90,
            export_before_drop: true,
            export_dir: PathBuf::from(".tradegate/exports"),
            maintenance_interval_secs: 3_600,
        }
    }
}

impl TradeLogConfig {
    /// The batch age limit.
    pub fn batch_max_age(&self) -> Duration {
        Duration::from_millis(self.batch_max_age_ms)
    }

    /// How often an idle writer looks at the queue: a tenth of the batch age, between 1 and
    /// 5 ms. Producers never wake the writer themselves, so that logging stays free of syscalls.
    pub fn idle_poll(&self) -> Duration {
        Duration::from_millis((self.batch_max_age_ms / 10).clamp(1, 5))
    }

    /// Checks values that parse but cannot work; returns the key and what is wrong.
    pub fn validate(&self) -> Result<(), (&'static str, String)> {
        if self.queue_capacity == 0 {
            return Err(("tradelog.queue_capacity", "must be at least 1".into()));
        }
        if self.batch_size == 0 {
            return Err(("tradelog.batch_size", "must be at least 1".into()));
        }
        if self.max_batch_size < self.batch_size {
            return Err((
                "tradelog.max_batch_size",
                format!(
                    "must not be below tradelog.batch_size ({})",
                    self.batch_size
                ),
            ));
        }
        if self.batch_max_age_ms == 0 {
            return Err(("tradelog.batch_max_age_ms", "must be at least 1".into()));
        }
        if self.backoff_base_ms == 0 || self.backoff_max_ms < self.backoff_base_ms {
            return Err((
                "tradelog.backoff_max_ms",
                "backoff_base_ms must be at least 1 and backoff_max_ms not below it".into(),
            ));
        }
        if self.hot_days == 0 {
            return Err(("tradelog.hot_days", "must be at least 1".into()));
        }
        if self.spill_dir.as_os_str().is_empty() {
            return Err(("tradelog.spill_dir", "must be set".into()));
        }
        if self.maintenance_interval_secs == 0 {
            return Err((
                "tradelog.maintenance_interval_secs",
                "must be at least 1".into(),
            ));
        }
        Ok(())
    }
}
