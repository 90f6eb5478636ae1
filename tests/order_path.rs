//! The order path end to end over loopback: strategies on the WebSocket API, the OrderRouter's
//! checks and outbox, the AlpacaSession against the simulated venue (HTTP and the binary-frame
//! stream), and what lands in PostgreSQL. One test function: actor names are process-global,
//! so one gateway per process.

mod common;

use std::net::SocketAddr;
use std::time::Duration;

use rust_decimal::Decimal;
use serde_json::{Value, json};
use tradegate::app::Running;
use tradegate::sim::alpaca::{Faults, SimConfig};
use tradegate_actors::order_router::{RiskLimits, StrategyConfig};
use uuid::Uuid;

use common::orders::{StrategyWs, gateway_config, start_venue};
use common::{TestDb, scratch_dir, wait_until};

const WAIT: Duration = Duration::from_secs(20);

fn order(request_id: &str, symbol: &str, side: &str, qty: u32) -> Value {
    json!({
        "type": "submit_order", "request_id": request_id, "strategy": "alpha",
        "strategy_version": "1.0", "symbol": symbol, "side": side, "qty": qty.to_string(),
        "order_type": "market", "time_in_force": "day",
        // valued at this under the strategy's max_notional
        "reference_price": "100"
    })
}

fn limit(request_id: &str, symbol: &str, side: &str, qty: u32, price: &str) -> Value {
    let mut o = order(request_id, symbol, side, qty);
    o["order_type"] = json!("limit");
    o["limit_price"] = json!(price);
    o
}

async fn acked(ws: &mut StrategyWs, request_id: &str) -> Uuid {
    let answer = ws.answer(request_id).await;
    assert_eq!(answer["type"], "ack", "{answer}");
    Uuid::parse_str(answer["decision_id"].as_str().unwrap()).unwrap()
}

async fn rejected(ws: &mut StrategyWs, request_id: &str) -> String {
    let answer = ws.answer(request_id).await;
    assert_eq!(answer["type"], "reject", "{answer}");
    answer["code"].as_str().unwrap().to_string()
}

async fn scalar<T: for<'a> tokio_postgres::types::FromSql<'a>>(
    client: &tokio_postgres::Client,
    sql: &str,
    params: &[&(dyn tokio_postgres::types::ToSql + Sync)],
) -> T {
    client.query_one(sql, params).await.unwrap().get(0)
}

