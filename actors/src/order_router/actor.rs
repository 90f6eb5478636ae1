//! The OrderRouter: checks each order, commits its decision to the outbox (concurrent
//! submissions share commits), answers the strategy, then routes the decision to the broker
//! session of its account. Nothing is routed before its decision is committed.

use std::collections::{BTreeMap, HashSet};
use std::time::{Duration, Instant};

use ractor::{Actor, ActorProcessingErr, ActorRef};
use rust_decimal::Decimal;
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;
use uuid::Uuid;

use super::config::OrdersConfig;
use super::config::RiskLimits;
use super::messages::OrderRouterMessage;
use super::risk::{self, RiskState};
use crate::alpaca_session::{self, AlpacaSessionMessage};
use crate::domain::{
    ApiPayload, KillSwitch, LineagePolicy, NewDecision, OrderOutcome, OrderReject, OrderRequest,
    RejectCode, ReplaceRequest, RoutedOrder, StrategyEvent,
};
use crate::store::{self, order_rejects::RejectRecord};
use crate::strategy_hub::StrategyHub;

/// The name the OrderRouter is registered under.
pub const NAME: &str = "order_router";

/// What the OrderRouter starts with.
#[derive(Debug, Clone)]
pub struct OrderRouterArgs {
    /// Strategies, accounts and risk limits
    pub config: OrdersConfig,
    /// The accounts that have a broker session
    pub accounts: Vec<String>,
    /// Connections for the outbox and reject log
    pub pool: deadpool_postgres::Pool,
    /// Data lineage of decisions
    pub lineage: LineagePolicy,
    /// The strategies' connections
    pub hub: StrategyHub,
}

/// The OrderRouter's state: its risk memory, the kill switch, and its two writer tasks.
#[derive(Debug)]
pub struct OrderRouterState {
    args: OrderRouterArgs,
    accounts: HashSet<String>,
    kill: KillSwitch,
    risk: RiskState,
    commits: mpsc::UnboundedSender<CommitJob>,
    rejects: mpsc::UnboundedSender<RejectRecord>,
    tasks: Vec<JoinHandle<()>>,
}

/// The OrderRouter actor.
#[derive(Debug, Default)]
pub struct OrderRouter;

#[derive(Debug)]
struct CommitJob {
    request_id: String,
    batch: bool,
    checked: Vec<Result<NewDecision, OrderReject>>,
    orders: Vec<OrderRequest>,
    events: Option<mpsc::UnboundedSender<StrategyEvent>>,
    reply: Option<oneshot::Sender<Vec<OrderOutcome>>>,
    /// When the checks were done and the job was handed to the outbox writer
    queued_at: Instant,
}

impl Actor for OrderRouter {
    type Msg = OrderRouterMessage;
    type State = OrderRouterState;
    type Arguments = OrderRouterArgs;

    async fn pre_start(
        &self,
        _myself: ActorRef<Self::Msg>,
        args: OrderRouterArgs,
    ) -> Result<Self::State, ActorProcessingErr> {
        // the kill switch survives restarts; if the database cannot say, start halted
        let kill = match args.pool.get().await {
            Ok(client) => match store::kill_switch::kill_switch(&**client).await {
                Ok((state, _)) => state,
                Err(e) => {
                    tracing::error!(error = %e, "cannot read the kill switch; starting halted");
                    KillSwitch::Halted
                }
            },
            Err(e) => {
                tracing::error!(error = %e, "cannot read the kill switch; starting halted");
                KillSwitch::Halted
            }
        };
        let (commits, commit_rx) = mpsc::unbounded_channel();
        let (rejects, reject_rx) = mpsc::unbounded_channel();
        let tasks = vec![
            tokio::spawn(committer(args.clone(), commit_rx, rejects.clone())),
            tokio::spawn(reject_writer(args.pool.clone(), reject_rx)),
        ];
        tracing::info!(kill_switch = kill.as_str(), "order router started");
        Ok(OrderRouterState {
            accounts: args.accounts.iter().cloned().collect(),
            args,
            kill,
            risk: RiskState::default(),
            commits,
            rejects,
            tasks,
        })
    }

