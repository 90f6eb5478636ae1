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
    /// Seal the audit journal now (closing the UTC days that ended first); the seals written.
    Seal {
        /// Reply for RPC (none for the scheduled run)
        reply: Option<RpcReplyPort<Result<Vec<crate::store::audit::Seal>, ReporterError>>>,
    },
    /// Build, store and deliver the daily summary when it is due
    DailySummary,
    /// Purge API payloads past retention now; how many were deleted.
    PurgePayloads {
        /// Reply for RPC (none for the scheduled run)
        reply: Option<RpcReplyPort<Result<u64, ReporterError>>>,
    },
}
