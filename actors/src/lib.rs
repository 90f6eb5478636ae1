//! tradegate's actors, their messages, the domain types and the store.
//!
//! One supervision tree:
//!
//! ```text
//! Gateway (root supervisor: restarts a failed child with backoff, gives up after N restarts in T)
//! ├── TradeLogWriter    the tradelog pipeline: batching, COPY, spill-to-JSONL, backoff, replay
//! ├── IngestionLogger   data_ingestion_runs, run records, api_call_logs, api_payloads
//! ├── OrderRouter       strategy orders -> risk checks -> durable trade_decisions -> broker session
//! ├── AlpacaSession     one per Alpaca account: REST orders + trade_updates stream
//! ├── IbkrSyncer        one per IBKR account: executions/fills sync
//! └── Reporter          audit queries, alerts, retention jobs
//! ```
//!
//! Children are registered by name and found with `ractor::registry::where_is`, because a
//! restarted child is a new actor with a new id.

pub mod alpaca_session;
pub mod domain;
pub mod gateway;
pub mod ibkr_syncer;
pub mod ingestion_logger;
pub mod order_router;
pub mod reconciliation;
pub mod reporter;
pub mod store;
pub mod strategy_hub;
pub mod tls;
pub mod trade_log_writer;

/// The read buffer of every WebSocket tradegate opens or accepts (the strategy API, the Alpaca
/// stream, the simulated venue's stream). tungstenite's default of 128 KiB is zero-filled again
/// on every read, which cost the order path about a tenth of its CPU; its frames are JSON of
/// a few hundred bytes, and a larger frame still arrives whole over several reads.
pub const WS_READ_BUFFER_BYTES: usize = 8 * 1024;

/// The WebSocket settings of [`WS_READ_BUFFER_BYTES`] for tungstenite clients.
pub fn ws_client_config() -> tokio_tungstenite::tungstenite::protocol::WebSocketConfig {
    tokio_tungstenite::tungstenite::protocol::WebSocketConfig::default()
        .read_buffer_size(WS_READ_BUFFER_BYTES)
}
