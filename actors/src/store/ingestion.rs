//! Data ingestion runs, their records and API call logs (payloads are in [`super::payloads`],
//! the zero-records alert goes through [`super::alerts`]).
//!
//! The run state machine is enforced twice: here (a finished run is locked, read and refused with
//! a clear error) and by the database's triggers (so no other writer can bypass it).

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use tokio_postgres::{Client, GenericClient, Row};
use uuid::Uuid;

use super::StoreError;
use super::alerts::{NewAlert, insert_alert};
use super::payloads::insert_payload;
use crate::domain::ingestion::Invalid;
use crate::domain::{
    ApiCall, ApiCallIds, IngestionRun, NewRun, RecordOperation, RecordsOutcome, RunCounts,
    RunRecord, RunStatus,
};

/// Alert kind raised when a run completes having fetched nothing.
pub const ZERO_RECORDS_ALERT: &str = "ingestion.zero_records";

/// Why an ingestion operation did not happen.
#[derive(Debug, thiserror::Error)]
pub enum IngestionError {
    /// The input is malformed
    #[error("invalid input: {0}")]
    Invalid(#[from] Invalid),
    /// No run has this id
    #[error("unknown ingestion run {0}")]
    UnknownRun(Uuid),
    /// The state machine forbids this
    #[error(
        "ingestion run {run_id} is {from} and cannot become {to} \
         (the only transitions are running -> completed and running -> failed)"
    )]
    IllegalTransition {
        /// The run
        run_id: Uuid,
        /// Where it is
        from: RunStatus,
        /// Where it was asked to go
        to: RunStatus,
    },
    /// Records or calls were posted to a run that has finished
    #[error("ingestion run {run_id} is already {status}; nothing more can be recorded in it")]
    RunFinished {
        /// The run
        run_id: Uuid,
        /// Its terminal status
        status: RunStatus,
    },
    /// The database failed
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The IngestionLogger could not be reached
    #[error("the ingestion logger is unavailable: {0}")]
    Unavailable(String),
}

impl IngestionError {
    /// A stable code for APIs.
    pub fn code(&self) -> &'static str {
        match self {
            Self::Invalid(_) => "invalid",
            Self::UnknownRun(_) => "unknown_run",
            Self::IllegalTransition { .. } => "illegal_transition",
            Self::RunFinished { .. } => "run_finished",
            Self::Store(_) => "audit_unavailable",
            Self::Unavailable(_) => "unavailable",
        }
    }
}

/// Which runs a query returns; the builders are the spec's scopes (recent, for task, for
/// source, successful, failed) and combine.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RunFilter {
    /// Only this job
    pub task: Option<String>,
    /// Only this data source
    pub source: Option<String>,
    /// Only this status
    pub status: Option<RunStatus>,
    /// At most this many, newest first
    pub limit: u32,
}

impl RunFilter {
    /// The newest `limit` runs.
    pub fn recent(limit: u32) -> Self {
        Self {
            task: None,
            source: None,
            status: None,
            limit,
        }
    }

    /// Only runs of `task`.
    pub fn for_task(mut self, task: impl Into<String>) -> Self {
        self.task = Some(task.into());
        self
    }

    /// Only runs reading `source`.
    pub fn for_source(mut self, source: impl Into<String>) -> Self {
        self.source = Some(source.into());
        self
    }

    /// Only completed runs.
    pub fn successful(mut self) -> Self {
        self.status = Some(RunStatus::Completed);
        self
    }

    /// Only failed runs.
    pub fn failed(mut self) -> Self {
        self.status = Some(RunStatus::Failed);
        self
    }
}

/// How a run ends.
#[derive(Debug, Clone, PartialEq)]
pub enum Finish {
    /// Completed; without counts they are taken from the run's records
    Complete(Option<RunCounts>),
    /// Failed, with why
    Fail {
        /// A one-line reason
        message: String,
        /// Structured context
        details: Option<Value>,
    },
}

