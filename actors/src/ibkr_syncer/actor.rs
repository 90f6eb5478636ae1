//! The IbkrSyncer actor, one per configured IBKR account: syncs on a schedule, on request, and
//! for `trades.sync` jobs (idempotently enqueued, at most one pending per account). It keeps
//! one TWS session; a disconnect or a failed connect is a `connectivity_info` trade-log event
//! and a retry after a backoff with jitter. It holds no state a restart could lose: syncs are
//! idempotent and jobs live in PostgreSQL (a job left running by a crash is failed on start
//! and the next job or scheduled sync covers its window).

use std::time::Duration;

use ractor::{Actor, ActorProcessingErr, ActorRef, RpcReplyPort};
use rand::Rng;
use serde_json::{Value, json};
use tokio::task::JoinHandle;

use super::client::TwsSession;
use super::config::IbkrConfig;
use super::sync::{SyncError, SyncRequest, sync_account};
use crate::domain::{RawJson, SyncReport, TradeLogEvent};
use crate::store::jobs::{self, TRADES_SYNC};
use crate::trade_log_writer::TradeLog;

/// The registry name of the syncer of `account`.
pub fn name_for(account: &str) -> String {
    format!("ibkr_syncer.{account}")
}

/// Messages of the IbkrSyncer.
#[derive(Debug)]
pub enum IbkrSyncerMessage {
    /// Sync now (optionally over another look-back) and reply with the outcome
    SyncNow {
        /// Days to look back instead of `[ibkr] lookback_days`
        lookback_days: Option<u32>,
        /// The outcome
        reply: RpcReplyPort<Result<SyncReport, SyncError>>,
    },
    /// A scheduled or retry sync; only the latest scheduled generation runs
    Tick(u64),
    /// Look for a pending `trades.sync` job of this account
    PollJobs,
}

/// What a syncer starts with.
#[derive(Clone)]
pub struct IbkrSyncerArgs {
    /// The account it syncs
    pub account_id: String,
    /// `[ibkr]`
    pub config: IbkrConfig,
    /// Database connections
    pub pool: deadpool_postgres::Pool,
    /// Where connectivity events go
    pub trade_log: Option<TradeLog>,
}

impl std::fmt::Debug for IbkrSyncerArgs {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("IbkrSyncerArgs")
            .field("account_id", &self.account_id)
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

/// The actor.
#[derive(Debug, Clone, Copy, Default)]
pub struct IbkrSyncer;

/// Its state.
#[derive(Debug)]
pub struct IbkrSyncerState {
    args: IbkrSyncerArgs,
    session: Option<TwsSession>,
    /// Consecutive failures that broke the session (drives the backoff)
    failures: u32,
    tick_generation: u64,
    poller: Option<JoinHandle<()>>,
}

impl IbkrSyncerState {
    fn connectivity(&self, event: &str, detail: Value) {
        let a = &self.args;
        tracing::info!(account = %a.account_id, event, %detail, "IBKR connectivity");
        if let Some(log) = &a.trade_log {
            let body = json!({
                "event": event,
                "host": a.config.host,
                "port": a.config.port,
                "client_id": a.config.client_id,
                "detail": detail,
            });
            log.log(TradeLogEvent::connectivity(
                "ibkr",
                Some(a.account_id.clone()),
                RawJson::from_value(&body),
            ));
        }
    }

    /// The retry delay after `failures` consecutive failures: 1 s doubling up to the
    /// configured maximum, with up to 20 % jitter so many syncers do not reconnect in step.
    fn backoff(&self) -> Duration {
        let max = self.args.config.reconnect_max_backoff_secs.max(1);
        let secs = 1u64
            .checked_shl(self.failures.saturating_sub(1).min(16))
            .unwrap_or(max)
            .min(max);
        let base = Duration::from_secs(secs);
        let jitter_ms = rand::rng().random_range(0..=base.as_millis() / 5);
        base + Duration::from_millis(u64::try_from(jitter_ms).unwrap_or(0))
    }

    fn schedule(&mut self, myself: &ActorRef<IbkrSyncerMessage>, after: Duration) {
        self.tick_generation += 1;
        let generation = self.tick_generation;
        myself.send_after(after, move || IbkrSyncerMessage::Tick(generation));
    }

