//! Reconciliation over the real protocols: normal trading through the simulated Alpaca venue
//! (fills in parts, a sell, a resting order partly filled and then cancelled) leaves every
//! window between two position snapshots explained by the fills on record; a position changed
//! at the venue without a fill is exactly one break with its numbers and one alert, and the
//! next window is clean again. Asked for over HTTP (operators only) and from the command line;
//! the results read back over HTTP and as a report.

mod common;

use std::time::Duration;

use common::api::{AUDITOR, OPERATOR, client};
use common::orders::{decision_outcome, gateway_at, start_venue};
use rust_decimal::Decimal;
use serde_json::{Value, json};
use tradegate::sim::alpaca::SimConfig;
use uuid::Uuid;

const WAIT: Duration = Duration::from_secs(30);

fn dec(s: &str) -> Decimal {
    s.parse().unwrap()
}

async fn count(client: &tokio_postgres::Client, sql: &str) -> i64 {
    client.query_one(sql, &[]).await.unwrap().get(0)
}

/// The newest snapshot's positions, by symbol, and its id.
async fn newest(client: &tokio_postgres::Client) -> Option<(i64, Vec<(String, Decimal)>)> {
    let (id, positions) =
        tradegate_actors::store::positions::latest_positions(client, "alpaca", "paper")
            .await
            .unwrap()?;
    Some((
        id,
        positions
            .into_iter()
            .map(|p| (p.symbol, p.quantity))
            .collect(),
    ))
}

/// Waits until a snapshot holding `want` exists and the window it closes was reconciled; that
/// snapshot's id.
async fn reconciled_at(client: &tokio_postgres::Client, want: &[(&str, &str)]) -> i64 {
    let want: Vec<(String, Decimal)> = want.iter().map(|(s, q)| ((*s).into(), dec(q))).collect();
    common::wait_until(WAIT, || async {
        let (id, held) = newest(client).await?;
        if held != want {
            return None;
        }
        let checked: i64 = client
            .query_one(
                "SELECT count(*) FROM reconciliation_runs WHERE to_snapshot_id = $1",
                &[&id],
            )
            .await
            .unwrap()
            .get(0);
        (checked == 1).then_some(id)
    })
    .await
    .unwrap_or_else(|| panic!("no reconciled snapshot holding {want:?}"))
}

async fn submit(gw: &mut common::orders::Gateway, order: Value) -> Uuid {
    let id = order["request_id"].as_str().unwrap().to_string();
    gw.alpha.send(order).await;
    let answer = gw.alpha.answer(&id).await;
    assert_eq!(answer["type"], "ack", "{answer}");
    Uuid::parse_str(answer["decision_id"].as_str().unwrap()).unwrap()
}