/// A finished run, and whether finishing it raised the zero-records alert.
#[derive(Debug, Clone, PartialEq)]
pub struct Finished {
    /// The run as stored now
    pub run: IngestionRun,
    /// The id of the zero-records alert this completion raised
    pub zero_records_alert: Option<i64>,
}

/// An `api_call_logs` row.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ApiCallLog {
    /// Its id
    pub id: i64,
    /// The endpoint called
    pub endpoint: String,
    /// HTTP method
    pub http_method: Option<String>,
    /// Status of the response
    pub http_status_code: Option<i32>,
    /// How long it took
    pub duration_ms: Option<i32>,
    /// What went wrong
    pub error_message: Option<String>,
    /// The `ApiRequest` payload
    pub api_request_payload_id: Option<i64>,
    /// The `ApiResponse` payload
    pub api_response_payload_id: Option<i64>,
    /// When it was logged
    pub created_at: DateTime<Utc>,
}

const RUN_COLUMNS: &str = "id, run_id, task_name, data_source, status, records_fetched, \
     records_created, records_updated, records_skipped, started_at, completed_at, failed_at, \
     error_message, error_details, metadata";

fn run_from_row(row: &Row) -> IngestionRun {
    let count = |i: usize| u32::try_from(row.get::<_, i32>(i)).unwrap_or(0);
    let status: &str = row.get(4);
    IngestionRun {
        id: row.get(0),
        run_id: row.get(1),
        task_name: row.get(2),
        data_source: row.get(3),
        // the CHECK constraint admits only the three spellings
        status: RunStatus::parse(status).unwrap_or(RunStatus::Failed),
        counts: RunCounts {
            fetched: count(5),
            created: count(6),
            updated: count(7),
            skipped: count(8),
        },
        started_at: row.get(9),
        completed_at: row.get(10),
        failed_at: row.get(11),
        error_message: row.get(12),
        error_details: row.get(13),
        metadata: row.get(14),
    }
}

/// Starts a run: inserts it as running, stamped with the database's clock.
pub async fn start_run(
    client: &impl GenericClient,
    new: &NewRun,
) -> Result<IngestionRun, IngestionError> {
    new.validate()?;
    let metadata = new
        .metadata
        .clone()
        .unwrap_or_else(|| Value::Object(serde_json::Map::new()));
    let row = client
        .query_one(
            &format!(
                "INSERT INTO data_ingestion_runs (run_id, task_name, data_source, status, started_at, metadata) \
                 VALUES ($1, $2, $3, 'running', clock_timestamp(), $4) RETURNING {RUN_COLUMNS}"
            ),
            &[&Uuid::now_v7(), &new.task, &new.source, &metadata],
        )
        .await
        .map_err(StoreError::new("starting an ingestion run"))?;
    Ok(run_from_row(&row))
}

/// One run by its public id.
pub async fn get_run(
    client: &impl GenericClient,
    run_id: Uuid,
) -> Result<Option<IngestionRun>, StoreError> {
    let row = client
        .query_opt(
            &format!("SELECT {RUN_COLUMNS} FROM data_ingestion_runs WHERE run_id = $1"),
            &[&run_id],
        )
        .await
        .map_err(StoreError::new("reading an ingestion run"))?;
    Ok(row.as_ref().map(run_from_row))
}

/// Runs matching `filter`, newest first.
pub async fn list_runs(
    client: &impl GenericClient,
    filter: &RunFilter,
) -> Result<Vec<IngestionRun>, StoreError> {
    let rows = client
        .query(
            &format!(
                "SELECT {RUN_COLUMNS} FROM data_ingestion_runs \
                 WHERE ($1::text IS NULL OR task_name = $1) \
                   AND ($2::text IS NULL OR data_source = $2) \
                   AND ($3::text IS NULL OR status = $3) \
                 ORDER BY started_at DESC, id DESC LIMIT $4"
            ),
            &[
                &filter.task,
                &filter.source,
                &filter.status.map(RunStatus::as_str),
                &i64::from(filter.limit),
            ],
        )
        .await
        .map_err(StoreError::new("listing ingestion runs"))?;
    Ok(rows.iter().map(run_from_row).collect())
}

