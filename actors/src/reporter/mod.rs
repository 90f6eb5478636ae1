//! The Reporter: raises alerts when the trail shows trouble (a failure rate above its
//! threshold, API errors above theirs), purges API payloads past retention, delivers the daily
//! summary and seals the audit journal. The reports
//! themselves are queries (`store::reports`) that the CLI and the API run directly.

mod actor;
pub mod alerts;
mod config;
pub mod daily;
mod messages;
pub mod seals;

pub use crate::store::alerts::RaisedAlert;
pub use actor::{NAME, Reporter, ReporterArgs, ReporterClient, ReporterError};
pub use config::{ReporterConfig, WebhookFormat};
pub use messages::ReporterMessage;
pub use seals::AuditConfig;
