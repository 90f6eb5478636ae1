//! One executions sync of one account (the spec's `sync_trades_once`): under the account's
//! advisory lock, fetch the look-back window from TWS, normalize, and apply it in one
//! transaction; the sync is also a data ingestion run (`ibkr.trades.sync`) whose records are
//! the fills and trades it created or updated. A failure commits nothing of the batch and is
//! recorded on the sync run and the ingestion run.

use std::time::Instant;

use chrono::{DateTime, Utc};
use chrono_tz::Tz;
use serde_json::json;

use super::client::{ExecutionFilter, TwsSession};
use super::fills::{FillError, normalize_all};
use super::tws::TwsError;
use crate::domain::{NewRun, RunCounts, SyncCounts, SyncReport};
use crate::store::ingestion::{Finish, IngestionError};
use crate::store::{StoreError, broker_sync, ingestion};

/// The ingestion task name of an IBKR sync.
pub const TASK: &str = "ibkr.trades.sync";
/// Its data source.
pub const SOURCE: &str = "ibkr";

/// Why a sync did not complete.
#[derive(Debug, thiserror::Error)]
pub enum SyncError {
    /// Another sync of the account holds its lock
    #[error("a sync of account {0} is already running")]
    InProgress(String),
    /// TWS failed, closed or sent something malformed
    #[error(transparent)]
    Tws(#[from] TwsError),
    /// An execution could not be normalized
    #[error(transparent)]
    Fill(#[from] FillError),
    /// A statement failed
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The ingestion run could not be started or finished
    #[error(transparent)]
    Ingestion(#[from] IngestionError),
    /// No database connection
    #[error("audit trail unavailable: {0}")]
    Unavailable(String),
    /// The caller stopped waiting (the sync goes on and is recorded)
    #[error("{0}")]
    TimedOut(String),
    /// The account is not one this gateway syncs
    #[error("account {0} is not configured in [ibkr] accounts")]
    UnknownAccount(String),
}

impl SyncError {
    /// A stable code for APIs and metrics.
    pub fn code(&self) -> &'static str {
        match self {
            Self::InProgress(_) => "sync_in_progress",
            Self::Tws(TwsError::Malformed(_)) => "tws_malformed",
            Self::Tws(_) => "tws_unavailable",
            Self::Fill(_) => "invalid_execution",
            Self::Store(_) | Self::Ingestion(_) => "store_error",
            Self::Unavailable(_) => "audit_unavailable",
            Self::UnknownAccount(_) => "unknown_account",
            Self::TimedOut(_) => "sync_timeout",
        }
    }

    /// Whether the TWS session is unusable afterwards (reconnect before the next sync).
    pub fn breaks_session(&self) -> bool {
        matches!(self, Self::Tws(_))
    }
}

/// What a sync asks for.
#[derive(Debug, Clone)]
pub struct SyncRequest {
    /// The account
    pub account_id: String,
    /// How far back
    pub lookback: chrono::Duration,
    /// Zone of times without a zone name
    pub zone: Tz,
}

fn saturating_u32(n: u64) -> u32 {
    u32::try_from(n).unwrap_or(u32::MAX)
}

fn millis(d: std::time::Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

/// Where a sync's time went, in milliseconds.
#[derive(Debug, Clone, Copy, Default)]
struct Phases {
    fetch_ms: u64,
    normalize_ms: u64,
    store_ms: u64,
}

/// Runs one sync over `session` with a connection of `pool`.
pub async fn sync_account(
    pool: &deadpool_postgres::Pool,
    session: &mut TwsSession,
    request: &SyncRequest,
) -> Result<SyncReport, SyncError> {
    let started = Instant::now();
    let account = request.account_id.as_str();
    let mut client = pool
        .get()
        .await
        .map_err(|e| SyncError::Unavailable(format!("no database connection: {e}")))?;
    let window_end = Utc::now();
    let window_start = window_end - request.lookback;
    let run = ingestion::start_run(
        &**client,
        &NewRun {
            task: TASK.into(),
            source: SOURCE.into(),
            metadata: Some(json!({
                "account_id": account,
                "window_start": window_start,
                "window_end": window_end,
                "client_id": session.client_id(),
            })),
        },
    )
    .await?;
    let sync_run =
        broker_sync::start_sync_run(&**client, account, window_start, window_end, Some(run.id))
            .await?;
    let outcome = fetch_and_apply(
        &mut client,
        session,
        request,
        window_start,
        run.id,
        sync_run,
    )
    .await;
    match outcome {
        Ok((counts, phases)) => {
            let finish = Finish::Complete(Some(RunCounts {
                fetched: saturating_u32(counts.fetched_executions_count),
                created: saturating_u32(counts.inserted_executions_count),
                updated: saturating_u32(counts.updated_executions_count),
                skipped: saturating_u32(counts.unchanged_executions_count),
            }));
            ingestion::finish_run(&mut client, run.run_id, &finish).await?;
            let report = SyncReport {
                sync_run_id: sync_run,
                ingestion_run_id: run.run_id,
                account_id: account.to_string(),
                window_start,
                window_end,
                counts,
                duration_ms: millis(started.elapsed()),
                fetch_ms: phases.fetch_ms,
                normalize_ms: phases.normalize_ms,
                store_ms: phases.store_ms,
            };
            record_success(&report);
            Ok(report)
        }
        Err(e) => {
            let message = e.to_string();
            metrics::counter!("tradegate_ibkr_syncs_total", "status" => "failed", "code" => e.code())
                .increment(1);
            tracing::warn!(account, sync_run, error = %message, "IBKR sync failed; nothing of it was committed");
            if let Err(e2) = broker_sync::fail_sync_run(&**client, sync_run, &message).await {
                tracing::warn!(account, sync_run, error = %e2, "could not mark the sync run failed");
            }
            let finish = Finish::Fail {
                message,
                details: Some(json!({ "code": e.code(), "sync_run_id": sync_run })),
            };
            if let Err(e2) = ingestion::finish_run(&mut client, run.run_id, &finish).await {
                tracing::warn!(account, run_id = %run.run_id, error = %e2, "could not fail the ingestion run");
            }
            Err(e)
        }
    }
}

fn record_success(report: &SyncReport) {
    let c = &report.counts;
    metrics::counter!("tradegate_ibkr_syncs_total", "status" => "completed", "code" => "ok")
        .increment(1);
    for (op, n) in [
        ("fetched", c.fetched_executions_count),
        ("inserted", c.inserted_executions_count),
        ("updated", c.updated_executions_count),
        ("unchanged", c.unchanged_executions_count),
    ] {
        metrics::counter!("tradegate_ibkr_sync_executions_total", "op" => op).increment(n);
    }
    tracing::info!(
        account = %report.account_id,
        fetched_executions_count = c.fetched_executions_count,
        inserted_executions_count = c.inserted_executions_count,
        updated_executions_count = c.updated_executions_count,
        unchanged_executions_count = c.unchanged_executions_count,
        canonical_changes_count = c.canonical_changes_count,
        touched_trades_count = c.touched_trades_count,
        window_start = %report.window_start,
        window_end = %report.window_end,
        duration_ms = report.duration_ms,
        fetch_ms = report.fetch_ms,
        normalize_ms = report.normalize_ms,
        store_ms = report.store_ms,
        "IBKR sync completed"
    );
}

/// TWS's execution filter time in UTC (`yyyymmdd-hh:mm:ss`).
pub fn filter_time(t: DateTime<Utc>) -> String {
    t.format("%Y%m%d-%H:%M:%S").to_string()
}

async fn fetch_and_apply(
    client: &mut deadpool_postgres::Object,
    session: &mut TwsSession,
    request: &SyncRequest,
    window_start: DateTime<Utc>,
    ingestion_run: i64,
    sync_run: i64,
) -> Result<(SyncCounts, Phases), SyncError> {
    let tx = tokio_postgres::Client::transaction(client)
        .await
        .map_err(StoreError::new("beginning a sync"))?;
    if !broker_sync::try_lock_account(&tx, &request.account_id).await? {
        return Err(SyncError::InProgress(request.account_id.clone()));
    }
    let mut phases = Phases::default();
    let started = Instant::now();
    let fetched = session
        .executions(&ExecutionFilter {
            account: request.account_id.clone(),
            time: filter_time(window_start),
            ..ExecutionFilter::default()
        })
        .await?;
    let fetched_at = Utc::now();
    phases.fetch_ms = millis(started.elapsed());
    let started = Instant::now();
    // TWS filters by account; anything else it sends is not this sync's to store
    let executions: Vec<_> = fetched
        .executions
        .into_iter()
        .filter(|e| e.account == request.account_id)
        .collect();
    let fetched_count = executions.len() as u64;
    // CPU work, off the async workers
    let zone = request.zone;
    let commissions = fetched.commissions;
    let fills = tokio::task::spawn_blocking(move || normalize_all(&executions, &commissions, zone))
        .await
        .map_err(|e| SyncError::Unavailable(format!("normalizing stopped: {e}")))??;
    phases.normalize_ms = millis(started.elapsed());
    let started = Instant::now();
    let mut counts =
        super::apply::apply_fills(&tx, &fills, fetched_at, Some(ingestion_run)).await?;
    counts.fetched_executions_count = fetched_count;
    broker_sync::complete_sync_run(&tx, sync_run, &counts).await?;
    tx.commit()
        .await
        .map_err(StoreError::new("committing a sync"))?;
    phases.store_ms = millis(started.elapsed());
    Ok((counts, phases))
}