/// Locks a run that is still running against finishing (until the transaction ends) and returns
/// its surrogate key and data source; a finished or unknown run is refused.
async fn lock_running_run(
    client: &impl GenericClient,
    run_id: Uuid,
) -> Result<(i64, String), IngestionError> {
    let row = client
        .query_opt(
            "SELECT id, status, data_source FROM data_ingestion_runs WHERE run_id = $1 FOR SHARE",
            &[&run_id],
        )
        .await
        .map_err(StoreError::new("locking an ingestion run"))?
        .ok_or(IngestionError::UnknownRun(run_id))?;
    let status = RunStatus::parse(row.get(1)).unwrap_or(RunStatus::Failed);
    if status.is_terminal() {
        return Err(IngestionError::RunFinished { run_id, status });
    }
    Ok((row.get(0), row.get(2)))
}

/// Adds records to a running run in one statement; a record the run already has (same type
/// and id), or one repeated in the batch, is kept once.
pub async fn record_records(
    client: &mut Client,
    run_id: Uuid,
    records: &[RunRecord],
) -> Result<RecordsOutcome, IngestionError> {
    for record in records {
        record.validate()?;
    }
    let tx = client
        .transaction()
        .await
        .map_err(StoreError::new("beginning a records batch"))?;
    let (run, _) = lock_running_run(&tx, run_id).await?;
    let inserted = insert_records(&tx, run, records).await?;
    tx.commit()
        .await
        .map_err(StoreError::new("committing a records batch"))?;
    let received = records.len() as u64;
    Ok(RecordsOutcome {
        received,
        inserted,
        duplicates: received - inserted,
    })
}

/// Inserts junction rows for run `run` (surrogate key), skipping ones it already has; returns
/// how many were new.
pub async fn insert_records(
    client: &impl GenericClient,
    run: i64,
    records: &[RunRecord],
) -> Result<u64, StoreError> {
    if records.is_empty() {
        return Ok(0);
    }
    let types: Vec<&str> = records.iter().map(|r| r.record_type.as_str()).collect();
    let ids: Vec<&str> = records.iter().map(|r| r.record_id.as_str()).collect();
    let operations: Vec<&str> = records.iter().map(|r| r.operation.as_str()).collect();
    let symbols: Vec<Option<&str>> = records.iter().map(|r| r.symbol.as_deref()).collect();
    let occurred: Vec<Option<DateTime<Utc>>> = records.iter().map(|r| r.occurred_at).collect();
    client
        .execute(
            "INSERT INTO data_ingestion_run_records \
                 (data_ingestion_run_id, record_type, record_id, operation, symbol, occurred_at) \
             SELECT $1, t, i, o, s, a \
             FROM unnest($2::text[], $3::text[], $4::text[], $5::text[], $6::timestamptz[]) \
                 AS r (t, i, o, s, a) \
             ON CONFLICT (record_type, record_id, data_ingestion_run_id) DO NOTHING",
            &[&run, &types, &ids, &operations, &symbols, &occurred],
        )
        .await
        .map_err(StoreError::new("inserting ingestion run records"))
}

/// A run's records, by type and id.
pub async fn list_run_records(
    client: &impl GenericClient,
    run_id: Uuid,
    limit: u32,
) -> Result<Vec<RunRecord>, StoreError> {
    let rows = client
        .query(
            "SELECT r.record_type, r.record_id, r.operation, r.symbol, r.occurred_at \
             FROM data_ingestion_run_records r \
             JOIN data_ingestion_runs d ON d.id = r.data_ingestion_run_id \
             WHERE d.run_id = $1 ORDER BY r.record_type, r.record_id LIMIT $2",
            &[&run_id, &i64::from(limit)],
        )
        .await
        .map_err(StoreError::new("listing ingestion run records"))?;
    Ok(rows
        .iter()
        .map(|row| RunRecord {
            record_type: row.get(0),
            record_id: row.get(1),
            // the CHECK constraint admits only the three spellings
            operation: RecordOperation::parse(row.get(2)).unwrap_or(RecordOperation::Skipped),
            symbol: row.get(3),
            occurred_at: row.get(4),
        })
        .collect())
}

