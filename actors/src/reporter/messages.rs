//! Messages of the Reporter: the alert checks and the payload purge, on request.

use ractor::RpcReplyPort;

use super::actor::ReporterError;
use crate::store::alerts::RaisedAlert;

/// Messages of the Reporter.
#[derive(Debug)]
pub enum ReporterMessage {
    /// Run the alert checks now; the alerts raised.
    CheckAlerts {
        /// Reply for RPC (none for the scheduled run)
        reply: Option<RpcReplyPort<Result<Vec<RaisedAlert>, ReporterError>>>,
    },
    /// Build, store and deliver the daily summary when it is due
    DailySummary,
    /// Purge API payloads past retention now; how many were deleted.
    PurgePayloads {
        /// Reply for RPC (none for the scheduled run)
        reply: Option<RpcReplyPort<Result<u64, ReporterError>>>,
    },
}