/// Waits until the decision's execution has status `want` (one of them, `|`-separated).
async fn until_status(gw: &common::orders::Gateway, decision: Uuid, want: &str) {
    let reached = common::wait_until(WAIT, || async {
        let (_, status, ..) = decision_outcome(&gw.client, decision).await?;
        want.split('|').any(|w| w == status).then_some(())
    })
    .await;
    assert!(reached.is_some(), "{decision} never became {want}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn trading_reconciles_clean_and_a_change_without_a_fill_is_one_break() {
    let venue = start_venue(SimConfig {
        partial_fills: true,
        ..SimConfig::default()
    })
    .await;
    let mut gw = gateway_at("reconcile", venue, |c| {
        c.alpaca.job_poll_secs = 1;
        c.reconcile.settle_ms = 300;
        c.reconcile.tolerance_ms = 200;
    })
    .await;
    let api = format!("http://{}", gw.running.api_addr());
    // the start's snapshot: flat
    let start = common::wait_until(WAIT, || async { newest(&gw.client).await })
        .await
        .expect("a snapshot at the start");
    assert!(start.1.is_empty(), "{start:?}");

    // a buy filled in two parts, a sell, a resting limit order partly filled then cancelled
    let buy = submit(
        &mut gw,
        json!({"type": "submit_order", "request_id": "buy", "strategy": "alpha",
            "symbol": "AAPL", "side": "buy", "qty": "10", "order_type": "market",
            "time_in_force": "day"}),
    )
    .await;
    until_status(&gw, buy, "filled").await;
    let sell = submit(
        &mut gw,
        json!({"type": "submit_order", "request_id": "sell", "strategy": "alpha",
            "symbol": "AAPL", "side": "sell", "qty": "4", "order_type": "market",
            "time_in_force": "day"}),
    )
    .await;
    until_status(&gw, sell, "filled").await;
    let rest = submit(
        &mut gw,
        json!({"type": "submit_order", "request_id": "rest", "strategy": "alpha",
            "symbol": "MSFT", "side": "buy", "qty": "6", "order_type": "limit",
            "limit_price": "50", "time_in_force": "gtc"}),
    )
    .await;
    until_status(&gw, rest, "submitted|accepted").await;
    assert!(gw.venue.fill_part(&rest.to_string(), dec("2"), dec("49")));
    until_status(&gw, rest, "partial_fill").await;
    gw.alpha
        .send(json!({"type": "cancel_order", "request_id": "cancel", "decision_id": rest}))
        .await;
    until_status(&gw, rest, "cancelled").await;
    let traded = reconciled_at(&gw.client, &[("AAPL", "6"), ("MSFT", "2")]).await;
    // every window so far is explained by the fills on record
    assert_eq!(
        count(&gw.client, "SELECT count(*) FROM reconciliation_breaks").await,
        0
    );
    let fills: i64 = count(
        &gw.client,
        "SELECT COALESCE(sum(fills_considered), 0)::bigint FROM reconciliation_runs",
    )
    .await;
    assert!(fills >= 4, "the windows considered {fills} fills");

    // a trade made elsewhere: the position changes without a fill
    gw.venue.set_position("AAPL", dec("9"), dec("100"));
    let operator = client(OPERATOR);
    let auditor = client(AUDITOR);
    // only operators ask for a reconciliation
    let refused = auditor
        .post(format!("{api}/api/v1/reconcile"))
        .json(&json!({}))
        .send()
        .await
        .unwrap();
    assert_eq!(refused.status().as_u16(), 403);
    let unknown = operator
        .post(format!("{api}/api/v1/reconcile"))
        .json(&json!({"account": "nobody"}))
        .send()
        .await
        .unwrap();
    assert_eq!(unknown.status().as_u16(), 404);
    let asked = operator
        .post(format!("{api}/api/v1/reconcile"))
        .json(&json!({"account": "paper"}))
        .send()
        .await
        .unwrap();
    assert_eq!(asked.status().as_u16(), 202);
    let asked: Value = asked.json().await.unwrap();
    assert_eq!(
        asked["jobs"][0]["job"]["job_type"], "positions.sync",
        "{asked}"
    );
    let changed = reconciled_at(&gw.client, &[("AAPL", "9"), ("MSFT", "2")]).await;
    assert!(changed > traded);
    let breaks = gw
        .client
        .query(
            "SELECT b.symbol, b.broker_before, b.broker_after, b.broker_change, \
                    b.expected_change, r.to_snapshot_id \
             FROM reconciliation_breaks b JOIN reconciliation_runs r ON r.id = b.run_id",
            &[],
        )
        .await
        .unwrap();
    assert_eq!(breaks.len(), 1);
    let b = &breaks[0];
    assert_eq!(b.get::<_, String>(0), "AAPL");
    assert_eq!(
        (
            b.get::<_, Decimal>(1),
            b.get::<_, Decimal>(2),
            b.get::<_, Decimal>(3),
            b.get::<_, Decimal>(4)
        ),
        (dec("6"), dec("9"), dec("3"), dec("0"))
    );
    assert_eq!(b.get::<_, i64>(5), changed);
    assert_eq!(
        count(
            &gw.client,
            "SELECT count(*) FROM alerts WHERE kind = 'reconcile.position_break'"
        )
        .await,
        1
    );

    // the next window (9 -> 9) is clean: still one break, one alert
    let again = operator
        .post(format!("{api}/api/v1/reconcile"))
        .body("")
        .send()
        .await
        .unwrap();
    assert_eq!(again.status().as_u16(), 202);
    common::wait_until(WAIT, || async {
        let (id, _) = newest(&gw.client).await?;
        let checked = gw
            .client
            .query_one(
                "SELECT count(*) FROM reconciliation_runs WHERE to_snapshot_id = $1",
                &[&id],
            )
            .await
            .unwrap()
            .get::<_, i64>(0);
        (id > changed && checked == 1).then_some(())
    })
    .await
    .expect("the next window reconciled");
    assert_eq!(
        count(&gw.client, "SELECT count(*) FROM reconciliation_breaks").await,
        1
    );
    assert_eq!(
        count(
            &gw.client,
            "SELECT count(*) FROM alerts WHERE kind = 'reconcile.position_break'"
        )
        .await,
        1
    );
    // the requests are on record under the token's name
    assert_eq!(
        count(
            &gw.client,
            "SELECT count(*) FROM operator_actions WHERE action = 'reconcile' AND actor = 'ops'"
        )
        .await,
        2
    );

    // the results over HTTP, for auditors
    let results: Value = auditor
        .get(format!("{api}/api/v1/reconciliation?account=paper"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(results["breaks"].as_array().unwrap().len(), 1, "{results}");
    assert_eq!(results["breaks"][0]["symbol"], "AAPL");
    assert_eq!(results["breaks"][0]["broker_change"], "3");
    assert!(results["runs"].as_array().unwrap().len() >= 3, "{results}");
    let bad = auditor
        .get(format!("{api}/api/v1/reconciliation?limit=0"))
        .send()
        .await
        .unwrap();
    assert_eq!(bad.status().as_u16(), 422);
    // and the day's summary names it
    let summary = tradegate_actors::store::reports::daily_summary(
        &gw.client,
        chrono::Utc::now().date_naive(),
    )
    .await
    .unwrap();
    assert_eq!(summary.reconciliation_breaks.len(), 1);
    assert_eq!(summary.reconciliation_breaks[0].key, "alpaca paper AAPL");
    assert!(summary.reconciled_windows >= 3);
    gw.running.stop().await.unwrap();

    // from the command line: the report, and a reconcile that finds no new window to check
    let dir = common::scratch_dir("reconcile-cli");
    std::fs::write(
        dir.join("config.toml"),
        "[[alpaca.accounts]]\nname = \"paper\"\nbase_url = \"http://127.0.0.1:9\"\n",
    )
    .unwrap();
    let run = |args: &[&str]| {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_tradegate"))
            .env("TRADEGATE_CONFIG", dir.join("config.toml"))
            .env("DATABASE_URL", &gw.db.conninfo)
            .env("TRADEGATE_AUDIT_KEY", common::audit_key())
            .env("RUST_LOG", "warn")
            .current_dir(&dir)
            .args(args)
            .output()
            .unwrap();
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    let (code, out, err) = run(&["report", "reconciliation", "--account", "paper"]);
    assert_eq!(code, Some(0), "{err}");
    assert!(out.contains("1 break(s)"), "{out}");
    assert!(out.contains("AAPL"), "{out}");
    let (code, out, err) = run(&["reconcile", "--account", "paper"]);
    assert_eq!(code, Some(0), "{out}{err}");
    assert!(out.contains("positions.sync job"), "{out}");
    let (code, _, err) = run(&["reconcile", "--account", "nobody"]);
    assert_eq!(code, Some(1));
    assert!(err.contains("unknown account"), "{err}");
}

/// Places an order at the venue directly, as the broker's own app or another program would.
async fn place_elsewhere(base_url: &str, symbol: &str, client_order_id: &str) -> String {
    let _ = tradegate_actors::tls::provider();
    let placed: Value = reqwest::Client::new()
        .post(format!("{base_url}/v2/orders"))
        .header("APCA-API-KEY-ID", "SIMKEY")
        .header("APCA-API-SECRET-KEY", "SIMSECRET")
        .json(
            &json!({"symbol": symbol, "qty": "3", "side": "buy", "type": "limit",
                      "limit_price": "1", "time_in_force": "gtc",
                      "client_order_id": client_order_id}),
        )
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    placed["id"]
        .as_str()
        .expect("the venue took the order")
        .to_string()
}

async fn external_ids(client: &tokio_postgres::Client) -> Vec<String> {
    client
        .query(
            "SELECT broker_order_id FROM external_orders ORDER BY id",
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect()
}

/// Open orders compared over the real protocol: an order placed at the venue outside the
/// gateway is recorded as external (at start, after a restart, and by a positions.sync), with
/// one alert each; an order of the gateway left working while it was down, and filled in part
/// meanwhile, is found at the restart and its fill recorded; the gateway's own orders are
/// never external.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn orders_placed_elsewhere_are_external_and_one_left_working_while_down_is_found_at_start() {
    let (venue, base_url) = start_venue(SimConfig::default()).await;
    let before = place_elsewhere(&base_url, "TSLA", "by-hand-1").await;
    let tune = |c: &mut tradegate::config::Config| {
        c.alpaca.job_poll_secs = 1;
        c.reconcile.settle_ms = 300;
    };
    let mut gw = gateway_at("reconcile-external", (venue, base_url.clone()), tune).await;
    let found = common::wait_until(WAIT, || async {
        let ids = external_ids(&gw.client).await;
        (!ids.is_empty()).then_some(ids)
    })
    .await
    .expect("the order placed elsewhere is found at start");
    assert_eq!(found, std::slice::from_ref(&before));
    let (symbol, status, client_id): (String, String, String) = {
        let r = gw
            .client
            .query_one(
                "SELECT symbol, status, client_order_id FROM external_orders",
                &[],
            )
            .await
            .unwrap();
        (r.get(0), r.get(1), r.get(2))
    };
    assert_eq!((symbol.as_str(), client_id.as_str()), ("TSLA", "by-hand-1"));
    assert!(["new", "accepted"].contains(&status.as_str()), "{status}");

    // the gateway's own resting order: working when the gateway stops
    let rest = submit(
        &mut gw,
        json!({"type": "submit_order", "request_id": "rest", "strategy": "alpha",
            "symbol": "MSFT", "side": "buy", "qty": "6", "order_type": "limit",
            "limit_price": "50", "time_in_force": "gtc"}),
    )
    .await;
    until_status(&gw, rest, "submitted|accepted").await;
    gw.running.stop().await.unwrap();

    // while it is down: the order fills in part, and another order is placed by hand
    assert!(gw.venue.fill_part(&rest.to_string(), dec("2"), dec("49")));
    let during = place_elsewhere(&base_url, "NVDA", "by-hand-2").await;
    let mut config = common::orders::gateway_config(
        &gw.db.conninfo,
        &base_url,
        &[("alpha", "alpha-token")],
        &common::scratch_dir("reconcile-external-2").join("spill"),
    );
    tune(&mut config);
    let running =
        tradegate::app::Running::start(&config, std::net::SocketAddr::from(([127, 0, 0, 1], 0)))
            .await
            .unwrap();
    let filled = common::wait_until(WAIT, || async {
        let row = gw
            .client
            .query_one(
                "SELECT x.status, x.filled_quantity FROM trade_executions x \
                 JOIN trade_decisions d ON d.id = x.trade_decision_id WHERE d.decision_id = $1",
                &[&rest],
            )
            .await
            .unwrap();
        let (status, qty): (String, Decimal) = (row.get(0), row.get(1));
        (qty == dec("2")).then_some(status)
    })
    .await
    .expect("the fill made while the gateway was down is recorded at start");
    assert_eq!(filled, "partial_fill");
    let found = common::wait_until(WAIT, || async {
        let ids = external_ids(&gw.client).await;
        (ids.len() == 2).then_some(ids)
    })
    .await
    .expect("the order placed while the gateway was down is found at start");
    assert_eq!(
        found,
        [before.clone(), during.clone()],
        "one row per order, ours never"
    );

    // a positions.sync compares the open orders too
    let third = place_elsewhere(&base_url, "AMD", "by-hand-3").await;
    let asked = client(OPERATOR)
        .post(format!("http://{}/api/v1/reconcile", running.api_addr()))
        .json(&json!({"account": "paper"}))
        .send()
        .await
        .unwrap();
    assert_eq!(asked.status().as_u16(), 202);
    common::wait_until(WAIT, || async {
        (external_ids(&gw.client).await.len() == 3).then_some(())
    })
    .await
    .expect("a positions.sync finds the third");
    assert_eq!(
        count(
            &gw.client,
            "SELECT count(*) FROM alerts WHERE kind = 'reconcile.external_order'"
        )
        .await,
        3,
        "one alert per order, however often it is listed"
    );
    let results: Value = client(AUDITOR)
        .get(format!(
            "http://{}/api/v1/reconciliation?account=paper",
            running.api_addr()
        ))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let listed: Vec<&str> = results["external_orders"]
        .as_array()
        .unwrap()
        .iter()
        .map(|o| o["broker_order_id"].as_str().unwrap())
        .collect();
    assert_eq!(listed, [third.as_str(), during.as_str(), before.as_str()]);

    // reduce-only protects the position the broker shows: 5 AAPL bought elsewhere (no fill of
    // the gateway's) may be sold down, not added to or crossed through
    gw.venue.set_position("AAPL", dec("5"), dec("100"));
    let asked = client(OPERATOR)
        .post(format!("http://{}/api/v1/reconcile", running.api_addr()))
        .json(&json!({"account": "paper"}))
        .send()
        .await
        .unwrap();
    assert_eq!(asked.status().as_u16(), 202);
    common::wait_until(WAIT, || async {
        (count(
            &gw.client,
            "SELECT count(*) FROM reconciliation_breaks WHERE symbol = 'AAPL' \
             AND broker_change = 5",
        )
        .await
            == 1)
            .then_some(())
    })
    .await
    .expect("the 5 AAPL bought elsewhere found as a break");
    let switched = client(OPERATOR)
        .post(format!("http://{}/api/v1/kill-switch", running.api_addr()))
        .body(r#"{"state":"reduce_only"}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(switched.status().as_u16(), 200);
    let mut alpha = common::orders::StrategyWs::connect(running.api_addr(), "alpha-token")
        .await
        .unwrap();
    let mut ask = async |id: &str, side: &str, qty: &str, limit: Option<&str>| {
        let mut order = json!({"type": "submit_order", "request_id": id, "strategy": "alpha",
            "symbol": "AAPL", "side": side, "qty": qty, "order_type": "market",
            "time_in_force": "day"});
        if let Some(price) = limit {
            order["order_type"] = json!("limit");
            order["limit_price"] = json!(price);
            order["time_in_force"] = json!("gtc");
        }
        alpha.send(order).await;
        alpha.answer(id).await
    };
    let more = ask("more", "buy", "1", None).await;
    assert_eq!(more["code"], "risk.reduce_only", "{more}");
    let through = ask("through", "sell", "6", None).await;
    assert_eq!(through["code"], "risk.reduce_only", "{through}");
    // a resting sell of 3 (far above the market, so it works) is reducing ...
    let down = ask("down", "sell", "3", Some("1000")).await;
    assert_eq!(
        down["type"], "ack",
        "selling what the broker shows reduces: {down}"
    );
    // ... and while it works, only 2 more may be sold
    let beyond = ask("beyond", "sell", "3", None).await;
    assert_eq!(
        beyond["code"], "risk.reduce_only",
        "5 - 3 working leaves 2: {beyond}"
    );
    let rest = ask("rest", "sell", "2", None).await;
    assert_eq!(rest["type"], "ack", "{rest}");
    running.stop().await.unwrap();
}
