//! Messages of the IbkrSyncer: syncs on request, the schedule, the job poll.

use ractor::RpcReplyPort;

use super::sync::SyncError;
use crate::domain::SyncReport;

/// Messages of the IbkrSyncer.
#[derive(Debug)]
pub enum IbkrSyncerMessage {
    /// Sync an account now (optionally over another look-back) and reply with the outcome
    SyncNow {
        /// The account
        account: String,
        /// Days to look back instead of `[ibkr] lookback_days`
        lookback_days: Option<u32>,
        /// The outcome
        reply: RpcReplyPort<Result<SyncReport, SyncError>>,
    },
    /// A scheduled or retry sync of every account; only the latest scheduled generation runs
    Tick(u64),
    /// Look for pending `trades.sync` and `positions.sync` jobs of the accounts
    PollJobs,
    /// Read what TWS pushed while idle (fills, notices, a closed connection)
    ReadLive,
}
