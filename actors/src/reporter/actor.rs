//! The Reporter actor: the alert checks on a schedule (and on request), the payload purge at
//! start and on a schedule (and on request), the daily summary at its time.

use std::time::Duration;

use chrono::Utc;
use ractor::{Actor, ActorProcessingErr, ActorRef};
use tokio::task::JoinHandle;

use super::alerts;
use super::config::ReporterConfig;
use super::messages::ReporterMessage;
use crate::store::alerts::RaisedAlert;
use crate::store::retention;

/// The registry name of the Reporter.
pub const NAME: &str = "reporter";

/// What the Reporter starts with.
#[derive(Debug, Clone)]
pub struct ReporterArgs {
    /// The audit database
    pub pool: deadpool_postgres::Pool,
    /// Thresholds, webhook, retention
    pub config: ReporterConfig,
    /// How an `https` webhook is verified
    pub tls: crate::tls::ClientTls,
    /// Sealing the audit journal
    pub audit: super::AuditConfig,
}

/// The Reporter's state.
#[derive(Debug)]
pub struct ReporterState {
    args: ReporterArgs,
    http: reqwest::Client,
    purge: Option<JoinHandle<()>>,
    /// The sealing run under way
    seal: Option<JoinHandle<()>>,
    /// The daily summary's build and delivery under way
    daily: Option<JoinHandle<()>>,
    timers: Vec<JoinHandle<()>>,
    /// The newest alert id already forwarded to the webhook
    forwarded: Option<i64>,
}

/// The Reporter actor.
#[derive(Debug, Default)]
pub struct Reporter;