async fn wait_status(client: &tokio_postgres::Client, decision: Uuid, execution: &str) {
    let found = wait_until(WAIT, || async {
        let row = client
            .query_opt(
                "SELECT e.status FROM trade_executions e JOIN trade_decisions d \
                 ON d.id = e.trade_decision_id WHERE d.decision_id = $1",
                &[&decision],
            )
            .await
            .unwrap();
        row.filter(|r| r.get::<_, String>(0) == execution)
            .map(|_| ())
    })
    .await;
    assert!(
        found.is_some(),
        "decision {decision} never reached execution status {execution}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_order_path_end_to_end() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter("info")
        .with_test_writer()
        .try_init();
    let db = TestDb::new().await;
    let client = db.client().await;
    let (venue, base_url) = start_venue(SimConfig {
        rate_limit_per_min: 0,
        ..SimConfig::default()
    })
    .await;
    let mut config = gateway_config(
        &db.conninfo,
        &base_url,
        &[("alpha", "alpha-token"), ("beta", "beta-token")],
        &scratch_dir("order-path").join("spill"),
    );
    config.orders.risk = RiskLimits {
        max_notional: Some(Decimal::from(1_000_000)),
        deny_symbols: Some(vec!["BAD".into()]),
        duplicate_window_ms: Some(500),
        ..RiskLimits::default()
    };
    config.orders.strategies.insert(
        "alpha".into(),
        StrategyConfig {
            token: "alpha-token".into(),
            risk: RiskLimits {
                max_qty: Some(Decimal::from(2000)),
                ..RiskLimits::default()
            },
            ..StrategyConfig::default()
        },
    );
    config.orders.strategies.insert(
        "beta".into(),
        StrategyConfig {
            token: "beta-token".into(),
            risk: RiskLimits {
                allow_symbols: Some(vec!["MSFT".into()]),
                max_orders_per_sec: Some(3),
                ..RiskLimits::default()
            },
            ..StrategyConfig::default()
        },
    );
    let running = Running::start(&config, SocketAddr::from(([127, 0, 0, 1], 0)))
        .await
        .unwrap();
    let addr = running.api_addr();
    let base = format!("http://{addr}");
    let http = common::api::client(common::api::ALL);
    let listening = wait_until(WAIT, || async {
        (venue.stream_listeners() > 0).then_some(())
    })
    .await;
    assert!(
        listening.is_some(),
        "the session never listened to trade_updates"
    );

    // bad tokens are refused at the handshake
    for token in ["wrong-token", ""] {
        let err = StrategyWs::connect(addr, token)
            .await
            .err()
            .expect("refused");
        assert!(err.to_string().contains("401"), "{err}");
    }

    let mut alpha = StrategyWs::connect(addr, "alpha-token").await.unwrap();

    // bad messages get an error with a code; the connection stays open
    alpha.send_text("this is not json").await;
    let e = alpha
        .wait_for(WAIT, |v| v["type"] == "error")
        .await
        .unwrap();
    assert_eq!(e["code"], "malformed", "{e}");
    alpha
        .send(json!({"type": "teleport", "request_id": "u1"}))
        .await;
    let e = alpha.answer("u1").await;
    assert_eq!(
        (e["type"].as_str(), e["code"].as_str()),
        (Some("error"), Some("unknown_type"))
    );
    alpha
        .send(json!({"type": "submit_order", "request_id": "u2", "symbol": "AAPL"}))
        .await;
    let e = alpha.answer("u2").await;
    assert_eq!(e["code"], "invalid", "{e}");
    alpha
        .send(json!({"type": "submit_order", "symbol": "AAPL"}))
        .await;
    let e = alpha
        .wait_for(WAIT, |v| v["type"] == "error" && v["request_id"].is_null())
        .await
        .unwrap();
    assert_eq!(e["code"], "invalid", "{e}");
    alpha
        .send(json!({"type": "cancel_order", "request_id": "u3", "decision_id": "nope"}))
        .await;
    assert_eq!(alpha.answer("u3").await["code"], "invalid");

    // a filled order leaves the whole chain
    alpha.send(order("f1", "AAPL", "buy", 10)).await;
    let filled = acked(&mut alpha, "f1").await;
    // the outbox says how long orders waited for a commit and how long commits took
    let metrics = common::metrics_text(&base).await;
    for name in [
        "tradegate_outbox_wait_seconds_count",
        "tradegate_outbox_commit_seconds_count",
        "tradegate_outbox_commit_decisions_count",
    ] {
        assert!(
            metrics.contains(name),
            "{name} missing from /metrics:\n{metrics}"
        );
    }
    let execution = alpha
        .wait_for(WAIT, |v| {
            v["type"] == "execution" && v["decision_id"] == filled.to_string()
        })
        .await
        .unwrap();
    assert_eq!(execution["http_status"], 200, "{execution}");
    let fill = alpha
        .wait_for(WAIT, |v| {
            v["type"] == "fill" && v["decision_id"] == filled.to_string()
        })
        .await
        .unwrap_or_else(|| panic!("no fill; seen {:?}", alpha.seen));
    assert_eq!(fill["qty"], "10", "{fill}");
    wait_status(&client, filled, "filled").await;
    let row = client
        .query_one(
            "SELECT d.status, e.filled_quantity, e.filled_avg_price, e.http_status_code, \
                    rq.type, rq.payload, rs.type, rs.payload, e.broker_order_id, d.executed_at IS NOT NULL \
             FROM trade_decisions d JOIN trade_executions e ON e.trade_decision_id = d.id \
             JOIN api_payloads rq ON rq.id = e.api_request_payload_id \
             JOIN api_payloads rs ON rs.id = e.api_response_payload_id \
             WHERE d.decision_id = $1",
            &[&filled],
        )
        .await
        .unwrap();
    assert_eq!(row.get::<_, String>(0), "executed");
    assert_eq!(row.get::<_, Decimal>(1), Decimal::from(10));
    assert_eq!(row.get::<_, Decimal>(2), Decimal::from(100));
    assert_eq!(row.get::<_, i32>(3), 200);
    assert_eq!(row.get::<_, String>(4), "ApiRequest");
    let request: Value = row.get(5);
    assert_eq!(
        request["body"]["client_order_id"],
        filled.to_string(),
        "{request}"
    );
    assert_eq!(request["endpoint"], "/v2/orders");
    assert!(!request.to_string().contains("SIMSECRET"), "{request}");
    assert_eq!(row.get::<_, String>(6), "ApiResponse");
    let response: Value = row.get(7);
    assert_eq!(response["status_code"], 200);
    assert_eq!(response["body"]["client_order_id"], filled.to_string());
    let broker_order_id: String = row.get(8);
    assert!(row.get::<_, bool>(9));
    running.flush_trade_log().await.unwrap();
    let types: Vec<i16> = client
        .query(
            "SELECT event_type FROM tradelog WHERE cl_ord_id = $1 ORDER BY local_ts_us, event_type",
            &[&filled.to_string()],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    for (code, what) in [
        (10, "request"),
        (20, "response"),
        (30, "execution"),
        (31, "order update"),
    ] {
        assert!(
            types.contains(&code),
            "no {what} row in the trade log: {types:?}"
        );
    }
    assert!(
        types.iter().filter(|t| **t == 31).count() >= 2,
        "new and fill updates: {types:?}"
    );
    let linked: i64 = scalar(
        &client,
        "SELECT count(*) FROM tradelog WHERE cl_ord_id = $1 AND native_ord_id = $2 AND event_type IN (30, 31)",
        &[&filled.to_string(), &broker_order_id],
    )
    .await;
    assert!(
        linked >= 3,
        "stream events carry the broker order id: {linked}"
    );
    let secrets: i64 = scalar(
        &client,
        "SELECT count(*) FROM tradelog WHERE body::text LIKE '%SIMSECRET%'",
        &[],
    )
    .await;
    assert_eq!(secrets, 0, "a credential reached the trade log");
    let via_api: Value = http
        .get(format!("{base}/api/v1/decisions/{filled}"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(via_api["execution"]["status"], "filled", "{via_api}");
    let unknown = http
        .get(format!("{base}/api/v1/decisions/{}", Uuid::now_v7()))
        .send()
        .await
        .unwrap();
    assert_eq!(unknown.status(), 404);

    // a buying-power rejection: recorded once, never retried
    alpha.send(limit("bp", "AAPL", "buy", 1500, "100")).await;
    let poor = acked(&mut alpha, "bp").await;
    let execution = alpha
        .wait_for(WAIT, |v| {
            v["type"] == "execution" && v["decision_id"] == poor.to_string()
        })
        .await
        .unwrap();
    assert_eq!(
        (
            execution["status"].as_str(),
            execution["http_status"].as_u64()
        ),
        (Some("rejected"), Some(403))
    );
    let row = client
        .query_one(
            "SELECT d.status, e.status, e.error_message, e.http_status_code, e.error_code, d.failure_reason \
             FROM trade_decisions d JOIN trade_executions e ON e.trade_decision_id = d.id \
             WHERE d.decision_id = $1",
            &[&poor],
        )
        .await
        .unwrap();
    assert_eq!(row.get::<_, String>(0), "failed");
    assert_eq!(row.get::<_, String>(1), "rejected");
    assert_eq!(row.get::<_, String>(2), "insufficient buying power");
    assert_eq!(row.get::<_, i32>(3), 403);
    assert_eq!(row.get::<_, String>(4), "40310000");
    assert!(row.get::<_, String>(5).contains("403"));
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(
        venue.submissions_of(&poor.to_string()),
        1,
        "the rejected order was retried"
    );

    // risk checks, each with its reason code, answered at once and stored
    alpha.send(order("q", "AAPL", "buy", 2001)).await;
    assert_eq!(rejected(&mut alpha, "q").await, "risk.max_qty");
    alpha.send(limit("n", "AAPL", "buy", 900, "2000")).await;
    assert_eq!(rejected(&mut alpha, "n").await, "risk.max_notional");
    alpha.send(order("d", "BAD", "buy", 1)).await;
    assert_eq!(rejected(&mut alpha, "d").await, "risk.symbol_denied");
    alpha.send(order("bad-sym", "aapl", "buy", 1)).await;
    assert_eq!(rejected(&mut alpha, "bad-sym").await, "invalid");
    let mut no_price = order("lp", "AAPL", "buy", 1);
    no_price["order_type"] = json!("limit");
    alpha.send(no_price).await;
    assert_eq!(rejected(&mut alpha, "lp").await, "invalid");
    alpha.send(order("dup1", "AAPL", "buy", 7)).await;
    acked(&mut alpha, "dup1").await;
    alpha.send(order("dup2", "AAPL", "buy", 7)).await;
    assert_eq!(rejected(&mut alpha, "dup2").await, "risk.duplicate");
    let mut as_beta = order("wrong", "AAPL", "buy", 1);
    as_beta["strategy"] = json!("beta");
    alpha.send(as_beta).await;
    assert_eq!(rejected(&mut alpha, "wrong").await, "auth.wrong_strategy");
    let mut unknown_account = order("acct", "AAPL", "buy", 3);
    unknown_account["account"] = json!("live");
    alpha.send(unknown_account).await;
    assert_eq!(
        rejected(&mut alpha, "acct").await,
        "routing.unknown_account"
    );

    let mut beta = StrategyWs::connect(addr, "beta-token").await.unwrap();
    let mut o = order("b0", "AAPL", "buy", 1);
    o["strategy"] = json!("beta");
    beta.send(o).await;
    assert_eq!(rejected(&mut beta, "b0").await, "risk.symbol_not_allowed");
    for i in 1..=4u32 {
        let mut o = limit(&format!("b{i}"), "MSFT", "buy", i, "1");
        o["strategy"] = json!("beta");
        beta.send(o).await;
    }
    for i in 1..=3 {
        acked(&mut beta, &format!("b{i}")).await;
    }
    assert_eq!(rejected(&mut beta, "b4").await, "risk.rate_limit");
    let stored = wait_until(WAIT, || async {
        let codes: Vec<String> = client
            .query("SELECT DISTINCT reason_code FROM order_rejects", &[])
            .await
            .unwrap()
            .iter()
            .map(|r| r.get(0))
            .collect();
        (codes.len() >= 9).then_some(codes)
    })
    .await
    .expect("the rejects were not stored");
    for code in [
        "risk.max_qty",
        "risk.max_notional",
        "risk.symbol_denied",
        "invalid",
        "risk.duplicate",
        "auth.wrong_strategy",
        "routing.unknown_account",
        "risk.symbol_not_allowed",
        "risk.rate_limit",
    ] {
        assert!(
            stored.iter().any(|c| c == code),
            "{code} not in order_rejects: {stored:?}"
        );
    }

    // the kill switch: halted, reduce-only (alpha holds 10 + 7 AAPL), active again
    let tradegate = env!("CARGO_BIN_EXE_tradegate");
    let out = std::process::Command::new(tradegate)
        .args(["halt", "--reason", "test", "--api", &base])
        .args(["--token", common::api::OPERATOR])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    alpha.send(order("h1", "AAPL", "sell", 1)).await;
    assert_eq!(rejected(&mut alpha, "h1").await, "risk.halted");
    let state: Value = http
        .get(format!("{base}/api/v1/kill-switch"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(state["state"], "halted");
    let stored: String = scalar(&client, "SELECT state FROM kill_switch", &[]).await;
    assert_eq!(stored, "halted");
    let response = http
        .post(format!("{base}/api/v1/kill-switch"))
        .body(r#"{"state":"reduce_only"}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    wait_status(
        &client,
        Uuid::parse_str(&ws_decision(&client, 7).await).unwrap(),
        "filled",
    )
    .await;
    alpha.send(order("r1", "AAPL", "buy", 1)).await;
    assert_eq!(rejected(&mut alpha, "r1").await, "risk.reduce_only");
    alpha.send(order("r2", "AAPL", "sell", 30)).await;
    assert_eq!(rejected(&mut alpha, "r2").await, "risk.reduce_only");
    alpha.send(order("r3", "AAPL", "sell", 5)).await;
    let reduced = acked(&mut alpha, "r3").await;
    wait_status(&client, reduced, "filled").await;
    let bad = http
        .post(format!("{base}/api/v1/kill-switch"))
        .body(r#"{"state":"panic"}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(bad.status(), 422);
    let out = std::process::Command::new(tradegate)
        .args(["resume", "--api", &base])
        .env("TRADEGATE_TOKEN", common::api::OPERATOR)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    alpha.send(order("a1", "AAPL", "buy", 2)).await;
    acked(&mut alpha, "a1").await;

    // a batch: every decision committed before the first order reaches the venue, then sent
    // strongest signal first
    let batch: Vec<Value> = [("0.2", 11), ("0.9", 12), ("0.5", 13), ("0.7", 14)]
        .iter()
        .map(|(s, q)| {
            json!({"symbol": "MSFT", "side": "buy", "qty": q.to_string(), "order_type": "limit",
                   "limit_price": "1", "time_in_force": "day", "signal_strength": s})
        })
        .collect();
    alpha
        .send(json!({"type": "submit_batch", "request_id": "batch", "orders": batch}))
        .await;
    let mut decisions = Vec::new();
    for i in 0..4 {
        let a = alpha
            .wait_for(WAIT, |v| v["request_id"] == "batch" && v["index"] == i)
            .await
            .unwrap();
        assert_eq!(a["type"], "ack", "{a}");
        decisions.push(a["decision_id"].as_str().unwrap().to_string());
    }
    let arrived = wait_until(WAIT, || async {
        let seen: Vec<_> = venue
            .requests()
            .into_iter()
            .filter(|r| {
                r.client_order_id
                    .as_ref()
                    .is_some_and(|c| decisions.contains(c))
            })
            .collect();
        (seen.len() == 4).then_some(seen)
    })
    .await
    .expect("the batch did not reach the venue");
    let order_of: Vec<usize> = arrived
        .iter()
        .map(|r| {
            decisions
                .iter()
                .position(|d| Some(d) == r.client_order_id.as_ref())
                .unwrap()
        })
        .collect();
    assert_eq!(order_of, vec![1, 3, 2, 0], "strongest first");
    let ids: Vec<Uuid> = decisions
        .iter()
        .map(|d| Uuid::parse_str(d).unwrap())
        .collect();
    let last_created: chrono::DateTime<chrono::Utc> = scalar(
        &client,
        "SELECT max(created_at) FROM trade_decisions WHERE decision_id = ANY($1)",
        &[&ids],
    )
    .await;
    assert!(
        last_created <= arrived[0].received_at,
        "a decision was created after the first order left"
    );

    // cancel and replace of resting orders
    alpha.send(limit("rest1", "AAPL", "buy", 3, "50")).await;
    let resting = acked(&mut alpha, "rest1").await;
    wait_status(&client, resting, "submitted").await;
    alpha.send(json!({"type": "replace_order", "request_id": "rep", "decision_id": resting, "limit_price": "55"})).await;
    let rep = alpha.answer("rep").await;
    assert_eq!(rep["type"], "ack", "{rep}");
    let new_id = rep["broker_order_id"].as_str().unwrap().to_string();
    let stored: String = scalar(
        &client,
        "SELECT e.broker_order_id FROM trade_executions e JOIN trade_decisions d ON d.id = e.trade_decision_id WHERE d.decision_id = $1",
        &[&resting],
    )
    .await;
    assert_eq!(stored, new_id);
    alpha
        .send(json!({"type": "cancel_order", "request_id": "can", "decision_id": resting}))
        .await;
    assert_eq!(alpha.answer("can").await["type"], "ack");
    wait_status(&client, resting, "cancelled").await;
    let status: String = scalar(
        &client,
        "SELECT status FROM trade_decisions WHERE decision_id = $1",
        &[&resting],
    )
    .await;
    assert_eq!(status, "cancelled");
    alpha
        .send(json!({"type": "cancel_order", "request_id": "can2", "decision_id": Uuid::now_v7()}))
        .await;
    assert_eq!(alpha.answer("can2").await["code"], "unknown_decision");
    alpha
        .send(json!({"type": "cancel_all", "request_id": "all"}))
        .await;
    let all = alpha.answer("all").await;
    assert_eq!(all["type"], "ack", "{all}");
    assert_eq!(all["cancels"], 4, "the four resting batch orders: {all}");

    // duplicated stream events are recorded once
    venue.set_faults(Faults {
        duplicate_events: true,
        ..Faults::default()
    });
    alpha.send(order("dupev", "AAPL", "buy", 4)).await;
    let doubled = acked(&mut alpha, "dupev").await;
    wait_status(&client, doubled, "filled").await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let fills: i64 = scalar(
        &client,
        "SELECT count(*) FROM broker_order_events v JOIN trade_decisions d ON d.id = v.trade_decision_id \
         WHERE d.decision_id = $1 AND v.event = 'fill'",
        &[&doubled],
    )
    .await;
    assert_eq!(fills, 1);
    venue.set_faults(Faults::default());

    // the stream drops while an order fills: after the reconnect the fill is recorded once
    alpha.send(limit("gap", "AAPL", "buy", 6, "90")).await;
    let gapped = acked(&mut alpha, "gap").await;
    wait_status(&client, gapped, "submitted").await;
    venue.set_faults(Faults {
        stream_down: true,
        ..Faults::default()
    });
    venue.set_price("AAPL", Decimal::from(85));
    tokio::time::sleep(Duration::from_millis(300)).await;
    venue.set_faults(Faults::default());
    wait_status(&client, gapped, "filled").await;
    let (qty, events): (Decimal, i64) = {
        let row = client
            .query_one(
                "SELECT COALESCE(sum(v.qty), 0), count(*) FROM broker_order_events v \
                 JOIN trade_decisions d ON d.id = v.trade_decision_id \
                 WHERE d.decision_id = $1 AND v.event IN ('fill', 'partial_fill')",
                &[&gapped],
            )
            .await
            .unwrap();
        (row.get(0), row.get(1))
    };
    assert_eq!((qty, events), (Decimal::from(6), 1));
    running.flush_trade_log().await.unwrap();
    let reconnects: i64 = scalar(
        &client,
        "SELECT count(*) FROM tradelog WHERE event_type = 90 AND source = 'alpaca' AND body->>'event' = 'reconnected'",
        &[],
    )
    .await;
    assert!(reconnects >= 1);

    // an unknown Alpaca status is logged and does not crash the session
    let order_json = venue.order_by_client_id(&filled.to_string()).unwrap();
    let mut odd = order_json.clone();
    odd["status"] = json!("teleported");
    venue.push_message(json!({"stream": "trade_updates", "data": {
        "event": "teleported", "execution_id": Uuid::new_v4(), "order": odd,
        "timestamp": chrono::Utc::now().to_rfc3339()}}));
    let update = alpha
        .wait_for(WAIT, |v| {
            v["type"] == "order_update" && v["event"] == "teleported"
        })
        .await
        .unwrap();
    assert_eq!(update["decision_id"], filled.to_string());
    let status: String = scalar(
        &client,
        "SELECT e.status FROM trade_executions e JOIN trade_decisions d ON d.id = e.trade_decision_id WHERE d.decision_id = $1",
        &[&filled],
    )
    .await;
    assert_eq!(status, "filled", "an unknown status changed the execution");
    alpha.send(order("after", "AAPL", "buy", 1)).await;
    let after = acked(&mut alpha, "after").await;
    wait_status(&client, after, "filled").await;
    let health = tradegate::app::check_health(addr).await.unwrap();
    assert_eq!(health.status, "ok", "{health:?}");

    running.stop().await.unwrap();
}

/// The decision of alpha's order of `qty` (there is one).
async fn ws_decision(client: &tokio_postgres::Client, qty: i64) -> String {
    let id: Uuid = scalar(
        client,
        "SELECT decision_id FROM trade_decisions WHERE strategy_name = 'alpha' AND quantity = $1",
        &[&Decimal::from(qty)],
    )
    .await;
    id.to_string()
}
