//! One executions sync of one account (the spec's `sync_trades_once`): fetch the look-back
//! window from TWS (no lock and no transaction held while TWS answers), normalize, then apply it
//! in one transaction under the account's advisory lock; the sync is also a data ingestion run
//! (`ibkr.trades.sync`) whose records are the fills and trades it created or updated. An
//! execution that cannot be read is refused alone and kept on the sync run; a failure commits
//! nothing of the batch and is recorded on the sync run and the ingestion run.

use std::time::Instant;

use chrono::{DateTime, Utc};
use chrono_tz::Tz;
use serde_json::json;

use super::client::{ExecutionFilter, Executions, TwsSession};
use super::fills::{Normalized, commission_record, handshake_zone, normalize_all};
use super::tws::{CommissionReport, TwsError};
use crate::domain::{NewRun, RejectedExecution, RunCounts, SyncCounts, SyncReport};
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
    /// TWS's session does not serve the account
    #[error(
        "account {account} is not one of the accounts of the TWS login ({}): check [ibkr] \
         accounts and which login the TWS at this host and port runs",
        managed.join(", ")
    )]
    NotManaged {
        /// The account asked for
        account: String,
        /// The accounts TWS named at connect
        managed: Vec<String>,
    },
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
    /// A job's payload was refused (its key named); nothing was fetched or written
    #[error(transparent)]
    Job(#[from] super::job::JobPayloadError),
    /// TWS answered the positions request with something unusable, or not in time; the
    /// session goes on (a closed connection is [`SyncError::Tws`])
    #[error("the positions request failed: {0}")]
    Positions(TwsError),
}

