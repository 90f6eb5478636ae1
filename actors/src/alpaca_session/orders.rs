//! One account's order calls: submit (request payload stored first, one execution row after),
//! cancel, replace, cancel-all, and the look-up that reconciles decisions after a crash.

use std::collections::HashSet;
use std::sync::{Arc, Mutex};

use chrono::Utc;
use reqwest::Method;
use rust_decimal::Decimal;
use serde_json::{Value, json};
use uuid::Uuid;

use super::error::SessionError;
use super::mapping::{self, decimal, error_of, execution_status};
use super::rest::{AlpacaRest, CallError, Exchange};
use crate::domain::{
    ApiPayload, ApiPayloadKind, ExecutionFields, NewDecision, OrderIds, OrderReject, PlacedOrder,
    PreparedRequest, RawJson, RejectCode, ReplaceRequest, RoutedOrder, StrategyEvent,
    TradeLogEvent, encode_http_request,
};
use crate::store;
use crate::store::group::{BatchCommit, GroupCommit};
use crate::store::order_events::EventApplied;
use crate::store::orders::{DecisionOutcome, NOT_RECEIVED_BY_BROKER, Submission};
use crate::strategy_hub::StrategyHub;
use crate::trade_log_writer::TradeLog;

/// The broker name stored with executions and payloads.
pub(crate) const BROKER: &str = "alpaca";

/// What one session's tasks share.
#[derive(Debug)]
pub(crate) struct SessionCtx {
    /// The account
    pub(crate) account: String,
    /// REST calls
    pub(crate) rest: AlpacaRest,
    /// The stream authenticates with these
    pub(crate) credentials: super::config::Credentials,
    /// The audit database
    pub(crate) pool: deadpool_postgres::Pool,
    /// The trade log
    pub(crate) trade_log: Option<TradeLog>,
    /// The strategies' connections
    pub(crate) hub: StrategyHub,
    /// Decisions being submitted right now (recovery leaves them alone)
    pub(crate) in_flight: Mutex<HashSet<Uuid>>,
    /// Woken whenever a submission leaves `in_flight` (the stream waits on it for the
    /// execution row of an order it hears about early)
    pub(crate) submitted: tokio::sync::Notify,
    /// Submission outcomes, written in group commits
    pub(crate) submissions: BatchCommit<Submission, Option<i64>>,
    /// Stream events, written in group commits
    pub(crate) events: GroupCommit<Option<EventApplied>>,
    /// Asks for another recovery pass (a permit is kept when none is waiting, so a request
    /// during a pass makes exactly one more)
    pub(crate) reconcile: tokio::sync::Notify,
    /// Set when the session stops: stream events still unwritten become dead letters instead
    /// of waiting for the database
    pub(crate) closing: std::sync::atomic::AtomicBool,
    /// The stream's connects so far: a catch-up gives way to a newer connect's
    pub(crate) catch_up_generation: std::sync::atomic::AtomicU64,
}

/// Alpaca's order endpoint.
const ORDERS: &str = "/v2/orders";

/// The stored form of a request: endpoint, method, query parameters, body.
fn request_payload(
    method: &str,
    path: &str,
    query: &[(String, String)],
    body: Option<&Value>,
) -> Result<ApiPayload, SessionError> {
    let mut payload = json!({ "endpoint": path, "method": method });
    if !query.is_empty() {
        payload["params"] = Value::Object(
            query
                .iter()
                .map(|(k, v)| (k.clone(), Value::String(v.clone())))
                .collect(),
        );
    }
    if let Some(body) = body {
        payload["body"] = body.clone();
    }
    Ok(ApiPayload::request(BROKER, payload)?)
}

/// The request a decision is submitted as (`POST /v2/orders` with its order body): the
/// router stores it with the decision, and the submission sends its body as is.
pub fn prepare_submission(decision: &NewDecision) -> Option<PreparedRequest> {
    let body = mapping::order_body(decision);
    let text = body.to_string();
    let payload = request_payload("POST", ORDERS, &[], Some(&body)).ok()?;
    Some(PreparedRequest {
        payload,
        body: text.into(),
    })
}

