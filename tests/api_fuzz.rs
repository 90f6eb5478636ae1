//! Bad input never crashes and never leaks: arbitrary bytes, truncated JSON, huge numbers, deep
//! nesting, wrong types and unknown fields thrown at every JSON body of the HTTP API and at the
//! strategy protocol, over real HTTP and WebSocket. Each gets a coded error (or, where it
//! happens to be valid, its answer), nothing is written for a refusal, the connection stays
//! usable, no answer echoes the token, and the gateway keeps serving.

mod common;

use std::net::SocketAddr;
use std::time::Duration;

use proptest::prelude::*;
use serde_json::{Value, json};
use tradegate::app::Running;
use tradegate::config::Config;

use common::api::{INGEST, OPERATOR};
use common::{TestDb, scratch_dir};

/// A leaf or a small value of any JSON type, numbers far past any Decimal included.
fn any_value() -> impl Strategy<Value = Value> {
    prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(|n| json!(n)),
        any::<f64>().prop_map(|f| json!(f)),
        "[a-z0-9 _\\-\\\\\"\u{0}\u{7f}\u{1F600}]{0,24}".prop_map(Value::String),
        Just(json!([1, "x", null])),
        Just(json!({"nested": {"deeper": [1]}})),
    ]
}

/// `template` with one field replaced by any value, or an unknown field added, or both.
fn mutated(template: Value) -> impl Strategy<Value = Vec<u8>> {
    let keys: Vec<String> = template
        .as_object()
        .map(|o| o.keys().cloned().collect())
        .unwrap_or_default();
    let n = keys.len().max(1);
    (0..n, any_value(), any::<bool>(), any::<bool>()).prop_map(
        move |(i, value, replace, unknown)| {
            let mut v = template.clone();
            if let (Some(o), Some(key)) = (v.as_object_mut(), keys.get(i)) {
                if replace || !unknown {
                    o.insert(key.clone(), value.clone());
                }
                if unknown {
                    o.insert("not_a_field".into(), value);
                }
            }
            v.to_string().into_bytes()
        },
    )
}

