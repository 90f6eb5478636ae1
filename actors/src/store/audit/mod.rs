//! The trail's tamper evidence (migration V20): the writer key the gateway's connections carry,
//! the seals of the row-version journal, and the verification that recomputes both.

pub mod archive;
pub mod seals;
pub mod verify;
pub mod writer;

pub use seals::{Seal, SealKind};
pub use verify::{Finding, FindingKind, VerifyOptions, VerifyReport};
pub use writer::{WriterKey, WriterKeyError};

/// Lower-case hex of `bytes`.
pub fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write;
    bytes
        .iter()
        .fold(String::with_capacity(bytes.len() * 2), |mut s, b| {
            let _ = write!(s, "{b:02x}");
            s
        })
}

/// The covered tables, in the order verify reports them, each with its key as SQL over the row
/// `t` (text, as the journal keeps it) and the column that says when the row was written (for
/// `verify --from/--to`).
pub const COVERED: &[Covered] = &[
    Covered::by_id("audit_writers", "registered_at"),
    Covered::by_id("operator_actions", "at"),
    Covered::by_id("data_ingestion_runs", "created_at"),
    Covered {
        table: "data_ingestion_run_records",
        key: "pg_catalog.to_jsonb(ARRAY[t.data_ingestion_run_id::text, t.record_type, \
              t.record_id])::text",
        written_at: "created_at",
        hash: ROW_HASH,
    },
    Covered::by_id("api_payloads", "created_at"),
    Covered::by_id("api_call_logs", "created_at"),
    Covered::by_id("trade_decisions", "created_at"),
    Covered::by_id("trade_executions", "created_at"),
    Covered::by_id("order_state_corrections", "corrected_at"),
    Covered::by_id("broker_order_events", "recorded_at"),
    Covered::by_id("order_rejects", "rejected_at"),
    Covered::by_id("broker_trades", "created_at"),
    Covered::by_id("broker_fills", "created_at"),
    Covered {
        table: "tradelog",
        key: "t.id::text",
        written_at: "local_ts",
        hash: TRADELOG_HASH,
    },
];

/// The hash of a row `t` of most covered tables (the journal trigger's expression).
pub const ROW_HASH: &str = "pg_catalog.sha256(pg_catalog.textsend(t::text))";

/// The hash of a trade-log row `t`: its stored columns as a row's text.
pub const TRADELOG_HASH: &str = "pg_catalog.sha256(pg_catalog.textsend(ROW(t.id, t.event_id, \
    t.local_ts_us, t.exchange_ts_us, t.event_type, t.req_id, t.cl_ord_id, t.native_ord_id, \
    t.market_id, t.account_id, t.symbol, t.exec_type, t.ord_status, t.side, t.is_taker, \
    t.last_px, t.last_qty, t.leaves_qty, t.ord_px, t.ord_qty, t.fee, t.response_status, \
    t.error_code, t.error_message, t.source, t.body, t.response_meta)::text))";

/// One table under the journal.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Covered {
    /// Its name
    pub table: &'static str,
    /// Its journal key, as SQL over `t`
    pub key: &'static str,
    /// When a row was written
    pub written_at: &'static str,
    /// Its hash, as SQL over `t`
    pub hash: &'static str,
}

impl Covered {
    const fn by_id(table: &'static str, written_at: &'static str) -> Self {
        Self {
            table,
            key: "t.id::text",
            written_at,
            hash: ROW_HASH,
        }
    }
}
