//! Crash recovery: the gateway (`tradegate run`, a real process) is killed with SIGKILL after a
//! decision was committed and its order sent, before the venue answered. After a restart the
//! decision is reconciled by looking it up (the venue sees its client order id once), and a
//! decision that never reached the venue is failed with `not_received_by_broker`.

mod common;

use std::time::Duration;

use serde_json::json;
use tokio::process::Child;
use tradegate::sim::alpaca::{Faults, SimConfig};
use uuid::Uuid;

use common::orders::{StrategyWs, start_gateway_process, start_venue};
use common::{TestDb, scratch_dir, wait_until};

const WAIT: Duration = Duration::from_secs(30);

/// Starts `tradegate run` with `config` and the simulated venue's keys.
async fn start_gateway(config: &std::path::Path) -> (Child, std::net::SocketAddr) {
    start_gateway_process(config, &[]).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_killed_gateway_reconciles_its_pending_decisions_without_resending() {
    let db = TestDb::new().await;
    let client = db.client().await;
    let (venue, base_url) = start_venue(SimConfig::default()).await;
    let dir = scratch_dir("order-recovery");
    let config = dir.join("config.toml");
    std::fs::write(
        &config,
        format!(
            r#"
[database]
url = "{db}"
[api]
listen = "127.0.0.1:0"
[tradelog]
spill_dir = "{spill}"
[alpaca]
recovery_grace_secs = 1
reconnect_max_backoff_secs = 1
[[alpaca.accounts]]
name = "paper"
base_url = "{base_url}"
key_id_env = "SIM_KEY"
secret_key_env = "SIM_SECRET"
[orders.strategies.alpha]
token = "alpha-token"
"#,
            db = db.conninfo,
            spill = dir.join("spill").display()
        ),
    )
    .unwrap();

    // the venue holds its answer: the order arrives, the response does not
    venue.set_faults(Faults {
        delay_ms: 60_000,
        ..Faults::default()
    });
    let (mut gateway, addr) = start_gateway(&config).await;
    let mut alpha = StrategyWs::connect(addr, "alpha-token").await.unwrap();
    alpha
        .send(
            json!({"type": "submit_order", "request_id": "k1", "strategy": "alpha",
                     "symbol": "AAPL", "side": "buy", "qty": "3", "order_type": "market",
                     "time_in_force": "day"}),
        )
        .await;
    let ack = alpha.answer("k1").await;
    let sent = Uuid::parse_str(ack["decision_id"].as_str().unwrap()).unwrap();
    wait_until(WAIT, || async {
        (venue.submissions_of(&sent.to_string()) == 1).then_some(())
    })
    .await
    .expect("the order reached the venue");
    gateway.start_kill().unwrap(); // SIGKILL
    gateway.wait().await.unwrap();
    let status: String = client
        .query_one(
            "SELECT status FROM trade_decisions WHERE decision_id = $1",
            &[&sent],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(
        status, "pending",
        "the decision's outcome is unknown after the kill"
    );

    // a decision committed by a gateway that died before sending it
    let never_sent = Uuid::now_v7();
    client
        .execute(
            "INSERT INTO trade_decisions (decision_id, strategy_name, strategy_version, account, \
             symbol, side, quantity, order_type, time_in_force, created_at) \
             VALUES ($1, 'alpha', '1', 'paper', 'MSFT', 'buy', 2, 'market', 'day', now() - interval '1 minute')",
            &[&never_sent],
        )
        .await
        .unwrap();

    venue.set_faults(Faults::default());
    let (gateway, _addr) = start_gateway(&config).await;
    let reconciled = wait_until(WAIT, || async {
        let row = client
            .query_opt(
                "SELECT d.status, e.status, e.broker_order_id FROM trade_decisions d \
                 JOIN trade_executions e ON e.trade_decision_id = d.id WHERE d.decision_id = $1",
                &[&sent],
            )
            .await
            .unwrap()?;
        Some((
            row.get::<_, String>(0),
            row.get::<_, String>(1),
            row.get::<_, Option<String>>(2),
        ))
    })
    .await
    .expect("the sent decision was not reconciled");
    assert_eq!(reconciled.0, "executed");
    assert!(reconciled.2.is_some(), "the broker order id was recorded");
    // the submission's time is the broker's, not the time of the look-up after the restart
    let submitted_at: chrono::DateTime<chrono::Utc> = client
        .query_one(
            "SELECT e.submitted_at FROM trade_executions e JOIN trade_decisions d \
             ON d.id = e.trade_decision_id WHERE d.decision_id = $1",
            &[&sent],
        )
        .await
        .unwrap()
        .get(0);
    let at_venue = venue.order_by_client_id(&sent.to_string()).unwrap()["submitted_at"]
        .as_str()
        .unwrap()
        .parse::<chrono::DateTime<chrono::Utc>>()
        .unwrap();
    assert_eq!(
        submitted_at.timestamp_micros(),
        at_venue.timestamp_micros(),
        "submitted_at is not the broker's"
    );
    let failed = wait_until(WAIT, || async {
        let row = client
            .query_one(
                "SELECT status, failure_reason FROM trade_decisions WHERE decision_id = $1",
                &[&never_sent],
            )
            .await
            .unwrap();
        (row.get::<_, String>(0) == "failed").then(|| row.get::<_, Option<String>>(1))
    })
    .await
    .expect("the unsent decision was not failed");
    assert_eq!(failed.as_deref(), Some("not_received_by_broker"));
    // never resent: each client order id reached the venue at most once, as a submission
    assert_eq!(venue.submissions_of(&sent.to_string()), 1);
    assert_eq!(venue.submissions_of(&never_sent.to_string()), 0);
    let lookups = venue
        .requests()
        .iter()
        .filter(|r| r.path == "/v2/orders:by_client_order_id")
        .count();
    assert!(lookups >= 2, "both decisions were looked up ({lookups})");
    drop(gateway);
}
