//! The IbkrSyncer's parts: so far the TWS protocol codec ([`tws`]) that executions sync and the
//! simulated TWS are built on.

pub mod tws;
