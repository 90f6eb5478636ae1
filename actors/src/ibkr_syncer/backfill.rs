//! Applying a Flex report ([`super::flex`]): each account's fills in one transaction under the
//! account's lock, recorded like a sync (a `sync_runs` row and an ingestion run, task
//! `ibkr.flex.import`). Fills not stored yet go through the sync's own path
//! ([`super::apply::apply_fills`]: corrections supersede by revision, parents by perm id, order
//! ref or the composite key); a fill already stored (from TWS, or an earlier import) is left as
//! it is, except that one stored without a commission takes the report's. So an import repeated,
//! or one overlapping what TWS sent, writes nothing.

use std::collections::HashSet;
use std::time::Instant;

use chrono::{DateTime, NaiveDate, NaiveTime, TimeZone, Utc};
use chrono_tz::Tz;
use serde_json::json;

use super::flex::{AccountFills, FlexStatement, commission_record, normalize_report};
use super::flex_service::{FlexClient, ServiceError};
use super::sync::{Applied, Phases, RunIds, SOURCE, SyncError, conclude, millis};
use crate::domain::{NewFill, NewRun, SyncCounts, SyncReport};
use crate::store::{StoreError, broker_sync, ingestion};

/// The ingestion task name of a Flex import.
pub const TASK: &str = "ibkr.flex.import";

/// How long an import waits for a sync of the same account to finish storing.
const LOCK_WAIT: std::time::Duration = std::time::Duration::from_secs(30);

/// The kind of the alert raised when the gateway's own backfill fails.
pub const BACKFILL_FAILED_ALERT: &str = "ibkr.flex_backfill_failed";
/// The kind of the alert raised for each cancellation a report lists (once per execution).
pub const CANCELLATION_ALERT: &str = "ibkr.flex_cancellation";

/// The gateway's own backfill from the Flex Web Service (`[ibkr.flex]` with a query id and the
/// token set): at start, then every `interval` (zero: only at start).
#[derive(Debug, Clone)]
pub struct FlexBackfill {
    /// The service client (token and query)
    pub client: FlexClient,
    /// The report's zone
    pub zone: Tz,
    /// The accounts imported (the gateway's IBKR accounts; others in the report are left out)
    pub accounts: Vec<String>,
    /// Between runs
    pub interval: std::time::Duration,
}

