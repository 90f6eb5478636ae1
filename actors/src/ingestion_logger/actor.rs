//! The IngestionLogger actor. Each request runs on its own task with a pooled connection, so a
//! 10,000-record batch of one job never holds up another job's start; the replies carry the
//! outcome. It keeps no state of its own beyond the pool: everything is in PostgreSQL, so a
//! restart loses nothing.

use std::future::Future;

use ractor::{Actor, ActorProcessingErr, ActorRef, RpcReplyPort};

use super::config::IngestionConfig;
use super::messages::IngestionLoggerMessage;
use crate::domain::IngestionRun;
use crate::domain::ingestion::Invalid;
use crate::store::ingestion::{self as store, Finish, Finished, IngestionError};

/// The actor.
#[derive(Debug, Default)]
pub struct IngestionLogger;

/// What it is started with; cloned for every restart.
#[derive(Clone)]
pub struct IngestionLoggerArgs {
    /// Connections to the audit database
    pub pool: deadpool_postgres::Pool,
    /// `[ingestion]`
    pub config: IngestionConfig,
}

impl std::fmt::Debug for IngestionLoggerArgs {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("IngestionLoggerArgs")
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

type Client = deadpool_postgres::Object;

async fn connection(pool: &deadpool_postgres::Pool) -> Result<Client, IngestionError> {
    pool.get()
        .await
        .map_err(|e| IngestionError::Unavailable(format!("no database connection: {e}")))
}

/// Runs `op` on its own task with a pooled connection and replies with its outcome.
fn spawn_reply<T, F, Fut>(
    pool: &deadpool_postgres::Pool,
    reply: RpcReplyPort<Result<T, IngestionError>>,
    op: F,
) where
    T: Send + 'static,
    F: FnOnce(Client) -> Fut + Send + 'static,
    Fut: Future<Output = Result<T, IngestionError>> + Send,
{
    let pool = pool.clone();
    tokio::spawn(async move {
        let result = match connection(&pool).await {
            Ok(client) => op(client).await,
            Err(e) => Err(e),
        };
        if let Err(e) = &result {
            metrics::counter!("tradegate_ingestion_errors_total", "code" => e.code()).increment(1);
        }
        // the caller may have given up waiting; the work is done either way
        let _ = reply.send(result);
    });
}

fn finished(outcome: &Finished) -> IngestionRun {
    let run = &outcome.run;
    metrics::counter!("tradegate_ingestion_runs_total", "status" => run.status.as_str())
        .increment(1);
    match run.status {
        crate::domain::RunStatus::Failed => tracing::warn!(
            run_id = %run.run_id, task = %run.task_name, source = %run.data_source,
            error = run.error_message.as_deref().unwrap_or(""),
            "ingestion run failed"
        ),
        _ => tracing::info!(
            run_id = %run.run_id, task = %run.task_name, source = %run.data_source,
            fetched = run.counts.fetched, created = run.counts.created,
            updated = run.counts.updated, skipped = run.counts.skipped,
            "ingestion run completed"
        ),
    }
    if let Some(alert) = outcome.zero_records_alert {
        metrics::counter!("tradegate_alerts_total", "kind" => store::ZERO_RECORDS_ALERT)
            .increment(1);
        tracing::warn!(
            alert_id = alert, run_id = %run.run_id, task = %run.task_name,
            source = %run.data_source,
            "ALERT {}: ingestion run completed with zero records fetched",
            store::ZERO_RECORDS_ALERT
        );
    }
    outcome.run.clone()
}

impl Actor for IngestionLogger {
    type Msg = IngestionLoggerMessage;
    type State = IngestionLoggerArgs;
    type Arguments = IngestionLoggerArgs;

    async fn pre_start(
        &self,
        _myself: ActorRef<Self::Msg>,
        args: Self::Arguments,
    ) -> Result<Self::State, ActorProcessingErr> {
        Ok(args)
    }

    async fn handle(
        &self,
        _myself: ActorRef<Self::Msg>,
        message: Self::Msg,
        state: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        let pool = &state.pool;
        match message {
            IngestionLoggerMessage::StartRun { run, reply } => {
                spawn_reply(pool, reply, move |client| async move {
                    let run = store::start_run(&**client, &run).await?;
                    tracing::info!(run_id = %run.run_id, task = %run.task_name,
                        source = %run.data_source, "ingestion run started");
                    metrics::counter!("tradegate_ingestion_runs_started_total").increment(1);
                    Ok(run)
                });
            }
            IngestionLoggerMessage::RecordApiCalls {
                run_id,
                calls,
                reply,
            } => {
                spawn_reply(pool, reply, move |mut client| async move {
                    let ids = store::record_api_calls(&mut client, run_id, &calls).await?;
                    metrics::counter!("tradegate_ingestion_api_calls_total")
                        .increment(ids.len() as u64);
                    Ok(ids)
                });
            }
            IngestionLoggerMessage::RecordRecords {
                run_id,
                records,
                reply,
            } => {
                let max = state.config.max_records_per_batch;
                if records.len() > max {
                    let _ = reply.send(Err(IngestionError::Invalid(Invalid(format!(
                        "{} records in one batch; at most {max} (ingestion.max_records_per_batch)",
                        records.len()
                    )))));
                    return Ok(());
                }
                spawn_reply(pool, reply, move |mut client| async move {
                    let outcome = store::record_records(&mut client, run_id, &records).await?;
                    metrics::counter!("tradegate_ingestion_records_total")
                        .increment(outcome.inserted);
                    Ok(outcome)
                });
            }
            IngestionLoggerMessage::CompleteRun {
                run_id,
                counts,
                reply,
            } => {
                spawn_reply(pool, reply, move |mut client| async move {
                    let outcome =
                        store::finish_run(&mut client, run_id, &Finish::Complete(counts)).await?;
                    Ok(finished(&outcome))
                });
            }
            IngestionLoggerMessage::FailRun {
                run_id,
                error,
                details,
                reply,
            } => {
                spawn_reply(pool, reply, move |mut client| async move {
                    let finish = Finish::Fail {
                        message: error,
                        details,
                    };
                    let outcome = store::finish_run(&mut client, run_id, &finish).await?;
                    Ok(finished(&outcome))
                });
            }
            IngestionLoggerMessage::GetRun { run_id, reply } => {
                spawn_reply(pool, reply, move |client| async move {
                    Ok(store::get_run(&**client, run_id).await?)
                });
            }
            IngestionLoggerMessage::ListRuns { filter, reply } => {
                spawn_reply(pool, reply, move |client| async move {
                    Ok(store::list_runs(&**client, &filter).await?)
                });
            }
        }
        Ok(())
    }
}
