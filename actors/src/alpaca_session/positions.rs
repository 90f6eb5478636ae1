//! The account's positions: `GET /v2/positions` asked, its request and answer stored in
//! `api_payloads`, the snapshot recorded (`position_snapshots`, `broker_positions`); and the
//! account's `positions.sync` jobs, claimed every `[alpaca] job_poll_secs`.

use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;
use reqwest::Method;
use serde::Serialize;
use serde_json::Value;

use super::error::SessionError;
use super::mapping::decimal;
use super::orders::{BROKER, SessionCtx, response_payload};
use crate::store::jobs::{self, POSITIONS_SYNC};
use crate::store::positions::{NewPosition, NewSnapshot, record_snapshot};
use crate::store::{self};

/// Alpaca's positions endpoint.
const POSITIONS: &str = "/v2/positions";

/// A snapshot recorded.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct PositionsSynced {
    /// Its `position_snapshots` id
    pub snapshot_id: i64,
    /// The open positions it holds
    pub positions: usize,
}

/// The open positions of an answer; an entry that cannot be read refuses the whole answer
/// (a snapshot missing a position would look like a position closed).
fn positions_of(body: &Value) -> Result<Vec<NewPosition>, SessionError> {
    let items = body
        .as_array()
        .ok_or_else(|| SessionError::BadPosition(format!("not a list: {body}")))?;
    items
        .iter()
        .map(|p| {
            let symbol = p["symbol"]
                .as_str()
                .filter(|s| !s.is_empty())
                .ok_or_else(|| SessionError::BadPosition(format!("no symbol: {p}")))?;
            let qty = decimal(p.get("qty"))
                .ok_or_else(|| SessionError::BadPosition(format!("no exact qty: {p}")))?;
            // Alpaca signs a short's qty; one sent unsigned with side short is signed here
            let quantity = if p["side"] == "short" && qty.is_sign_positive() {
                -qty
            } else {
                qty
            };
            Ok(NewPosition {
                symbol: symbol.to_string(),
                quantity,
                average_cost: decimal(p.get("avg_entry_price")),
                raw: p.clone(),
            })
        })
        .collect()
}

impl SessionCtx {
    /// Asks the broker what the account holds and records the snapshot: the request stored
    /// before the call, the answer after it (whatever it was), the positions only when every
    /// one of them could be read.
    pub(crate) async fn sync_positions(&self) -> Result<PositionsSynced, SessionError> {
        let request_payload_id = self.store_request("GET", POSITIONS, &[], None).await?;
        let answer = self.rest.call(Method::GET, POSITIONS, &[], None).await;
        let as_of = Utc::now();
        let response = response_payload(POSITIONS, &answer);
        let client = self.pool.get().await?;
        let response_payload_id = store::payloads::insert_payload(&**client, &response).await?;
        let exchange = answer?;
        if !exchange.ok() {
            return Err(SessionError::Listing {
                status: exchange.status,
                body: exchange.raw,
            });
        }
        let positions = positions_of(&exchange.body)?;
        let snapshot_id = record_snapshot(
            &**client,
            &NewSnapshot {
                broker: BROKER,
                account: &self.account,
                as_of,
                request_payload_id: Some(request_payload_id),
                response_payload_id: Some(response_payload_id),
                positions: &positions,
            },
        )
        .await?;
        metrics::counter!("tradegate_position_snapshots_total", "broker" => BROKER).increment(1);
        Ok(PositionsSynced {
            snapshot_id,
            positions: positions.len(),
        })
    }
}

/// Claims and runs the account's `positions.sync` jobs, one at a time, every `poll`.
pub(crate) async fn job_runner(ctx: Arc<SessionCtx>, poll: Duration) {
    // a job left running by a stop or crash is failed, not left running forever
    if let Ok(client) = ctx.pool.get().await {
        match jobs::fail_interrupted(&**client, POSITIONS_SYNC, &ctx.account).await {
            Ok(0) => {}
            Ok(n) => tracing::warn!(account = %ctx.account, jobs = n,
                "positions.sync jobs interrupted by a stop were failed"),
            Err(e) => tracing::warn!(account = %ctx.account, error = %e,
                "could not fail interrupted positions.sync jobs"),
        }
    }
    let mut tick = tokio::time::interval(poll);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let claimed = match ctx.pool.get().await {
            Ok(client) => jobs::claim(&**client, POSITIONS_SYNC, &ctx.account).await,
            Err(e) => {
                tracing::debug!(account = %ctx.account, error = %e, "no connection to look for jobs");
                continue;
            }
        };
        let job = match claimed {
            Ok(Some(job)) => job,
            Ok(None) => continue,
            Err(e) => {
                tracing::warn!(account = %ctx.account, error = %e, "could not claim a positions.sync job");
                continue;
            }
        };
        // the job takes no overrides: one it cannot honour fails, naming what it got
        let outcome = match job.payload.as_object() {
            Some(map) if map.is_empty() => ctx.sync_positions().await.map(|_| ()),
            _ => Err(SessionError::BadJob(job.payload.to_string())),
        };
        let error = outcome.as_ref().err().map(ToString::to_string);
        tracing::info!(account = %ctx.account, job = job.id, error = error.as_deref(),
            "positions.sync job finished");
        if let Ok(client) = ctx.pool.get().await
            && let Err(e) = jobs::finish(&**client, job.id, error.as_deref()).await
        {
            tracing::warn!(account = %ctx.account, job = job.id, error = %e, "could not finish a job");
        }
    }
}