/// On drop, takes out of `in_flight` the submissions of one `execute` still there (only a
/// submission that never finished is: each one that ends takes itself out), and has them
/// looked up.
struct Settled<'a> {
    ctx: &'a SessionCtx,
    ids: Vec<Uuid>,
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
    fn log(&self, events: impl IntoIterator<Item = TradeLogEvent>) {
        if let Some(log) = &self.trade_log {
            log.log_all(events.into_iter().map(|e| e.with_source(BROKER)));
        }
    }

    fn ids(&self, client_order_id: &str, symbol: &str, broker_order_id: Option<&str>) -> OrderIds {
        OrderIds {
            cl_ord_id: Some(client_order_id.to_string()),
            native_ord_id: broker_order_id.map(str::to_string),
            account_id: Some(self.account.clone()),
            symbol: Some(symbol.to_string()),
            ..OrderIds::default()
        }
    }

    /// Stores the request payload; its id.
    async fn store_request(
        &self,
        method: &str,
        path: &str,
        query: &[(String, String)],
        body: Option<&Value>,
    ) -> Result<i64, SessionError> {
        let payload = request_payload(method, path, query, body)?;
        let client = self.pool.get().await?;
        Ok(store::payloads::insert_payload(&**client, &payload).await?)
    }

    /// The request payload ids of `orders`' submissions: stored with the decision as a rule;
    /// the others are stored now, in one statement.
    async fn store_order_requests(&self, orders: &[RoutedOrder]) -> Result<Vec<i64>, SessionError> {
        let missing = orders
            .iter()
            .filter(|o| o.request_payload_id.is_none())
            .map(|o| request_payload("POST", ORDERS, &[], Some(&mapping::order_body(&o.decision))))
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

    /// Stores a submission's outcome in the session's next group commit (one statement for
    /// the whole group).
    async fn record_submission(&self, submission: Submission) -> Result<i64, SessionError> {
        self.submissions
            .write(submission)
            .await?
            .ok_or(SessionError::Missing("the execution row was not written"))
    }

    /// Stores a response payload (used where no execution row is written with it).
    async fn store_response(&self, payload: &ApiPayload) {
        let stored = async {
            let client = self.pool.get().await?;
            Ok::<_, SessionError>(store::payloads::insert_payload(&**client, payload).await?)
        }
        .await;
        if let Err(e) = stored {
            tracing::error!(account = %self.account, error = %e, "a response payload could not be stored");
        }
    }

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
    async fn submit(&self, order: &RoutedOrder, request_payload_id: i64) {
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

    /// An order that was not sent, or whose outcome could not be stored: the decision stays
    /// pending and is reconciled by looking it up at the broker (now, not at the next start),
    /// never resent.
    fn not_completed(&self, order: &RoutedOrder, error: impl std::fmt::Display) {
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
    async fn submit_inner(
        &self,
        order: &RoutedOrder,
        request_payload_id: i64,
    ) -> Result<bool, SessionError> {
        let d = &order.decision;
        let cl = d.decision_id.to_string();
        // the body stored with the decision, as stored; built here only when it was not
        let text = order
            .body
            .clone()
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

    /// Cancels `order` at the broker (the strategy asked: its cancel ends the decision as
    /// cancelled once the broker confirms).
    pub(crate) async fn cancel(&self, order: &PlacedOrder) -> Result<(), OrderReject> {
        let (Some(execution_pk), Some(broker_id)) = (order.execution_pk, &order.broker_order_id)
        else {
            return Err(OrderReject::new(
                RejectCode::NotWorking,
                format!("decision {} has no order at the broker", order.decision_id),
            ));
        };
        {
            let client = self.pool.get().await.map_err(|e| {
                OrderReject::new(crate::domain::RejectCode::AuditUnavailable, e.to_string())
            })?;
            store::orders::mark_cancel_requested(&**client, execution_pk)
                .await
                .map_err(audit)?;
        }
        let path = format!("/v2/orders/{broker_id}");
        let ids = self.ids(
            &order.decision_id.to_string(),
            &order.symbol,
            Some(broker_id),
        );
        let ex = self
            .call_logged(
                Method::DELETE,
                &path,
                None,
                |body| TradeLogEvent::request_order_cancel(&ids, body),
                &ids,
            )
            .await?;
        if ex.ok() {
            Ok(())
        } else {
            Err(broker_reject(&ex))
        }
    }

    /// Replaces `order` (`PATCH /v2/orders/{id}`); the new order's id, which the execution
    /// row takes.
    pub(crate) async fn replace(
        &self,
        order: &PlacedOrder,
        changes: &ReplaceRequest,
    ) -> Result<String, OrderReject> {
        let (Some(execution_pk), Some(broker_id)) = (order.execution_pk, &order.broker_order_id)
        else {
            return Err(OrderReject::new(
                RejectCode::NotWorking,
                format!("decision {} has no order at the broker", order.decision_id),
            ));
        };
        if changes == &ReplaceRequest::default() {
            return Err(OrderReject::new(
                RejectCode::Invalid,
                "replace_order changes nothing",
            ));
        }
        let mut body = json!({
            "client_order_id": format!("{}:r{:08x}", order.decision_id, rand::random::<u32>()),
        });
        if let Some(q) = changes.qty {
            body["qty"] = Value::String(q.normalize().to_string());
        }
        if let Some(p) = changes.limit_price {
            body["limit_price"] = Value::String(p.normalize().to_string());
        }
        if let Some(p) = changes.stop_price {
            body["stop_price"] = Value::String(p.normalize().to_string());
        }
        if let Some(t) = changes.time_in_force {
            body["time_in_force"] = Value::String(t.as_str().into());
        }
        let path = format!("/v2/orders/{broker_id}");
        let ids = self.ids(
            &order.decision_id.to_string(),
            &order.symbol,
            Some(broker_id),
        );
        let (px, qty) = (changes.limit_price.or(changes.stop_price), changes.qty);
        let ex = self
            .call_logged(
                Method::PATCH,
                &path,
                Some(&body),
                |raw| TradeLogEvent::request_order_amend(&ids, px, qty, raw),
                &ids,
            )
            .await?;
        if !ex.ok() {
            return Err(broker_reject(&ex));
        }
        let Some(new_id) = ex
            .body
            .get("id")
            .and_then(Value::as_str)
            .filter(|id| !id.is_empty())
        else {
            // the order was replaced, but by which order is not known: the execution keeps the
            // old id (its events still find it by client order id)
            return Err(OrderReject::broker(
                "no_order_id",
                format!(
                    "the broker accepted the replace without an order id: {}",
                    ex.body
                ),
            ));
        };
        let client = self.pool.get().await.map_err(audit)?;
        store::orders::set_broker_order_id(&**client, execution_pk, new_id)
            .await
            .map_err(audit)?;
        Ok(new_id.to_string())
    }

    /// Cancels every working order of `strategy` in this account, one by one (Alpaca's own
    /// cancel-all would also cancel other strategies' orders); how many cancels succeeded.
    pub(crate) async fn cancel_all(&self, strategy: &str) -> Result<usize, OrderReject> {
        let orders = {
            let client = self.pool.get().await.map_err(|e| {
                OrderReject::new(crate::domain::RejectCode::AuditUnavailable, e.to_string())
            })?;
            store::orders::open_orders(&**client, &self.account, strategy)
                .await
                .map_err(audit)?
        };
        let mut sent = 0;
        for order in &orders {
            match self.cancel(order).await {
                Ok(()) => sent += 1,
                Err(r) => tracing::warn!(account = %self.account, decision = %order.decision_id,
                    code = %r.code, message = %r.message, "cancel of cancel_all failed"),
            }
        }
        Ok(sent)
    }

    /// A call with both payloads stored and both trade-log events written.
    async fn call_logged(
        &self,
        method: Method,
        path: &str,
        body: Option<&Value>,
        request_event: impl FnOnce(RawJson) -> TradeLogEvent,
        ids: &OrderIds,
    ) -> Result<Exchange, OrderReject> {
        let m = method.as_str().to_string();
        self.store_request(&m, path, &[], body)
            .await
            .map_err(audit)?;
        let text = body.map(Value::to_string);
        self.log([request_event(encode_http_request(
            &m,
            path,
            &[],
            &[],
            text.as_deref(),
        ))]);
        let answer = self.rest.call(method, path, &[], body).await;
        let payload = response_payload(path, &answer);
        self.store_response(&payload).await;
        let (native, meta) = (native_body(&answer), response_meta(path, &answer));
        let events = match &answer {
            Ok(ex) => {
                let (code, message) = error_of(&ex.body);
                let (code, message) = if ex.ok() {
                    (None, None)
                } else {
                    (code, message)
                };
                TradeLogEvent::api_response(
                    ids,
                    i16::try_from(ex.status).ok(),
                    code,
                    message,
                    None,
                    native,
                )
            }
            Err(e) => TradeLogEvent::api_response(
                ids,
                None,
                Some(e.code().into()),
                Some(e.to_string()),
                None,
                native,
            ),
        };
        self.log(with_meta(events, meta));
        answer.map_err(|e| OrderReject::broker(e.code(), e.to_string()))
    }

    /// Looks `decision` up at the broker by client order id (never resends it): `Some` with
    /// the order when the broker has it, `None` when it answers 404.
    pub(crate) async fn look_up(
        &self,
        decision: &NewDecision,
    ) -> Result<Option<(Exchange, i64)>, SessionError> {
        let path = "/v2/orders:by_client_order_id";
        let query = vec![(
            "client_order_id".to_string(),
            decision.decision_id.to_string(),
        )];
        let request_id = self.store_request("GET", path, &query, None).await?;
        let answer = self.rest.call(Method::GET, path, &query, None).await;
        // the look-up's answer is on the trail too: what the broker said it held, and when
        let ids = self.ids(
            &decision.decision_id.to_string(),
            &decision.symbol,
            answer
                .as_ref()
                .ok()
                .and_then(|ex| ex.body.get("id"))
                .and_then(Value::as_str),
        );
        let status = answer
            .as_ref()
            .ok()
            .and_then(|ex| i16::try_from(ex.status).ok());
        let error = answer
            .as_ref()
            .err()
            .map(|e| (e.code().to_string(), e.to_string()));
        self.log(with_meta(
            TradeLogEvent::api_response(
                &ids,
                status,
                error.as_ref().map(|e| e.0.clone()),
                error.map(|e| e.1),
                None,
                native_body(&answer),
            ),
            response_meta(path, &answer),
        ));
        match answer {
            Ok(ex) if ex.status == 404 => {
                self.store_response(&response_payload(path, &Ok(ex))).await;
                Ok(None)
            }
            Ok(ex) if ex.ok() => Ok(Some((ex, request_id))),
            Ok(ex) => Err(SessionError::LookUp {
                status: ex.status,
                body: ex.body.to_string(),
            }),
            Err(e) => Err(e.into()),
        }
    }

    /// Records an order found by a look-up as the decision's execution: a new execution when
    /// none was recorded (the gateway died around the send), or the resolution of the one
    /// whose answer was lost (`unknown`: its key and why the answer was lost).
    pub(crate) async fn record_found(
        &self,
        decision_pk: i64,
        decision: &NewDecision,
        request_payload_id: i64,
        found: Exchange,
        unknown: Option<&(i64, String)>,
    ) -> Result<(), SessionError> {
        let answer = Ok(found);
        let execution_id = Uuid::now_v7();
        // the broker's own time of the submission (this gateway may have died around it)
        let submitted_at = answer
            .as_ref()
            .ok()
            .and_then(|ex| ex.body.get("submitted_at"))
            .and_then(Value::as_str)
            .and_then(|t| chrono::DateTime::parse_from_rfc3339(t).ok())
            .map_or_else(Utc::now, |t| t.with_timezone(&Utc));
        let recorded = record(
            self,
            decision,
            decision_pk,
            execution_id,
            request_payload_id,
            submitted_at,
            &answer,
        );
        let (status, broker_order_id, http_status, error) = recorded.summary();
        let execution_id = match unknown {
            None => {
                self.record_submission(recorded.sub).await?;
                execution_id
            }
            Some((execution_pk, why)) => {
                let reason = format!("looked up by client order id after {why}");
                let client = self.pool.get().await?;
                let resolved = store::orders::resolve_unknown_execution(
                    &**client,
                    *execution_pk,
                    &recorded.sub,
                    &reason,
                )
                .await?;
                if !resolved {
                    // the stream told the outcome first: nothing left to record
                    return Ok(());
                }
                store::orders::execution_id_of(&**client, *execution_pk).await?
            }
        };
        self.hub.push(
            &decision.strategy_name,
            StrategyEvent::Execution {
                decision_id: decision.decision_id,
                execution_id,
                status: status.to_string(),
                broker_order_id,
                http_status,
                error,
            },
        );
        Ok(())
    }
}

/// The audit trail could not be read or written: the call is refused.
fn audit(e: impl std::fmt::Display) -> OrderReject {
    OrderReject::new(crate::domain::RejectCode::AuditUnavailable, e.to_string())
}

fn broker_reject(ex: &Exchange) -> OrderReject {
    let (code, message) = error_of(&ex.body);
    OrderReject::broker(
        code.unwrap_or_else(|| ex.status.to_string()),
        format!(
            "{} {}",
            ex.status,
            message.unwrap_or_else(|| ex.body.to_string())
        ),
    )
}

/// The body of an `api_response` trade-log row: the broker's JSON as received, or, when no
/// answer came, what happened instead.
fn native_body(answer: &Result<Exchange, CallError>) -> RawJson {
    match answer {
        Ok(ex) => ex.native(),
        Err(e) => RawJson::from_value(&json!({"error": e.code(), "message": e.to_string()})),
    }
}

/// What an exchange carried around the body: endpoint, status, duration, rate-limit headers.
fn response_meta(path: &str, answer: &Result<Exchange, CallError>) -> RawJson {
    RawJson::from_value(&match answer {
        Ok(ex) => json!({
            "endpoint": path,
            "status_code": ex.status,
            "duration_ms": u64::try_from(ex.duration.as_millis()).unwrap_or(u64::MAX),
            "rate_limit": ex.rate_limit,
        }),
        Err(e) => json!({"endpoint": path, "status_code": null, "error": e.code()}),
    })
}

/// `events` of one response, the response row carrying `meta`.
fn with_meta(mut events: Vec<TradeLogEvent>, meta: RawJson) -> Vec<TradeLogEvent> {
    if let Some(first) = events.first_mut() {
        first.response_meta = Some(meta);
    }
    events
}

/// The response payload of a call: status, body and rate-limit headers, or why there was none.
fn response_payload(path: &str, answer: &Result<Exchange, CallError>) -> ApiPayload {
    let payload = match answer {
        Ok(ex) => json!({
            "endpoint": path,
            "status_code": ex.status,
            "body": ex.body,
            "rate_limit": ex.rate_limit,
            "duration_ms": u64::try_from(ex.duration.as_millis()).unwrap_or(u64::MAX),
        }),
        Err(e) => json!({
            "endpoint": path,
            "status_code": null,
            "error": e.code(),
            "message": e.to_string(),
        }),
    };
    ApiPayload {
        kind: ApiPayloadKind::ApiResponse,
        source: BROKER.into(),
        payload,
        captured_at: Utc::now(),
    }
}

/// A submission's outcome, ready to store and log: the row it becomes and its decision.
struct Recorded<'a> {
    sub: Submission,
    decision: &'a NewDecision,
    native: RawJson,
    meta: RawJson,
}

fn record<'a>(
    ctx: &SessionCtx,
    d: &'a NewDecision,
    decision_pk: i64,
    execution_id: Uuid,
    request_payload_id: i64,
    submitted_at: chrono::DateTime<Utc>,
    answer: &Result<Exchange, CallError>,
) -> Recorded<'a> {
    let mut r = Submission {
        decision_pk,
        execution_id,
        broker: BROKER,
        request_payload_id,
        response: response_payload(ORDERS, answer),
        status: "rejected",
        broker_order_id: None,
        http_status: None,
        error_code: None,
        error_message: None,
        error_details: None,
        filled_qty: Decimal::ZERO,
        filled_avg_price: None,
        commission: None,
        submitted_at,
        filled_at: None,
        outcome: DecisionOutcome::Failed(String::new()),
    };
    match answer {
        Ok(ex) if ex.ok() => {
            let status = ex.body.get("status").and_then(Value::as_str).unwrap_or("");
            r.status = execution_status(status).unwrap_or_else(|| {
                tracing::warn!(account = %ctx.account, status, "unknown Alpaca order status; recorded as submitted");
                "submitted"
            });
            r.http_status = Some(i32::from(ex.status));
            r.broker_order_id = ex
                .body
                .get("id")
                .and_then(Value::as_str)
                .map(str::to_string);
            r.filled_qty = decimal(ex.body.get("filled_qty")).unwrap_or(Decimal::ZERO);
            if matches!(r.status, "rejected" | "submitted" | "accepted")
                && r.filled_qty > Decimal::ZERO
            {
                // filled shares are held whatever the order's last status says, and an order
                // still working with some of it filled is partly filled (a replacement of a
                // partly filled order is answered `new` with the fills it carries over)
                r.status = "partial_fill";
            }
            r.filled_avg_price = decimal(ex.body.get("filled_avg_price"));
            r.filled_at = ex
                .body
                .get("filled_at")
                .and_then(Value::as_str)
                .and_then(|t| chrono::DateTime::parse_from_rfc3339(t).ok())
                .map(|t| t.with_timezone(&Utc));
            r.outcome = if r.status == "rejected" {
                DecisionOutcome::Failed("rejected by broker".into())
            } else {
                DecisionOutcome::Executed
            };
        }
        Ok(ex) => {
            let (code, message) = error_of(&ex.body);
            let message = message.unwrap_or_else(|| ex.body.to_string());
            r.http_status = Some(i32::from(ex.status));
            r.error_code = code;
            r.outcome = if ex.status >= 500 {
                // a 5xx (the broker's or a proxy's) does not say the order was not taken
                r.status = "submitted";
                r.error_message = Some(format!(
                    "outcome unknown, looking the order up by client order id (never resent): \
                     {} {message}",
                    ex.status
                ));
                DecisionOutcome::Unknown
            } else {
                r.error_message = Some(message.clone());
                DecisionOutcome::Failed(format!("{} {message}", ex.status))
            };
            r.error_details = Some(ex.body.clone());
        }
        Err(e) => {
            r.error_code = Some(e.code().into());
            r.outcome = if e.surely_not_sent() {
                r.error_message = Some(e.to_string());
                DecisionOutcome::Failed(NOT_RECEIVED_BY_BROKER.into())
            } else {
                r.status = "submitted";
                r.error_message = Some(format!(
                    "outcome unknown, looking the order up by client order id (never resent): {e}"
                ));
                DecisionOutcome::Unknown
            };
        }
    }
    Recorded {
        sub: r,
        decision: d,
        native: native_body(answer),
        meta: response_meta(ORDERS, answer),
    }
}

