//! The IbkrSyncer's parts: so far the TWS protocol codec ([`tws`]) and a session that fetches
//! executions ([`client`]), which executions sync and the simulated TWS are built on.

pub mod client;
pub mod tws;
