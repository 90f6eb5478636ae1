//! The IngestionLogger: data ingestion runs (running -> completed | failed), their records in
//! batches, the API calls they made with request and response payloads, and the zero-records
//! alert. Data jobs reach it through the HTTP API or `tradegate ingest`; actors through an
//! [`IngestionClient`].

mod actor;
mod client;
mod config;
mod messages;

pub use crate::store::ingestion::{Finish, Finished, IngestionError, RunFilter};
pub use actor::{IngestionLogger, IngestionLoggerArgs};
pub use client::IngestionClient;
pub use config::IngestionConfig;
pub use messages::IngestionLoggerMessage;

/// The name the logger is registered under in the supervision tree.
pub const NAME: &str = "ingestion_logger";
