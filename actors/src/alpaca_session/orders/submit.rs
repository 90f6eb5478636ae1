//! Submission: the request payloads stored, `POST /v2/orders` sent, the outcome recorded; a
//! decision left without an outcome is handed to the look-up.

use std::sync::Arc;

use chrono::Utc;
use reqwest::Method;
use uuid::Uuid;

use super::outcome::record;
use super::{ORDERS, SessionCtx, submission_payload};
use crate::alpaca_session::error::SessionError;
use crate::alpaca_session::mapping::{self};
use crate::domain::{RoutedOrder, StrategyEvent, TradeLogEvent, encode_http_request};
use crate::store;
use crate::store::orders::DecisionOutcome;

/// On drop, takes out of `in_flight` the submissions of one `execute` still there (only a
/// submission that never finished is: each one that ends takes itself out), and has them
/// looked up.
pub(super) struct Settled<'a> {
    pub(super) ctx: &'a SessionCtx,
    pub(super) ids: Vec<Uuid>,
}

impl Drop for Settled<'_> {
    fn drop(&mut self) {
        let removed = self
            .ctx
            .in_flight
            .lock()
            .map_or(0, |mut f| self.ids.iter().filter(|id| f.remove(id)).count());
        if removed > 0 {
            tracing::error!(account = %self.ctx.account, removed,
                "submissions ended without an outcome; they are looked up");
            self.ctx.submitted.notify_waiters();
            self.ctx.reconcile.notify_one();
        }
    }
}

impl SessionCtx {
    /// The request payload ids of `orders`' submissions: stored with the decision as a rule;
    /// the others are stored now, in one statement.
    pub(super) async fn store_order_requests(
        &self,
        orders: &[RoutedOrder],
    ) -> Result<Vec<i64>, SessionError> {
        let missing = orders
            .iter()
            .filter(|o| o.request_payload_id.is_none())
            .map(|o| submission_payload(&mapping::order_body(&o.decision)))
            .collect::<Result<Vec<_>, _>>()?;
        let mut stored = if missing.is_empty() {
            Vec::new()
        } else {
            let client = self.pool.get().await?;
            store::payloads::insert_payloads(&*client, &missing).await?
        }
        .into_iter();
        orders
            .iter()
            .map(|o| {
                o.request_payload_id
                    .or_else(|| stored.next())
                    .ok_or(SessionError::Missing("a request payload id is missing"))
            })
            .collect()
    }
}

impl SessionCtx {
    /// `orders` are under way (in `in_flight`) from now: called before their task is spawned,
    /// so a stop that follows waits for them.
    pub(crate) fn begin(&self, orders: &[RoutedOrder]) {
        if let Ok(mut f) = self.in_flight.lock() {
            f.extend(orders.iter().map(|o| o.decision.decision_id));
        }
    }

    /// Submits committed decisions (see [`SessionCtx::begin`]), in the given order when
    /// `sequential` (a batch: each answered before the next is sent), else all at once. All
    /// their request payloads are stored first, in one statement; if that fails nothing is
    /// sent.
    pub(crate) async fn execute(self: &Arc<Self>, orders: Vec<RoutedOrder>, sequential: bool) {
        // a submission that never finished (a panic) must not stay under way: it would hold
        // every stop for the whole drain and keep its decision from the look-up
        let _settled = Settled {
            ctx: self,
            ids: orders.iter().map(|o| o.decision.decision_id).collect(),
        };
        let request_ids = match self.store_order_requests(&orders).await {
            Ok(ids) => ids,
            Err(e) => {
                for order in &orders {
                    self.not_completed(
                        order,
                        format!("the request could not be stored, nothing was sent: {e}"),
                    );
                }
                return;
            }
        };
        if sequential {
            for (order, request_id) in orders.into_iter().zip(request_ids) {
                if self.stopping.load(std::sync::atomic::Ordering::SeqCst) {
                    self.not_sent_at_stop(&order);
                    continue;
                }
                self.submit(&order, request_id).await;
            }
        } else {
            let mut tasks = Vec::with_capacity(orders.len());
            for (order, request_id) in orders.into_iter().zip(request_ids) {
                let ctx = Arc::clone(self);
                tasks.push(tokio::spawn(
                    async move { ctx.submit(&order, request_id).await },
                ));
            }
            for task in tasks {
                let _ = task.await;
            }
        }
    }