    async fn post_stop(
        &self,
        _myself: ActorRef<Self::Msg>,
        state: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        // the writers finish what they hold once their channels close
        let (commits, _) = mpsc::unbounded_channel();
        let (rejects, _) = mpsc::unbounded_channel();
        drop(std::mem::replace(&mut state.commits, commits));
        drop(std::mem::replace(&mut state.rejects, rejects));
        for task in state.tasks.drain(..) {
            let _ = tokio::time::timeout(Duration::from_secs(10), task).await;
        }
        Ok(())
    }

    async fn handle(
        &self,
        _myself: ActorRef<Self::Msg>,
        msg: Self::Msg,
        state: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        match msg {
            OrderRouterMessage::Submit {
                strategy,
                request_id,
                orders,
                batch,
                events,
                reply,
            } => {
                let now = Instant::now();
                let mut checked = Vec::with_capacity(orders.len());
                for order in &orders {
                    let outcome = state.check(&strategy, order, now).await;
                    if let Err((reject, account)) = &outcome {
                        let _ = state.rejects.send(RejectRecord::now(
                            order,
                            account.clone(),
                            reject.clone(),
                        ));
                    }
                    checked.push(outcome.map_err(|(r, _)| r));
                }
                let job = CommitJob {
                    request_id,
                    batch,
                    checked,
                    orders,
                    events,
                    reply,
                    queued_at: Instant::now(),
                };
                if let Err(mpsc::error::SendError(job)) = state.commits.send(job) {
                    answer_unavailable(job, "the outbox writer stopped");
                }
            }
            OrderRouterMessage::Cancel {
                strategy,
                decision_id,
                reply,
            } => {
                let pool = state.args.pool.clone();
                tokio::spawn(async move {
                    let result = cancel(&pool, &strategy, decision_id).await;
                    let _ = reply.send(result);
                });
            }
            OrderRouterMessage::Replace {
                strategy,
                decision_id,
                changes,
                reply,
            } => {
                let pool = state.args.pool.clone();
                // an amendment is checked as a new order would be: the kill switch, the limits
                let (kill, limits) = (state.kill, state.args.config.limits_for(&strategy));
                tokio::spawn(async move {
                    let result =
                        replace(&pool, &strategy, decision_id, changes, kill, &limits).await;
                    let _ = reply.send(result);
                });
            }
            OrderRouterMessage::CancelAll { strategy, reply } => {
                let accounts: Vec<String> = state.accounts.iter().cloned().collect();
                tokio::spawn(async move {
                    let mut sent = 0;
                    for account in accounts {
                        let Some(session) = alpaca_session::find(&account) else {
                            continue;
                        };
                        match ractor::call!(session, |reply| AlpacaSessionMessage::CancelAll {
                            strategy: strategy.clone(),
                            reply
                        }) {
                            Ok(Ok(n)) => sent += n,
                            Ok(Err(reject)) => {
                                let _ = reply.send(Err(reject));
                                return;
                            }
                            Err(e) => {
                                let _ = reply.send(Err(OrderReject::new(
                                    RejectCode::SessionUnavailable,
                                    format!("the {account} session did not answer: {e}"),
                                )));
                                return;
                            }
                        }
                    }
                    let _ = reply.send(Ok(sent));
                });
            }
            OrderRouterMessage::SetKillSwitch {
                state: kill,
                reason,
                by,
                reply,
            } => {
                let result = match state.args.pool.get().await {
                    Ok(client) => {
                        match store::kill_switch::set_kill_switch(
                            &**client,
                            kill,
                            reason.as_deref(),
                            &by,
                        )
                        .await
                        {
                            Ok(true) => Ok(()),
                            Ok(false) => Err(OrderReject::new(
                                RejectCode::AuditUnavailable,
                                "the kill switch's row is missing: nothing changed",
                            )),
                            Err(e) => Err(OrderReject::new(
                                RejectCode::AuditUnavailable,
                                e.to_string(),
                            )),
                        }
                    }
                    Err(e) => Err(OrderReject::new(
                        RejectCode::AuditUnavailable,
                        e.to_string(),
                    )),
                };
                if result.is_ok() {
                    tracing::warn!(
                        from = state.kill.as_str(),
                        to = kill.as_str(),
                        reason = reason.as_deref().unwrap_or(""),
                        by = %by.name,
                        peer = by.peer.as_deref().unwrap_or(""),
                        "kill switch changed"
                    );
                    state.kill = kill;
                    metrics::gauge!("tradegate_kill_switch_state").set(match kill {
                        KillSwitch::Active => 0.0,
                        KillSwitch::ReduceOnly => 1.0,
                        KillSwitch::Halted => 2.0,
                    });
                }
                let _ = reply.send(result);
            }
            OrderRouterMessage::GetKillSwitch { reply } => {
                let _ = reply.send(state.kill);
            }
        }
        Ok(())
    }
}

