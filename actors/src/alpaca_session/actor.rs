//! The AlpacaSession actor: one per Alpaca account. Submissions run on their own tasks (a
//! batch on one, in order); the stream and the start-up recovery run beside them.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::Utc;
use ractor::{Actor, ActorProcessingErr, ActorRef};
use tokio::task::JoinHandle;

use super::config::{AlpacaAccountConfig, AlpacaConfig, Credentials};
use super::error::SessionError;
use super::messages::AlpacaSessionMessage;
use super::orders::SessionCtx;
use super::rest::AlpacaRest;
use super::stream;
use crate::domain::StrategyEvent;
use crate::store::group::{self, BatchCommit, GroupCommit};
use crate::store::{self, orders::NOT_RECEIVED_BY_BROKER};
use crate::strategy_hub::StrategyHub;
use crate::tls::ClientTls;
use crate::trade_log_writer::TradeLog;

/// Most writes (submission outcomes, stream events) one group commit takes.
const GROUP_COMMIT_MAX: usize = 256;
/// How long submission outcomes and stream events wait for others to share their commit. The
/// order is at the broker already; a few milliseconds here keep the database's work per order
/// low, which keeps the next orders' path to the broker short.
const GROUP_COMMIT_LINGER: Duration = Duration::from_millis(5);

/// A decision without an execution younger than this is taken to be on its way to the broker
/// (routed, not yet sent), not of unknown outcome.
const ON_ITS_WAY: Duration = Duration::from_secs(2);

/// How long a stop waits for the stream's received events to be recorded.
const STREAM_DRAIN: Duration = Duration::from_secs(10);
/// How long a stop waits for submissions under way (their answer and its commit).
const SUBMISSION_DRAIN: Duration = Duration::from_secs(15);

/// The registry name of the session of `account`.
pub fn name_for(account: &str) -> String {
    format!("alpaca_session.{account}")
}

/// The running session of `account`, if any.
pub fn find(account: &str) -> Option<ActorRef<AlpacaSessionMessage>> {
    ActorRef::where_is(name_for(account))
}

/// What a session starts with.
#[derive(Debug, Clone)]
pub struct AlpacaSessionArgs {
    /// The account
    pub account: AlpacaAccountConfig,
    /// Its credentials
    pub credentials: Credentials,
    /// Timeouts, grace period, backoff
    pub config: AlpacaConfig,
    /// The audit database
    pub pool: deadpool_postgres::Pool,
    /// The trade log
    pub trade_log: Option<TradeLog>,
    /// The strategies' connections
    pub hub: StrategyHub,
    /// How brokers are verified
    pub tls: ClientTls,
    /// How position windows are reconciled
    pub reconcile: crate::reconciliation::ReconcileConfig,
}

/// A session's state.
#[derive(Debug)]
pub struct AlpacaSessionState {
    ctx: Arc<SessionCtx>,
    tasks: Vec<JoinHandle<()>>,
    stream: Option<stream::StreamTasks>,
}

/// The AlpacaSession actor.
#[derive(Debug, Default)]
pub struct AlpacaSession;

impl Actor for AlpacaSession {
    type Msg = AlpacaSessionMessage;
    type State = AlpacaSessionState;
    type Arguments = AlpacaSessionArgs;