    /// One submission whose request payload is stored: request logged, `POST /v2/orders`,
    /// response payload + execution row + decision status in one statement, response logged,
    /// strategy told. No retry, whatever the outcome.
    pub(super) async fn submit(&self, order: &RoutedOrder, request_payload_id: i64) {
        match self.submit_inner(order, request_payload_id).await {
            Ok(unknown) => {
                if let Ok(mut f) = self.in_flight.lock() {
                    f.remove(&order.decision.decision_id);
                }
                self.submitted.notify_waiters();
                if unknown {
                    // the broker may hold the order: look it up now, never resend it
                    self.reconcile.notify_one();
                }
            }
            Err(e) => self.not_completed(order, e),
        }
    }

    /// A batch's order not sent because the session is stopping: it leaves `in_flight` (the
    /// stop does not wait for it) and its decision stays pending, to be looked up at the
    /// broker (never sent) at the next start.
    pub(super) fn not_sent_at_stop(&self, order: &RoutedOrder) {
        let decision_id = order.decision.decision_id;
        if let Ok(mut f) = self.in_flight.lock() {
            f.remove(&decision_id);
        }
        self.submitted.notify_waiters();
        tracing::warn!(account = %self.account, decision = %decision_id,
            "the session stopped before this batch order was sent; it is reconciled at the next start");
        self.hub.push(
            &order.decision.strategy_name,
            StrategyEvent::Error {
                request_id: None,
                code: crate::domain::RejectCode::SessionUnavailable
                    .as_str()
                    .into(),
                message: format!(
                    "decision {decision_id}: not sent, the broker session stopped; it is \
                     reconciled (never sent) when the session starts again"
                ),
            },
        );
    }

    /// An order that was not sent, or whose outcome could not be stored: the decision stays
    /// pending and is reconciled by looking it up at the broker (now, not at the next start),
    /// never resent.
    pub(super) fn not_completed(&self, order: &RoutedOrder, error: impl std::fmt::Display) {
        let decision_id = order.decision.decision_id;
        if let Ok(mut f) = self.in_flight.lock() {
            f.remove(&decision_id);
        }
        self.submitted.notify_waiters();
        self.reconcile.notify_one();
        tracing::error!(account = %self.account, decision = %decision_id, error = %error,
            "order not completed");
        self.hub.push(
            &order.decision.strategy_name,
            StrategyEvent::Error {
                request_id: None,
                code: crate::domain::RejectCode::AuditUnavailable.as_str().into(),
                message: format!("decision {decision_id}: {error}"),
            },
        );
    }

    /// Whether the outcome is unknown (the order must be looked up).
    pub(super) async fn submit_inner(
        &self,
        order: &RoutedOrder,
        request_payload_id: i64,
    ) -> Result<bool, SessionError> {
        let d = &order.decision;
        let cl = d.decision_id.to_string();
        // the body stored with the decision, as stored (only when it was stored: else the
        // session stored its own, built the same way)
        let text = order
            .request_payload_id
            .and(order.body.clone())
            .unwrap_or_else(|| mapping::order_body(d).to_string().into());
        // the request is logged and timed when it really leaves, after its slot
        let _slot = self.rest.submission_slot().await;
        self.log([TradeLogEvent::request_order_new(
            &self.ids(&cl, &d.symbol, None),
            Some(d.side),
            d.quantity,
            d.limit_price.or(d.stop_price),
            encode_http_request("POST", ORDERS, &[], &[], Some(&text)),
        )]);
        let submitted_at = Utc::now();
        let answer = self
            .rest
            .call_text(Method::POST, ORDERS, &[], Some(&text))
            .await;
        let execution_id = Uuid::now_v7();
        let recorded = record(
            self,
            d,
            order.decision_pk,
            execution_id,
            request_payload_id,
            submitted_at,
            &answer,
        );
        let (submission_status, broker_order_id, http_status, error) = recorded.summary();
        let unknown = recorded.sub.outcome == DecisionOutcome::Unknown;
        let events = recorded.log_events(self, &cl, &d.symbol);
        let stored = self.record_submission(recorded.sub).await;
        self.log(events);
        stored.map_err(|e| SessionError::Unstored {
            answered: submission_status.to_string(),
            source: Box::new(e),
        })?;
        metrics::counter!("tradegate_alpaca_submissions_total", "status" => submission_status.to_string())
            .increment(1);
        self.hub.push(
            &d.strategy_name,
            StrategyEvent::Execution {
                decision_id: d.decision_id,
                execution_id,
                status: submission_status.to_string(),
                broker_order_id,
                http_status,
                error,
            },
        );
        Ok(unknown)
    }
}
