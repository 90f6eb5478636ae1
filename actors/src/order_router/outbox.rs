//! The decision outbox: checked orders are written in group commits (every job waiting shares
//! one statement), each strategy is answered once its decisions committed, and only then are
//! the decisions routed to the sessions of their accounts.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Instant;

use tokio::sync::{mpsc, oneshot};

use super::actor::OrderRouterArgs;
use crate::alpaca_session::{self, AlpacaSessionMessage};
use crate::domain::{
    ApiPayload, NewDecision, OrderOutcome, OrderReject, OrderRequest, PreparedRequest, RejectCode,
    RoutedOrder, StrategyEvent,
};
use crate::store::{self, order_rejects::RejectRecord};

/// One Submit's orders as checked, on their way to the outbox.
#[derive(Debug)]
pub(super) struct CommitJob {
    /// The strategy's request id
    pub request_id: String,
    /// Whether the orders came as a batch (answered by index, sent in signal order)
    pub batch: bool,
    /// Per order its decision, or why the checks refused it
    pub checked: Vec<Result<NewDecision, OrderReject>>,
    /// The orders as sent
    pub orders: Vec<OrderRequest>,
    /// The strategy's connection, for acks and rejects
    pub events: Option<mpsc::UnboundedSender<StrategyEvent>>,
    /// An in-process caller's reply
    pub reply: Option<oneshot::Sender<Vec<OrderOutcome>>>,
    /// When the checks were done and the job was handed to the outbox writer
    pub queued_at: Instant,
}

pub(super) fn answer_unavailable(job: CommitJob, why: &str) {
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
pub(super) async fn committer(
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
                        Some(Ok(committed)) => {
                            outcomes.push(Ok(decision.decision_id));
                            routed.push(RoutedOrder {
                                decision_pk: committed.decision_pk,
                                decision,
                                request_payload_id: committed.request_payload_id,
                                body: committed.body,
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
                // strongest signal first; orders without a strength go last, in the order
                // given (a stable sort, and None orders below every Some)
                routed.sort_by_key(|o| std::cmp::Reverse(o.decision.signal_strength));
                for (account, orders) in by_account(BTreeMap::new(), routed) {
                    route(&account, orders, true);
                }
            } else {
                singles = by_account(singles, routed);
            }
        }
        for (account, orders) in singles {
            route(&account, orders, false);
        }
    }
}

/// `orders` added to `into`, by account, each account's in the order given.
fn by_account(
    mut into: BTreeMap<String, Vec<RoutedOrder>>,
    orders: Vec<RoutedOrder>,
) -> BTreeMap<String, Vec<RoutedOrder>> {
    for order in orders {
        into.entry(order.decision.account.clone())
            .or_default()
            .push(order);
    }
    into
}

/// A decision as written: its surrogate key, and its request when that was stored with it.
struct Committed {
    decision_pk: i64,
    request_payload_id: Option<i64>,
    body: Option<Arc<str>>,
}

/// Per decision what was written, or its reject.
type Written = Vec<Result<Committed, OrderReject>>;

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
    let (requests, bodies): (Vec<Option<ApiPayload>>, Vec<Option<Arc<str>>>) = decisions
        .iter()
        .map(|d| match (args.prepare)(d) {
            Some(PreparedRequest { payload, body }) => (Some(payload), Some(body)),
            None => (None, None),
        })
        .unzip();
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
        .zip(bodies)
        .map(|(r, body)| {
            r.map(|(created, request)| Committed {
                decision_pk: created.id,
                // a body is sent as is only when its request is on record
                body: request.and(body),
                request_payload_id: request,
            })
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
pub(super) async fn reject_writer(
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