impl OrderRouterState {
    /// Every check of one order; on success the decision to write. A reject carries the
    /// account when it was resolved.
    async fn check(
        &mut self,
        strategy: &str,
        order: &OrderRequest,
        now: Instant,
    ) -> Result<NewDecision, (OrderReject, Option<String>)> {
        if order.strategy != strategy {
            return Err((
                OrderReject::new(
                    RejectCode::WrongStrategy,
                    format!(
                        "this connection is strategy {strategy}; the order names {}",
                        order.strategy
                    ),
                ),
                None,
            ));
        }
        risk::validate(order).map_err(|r| (r, None))?;
        let account = self.account_for(order);
        if !self.accounts.contains(&account) {
            return Err((
                OrderReject::new(
                    RejectCode::UnknownAccount,
                    if account.is_empty() {
                        "no account: the order names none and none is configured".to_string()
                    } else {
                        format!("no broker session for account {account}")
                    },
                ),
                None,
            ));
        }
        let decision = order.to_decision(&account);
        decision
            .validate()
            .map_err(|r| (OrderReject::from_decision(r), Some(account.clone())))?;
        let limits = self.args.config.limits_for(strategy);
        let reference = match order.reference_price {
            Some(price) => Some(price),
            None if risk::needs_reference(order, &limits) => {
                self.last_price(&order.symbol)
                    .await
                    .map_err(|r| (r, Some(account.clone())))?
            }
            None => None,
        };
        risk::limits(order, &limits, reference).map_err(|r| (r, Some(account.clone())))?;
        let position = if self.kill == KillSwitch::ReduceOnly {
            self.position(&account, &order.symbol)
                .await
                .map_err(|r| (r, Some(account.clone())))?
        } else {
            Decimal::ZERO
        };
        risk::kill_switch(self.kill, order, position).map_err(|r| (r, Some(account.clone())))?;
        self.risk
            .admit(order, &account, &limits, now)
            .map_err(|r| (r, Some(account)))?;
        Ok(decision)
    }

    fn account_for(&self, order: &OrderRequest) -> String {
        if let Some(account) = &order.account {
            return account.clone();
        }
        let config = &self.args.config;
        if let Some(s) = config.strategies.get(&order.strategy)
            && !s.account.is_empty()
        {
            return s.account.clone();
        }
        if !config.default_account.is_empty() {
            return config.default_account.clone();
        }
        self.args.accounts.first().cloned().unwrap_or_default()
    }

    async fn last_price(&self, symbol: &str) -> Result<Option<Decimal>, OrderReject> {
        let client = self
            .args
            .pool
            .get()
            .await
            .map_err(|e| OrderReject::new(RejectCode::AuditUnavailable, e.to_string()))?;
        store::orders::last_fill_price(&**client, symbol)
            .await
            .map_err(|e| OrderReject::new(RejectCode::AuditUnavailable, e.to_string()))
    }

    async fn position(&self, account: &str, symbol: &str) -> Result<Decimal, OrderReject> {
        let client = self
            .args
            .pool
            .get()
            .await
            .map_err(|e| OrderReject::new(RejectCode::AuditUnavailable, e.to_string()))?;
        store::orders::position(&**client, account, symbol)
            .await
            .map_err(|e| OrderReject::new(RejectCode::AuditUnavailable, e.to_string()))
    }
}