impl SyncError {
    /// A stable code for APIs and metrics.
    pub fn code(&self) -> &'static str {
        match self {
            Self::InProgress(_) => "sync_in_progress",
            Self::Tws(TwsError::Malformed(_)) => "tws_malformed",
            Self::Tws(e) if e.client_id_in_use() => "tws_client_id_in_use",
            Self::Tws(TwsError::Refused { .. }) => "tws_refused",
            Self::Tws(TwsError::Deadline { .. }) => "tws_deadline",
            Self::Tws(_) => "tws_unavailable",
            Self::NotManaged { .. } => "account_not_managed",
            Self::Store(_) | Self::Ingestion(_) => "store_error",
            Self::Unavailable(_) => "audit_unavailable",
            Self::UnknownAccount(_) => "unknown_account",
            Self::TimedOut(_) => "sync_timeout",
            Self::Job(_) => "invalid",
            Self::Positions(_) => "tws_positions",
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
    /// The TWS login's zone, for times without a zone name (`[ibkr] timezone`); `None`: the
    /// zone TWS names in its handshake, and without one such times are refused
    pub zone: Option<Tz>,
}

fn saturating_u32(n: u64) -> u32 {
    u32::try_from(n).unwrap_or(u32::MAX)
}

pub(super) fn millis(d: std::time::Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

/// Where a sync's time went, in milliseconds.
#[derive(Debug, Clone, Copy, Default)]
pub(super) struct Phases {
    pub fetch_ms: u64,
    pub normalize_ms: u64,
    pub store_ms: u64,
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
    let run = RunIds {
        account,
        ingestion: run.run_id,
        sync: sync_run,
        window: (window_start, window_end),
        started,
    };
    conclude(&mut client, &run, outcome).await
}

/// The runs a sync (or a Flex import) records itself in.
pub(super) struct RunIds<'a> {
    pub account: &'a str,
    pub ingestion: uuid::Uuid,
    pub sync: i64,
    pub window: (DateTime<Utc>, DateTime<Utc>),
    pub started: Instant,
}

/// Finishes the sync run and the ingestion run with the outcome of applying a batch; the report
/// of a completed one.
pub(super) async fn conclude(
    client: &mut deadpool_postgres::Object,
    run: &RunIds<'_>,
    outcome: Result<Applied, SyncError>,
) -> Result<SyncReport, SyncError> {
    let RunIds {
        account,
        ingestion: run_id,
        sync: sync_run,
        window: (window_start, window_end),
        started,
    } = *run;
    match outcome {
        Ok(Applied {
            counts,
            phases,
            rejected,
            warnings,
        }) => {
            let finish = Finish::Complete(Some(RunCounts {
                fetched: saturating_u32(counts.fetched_executions_count),
                created: saturating_u32(counts.inserted_executions_count),
                updated: saturating_u32(counts.updated_executions_count),
                skipped: saturating_u32(counts.unchanged_executions_count),
            }));
            ingestion::finish_run(client, run_id, &finish).await?;
            let report = SyncReport {
                sync_run_id: sync_run,
                ingestion_run_id: run_id,
                account_id: account.to_string(),
                window_start,
                window_end,
                counts,
                duration_ms: millis(started.elapsed()),
                fetch_ms: phases.fetch_ms,
                normalize_ms: phases.normalize_ms,
                store_ms: phases.store_ms,
                rejected,
                warnings,
            };
            record_success(&report);
            Ok(report)
        }
        Err(e) => {
            let message = e.to_string();
            metrics::counter!("tradegate_ibkr_syncs_total", "status" => "failed", "code" => e.code())
                .increment(1);
            tracing::warn!(account, sync_run, error = %message, "IBKR sync failed; nothing of it was committed");
            if let Err(e2) = broker_sync::fail_sync_run(&***client, sync_run, &message).await {
                tracing::warn!(account, sync_run, error = %e2, "could not mark the sync run failed");
            }
            let finish = Finish::Fail {
                message,
                details: Some(json!({ "code": e.code(), "sync_run_id": sync_run })),
            };
            if let Err(e2) = ingestion::finish_run(client, run_id, &finish).await {
                tracing::warn!(account, %run_id, error = %e2, "could not fail the ingestion run");
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
    for r in &report.rejected {
        metrics::counter!("tradegate_ibkr_executions_rejected_total", "code" => r.code.clone())
            .increment(1);
        tracing::warn!(account = %report.account_id, exec_id = %r.exec_id, code = %r.code,
            message = %r.message, "an IBKR execution was refused; it is kept on the sync run");
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

/// What a completed sync applied.
pub(super) struct Applied {
    pub counts: SyncCounts,
    pub phases: Phases,
    pub rejected: Vec<RejectedExecution>,
    pub warnings: Vec<String>,
}

/// What the fetch suggests the user should know: TWS gives a session the executions of other
/// API clients and of TWS itself, and commission reports for them, only when its client id is
/// the Master API client ID. tradegate places no IBKR orders, so a session that is not the
/// master sees nothing.
pub fn master_warnings(
    account: &str,
    fetched: &Executions,
    client_id: i64,
    lookback: chrono::Duration,
) -> Vec<String> {
    const HOW: &str = "TWS: Global Configuration > API > Settings > Master API client ID; \
        IB Gateway: Configure > Settings > API > Settings > Master API client ID";
    let executions: Vec<_> = fetched
        .executions
        .iter()
        .filter(|e| e.account == account)
        .collect();
    if executions.is_empty() {
        return vec![format!(
            "TWS returned no executions of {account} in the last {} days. A session sees other \
             clients' executions only as the Master API client ID: if trades were made, set it \
             to {client_id} ({HOW})",
            lookback.num_days()
        )];
    }
    let reported: std::collections::HashSet<&str> = fetched
        .commissions
        .iter()
        .map(|c| c.exec_id.as_str())
        .collect();
    let foreign: Vec<_> = executions
        .iter()
        .filter(|e| e.client_id != client_id)
        .collect();
    if !foreign.is_empty()
        && foreign
            .iter()
            .all(|e| !reported.contains(e.exec_id.as_str()))
    {
        return vec![format!(
            "TWS sent {} executions of {account} placed by other clients but no commission \
             report for any: commission reports of all clients need the Master API client ID; \
             set it to {client_id} ({HOW})",
            foreign.len()
        )];
    }
    Vec::new()
}

async fn fetch_and_apply(
    client: &mut deadpool_postgres::Object,
    session: &mut TwsSession,
    request: &SyncRequest,
    window_start: DateTime<Utc>,
    ingestion_run: i64,
    sync_run: i64,
) -> Result<Applied, SyncError> {
    let account = request.account_id.as_str();
    if !session.accounts().iter().any(|a| a == account) {
        return Err(SyncError::NotManaged {
            account: account.to_string(),
            managed: session.accounts().to_vec(),
        });
    }
    let mut phases = Phases::default();
    let started = Instant::now();
    // the network wait comes first, with no transaction open and no lock taken
    let fetched = session
        .executions(&ExecutionFilter {
            account: account.to_string(),
            time: filter_time(window_start),
            ..ExecutionFilter::default()
        })
        .await?;
    let fetched_at = Utc::now();
    phases.fetch_ms = millis(started.elapsed());
    let warnings = master_warnings(account, &fetched, session.client_id(), request.lookback);
    let started = Instant::now();
    // TWS filters by account; anything else it sends is not this sync's to store
    let executions: Vec<_> = fetched
        .executions
        .into_iter()
        .filter(|e| e.account == account)
        .collect();
    let fetched_count = executions.len() as u64;
    let zone = request
        .zone
        .or_else(|| handshake_zone(session.connection_time()));
    let commissions = fetched.commissions;
    // CPU work, off the async workers
    let normalized =
        tokio::task::spawn_blocking(move || normalize_all(&executions, &commissions, zone))
            .await
            .map_err(|e| SyncError::Unavailable(format!("normalizing stopped: {e}")))?;
    phases.normalize_ms = millis(started.elapsed());
    let started = Instant::now();
    let Normalized {
        fills,
        rejected,
        unrecognised_exec_ids,
        orphan_commissions,
    } = normalized;
    let stored = store(
        client,
        request,
        &fills,
        &orphan_commissions,
        &rejected,
        &warnings,
        fetched_at,
        ingestion_run,
        sync_run,
        (fetched_count, unrecognised_exec_ids),
    )
    .await;
    // reports no stored fill of this account took are kept for the next request (another
    // account of the login, or a fill stored later)
    let matched: std::collections::HashSet<String> = match &stored {
        Ok((_, matched)) => matched.iter().cloned().collect(),
        Err(_) => std::collections::HashSet::new(),
    };
    session.keep_commissions(
        orphan_commissions
            .into_iter()
            .filter(|c| !matched.contains(&c.exec_id))
            .collect(),
    );
    let (counts, _) = stored?;
    phases.store_ms = millis(started.elapsed());
    Ok(Applied {
        counts,
        phases,
        rejected,
        warnings,
    })
}

/// Gives stored fills of `account` the commission reports in `late` (see
/// [`broker_sync::apply_late_commissions`]; `only_missing`: only fills without one), recomputes
/// and records the trades they touch, and counts them into `counts`.
pub(super) async fn apply_commissions(
    tx: &tokio_postgres::Transaction<'_>,
    account: &str,
    late: &[broker_sync::LateCommission<'_>],
    fetched_at: DateTime<Utc>,
    ingestion_run: i64,
    only_missing: bool,
    counts: &mut SyncCounts,
) -> Result<broker_sync::LateApplied, SyncError> {
    let applied = broker_sync::apply_late_commissions(
        tx,
        account,
        late,
        fetched_at,
        Some(ingestion_run),
        only_missing,
    )
    .await?;
    if !applied.trades.is_empty() {
        broker_sync::recompute_trades(tx, &applied.trades, fetched_at).await?;
        broker_sync::record_trades(tx, ingestion_run, &applied.trades, &[]).await?;
    }
    counts.late_commissions_count = applied.updated;
    counts.updated_executions_count += applied.updated;
    counts.touched_trades_count += applied.trades.len() as u64;
    Ok(applied)
}

/// Stores a normalized fetch in one transaction under the account's lock; returns the counts
/// and the exec ids the late commission reports matched.
#[allow(clippy::too_many_arguments)]
async fn store(
    client: &mut deadpool_postgres::Object,
    request: &SyncRequest,
    fills: &[crate::domain::NewFill],
    orphans: &[CommissionReport],
    rejected: &[RejectedExecution],
    warnings: &[String],
    fetched_at: DateTime<Utc>,
    ingestion_run: i64,
    sync_run: i64,
    (fetched_count, unrecognised): (u64, u64),
) -> Result<(SyncCounts, Vec<String>), SyncError> {
    let tx = tokio_postgres::Client::transaction(client)
        .await
        .map_err(StoreError::new("beginning a sync"))?;
    if !broker_sync::try_lock_account(&tx, &request.account_id).await? {
        return Err(SyncError::InProgress(request.account_id.clone()));
    }
    let mut counts = super::apply::apply_fills(&tx, fills, fetched_at, Some(ingestion_run)).await?;
    counts.fetched_executions_count = fetched_count;
    counts.rejected_executions_count = rejected.len() as u64;
    counts.unrecognised_exec_ids_count = unrecognised;
    let records: Vec<Box<serde_json::value::RawValue>> = orphans
        .iter()
        .map(commission_record)
        .collect::<Result<_, _>>()
        .map_err(|e| SyncError::Unavailable(format!("writing a commission record: {e}")))?;
    let late: Vec<broker_sync::LateCommission<'_>> = orphans
        .iter()
        .zip(&records)
        .map(|(c, record)| broker_sync::LateCommission {
            exec_id: &c.exec_id,
            commission: c.commission,
            currency: &c.currency,
            realized_pnl: c.realized_pnl,
            record,
        })
        .collect();
    let applied = apply_commissions(
        &tx,
        &request.account_id,
        &late,
        fetched_at,
        ingestion_run,
        false,
        &mut counts,
    )
    .await?;
    broker_sync::complete_sync_run(&tx, sync_run, &counts, rejected, warnings).await?;
    tx.commit()
        .await
        .map_err(StoreError::new("committing a sync"))?;
    Ok((counts, applied.matched))
}
