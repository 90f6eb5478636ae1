//! Calling the OrderRouter: [`OrderRouterClient`] finds the current router by name on every
//! call (it survives restarts); [`StrategyHandle`] is an in-process strategy connection.

use std::time::Duration;

use ractor::ActorRef;
use tokio::sync::{mpsc, oneshot};
use uuid::Uuid;

use super::actor::NAME;
use super::messages::OrderRouterMessage;
use crate::domain::{
    KillSwitch, OrderOutcome, OrderReject, OrderRequest, RejectCode, ReplaceRequest, StrategyEvent,
};
use crate::strategy_hub::{StrategyHub, Subscription};

/// How long a call waits for the router (a commit may wait for the database's connect timeout).
const CALL_TIMEOUT: Duration = Duration::from_secs(30);

/// A handle on the OrderRouter.
#[derive(Debug, Clone, Default)]
pub struct OrderRouterClient;

fn unavailable(what: impl std::fmt::Display) -> OrderReject {
    OrderReject::new(
        RejectCode::RouterUnavailable,
        format!("the order router {what}"),
    )
}

impl OrderRouterClient {
    fn router() -> Result<ActorRef<OrderRouterMessage>, OrderReject> {
        ActorRef::where_is(NAME).ok_or_else(|| unavailable("is not running"))
    }

    /// Submits orders as `strategy`; acks and rejects also go to `events` when given, ahead of
    /// anything pushed about those orders. One outcome per order.
    pub async fn submit(
        &self,
        strategy: &str,
        request_id: &str,
        orders: Vec<OrderRequest>,
        batch: bool,
        events: Option<mpsc::UnboundedSender<StrategyEvent>>,
    ) -> Result<Vec<OrderOutcome>, OrderReject> {
        let answer = self.enqueue(strategy, request_id, orders, batch, events)?;
        Self::outcomes(answer).await
    }

    /// Hands orders to the router now (so one connection's orders keep their order) without
    /// waiting; [`OrderRouterClient::outcomes`] waits for the answer.
    pub fn enqueue(
        &self,
        strategy: &str,
        request_id: &str,
        orders: Vec<OrderRequest>,
        batch: bool,
        events: Option<mpsc::UnboundedSender<StrategyEvent>>,
    ) -> Result<oneshot::Receiver<Vec<OrderOutcome>>, OrderReject> {
        let router = Self::router()?;
        let (reply, answer) = oneshot::channel();
        router
            .cast(OrderRouterMessage::Submit {
                strategy: strategy.to_string(),
                request_id: request_id.to_string(),
                orders,
                batch,
                events,
                reply: Some(reply),
            })
            .map_err(|e| unavailable(format!("refused the message: {e}")))?;
        Ok(answer)
    }

    /// Waits for the answer of [`OrderRouterClient::enqueue`].
    pub async fn outcomes(
        answer: oneshot::Receiver<Vec<OrderOutcome>>,
    ) -> Result<Vec<OrderOutcome>, OrderReject> {
        match tokio::time::timeout(CALL_TIMEOUT, answer).await {
            Ok(Ok(outcomes)) => Ok(outcomes),
            Ok(Err(_)) => Err(unavailable("stopped before answering")),
            Err(_) => Err(OrderReject::new(
                RejectCode::AuditUnavailable,
                "the outbox did not answer in time; the order's fate is in the audit trail",
            )),
        }
    }

    /// Cancels the order of `decision_id` (a decision of `strategy`).
    pub async fn cancel(&self, strategy: &str, decision_id: Uuid) -> Result<(), OrderReject> {
        let router = Self::router()?;
        ractor::call_t!(
            router,
            |reply| OrderRouterMessage::Cancel {
                strategy: strategy.to_string(),
                decision_id,
                reply
            },
            CALL_TIMEOUT.as_millis() as u64
        )
        .map_err(unavailable)?
    }

    /// Replaces the order of `decision_id`; the broker's new order id.
    pub async fn replace(
        &self,
        strategy: &str,
        decision_id: Uuid,
        changes: ReplaceRequest,
    ) -> Result<String, OrderReject> {
        let router = Self::router()?;
        ractor::call_t!(
            router,
            |reply| OrderRouterMessage::Replace {
                strategy: strategy.to_string(),
                decision_id,
                changes,
                reply
            },
            CALL_TIMEOUT.as_millis() as u64
        )
        .map_err(unavailable)?
    }