    async fn sync(
        &mut self,
        myself: &ActorRef<IbkrSyncerMessage>,
        lookback_days: Option<u32>,
    ) -> Result<SyncReport, SyncError> {
        let config = &self.args.config;
        if self.session.is_none() {
            let addr = format!("{}:{}", config.host, config.port);
            let connected = match tokio::net::lookup_host(&addr).await {
                Ok(mut addrs) => match addrs.next() {
                    Some(socket) => {
                        TwsSession::connect(
                            socket,
                            config.client_id,
                            config.connect_timeout(),
                            config.read_timeout(),
                        )
                        .await
                    }
                    None => Err(super::tws::TwsError::Io(std::io::Error::other(format!(
                        "{addr} resolves to no address"
                    )))),
                },
                Err(e) => Err(super::tws::TwsError::Io(e)),
            };
            match connected {
                Ok(session) => {
                    self.connectivity(
                        if self.failures > 0 {
                            "reconnected"
                        } else {
                            "connected"
                        },
                        json!({
                            "server_version": session.server_version(),
                            "accounts": session.accounts(),
                        }),
                    );
                    self.session = Some(session);
                }
                Err(e) => {
                    self.failures += 1;
                    let retry = self.backoff();
                    self.connectivity(
                        "connect_failed",
                        json!({"error": e.to_string(), "retry_in_ms": retry.as_millis() as u64}),
                    );
                    self.schedule(myself, retry);
                    return Err(e.into());
                }
            }
        }
        let request = SyncRequest {
            account_id: self.args.account_id.clone(),
            lookback: chrono::Duration::days(i64::from(
                lookback_days.unwrap_or(config.lookback_days),
            )),
            zone: config.zone(),
        };
        let Some(session) = self.session.as_mut() else {
            unreachable!("connected above");
        };
        let outcome = sync_account(&self.args.pool, session, &request).await;
        match &outcome {
            Ok(_) => self.failures = 0,
            Err(e) if e.breaks_session() => {
                self.session = None;
                self.failures += 1;
                let retry = self.backoff();
                self.connectivity(
                    "disconnected",
                    json!({"error": e.to_string(), "retry_in_ms": retry.as_millis() as u64}),
                );
                self.schedule(myself, retry);
            }
            Err(_) => {}
        }
        outcome
    }

    async fn run_job(&mut self, myself: &ActorRef<IbkrSyncerMessage>) {
        let account = self.args.account_id.clone();
        let claimed = match self.args.pool.get().await {
            Ok(client) => jobs::claim(&**client, TRADES_SYNC, &account).await,
            Err(e) => {
                tracing::debug!(account = %account, error = %e, "no connection to look for jobs");
                return;
            }
        };
        let job = match claimed {
            Ok(Some(job)) => job,
            Ok(None) => return,
            Err(e) => {
                tracing::warn!(account = %account, error = %e, "could not claim a trades.sync job");
                return;
            }
        };
        let outcome = match job_lookback(&job.payload) {
            Ok(lookback) => self.sync(myself, lookback).await.map_err(|e| e.to_string()),
            Err(e) => Err(e),
        };
        let error = outcome.as_ref().err().map(String::as_str);
        tracing::info!(account = %account, job = job.id, error, "trades.sync job finished");
        if let Ok(client) = self.args.pool.get().await
            && let Err(e) = jobs::finish(&**client, job.id, error).await
        {
            tracing::warn!(account = %account, job = job.id, error = %e, "could not finish a job");
        }
    }
}

/// The look-back override of a `trades.sync` job's payload (`{"lookback_days": N}`); other
/// keys are refused so a mistyped override fails loudly instead of being ignored.
pub fn job_lookback(payload: &Value) -> Result<Option<u32>, String> {
    let Some(map) = payload.as_object() else {
        return Err("a trades.sync payload must be a JSON object".into());
    };
    let mut lookback = None;
    for (key, value) in map {
        match key.as_str() {
            "lookback_days" => {
                let days = value
                    .as_u64()
                    .filter(|d| (1..=365).contains(d))
                    .ok_or_else(|| format!("lookback_days must be 1 to 365, got {value}"))?;
                lookback = u32::try_from(days).ok();
            }
            other => {
                return Err(format!(
                    "unsupported trades.sync payload key {other:?} (only lookback_days; the \
                     connection comes from the account's [ibkr] configuration)"
                ));
            }
        }
    }
    Ok(lookback)
}

impl Actor for IbkrSyncer {
    type Msg = IbkrSyncerMessage;
    type State = IbkrSyncerState;
    type Arguments = IbkrSyncerArgs;

