//! Broker positions over the real protocols: a `positions.sync` job asks the simulated Alpaca
//! venue (`GET /v2/positions`) and records the snapshot, its request and answer; a position
//! changed at the venue without a fill shows in the next snapshot; a job the session cannot
//! honour, or a broker error, fails clearly and records no snapshot (answers it cannot read are
//! refused by the unit tests of `alpaca_session::positions`); finished orders enqueue one job.

mod common;

use std::time::Duration;

use common::orders::{decision_outcome, gateway_at, start_venue};
use rust_decimal::Decimal;
use serde_json::json;
use tradegate::sim::alpaca::{Faults, SimConfig};
use tradegate_actors::store::jobs::{self, POSITIONS_SYNC};
use tradegate_actors::store::positions::latest_positions;
use uuid::Uuid;

const WAIT: Duration = Duration::from_secs(20);

fn dec(s: &str) -> Decimal {
    s.parse().unwrap()
}

/// Enqueues a `positions.sync` job for the venue's account (or finds the one pending) and waits
/// for its end: its status and error.
async fn run_job(
    client: &tokio_postgres::Client,
    payload: serde_json::Value,
) -> (String, Option<String>) {
    let enqueued = jobs::enqueue(client, POSITIONS_SYNC, "paper", &payload)
        .await
        .unwrap();
    let job = common::wait_until(WAIT, || async {
        let job = jobs::get(client, enqueued.job.id).await.unwrap()?;
        (job.status == "completed" || job.status == "failed").then_some(job)
    })
    .await
    .expect("the job finishes");
    let error: Option<String> = client
        .query_one("SELECT error FROM jobs WHERE id = $1", &[&job.id])
        .await
        .unwrap()
        .get(0);
    (job.status, error)
}