    /// Cancels every working order of `strategy`; how many cancels were sent.
    pub async fn cancel_all(&self, strategy: &str) -> Result<usize, OrderReject> {
        let router = Self::router()?;
        ractor::call_t!(
            router,
            |reply| OrderRouterMessage::CancelAll {
                strategy: strategy.to_string(),
                reply
            },
            CALL_TIMEOUT.as_millis() as u64
        )
        .map_err(unavailable)?
    }

    /// Switches the kill switch, on record under `by`.
    pub async fn set_kill_switch(
        &self,
        state: KillSwitch,
        reason: Option<String>,
        by: &crate::domain::Operator,
    ) -> Result<(), OrderReject> {
        let router = Self::router()?;
        ractor::call_t!(
            router,
            |reply| OrderRouterMessage::SetKillSwitch {
                state,
                reason,
                by: by.clone(),
                reply
            },
            CALL_TIMEOUT.as_millis() as u64
        )
        .map_err(unavailable)?
    }

    /// The kill switch's state.
    pub async fn kill_switch(&self) -> Result<KillSwitch, OrderReject> {
        let router = Self::router()?;
        ractor::call_t!(
            router,
            |reply| OrderRouterMessage::GetKillSwitch { reply },
            CALL_TIMEOUT.as_millis() as u64
        )
        .map_err(unavailable)
    }
}

/// An in-process strategy connection, for strategies written in Rust: submit orders and read
/// what the gateway pushes (executions, order updates, fills) in order.
#[derive(Debug)]
pub struct StrategyHandle {
    strategy: String,
    router: OrderRouterClient,
    subscription: Subscription,
    next_request: u64,
}

impl StrategyHandle {
    /// Connects as `strategy` (in-process callers are trusted: no token).
    pub fn connect(hub: &StrategyHub, strategy: &str) -> Self {
        Self {
            strategy: strategy.to_string(),
            router: OrderRouterClient,
            subscription: hub.subscribe(strategy),
            next_request: 0,
        }
    }

    fn request_id(&mut self) -> String {
        self.next_request += 1;
        format!("rust-{}", self.next_request)
    }

    /// Submits one order: its decision id once committed, or why it was refused.
    pub async fn submit(&mut self, order: OrderRequest) -> OrderOutcome {
        let id = self.request_id();
        let strategy = self.strategy.clone();
        let mut outcomes = self
            .router
            .submit(&strategy, &id, vec![order], false, None)
            .await?;
        outcomes
            .pop()
            .unwrap_or_else(|| Err(unavailable("answered nothing")))
    }

    /// Submits a batch: all decisions committed before the first is sent, sent strongest
    /// signal first. One outcome per order, in the order given.
    pub async fn submit_batch(
        &mut self,
        orders: Vec<OrderRequest>,
    ) -> Result<Vec<OrderOutcome>, OrderReject> {
        let id = self.request_id();
        let strategy = self.strategy.clone();
        self.router.submit(&strategy, &id, orders, true, None).await
    }

    /// Cancels a decision's order.
    pub async fn cancel(&self, decision_id: Uuid) -> Result<(), OrderReject> {
        self.router.cancel(&self.strategy, decision_id).await
    }

    /// Replaces a decision's order.
    pub async fn replace(
        &self,
        decision_id: Uuid,
        changes: ReplaceRequest,
    ) -> Result<String, OrderReject> {
        self.router
            .replace(&self.strategy, decision_id, changes)
            .await
    }

    /// Cancels every working order of this strategy.
    pub async fn cancel_all(&self) -> Result<usize, OrderReject> {
        self.router.cancel_all(&self.strategy).await
    }

    /// The next pushed event; `None` if nothing arrives within `timeout`.
    pub async fn next_event(&mut self, timeout: Duration) -> Option<StrategyEvent> {
        tokio::time::timeout(timeout, self.subscription.events.recv())
            .await
            .ok()
            .flatten()
    }
}
