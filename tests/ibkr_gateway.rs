//! The IbkrSyncers inside a running gateway, over real HTTP, TCP and PostgreSQL: the trades read
//! API and its errors, on-request syncs, `trades.sync` jobs (idempotent enqueue, bad payloads),
//! connectivity events in the trade log, and a reconnect with backoff after TWS drops the
//! session. One test function: actor names are process-global, so one gateway per process.

mod common;

use std::net::SocketAddr;
use std::time::Duration;

use rust_decimal::Decimal;
use serde_json::{Value, json};
use tokio::net::TcpListener;
use tradegate::app::Running;
use tradegate::config::Config;
use tradegate::sim::tws::{Fault, Scenario, spawn};
use tradegate_actors::ibkr_syncer::tws::{CommissionReport, Execution};
use tradegate_actors::store::jobs;

use common::{TestDb, scratch_dir, wait_until};

use common::ibkr::msft_sale as execution;

fn with_commission(e: Execution) -> (Execution, Option<CommissionReport>) {
    let report = CommissionReport {
        exec_id: e.exec_id.clone(),
        commission: Some(Decimal::ONE),
        currency: "USD".into(),
        realized_pnl: None,
    };
    (e, Some(report))
}

async fn post(http: &reqwest::Client, url: &str, body: &str) -> (u16, Value) {
    let response = http
        .post(url)
        .header("content-type", "application/json")
        .body(body.to_string())
        .send()
        .await
        .unwrap();
    let status = response.status().as_u16();
    let text = response.text().await.unwrap();
    (
        status,
        serde_json::from_str(&text).unwrap_or(Value::String(text)),
    )
}

async fn count(client: &tokio_postgres::Client, sql: &str) -> i64 {
    client.query_one(sql, &[]).await.unwrap().get(0)
}

async fn get(http: &reqwest::Client, url: &str) -> (u16, Value) {
    let response = http.get(url).send().await.unwrap();
    let status = response.status().as_u16();
    let text = response.text().await.unwrap();
    (
        status,
        serde_json::from_str(&text).unwrap_or(Value::String(text)),
    )
}

