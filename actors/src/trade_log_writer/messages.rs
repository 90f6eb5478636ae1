//! Messages of the TradeLogWriter.

use chrono::NaiveDate;
use ractor::RpcReplyPort;

use super::maintenance::MaintenanceReport;
use super::worker::WriterStats;

/// What the TradeLogWriter does. Producers do not send messages: they push events through the
/// [`TradeLog`](super::TradeLog) handle, which never awaits.
#[derive(Debug)]
pub enum TradeLogWriterMessage {
    /// Persist everything queued and, if the database answers, replay every spill file.
    Flush {
        /// Replied with the statistics once done
        reply: RpcReplyPort<WriterStats>,
    },
    /// Report the statistics.
    Stats {
        /// Reply channel for RPC
        reply: RpcReplyPort<WriterStats>,
    },
    /// Create partitions ahead of `today` and retire those past the hot window.
    RunMaintenance {
        /// The day to count from (UTC)
        today: NaiveDate,
        /// The outcome
        reply: RpcReplyPort<Result<MaintenanceReport, super::maintenance::MaintenanceError>>,
    },
    /// The scheduled maintenance run (sent by the actor to itself).
    MaintenanceTick,
    /// The writer loop ended without being asked to (sent by its monitor).
    WorkerExited {
        /// Why
        reason: String,
    },
}
