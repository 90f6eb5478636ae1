//! The OrderRouter: checks each order, commits its decision to the outbox (concurrent
//! submissions share commits), answers the strategy, then routes the decision to the broker
//! session of its account. Nothing is routed before its decision is committed.

use std::collections::HashSet;
use std::time::{Duration, Instant};

use ractor::{Actor, ActorProcessingErr, ActorRef};
use rust_decimal::Decimal;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use super::amend::{cancel, replace};
use super::config::OrdersConfig;
use super::error::RouterError;
use super::messages::OrderRouterMessage;
use super::outbox::{CommitJob, answer_unavailable, committer, reject_writer};
use super::risk::{self, RiskState};
use crate::alpaca_session::{self, AlpacaSessionMessage};
use crate::domain::{
    KillSwitch, LineagePolicy, NewDecision, Operator, OrderReject, OrderRequest, PrepareRequest,
    RejectCode,
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
    /// How each decision's broker request is prepared (the broker session's own builder), to
    /// be stored with the decision and sent as is
    pub prepare: PrepareRequest,
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
                                let _ = reply.send(Err(RouterError::session(&account, e).into()));
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
                let result = set_kill_switch(&state.args.pool, kill, reason.as_deref(), &by)
                    .await
                    .map_err(OrderReject::from);
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
                    .map_err(|e| (e.reject(), Some(account.clone())))?
            }
            None => None,
        };
        risk::limits(order, &limits, reference).map_err(|r| (r, Some(account.clone())))?;
        let position = if self.kill == KillSwitch::ReduceOnly {
            self.position(&account, &order.symbol)
                .await
                .map_err(|e| (e.reject(), Some(account.clone())))?
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

    async fn last_price(&self, symbol: &str) -> Result<Option<Decimal>, RouterError> {
        let client = self.args.pool.get().await?;
        Ok(store::orders::last_fill_price(&**client, symbol).await?)
    }

    async fn position(&self, account: &str, symbol: &str) -> Result<Decimal, RouterError> {
        let client = self.args.pool.get().await?;
        Ok(store::orders::position(&**client, account, symbol, None).await?)
    }
}

/// Sets the kill switch, kept in `operator_actions` under `by`.
async fn set_kill_switch(
    pool: &deadpool_postgres::Pool,
    kill: KillSwitch,
    reason: Option<&str>,
    by: &Operator,
) -> Result<(), RouterError> {
    let client = pool.get().await?;
    if store::kill_switch::set_kill_switch(&**client, kill, reason, by).await? {
        Ok(())
    } else {
        Err(RouterError::KillSwitchMissing)
    }
}
