//! Cancels and replaces: the order must be the strategy's own, a replace is checked as a new
//! order would be, and the session of its account does the rest.

use ractor::ActorRef;
use rust_decimal::Decimal;
use uuid::Uuid;

use super::config::RiskLimits;
use super::error::RouterError;
use super::risk::{self};
use crate::alpaca_session::{self, AlpacaSessionMessage};
use crate::domain::{
    KillSwitch, OrderReject, OrderRequest, PlacedOrder, RejectCode, ReplaceRequest,
};
use crate::store::{self};

async fn owned_order(
    pool: &deadpool_postgres::Pool,
    strategy: &str,
    decision_id: Uuid,
) -> Result<PlacedOrder, OrderReject> {
    let client = pool.get().await.map_err(RouterError::from)?;
    let order = store::orders::order_by_decision(&*client, decision_id)
        .await
        .map_err(RouterError::from)?;
    match order {
        Some(order) if order.strategy == strategy => Ok(order),
        _ => Err(OrderReject::new(
            RejectCode::UnknownDecision,
            format!("strategy {strategy} has no decision {decision_id}"),
        )),
    }
}

fn session_of(order: &PlacedOrder) -> Result<ActorRef<AlpacaSessionMessage>, OrderReject> {
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
    order: &PlacedOrder,
    changes: &ReplaceRequest,
    kill: KillSwitch,
    limits: &RiskLimits,
) -> Result<(), OrderReject> {
    let client = pool.get().await.map_err(RouterError::from)?;
    let decided = store::orders::decision_terms(&**client, order.decision_id)
        .await
        .map_err(RouterError::from)?
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
        // the order being replaced leaves the broker: what it may still take off is not counted
        store::orders::position(
            &**client,
            &decided.account,
            &decided.symbol,
            Some(order.decision_id),
        )
        .await
        .map_err(RouterError::from)?
    } else {
        Decimal::ZERO
    };
    risk::kill_switch(kill, &amended, position)?;
    let reference = if risk::needs_reference(&amended, limits) {
        store::orders::last_fill_price(&**client, &decided.symbol)
            .await
            .map_err(RouterError::from)?
    } else {
        None
    };
    risk::limits(&amended, limits, reference)
}

pub(super) async fn cancel(
    pool: &deadpool_postgres::Pool,
    strategy: &str,
    decision_id: Uuid,
) -> Result<(), OrderReject> {
    let order = owned_order(pool, strategy, decision_id).await?;
    let session = session_of(&order)?;
    let account = order.account.clone();
    ractor::call!(session, |reply| AlpacaSessionMessage::Cancel {
        order,
        reply
    })
    .map_err(|e| RouterError::session(&account, e))?
}

pub(super) async fn replace(
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
    let account = order.account.clone();
    ractor::call!(session, |reply| AlpacaSessionMessage::Replace {
        order,
        changes,
        reply
    })
    .map_err(|e| RouterError::session(&account, e))?
}