/// Hostile bodies for a route whose valid body looks like `template`.
fn hostile(template: Value) -> impl Strategy<Value = Vec<u8>> {
    let text = template.to_string().into_bytes();
    let len = text.len();
    prop_oneof![
        proptest::collection::vec(any::<u8>(), 0..300),
        (0..len).prop_map(move |cut| text[..cut].to_vec()),
        (65usize..400).prop_map(|d| format!("{}1{}", "[".repeat(d), "]".repeat(d)).into_bytes()),
        Just(br#"{"state": 1e999999, "qty": 123456789012345678901234567890123456789}"#.to_vec()),
        Just(b"\"just a string\"".to_vec()),
        Just(b"[]".to_vec()),
        mutated(template),
    ]
}

/// Rows that refused input must not have added to, and the kill switch's state.
async fn footprint(client: &tokio_postgres::Client) -> Vec<String> {
    let row = client
        .query_one(
            "SELECT (SELECT count(*) FROM operator_actions), \
                    (SELECT count(*) FROM data_ingestion_runs), \
                    (SELECT count(*) FROM api_call_logs), \
                    (SELECT count(*) FROM data_ingestion_run_records), \
                    (SELECT count(*) FROM api_payloads), \
                    (SELECT count(*) FROM jobs), \
                    (SELECT count(*) FROM trade_decisions), \
                    (SELECT state FROM kill_switch), \
                    (SELECT string_agg(status, ',' ORDER BY id) FROM data_ingestion_runs)",
            &[],
        )
        .await
        .unwrap();
    (0..7)
        .map(|i| row.get::<_, i64>(i).to_string())
        .chain([
            row.get::<_, String>(7),
            row.get::<_, Option<String>>(8).unwrap_or_default(),
        ])
        .collect()
}

#[test]
fn hostile_bodies_get_coded_errors_write_nothing_and_leave_the_gateway_serving() {
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let _one = runtime.block_on(common::orders::one_gateway());
    let (db, running) = runtime.block_on(async {
        let db = TestDb::new().await;
        let mut config = Config::default();
        config.database.url = db.conninfo.clone();
        config.tradelog.spill_dir = scratch_dir("api-fuzz").join("spill");
        config.ibkr.accounts = vec!["GA1".into()];
        config.ibkr.port = 1; // nothing listens: a sync fails, which is an answer too
        config.ibkr.sync_interval_secs = 0;
        common::api::secure(&mut config);
        let running = Running::start(&config, SocketAddr::from(([127, 0, 0, 1], 0)))
            .await
            .unwrap();
        (db, running)
    });
    let base = format!("http://{}", running.api_addr());
    let sql = runtime.block_on(db.client());
    let run_id = runtime.block_on(async {
        let r: Value = common::api::client(INGEST)
            .post(format!("{base}/api/v1/ingestion/runs"))
            .json(&json!({"task": "fuzz", "source": "s"}))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        r["run_id"].as_str().unwrap().to_string()
    });
    let run = format!("/api/v1/ingestion/runs/{run_id}");
    let routes: Vec<(String, &str, Value)> = vec![
        (
            "/api/v1/kill-switch".into(),
            OPERATOR,
            json!({"state": "active", "reason": "r"}),
        ),
        (
            "/api/v1/ingestion/runs".into(),
            INGEST,
            json!({"task": "t", "source": "s", "metadata": {}}),
        ),
        (
            format!("{run}/api-calls"),
            INGEST,
            json!({"endpoint": "/x", "method": "GET", "status_code": 200, "duration_ms": 5}),
        ),
        (
            format!("{run}/records"),
            INGEST,
            json!({"records": [{"record_type": "T", "record_id": "1", "operation": "created"}]}),
        ),
        (
            format!("{run}/complete"),
            INGEST,
            json!({"fetched": 1, "created": 1, "updated": 0, "skipped": 0}),
        ),
        (
            format!("{run}/fail"),
            INGEST,
            json!({"error": "e", "details": {}}),
        ),
        (
            "/api/v1/trades/sync".into(),
            OPERATOR,
            json!({"account_id": "GA1", "lookback_days": 1}),
        ),
        (
            "/api/v1/jobs/trades.sync".into(),
            OPERATOR,
            json!({"account_id": "GA1", "lookback_days": 1}),
        ),
    ];
    for (path, token, template) in routes {
        let http = common::api::client(token);
        let config = ProptestConfig {
            cases: 48,
            failure_persistence: None,
            ..ProptestConfig::default()
        };
        proptest!(config, |(body in hostile(template.clone()))| {
            let (status, answer, before, after) = runtime.block_on(async {
                let before = footprint(&sql).await;
                let response = http
                    .post(format!("{base}{path}"))
                    .header("content-type", "application/json")
                    .body(body.clone())
                    .timeout(Duration::from_secs(30))
                    .send()
                    .await
                    .unwrap();
                let status = response.status().as_u16();
                let text = response.text().await.unwrap();
                (status, text, before, footprint(&sql).await)
            });
            prop_assert!(!answer.contains(token), "the token was echoed: {answer}");
            if (200..300).contains(&status) {
                return Ok(());
            }
            // a sync against an unreachable TWS is a 502, the one server-side answer expected
            prop_assert!(status < 500 || status == 502, "{path}: {status} {answer}");
            let v: Value = serde_json::from_str(&answer)
                .map_err(|e| TestCaseError::fail(format!("{path}: not JSON ({e}): {answer}")))?;
            prop_assert!(
                v["code"].as_str().is_some_and(|c| !c.is_empty())
                    && v["message"].as_str().is_some(),
                "{path}: not a coded error: {answer}"
            );
            if status != 502 {
                prop_assert_eq!(&before, &after, "{} {} wrote something: {}", path, status, answer);
            }
        });
    }
    // still serving, and healthy
    let health = runtime.block_on(async {
        tradegate_actors::tls::local_http()
            .get(format!("{base}/health"))
            .send()
            .await
            .unwrap()
            .status()
    });
    assert_eq!(health, 200);
    runtime.block_on(async { running.stop().await.unwrap() });
}

#[test]
fn hostile_strategy_frames_get_an_error_each_and_the_connection_stays_usable() {
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let _one = runtime.block_on(common::orders::one_gateway());
    let (db, running, ws) = runtime.block_on(async {
        let db = TestDb::new().await;
        let mut config = Config::default();
        config.database.url = db.conninfo.clone();
        config.tradelog.spill_dir = scratch_dir("strategy-fuzz").join("spill");
        config.orders.strategies.insert(
            "alpha".into(),
            tradegate_actors::order_router::StrategyConfig {
                token: "alpha-strategy-token".into(),
                ..Default::default()
            },
        );
        common::api::secure(&mut config);
        let running = Running::start(&config, SocketAddr::from(([127, 0, 0, 1], 0)))
            .await
            .unwrap();
        let ws = common::orders::StrategyWs::connect(running.api_addr(), "alpha-strategy-token")
            .await
            .unwrap();
        (db, running, tokio::sync::Mutex::new(ws))
    });
    let sql = runtime.block_on(db.client());
    let template = json!({
        "type": "submit_order", "request_id": "r", "symbol": "AAPL", "side": "buy",
        "qty": "1", "order_type": "limit", "limit_price": "10", "time_in_force": "day"
    });
    let config = ProptestConfig {
        cases: 96,
        failure_persistence: None,
        ..ProptestConfig::default()
    };
    let acked = std::cell::Cell::new(0usize);
    proptest!(config, |(frame in hostile(template.clone()))| {
        let answer = runtime.block_on(async {
            let mut ws = ws.lock().await;
            ws.send_text(&String::from_utf8_lossy(&frame)).await;
            ws.wait_for(Duration::from_secs(10), |v| {
                matches!(v["type"].as_str(), Some("error" | "reject" | "ack"))
            })
            .await
        });
        let answer = answer.ok_or_else(|| TestCaseError::fail("no answer to a frame"))?;
        prop_assert!(!answer.to_string().contains("alpha-strategy-token"));
        if answer["type"] == "ack" {
            acked.set(acked.get() + 1);
        }
        if answer["type"] == "error" || answer["type"] == "reject" {
            prop_assert!(
                answer["code"].as_str().is_some_and(|c| !c.is_empty()),
                "not coded: {answer}"
            );
        }
    });
    // nothing without an ack became a decision, and the connection still answers
    let acks = runtime.block_on(async {
        let decisions: i64 = sql
            .query_one("SELECT count(*) FROM trade_decisions", &[])
            .await
            .unwrap()
            .get(0);
        let mut ws = ws.lock().await;
        ws.send(json!({"type": "cancel_order", "request_id": "last"}))
            .await;
        let last = ws.answer("last").await;
        assert_eq!(last["type"], "error", "{last}");
        decisions
    });
    let acked = acked.get();
    assert!(
        acks as usize <= acked,
        "{acks} decisions from {acked} acknowledged frames"
    );
    drop(ws);
    runtime.block_on(async { running.stop().await.unwrap() });
}