/// Stores API calls of a running run: for each, its request and response payloads and the
/// `api_call_logs` row linking them to the run, in one transaction.
pub async fn record_api_calls(
    client: &mut Client,
    run_id: Uuid,
    calls: &[ApiCall],
) -> Result<Vec<ApiCallIds>, IngestionError> {
    for call in calls {
        call.validate()?;
    }
    let tx = client
        .transaction()
        .await
        .map_err(StoreError::new("beginning an API calls batch"))?;
    let (run, source) = lock_running_run(&tx, run_id).await?;
    let mut ids = Vec::with_capacity(calls.len());
    for call in calls {
        let request = insert_payload(&tx, &call.request_payload(&source)?).await?;
        let response = match call.response_payload(&source)? {
            Some(payload) => Some(insert_payload(&tx, &payload).await?),
            None => None,
        };
        let duration = call
            .duration_ms
            .map(|ms| i32::try_from(ms).unwrap_or(i32::MAX));
        let row = tx
            .query_one(
                "INSERT INTO api_call_logs (data_ingestion_run_id, api_request_payload_id, \
                     api_response_payload_id, endpoint, http_method, http_status_code, duration_ms, \
                     error_message) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8) RETURNING id",
                &[
                    &run,
                    &request,
                    &response,
                    &call.endpoint,
                    &call.method.to_ascii_uppercase(),
                    &call.status_code.map(i32::from),
                    &duration,
                    &call.error,
                ],
            )
            .await
            .map_err(StoreError::new("inserting an API call log"))?;
        ids.push(ApiCallIds {
            call_log_id: row.get(0),
            request_payload_id: request,
            response_payload_id: response,
        });
    }
    tx.commit()
        .await
        .map_err(StoreError::new("committing an API calls batch"))?;
    Ok(ids)
}

/// A run's API calls, oldest first.
pub async fn list_api_calls(
    client: &impl GenericClient,
    run_id: Uuid,
) -> Result<Vec<ApiCallLog>, StoreError> {
    let rows = client
        .query(
            "SELECT c.id, c.endpoint, c.http_method, c.http_status_code, c.duration_ms, \
                    c.error_message, c.api_request_payload_id, c.api_response_payload_id, c.created_at \
             FROM api_call_logs c JOIN data_ingestion_runs d ON d.id = c.data_ingestion_run_id \
             WHERE d.run_id = $1 ORDER BY c.id",
            &[&run_id],
        )
        .await
        .map_err(StoreError::new("listing API call logs"))?;
    Ok(rows
        .iter()
        .map(|row| ApiCallLog {
            id: row.get(0),
            endpoint: row.get(1),
            http_method: row.get(2),
            http_status_code: row.get(3),
            duration_ms: row.get(4),
            error_message: row.get(5),
            api_request_payload_id: row.get(6),
            api_response_payload_id: row.get(7),
            created_at: row.get(8),
        })
        .collect())
}

