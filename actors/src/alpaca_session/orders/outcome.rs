//! A submission's outcome: the execution row built from the broker's answer, and its
//! trade-log events.

use chrono::Utc;
use rust_decimal::Decimal;
use serde_json::Value;
use uuid::Uuid;

use super::{BROKER, ORDERS, SessionCtx, native_body, response_meta, response_payload, with_meta};
use crate::alpaca_session::mapping::{decimal, error_of, execution_status};
use crate::alpaca_session::rest::{CallError, Exchange};
use crate::domain::{ExecutionFields, NewDecision, RawJson, TradeLogEvent};
use crate::store::orders::{DecisionOutcome, NOT_RECEIVED_BY_BROKER, Submission};

/// A submission's outcome, ready to store and log: the row it becomes and its decision.
pub(super) struct Recorded<'a> {
    pub(super) sub: Submission,
    pub(super) decision: &'a NewDecision,
    pub(super) native: RawJson,
    pub(super) meta: RawJson,
}

pub(super) fn record<'a>(
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
    pub(super) fn summary(&self) -> (&'static str, Option<String>, Option<u16>, Option<String>) {
        (
            self.sub.status,
            self.sub.broker_order_id.clone(),
            self.sub.http_status.and_then(|s| u16::try_from(s).ok()),
            self.sub.error_message.clone(),
        )
    }

    /// `api_response`, plus `api_event_execution` when the response already carries a fill.
    pub(super) fn log_events(
        &self,
        ctx: &SessionCtx,
        cl: &str,
        symbol: &str,
    ) -> Vec<TradeLogEvent> {
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
