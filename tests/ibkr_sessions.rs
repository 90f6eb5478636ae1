//! The gateway's TWS sessions, over real HTTP, TCP and PostgreSQL: accounts behind another TWS
//! get their own session (`[[ibkr.gateways]]`); a client id TWS refuses (326) is an alert and no
//! retry loop, and a requested sync tries again; a configured account the login does not serve
//! is an alert and a coded error. One test function: actor names are process-global, so one
//! gateway per process.

mod common;

use std::net::SocketAddr;
use std::time::Duration;

use serde_json::Value;
use tokio::net::TcpListener;
use tradegate::app::Running;
use tradegate::config::Config;
use tradegate::sim::tws::{Scenario, SharedScenario, spawn};
use tradegate_actors::ibkr_syncer::IbkrGateway;
use tradegate_actors::ibkr_syncer::client::TwsSession;
use tradegate_actors::ibkr_syncer::tws::Execution;

use common::{TestDb, scratch_dir, wait_until};

fn execution(exec_id: &str, account: &str, perm_id: i64) -> Execution {
    common::ibkr::msft_sale(exec_id, account, perm_id, 4, 41_000)
}

async fn tws(accounts: &[&str], executions: Vec<Execution>) -> (SharedScenario, SocketAddr) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let sim = spawn(
        listener,
        Scenario {
            accounts: accounts.iter().map(|a| a.to_string()).collect(),
            executions: executions.into_iter().map(|e| (e, None)).collect(),
            ..Scenario::default()
        },
    );
    (sim, addr)
}

async fn sync(http: &reqwest::Client, base: &str, account: &str) -> (u16, Value) {
    let response = http
        .post(format!("{base}/api/v1/trades/sync"))
        .header("content-type", "application/json")
        .body(format!(r#"{{"account_id":"{account}"}}"#))
        .send()
        .await
        .unwrap();
    let status = response.status().as_u16();
    (status, response.json().await.unwrap())
}

#[tokio::test(flavor = "multi_thread")]
async fn each_tws_gets_one_session_a_refused_client_id_alerts_once_and_waits_to_be_asked() {
    let db = TestDb::new().await;
    let (a, a_addr) = tws(&["GA1"], vec![execution("0000e0d5.a1.01.01", "GA1", 1)]).await;
    let (b, b_addr) = tws(
        &["GB1", "GB2"],
        vec![
            execution("0000e0d5.b1.01.01", "GB1", 2),
            execution("0000e0d5.b2.01.01", "GB2", 3),
        ],
    )
    .await;
    // another program holds the gateway's client id at TWS A
    let holder = TwsSession::connect(a_addr, 17, Duration::from_secs(5), Duration::from_secs(5))
        .await
        .unwrap();
    let mut config = Config::default();
    config.database.url = db.conninfo.clone();
    config.tradelog.spill_dir = scratch_dir("ibkr-sessions").join("spill");
    config.ibkr.accounts = vec!["GA1".into(), "GA9".into()];
    config.ibkr.host = a_addr.ip().to_string();
    config.ibkr.port = a_addr.port();
    config.ibkr.gateways = vec![IbkrGateway {
        accounts: vec!["GB1".into(), "GB2".into()],
        host: b_addr.ip().to_string(),
        port: b_addr.port(),
        client_id: None,
        timezone: Some("US/Eastern".into()),
    }];
    config.ibkr.sync_interval_secs = 1;
    config.ibkr.reconnect_max_backoff_secs = 1;
    common::api::secure(&mut config);
    let running = Running::start(&config, SocketAddr::from(([127, 0, 0, 1], 0)))
        .await
        .unwrap();
    let base = format!("http://{}", running.api_addr());
    let http = common::api::client(common::api::ALL);
    let client = db.client().await;

    // TWS B's login serves both its accounts over one session, synced on schedule
    let synced = wait_until(Duration::from_secs(20), || async {
        let n: i64 = client
            .query_one(
                "SELECT count(DISTINCT account_id) FROM broker_fills WHERE account_id LIKE 'GB%'",
                &[],
            )
            .await
            .unwrap()
            .get(0);
        (n == 2).then_some(())
    })
    .await;
    assert!(synced.is_some(), "the scheduled syncs of GB1 and GB2");
    assert_eq!(b.lock().unwrap().stats.sessions, 1);

    // TWS A refused client id 17: one alert, and no retries on a schedule
    let alerted = wait_until(Duration::from_secs(10), || async {
        let n: i64 = client
            .query_one(
                "SELECT count(*) FROM alerts WHERE kind = 'ibkr.client_id_in_use'",
                &[],
            )
            .await
            .unwrap()
            .get(0);
        (n > 0).then_some(n)
    })
    .await;
    assert_eq!(alerted, Some(1));
    let refused = a.lock().unwrap().stats.refused;
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(
        a.lock().unwrap().stats.refused,
        refused,
        "no retry loop against a refused client id"
    );
    let (status, error) = sync(&http, &base, "GA1").await;
    assert_eq!(
        (status, error["code"].as_str()),
        (502, Some("tws_client_id_in_use")),
        "{error}"
    );
    assert!(
        error["message"].as_str().unwrap().contains("326"),
        "{error}"
    );
    assert_eq!(
        a.lock().unwrap().stats.refused,
        refused + 1,
        "asked, it tried"
    );

    // the other program leaves: the next requested sync connects
    drop(holder);
    let (status, report) = sync(&http, &base, "GA1").await;
    assert_eq!(status, 200, "{report}");
    assert_eq!(report["inserted_executions_count"], 1);
    // GA9 is configured but not an account of TWS A's login: an alert and a coded error
    let (status, error) = sync(&http, &base, "GA9").await;
    assert_eq!(
        (status, error["code"].as_str()),
        (502, Some("account_not_managed")),
        "{error}"
    );
    let not_managed: i64 = client
        .query_one(
            "SELECT count(*) FROM alerts WHERE kind = 'ibkr.account_not_managed' \
             AND details -> 'missing' ? 'GA9'",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(not_managed, 1);
    assert_eq!(
        a.lock().unwrap().stats.sessions,
        2,
        "the holder's and the gateway's"
    );
    running.stop().await.unwrap();
}