    async fn pre_start(
        &self,
        _myself: ActorRef<Self::Msg>,
        args: AlpacaSessionArgs,
    ) -> Result<Self::State, ActorProcessingErr> {
        // a group's submissions go in one multi-row statement
        let (submissions, submissions_task) = BatchCommit::spawn_batch(
            args.pool.clone(),
            GROUP_COMMIT_MAX,
            GROUP_COMMIT_LINGER,
            "alpaca_submissions",
            group::batch(|tx, subs: &[store::orders::Submission]| {
                Box::pin(store::orders::record_submissions(tx, subs))
            }),
        );
        let (events, events_task) = GroupCommit::spawn(
            args.pool.clone(),
            GROUP_COMMIT_MAX,
            GROUP_COMMIT_LINGER,
            "alpaca_events",
        );
        let ctx = Arc::new(SessionCtx {
            account: args.account.name.clone(),
            rest: AlpacaRest::new(
                &args.account.base_url,
                args.credentials.clone(),
                args.config.request_timeout(),
                &args.tls,
            )
            .map_err(|e| format!("building the REST client of {}: {e}", args.account.name))?,
            credentials: args.credentials.clone(),
            pool: args.pool.clone(),
            trade_log: args.trade_log.clone(),
            hub: args.hub.clone(),
            in_flight: Mutex::new(Default::default()),
            submitted: tokio::sync::Notify::new(),
            submissions,
            events,
            reconcile: tokio::sync::Notify::new(),
            closing: Default::default(),
            stopping: Default::default(),
            positions_due: Default::default(),
            positions_lock: tokio::sync::Mutex::new(()),
            catch_up_generation: Default::default(),
            caught_up_generation: Default::default(),
            streaming: args.config.stream,
            reconciliation: args.reconcile,
        });
        let mut tasks = vec![submissions_task, events_task];
        let stream = args.config.stream.then(|| {
            stream::start(
                Arc::clone(&ctx),
                args.account.stream_url(),
                args.tls.clone(),
                Duration::from_secs(args.config.reconnect_max_backoff_secs),
            )
        });
        if stream.is_none() {
            // without a stream to catch up, the start's snapshot is taken now
            super::positions::sync_and_reconcile(&ctx, "start");
        }
        tasks.push(tokio::spawn(super::positions::job_runner(
            Arc::clone(&ctx),
            Duration::from_secs(args.config.job_poll_secs),
        )));
        tasks.push(tokio::spawn(reconciler(
            Arc::clone(&ctx),
            Duration::from_secs(args.config.recovery_grace_secs),
        )));
        tracing::info!(account = %ctx.account, base_url = %args.account.base_url, "alpaca session started");
        Ok(AlpacaSessionState { ctx, tasks, stream })
    }

    async fn post_stop(
        &self,
        _myself: ActorRef<Self::Msg>,
        state: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        // submissions under way finish, and their outcomes commit, before the writers stop:
        // each leaves `in_flight` once its row is written (the router, stopped first, sends
        // nothing more)
        state
            .ctx
            .stopping
            .store(true, std::sync::atomic::Ordering::SeqCst);
        let deadline = tokio::time::Instant::now() + SUBMISSION_DRAIN;
        loop {
            let left = state.ctx.submitted.notified();
            let under_way = state.ctx.in_flight.lock().map_or(0, |f| f.len());
            if under_way == 0 {
                break;
            }
            if tokio::time::timeout_at(deadline, left).await.is_err() {
                tracing::warn!(account = %state.ctx.account, under_way,
                    "submissions still under way at the stop; they are looked up at the next start");
                break;
            }
        }
        // then the stream's events already received are recorded (their group commits still
        // run) before the writers stop
        if let Some(stream) = state.stream.take() {
            stream.drain(&state.ctx, STREAM_DRAIN).await;
        }
        for task in state.tasks.drain(..) {
            task.abort();
        }
        Ok(())
    }

    async fn handle(
        &self,
        _myself: ActorRef<Self::Msg>,
        msg: Self::Msg,
        state: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        let ctx = Arc::clone(&state.ctx);
        match msg {
            AlpacaSessionMessage::Execute { orders, sequential } => {
                ctx.begin(&orders);
                tokio::spawn(async move { ctx.execute(orders, sequential).await });
            }
            AlpacaSessionMessage::Cancel { order, reply } => {
                tokio::spawn(async move {
                    let _ = reply.send(ctx.cancel(&order).await);
                });
            }
            AlpacaSessionMessage::Replace {
                order,
                changes,
                reply,
            } => {
                tokio::spawn(async move {
                    let _ = reply.send(ctx.replace(&order, &changes).await);
                });
            }
            AlpacaSessionMessage::Reconcile => ctx.reconcile.notify_one(),
            AlpacaSessionMessage::CancelAll { strategy, reply } => {
                tokio::spawn(async move {
                    let _ = reply.send(ctx.cancel_all(&strategy).await);
                });
            }
        }
        Ok(())
    }
}

/// Recovery at start-up, then once more after each [`AlpacaSessionMessage::Reconcile`].
async fn reconciler(ctx: Arc<SessionCtx>, grace: Duration) {
    loop {
        recover(Arc::clone(&ctx), grace).await;
        ctx.reconcile.notified().await;
    }
}

