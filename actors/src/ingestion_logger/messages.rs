//! Messages of the IngestionLogger. Every operation replies with a `Result`: a refused
//! transition, an unknown run or bad input is an expected answer, not an actor failure.

use ractor::RpcReplyPort;
use uuid::Uuid;

use crate::domain::{
    ApiCall, ApiCallIds, IngestionRun, NewRun, RecordsOutcome, RunCounts, RunRecord,
};
use crate::store::ingestion::{IngestionError, RunFilter};

/// A reply of the IngestionLogger.
pub type Reply<T> = RpcReplyPort<Result<T, IngestionError>>;

/// What the IngestionLogger does.
#[derive(Debug)]
pub enum IngestionLoggerMessage {
    /// Start a run (status running).
    StartRun {
        /// Task, source and metadata
        run: NewRun,
        /// The run as stored
        reply: Reply<IngestionRun>,
    },
    /// Store API calls of a running run with their request and response payloads.
    RecordApiCalls {
        /// The run
        run_id: Uuid,
        /// The calls, in order
        calls: Vec<ApiCall>,
        /// Where each was stored
        reply: Reply<Vec<ApiCallIds>>,
    },
    /// Add a batch of records to a running run (a record it already has is kept once).
    RecordRecords {
        /// The run
        run_id: Uuid,
        /// The records
        records: Vec<RunRecord>,
        /// How many were new
        reply: Reply<RecordsOutcome>,
    },
    /// Mark a running run completed; without counts they are counted from its records.
    CompleteRun {
        /// The run
        run_id: Uuid,
        /// The job's counts
        counts: Option<RunCounts>,
        /// The run as stored
        reply: Reply<IngestionRun>,
    },
    /// Mark a running run failed.
    FailRun {
        /// The run
        run_id: Uuid,
        /// Why, in one line
        error: String,
        /// Structured context (exit status, stderr tail, ...)
        details: Option<serde_json::Value>,
        /// The run as stored
        reply: Reply<IngestionRun>,
    },
    /// One run.
    GetRun {
        /// The run
        run_id: Uuid,
        /// The run, if it exists
        reply: Reply<Option<IngestionRun>>,
    },
    /// Runs matching a filter, newest first.
    ListRuns {
        /// Which runs
        filter: RunFilter,
        /// The runs
        reply: Reply<Vec<IngestionRun>>,
    },
}
