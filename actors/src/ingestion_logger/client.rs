//! A handle for anything that logs ingestion through the actor: the HTTP API, `tradegate
//! ingest`, the IbkrSyncer. It finds the actor by name on every call, so it survives restarts.

use std::time::Duration;

use ractor::rpc::CallResult;
use ractor::{ActorRef, RpcReplyPort};
use uuid::Uuid;

use super::messages::IngestionLoggerMessage;
use crate::domain::{
    ApiCall, ApiCallIds, IngestionRun, NewRun, RecordsOutcome, RunCounts, RunRecord,
};
use crate::store::ingestion::{IngestionError, RunFilter};

/// How long a call waits for the logger by default.
const DEFAULT_TIMEOUT: Duration = Duration::from_secs(30);

/// Calls the IngestionLogger registered under a name.
#[derive(Debug, Clone)]
pub struct IngestionClient {
    name: String,
    timeout: Duration,
}

impl IngestionClient {
    /// A client of the logger registered as `name`.
    pub fn new(name: impl Into<String>) -> Self {
        Self {
            name: name.into(),
            timeout: DEFAULT_TIMEOUT,
        }
    }

    /// Sets how long a call waits.
    pub fn with_timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    async fn call<T: Send + 'static>(
        &self,
        message: impl FnOnce(RpcReplyPort<Result<T, IngestionError>>) -> IngestionLoggerMessage,
    ) -> Result<T, IngestionError> {
        let actor = ActorRef::<IngestionLoggerMessage>::where_is(self.name.clone())
            .ok_or_else(|| IngestionError::Unavailable(format!("{} is not running", self.name)))?;
        match actor.call(message, Some(self.timeout)).await {
            Ok(CallResult::Success(result)) => result,
            Ok(CallResult::Timeout) => Err(IngestionError::Unavailable(format!(
                "{} did not answer within {:?}",
                self.name, self.timeout
            ))),
            Ok(CallResult::SenderError) => Err(IngestionError::Unavailable(format!(
                "{} dropped the request",
                self.name
            ))),
            Err(e) => Err(IngestionError::Unavailable(format!("{}: {e}", self.name))),
        }
    }

    /// Starts a run.
    pub async fn start_run(&self, run: NewRun) -> Result<IngestionRun, IngestionError> {
        self.call(|reply| IngestionLoggerMessage::StartRun { run, reply })
            .await
    }

    /// Stores API calls of a running run.
    pub async fn record_api_calls(
        &self,
        run_id: Uuid,
        calls: Vec<ApiCall>,
    ) -> Result<Vec<ApiCallIds>, IngestionError> {
        self.call(|reply| IngestionLoggerMessage::RecordApiCalls {
            run_id,
            calls,
            reply,
        })
        .await
    }

    /// Adds records to a running run.
    pub async fn record_records(
        &self,
        run_id: Uuid,
        records: Vec<RunRecord>,
    ) -> Result<RecordsOutcome, IngestionError> {
        self.call(|reply| IngestionLoggerMessage::RecordRecords {
            run_id,
            records,
            reply,
        })
        .await
    }

    /// Completes a running run.
    pub async fn complete(
        &self,
        run_id: Uuid,
        counts: Option<RunCounts>,
    ) -> Result<IngestionRun, IngestionError> {
        self.call(|reply| IngestionLoggerMessage::CompleteRun {
            run_id,
            counts,
            reply,
        })
        .await
    }

    /// Fails a running run.
    pub async fn fail(
        &self,
        run_id: Uuid,
        error: impl Into<String>,
        details: Option<serde_json::Value>,
    ) -> Result<IngestionRun, IngestionError> {
        let error = error.into();
        self.call(|reply| IngestionLoggerMessage::FailRun {
            run_id,
            error,
            details,
            reply,
        })
        .await
    }

    /// One run.
    pub async fn get(&self, run_id: Uuid) -> Result<Option<IngestionRun>, IngestionError> {
        self.call(|reply| IngestionLoggerMessage::GetRun { run_id, reply })
            .await
    }

    /// Runs matching `filter`.
    pub async fn list(&self, filter: RunFilter) -> Result<Vec<IngestionRun>, IngestionError> {
        self.call(|reply| IngestionLoggerMessage::ListRuns { filter, reply })
            .await
    }
}