/// Why a Reporter task did not complete.
#[derive(Debug, thiserror::Error)]
pub enum ReporterError {
    /// No database connection
    #[error(transparent)]
    Pool(#[from] deadpool_postgres::PoolError),
    /// A statement failed
    #[error(transparent)]
    Store(#[from] crate::store::StoreError),
    /// The Reporter is not running
    #[error("the Reporter is not running")]
    NotRunning,
    /// The Reporter did not answer in time, or stopped while asked
    #[error("the Reporter did not answer: {0}")]
    Unanswered(String),
}

async fn check_alerts(state: &mut ReporterState) -> Result<Vec<RaisedAlert>, ReporterError> {
    let client = state.args.pool.get().await?;
    // forwarding starts with the alerts raised after the Reporter started
    let after = match state.forwarded {
        Some(id) => id,
        None => crate::store::alerts::newest_alert_id(&**client).await?,
    };
    let raised = alerts::check(&**client, &state.args.config, Utc::now()).await?;
    alerts::announce(&state.http, &state.args.config, &raised).await;
    let elsewhere = crate::store::alerts::raised_elsewhere(&**client, after).await?;
    alerts::post(&state.http, &state.args.config, &elsewhere).await;
    let newest = raised.iter().chain(&elsewhere).map(|a| a.id).max();
    state.forwarded = Some(newest.map_or(after, |n| n.max(after)));
    Ok(raised)
}

async fn purge(args: ReporterArgs) -> Result<u64, ReporterError> {
    let client = args.pool.get().await?;
    let before = Utc::now() - chrono::Duration::days(i64::from(args.config.payload_retention_days));
    let deleted =
        retention::purge_payloads(&**client, before, args.config.purge_batch_size).await?;
    metrics::counter!("tradegate_payloads_purged_total").increment(deleted);
    tracing::info!(deleted, %before, "purged API payloads past retention (referenced ones kept)");
    Ok(deleted)
}

impl Actor for Reporter {
    type Msg = ReporterMessage;
    type State = ReporterState;
    type Arguments = ReporterArgs;

    async fn pre_start(
        &self,
        myself: ActorRef<Self::Msg>,
        args: ReporterArgs,
    ) -> Result<Self::State, ActorProcessingErr> {
        let timers = vec![
            myself.send_interval(Duration::from_secs(args.config.alert_interval_secs), || {
                ReporterMessage::CheckAlerts { reply: None }
            }),
            myself.send_interval(
                Duration::from_secs(args.config.retention_interval_secs),
                || ReporterMessage::PurgePayloads { reply: None },
            ),
            myself.send_interval(
                Duration::from_secs(args.config.daily_summary_check_secs.max(1)),
                || ReporterMessage::DailySummary,
            ),
            myself.send_interval(
                Duration::from_secs(args.audit.seal_interval_secs.max(1)),
                || ReporterMessage::Seal { reply: None },
            ),
        ];
        // the purge runs at start too, not first a whole interval later (a gateway restarted
        // daily would never purge)
        let _ = myself.send_message(ReporterMessage::PurgePayloads { reply: None });
        // alerts raised from now on are forwarded (best effort: without the database now,
        // the first check starts from the newest alert then)
        let forwarded = match args.pool.get().await {
            Ok(client) => crate::store::alerts::newest_alert_id(&**client).await.ok(),
            Err(_) => None,
        };
        let http = args
            .tls
            .http()
            .timeout(Duration::from_secs(5))
            .build()
            .map_err(|e| format!("building the webhook client: {e}"))?;
        Ok(ReporterState {
            args,
            http,
            purge: None,
            seal: None,
            daily: None,
            timers,
            forwarded,
        })
    }

    async fn post_stop(
        &self,
        _myself: ActorRef<Self::Msg>,
        state: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        for task in [state.purge.take(), state.daily.take(), state.seal.take()]
            .into_iter()
            .flatten()
        {
            task.abort();
        }
        for timer in state.timers.drain(..) {
            timer.abort();
        }
        Ok(())
    }

    async fn handle(
        &self,
        myself: ActorRef<Self::Msg>,
        message: Self::Msg,
        state: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        match message {
            ReporterMessage::CheckAlerts { reply } => {
                let result = check_alerts(state).await;
                if let Err(e) = &result {
                    tracing::warn!(error = %e, "the alert checks failed; they run again at the next interval");
                }
                if let Some(reply) = reply {
                    let _ = reply.send(result);
                }
            }
            ReporterMessage::DailySummary => {
                if let Err(e) =
                    super::daily::run(&state.http, &state.args.config, &state.args.pool).await
                {
                    tracing::warn!(error = %e, "the daily summary check failed; it runs again at the next check");
                }
            }
            ReporterMessage::Seal { reply } => {
                if reply.is_none() && state.seal.as_ref().is_some_and(|t| !t.is_finished()) {
                    return Ok(());
                }
                let (pool, audit) = (state.args.pool.clone(), state.args.audit.clone());
                let previous = state.seal.take();
                state.seal = Some(tokio::spawn(async move {
                    // one run at a time: an asked-for seal waits for the scheduled one
                    if let Some(previous) = previous {
                        let _ = previous.await;
                    }
                    let result = async {
                        let client = pool.get().await?;
                        let kind = crate::store::audit::SealKind::Interval;
                        Ok::<_, ReporterError>(super::seals::run(&**client, &audit, kind).await?)
                    }
                    .await;
                    if let Err(e) = &result {
                        tracing::warn!(error = %e, "sealing the audit journal failed; it is tried again at the next interval");
                    }
                    if let Some(reply) = reply {
                        let _ = reply.send(result);
                    }
                }));
            }
            ReporterMessage::PurgePayloads { reply } => {
                if reply.is_none() && state.purge.as_ref().is_some_and(|t| !t.is_finished()) {
                    return Ok(());
                }
                let args = state.args.clone();
                let retry = myself.clone();
                let scheduled = reply.is_none();
                state.purge = Some(tokio::spawn(async move {
                    let result = purge(args).await;
                    if let Err(e) = &result {
                        tracing::warn!(error = %e, "the payload purge failed; it runs again in a minute");
                        // a scheduled purge that failed (the database not up yet at start,
                        // say) is tried again soon, not a whole interval later
                        if scheduled {
                            retry.send_after(Duration::from_secs(60), || {
                                ReporterMessage::PurgePayloads { reply: None }
                            });
                        }
                    }
                    if let Some(reply) = reply {
                        let _ = reply.send(result);
                    }
                }));
            }
        }
        Ok(())
    }
}

/// Asks the running Reporter.
#[derive(Debug, Clone)]
pub struct ReporterClient {
    timeout: Duration,
}

impl Default for ReporterClient {
    fn default() -> Self {
        Self {
            timeout: Duration::from_secs(600),
        }
    }
}

impl ReporterClient {
    fn actor() -> Result<ActorRef<ReporterMessage>, ReporterError> {
        ActorRef::where_is(NAME).ok_or(ReporterError::NotRunning)
    }

    /// Runs the alert checks now.
    pub async fn check_alerts(&self) -> Result<Vec<RaisedAlert>, ReporterError> {
        ractor::call_t!(
            Self::actor()?,
            |reply| ReporterMessage::CheckAlerts { reply: Some(reply) },
            u64::try_from(self.timeout.as_millis()).unwrap_or(u64::MAX)
        )
        .map_err(|e| ReporterError::Unanswered(e.to_string()))?
    }

    /// Seals the audit journal now; the seals written.
    pub async fn seal(&self) -> Result<Vec<crate::store::audit::Seal>, ReporterError> {
        ractor::call_t!(
            Self::actor()?,
            |reply| ReporterMessage::Seal { reply: Some(reply) },
            u64::try_from(self.timeout.as_millis()).unwrap_or(u64::MAX)
        )
        .map_err(|e| ReporterError::Unanswered(e.to_string()))?
    }

    /// Purges API payloads past retention now.
    pub async fn purge_payloads(&self) -> Result<u64, ReporterError> {
        ractor::call_t!(
            Self::actor()?,
            |reply| ReporterMessage::PurgePayloads { reply: Some(reply) },
            u64::try_from(self.timeout.as_millis()).unwrap_or(u64::MAX)
        )
        .map_err(|e| ReporterError::Unanswered(e.to_string()))?
    }
}