/// Why a backfill from the service gave nothing.
#[derive(Debug, thiserror::Error)]
pub enum BackfillError {
    /// The service gave no report
    #[error(transparent)]
    Service(#[from] ServiceError),
    /// The report cannot be read
    #[error(transparent)]
    Report(#[from] super::flex::FlexError),
}

impl BackfillError {
    /// A stable code.
    pub fn code(&self) -> &'static str {
        match self {
            Self::Service(e) => e.code(),
            Self::Report(e) => e.code(),
        }
    }
}

/// Fetches the report of `client`'s query and imports it (see [`import_report`]).
pub async fn backfill_from_service(
    pool: &deadpool_postgres::Pool,
    client: &FlexClient,
    zone: Tz,
    accounts: &[String],
) -> Result<Vec<AccountImport>, BackfillError> {
    let xml = client.fetch().await?;
    let statements = super::flex::parse_report(&xml)?;
    let listed = report_accounts(&statements);
    let missing: Vec<&String> = accounts.iter().filter(|a| !listed.contains(a)).collect();
    if !missing.is_empty() {
        tracing::warn!(
            ?missing,
            ?listed,
            "the Flex report has no statement of these IBKR \
            accounts: add them to the Flex Query (and list account ids, not aliases)"
        );
    }
    let origin = Origin::WebService {
        query_id: client.query_id().to_string(),
    };
    Ok(import_report(pool, &statements, zone, accounts, &origin).await)
}

/// One run of the gateway's backfill: logged, counted, and an alert when it or an account's
/// import fails.
pub async fn run_backfill(pool: &deadpool_postgres::Pool, backfill: &FlexBackfill) {
    let failure = match backfill_from_service(
        pool,
        &backfill.client,
        backfill.zone,
        &backfill.accounts,
    )
    .await
    {
        Ok(imports) => {
            let mut failed = Vec::new();
            for import in imports {
                match import.outcome {
                    Ok(report) => tracing::info!(
                        account = %import.account_id,
                        inserted = report.counts.inserted_executions_count,
                        updated = report.counts.updated_executions_count,
                        unchanged = report.counts.unchanged_executions_count,
                        refused = report.counts.rejected_executions_count,
                        "IBKR Flex backfill imported"
                    ),
                    Err(e) => failed.push(json!({
                        "account_id": import.account_id,
                        "code": e.code(),
                        "message": e.to_string(),
                    })),
                }
            }
            (!failed.is_empty()).then(|| {
                (
                    format!(
                        "the IBKR Flex backfill failed for {} accounts",
                        failed.len()
                    ),
                    json!({ "accounts": failed }),
                )
            })
        }
        Err(e) => Some((
            format!("the IBKR Flex backfill got no report: {e}"),
            json!({ "code": e.code(), "message": e.to_string() }),
        )),
    };
    let status = if failure.is_some() {
        "failed"
    } else {
        "completed"
    };
    metrics::counter!("tradegate_ibkr_flex_backfills_total", "status" => status).increment(1);
    if let Some((message, details)) = failure {
        tracing::error!(kind = BACKFILL_FAILED_ALERT, %message, "IBKR alert");
        metrics::counter!("tradegate_alerts_total", "kind" => BACKFILL_FAILED_ALERT).increment(1);
        let alert = crate::store::alerts::NewAlert {
            kind: BACKFILL_FAILED_ALERT.into(),
            severity: "warning",
            message,
            details,
            dedupe_key: Some(format!("flex:{}", Utc::now().date_naive())),
        };
        match pool.get().await {
            Ok(client) => {
                if let Err(e) = crate::store::alerts::insert_alert(&**client, &alert).await {
                    tracing::warn!(error = %e, "could not store the alert");
                }
            }
            Err(e) => tracing::warn!(error = %e, "no database connection to store the alert"),
        }
    }
}

/// Where a report came from, kept on the ingestion run (never the token).
#[derive(Debug, Clone)]
pub enum Origin {
    /// `--flex-file`
    File(String),
    /// The Flex Web Service, query `query_id`
    WebService {
        /// The Flex Query id
        query_id: String,
    },
}

impl Origin {
    fn metadata(&self) -> serde_json::Value {
        match self {
            Self::File(path) => json!({ "kind": "file", "file": path }),
            Self::WebService { query_id } => json!({ "kind": "web_service", "query_id": query_id }),
        }
    }
}

/// One account's import: its report, or why it failed.
#[derive(Debug)]
pub struct AccountImport {
    /// The account
    pub account_id: String,
    /// Rows of other levels of detail the report listed for it (not executions)
    pub ignored_rows: u64,
    /// The outcome
    pub outcome: Result<SyncReport, SyncError>,
}

/// Imports `statements` (times in `zone`); only `accounts` when it is not empty. Accounts are
/// imported one after another, each on its own; one failing does not stop the others.
pub async fn import_report(
    pool: &deadpool_postgres::Pool,
    statements: &[FlexStatement],
    zone: Tz,
    accounts: &[String],
    origin: &Origin,
) -> Vec<AccountImport> {
    let started = Instant::now();
    let parsed = normalize_report(statements, zone);
    let normalize_ms = millis(started.elapsed());
    let mut out = Vec::new();
    for account in parsed {
        if !accounts.is_empty() && !accounts.contains(&account.account_id) {
            continue;
        }
        let account_id = account.account_id.clone();
        let ignored_rows = account.ignored_rows;
        let outcome = import_account(pool, account, zone, origin, normalize_ms).await;
        out.push(AccountImport {
            account_id,
            ignored_rows,
            outcome,
        });
    }
    out
}

/// The window a statement covers: its first day's start to its last day's end in `zone`; without
/// dates, the span of its fills.
fn window(account: &AccountFills, zone: Tz) -> (DateTime<Utc>, DateTime<Utc>) {
    let at = |d: NaiveDate| {
        zone.from_local_datetime(&d.and_time(NaiveTime::MIN))
            .earliest()
            .map(|t| t.with_timezone(&Utc))
    };
    let first = account.fills.iter().map(|f| f.executed_at).min();
    let last = account.fills.iter().map(|f| f.executed_at).max();
    let now = Utc::now();
    let start = account
        .from_date
        .and_then(at)
        .or(first)
        .unwrap_or(now)
        .min(first.unwrap_or(now));
    let end = account
        .to_date
        .and_then(|d| d.succ_opt())
        .and_then(at)
        .or(last)
        .unwrap_or(now)
        .max(last.unwrap_or(start));
    (start, end)
}

async fn import_account(
    pool: &deadpool_postgres::Pool,
    account: AccountFills,
    zone: Tz,
    origin: &Origin,
    normalize_ms: u64,
) -> Result<SyncReport, SyncError> {
    let started = Instant::now();
    let mut client = pool
        .get()
        .await
        .map_err(|e| SyncError::Unavailable(format!("no database connection: {e}")))?;
    let (window_start, window_end) = window(&account, zone);
    let run = ingestion::start_run(
        &**client,
        &NewRun {
            task: TASK.into(),
            source: SOURCE.into(),
            metadata: Some(json!({
                "account_id": account.account_id,
                "from_date": account.from_date,
                "to_date": account.to_date,
                "window_start": window_start,
                "window_end": window_end,
                "timezone": zone.name(),
                "rows": account.rows,
                "ignored_rows": account.ignored_rows,
                "origin": origin.metadata(),
            })),
        },
    )
    .await?;
    let sync_run = broker_sync::start_sync_run(
        &**client,
        &account.account_id,
        window_start,
        window_end,
        Some(run.id),
    )
    .await?;
    let store_started = Instant::now();
    let outcome = store(&mut client, &account, run.id, sync_run)
        .await
        .map(|counts| Applied {
            counts,
            phases: Phases {
                fetch_ms: 0,
                normalize_ms,
                store_ms: millis(store_started.elapsed()),
            },
            rejected: account.rejected.clone(),
            warnings: warnings(&account),
        });
    let ids = RunIds {
        account: &account.account_id,
        ingestion: run.run_id,
        sync: sync_run,
        window: (window_start, window_end),
        started,
    };
    let report = conclude(&mut client, &ids, outcome).await?;
    alert_cancellations(&client, &report).await;
    Ok(report)
}

/// A cancellation in a report means IB took back an execution: the fill it cancels, if one
/// is stored, still counts until someone checks it with IB, so each is an alert (once per
/// execution), naming the stored fill when there is one with its exec id.
async fn alert_cancellations(client: &deadpool_postgres::Object, report: &SyncReport) {
    for r in report
        .rejected
        .iter()
        .filter(|r| r.code == "flex_cancellation")
    {
        let stored = broker_sync::fill_id_by_exec_id(&***client, &r.account_id, &r.exec_id)
            .await
            .ok()
            .flatten();
        let message = match stored {
            Some(id) => format!(
                "IB cancelled execution {} of {}; the fill stored for it (broker_fills {id}) \
                 still counts: check it with IB",
                r.exec_id, r.account_id
            ),
            None => format!(
                "IB cancelled execution {} of {} (no fill is stored under that exec id): check \
                 the order's fills with IB",
                r.exec_id, r.account_id
            ),
        };
        let alert = crate::store::alerts::NewAlert {
            kind: CANCELLATION_ALERT.into(),
            severity: "warning",
            message,
            details: json!({
                "account_id": r.account_id,
                "exec_id": r.exec_id,
                "stored_fill_id": stored,
                "sync_run_id": report.sync_run_id,
                "row": r.raw,
            }),
            dedupe_key: Some(format!("{}:{}", r.account_id, r.exec_id)),
        };
        match crate::store::alerts::insert_alert(&***client, &alert).await {
            Ok(Some(_)) => {
                metrics::counter!("tradegate_alerts_total", "kind" => CANCELLATION_ALERT)
                    .increment(1);
            }
            Ok(None) => {}
            Err(e) => tracing::warn!(error = %e, "could not store the cancellation alert"),
        }
    }
}

/// The accounts a report has statements for.
pub fn report_accounts(statements: &[FlexStatement]) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for s in statements {
        if !out.contains(&s.account_id) {
            out.push(s.account_id.clone());
        }
    }
    out
}