/// A recovery pass (at start-up, and on request): every pending decision of the account with
/// no execution (its outcome is unknown: the gateway may have died, or lost the database,
/// before, during or after sending it) is looked up at
/// the broker by client order id. Found: recorded as its execution. Not found: failed with
/// `not_received_by_broker` once older than the grace period (until then it is looked up
/// again). Never resent.
async fn recover(ctx: Arc<SessionCtx>, grace: Duration) {
    let mut round = 0;
    loop {
        // read afresh each round: a decision sent or recorded meanwhile (the session's own
        // submission may have raced a look-up) is no longer unresolved and is left alone
        let pending = unresolved(&ctx).await;
        if pending.is_empty() {
            return;
        }
        if round == 0 {
            tracing::warn!(account = %ctx.account, decisions = pending.len(),
                "reconciling pending decisions with unknown outcome");
        }
        round += 1;
        let mut again = false;
        for p in pending {
            let in_flight = ctx
                .in_flight
                .lock()
                .map(|f| f.contains(&p.decision.decision_id))
                .unwrap_or(false);
            if in_flight {
                continue;
            }
            // committed a moment ago and not yet handed to this session: on its way to the
            // broker, not unknown (looked at again in the next round)
            let age = (Utc::now() - p.created_at).to_std().unwrap_or_default();
            if p.unknown_execution.is_none() && age < ON_ITS_WAY {
                again = true;
                continue;
            }
            match ctx.look_up(&p.decision).await {
                Ok(Some((found, request_id))) => {
                    match ctx
                        .record_found(
                            p.decision_pk,
                            &p.decision,
                            request_id,
                            found,
                            p.unknown_execution.as_ref(),
                        )
                        .await
                    {
                        Ok(()) => {
                            tracing::info!(account = %ctx.account, decision = %p.decision.decision_id,
                            "recovered: the broker has the order; recorded")
                        }
                        Err(e) => {
                            tracing::error!(account = %ctx.account, error = %e, "recovered order not recorded");
                            again = true;
                        }
                    }
                }
                Ok(None) => {
                    let age = (Utc::now() - p.created_at).to_std().unwrap_or_default();
                    if age < grace {
                        again = true;
                        continue;
                    }
                    let failed = async {
                        let client = ctx.pool.get().await?;
                        Ok::<_, SessionError>(match &p.unknown_execution {
                            None => {
                                store::orders::fail_pending_decision(
                                    &**client,
                                    p.decision_pk,
                                    NOT_RECEIVED_BY_BROKER,
                                )
                                .await?
                            }
                            Some((execution_pk, why)) => {
                                store::orders::fail_unknown_execution(
                                    &**client,
                                    *execution_pk,
                                    &format!(
                                        "not found by client order id {}s after {why}",
                                        grace.as_secs()
                                    ),
                                )
                                .await?
                            }
                        })
                    }
                    .await;
                    match failed {
                        Ok(_) => {
                            tracing::warn!(account = %ctx.account, decision = %p.decision.decision_id,
                                "recovered: the broker never received the order; decision failed");
                            ctx.hub.push(
                                &p.decision.strategy_name,
                                StrategyEvent::OrderUpdate {
                                    decision_id: p.decision.decision_id,
                                    event: NOT_RECEIVED_BY_BROKER.into(),
                                    status: None,
                                    broker_order_id: None,
                                    filled_qty: None,
                                },
                            );
                        }
                        Err(e) => {
                            tracing::error!(account = %ctx.account, error = %e, "cannot fail a decision");
                            again = true;
                        }
                    }
                }
                Err(e) => {
                    tracing::warn!(account = %ctx.account, error = %e, "look-up failed; retrying");
                    again = true;
                }
            }
        }
        if !again {
            return;
        }
        tokio::time::sleep((grace / 4).clamp(Duration::from_millis(200), Duration::from_secs(10)))
            .await;
    }
}

/// The account's pending decisions without an execution; waits for the database to answer.
async fn unresolved(ctx: &SessionCtx) -> Vec<store::orders::PendingDecision> {
    loop {
        let listed = async {
            let client = ctx.pool.get().await?;
            Ok::<_, SessionError>(
                store::orders::unresolved_decisions(&**client, &ctx.account).await?,
            )
        }
        .await;
        match listed {
            Ok(p) => return p,
            Err(e) => {
                tracing::warn!(account = %ctx.account, error = %e, "recovery cannot read decisions yet");
                tokio::time::sleep(Duration::from_secs(2)).await;
            }
        }
    }
}
