//! The TradeLogWriter: the unified trade log (spec `trade-logs.md`). Producers push events
//! through a [`TradeLog`] handle that never awaits; the writer batches them into PostgreSQL with
//! binary COPY, spills to fsynced JSONL when the database fails, and replays with no loss and no
//! duplicates.

mod actor;
mod config;
mod handle;
mod maintenance;
mod messages;
pub mod spill;
mod worker;

pub use actor::{TradeLogWriter, TradeLogWriterArgs, TradeLogWriterState};
pub use config::{Overflow, TradeLogConfig, WriteMode};
pub use handle::{Gap, TradeLog};
pub use maintenance::{MaintenanceError, MaintenanceReport, export_day, run_maintenance};
pub use messages::TradeLogWriterMessage;
pub use worker::WriterStats;

/// The name the writer is registered under in the supervision tree.
pub const NAME: &str = "trade_log_writer";
