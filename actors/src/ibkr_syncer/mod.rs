//! The IbkrSyncer: executions sync from TWS / IB Gateway into `broker_fills` and
//! `broker_trades` — the protocol codec ([`tws`]), a session ([`client`]), normalization
//! ([`fills`]), one sync ([`sync`]) applying its batch ([`apply`], deciding what it can in
//! [`matching`]) and the actor, one per TWS session, that schedules syncs and runs jobs.

mod actor;
pub mod apply;
pub mod backfill;
pub mod client;
pub mod config;
pub mod fills;
pub mod flex;
pub mod flex_service;
pub mod job;
pub mod matching;
mod messages;
pub mod positions;
pub mod sync;
pub mod tws;

pub use actor::{
    ACCOUNT_NOT_MANAGED_ALERT, CLIENT_ID_IN_USE_ALERT, IbkrSyncClient, IbkrSyncer, IbkrSyncerArgs,
    IbkrSyncerState, group_for,
};
pub use config::{FlexConfig, IbkrConfig, IbkrGateway, SessionConfig};
pub use job::{JobOverrides, JobPayloadError};
pub use messages::IbkrSyncerMessage;
pub use sync::{SyncError, SyncRequest, sync_account};
