//! IBKR positions and reconciliation inside a running gateway, over TCP to the simulated TWS
//! and a real PostgreSQL: the session snapshots the positions (REQ_POSITIONS) as it connects;
//! a fill TWS pushes while the gateway runs is in `broker_fills` within 5 seconds without a
//! scheduled sync, with a `trades.sync` and a `positions.sync` enqueued for it; fills,
//! partial closes and a correction of a fill leave every window explained; a position changed
//! without a fill is exactly one break with its numbers and one alert; fills made while TWS was
//! down are recovered after the reconnect, and the window across the outage is clean. One test
//! function: one gateway per process.

mod common;

use std::net::SocketAddr;
use std::time::Duration;

use chrono::Utc;
use rust_decimal::Decimal;
use serde_json::{Value, json};
use tokio::net::TcpListener;
use tradegate::app::Running;
use tradegate::config::Config;
use tradegate::sim::tws::{Scenario, SharedScenario, push_execution, spawn};
use tradegate_actors::ibkr_syncer::tws::{CommissionReport, Contract, Execution, TwsTime};

use common::{TestDb, scratch_dir, wait_until};

const ACCOUNT: &str = "RA1";
const WAIT: Duration = Duration::from_secs(30);

/// A fill of AAPL for the account, `ago` before now (IB's UTC form).
fn fill(exec_id: &str, side: &str, shares: i64, ago: chrono::Duration) -> Execution {
    let at = Utc::now() - ago;
    Execution {
        order_id: 7,
        contract: Contract {
            con_id: 265_598,
            symbol: "AAPL".into(),
            sec_type: "STK".into(),
            currency: "USD".into(),
            exchange: "SMART".into(),
            ..Contract::default()
        },
        exec_id: exec_id.into(),
        time: TwsTime::parse(&at.format("%Y%m%d-%H:%M:%S").to_string()).unwrap(),
        account: ACCOUNT.into(),
        exchange: "ISLAND".into(),
        side: side.into(),
        shares: Decimal::from(shares),
        price: Decimal::new(19_012, 2),
        perm_id: 7_000,
        client_id: 0,
        cum_qty: Decimal::from(shares),
        avg_price: Decimal::new(19_012, 2),
        ..Execution::default()
    }
}

fn report(exec_id: &str) -> Option<CommissionReport> {
    Some(CommissionReport {
        exec_id: exec_id.into(),
        commission: Some(Decimal::ONE),
        currency: "USD".into(),
        realized_pnl: None,
    })
}

fn now_ago() -> chrono::Duration {
    chrono::Duration::zero()
}

async fn count(client: &tokio_postgres::Client, sql: &str) -> i64 {
    client.query_one(sql, &[]).await.unwrap().get(0)
}

async fn snapshots(client: &tokio_postgres::Client) -> i64 {
    count(
        client,
        "SELECT count(*) FROM position_snapshots WHERE broker = 'ibkr' AND account = 'RA1'",
    )
    .await
}

/// The newest IBKR snapshot's AAPL position.
async fn held(client: &tokio_postgres::Client) -> Option<Decimal> {
    let (_, positions) =
        tradegate_actors::store::positions::latest_positions(client, "ibkr", ACCOUNT)
            .await
            .unwrap()?;
    Some(
        positions
            .iter()
            .find(|p| p.symbol == "AAPL")
            .map_or(Decimal::ZERO, |p| p.quantity),
    )
}

/// Waits until the newest snapshot holds `want` AAPL and the window it closes was checked;
/// the breaks of that run.
async fn checked_at(client: &tokio_postgres::Client, want: i64) -> Vec<Value> {
    let want = Decimal::from(want);
    let run: Option<i64> = wait_until(WAIT, || async {
        if held(client).await? != want {
            return None;
        }
        let row = client
            .query_opt(
                "SELECT r.id FROM reconciliation_runs r \
                 WHERE r.to_snapshot_id = (SELECT max(id) FROM position_snapshots \
                                           WHERE broker = 'ibkr' AND account = 'RA1')",
                &[],
            )
            .await
            .unwrap()?;
        Some(row.get(0))
    })
    .await;
    let Some(run) = run else {
        let state: Value = client
            .query_one(
                "SELECT json_build_object( \
                   'snapshots', (SELECT json_agg(json_build_object('id', s.id, 'as_of', s.as_of, \
                       'aapl', (SELECT quantity::text FROM broker_positions p \
                                WHERE p.snapshot_id = s.id AND symbol = 'AAPL')) ORDER BY s.id) \
                       FROM position_snapshots s WHERE broker = 'ibkr'), \
                   'syncs', (SELECT json_agg(json_build_object('started', started_at, 'status', status) \
                       ORDER BY id) FROM sync_runs), \
                   'runs', (SELECT json_agg(json_build_object('to', to_snapshot_id, \
                       'breaks', breaks_count)) FROM reconciliation_runs), \
                   'jobs', (SELECT json_agg(json_build_object('type', job_type, 'status', status, \
                       'error', error) ORDER BY id) FROM jobs))",
                &[],
            )
            .await
            .unwrap()
            .get(0);
        panic!("no checked window ending at {want} AAPL: {state:#}");
    };
    client
        .query(
            "SELECT json_build_object('symbol', symbol, 'broker_change', broker_change::text, \
                 'expected_change', expected_change::text, 'broker_before', broker_before::text, \
                 'broker_after', broker_after::text) \
             FROM reconciliation_breaks WHERE run_id = $1",
            &[&run],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| r.get::<_, Value>(0))
        .collect()
}