impl Recorded<'_> {
    fn summary(&self) -> (&'static str, Option<String>, Option<u16>, Option<String>) {
        (
            self.sub.status,
            self.sub.broker_order_id.clone(),
            self.sub.http_status.and_then(|s| u16::try_from(s).ok()),
            self.sub.error_message.clone(),
        )
    }

    /// `api_response`, plus `api_event_execution` when the response already carries a fill.
    fn log_events(&self, ctx: &SessionCtx, cl: &str, symbol: &str) -> Vec<TradeLogEvent> {
        let s = &self.sub;
        let ids = ctx.ids(cl, symbol, s.broker_order_id.as_deref());
        let execution = (s.filled_qty > Decimal::ZERO).then(|| ExecutionFields {
            side: Some(self.decision.side),
            last_px: s.filled_avg_price,
            last_qty: Some(s.filled_qty),
            leaves_qty: self
                .decision
                .quantity
                .and_then(|q| q.checked_sub(s.filled_qty)),
            ord_qty: self.decision.quantity,
            ord_px: self.decision.limit_price,
            ..ExecutionFields::default()
        });
        with_meta(
            TradeLogEvent::api_response(
                &ids,
                s.http_status.and_then(|h| i16::try_from(h).ok()),
                s.error_code.clone(),
                s.error_message.clone(),
                execution.as_ref(),
                self.native.clone(),
            ),
            self.meta.clone(),
        )
    }
}