/// Ends a running run as completed or failed, in one transaction with the zero-records alert
/// when a completed run fetched nothing (raised at most once per run).
pub async fn finish_run(
    client: &mut Client,
    run_id: Uuid,
    finish: &Finish,
) -> Result<Finished, IngestionError> {
    let to = match finish {
        Finish::Complete(_) => RunStatus::Completed,
        Finish::Fail { .. } => RunStatus::Failed,
    };
    if let Finish::Fail { message, .. } = finish
        && message.trim().is_empty()
    {
        return Err(Invalid("a failed run needs an error message".into()).into());
    }
    let tx = client
        .transaction()
        .await
        .map_err(StoreError::new("beginning a run transition"))?;
    let row = tx
        .query_opt(
            "SELECT id, status FROM data_ingestion_runs WHERE run_id = $1 FOR UPDATE",
            &[&run_id],
        )
        .await
        .map_err(StoreError::new("locking an ingestion run"))?
        .ok_or(IngestionError::UnknownRun(run_id))?;
    let id: i64 = row.get(0);
    let from = RunStatus::parse(row.get(1)).unwrap_or(RunStatus::Failed);
    if !from.can_become(to) {
        return Err(IngestionError::IllegalTransition { run_id, from, to });
    }
    let row = match finish {
        Finish::Complete(counts) => {
            let counts = match counts {
                Some(counts) => *counts,
                None => counts_from_records(&tx, id).await?,
            };
            let count = |n: u32, what: &str| {
                i32::try_from(n).map_err(|_| Invalid(format!("{what} count {n} is too large")))
            };
            tx.query_one(
                &format!(
                    "UPDATE data_ingestion_runs SET status = 'completed', completed_at = clock_timestamp(), \
                         records_fetched = $2, records_created = $3, records_updated = $4, \
                         records_skipped = $5 \
                     WHERE id = $1 RETURNING {RUN_COLUMNS}"
                ),
                &[
                    &id,
                    &count(counts.fetched, "fetched")?,
                    &count(counts.created, "created")?,
                    &count(counts.updated, "updated")?,
                    &count(counts.skipped, "skipped")?,
                ],
            )
            .await
            .map_err(StoreError::new("completing an ingestion run"))?
        }
        Finish::Fail { message, details } => tx
            .query_one(
                &format!(
                    "UPDATE data_ingestion_runs SET status = 'failed', failed_at = clock_timestamp(), \
                         error_message = $2, error_details = $3 \
                     WHERE id = $1 RETURNING {RUN_COLUMNS}"
                ),
                &[&id, message, details],
            )
            .await
            .map_err(StoreError::new("failing an ingestion run"))?,
    };
    let run = run_from_row(&row);
    let zero_records_alert = if run.status == RunStatus::Completed && run.counts.fetched == 0 {
        insert_alert(&tx, &zero_records_alert(&run)).await?
    } else {
        None
    };
    tx.commit()
        .await
        .map_err(StoreError::new("committing a run transition"))?;
    Ok(Finished {
        run,
        zero_records_alert,
    })
}

fn zero_records_alert(run: &IngestionRun) -> NewAlert {
    NewAlert {
        kind: ZERO_RECORDS_ALERT.into(),
        severity: "warning",
        message: format!(
            "ingestion run {} of {} ({}) completed with zero records fetched",
            run.run_id, run.task_name, run.data_source
        ),
        details: serde_json::json!({
            "run_id": run.run_id,
            "task": run.task_name,
            "source": run.data_source,
            "completed_at": run.completed_at,
        }),
        dedupe_key: Some(run.run_id.to_string()),
    }
}

/// The counts of a run's records by operation; `fetched` is all of them.
async fn counts_from_records(
    client: &impl GenericClient,
    run: i64,
) -> Result<RunCounts, StoreError> {
    let row = client
        .query_one(
            "SELECT count(*), \
                    count(*) FILTER (WHERE operation = 'created'), \
                    count(*) FILTER (WHERE operation = 'updated'), \
                    count(*) FILTER (WHERE operation = 'skipped') \
             FROM data_ingestion_run_records WHERE data_ingestion_run_id = $1",
            &[&run],
        )
        .await
        .map_err(StoreError::new("counting a run's records"))?;
    let count = |i: usize| u32::try_from(row.get::<_, i64>(i)).unwrap_or(u32::MAX);
    Ok(RunCounts {
        fetched: count(0),
        created: count(1),
        updated: count(2),
        skipped: count(3),
    })
}