fn warnings(account: &AccountFills) -> Vec<String> {
    if account.rows == 0 && account.ignored_rows > 0 {
        vec![format!(
            "the report lists {} trade rows of {} but none at the execution level: tick \
             Options > Execution in the Flex Query's Trades section",
            account.ignored_rows, account.account_id
        )]
    } else {
        Vec::new()
    }
}

/// Stores one account's fills in one transaction under its lock.
async fn store(
    client: &mut deadpool_postgres::Object,
    account: &AccountFills,
    ingestion_run: i64,
    sync_run: i64,
) -> Result<SyncCounts, SyncError> {
    let fetched_at = Utc::now();
    let tx = tokio_postgres::Client::transaction(client)
        .await
        .map_err(StoreError::new("beginning a Flex import"))?;
    // a TWS sync of the account holds the lock only while it stores: wait for it
    if !broker_sync::lock_account(&tx, &account.account_id, LOCK_WAIT).await? {
        return Err(SyncError::InProgress(account.account_id.clone()));
    }
    let ids: Vec<&str> = account.fills.iter().map(|f| f.exec_id.as_str()).collect();
    let stored: HashSet<String> = broker_sync::stored_exec_ids(&tx, &account.account_id, &ids)
        .await?
        .into_iter()
        .collect();
    let (known, new): (Vec<&NewFill>, Vec<&NewFill>) = account
        .fills
        .iter()
        .partition(|f| stored.contains(&f.exec_id));
    let new: Vec<NewFill> = new.into_iter().cloned().collect();
    let mut counts = super::apply::apply_fills(&tx, &new, fetched_at, Some(ingestion_run)).await?;
    // of the fills stored already, only a missing commission is taken from the report
    let with_commission: Vec<&NewFill> = known
        .iter()
        .copied()
        .filter(|f| f.commission.is_some())
        .collect();
    let records: Vec<Box<serde_json::value::RawValue>> = with_commission
        .iter()
        .map(|f| commission_record(f))
        .collect::<Result<_, _>>()
        .map_err(|e| SyncError::Unavailable(format!("writing a commission record: {e}")))?;
    let late: Vec<broker_sync::LateCommission<'_>> = with_commission
        .iter()
        .zip(&records)
        .map(|(f, record)| broker_sync::LateCommission {
            exec_id: &f.exec_id,
            commission: f.commission,
            currency: f.commission_currency.as_deref().unwrap_or_default(),
            realized_pnl: f.realized_pnl,
            record,
        })
        .collect();
    let applied = super::sync::apply_commissions(
        &tx,
        &account.account_id,
        &late,
        fetched_at,
        ingestion_run,
        true,
        &mut counts,
    )
    .await?;
    counts.fetched_executions_count = account.rows;
    counts.rejected_executions_count = account.rejected.len() as u64;
    counts.unchanged_executions_count += (known.len() as u64).saturating_sub(applied.updated);
    counts.unrecognised_exec_ids_count = new
        .iter()
        .filter(|f| {
            super::tws::parse_exec_id(&f.exec_id).form == super::tws::ExecIdForm::Unrecognised
        })
        .count() as u64;
    broker_sync::complete_sync_run(
        &tx,
        sync_run,
        &counts,
        &account.rejected,
        &warnings(account),
    )
    .await?;
    tx.commit()
        .await
        .map_err(StoreError::new("committing a Flex import"))?;
    Ok(counts)
}
