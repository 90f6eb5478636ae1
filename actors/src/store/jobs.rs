//! Background jobs (`jobs`): idempotent enqueue (at most one pending job per type and key, by a
//! unique partial index), claim with `SKIP LOCKED`, and completion.

use chrono::{DateTime, Utc};
use serde::Serialize;
use serde_json::Value;
use tokio_postgres::GenericClient;

use super::StoreError;

/// The job type of an IBKR trades sync (its key is the account id).
pub const TRADES_SYNC: &str = "trades.sync";

/// The job type of a broker positions snapshot (its key is the account).
pub const POSITIONS_SYNC: &str = "positions.sync";

/// An enqueued or claimed job.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Job {
    /// Its id
    pub id: i64,
    /// e.g. `trades.sync`
    pub job_type: String,
    /// What it is about (e.g. the account id); one pending job per type and key
    pub dedupe_key: String,
    /// Overrides for the handler
    pub payload: Value,
    /// pending, running, completed or failed
    pub status: String,
    /// How often it was claimed
    pub attempts: i32,
    /// When it was enqueued
    pub created_at: DateTime<Utc>,
}

/// The result of an enqueue: the pending job, and whether this call created it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Enqueued {
    /// The pending job (new, or the one already waiting)
    pub job: Job,
    /// false when a pending job of the same type and key already existed
    pub created: bool,
}

const JOB_COLUMNS: &str = "id, job_type, dedupe_key, payload, status, attempts, created_at";

fn job_from_row(row: &tokio_postgres::Row) -> Job {
    Job {
        id: row.get(0),
        job_type: row.get(1),
        dedupe_key: row.get(2),
        payload: row.get(3),
        status: row.get(4),
        attempts: row.get(5),
        created_at: row.get(6),
    }
}

/// Enqueues a job unless one of the same type and key is already pending, in which case that
/// one is returned (its payload unchanged).
pub async fn enqueue(
    client: &impl GenericClient,
    job_type: &str,
    dedupe_key: &str,
    payload: &Value,
) -> Result<Enqueued, StoreError> {
    loop {
        if let Some(row) = client
            .query_opt(
                &format!(
                    "INSERT INTO jobs (job_type, dedupe_key, payload) VALUES ($1, $2, $3) \
                     ON CONFLICT (job_type, dedupe_key) WHERE status = 'pending' DO NOTHING \
                     RETURNING {JOB_COLUMNS}"
                ),
                &[&job_type, &dedupe_key, payload],
            )
            .await
            .map_err(StoreError::new("enqueueing a job"))?
        {
            return Ok(Enqueued {
                job: job_from_row(&row),
                created: true,
            });
        }
        // the pending one may have been claimed in between: then try again
        if let Some(row) = client
            .query_opt(
                &format!(
                    "SELECT {JOB_COLUMNS} FROM jobs \
                     WHERE job_type = $1 AND dedupe_key = $2 AND status = 'pending'"
                ),
                &[&job_type, &dedupe_key],
            )
            .await
            .map_err(StoreError::new("reading a pending job"))?
        {
            return Ok(Enqueued {
                job: job_from_row(&row),
                created: false,
            });
        }
    }
}

/// Claims the oldest due pending job of this type and key (marks it running).
pub async fn claim(
    client: &impl GenericClient,
    job_type: &str,
    dedupe_key: &str,
) -> Result<Option<Job>, StoreError> {
    let row = client
        .query_opt(
            &format!(
                "UPDATE jobs SET status = 'running', started_at = clock_timestamp(), \
                     attempts = attempts + 1 \
                 WHERE id = (SELECT id FROM jobs WHERE job_type = $1 AND dedupe_key = $2 \
                               AND status = 'pending' AND run_after <= now() \
                             ORDER BY id LIMIT 1 FOR UPDATE SKIP LOCKED) \
                 RETURNING {JOB_COLUMNS}"
            ),
            &[&job_type, &dedupe_key],
        )
        .await
        .map_err(StoreError::new("claiming a job"))?;
    Ok(row.as_ref().map(job_from_row))
}

/// Ends a running job: completed, or failed with why.
pub async fn finish(
    client: &impl GenericClient,
    id: i64,
    error: Option<&str>,
) -> Result<(), StoreError> {
    client
        .execute(
            "UPDATE jobs SET status = CASE WHEN $2::text IS NULL THEN 'completed' ELSE 'failed' END, \
                 error = $2, finished_at = clock_timestamp() \
             WHERE id = $1 AND status = 'running'",
            &[&id, &error],
        )
        .await
        .map_err(StoreError::new("finishing a job"))?;
    Ok(())
}

/// Fails jobs of this type and key left running by a process that stopped (called when their
/// handler starts, before it claims anything); returns how many.
pub async fn fail_interrupted(
    client: &impl GenericClient,
    job_type: &str,
    dedupe_key: &str,
) -> Result<u64, StoreError> {
    client
        .execute(
            "UPDATE jobs SET status = 'failed', finished_at = clock_timestamp(), \
                 error = 'interrupted: the handler stopped while it ran' \
             WHERE job_type = $1 AND dedupe_key = $2 AND status = 'running'",
            &[&job_type, &dedupe_key],
        )
        .await
        .map_err(StoreError::new("failing interrupted jobs"))
}

/// One job by id.
pub async fn get(client: &impl GenericClient, id: i64) -> Result<Option<Job>, StoreError> {
    let row = client
        .query_opt(
            &format!("SELECT {JOB_COLUMNS} FROM jobs WHERE id = $1"),
            &[&id],
        )
        .await
        .map_err(StoreError::new("reading a job"))?;
    Ok(row.as_ref().map(job_from_row))
}
