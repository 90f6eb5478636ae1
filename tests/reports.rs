//! The audit reports on hand-built data whose right answers are known: a symbol's year, a
//! decision's lineage, why an order failed, strategy performance, failure patterns and a day's
//! summary, including empty ranges, unknown symbols and failures of every kind.

mod common;

use chrono::{DateTime, NaiveDate, TimeZone, Utc};
use rust_decimal::Decimal;
use serde_json::{Value, json};
use tokio_postgres::Client;
use tradegate_actors::store::reports::{self, Range};
use uuid::Uuid;

use common::TestDb;

fn at(y: i32, m: u32, d: u32, h: u32, min: u32) -> DateTime<Utc> {
    Utc.with_ymd_and_hms(y, m, d, h, min, 0).unwrap()
}

fn year(y: i32) -> Range {
    Range::days(
        NaiveDate::from_ymd_opt(y, 1, 1).unwrap(),
        NaiveDate::from_ymd_opt(y, 12, 31).unwrap(),
    )
    .unwrap()
}

async fn payload(sql: &Client, kind: &str, body: Value, at: DateTime<Utc>) -> i64 {
    sql.query_one(
        "INSERT INTO api_payloads (type, payload, source, captured_at) VALUES ($1, $2, 'alpaca', $3) \
         RETURNING id",
        &[&kind, &body, &at],
    )
    .await
    .unwrap()
    .get(0)
}

/// A run that starts at `start` and ends `completed` (true), failed (false) or stays running.
async fn run(
    sql: &Client,
    task: &str,
    start: DateTime<Utc>,
    end: Option<bool>,
    fetched: i32,
) -> (i64, Uuid) {
    let run_id = Uuid::new_v4();
    let id: i64 = sql
        .query_one(
            "INSERT INTO data_ingestion_runs (run_id, task_name, data_source, started_at) \
             VALUES ($1, $2, 'quiverquant', $3) RETURNING id",
            &[&run_id, &task, &start],
        )
        .await
        .unwrap()
        .get(0);
    let finished = start + chrono::Duration::minutes(5);
    match end {
        Some(true) => sql
            .execute(
                "UPDATE data_ingestion_runs SET status = 'completed', completed_at = $2, \
                 records_fetched = $3 WHERE id = $1",
                &[&id, &finished, &fetched],
            )
            .await
            .unwrap(),
        Some(false) => sql
            .execute(
                "UPDATE data_ingestion_runs SET status = 'failed', failed_at = $2, \
                 error_message = 'upstream 503' WHERE id = $1",
                &[&id, &finished],
            )
            .await
            .unwrap(),
        None => 0,
    };
    (id, run_id)
}

struct Decision<'a> {
    strategy: &'a str,
    version: &'a str,
    symbol: &'a str,
    side: &'a str,
    qty: i64,
    created: DateTime<Utc>,
    status: &'a str,
    failure: Option<&'a str>,
    run: Option<i64>,
    signal: Option<(&'a str, &'a str)>,
    rationale: Value,
}

impl Default for Decision<'_> {
    fn default() -> Self {
        Self {
            strategy: "congress",
            version: "1",
            symbol: "AAPL",
            side: "buy",
            qty: 1,
            created: at(2025, 3, 3, 14, 0),
            status: "executed",
            failure: None,
            run: None,
            signal: None,
            rationale: json!({}),
        }
    }
}

async fn decision(sql: &Client, d: Decision<'_>) -> (i64, Uuid) {
    let id = Uuid::now_v7();
    let pk: i64 = sql
        .query_one(
            "INSERT INTO trade_decisions (decision_id, strategy_name, strategy_version, account, \
                 symbol, side, quantity, order_type, limit_price, time_in_force, \
                 primary_signal_type, primary_signal_id, primary_ingestion_run_id, \
                 decision_rationale, created_at, status, failure_reason, executed_at, failed_at, \
                 cancelled_at) \
             VALUES ($1, $2, $3, 'paper', $4, $5, $6, 'limit', 185, 'day', $7, $8, $9, $10, $11, \
                 $12, $13, \
                 CASE WHEN $12 = 'executed' THEN $11::timestamptz + interval '1 second' END, \
                 CASE WHEN $12 = 'failed' THEN $11::timestamptz + interval '1 second' END, \
                 CASE WHEN $12 = 'cancelled' THEN $11::timestamptz + interval '1 minute' END) \
             RETURNING id",
            &[
                &id,
                &d.strategy,
                &d.version,
                &d.symbol,
                &d.side,
                &Decimal::from(d.qty),
                &d.signal.map(|s| s.0),
                &d.signal.map(|s| s.1),
                &d.run,
                &d.rationale,
                &d.created,
                &d.status,
                &d.failure,
            ],
        )
        .await
        .unwrap()
        .get(0);
    (pk, id)
}

struct Execution<'a> {
    status: &'a str,
    http: Option<i32>,
    code: Option<&'a str>,
    message: Option<&'a str>,
    broker_order_id: Option<&'a str>,
    filled: i64,
    price: Option<Decimal>,
    response: Value,
}

async fn execution(sql: &Client, decision: (i64, Uuid), created: DateTime<Utc>, e: Execution<'_>) {
    let request = payload(
        sql,
        "ApiRequest",
        json!({"endpoint": "/v2/orders", "method": "POST",
               "body": {"client_order_id": decision.1.to_string()}}),
        created,
    )
    .await;
    let response = payload(sql, "ApiResponse", e.response, created).await;
    sql.execute(
        "INSERT INTO trade_executions (trade_decision_id, execution_id, status, \
             api_request_payload_id, api_response_payload_id, broker_order_id, http_status_code, \
             error_code, error_message, filled_quantity, filled_avg_price, submitted_at) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12)",
        &[
            &decision.0,
            &Uuid::now_v7(),
            &e.status,
            &request,
            &response,
            &e.broker_order_id,
            &e.http,
            &e.code,
            &e.message,
            &Decimal::from(e.filled),
            &e.price,
            &(created + chrono::Duration::milliseconds(5)),
        ],
    )
    .await
    .unwrap();
}

struct Fixture {
    d1: Uuid,
    d2: Uuid,
    run_a: Uuid,
}