async fn fill_recorded(client: &tokio_postgres::Client, exec_id: &str) -> bool {
    client
        .query_one(
            "SELECT count(*) FROM broker_fills WHERE account_id = 'RA1' AND exec_id = $1",
            &[&exec_id],
        )
        .await
        .unwrap()
        .get::<_, i64>(0)
        == 1
}

/// Pushes a fill live and waits until it is stored; how long that took.
async fn pushed_and_stored(
    tws: &SharedScenario,
    client: &tokio_postgres::Client,
    execution: Execution,
) -> Duration {
    let id = execution.exec_id.clone();
    let started = std::time::Instant::now();
    push_execution(tws, execution, report(&id));
    wait_until(Duration::from_secs(5), || async {
        fill_recorded(client, &id).await.then_some(())
    })
    .await
    .unwrap_or_else(|| panic!("the pushed fill {id} is not in broker_fills within 5 s"));
    started.elapsed()
}

#[tokio::test(flavor = "multi_thread")]
async fn ibkr_positions_reconcile_live_fills_corrections_and_an_outage() {
    let db = TestDb::new().await;
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let tws_addr = listener.local_addr().unwrap();
    // an hour ago the account bought 10 and sold 4 (first reported as 5, corrected to 4)
    let tws = spawn(
        listener,
        Scenario {
            accounts: vec![ACCOUNT.into(), "RA2".into()],
            executions: vec![
                (
                    fill("0000e0d5.a1.01.01", "BOT", 10, chrono::Duration::hours(1)),
                    report("0000e0d5.a1.01.01"),
                ),
                (
                    fill("0000e0d5.a2.01.01", "SLD", 5, chrono::Duration::minutes(50)),
                    report("0000e0d5.a2.01.01"),
                ),
                (
                    fill("0000e0d5.a2.01.02", "SLD", 4, chrono::Duration::minutes(50)),
                    report("0000e0d5.a2.01.02"),
                ),
            ],
            ..Scenario::default()
        },
    );
    let mut config = Config::default();
    config.database.url = db.conninfo.clone();
    config.tradelog.spill_dir = scratch_dir("ibkr-reconcile").join("spill");
    config.ibkr.accounts = vec![ACCOUNT.into()];
    config.ibkr.host = tws_addr.ip().to_string();
    config.ibkr.port = tws_addr.port();
    // the first sync connects at start; the next scheduled one is an hour away, so every
    // later fill arrives by the live path or a reconnect
    config.ibkr.sync_interval_secs = 3600;
    config.ibkr.job_poll_secs = 1;
    config.ibkr.reconnect_max_backoff_secs = 2;
    common::api::secure(&mut config);
    let running = Running::start(&config, SocketAddr::from(([127, 0, 0, 1], 0)))
        .await
        .unwrap();
    let base = format!("http://{}", running.api_addr());
    let client = db.client().await;

    // at start: a snapshot of the 6 held (the correction's 4, not the 5 it replaced), then the
    // sync; one snapshot opens no window yet
    wait_until(WAIT, || async {
        (snapshots(&client).await == 1
            && count(
                &client,
                "SELECT count(*) FROM sync_runs WHERE status = 'completed'",
            )
            .await
                == 1)
            .then_some(())
    })
    .await
    .expect("a snapshot and a sync at start");
    assert_eq!(held(&client).await, Some(Decimal::from(6)));
    let stored: Value = client
        .query_one(
            "SELECT p.payload FROM position_snapshots s \
             JOIN api_payloads p ON p.id = s.response_payload_id WHERE s.broker = 'ibkr'",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(stored["status_code"], 200);
    assert_eq!(stored["body"]["positions"][0]["position"], "6", "{stored}");
    assert_eq!(stored["body"]["positions"][0]["con_id"], 265_598);
    assert_eq!(
        stored["body"]["positions"].as_array().unwrap().len(),
        1,
        "only this account's positions are stored with its snapshot: {stored}"
    );
    let requests_at_start = tws.lock().unwrap().stats.requests;
    // fills at the start are the first snapshot's, not a window's
    tokio::time::sleep(Duration::from_millis(1500)).await;

    // a fill TWS pushes while the gateway runs: stored within 5 s, no scheduled sync
    let took = pushed_and_stored(
        &tws,
        &client,
        fill("0000e0d5.b1.01.01", "BOT", 3, now_ago()),
    )
    .await;
    println!("pushed fill stored after {took:?}");
    assert_eq!(
        count(
            &client,
            "SELECT count(*) FROM jobs WHERE dedupe_key = 'RA1' \
             AND job_type IN ('trades.sync', 'positions.sync')"
        )
        .await,
        2,
        "one trades.sync and one positions.sync for the pushed fill"
    );
    assert!(
        checked_at(&client, 9).await.is_empty(),
        "6 + 3 is explained"
    );
    assert!(tws.lock().unwrap().stats.requests > requests_at_start);

    // a burst of partial fills, and a correction inside the window of one just made: still
    // explained (the correction counts what it changed, not twice)
    tokio::time::sleep(Duration::from_millis(1200)).await;
    for (id, side, shares) in [
        ("0000e0d5.b2.01.01", "SLD", 2),
        ("0000e0d5.b2.02.01", "SLD", 2),
        ("0000e0d5.b2.02.02", "SLD", 1),
    ] {
        push_execution(&tws, fill(id, side, shares, now_ago()), report(id));
    }
    assert!(
        checked_at(&client, 6).await.is_empty(),
        "9 - 2 - 1 is explained"
    );

    // a correction of a fill made before the window (the sale of 4 is 3 after all), with the
    // original execution's time, as TWS may send it: the window counts the difference
    tokio::time::sleep(Duration::from_millis(1200)).await;
    pushed_and_stored(
        &tws,
        &client,
        fill("0000e0d5.a2.01.03", "SLD", 3, chrono::Duration::minutes(50)),
    )
    .await;
    assert!(
        checked_at(&client, 7).await.is_empty(),
        "the correction adds 1"
    );

    // a position changed without a fill: asked for by an operator, exactly one break
    tokio::time::sleep(Duration::from_millis(1200)).await;
    tws.lock()
        .unwrap()
        .trades_elsewhere
        .push((ACCOUNT.into(), "AAPL".into(), Decimal::from(5)));
    let http = common::api::client(common::api::OPERATOR);
    let response = http
        .post(format!("{base}/api/v1/reconcile"))
        .json(&json!({"account": ACCOUNT}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status().as_u16(), 202);
    let breaks = checked_at(&client, 12).await;
    assert_eq!(
        breaks,
        [
            json!({"symbol": "AAPL", "broker_change": "5", "expected_change": "0",
                "broker_before": "7", "broker_after": "12"})
        ]
    );
    assert_eq!(
        count(
            &client,
            "SELECT count(*) FROM alerts WHERE kind = 'reconcile.position_break'"
        )
        .await,
        1
    );

    // TWS goes down; a fill made meanwhile is recovered when it is back, and the window
    // across the outage is clean
    tokio::time::sleep(Duration::from_millis(1200)).await;
    tws.lock().unwrap().down = true;
    let sessions_before = tws.lock().unwrap().stats.sessions;
    wait_until(WAIT, || async {
        tws.lock().unwrap().stats.in_use.is_empty().then_some(())
    })
    .await
    .expect("TWS closed the session");
    let during = "0000e0d5.c1.01.01";
    push_execution(&tws, fill(during, "BOT", 8, now_ago()), report(during));
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(!fill_recorded(&client, during).await);
    tws.lock().unwrap().down = false;
    wait_until(WAIT, || async {
        fill_recorded(&client, during).await.then_some(())
    })
    .await
    .expect("the fill made while TWS was down is recovered after the reconnect");
    assert!(
        tws.lock().unwrap().stats.sessions > sessions_before,
        "the closed connection was noticed while idle, and a new session opened"
    );
    assert!(
        checked_at(&client, 20).await.is_empty(),
        "12 + 8 is explained"
    );
    assert_eq!(
        count(&client, "SELECT count(*) FROM reconciliation_breaks").await,
        1,
        "one break in all"
    );
    assert_eq!(
        count(
            &client,
            "SELECT count(*) FROM jobs WHERE status = 'failed' AND dedupe_key = 'RA1'"
        )
        .await,
        0
    );
    running.stop().await.unwrap();
}