fn answer_unavailable(job: CommitJob, why: &str) {
    let outcomes: Vec<OrderOutcome> = job
        .checked
        .into_iter()
        .map(|c| {
            c.and_then(|_| {
                Err(OrderReject::new(
                    RejectCode::AuditUnavailable,
                    format!(
                        "the decision could not be recorded ({why}); nothing was sent (should the \
                         database have recorded it after all, it is reconciled as failed, \
                         not_received_by_broker)"
                    ),
                ))
            })
        })
        .collect();
    answer(
        &job.request_id,
        job.batch,
        job.events.as_ref(),
        job.reply,
        outcomes,
    );
}

fn answer(
    request_id: &str,
    batch: bool,
    events: Option<&mpsc::UnboundedSender<StrategyEvent>>,
    reply: Option<oneshot::Sender<Vec<OrderOutcome>>>,
    outcomes: Vec<OrderOutcome>,
) {
    for (i, outcome) in outcomes.iter().enumerate() {
        let code = match outcome {
            Ok(_) => "accepted",
            Err(r) => r.code.as_str(),
        };
        metrics::counter!("tradegate_orders_total", "outcome" => code.to_string()).increment(1);
        let Some(events) = events else { continue };
        let index = batch.then_some(i);
        let event = match outcome {
            Ok(decision_id) => StrategyEvent::Ack {
                request_id: request_id.to_string(),
                decision_id: Some(*decision_id),
                index,
                broker_order_id: None,
                cancels: None,
            },
            Err(r) => StrategyEvent::Reject {
                request_id: request_id.to_string(),
                code: r.code.clone(),
                message: r.message.clone(),
                index,
            },
        };
        let _ = events.send(event);
    }
    if let Some(reply) = reply {
        let _ = reply.send(outcomes);
    }
}

/// The outbox writer: takes every job waiting, writes all their decisions in one transaction,
/// answers each strategy once it committed, then hands the decisions to their sessions.
async fn committer(
    args: OrderRouterArgs,
    mut jobs: mpsc::UnboundedReceiver<CommitJob>,
    rejects: mpsc::UnboundedSender<RejectRecord>,
) {
    let max = args.config.max_commit_batch.max(1);
    while let Some(first) = jobs.recv().await {
        let mut group = vec![first];
        let mut count = group[0].checked.len();
        while count < max {
            match jobs.try_recv() {
                Ok(job) => {
                    count += job.checked.len();
                    group.push(job);
                }
                Err(_) => break,
            }
        }
        let decisions: Vec<NewDecision> = group
            .iter()
            .flat_map(|j| j.checked.iter().filter_map(|c| c.as_ref().ok().cloned()))
            .collect();
        if decisions.is_empty() {
            for job in group {
                let outcomes = job
                    .checked
                    .into_iter()
                    .map(|c| c.map(|d| d.decision_id))
                    .collect();
                answer(
                    &job.request_id,
                    job.batch,
                    job.events.as_ref(),
                    job.reply,
                    outcomes,
                );
            }
            continue;
        }
        let started = Instant::now();
        // how long orders waited for the commit before theirs to finish (the group commit's
        // price; the commit itself is the histogram below)
        for job in &group {
            metrics::histogram!("tradegate_outbox_wait_seconds")
                .record(started.duration_since(job.queued_at).as_secs_f64());
        }
        let written = write_decisions(&args, &decisions).await;
        metrics::histogram!("tradegate_outbox_commit_seconds")
            .record(started.elapsed().as_secs_f64());
        metrics::histogram!("tradegate_outbox_commit_decisions").record(decisions.len() as f64);
        let mut written = match written {
            Ok(results) => results.into_iter(),
            Err(e) => {
                tracing::error!(error = %e, decisions = decisions.len(),
                    "the outbox is unavailable; refusing the orders");
                for job in group {
                    for (order, c) in job.orders.iter().zip(&job.checked) {
                        if let Ok(d) = c {
                            let _ = rejects.send(RejectRecord::now(
                                order,
                                Some(d.account.clone()),
                                OrderReject::new(RejectCode::AuditUnavailable, e.to_string()),
                            ));
                        }
                    }
                    answer_unavailable(job, &e.message);
                }
                // the statement may have reached the database before the connection failed,
                // so some of these decisions may be committed: their sessions reconcile them
                // (looked up at the broker, failed as not received; never sent)
                let accounts: std::collections::BTreeSet<&str> =
                    decisions.iter().map(|d| d.account.as_str()).collect();
                for account in accounts {
                    if let Some(session) = alpaca_session::find(account) {
                        let _ = session.cast(AlpacaSessionMessage::Reconcile);
                    }
                }
                continue;
            }
        };
        let mut singles: BTreeMap<String, Vec<RoutedOrder>> = BTreeMap::new();
        for job in group {
            let mut outcomes = Vec::with_capacity(job.checked.len());
            let mut routed = Vec::new();
            for (order, c) in job.orders.iter().zip(job.checked) {
                match c {
                    Err(r) => outcomes.push(Err(r)),
                    Ok(decision) => match written.next() {
                        Some(Ok((pk, request_payload_id))) => {
                            outcomes.push(Ok(decision.decision_id));
                            routed.push(RoutedOrder {
                                decision_pk: pk,
                                decision,
                                request_payload_id,
                            });
                        }
                        Some(Err(r)) => {
                            let _ = rejects.send(RejectRecord::now(
                                order,
                                Some(decision.account.clone()),
                                r.clone(),
                            ));
                            outcomes.push(Err(r));
                        }
                        None => outcomes.push(Err(OrderReject::new(
                            RejectCode::AuditUnavailable,
                            "the decision was not recorded",
                        ))),
                    },
                }
            }
            answer(
                &job.request_id,
                job.batch,
                job.events.as_ref(),
                job.reply,
                outcomes,
            );
            if job.batch {
                // strongest signal first; orders without a strength go last, in the order given
                routed.sort_by(|a, b| {
                    let key = |o: &RoutedOrder| o.decision.signal_strength;
                    match (key(a), key(b)) {
                        (Some(x), Some(y)) => y.cmp(&x),
                        (Some(_), None) => std::cmp::Ordering::Less,
                        (None, Some(_)) => std::cmp::Ordering::Greater,
                        (None, None) => std::cmp::Ordering::Equal,
                    }
                });
                let mut by_account: BTreeMap<String, Vec<RoutedOrder>> = BTreeMap::new();
                for order in routed {
                    by_account
                        .entry(order.decision.account.clone())
                        .or_default()
                        .push(order);
                }
                for (account, orders) in by_account {
                    route(&account, orders, true);
                }
            } else {
                for order in routed {
                    singles
                        .entry(order.decision.account.clone())
                        .or_default()
                        .push(order);
                }
            }
        }
        for (account, orders) in singles {
            route(&account, orders, false);
        }
    }
}