/// The scenario the tests share (see each test for the answers it implies).
async fn fixture(sql: &Client) -> Fixture {
    // runs of 2025-03-03: A completed with data (07:00-07:05), B completed with nothing, C failed
    let (a, run_a) = run(sql, "quiver.congress", at(2025, 3, 3, 7, 0), Some(true), 2).await;
    run(sql, "quiver.lobbying", at(2025, 3, 3, 8, 0), Some(true), 0).await;
    run(sql, "quiver.insiders", at(2025, 3, 3, 9, 0), Some(false), 0).await;
    for (record, symbol) in [("qt-1", "AAPL"), ("qt-2", "MSFT")] {
        sql.execute(
            "INSERT INTO data_ingestion_run_records (data_ingestion_run_id, record_type, record_id, \
                 operation, symbol, occurred_at, created_at) \
             VALUES ($1, 'QuiverTrade', $2, 'created', $3, $4, $5)",
            &[&a, &record, &symbol, &at(2025, 2, 28, 0, 0), &at(2025, 3, 3, 7, 4)],
        )
        .await
        .unwrap();
    }
    let call_request = payload(
        sql,
        "ApiRequest",
        json!({"endpoint": "/beta/live/congresstrading", "method": "GET"}),
        at(2025, 3, 3, 7, 1),
    )
    .await;
    let call_response = payload(
        sql,
        "ApiResponse",
        json!({"status": 200, "body": [{"Ticker": "AAPL", "Representative": "Nancy Pelosi"}]}),
        at(2025, 3, 3, 7, 2),
    )
    .await;
    sql.execute(
        "INSERT INTO api_call_logs (data_ingestion_run_id, api_request_payload_id, \
             api_response_payload_id, endpoint, http_method, http_status_code, duration_ms, created_at) \
         VALUES ($1, $2, $3, '/beta/live/congresstrading', 'GET', 200, 840, $4)",
        &[&a, &call_request, &call_response, &at(2025, 3, 3, 7, 2)],
    )
    .await
    .unwrap();

    // D1: AAPL, Monday 14:00, on run A's data, filled
    let d1 = decision(
        sql,
        Decision {
            qty: 10,
            run: Some(a),
            signal: Some(("QuiverTrade", "qt-1")),
            rationale: json!({"reason": "Pelosi bought",
                "data_lineage": {"ingestion_runs": [{"run_id": run_a.to_string()}]}}),
            ..Decision::default()
        },
    )
    .await;
    execution(
        sql,
        d1,
        at(2025, 3, 3, 14, 0),
        Execution {
            status: "filled",
            http: Some(200),
            code: None,
            message: None,
            broker_order_id: Some("alp-1"),
            filled: 10,
            price: Some(Decimal::new(18_490, 2)),
            response: json!({"id": "alp-1", "status": "accepted"}),
        },
    )
    .await;
    for (key, event, status, qty, minute) in [
        ("e1", "new", "new", None, 1),
        ("e2", "fill", "filled", Some(10), 2),
    ] {
        sql.execute(
            "INSERT INTO broker_order_events (broker, account, event_key, trade_decision_id, \
                 broker_order_id, event, order_status, qty, price, event_at, body) \
             VALUES ('alpaca', 'paper', $1, $2, 'alp-1', $3, $4, $5, $6, $7, $8)",
            &[
                &key,
                &d1.0,
                &event,
                &status,
                &qty.map(Decimal::from),
                &qty.map(|_| Decimal::new(18_490, 2)),
                &at(2025, 3, 3, 14, minute),
                &json!({"event": event}),
            ],
        )
        .await
        .unwrap();
    }
    tradegate_actors::store::ensure_tradelog_partitions(
        sql,
        NaiveDate::from_ymd_opt(2025, 3, 3).unwrap(),
        1,
    )
    .await
    .unwrap();
    for (code, second) in [(10_i16, 1), (20, 2), (31, 61), (30, 121)] {
        let ts = (at(2025, 3, 3, 14, 0) + chrono::Duration::seconds(second)).timestamp_micros();
        sql.execute(
            "INSERT INTO tradelog (event_id, local_ts_us, event_type, cl_ord_id, body) \
             VALUES ($1, $2, $3, $4, $5)",
            &[
                &Uuid::new_v4(),
                &ts,
                &code,
                &d1.1.to_string(),
                &json!({"code": code}),
            ],
        )
        .await
        .unwrap();
    }

    // D2: AAPL, Monday 15:00, insufficient buying power
    let d2 = decision(
        sql,
        Decision {
            qty: 1000,
            created: at(2025, 3, 3, 15, 0),
            status: "failed",
            failure: Some("403 insufficient buying power"),
            ..Decision::default()
        },
    )
    .await;
    execution(
        sql,
        d2,
        at(2025, 3, 3, 15, 0),
        Execution {
            status: "rejected",
            http: Some(403),
            code: Some("40310000"),
            message: Some("insufficient buying power"),
            broker_order_id: None,
            filled: 0,
            price: None,
            response: json!({"code": 40_310_000, "message": "insufficient buying power"}),
        },
    )
    .await;
    // D3: AAPL, Monday 2025-03-10 15:30, timed out
    let d3 = decision(
        sql,
        Decision {
            side: "sell",
            qty: 5,
            created: at(2025, 3, 10, 15, 30),
            status: "failed",
            failure: Some("timeout: no answer in 10 s"),
            ..Decision::default()
        },
    )
    .await;
    execution(
        sql,
        d3,
        at(2025, 3, 10, 15, 30),
        Execution {
            status: "rejected",
            http: None,
            code: Some("timeout"),
            message: Some("no answer in 10 s"),
            broker_order_id: None,
            filled: 0,
            price: None,
            response: json!({"error": "timeout"}),
        },
    )
    .await;
    // D4: AAPL, Tuesday 2025-03-11, cancelled by the strategy
    let d4 = decision(
        sql,
        Decision {
            qty: 3,
            created: at(2025, 3, 11, 10, 0),
            status: "cancelled",
            ..Decision::default()
        },
    )
    .await;
    execution(
        sql,
        d4,
        at(2025, 3, 11, 10, 0),
        Execution {
            status: "cancelled",
            http: Some(200),
            code: None,
            message: None,
            broker_order_id: Some("alp-4"),
            filled: 0,
            price: None,
            response: json!({"id": "alp-4"}),
        },
    )
    .await;
    // D5: MSFT momentum v2, Tuesday 2025-03-04, 422
    let d5 = decision(
        sql,
        Decision {
            strategy: "momentum",
            version: "2",
            symbol: "MSFT",
            created: at(2025, 3, 4, 9, 30),
            status: "failed",
            failure: Some("422 qty must be > 0"),
            ..Decision::default()
        },
    )
    .await;
    execution(
        sql,
        d5,
        at(2025, 3, 4, 9, 30),
        Execution {
            status: "rejected",
            http: Some(422),
            code: Some("42210000"),
            message: Some("qty must be > 0"),
            broker_order_id: None,
            filled: 0,
            price: None,
            response: json!({"code": 42_210_000, "message": "qty must be > 0"}),
        },
    )
    .await;
    // D6: AAPL pending (no answer yet), Wednesday 2025-03-12
    decision(
        sql,
        Decision {
            created: at(2025, 3, 12, 11, 0),
            status: "pending",
            ..Decision::default()
        },
    )
    .await;
    // D7: AAPL executed on 2024-12-31: outside 2025
    let d7 = decision(
        sql,
        Decision {
            created: at(2024, 12, 31, 20, 0),
            ..Decision::default()
        },
    )
    .await;
    execution(
        sql,
        d7,
        at(2024, 12, 31, 20, 0),
        Execution {
            status: "filled",
            http: Some(200),
            code: None,
            message: None,
            broker_order_id: Some("alp-7"),
            filled: 1,
            price: Some(Decimal::from(180)),
            response: json!({"id": "alp-7"}),
        },
    )
    .await;
    // D8: MSFT momentum v2, Monday 2025-03-03 16:00, broker 500
    let d8 = decision(
        sql,
        Decision {
            strategy: "momentum",
            version: "2",
            symbol: "MSFT",
            created: at(2025, 3, 3, 16, 0),
            status: "failed",
            failure: Some("500 internal error"),
            ..Decision::default()
        },
    )
    .await;
    execution(
        sql,
        d8,
        at(2025, 3, 3, 16, 0),
        Execution {
            status: "rejected",
            http: Some(500),
            code: None,
            message: Some("internal error"),
            broker_order_id: None,
            filled: 0,
            price: None,
            response: json!({"message": "internal error"}),
        },
    )
    .await;
    // D9: AAPL, Wednesday 2025-03-05, never reached the broker (recovery found nothing)
    decision(
        sql,
        Decision {
            created: at(2025, 3, 5, 12, 0),
            status: "failed",
            failure: Some("not_received_by_broker"),
            ..Decision::default()
        },
    )
    .await;

    // refused before a decision
    for (strategy, version, symbol, code, when) in [
        (
            "congress",
            "1",
            "AAPL",
            "risk.max_qty",
            at(2025, 3, 3, 14, 30),
        ),
        (
            "momentum",
            "2",
            "MSFT",
            "risk.halted",
            at(2025, 3, 4, 10, 0),
        ),
        (
            "congress",
            "1",
            "AAPL",
            "risk.max_qty",
            at(2024, 6, 1, 10, 0),
        ),
    ] {
        sql.execute(
            "INSERT INTO order_rejects (strategy_name, strategy_version, symbol, reason_code, \
                 reason_message, request, rejected_at) VALUES ($1, $2, $3, $4, 'refused', '{}', $5)",
            &[&strategy, &version, &symbol, &code, &when],
        )
        .await
        .unwrap();
    }
    // an IBKR fill of AAPL on 2025-03-06
    let trade: i64 = sql
        .query_one(
            "INSERT INTO broker_trades (account_id, ib_perm_id, symbol, side, fetched_at) \
             VALUES ('DU1', 77, 'AAPL', 'buy', now()) RETURNING id",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    sql.execute(
        "INSERT INTO broker_fills (trade_id, account_id, exec_id, exec_id_base, symbol, side, \
             executed_at, quantity, price, raw, fetched_at) \
         VALUES ($1, 'DU1', '0001.01', '0001', 'AAPL', 'buy', $2, 7, 185.25, '{}', now())",
        &[&trade, &at(2025, 3, 6, 15, 0)],
    )
    .await
    .unwrap();
    Fixture {
        d1: d1.1,
        d2: d2.1,
        run_a,
    }
}

fn count(list: &[reports::Count], key: &str) -> i64 {
    list.iter().find(|c| c.key == key).map_or(0, |c| c.count)
}

#[tokio::test]
async fn symbol_activity_over_a_year() {
    let db = TestDb::new().await;
    let sql = db.client().await;
    fixture(&sql).await;
    let report = reports::symbol_activity(&sql, "AAPL", year(2025), 100)
        .await
        .unwrap();
    // D1, D2, D3, D4, D6, D9 (D7 is in 2024)
    assert_eq!(report.decisions.len(), 6);
    let s = &report.summary;
    assert_eq!(
        (s.decisions, s.executed, s.failed, s.cancelled, s.pending),
        (6, 1, 3, 1, 1)
    );
    assert_eq!(s.success_rate, Some(Decimal::new(25, 2)));
    assert_eq!(
        count(&report.failure_breakdown, "insufficient_buying_power"),
        1
    );
    assert_eq!(count(&report.failure_breakdown, "api_timeout"), 1);
    assert_eq!(
        count(&report.failure_breakdown, "not_received_by_broker"),
        1
    );
    assert_eq!(report.failure_breakdown.len(), 3);
    // the data and when it became available
    assert_eq!(report.data_ingested_total, 1);
    assert_eq!(report.data_ingested[0].record_id, "qt-1");
    assert_eq!(
        report.data_ingested[0].available_at,
        Some(at(2025, 3, 3, 7, 5))
    );
    // fills from both brokers, newest first
    let fills: Vec<(&str, Option<Decimal>)> = report
        .fills
        .iter()
        .map(|f| (f.broker.as_str(), f.price))
        .collect();
    assert_eq!(
        fills,
        [
            ("ibkr", Some(Decimal::new(18_525, 2))),
            ("alpaca", Some(Decimal::new(18_490, 2)))
        ]
    );
    assert_eq!(
        count(&report.rejects, "risk.max_qty"),
        1,
        "the 2024 refusal is outside"
    );
    // newest first, with the execution beside the decision
    assert_eq!(report.decisions[0].status, "pending");
    let filled = report
        .decisions
        .iter()
        .find(|d| d.status == "executed")
        .unwrap();
    assert_eq!(filled.filled_avg_price, Some(Decimal::new(18_490, 2)));
    assert_eq!(filled.rationale["reason"], "Pelosi bought");
    // a cap on the lists leaves the totals whole
    let capped = reports::symbol_activity(&sql, "AAPL", year(2025), 2)
        .await
        .unwrap();
    assert_eq!(capped.decisions.len(), 2);
    assert_eq!(capped.summary.decisions, 6);
}

#[tokio::test]
async fn unknown_symbols_and_empty_ranges_are_empty_reports() {
    let db = TestDb::new().await;
    let sql = db.client().await;
    fixture(&sql).await;
    for (symbol, range) in [("ZZZZ", year(2025)), ("AAPL", year(2026))] {
        let report = reports::symbol_activity(&sql, symbol, range, 100)
            .await
            .unwrap();
        assert!(report.decisions.is_empty() && report.fills.is_empty());
        assert!(report.data_ingested.is_empty() && report.rejects.is_empty());
        assert_eq!(report.summary, reports::Outcomes::default());
        assert_eq!(report.summary.success_rate, None);
    }
    let empty = reports::failure_analysis(&sql, year(2026)).await.unwrap();
    assert_eq!(empty.failures, 0);
    assert!(empty.by_reason.is_empty() && empty.by_weekday_hour.is_empty());
    assert!(
        reports::strategy_performance(&sql, None, year(2026))
            .await
            .unwrap()
            .is_empty()
    );
    let day = reports::daily_summary(&sql, NaiveDate::from_ymd_opt(2025, 6, 1).unwrap())
        .await
        .unwrap();
    assert_eq!(day.decisions.decisions, 0);
    assert!(day.ingestion_runs.is_empty());
    assert!(
        reports::lineage(&sql, Uuid::new_v4())
            .await
            .unwrap()
            .is_none()
    );
    assert!(
        reports::order_failure(&sql, "no-such-order")
            .await
            .unwrap()
            .is_none()
    );
}

#[tokio::test]
async fn lineage_shows_the_data_we_had_when_the_decision_was_made() {
    let db = TestDb::new().await;
    let sql = db.client().await;
    let f = fixture(&sql).await;
    let l = reports::lineage(&sql, f.d1).await.unwrap().unwrap();
    assert_eq!(l.decision.decision_id, f.d1);
    assert_eq!(
        l.primary_signal,
        Some(("QuiverTrade".to_string(), "qt-1".to_string()))
    );
    let run = l.primary_run.as_ref().unwrap();
    assert_eq!(run.run_id, f.run_a);
    assert_eq!(run.completed_at, Some(at(2025, 3, 3, 7, 5)));
    assert_eq!(l.data_available_before_decision, Some(true));
    assert_eq!(l.lineage_runs[0]["run_id"], f.run_a.to_string());
    // the run's API call with both payloads
    assert_eq!(l.primary_run_calls.len(), 1);
    let call = &l.primary_run_calls[0];
    assert_eq!(call.http_status, Some(200));
    assert_eq!(
        call.response.as_ref().unwrap().payload["body"][0]["Ticker"],
        "AAPL"
    );
    // the execution with the request as sent
    let e = l.execution.as_ref().unwrap();
    assert_eq!(e.status, "filled");
    assert_eq!(
        e.request.as_ref().unwrap().payload["body"]["client_order_id"],
        f.d1.to_string()
    );
    assert_eq!(e.response.as_ref().unwrap().payload["id"], "alp-1");
    // every trail, in time order
    let trails: Vec<&str> = l.timeline.iter().map(|t| t.trail.as_str()).collect();
    assert_eq!(
        trails,
        [
            "decision",
            "execution",
            "decision",
            "tradelog",
            "tradelog",
            "broker_event",
            "tradelog",
            "broker_event",
            "tradelog"
        ],
        "{:#?}",
        l.timeline
    );
    assert!(l.timeline.windows(2).all(|w| w[0].at <= w[1].at));
    assert!(l.timeline.iter().any(|t| t.what == "api_event_execution"));
}

#[tokio::test]
async fn why_an_order_failed_by_decision_or_broker_order_id() {
    let db = TestDb::new().await;
    let sql = db.client().await;
    let f = fixture(&sql).await;
    let failed = reports::order_failure(&sql, &f.d2.to_string())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(failed.decision_status, "failed");
    assert_eq!(failed.execution_status.as_deref(), Some("rejected"));
    assert_eq!(failed.http_status, Some(403));
    assert_eq!(
        failed.error_message.as_deref(),
        Some("insufficient buying power")
    );
    assert_eq!(failed.reason.as_deref(), Some("insufficient_buying_power"));
    assert_eq!(failed.side.as_deref(), Some("broker_reject"));
    assert_eq!(failed.response.unwrap().payload["code"], 40_310_000);
    let by_broker_id = reports::order_failure(&sql, "alp-1")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(by_broker_id.decision_id, f.d1);
    assert_eq!(by_broker_id.decision_status, "executed");
    assert_eq!(by_broker_id.reason, None);
}

#[tokio::test]
async fn strategy_performance_keeps_signal_and_execution_sides_apart() {
    let db = TestDb::new().await;
    let sql = db.client().await;
    fixture(&sql).await;
    let lines = reports::strategy_performance(&sql, None, year(2025))
        .await
        .unwrap();
    assert_eq!(lines.len(), 2);
    let congress = &lines[0];
    assert_eq!(
        (congress.strategy.as_str(), congress.version.as_str()),
        ("congress", "1")
    );
    assert_eq!(
        (
            congress.outcomes.decisions,
            congress.outcomes.executed,
            congress.outcomes.failed
        ),
        (6, 1, 3)
    );
    assert_eq!((congress.risk_rejects, congress.cancels), (1, 1));
    // D2 refused by the broker; D3 timed out and D9 never reached it
    assert_eq!((congress.broker_rejects, congress.api_errors), (1, 2));
    let momentum = &lines[1];
    assert_eq!(momentum.outcomes.success_rate, Some(Decimal::ZERO));
    assert_eq!(
        (
            momentum.broker_rejects,
            momentum.api_errors,
            momentum.risk_rejects
        ),
        (1, 1, 1)
    );
    let only = reports::strategy_performance(&sql, Some("momentum"), year(2025))
        .await
        .unwrap();
    assert_eq!(only, vec![momentum.clone()]);
}

#[tokio::test]
async fn failure_analysis_finds_the_monday_pattern() {
    let db = TestDb::new().await;
    let sql = db.client().await;
    fixture(&sql).await;
    let a = reports::failure_analysis(&sql, year(2025)).await.unwrap();
    assert_eq!(a.failures, 5);
    assert_eq!(a.by_reason.len(), 5);
    assert_eq!(
        (count(&a.by_symbol, "AAPL"), count(&a.by_symbol, "MSFT")),
        (3, 2)
    );
    // D2 and D8 on Monday 03-03, D3 on Monday 03-10; D5 Tuesday; D9 Wednesday
    assert_eq!(count(&a.by_weekday, "1"), 3);
    assert_eq!(count(&a.by_weekday, "2"), 1);
    assert_eq!(count(&a.by_weekday, "3"), 1);
    assert_eq!(count(&a.by_weekday_hour, "1 15"), 2);
    assert_eq!(count(&a.by_weekday_hour, "1 16"), 1);
    assert_eq!(a.by_weekday[0].key, "1");
    assert_eq!(count(&a.rejects_by_code, "risk.max_qty"), 1);
    assert_eq!(count(&a.rejects_by_code, "risk.halted"), 1);
}

#[tokio::test]
async fn daily_summary_of_a_busy_day() {
    let db = TestDb::new().await;
    let sql = db.client().await;
    fixture(&sql).await;
    let day = reports::daily_summary(&sql, NaiveDate::from_ymd_opt(2025, 3, 3).unwrap())
        .await
        .unwrap();
    // D1, D2, D8
    assert_eq!(
        (
            day.decisions.decisions,
            day.decisions.executed,
            day.decisions.failed
        ),
        (3, 1, 2)
    );
    assert_eq!(count(&day.executions, "filled"), 1);
    assert_eq!(count(&day.executions, "rejected"), 2);
    assert_eq!(count(&day.failures, "insufficient_buying_power"), 1);
    assert_eq!(count(&day.failures, "broker_server_error"), 1);
    assert_eq!(count(&day.rejects, "risk.max_qty"), 1);
    assert_eq!(count(&day.ingestion_runs, "completed"), 2);
    assert_eq!(count(&day.ingestion_runs, "failed"), 1);
    assert_eq!(day.zero_record_runs, 1);
}

/// The reports over HTTP from the running gateway, and the refusals of bad requests.
#[tokio::test(flavor = "multi_thread")]
async fn reports_over_http() {
    let db = TestDb::new().await;
    let sql = db.client().await;
    let f = fixture(&sql).await;
    let mut config = tradegate::config::Config::default();
    config.database.url = db.conninfo.clone();
    config.tradelog.spill_dir = common::scratch_dir("reports-http").join("spill");
    common::api::secure(&mut config);
    let running =
        tradegate::app::Running::start(&config, std::net::SocketAddr::from(([127, 0, 0, 1], 0)))
            .await
            .unwrap();
    let base = format!("http://{}/api/v1/reports", running.api_addr());
    let get = async |path: &str| -> (u16, Value) {
        let response = common::api::client(common::api::AUDITOR)
            .get(format!("{base}{path}"))
            .send()
            .await
            .unwrap();
        let status = response.status().as_u16();
        (status, response.json().await.unwrap_or(Value::Null))
    };
    let (status, symbol) = get("/symbol/aapl?from=2025-01-01&to=2025-12-31").await;
    assert_eq!(status, 200, "{symbol}");
    assert_eq!(symbol["symbol"], "AAPL");
    assert_eq!(symbol["summary"]["decisions"], 6);
    assert_eq!(
        symbol["summary"]["success_rate"], "0.25",
        "exact, as a string"
    );
    let (status, lineage) = get(&format!("/decision/{}", f.d1)).await;
    assert_eq!(status, 200);
    assert_eq!(lineage["primary_run"]["run_id"], f.run_a.to_string());
    assert_eq!(lineage["data_available_before_decision"], true);
    let (status, order) = get(&format!("/order/{}", f.d2)).await;
    assert_eq!(status, 200);
    assert_eq!(order["http_status"], 403);
    assert_eq!(order["response"]["payload"]["code"], 40_310_000);
    let (status, strategies) = get("/strategy?name=momentum&from=2025-01-01&to=2025-12-31").await;
    assert_eq!(status, 200);
    assert_eq!(strategies.as_array().unwrap().len(), 1);
    let (status, failures) = get("/failures?from=2025-01-01&to=2025-12-31").await;
    assert_eq!(status, 200);
    assert_eq!(failures["failures"], 5);
    let (status, daily) = get("/daily?date=2025-03-03").await;
    assert_eq!(status, 200);
    assert_eq!(daily["zero_record_runs"], 1);
    // refusals
    for (path, want, code) in [
        (format!("/decision/{}", Uuid::new_v4()), 404, "not_found"),
        ("/decision/not-a-uuid".to_string(), 400, "malformed"),
        ("/order/nope".to_string(), 404, "not_found"),
        ("/failures?from=2025-13-01".to_string(), 400, "malformed"),
        (
            "/failures?from=2025-12-31&to=2025-01-01".to_string(),
            400,
            "malformed",
        ),
        ("/daily?dat=2025-03-03".to_string(), 400, "malformed"),
    ] {
        let (status, body) = get(&path).await;
        assert_eq!(status, want, "{path}: {body}");
        assert_eq!(body["code"], code, "{path}: {body}");
    }
    // the Reporter runs under the supervisor and answers on request
    let reporter = tradegate_actors::reporter::ReporterClient::default();
    assert_eq!(
        reporter.check_alerts().await.unwrap(),
        vec![],
        "2025's failures are not recent"
    );
    assert_eq!(
        reporter.purge_payloads().await.unwrap(),
        0,
        "every payload is referenced"
    );
    running.stop().await.unwrap();
}

/// `tradegate report ...` as a user runs it.
#[tokio::test(flavor = "multi_thread")]
async fn reports_on_the_command_line() {
    let db = TestDb::new().await;
    let sql = db.client().await;
    let f = fixture(&sql).await;
    let run = |args: &[&str]| {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_tradegate"))
            .env_remove("TRADEGATE_CONFIG")
            .env("DATABASE_URL", &db.conninfo)
            .env("RUST_LOG", "warn")
            .current_dir(common::scratch_dir("reports-cli"))
            .arg("report")
            .args(args)
            .output()
            .unwrap();
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    let (code, out, err) = run(&[
        "symbol",
        "AAPL",
        "--from",
        "2025-01-01",
        "--to",
        "2025-12-31",
        "--format",
        "json",
    ]);
    assert_eq!(code, Some(0), "{err}");
    let json: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(json["summary"]["failed"], 3);
    let (code, out, err) = run(&[
        "symbol",
        "AAPL",
        "--from",
        "2025-01-01",
        "--to",
        "2025-12-31",
    ]);
    assert_eq!(code, Some(0), "{err}");
    assert!(out.contains("success rate 25%"), "{out}");
    assert!(out.contains("insufficient_buying_power"), "{out}");
    let (code, out, err) = run(&["decision", &f.d1.to_string()]);
    assert_eq!(code, Some(0), "{err}");
    assert!(
        out.contains("primary ingestion run") && out.contains("before the decision"),
        "{out}"
    );
    assert!(out.contains("api_event_execution"), "{out}");
    let (code, out, _) = run(&["order", &f.d2.to_string()]);
    assert_eq!(code, Some(0));
    assert!(
        out.contains("HTTP 403") && out.contains("40310000"),
        "{out}"
    );
    let (code, out, _) = run(&["failures", "--from", "2025-01-01", "--to", "2025-12-31"]);
    assert_eq!(code, Some(0));
    assert!(
        out.contains("failed decisions") && out.contains("by ISO weekday"),
        "{out}"
    );
    let (code, out, _) = run(&["strategy", "--from", "2025-01-01", "--to", "2025-12-31"]);
    assert_eq!(code, Some(0));
    assert!(
        out.contains("congress") && out.contains("momentum"),
        "{out}"
    );
    let (code, out, _) = run(&["daily", "--date", "2025-03-03", "--format", "json"]);
    assert_eq!(code, Some(0));
    assert_eq!(
        serde_json::from_str::<Value>(&out).unwrap()["decisions"]["decisions"],
        3
    );
    // failures: a clear message and a non-zero exit
    let (code, _, err) = run(&["order", "nope"]);
    assert_ne!(code, Some(0));
    assert!(err.contains("no order \"nope\""), "{err}");
    let (code, _, err) = run(&["decision", "not-a-uuid"]);
    assert_eq!(code, Some(2), "clap refuses it: {err}");
    let (code, _, err) = run(&["failures", "--from", "2025-12-31", "--to", "2025-01-01"]);
    assert_ne!(code, Some(0));
    assert!(err.contains("before it starts"), "{err}");
}

/// Decisions created `minutes_ago` before `now`: `executed` executed and `failed` failed with
/// an HTTP `status` from the broker.
async fn outcomes(sql: &Client, now: DateTime<Utc>, executed: usize, failed: usize, status: i32) {
    let created = now - chrono::Duration::minutes(10);
    for i in 0..executed + failed {
        let ok = i < executed;
        let d = decision(
            sql,
            Decision {
                created,
                status: if ok { "executed" } else { "failed" },
                failure: (!ok).then_some("refused"),
                ..Decision::default()
            },
        )
        .await;
        execution(
            sql,
            d,
            created,
            Execution {
                status: if ok { "accepted" } else { "rejected" },
                http: Some(if ok { 200 } else { status }),
                code: None,
                message: (!ok).then_some("refused"),
                broker_order_id: None,
                filled: 0,
                price: None,
                response: json!({}),
            },
        )
        .await;
    }
}

#[tokio::test]
async fn the_failure_rate_alert_fires_exactly_above_its_threshold_once_per_window() {
    use tradegate_actors::reporter::{ReporterConfig, alerts};
    let db = TestDb::new().await;
    let sql = db.client().await;
    let config = ReporterConfig::default(); // above 30% of at least 10, over an hour
    let now = Utc::now();
    // 2 of 9 failed... then 3 of 10 (30%: not above)
    outcomes(&sql, now, 7, 2, 403).await;
    assert!(
        alerts::check(&sql, &config, now).await.unwrap().is_empty(),
        "below the minimum"
    );
    outcomes(&sql, now, 0, 1, 403).await;
    assert!(
        alerts::check(&sql, &config, now).await.unwrap().is_empty(),
        "30% is not above 30%"
    );
    // 4 of 11: above
    outcomes(&sql, now, 0, 1, 403).await;
    let raised = alerts::check(&sql, &config, now).await.unwrap();
    assert_eq!(raised.len(), 1, "{raised:?}");
    assert_eq!(raised[0].kind, alerts::FAILURE_RATE);
    assert_eq!(raised[0].details["failed"], 4);
    assert_eq!(raised[0].details["executed"], 7);
    assert!(raised[0].message.contains("36.4%"), "{}", raised[0].message);
    // once per window: the same window raises nothing new, the stored row is there
    assert!(alerts::check(&sql, &config, now).await.unwrap().is_empty());
    let stored: i64 = sql
        .query_one(
            "SELECT count(*) FROM alerts WHERE kind = 'orders.failure_rate'",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(stored, 1);
    // decisions older than the window do not count
    let later = now + chrono::Duration::hours(2);
    assert!(
        alerts::check(&sql, &config, later)
            .await
            .unwrap()
            .is_empty()
    );
}

#[tokio::test]
async fn the_api_error_alert_fires_above_its_threshold_and_reaches_the_webhook() {
    use tradegate_actors::reporter::{ReporterConfig, alerts};
    let db = TestDb::new().await;
    let sql = db.client().await;
    // a webhook on loopback that keeps what it receives
    let received = std::sync::Arc::new(std::sync::Mutex::new(Vec::<Value>::new()));
    let keep = received.clone();
    let app = axum::Router::new().route(
        "/alerts",
        axum::routing::post(move |axum::Json(v): axum::Json<Value>| {
            let keep = keep.clone();
            async move {
                keep.lock().unwrap().push(v);
                "ok"
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let hook = format!("http://{}/alerts", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await });
    let config = ReporterConfig {
        api_error_threshold: 2,
        failure_min_decisions: 1_000, // keep the failure-rate alert out of this test
        webhook_url: Some(hook),
        ..ReporterConfig::default()
    };
    let now = Utc::now();
    // a 403 is the broker refusing the order, not an API error
    outcomes(&sql, now, 0, 1, 403).await;
    outcomes(&sql, now, 0, 2, 503).await;
    assert!(
        alerts::check(&sql, &config, now).await.unwrap().is_empty(),
        "2 is not above 2"
    );
    // a data job's call that got no answer
    let (run_pk, _) = run(
        &sql,
        "quiver.congress",
        now - chrono::Duration::minutes(5),
        None,
        0,
    )
    .await;
    sql.execute(
        "INSERT INTO api_call_logs (data_ingestion_run_id, endpoint, error_message, created_at) \
         VALUES ($1, '/beta/live/congresstrading', 'connection reset', $2)",
        &[&run_pk, &(now - chrono::Duration::minutes(4))],
    )
    .await
    .unwrap();
    let raised = alerts::check(&sql, &config, now).await.unwrap();
    assert_eq!(raised.len(), 1, "{raised:?}");
    assert_eq!(raised[0].kind, alerts::API_ERRORS);
    assert_eq!(
        (
            raised[0].details["orders"].clone(),
            raised[0].details["calls"].clone()
        ),
        (json!(2), json!(1))
    );
    alerts::announce(&tradegate_actors::tls::local_http(), &config, &raised).await;
    let got = received.lock().unwrap().clone();
    assert_eq!(got.len(), 1);
    assert_eq!(got[0]["kind"], "broker.api_errors");
    assert_eq!(got[0]["id"], raised[0].id);
    // a zero-record run's alert, raised by the IngestionLogger, is forwarded to the webhook too
    let zero = tradegate_actors::store::alerts::insert_alert(
        &sql,
        &tradegate_actors::store::alerts::NewAlert {
            kind: "ingestion.zero_records".into(),
            severity: "warning",
            message: "run x completed with zero records fetched".into(),
            details: json!({}),
            dedupe_key: Some("run-x".into()),
        },
    )
    .await
    .unwrap()
    .unwrap();
    let elsewhere = tradegate_actors::store::alerts::raised_elsewhere(&sql, raised[0].id)
        .await
        .unwrap();
    assert_eq!(
        elsewhere.iter().map(|a| a.id).collect::<Vec<_>>(),
        vec![zero]
    );
    assert!(
        tradegate_actors::store::alerts::raised_elsewhere(&sql, zero)
            .await
            .unwrap()
            .is_empty(),
        "forwarded once"
    );
    alerts::post(&tradegate_actors::tls::local_http(), &config, &elsewhere).await;
    let got = received.lock().unwrap().clone();
    assert_eq!(got.len(), 2);
    assert_eq!(got[1]["kind"], "ingestion.zero_records");
}

#[tokio::test]
async fn retention_purges_old_payloads_but_keeps_every_referenced_one() {
    use tradegate_actors::store::retention::purge_payloads;
    let db = TestDb::new().await;
    let sql = db.client().await;
    let f = fixture(&sql).await; // every payload of the fixture is referenced, from 2025
    let referenced: i64 = sql
        .query_one("SELECT count(*) FROM api_payloads", &[])
        .await
        .unwrap()
        .get(0);
    let old = Utc::now() - chrono::Duration::days(800);
    let mut unreferenced_old = Vec::new();
    for i in 0..7 {
        unreferenced_old.push(
            payload(
                &sql,
                "ApiRequest",
                json!({"endpoint": format!("/old/{i}"), "method": "GET"}),
                old,
            )
            .await,
        );
    }
    let recent = payload(
        &sql,
        "ApiRequest",
        json!({"endpoint": "/recent", "method": "GET"}),
        Utc::now(),
    )
    .await;
    let cutoff = Utc::now() - chrono::Duration::days(730);
    // in batches of 3: 3 + 3 + 1
    let deleted = purge_payloads(&sql, cutoff, 3).await.unwrap();
    assert_eq!(deleted, 7);
    let left: Vec<i64> = sql
        .query("SELECT id FROM api_payloads ORDER BY id", &[])
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert_eq!(left.len() as i64, referenced + 1);
    assert!(left.contains(&recent));
    assert!(unreferenced_old.iter().all(|id| !left.contains(id)));
    // the fixture's payloads are far past a 30-day cutoff, and all still referenced
    assert_eq!(
        purge_payloads(&sql, Utc::now() - chrono::Duration::days(30), 3)
            .await
            .unwrap(),
        0
    );
    let l = reports::lineage(&sql, f.d1).await.unwrap().unwrap();
    assert!(
        l.execution.unwrap().request.is_some(),
        "the execution keeps its request"
    );
    // and `tradegate purge` runs the same with the trade log's retention
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_tradegate"))
        .env_remove("TRADEGATE_CONFIG")
        .env("DATABASE_URL", &db.conninfo)
        .env("TRADEGATE_AUDIT_KEY", common::audit_key())
        .env("RUST_LOG", "warn")
        .current_dir(common::scratch_dir("reports-purge"))
        .args(["purge", "--payload-days", "1", "--format", "json"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let json: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(
        json["payloads_deleted"], 0,
        "the one left unreferenced is minutes old"
    );
    // the fixture's trade-log day (2025-03-03) is past the hot window: exported, then dropped
    assert_eq!(json["tradelog"]["dropped"], json!(["2025-03-03"]), "{json}");
    assert_eq!(json["tradelog"]["exported"][0][2], 4, "{json}");
}

#[tokio::test]
async fn seed_data_generates_a_consistent_trail() {
    let db = TestDb::new().await;
    let mut sql = db.client().await;
    let report = tradegate::commands::seed::seed(&mut sql, 2, 1, |_, _| {})
        .await
        .unwrap();
    assert_eq!(report.decisions, 548);
    assert_eq!(report.tradelog_events, 5480);
    assert_eq!(report.ingestion_runs, 48);
    let one = |q: &'static str| {
        let sql = &sql;
        async move { sql.query_one(q, &[]).await.unwrap().get::<_, i64>(0) }
    };
    // every decision but the never-received ones has an execution with both payloads
    let never_received = one("SELECT count(*) FROM trade_decisions \
                              WHERE failure_reason = 'not_received_by_broker'")
    .await;
    assert!(never_received > 0);
    assert_eq!(
        one("SELECT count(*) FROM trade_executions").await,
        548 - never_received
    );
    assert_eq!(report.payloads, 2 * (548 - never_received));
    assert_eq!(
        one("SELECT count(*) FROM trade_executions e \
             JOIN trade_decisions d ON d.id = e.trade_decision_id \
             JOIN api_payloads q ON q.id = e.api_request_payload_id \
             WHERE q.payload #>> '{body,client_order_id}' = d.decision_id::text")
        .await,
        548 - never_received,
        "each request names its own decision"
    );
    // runs: one failed and one empty a day, the rest completed with their records
    assert_eq!(
        one("SELECT count(*) FROM data_ingestion_runs WHERE status = 'failed'").await,
        2
    );
    assert_eq!(
        one("SELECT count(*) FROM data_ingestion_runs \
             WHERE status = 'completed' AND records_fetched = 0")
        .await,
        2
    );
    assert_eq!(
        one("SELECT count(*) FROM data_ingestion_runs WHERE status = 'running'").await,
        0
    );
    // and the reports read it
    let range = Range::days(report.first_day.unwrap(), report.last_day.unwrap()).unwrap();
    let symbol = reports::symbol_activity(&sql, "S001", range, 100)
        .await
        .unwrap();
    assert!(symbol.summary.decisions > 0 && symbol.data_ingested_total > 0);
    let failures = reports::failure_analysis(&sql, range).await.unwrap();
    assert_eq!(
        failures.failures,
        one("SELECT count(*) FROM trade_decisions WHERE status = 'failed'").await
    );
    assert!(failures.by_reason.len() >= 6, "{:?}", failures.by_reason);
}

#[tokio::test]
async fn every_kind_of_failure_gets_its_reason_and_side() {
    let db = TestDb::new().await;
    let sql = db.client().await;
    let created = at(2025, 5, 5, 12, 0);
    // (HTTP status, error code, execution status; None: no execution), the decision's own
    // reason, and what the reports must call it
    type Submission<'a> = Option<(Option<i32>, Option<&'a str>, &'a str)>;
    let kinds: [(Submission, &str, &str, &str); 10] = [
        (
            Some((Some(403), Some("40310000"), "rejected")),
            "403 insufficient buying power",
            "insufficient_buying_power",
            "broker_reject",
        ),
        (
            Some((Some(422), Some("42210000"), "rejected")),
            "422 invalid",
            "validation_rejected",
            "broker_reject",
        ),
        (
            Some((Some(429), Some("42910000"), "rejected")),
            "429 too many",
            "rate_limited",
            "api_error",
        ),
        (
            Some((Some(502), None, "rejected")),
            "502 bad gateway",
            "broker_server_error",
            "api_error",
        ),
        (
            Some((None, Some("timeout"), "rejected")),
            "timeout",
            "api_timeout",
            "api_error",
        ),
        (
            Some((None, Some("transport"), "rejected")),
            "transport",
            "api_transport_error",
            "api_error",
        ),
        (
            Some((Some(404), Some("40410000"), "rejected")),
            "404 no such asset",
            "broker_refused_404",
            "broker_reject",
        ),
        (
            Some((Some(200), None, "rejected")),
            "rejected by broker",
            "rejected_by_broker",
            "broker_reject",
        ),
        (
            None,
            "not_received_by_broker",
            "not_received_by_broker",
            "api_error",
        ),
        (
            None,
            "the session was removed",
            "the session was removed",
            "broker_reject",
        ),
    ];
    let mut ids = Vec::new();
    for (execution_of, failure, _, _) in &kinds {
        let d = decision(
            &sql,
            Decision {
                created,
                status: "failed",
                failure: Some(failure),
                ..Decision::default()
            },
        )
        .await;
        if let Some((http, code, status)) = execution_of {
            execution(
                &sql,
                d,
                created,
                Execution {
                    status,
                    http: *http,
                    code: *code,
                    message: Some(failure),
                    broker_order_id: None,
                    filled: 0,
                    price: None,
                    response: json!({"message": failure}),
                },
            )
            .await;
        }
        ids.push(d.1);
    }
    let analysis = reports::failure_analysis(&sql, year(2025)).await.unwrap();
    assert_eq!(analysis.failures, 10);
    for ((_, _, reason, side), id) in kinds.iter().zip(&ids) {
        assert_eq!(
            count(&analysis.by_reason, reason),
            1,
            "{reason}: {:?}",
            analysis.by_reason
        );
        let order = reports::order_failure(&sql, &id.to_string())
            .await
            .unwrap()
            .unwrap();
        assert_eq!(order.reason.as_deref(), Some(*reason));
        assert_eq!(order.side.as_deref(), Some(*side), "{reason}");
    }
    let strategy = reports::strategy_performance(&sql, None, year(2025))
        .await
        .unwrap();
    assert_eq!((strategy[0].broker_rejects, strategy[0].api_errors), (5, 5));
}