/// The `positions.sync` jobs by status.
async fn jobs_by_status(client: &tokio_postgres::Client) -> Vec<(String, i64)> {
    client
        .query(
            "SELECT status, count(*) FROM jobs WHERE job_type = 'positions.sync' \
             GROUP BY status ORDER BY status",
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect()
}

async fn snapshots(client: &tokio_postgres::Client) -> i64 {
    client
        .query_one("SELECT count(*) FROM position_snapshots", &[])
        .await
        .unwrap()
        .get(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_positions_sync_records_what_the_broker_holds() {
    let mut gw = gateway_at("positions", start_venue(SimConfig::default()).await, |c| {
        c.alpaca.job_poll_secs = 1;
    })
    .await;
    // flat: a snapshot with no positions is on record too
    assert_eq!(
        run_job(&gw.client, json!({})).await,
        ("completed".into(), None)
    );
    let (flat, positions) = latest_positions(&gw.client, "alpaca", "paper")
        .await
        .unwrap()
        .expect("a snapshot");
    assert!(positions.is_empty(), "{positions:?}");

    // a fill makes a position
    gw.alpha
        .send(
            json!({"type": "submit_order", "request_id": "buy", "strategy": "alpha",
            "symbol": "AAPL", "side": "buy", "qty": "3", "order_type": "market",
            "time_in_force": "day"}),
        )
        .await;
    let answer = gw.alpha.answer("buy").await;
    assert_eq!(answer["type"], "ack", "{answer}");
    let decision = Uuid::parse_str(answer["decision_id"].as_str().unwrap()).unwrap();
    let filled = common::wait_until(WAIT, || async {
        let (_, status, ..) = decision_outcome(&gw.client, decision).await?;
        (status == "filled").then_some(())
    })
    .await;
    assert!(filled.is_some(), "the order did not fill");
    // and a trade made elsewhere changes another without a fill
    gw.venue.set_position("ZZZ", dec("-3"), dec("20"));
    assert_eq!(
        run_job(&gw.client, json!({})).await,
        ("completed".into(), None)
    );
    let (id, positions) = latest_positions(&gw.client, "alpaca", "paper")
        .await
        .unwrap()
        .unwrap();
    assert!(id > flat);
    let held: Vec<(String, Decimal, Option<Decimal>)> = positions
        .iter()
        .map(|p| (p.symbol.clone(), p.quantity, p.average_cost))
        .collect();
    assert_eq!(
        held,
        vec![
            ("AAPL".into(), dec("3"), Some(dec("100"))),
            ("ZZZ".into(), dec("-3"), Some(dec("20"))),
        ]
    );
    // the ask is on record: its request before, its answer after, both linked
    let (request, response, count): (Option<i64>, Option<i64>, i32) = {
        let row = gw
            .client
            .query_one(
                "SELECT request_payload_id, response_payload_id, positions_count \
                 FROM position_snapshots WHERE id = $1",
                &[&id],
            )
            .await
            .unwrap();
        (row.get(0), row.get(1), row.get(2))
    };
    assert_eq!(count, 2);
    let kinds: Vec<String> = gw
        .client
        .query(
            "SELECT type || ' ' || (payload->>'endpoint') FROM api_payloads \
             WHERE id = ANY($1) ORDER BY id",
            &[&vec![request.unwrap(), response.unwrap()]],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert_eq!(
        kinds,
        vec!["ApiRequest /v2/positions", "ApiResponse /v2/positions"]
    );

    // no job left waiting (the fill's own one, if it came after ours, runs too)
    let settled = common::wait_until(WAIT, || async {
        let by = jobs_by_status(&gw.client).await;
        (!by.iter().any(|(s, _)| s == "pending" || s == "running")).then_some(())
    })
    .await;
    assert!(settled.is_some(), "a positions.sync job was left waiting");
    // a job with a payload it does not take fails, naming it, and records nothing
    let before = snapshots(&gw.client).await;
    let (status, error) = run_job(&gw.client, json!({"lookback_days": 1})).await;
    assert_eq!(status, "failed");
    assert!(error.unwrap().contains("lookback_days"));
    // the broker failing: the job fails with its answer, the answer is stored, no snapshot
    gw.venue.set_faults(Faults {
        fail_next: 1,
        ..Faults::default()
    });
    let (status, error) = run_job(&gw.client, json!({})).await;
    assert_eq!(status, "failed");
    assert!(error.unwrap().contains("500"));
    assert_eq!(snapshots(&gw.client).await, before);
    gw.running.stop().await.unwrap();
}

// An order that reaches its final state asks for the account's positions: one job, however
// many orders end while it waits.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn finished_orders_enqueue_one_positions_sync() {
    let mut gw = gateway_at(
        "positions-enqueue",
        start_venue(SimConfig::default()).await,
        // the session looks for jobs once, at its start, and then not for an hour
        |c| c.alpaca.job_poll_secs = 3600,
    )
    .await;
    assert!(jobs_by_status(&gw.client).await.is_empty());
    let mut decisions = Vec::new();
    for (id, qty) in [("one", "1"), ("two", "2")] {
        gw.alpha
            .send(
                json!({"type": "submit_order", "request_id": id, "strategy": "alpha",
                "symbol": "AAPL", "side": "buy", "qty": qty, "order_type": "market",
                "time_in_force": "day"}),
            )
            .await;
        let answer = gw.alpha.answer(id).await;
        assert_eq!(answer["type"], "ack", "{answer}");
        decisions.push(Uuid::parse_str(answer["decision_id"].as_str().unwrap()).unwrap());
    }
    for d in &decisions {
        let filled = common::wait_until(WAIT, || async {
            let (_, status, ..) = decision_outcome(&gw.client, *d).await?;
            (status == "filled").then_some(())
        })
        .await;
        assert!(filled.is_some(), "{d} did not fill");
    }
    let enqueued = common::wait_until(WAIT, || async {
        let by = jobs_by_status(&gw.client).await;
        (!by.is_empty()).then_some(by)
    })
    .await
    .expect("a positions.sync job after the orders ended");
    // a moment for a second enqueue, were there one
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(enqueued, vec![("pending".to_string(), 1)]);
    assert_eq!(jobs_by_status(&gw.client).await, enqueued);
    gw.running.stop().await.unwrap();
}