    async fn pre_start(
        &self,
        myself: ActorRef<Self::Msg>,
        args: Self::Arguments,
    ) -> Result<Self::State, ActorProcessingErr> {
        match args.pool.get().await {
            Ok(client) => {
                match jobs::fail_interrupted(&**client, TRADES_SYNC, &args.account_id).await {
                    Ok(0) => {}
                    Ok(n) => tracing::warn!(account = %args.account_id, jobs = n,
                        "trades.sync jobs interrupted by a stop were marked failed"),
                    Err(e) => tracing::warn!(account = %args.account_id, error = %e,
                        "could not check for interrupted jobs"),
                }
            }
            Err(e) => tracing::warn!(account = %args.account_id, error = %e,
                "no database connection at start; jobs are checked on the next poll"),
        }
        let poll = Duration::from_secs(args.config.job_poll_secs.max(1));
        let poller = myself.send_interval(poll, || IbkrSyncerMessage::PollJobs);
        let mut state = IbkrSyncerState {
            args,
            session: None,
            failures: 0,
            tick_generation: 0,
            poller: Some(poller),
        };
        if state.args.config.sync_interval_secs > 0 {
            state.schedule(&myself, Duration::from_millis(200));
        }
        Ok(state)
    }

    async fn post_stop(
        &self,
        _myself: ActorRef<Self::Msg>,
        state: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        if let Some(poller) = state.poller.take() {
            poller.abort();
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
            IbkrSyncerMessage::SyncNow {
                lookback_days,
                reply,
            } => {
                let outcome = state.sync(&myself, lookback_days).await;
                // the caller may have given up waiting; the sync is done either way
                let _ = reply.send(outcome);
            }
            IbkrSyncerMessage::Tick(generation) => {
                if generation != state.tick_generation {
                    return Ok(());
                }
                let failures_before = state.failures;
                let _ = state.sync(&myself, None).await;
                // a failure scheduled its own retry; otherwise the next regular sync
                let retried = state.failures > failures_before;
                let interval = state.args.config.sync_interval_secs;
                if !retried && interval > 0 {
                    state.schedule(&myself, Duration::from_secs(interval));
                }
            }
            IbkrSyncerMessage::PollJobs => state.run_job(&myself).await,
        }
        Ok(())
    }
}

/// Calls the syncer of an account, found by name on every call (so it survives restarts).
#[derive(Debug, Clone)]
pub struct IbkrSyncClient {
    timeout: Duration,
}

impl IbkrSyncClient {
    /// A client whose calls wait at most `timeout` for a sync to finish.
    pub fn new(timeout: Duration) -> Self {
        Self { timeout }
    }

    /// Syncs `account` now.
    pub async fn sync(
        &self,
        account: &str,
        lookback_days: Option<u32>,
    ) -> Result<SyncReport, SyncError> {
        let actor = ActorRef::<IbkrSyncerMessage>::where_is(name_for(account))
            .ok_or_else(|| SyncError::UnknownAccount(account.to_string()))?;
        let outcome = actor
            .call(
                |reply| IbkrSyncerMessage::SyncNow {
                    lookback_days,
                    reply,
                },
                Some(self.timeout),
            )
            .await;
        match outcome {
            Ok(ractor::rpc::CallResult::Success(result)) => result,
            Ok(ractor::rpc::CallResult::Timeout) => Err(SyncError::TimedOut(format!(
                "the sync of {account} did not finish within {:?}; it goes on and is recorded",
                self.timeout
            ))),
            Ok(ractor::rpc::CallResult::SenderError) | Err(_) => Err(SyncError::Unavailable(
                format!("the syncer of {account} stopped before it answered"),
            )),
        }
    }
}