/// Per decision its surrogate key and request payload id, or its reject.
type Written = Vec<Result<(i64, Option<i64>), OrderReject>>;

/// Writes `decisions` in one commit; per decision its surrogate key or its reject. `Err` only
/// when the database or the connection failed (then none of them may be taken as written). A
/// group the database refused for what one of its decisions carries is written again one
/// decision at a time: only the guilty ones are refused (`invalid`), the others are written.
async fn write_decisions(
    args: &OrderRouterArgs,
    decisions: &[NewDecision],
) -> Result<Written, store::group::CommitError> {
    match write_group(args, decisions).await {
        Ok(written) => Ok(written),
        Err(e) if !e.refused => Err(e),
        Err(e) => {
            if decisions.len() > 1 {
                tracing::warn!(decisions = decisions.len(), error = %e.message,
                    "the database refused a group of decisions; writing them one by one");
            }
            let mut written = Vec::with_capacity(decisions.len());
            for decision in decisions {
                let alone = if decisions.len() == 1 {
                    Err(e.clone())
                } else {
                    write_group(args, std::slice::from_ref(decision)).await
                };
                written.push(match alone {
                    Ok(mut one) => one.remove(0),
                    Err(e) if e.refused => Err(OrderReject::new(
                        RejectCode::Invalid,
                        format!(
                            "the audit database refused this decision ({}); nothing was sent",
                            e.message
                        ),
                    )),
                    Err(e) => {
                        // it may have been committed after all: its session reconciles it
                        if let Some(session) = alpaca_session::find(&decision.account) {
                            let _ = session.cast(AlpacaSessionMessage::Reconcile);
                        }
                        Err(OrderReject::new(
                            RejectCode::AuditUnavailable,
                            format!(
                                "the decision could not be recorded ({}); nothing was sent",
                                e.message
                            ),
                        ))
                    }
                });
            }
            Ok(written)
        }
    }
}

