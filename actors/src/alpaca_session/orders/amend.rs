//! Cancel, replace and cancel-all of working orders, and the logged call they share.

use reqwest::Method;
use serde_json::{Value, json};

use super::{SessionCtx, native_body, response_meta, response_payload, with_meta};
use crate::alpaca_session::mapping::error_of;
use crate::alpaca_session::rest::Exchange;
use crate::domain::{
    OrderIds, OrderReject, PlacedOrder, RawJson, RejectCode, ReplaceRequest, TradeLogEvent,
    encode_http_request,
};
use crate::store;

impl SessionCtx {
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
    pub(super) async fn call_logged(
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
}

/// The audit trail could not be read or written: the call is refused.
pub(super) fn audit(e: impl std::fmt::Display) -> OrderReject {
    OrderReject::new(crate::domain::RejectCode::AuditUnavailable, e.to_string())
}

pub(super) fn broker_reject(ex: &Exchange) -> OrderReject {
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
