//! The account's positions: `GET /v2/positions` asked, its request and answer stored in
//! `api_payloads`, the snapshot recorded (`position_snapshots`, `broker_positions`); and the
//! account's `positions.sync` jobs, claimed every `[alpaca] job_poll_secs`.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use chrono::Utc;
use reqwest::Method;
use rust_decimal::Decimal;
use serde::Serialize;
use serde_json::Value;

use super::error::SessionError;
use super::orders::{BROKER, SessionCtx, response_payload};
use crate::reconciliation;
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

/// An exact decimal sent as a string (Alpaca sends every number of a position as one).
fn exact(p: &Value, key: &str) -> Option<Decimal> {
    p.get(key)?.as_str()?.parse().ok()
}

/// The open positions of an answer; an entry that cannot be read, or whose side and sign
/// disagree, refuses the whole answer (a snapshot missing a position would read as a position
/// closed, a wrong sign as a trade).
fn positions_of(body: &Value) -> Result<Vec<NewPosition>, SessionError> {
    let items = body
        .as_array()
        .ok_or_else(|| SessionError::BadPosition(format!("not a list: {body}")))?;
    items
        .iter()
        .map(|p| {
            let bad = |why: &str| SessionError::BadPosition(format!("{why}: {p}"));
            let symbol = p["symbol"]
                .as_str()
                .filter(|s| !s.is_empty())
                .ok_or_else(|| bad("no symbol"))?;
            let qty = exact(p, "qty").ok_or_else(|| bad("no exact qty"))?;
            // Alpaca signs a short's qty; one sent unsigned with side short is signed here
            let quantity = match p["side"].as_str() {
                Some("long") if qty.is_sign_positive() && !qty.is_zero() => qty,
                Some("short") if qty.is_sign_negative() => qty,
                Some("short") if !qty.is_zero() => -qty,
                _ => return Err(bad("side and qty disagree, or qty is zero")),
            };
            let average_cost = match p.get("avg_entry_price") {
                None | Some(Value::Null) => None,
                Some(_) => Some(
                    exact(p, "avg_entry_price")
                        .filter(|c| !c.is_sign_negative())
                        .ok_or_else(|| bad("an avg_entry_price that is not an exact price"))?,
                ),
            };
            Ok(NewPosition {
                symbol: symbol.to_string(),
                quantity,
                average_cost,
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
        let _one = self.positions_lock.lock().await;
        let request_payload_id = self.store_request("GET", POSITIONS, &[], None).await?;
        let requested_at = Utc::now();
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
                requested_at,
                as_of,
                request_payload_id,
                response_payload_id,
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

/// Enqueues a `positions.sync` job for the account (an order of it reached its final state, or
/// filled more after it), in the background: idempotent, so while one is pending no other is
/// added, and while one enqueue is under way the others are skipped (it covers them: the
/// job, claimed later, asks for the positions after all of them).
pub(crate) fn positions_due(ctx: &SessionCtx) {
    // one enqueue under way at a time: a burst of orders ending (a cancel-all) costs one
    if ctx.positions_due.swap(true, Ordering::SeqCst) {
        return;
    }
    let due = Arc::clone(&ctx.positions_due);
    let (pool, account) = (ctx.pool.clone(), ctx.account.clone());
    tokio::spawn(async move {
        let enqueued = async {
            let client = pool.get().await?;
            let empty = Value::Object(serde_json::Map::new());
            Ok::<_, SessionError>(jobs::enqueue(&**client, POSITIONS_SYNC, &account, &empty).await?)
        }
        .await;
        match enqueued {
            Ok(e) if e.created => {
                tracing::debug!(%account, job = e.job.id, "positions.sync enqueued");
            }
            Ok(_) => {}
            Err(e) => tracing::warn!(%account, error = %e,
                "a positions.sync job could not be enqueued after an order's end"),
        }
        due.store(false, Ordering::SeqCst);
    });
}

/// Reconciles the account's windows once the one the new snapshot closes has settled (its
/// fills have had time to arrive on the stream), in the background.
fn reconcile_later(ctx: &Arc<SessionCtx>, trigger: &'static str) {
    let ctx = Arc::clone(ctx);
    tokio::spawn(async move {
        tokio::time::sleep(ctx.reconciliation.settle() + Duration::from_millis(50)).await;
        if ctx.streaming
            && ctx.caught_up_generation.load(Ordering::SeqCst)
                != ctx.catch_up_generation.load(Ordering::SeqCst)
        {
            // the stream is down or catching up: the window waits for the reconcile that
            // follows the catch-up (what it recovers may be the window's fills)
            tracing::debug!(account = %ctx.account, trigger, "reconciliation waits for the catch-up");
            return;
        }
        reconciliation::reconcile_logged(
            &ctx.pool,
            BROKER,
            &ctx.account,
            &ctx.reconciliation,
            trigger,
        )
        .await;
    });
}

/// Records a snapshot now and reconciles it (at the session's start, after the stream caught up
/// with what it missed, `trigger` "start" or "reconnect"), in the background; not a job, so it
/// neither waits for nor stands in for the jobs of orders ending.
pub(crate) fn sync_and_reconcile(ctx: &Arc<SessionCtx>, trigger: &'static str) {
    let ctx = Arc::clone(ctx);
    tokio::spawn(async move {
        match ctx.sync_positions().await {
            Ok(synced) => {
                tracing::info!(account = %ctx.account, trigger, snapshot = synced.snapshot_id,
                    positions = synced.positions, "positions recorded");
                reconcile_later(&ctx, trigger);
            }
            Err(e) => tracing::warn!(account = %ctx.account, trigger, error = %e,
                "could not record the positions; the next positions.sync reconciles"),
        }
    });
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
        if outcome.is_ok() {
            reconcile_later(&ctx, POSITIONS_SYNC);
            // the open orders compared too: one no decision explains is an external order
            let mut seen = std::collections::HashSet::new();
            let compared =
                match super::stream::catch_up::list_orders(&ctx, "open", None, &mut seen).await {
                    Ok(open) => super::stream::catch_up::record_external(&ctx, &open).await,
                    Err(e) => Err(e),
                };
            if let Err(e) = compared {
                tracing::warn!(account = %ctx.account, error = %e,
                    "could not compare the open orders; the next catch-up or positions.sync does");
            }
        }
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

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn d(s: &str) -> Decimal {
        s.parse().unwrap()
    }

    #[test]
    fn positions_are_read_exactly_with_their_sign() {
        let read = positions_of(&json!([
            {"symbol": "AAPL", "qty": "3", "side": "long", "avg_entry_price": "187.5"},
            {"symbol": "ZZZ", "qty": "-3", "side": "short", "avg_entry_price": "20"},
            {"symbol": "UNS", "qty": "2", "side": "short", "avg_entry_price": "5"},
            {"symbol": "NOC", "qty": "1.5", "side": "long"},
        ]))
        .unwrap();
        let got: Vec<(&str, Decimal, Option<Decimal>)> = read
            .iter()
            .map(|p| (p.symbol.as_str(), p.quantity, p.average_cost))
            .collect();
        assert_eq!(
            got,
            vec![
                ("AAPL", d("3"), Some(d("187.5"))),
                ("ZZZ", d("-3"), Some(d("20"))),
                ("UNS", d("-2"), Some(d("5"))),
                ("NOC", d("1.5"), None),
            ]
        );
        assert!(positions_of(&json!([])).unwrap().is_empty());
    }

    #[test]
    fn an_answer_with_one_unreadable_position_is_refused_whole() {
        for body in [
            json!({"positions": []}),
            json!([{"qty": "1", "side": "long"}]),
            json!([{"symbol": "", "qty": "1", "side": "long"}]),
            json!([{"symbol": "A", "qty": 1, "side": "long"}]),
            json!([{"symbol": "A", "qty": "x", "side": "long"}]),
            json!([{"symbol": "A", "qty": "-1", "side": "long"}]),
            json!([{"symbol": "A", "qty": "0", "side": "long"}]),
            json!([{"symbol": "A", "qty": "1", "side": "flat"}]),
            json!([{"symbol": "A", "qty": "1"}]),
            json!([{"symbol": "A", "qty": "1", "side": "long", "avg_entry_price": 1.5}]),
            json!([{"symbol": "A", "qty": "1", "side": "long", "avg_entry_price": "-1"}]),
            json!([
                {"symbol": "A", "qty": "1", "side": "long"},
                {"symbol": "B", "side": "long"},
            ]),
        ] {
            assert!(
                matches!(positions_of(&body), Err(SessionError::BadPosition(_))),
                "{body}"
            );
        }
    }
}
