//! Reconciliation: a decision looked up at the broker by its client order id, and the order
//! found recorded.

use chrono::Utc;
use reqwest::Method;
use serde_json::Value;
use uuid::Uuid;

use super::outcome::record;
use super::{SessionCtx, native_body, response_meta, response_payload, with_meta};
use crate::alpaca_session::error::SessionError;
use crate::alpaca_session::rest::Exchange;
use crate::domain::{NewDecision, StrategyEvent, TradeLogEvent};
use crate::store;

impl SessionCtx {
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