/// One statement for `decisions`.
async fn write_group(
    args: &OrderRouterArgs,
    decisions: &[NewDecision],
) -> Result<Written, store::group::CommitError> {
    // each order's broker request goes into the decisions' own statement: on record before
    // the call, without a commit of its own on the way to the broker
    let requests: Vec<Option<ApiPayload>> = decisions
        .iter()
        .map(alpaca_session::submission_request)
        .collect();
    let client = args
        .pool
        .get()
        .await
        .map_err(|e| store::group::CommitError {
            message: e.to_string(),
            refused: false,
            stopped: false,
        })?;
    let results = store::decisions::create_decisions_with_requests(
        &*client,
        decisions,
        &requests,
        args.lineage,
    )
    .await
    .map_err(|e| store::group::CommitError {
        message: e.to_string(),
        refused: e.is_refusal(),
        stopped: false,
    })?;
    Ok(results
        .into_iter()
        .map(|r| {
            r.map(|(created, request)| (created.id, request))
                .map_err(OrderReject::from_decision)
        })
        .collect())
}

/// Hands committed decisions to the session of `account`. A session that is not running (it
/// is being restarted) leaves them pending: its recovery looks them up at the broker on start,
/// so they are never sent twice.
fn route(account: &str, orders: Vec<RoutedOrder>, sequential: bool) {
    match alpaca_session::find(account) {
        Some(session) => {
            let n = orders.len();
            if session
                .cast(AlpacaSessionMessage::Execute { orders, sequential })
                .is_err()
            {
                tracing::error!(%account, orders = n,
                    "the broker session stopped; its recovery will reconcile these decisions");
            }
        }
        None => tracing::error!(%account, orders = orders.len(),
            "no broker session running; its recovery will reconcile these decisions"),
    }
}

/// Stores refused orders in the background, in batches; a failure is logged, never blocks.
async fn reject_writer(
    pool: deadpool_postgres::Pool,
    mut rx: mpsc::UnboundedReceiver<RejectRecord>,
) {
    while let Some(first) = rx.recv().await {
        let mut batch = vec![first];
        while batch.len() < 1000 {
            match rx.try_recv() {
                Ok(r) => batch.push(r),
                Err(_) => break,
            }
        }
        for r in &batch {
            tracing::info!(strategy = %r.order.strategy, symbol = %r.order.symbol,
                code = %r.reject.code, message = %r.reject.message, "order rejected");
        }
        let mut client = match pool.get().await {
            Ok(client) => client,
            Err(e) => {
                unrecorded(batch.len(), &e.to_string());
                continue;
            }
        };
        match store::order_rejects::insert_rejects(&mut client, &batch).await {
            Ok(()) => {}
            // one record the database refuses does not cost the others theirs
            Err(e) if e.is_refusal() && batch.len() > 1 => {
                for r in &batch {
                    if let Err(e) =
                        store::order_rejects::insert_rejects(&mut client, std::slice::from_ref(r))
                            .await
                    {
                        unrecorded(1, &e.to_string());
                    }
                }
            }
            Err(e) => unrecorded(batch.len(), &e.to_string()),
        }
    }
}

fn unrecorded(n: usize, error: &str) {
    metrics::counter!("tradegate_order_rejects_unrecorded_total").increment(n as u64);
    tracing::warn!(
        error,
        rejects = n,
        "order rejects could not be stored (they were answered and logged)"
    );
}

async fn owned_order(
    pool: &deadpool_postgres::Pool,
    strategy: &str,
    decision_id: Uuid,
) -> Result<store::orders::OrderRow, OrderReject> {
    let client = pool
        .get()
        .await
        .map_err(|e| OrderReject::new(RejectCode::AuditUnavailable, e.to_string()))?;
    let order = store::orders::order_by_decision(&*client, decision_id)
        .await
        .map_err(|e| OrderReject::new(RejectCode::AuditUnavailable, e.to_string()))?;
    match order {
        Some(order) if order.strategy == strategy => Ok(order),
        _ => Err(OrderReject::new(
            RejectCode::UnknownDecision,
            format!("strategy {strategy} has no decision {decision_id}"),
        )),
    }
}