#[tokio::test(flavor = "multi_thread")]
async fn the_gateway_syncs_on_request_by_jobs_and_after_a_disconnect_and_serves_the_trades() {
    let db = TestDb::new().await;
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let tws_addr = listener.local_addr().unwrap();
    let tws = spawn(
        listener,
        Scenario {
            accounts: vec!["GA1".into(), "GA2".into()],
            executions: vec![
                with_commission(execution("0000e0d5.91.01.01", "GA1", 9100, 10, 41_000)),
                with_commission(execution("0000e0d5.91.02.01", "GA1", 9100, 5, 41_010)),
                with_commission(execution("0000e0d5.91.02.02", "GA1", 9100, 5, 41_020)),
                with_commission(execution("0000e0d5.92.01.01", "GA2", 9200, 7, 10_000)),
            ],
            ..Scenario::default()
        },
    );
    let mut config = Config::default();
    config.database.url = db.conninfo.clone();
    config.tradelog.spill_dir = scratch_dir("ibkr-gateway").join("spill");
    config.ibkr.accounts = vec!["GA1".into(), "GA2".into()];
    config.ibkr.host = tws_addr.ip().to_string();
    config.ibkr.port = tws_addr.port();
    config.ibkr.sync_interval_secs = 0;
    config.ibkr.job_poll_secs = 1;
    config.ibkr.reconnect_max_backoff_secs = 2;
    common::api::secure(&mut config);
    let running = Running::start(&config, SocketAddr::from(([127, 0, 0, 1], 0)))
        .await
        .unwrap();
    let base = format!("http://{}", running.api_addr());
    let http = common::api::client(common::api::ALL);

    // on request, one account
    let (status, report) = post(
        &http,
        &format!("{base}/api/v1/trades/sync"),
        r#"{"account_id":"GA1"}"#,
    )
    .await;
    assert_eq!(status, 200, "{report}");
    assert_eq!(report["account_id"], "GA1");
    assert_eq!(report["fetched_executions_count"], 3);
    assert_eq!(report["inserted_executions_count"], 3);
    assert_eq!(report["canonical_changes_count"], 1);
    // every account: GA1 unchanged, GA2 new
    let (status, all) = post(&http, &format!("{base}/api/v1/trades/sync"), "").await;
    assert_eq!(status, 200, "{all}");
    let accounts = all["accounts"].as_array().unwrap();
    assert_eq!(accounts[0]["report"]["unchanged_executions_count"], 3);
    assert_eq!(accounts[1]["report"]["inserted_executions_count"], 1);
    // the two accounts of one login share one session (TWS refuses a second with one id)
    {
        let s = tws.lock().unwrap();
        assert_eq!((s.stats.sessions, s.stats.refused), (1, 0), "{:?}", s.stats);
        assert_eq!(s.stats.requests, 3);
    }
    // refusals
    for (body, status, code) in [
        (r#"{"account_id":"NOPE"}"#, 404, "unknown_account"),
        (r#"{"lookback_days":0}"#, 422, "invalid"),
        (r#"{"account":"GA1"}"#, 422, "invalid"),
        ("{not json", 400, "malformed"),
    ] {
        let (got, error) = post(&http, &format!("{base}/api/v1/trades/sync"), body).await;
        assert_eq!(
            (got, error["code"].as_str()),
            (status, Some(code)),
            "{body}: {error}"
        );
    }

    // the read API
    let (status, trades) = get(&http, &format!("{base}/api/v1/trades?account_id=GA1")).await;
    assert_eq!(status, 200);
    let trades = trades.as_array().unwrap();
    assert_eq!(trades.len(), 1);
    let trade = &trades[0];
    assert_eq!(trade["ib_perm_id"], 9100);
    assert_eq!(trade["total_quantity"], "15", "10 + the corrected 5");
    assert_eq!(trade["status"], "filled");
    let id = trade["id"].as_i64().unwrap();
    let (status, one) = get(&http, &format!("{base}/api/v1/trades/{id}")).await;
    assert_eq!((status, &one["id"]), (200, &json!(id)));
    let (status, fills) = get(&http, &format!("{base}/api/v1/trades/{id}/executions")).await;
    assert_eq!(status, 200);
    let fills = fills.as_array().unwrap();
    assert_eq!(fills.len(), 3);
    let superseded: Vec<&Value> = fills
        .iter()
        .filter(|f| f["is_canonical"] == false)
        .collect();
    assert_eq!(superseded.len(), 1);
    assert_eq!(superseded[0]["exec_id"], "0000e0d5.91.02.01");
    assert_eq!(superseded[0]["exec_id_base"], "0000e0d5.91.02");
    assert_eq!(superseded[0]["exec_revision"], 1);
    let (status, filtered) = get(
        &http,
        &format!("{base}/api/v1/trades?symbol=MSFT&status=filled&limit=1"),
    )
    .await;
    assert_eq!((status, filtered.as_array().unwrap().len()), (200, 1));
    let (status, none) = get(&http, &format!("{base}/api/v1/trades?symbol=ZZZZ")).await;
    assert_eq!((status, none), (200, json!([])));
    for (path, status, code) in [
        ("/api/v1/trades/999999", 404, "unknown_trade"),
        ("/api/v1/trades/999999/executions", 404, "unknown_trade"),
        ("/api/v1/trades/abc", 400, "malformed"),
        ("/api/v1/trades?status=bogus", 422, "invalid"),
        ("/api/v1/trades?limit=0", 422, "invalid"),
    ] {
        let (got, error) = get(&http, &format!("{base}{path}")).await;
        assert_eq!(
            (got, error["code"].as_str()),
            (status, Some(code)),
            "{path}: {error}"
        );
    }

    // enqueue is idempotent: one pending job per account
    let client = db.client().await;
    let first = jobs::enqueue(&client, jobs::TRADES_SYNC, "UNSYNCED", &json!({}))
        .await
        .unwrap();
    let second = jobs::enqueue(&client, jobs::TRADES_SYNC, "UNSYNCED", &json!({}))
        .await
        .unwrap();
    assert!(first.created && !second.created);
    assert_eq!(first.job.id, second.job.id);
    // a job syncs the new fill of GA2 (what the OrderRouter enqueues after orders)
    tws.lock()
        .unwrap()
        .executions
        .push(with_commission(execution(
            "0000e0d5.93.01.01",
            "GA2",
            9300,
            2,
            9_000,
        )));
    let (status, enqueued) = post(
        &http,
        &format!("{base}/api/v1/jobs/trades.sync"),
        r#"{"account_id":"GA2","lookback_days":3}"#,
    )
    .await;
    assert_eq!(status, 202, "{enqueued}");
    let job_id = enqueued["job"]["id"].as_i64().unwrap();
    let done = wait_until(Duration::from_secs(20), || async {
        let job = jobs::get(&client, job_id).await.unwrap()?;
        (job.status != "pending" && job.status != "running").then_some(job)
    })
    .await
    .expect("the job finishes");
    assert_eq!(done.status, "completed", "{done:?}");
    let synced: i64 = count(
        &client,
        "SELECT count(*) FROM broker_fills WHERE exec_id = '0000e0d5.93.01.01'",
    )
    .await;
    assert_eq!(synced, 1);
    // a job may name its own connection (the spec's overrides): this one syncs GA1 through a
    // second TWS, with its own client id, once, and leaves the configured session alone
    let other = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let other_addr = other.local_addr().unwrap();
    let other_tws = spawn(
        other,
        Scenario {
            accounts: vec!["GA1".into()],
            executions: vec![with_commission(execution(
                "0000e0d5.95.01.01",
                "GA1",
                9500,
                4,
                12_000,
            ))],
            ..Scenario::default()
        },
    );
    let (status, enqueued) = post(
        &http,
        &format!("{base}/api/v1/jobs/trades.sync"),
        &json!({"account_id": "GA1", "host": "127.0.0.1", "port": other_addr.port(),
            "client_id": 77, "connect_timeout_seconds": 5, "lookback_days": 2})
        .to_string(),
    )
    .await;
    assert_eq!(status, 202, "{enqueued}");
    assert_eq!(enqueued["job"]["payload"]["client_id"], 77, "{enqueued}");
    let job_id = enqueued["job"]["id"].as_i64().unwrap();
    let done = wait_until(Duration::from_secs(20), || async {
        let job = jobs::get(&client, job_id).await.unwrap()?;
        (job.status != "pending" && job.status != "running").then_some(job)
    })
    .await
    .expect("the job finishes");
    assert_eq!(done.status, "completed", "{done:?}");
    let synced: i64 = count(
        &client,
        "SELECT count(*) FROM broker_fills WHERE exec_id = '0000e0d5.95.01.01' \
         AND account_id = 'GA1'",
    )
    .await;
    assert_eq!(synced, 1, "the fill only the other TWS holds");
    assert_eq!(other_tws.lock().unwrap().stats.sessions, 1);
    let closed = wait_until(Duration::from_secs(5), || async {
        other_tws
            .lock()
            .unwrap()
            .stats
            .in_use
            .is_empty()
            .then_some(())
    })
    .await;
    assert!(closed.is_some(), "the one-off session is closed");
    // the configured session was left alone: still the one session it opened at the start
    assert_eq!(tws.lock().unwrap().stats.sessions, 1);
    // bad overrides: refused by the API with the key named, nothing enqueued
    for (body, key) in [
        (json!({"account_id": "GA1", "port": 0}), "port"),
        (json!({"account_id": "GA1", "port": 70_000}), "port"),
        (json!({"account_id": "GA1", "host": ""}), "host"),
        (json!({"account_id": "GA1", "client_id": -1}), "client_id"),
        (
            json!({"account_id": "GA1", "connect_timeout_seconds": 0}),
            "connect_timeout_seconds",
        ),
        (
            json!({"account_id": "GA1", "lookback_days": 400}),
            "lookback_days",
        ),
    ] {
        let (status, error) = post(
            &http,
            &format!("{base}/api/v1/jobs/trades.sync"),
            &body.to_string(),
        )
        .await;
        assert_eq!(
            (status, error["code"].as_str()),
            (422, Some("invalid")),
            "{body}: {error}"
        );
        assert!(
            error["message"].as_str().unwrap().contains(key),
            "{body}: {error}"
        );
    }
    // enqueued by another writer, a job with a bad value fails with the key named and writes
    // nothing
    let fills_before: i64 = count(&client, "SELECT count(*) FROM broker_fills").await;
    let runs_before: i64 = count(&client, "SELECT count(*) FROM sync_runs").await;
    let bad_port = jobs::enqueue(&client, jobs::TRADES_SYNC, "GA1", &json!({"port": "4002"}))
        .await
        .unwrap();
    let failed = wait_until(Duration::from_secs(20), || async {
        let job = jobs::get(&client, bad_port.job.id).await.unwrap()?;
        (job.status == "failed").then_some(job)
    })
    .await
    .expect("the bad job fails");
    assert_eq!(failed.attempts, 1);
    let error: Option<String> = client
        .query_one("SELECT error FROM jobs WHERE id = $1", &[&bad_port.job.id])
        .await
        .unwrap()
        .get(0);
    assert!(error.as_deref().unwrap().contains("port"), "{error:?}");
    assert_eq!(
        count(&client, "SELECT count(*) FROM broker_fills").await,
        fills_before
    );
    assert_eq!(
        count(&client, "SELECT count(*) FROM sync_runs").await,
        runs_before
    );
    // a job with a key the syncer does not take fails loudly
    let bad = jobs::enqueue(
        &client,
        jobs::TRADES_SYNC,
        "GA1",
        &json!({"hots": "127.0.0.1"}),
    )
    .await
    .unwrap();
    let failed = wait_until(Duration::from_secs(20), || async {
        let job = jobs::get(&client, bad.job.id).await.unwrap()?;
        (job.status == "failed").then_some(job)
    })
    .await
    .expect("the bad job fails");
    assert_eq!(failed.attempts, 1);
    let error: Option<String> = client
        .query_one("SELECT error FROM jobs WHERE id = $1", &[&bad.job.id])
        .await
        .unwrap()
        .get(0);
    assert!(
        error
            .unwrap()
            .contains("unsupported trades.sync payload key")
    );
    let (status, error) = post(
        &http,
        &format!("{base}/api/v1/jobs/trades.sync"),
        r#"{"account_id":"NOPE"}"#,
    )
    .await;
    assert_eq!(
        (status, error["code"].as_str()),
        (404, Some("unknown_account"))
    );

    // TWS drops the session mid-sync: the request fails, nothing is stored, and the syncer
    // reconnects by itself after its backoff and syncs the window
    let completed_before: i64 = count(
        &client,
        "SELECT count(*) FROM sync_runs WHERE account_id = 'GA1' AND status = 'completed'",
    )
    .await;
    {
        let mut s = tws.lock().unwrap();
        s.fault = Some(Fault::DisconnectAfter(1));
        s.executions.push(with_commission(execution(
            "0000e0d5.94.01.01",
            "GA1",
            9400,
            1,
            100,
        )));
    }
    let (status, error) = post(
        &http,
        &format!("{base}/api/v1/trades/sync"),
        r#"{"account_id":"GA1"}"#,
    )
    .await;
    assert_eq!(
        (status, error["code"].as_str()),
        (502, Some("tws_unavailable")),
        "{error}"
    );
    let partial: i64 = count(
        &client,
        "SELECT count(*) FROM broker_fills WHERE exec_id = '0000e0d5.94.01.01'",
    )
    .await;
    assert_eq!(partial, 0);
    tws.lock().unwrap().fault = None;
    let retried = wait_until(Duration::from_secs(20), || async {
        let n: i64 = count(
            &client,
            "SELECT count(*) FROM sync_runs WHERE account_id = 'GA1' AND status = 'completed'",
        )
        .await;
        (n > completed_before).then_some(n)
    })
    .await;
    assert!(retried.is_some(), "the syncer did not retry on its own");
    let stored: i64 = count(
        &client,
        "SELECT count(*) FROM broker_fills WHERE exec_id = '0000e0d5.94.01.01'",
    )
    .await;
    assert_eq!(stored, 1);

    // connectivity events in the trade log: the session's (it serves both accounts) and the
    // failed sync's, with TWS's notices as state in between
    running.flush_trade_log().await.unwrap();
    let events: Vec<String> = client
        .query(
            "SELECT body->>'event' FROM tradelog WHERE event_type = 90 AND source = 'ibkr' \
             AND body->'accounts' ? 'GA1' \
             AND body->>'event' IN ('connected', 'disconnected', 'reconnected') \
             ORDER BY local_ts_us",
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert_eq!(
        events,
        ["connected", "disconnected", "reconnected"],
        "{events:?}"
    );
    let notices: Vec<(String, i64)> = client
        .query(
            "SELECT body->>'event', (body->'detail'->>'code')::bigint FROM tradelog \
             WHERE event_type = 90 AND source = 'ibkr' AND body->>'event' LIKE 'tws_%' \
             ORDER BY local_ts_us LIMIT 5",
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect();
    assert_eq!(
        notices,
        [
            ("tws_notice".to_string(), 2104),
            ("tws_notice".to_string(), 2106),
            ("tws_notice".to_string(), 2158),
            ("tws_lost_ib".to_string(), 1100),
            ("tws_restored".to_string(), 1102),
        ],
        "farm notices at connect, IB's reset in the middle of an answer: logged, not failures"
    );
    running.stop().await.unwrap();
}