fn session_of(
    order: &store::orders::OrderRow,
) -> Result<ActorRef<AlpacaSessionMessage>, OrderReject> {
    alpaca_session::find(&order.account).ok_or_else(|| {
        OrderReject::new(
            RejectCode::SessionUnavailable,
            format!("no broker session for {}", order.account),
        )
    })
}

/// The order a replace would leave at the broker, checked like a new order: its shape, the
/// kill switch (halted refuses every amendment; reduce-only one that does not reduce), the
/// quantity and notional limits and the price collar.
async fn check_amendment(
    pool: &deadpool_postgres::Pool,
    order: &store::orders::OrderRow,
    changes: &ReplaceRequest,
    kill: KillSwitch,
    limits: &RiskLimits,
) -> Result<(), OrderReject> {
    let audit =
        |e: &dyn std::fmt::Display| OrderReject::new(RejectCode::AuditUnavailable, e.to_string());
    let client = pool.get().await.map_err(|e| audit(&e))?;
    let decided = store::orders::decision_terms(&**client, order.decision_id)
        .await
        .map_err(|e| audit(&e))?
        .ok_or_else(|| OrderReject::new(RejectCode::UnknownDecision, "the decision is gone"))?;
    if decided.notional.is_some() {
        return Err(OrderReject::new(
            RejectCode::Invalid,
            "a notional order cannot be replaced (Alpaca modifies none of its fields)",
        ));
    }
    let amended = OrderRequest {
        strategy: decided.strategy_name.clone(),
        strategy_version: decided.strategy_version.clone(),
        account: Some(decided.account.clone()),
        symbol: decided.symbol.clone(),
        side: decided.side,
        qty: changes.qty.or(decided.quantity),
        notional: None,
        order_type: decided.order_type,
        limit_price: changes.limit_price.or(decided.limit_price),
        stop_price: changes.stop_price.or(decided.stop_price),
        time_in_force: changes.time_in_force.unwrap_or(decided.time_in_force),
        signal_strength: None,
        primary_signal: None,
        primary_ingestion_run_id: None,
        rationale: None,
        reference_price: None,
    };
    risk::validate(&amended)?;
    amended
        .to_decision(&decided.account)
        .validate()
        .map_err(OrderReject::from_decision)?;
    let position = if kill == KillSwitch::ReduceOnly {
        store::orders::position(&**client, &decided.account, &decided.symbol)
            .await
            .map_err(|e| audit(&e))?
    } else {
        Decimal::ZERO
    };
    risk::kill_switch(kill, &amended, position)?;
    let reference = if risk::needs_reference(&amended, limits) {
        store::orders::last_fill_price(&**client, &decided.symbol)
            .await
            .map_err(|e| audit(&e))?
    } else {
        None
    };
    risk::limits(&amended, limits, reference)
}

async fn cancel(
    pool: &deadpool_postgres::Pool,
    strategy: &str,
    decision_id: Uuid,
) -> Result<(), OrderReject> {
    let order = owned_order(pool, strategy, decision_id).await?;
    let session = session_of(&order)?;
    ractor::call!(session, |reply| AlpacaSessionMessage::Cancel {
        order,
        reply
    })
    .map_err(|e| OrderReject::new(RejectCode::SessionUnavailable, e.to_string()))?
}

async fn replace(
    pool: &deadpool_postgres::Pool,
    strategy: &str,
    decision_id: Uuid,
    changes: ReplaceRequest,
    kill: KillSwitch,
    limits: &RiskLimits,
) -> Result<String, OrderReject> {
    let order = owned_order(pool, strategy, decision_id).await?;
    check_amendment(pool, &order, &changes, kill, limits).await?;
    let session = session_of(&order)?;
    ractor::call!(session, |reply| AlpacaSessionMessage::Replace {
        order,
        changes,
        reply
    })
    .map_err(|e| OrderReject::new(RejectCode::SessionUnavailable, e.to_string()))?
}
