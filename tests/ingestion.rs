//! Data ingestion logging: the run state machine (database and actor), records and API calls
//! over the HTTP API, the zero-records alert, and decision lineage.

mod common;

use std::net::SocketAddr;
use std::time::Duration;

use common::{TestDb, pool, sqlstate};
use rust_decimal::Decimal;
use serde_json::{Value, json};
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tradegate::api::{self, ApiState};
use tradegate_actors::domain::{
    ApiPayload, DecisionReject, IngestionRun, LineagePolicy, NewDecision, NewRun, OrderType,
    PrimarySignal, RecordOperation, RunCounts, RunRecord, RunStatus, Side, TimeInForce,
};
use tradegate_actors::gateway::{ChildSpec, Gateway, GatewayHandle, RestartPolicy};
use tradegate_actors::ingestion_logger::{
    IngestionClient, IngestionConfig, IngestionError, IngestionLogger, IngestionLoggerArgs,
    RunFilter,
};
use tradegate_actors::store::decisions::{
    REJECT_RUN_NOT_COMPLETED, REJECT_UNKNOWN_RUN, create_decisions, create_decisions_with_requests,
};
use tradegate_actors::store::payloads::{get_payload, insert_payloads};
use uuid::Uuid;

/// An IngestionLogger (under a unique name) under a Gateway, with the HTTP API on loopback.
struct Logger {
    db: TestDb,
    client: IngestionClient,
    base: String,
    http: reqwest::Client,
    gateway: Option<GatewayHandle>,
    stop_api: Option<oneshot::Sender<()>>,
}

impl Logger {
    async fn start() -> Self {
        Self::with_config(IngestionConfig::default()).await
    }

    async fn with_config(config: IngestionConfig) -> Self {
        let db = TestDb::new().await;
        let pool = pool(&db.conninfo, 4);
        let name = format!("ingestion_logger_{}", Uuid::new_v4().simple());
        let args = IngestionLoggerArgs {
            pool: pool.clone(),
            config,
        };
        let gateway = Gateway::start(
            vec![ChildSpec::new(name.clone(), move || {
                (IngestionLogger, args.clone())
            })],
            RestartPolicy::default(),
        )
        .await
        .expect("start the gateway");
        let client = IngestionClient::new(name);
        let listener = TcpListener::bind(SocketAddr::from(([127, 0, 0, 1], 0)))
            .await
            .unwrap();
        let addr = listener.local_addr().unwrap();
        let state = ApiState {
            pool,
            gateway: gateway.actor().clone(),
            metrics: tradegate::telemetry::metrics_handle(),
            ingestion: client.clone(),
            ibkr: tradegate_actors::ibkr_syncer::IbkrSyncClient::new(
                std::time::Duration::from_secs(60),
            ),
            ibkr_accounts: Vec::new(),
            alpaca_accounts: Vec::new(),
            reconcile: Default::default(),
            orders: Default::default(),
            hub: Default::default(),
            router: Default::default(),
            auth: std::sync::Arc::new(
                tradegate::api::auth::Auth::from_config(
                    &tradegate::config::ApiConfig {
                        tokens: common::api::tokens(),
                        max_requests_per_sec: 1_000_000,
                        ..Default::default()
                    },
                    None,
                )
                .unwrap(),
            ),
            limits: Default::default(),
            tls: None,
        };
        let (stop_api, stopped) = oneshot::channel::<()>();
        tokio::spawn(api::serve(listener, state, async {
            let _ = stopped.await;
        }));
        Self {
            db,
            client,
            base: format!("http://{addr}"),
            http: common::api::client(common::api::ALL),
            gateway: Some(gateway),
            stop_api: Some(stop_api),
        }
    }

    async fn post(&self, path: &str, body: &str) -> (u16, Value) {
        let response = self
            .http
            .post(format!("{}{path}", self.base))
            .header("content-type", "application/json")
            .body(body.to_string())
            .send()
            .await
            .expect("POST");
        let status = response.status().as_u16();
        (status, response.json().await.unwrap_or(Value::Null))
    }

    async fn get(&self, path: &str) -> (u16, Value) {
        let response = self
            .http
            .get(format!("{}{path}", self.base))
            .send()
            .await
            .expect("GET");
        let status = response.status().as_u16();
        (status, response.json().await.unwrap_or(Value::Null))
    }

    async fn start_run(&self, task: &str) -> IngestionRun {
        self.client
            .start_run(NewRun::new(task, "quiverquant"))
            .await
            .expect("start a run")
    }

    async fn stop(mut self) {
        if let Some(stop) = self.stop_api.take() {
            let _ = stop.send(());
        }
        if let Some(gateway) = self.gateway.take() {
            gateway.shutdown().await.expect("stop the gateway");
        }
    }
}

async fn scalar(client: &tokio_postgres::Client, sql: &str, run: Uuid) -> i64 {
    client.query_one(sql, &[&run]).await.unwrap().get(0)
}

async fn status_of(client: &tokio_postgres::Client, run: Uuid) -> String {
    client
        .query_one(
            "SELECT status FROM data_ingestion_runs WHERE run_id = $1",
            &[&run],
        )
        .await
        .unwrap()
        .get(0)
}

fn records(range: std::ops::Range<u32>) -> Vec<RunRecord> {
    range
        .map(|i| {
            RunRecord::new("QuiverTrade", format!("qt-{i}"), RecordOperation::Created)
                .with_symbol(["AAPL", "MSFT", "NVDA"][i as usize % 3])
        })
        .collect()
}

#[tokio::test]
async fn the_database_refuses_every_illegal_transition() {
    let db = TestDb::new().await;
    let client = db.client().await;
    let insert = |status: &'static str| {
        format!(
            "INSERT INTO data_ingestion_runs (run_id, task_name, data_source, status, started_at, completed_at) \
             VALUES ('{}', 't', 's', '{status}', now(), {})",
            Uuid::new_v4(),
            if status == "completed" {
                "now()"
            } else {
                "NULL"
            }
        )
    };
    assert_eq!(
        sqlstate(client.execute(&insert("completed"), &[]).await),
        "23514",
        "a run cannot be born completed"
    );
    let run = |id: Uuid| {
        format!(
            "INSERT INTO data_ingestion_runs (run_id, task_name, data_source, started_at) \
             VALUES ('{id}', 't', 's', now())"
        )
    };
    let (done, failed) = (Uuid::new_v4(), Uuid::new_v4());
    client.batch_execute(&run(done)).await.unwrap();
    client.batch_execute(&run(failed)).await.unwrap();
    let set = |id: Uuid, assignment: &str| {
        format!("UPDATE data_ingestion_runs SET {assignment} WHERE run_id = '{id}'")
    };
    // a running run may report progress and then finish, once
    client
        .execute(&set(done, "records_fetched = 5"), &[])
        .await
        .unwrap();
    assert_eq!(
        sqlstate(client.execute(&set(done, "status = 'paused'"), &[]).await),
        "23514"
    );
    client
        .execute(
            &set(done, "status = 'completed', completed_at = now()"),
            &[],
        )
        .await
        .unwrap();
    client
        .execute(&set(failed, "status = 'failed', failed_at = now()"), &[])
        .await
        .unwrap();
    for (id, assignment) in [
        (done, "status = 'running', completed_at = NULL"),
        (
            done,
            "status = 'failed', completed_at = NULL, failed_at = now()",
        ),
        (done, "records_fetched = 6"),
        (done, "status = 'completed'"),
        (
            failed,
            "status = 'completed', failed_at = NULL, completed_at = now()",
        ),
        (failed, "status = 'running', failed_at = NULL"),
        (failed, "error_message = 'rewritten'"),
    ] {
        assert_eq!(
            sqlstate(client.execute(&set(id, assignment), &[]).await),
            "23514",
            "{assignment} must be refused"
        );
    }
    assert_eq!(status_of(&client, done).await, "completed");
    assert_eq!(status_of(&client, failed).await, "failed");
    let fetched: i32 = client
        .query_one(
            "SELECT records_fetched FROM data_ingestion_runs WHERE run_id = $1",
            &[&done],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(fetched, 5, "a finished run's counts are history");
}

#[tokio::test(flavor = "multi_thread")]
async fn the_actor_refuses_every_illegal_transition_and_changes_nothing() {
    let logger = Logger::start().await;
    let sql = logger.db.client().await;
    let done = logger.start_run("t.done").await;
    assert_eq!(done.status, RunStatus::Running);
    let counts = RunCounts {
        fetched: 3,
        created: 1,
        updated: 1,
        skipped: 1,
    };
    let completed = logger
        .client
        .complete(done.run_id, Some(counts))
        .await
        .unwrap();
    assert_eq!(completed.status, RunStatus::Completed);
    assert_eq!(completed.counts, counts);
    assert!(completed.completed_at.is_some() && completed.failed_at.is_none());

    let failed = logger.start_run("t.failed").await;
    let failed = logger
        .client
        .fail(
            failed.run_id,
            "source returned 500",
            Some(json!({"status": 500})),
        )
        .await
        .unwrap();
    assert_eq!(failed.status, RunStatus::Failed);
    assert_eq!(failed.error_message.as_deref(), Some("source returned 500"));

    let refusals: Vec<(Uuid, Result<IngestionRun, IngestionError>)> = vec![
        (
            done.run_id,
            logger.client.complete(done.run_id, Some(counts)).await,
        ),
        (
            done.run_id,
            logger.client.fail(done.run_id, "late", None).await,
        ),
        (
            failed.run_id,
            logger.client.complete(failed.run_id, None).await,
        ),
        (
            failed.run_id,
            logger.client.fail(failed.run_id, "again", None).await,
        ),
    ];
    for (run_id, result) in refusals {
        match result {
            Err(IngestionError::IllegalTransition {
                run_id: r,
                from,
                to,
            }) => {
                assert_eq!(r, run_id);
                assert!(from.is_terminal() && to.is_terminal());
                let text = IngestionError::IllegalTransition {
                    run_id: r,
                    from,
                    to,
                }
                .to_string();
                assert!(text.contains("cannot become"), "{text}");
            }
            other => panic!("expected an illegal transition, got {other:?}"),
        }
    }
    for run_id in [done.run_id, failed.run_id] {
        match logger.client.record_records(run_id, records(0..2)).await {
            Err(IngestionError::RunFinished { status, .. }) => assert!(status.is_terminal()),
            other => panic!("expected run_finished, got {other:?}"),
        }
        let call = serde_json::from_value(json!({"endpoint": "/x", "status_code": 200})).unwrap();
        assert!(matches!(
            logger.client.record_api_calls(run_id, vec![call]).await,
            Err(IngestionError::RunFinished { .. })
        ));
    }
    let unknown = Uuid::new_v4();
    assert!(matches!(
        logger.client.complete(unknown, None).await,
        Err(IngestionError::UnknownRun(id)) if id == unknown
    ));
    let running = logger.start_run("t.running").await;
    assert!(matches!(
        logger.client.fail(running.run_id, "  ", None).await,
        Err(IngestionError::Invalid(_))
    ));
    assert!(matches!(
        logger.client.start_run(NewRun::new("", "s")).await,
        Err(IngestionError::Invalid(_))
    ));

    // nothing the refusals touched changed
    let stored = logger.client.get(done.run_id).await.unwrap().unwrap();
    assert_eq!(stored, completed);
    assert_eq!(status_of(&sql, failed.run_id).await, "failed");
    assert_eq!(status_of(&sql, running.run_id).await, "running");
    let orphans: i64 = sql
        .query_one(
            "SELECT (SELECT count(*) FROM data_ingestion_run_records) + (SELECT count(*) FROM api_call_logs)",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(orphans, 0, "nothing was recorded in finished runs");
    logger.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn ten_thousand_records_and_api_calls_over_http_are_all_linked_and_kept_once() {
    let logger = Logger::start().await;
    let sql = logger.db.client().await;
    let (status, run) = logger
        .post(
            "/api/v1/ingestion/runs",
            r#"{"task":"congress.daily","source":"quiverquant","metadata":{"host":"cron-1"}}"#,
        )
        .await;
    assert_eq!(status, 201, "{run}");
    assert_eq!(run["status"], "running");
    let run_id: Uuid = run["run_id"].as_str().unwrap().parse().unwrap();
    let path = format!("/api/v1/ingestion/runs/{run_id}");

    let calls = json!([
        {"endpoint": "/beta/live/congresstrading", "method": "get",
         "params": {"ticker": "AAPL", "api_key": "SECRET-KEY-1"},
         "status_code": 200, "response_body": {"count": 10000}, "duration_ms": 120},
        {"endpoint": "/beta/live/insiders", "status_code": 500,
         "response_body": {"error": "upstream down"}, "duration_ms": 30},
        {"endpoint": "/beta/live/lobbying", "error": "timed out after 30s"}
    ]);
    let (status, stored) = logger
        .post(&format!("{path}/api-calls"), &calls.to_string())
        .await;
    assert_eq!(status, 201, "{stored}");
    assert_eq!(stored["calls"].as_array().unwrap().len(), 3);
    assert!(
        stored["calls"][2]["response_payload_id"].is_null(),
        "no response, no payload"
    );

    let batch: Vec<Value> = records(0..10_000)
        .iter()
        .map(|r| serde_json::to_value(r).unwrap())
        .collect();
    let (status, outcome) = logger
        .post(
            &format!("{path}/records"),
            &json!({ "records": batch }).to_string(),
        )
        .await;
    assert_eq!(status, 200, "{outcome}");
    assert_eq!(
        outcome,
        json!({"received": 10000, "inserted": 10000, "duplicates": 0})
    );
    // a retried upload, and a batch that repeats a record within itself
    let (_, again) = logger
        .post(
            &format!("{path}/records"),
            &Value::Array(batch[..5000].to_vec()).to_string(),
        )
        .await;
    assert_eq!(
        again,
        json!({"received": 5000, "inserted": 0, "duplicates": 5000})
    );
    let twice = json!([
        {"record_type": "PoliticianProfile", "record_id": "p-1", "operation": "updated"},
        {"record_type": "PoliticianProfile", "record_id": "p-1", "operation": "updated"}
    ]);
    let (_, twice) = logger
        .post(&format!("{path}/records"), &twice.to_string())
        .await;
    assert_eq!(
        twice,
        json!({"received": 2, "inserted": 1, "duplicates": 1})
    );

    // completed without counts: counted from the records
    let (status, done) = logger.post(&format!("{path}/complete"), "").await;
    assert_eq!(status, 200, "{done}");
    assert_eq!(done["status"], "completed");
    assert_eq!(
        done["counts"],
        json!({"fetched": 10001, "created": 10000, "updated": 1, "skipped": 0})
    );

    let count = |sql_text: &'static str| scalar(&sql, sql_text, run_id);
    assert_eq!(
        count(
            "SELECT count(*) FROM data_ingestion_run_records r JOIN data_ingestion_runs d \
             ON d.id = r.data_ingestion_run_id WHERE d.run_id = $1"
        )
        .await,
        10_001
    );
    assert_eq!(
        count(
            "SELECT count(*) FROM data_ingestion_run_records r JOIN data_ingestion_runs d \
             ON d.id = r.data_ingestion_run_id WHERE d.run_id = $1 AND r.symbol = 'AAPL'"
        )
        .await,
        3334,
        "records keep their symbol for reports"
    );
    let linked = sql
        .query(
            "SELECT c.endpoint, c.http_method, c.http_status_code, c.duration_ms, c.error_message, \
                    q.type, q.payload, q.source, p.type, p.payload \
             FROM api_call_logs c JOIN data_ingestion_runs d ON d.id = c.data_ingestion_run_id \
             JOIN api_payloads q ON q.id = c.api_request_payload_id \
             LEFT JOIN api_payloads p ON p.id = c.api_response_payload_id \
             WHERE d.run_id = $1 ORDER BY c.id",
            &[&run_id],
        )
        .await
        .unwrap();
    assert_eq!(linked.len(), 3);
    let first = &linked[0];
    assert_eq!(first.get::<_, &str>(0), "/beta/live/congresstrading");
    assert_eq!(first.get::<_, &str>(1), "GET");
    assert_eq!(first.get::<_, Option<i32>>(2), Some(200));
    assert_eq!(first.get::<_, Option<i32>>(3), Some(120));
    assert_eq!(first.get::<_, &str>(5), "ApiRequest");
    let request: Value = first.get(6);
    assert_eq!(
        request["params"],
        json!({"ticker": "AAPL"}),
        "the key is stripped"
    );
    assert!(!request.to_string().contains("SECRET-KEY-1"));
    assert_eq!(
        first.get::<_, &str>(7),
        "quiverquant",
        "source defaults to the run's"
    );
    assert_eq!(first.get::<_, Option<&str>>(8), Some("ApiResponse"));
    assert_eq!(
        first.get::<_, Option<Value>>(9).unwrap()["status_code"],
        200
    );
    assert_eq!(linked[1].get::<_, Option<i32>>(2), Some(500));
    assert_eq!(
        linked[2].get::<_, Option<&str>>(4),
        Some("timed out after 30s")
    );
    assert_eq!(linked[2].get::<_, Option<&str>>(8), None);

    let (status, listed) = logger
        .get("/api/v1/ingestion/runs?task=congress.daily&status=completed")
        .await;
    assert_eq!(status, 200);
    assert_eq!(listed.as_array().unwrap().len(), 1);
    assert_eq!(listed[0]["run_id"], run_id.to_string());
    logger.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn bad_requests_get_clear_errors_and_change_nothing() {
    let config = IngestionConfig {
        max_records_per_batch: 100,
        ..IngestionConfig::default()
    };
    let logger = Logger::with_config(config).await;
    let sql = logger.db.client().await;
    let runs = "/api/v1/ingestion/runs";
    let (status, body) = logger.post(runs, "{not json").await;
    assert_eq!((status, body["code"].as_str()), (400, Some("malformed")));
    let (status, body) = logger.post(runs, r#"{"source":"q"}"#).await;
    assert_eq!((status, body["code"].as_str()), (422, Some("invalid")));
    assert!(body["message"].as_str().unwrap().contains("task"), "{body}");
    let (status, body) = logger.post(runs, r#"{"task":" ","source":"q"}"#).await;
    assert_eq!(
        (status, body["code"].as_str()),
        (422, Some("invalid")),
        "{body}"
    );
    let (status, body) = logger
        .post(runs, r#"{"task":"t","source":"q","metadata":[1]}"#)
        .await;
    assert_eq!(status, 422, "{body}");

    let unknown = Uuid::new_v4();
    let (status, body) = logger.post(&format!("{runs}/{unknown}/complete"), "").await;
    assert_eq!((status, body["code"].as_str()), (404, Some("unknown_run")));
    let (status, _) = logger.get(&format!("{runs}/{unknown}")).await;
    assert_eq!(status, 404);
    let (status, body) = logger
        .post(&format!("{runs}/not-a-uuid/complete"), "")
        .await;
    assert_eq!((status, body["code"].as_str()), (400, Some("malformed")));

    let run = logger.start_run("t.errors").await;
    let path = format!("{runs}/{}", run.run_id);
    let (status, body) = logger
        .post(
            &format!("{path}/records"),
            &Value::Array(
                records(0..101)
                    .iter()
                    .map(|r| serde_json::to_value(r).unwrap())
                    .collect(),
            )
            .to_string(),
        )
        .await;
    assert_eq!(status, 422, "{body}");
    assert!(
        body["message"]
            .as_str()
            .unwrap()
            .contains("max_records_per_batch")
    );
    let (status, body) = logger
        .post(
            &format!("{path}/records"),
            r#"[{"record_type":"T","record_id":"1","operation":"deleted"}]"#,
        )
        .await;
    assert_eq!(status, 422, "{body}");
    let (status, body) = logger
        .post(
            &format!("{path}/records"),
            r#"[{"record_type":"T","record_id":"1","operation":"created"},{"record_type":"","record_id":"2","operation":"created"}]"#,
        )
        .await;
    assert_eq!(status, 422, "one bad record refuses the batch: {body}");
    let (status, body) = logger
        .post(&format!("{path}/api-calls"), r#"{"endpoint":"/x"}"#)
        .await;
    assert_eq!(status, 422, "a call needs a status or an error: {body}");
    let (status, body) = logger
        .post(
            &format!("{path}/complete"),
            r#"{"fetched":1,"created":0,"updated":0}"#,
        )
        .await;
    assert_eq!(status, 422, "{body}");
    let (status, body) = logger.get(&format!("{runs}?status=paused")).await;
    assert_eq!(status, 422, "{body}");
    assert_eq!(status_of(&sql, run.run_id).await, "running");
    let recorded: i64 = sql
        .query_one(
            "SELECT (SELECT count(*) FROM data_ingestion_run_records) + (SELECT count(*) FROM api_call_logs) \
                  + (SELECT count(*) FROM api_payloads)",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(recorded, 0, "refused batches leave nothing behind");

    let (status, _) = logger
        .post(&format!("{path}/fail"), r#"{"error":"gave up"}"#)
        .await;
    assert_eq!(status, 200);
    let (status, body) = logger.post(&format!("{path}/complete"), "").await;
    assert_eq!(
        (status, body["code"].as_str()),
        (409, Some("illegal_transition"))
    );
    let (status, body) = logger
        .post(
            &format!("{path}/records"),
            r#"[{"record_type":"T","record_id":"1","operation":"created"}]"#,
        )
        .await;
    assert_eq!((status, body["code"].as_str()), (409, Some("run_finished")));
    logger.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn the_zero_records_alert_fires_once_per_run() {
    let logger = Logger::start().await;
    let sql = logger.db.client().await;
    let zero = RunCounts::default();
    let empty = logger.start_run("t.empty").await;
    logger
        .client
        .complete(empty.run_id, Some(zero))
        .await
        .unwrap();
    // a second completion is refused, so it cannot raise a second alert
    assert!(
        logger
            .client
            .complete(empty.run_id, Some(zero))
            .await
            .is_err()
    );
    // a run completed with no records and no counts fetched nothing either
    let silent = logger.start_run("t.silent").await;
    logger.client.complete(silent.run_id, None).await.unwrap();
    // a run that fetched something, and a failed run, raise nothing
    let busy = logger.start_run("t.busy").await;
    logger
        .client
        .record_records(busy.run_id, records(0..5))
        .await
        .unwrap();
    logger.client.complete(busy.run_id, None).await.unwrap();
    let failed = logger.start_run("t.failed").await;
    logger
        .client
        .fail(failed.run_id, "boom", None)
        .await
        .unwrap();

    let alerts = sql
        .query(
            "SELECT dedupe_key, severity, message, details->>'task' FROM alerts \
             WHERE kind = 'ingestion.zero_records' ORDER BY id",
            &[],
        )
        .await
        .unwrap();
    let keys: Vec<String> = alerts.iter().map(|r| r.get(0)).collect();
    assert_eq!(
        keys,
        [empty.run_id.to_string(), silent.run_id.to_string()],
        "one alert per zero-record run"
    );
    assert_eq!(alerts[0].get::<_, &str>(1), "warning");
    assert!(alerts[0].get::<_, &str>(2).contains("zero records"));
    assert_eq!(alerts[0].get::<_, &str>(3), "t.empty");
    // the same alert cannot be raised twice even by another writer
    let duplicate = sql
        .execute(
            "INSERT INTO alerts (kind, severity, message, dedupe_key) \
             VALUES ('ingestion.zero_records', 'warning', 'again', $1)",
            &[&empty.run_id.to_string()],
        )
        .await;
    assert_eq!(sqlstate(duplicate), "23505");
    let (_, _) = logger.get("/health").await;
    let metrics = common::metrics_text(&logger.base).await;
    assert!(
        metrics.contains("tradegate_alerts_total{kind=\"ingestion.zero_records\"}"),
        "the alert is counted in a metric"
    );
    logger.stop().await;
}

fn decision(primary_run: Option<Uuid>) -> NewDecision {
    NewDecision {
        decision_id: Uuid::now_v7(),
        strategy_name: "congress".into(),
        strategy_version: "1.2".into(),
        account: "paper-1".into(),
        symbol: "AAPL".into(),
        side: Side::Buy,
        quantity: Some(Decimal::new(10, 0)),
        notional: None,
        order_type: OrderType::Limit,
        limit_price: Some(Decimal::new(18_512, 2)),
        stop_price: None,
        time_in_force: TimeInForce::Day,
        signal_strength: Some(Decimal::new(87, 2)),
        primary_signal: Some(PrimarySignal {
            signal_type: "QuiverTrade".into(),
            id: "qt-1".into(),
        }),
        primary_ingestion_run_id: primary_run,
        rationale: Some(json!({"reason": "Pelosi bought", "data_lineage": {"note": "kept"}})),
    }
}

/// The broker request a decision is sent as, as the router stores it with the decision.
fn order_request(d: &NewDecision) -> Option<ApiPayload> {
    Some(
        ApiPayload::request(
            "alpaca",
            json!({"endpoint": "/v2/orders", "method": "POST",
                   "body": {"client_order_id": d.decision_id.to_string()}}),
        )
        .unwrap(),
    )
}

const DAY: LineagePolicy = LineagePolicy {
    window: Duration::from_secs(86_400),
    max_runs: 50,
};

#[tokio::test(flavor = "multi_thread")]
async fn a_decision_lists_the_runs_completed_before_it_and_refuses_unproven_data() {
    let logger = Logger::start().await;
    let sql = logger.db.client().await;
    let congress = logger.start_run("congress.daily").await;
    logger
        .client
        .complete(
            congress.run_id,
            Some(RunCounts {
                fetched: 10,
                created: 10,
                ..RunCounts::default()
            }),
        )
        .await
        .unwrap();
    let insiders = logger.start_run("insiders.daily").await;
    logger
        .client
        .complete(
            insiders.run_id,
            Some(RunCounts {
                fetched: 4,
                created: 4,
                ..RunCounts::default()
            }),
        )
        .await
        .unwrap();
    let broken = logger.start_run("lobbying.daily").await;
    logger
        .client
        .fail(broken.run_id, "HTTP 500", None)
        .await
        .unwrap();
    let running = logger.start_run("prices.intraday").await;

    let good = decision(Some(congress.run_id));
    let on_failed = decision(Some(broken.run_id));
    let on_running = decision(Some(running.run_id));
    let unknown_run = Uuid::new_v4();
    let on_unknown = decision(Some(unknown_run));
    let without_primary = decision(None);
    let batch = [
        good.clone(),
        on_failed.clone(),
        on_running.clone(),
        on_unknown.clone(),
        without_primary.clone(),
    ];
    let results = create_decisions(&sql, &batch, DAY).await.unwrap();

    let created = results[0]
        .as_ref()
        .expect("the decision on a completed run");
    let lineage = &created.decision_rationale["data_lineage"];
    let listed: Vec<&str> = lineage["ingestion_runs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["task"].as_str().unwrap())
        .collect();
    assert_eq!(
        listed,
        ["insiders.daily", "congress.daily"],
        "both, newest first"
    );
    for run in lineage["ingestion_runs"].as_array().unwrap() {
        assert!(run["run_id"].is_string() && run["source"] == "quiverquant");
        assert!(run["completed_at"].is_string());
    }
    assert_eq!(
        lineage["primary_ingestion_run"]["run_id"],
        congress.run_id.to_string()
    );
    assert_eq!(
        lineage["note"], "kept",
        "the strategy's own lineage keys stay"
    );
    assert_eq!(created.decision_rationale["reason"], "Pelosi bought");
    assert_eq!(created.primary_ingestion_run_id, Some(congress.id));
    assert_eq!(created.status, "pending");

    let reject = |i: usize| -> &DecisionReject { results[i].as_ref().unwrap_err() };
    assert_eq!(reject(1).code, REJECT_RUN_NOT_COMPLETED);
    assert!(reject(1).message.contains("failed"), "{}", reject(1));
    assert_eq!(reject(2).code, REJECT_RUN_NOT_COMPLETED);
    assert!(reject(2).message.contains("running"), "{}", reject(2));
    assert_eq!(reject(3).code, REJECT_UNKNOWN_RUN);
    assert!(reject(3).message.contains(&unknown_run.to_string()));
    let plain = results[4].as_ref().expect("no primary run is fine");
    assert_eq!(
        plain.decision_rationale["data_lineage"]["ingestion_runs"]
            .as_array()
            .unwrap()
            .len(),
        2
    );

    let stored: Vec<Uuid> = sql
        .query("SELECT decision_id FROM trade_decisions ORDER BY id", &[])
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert_eq!(
        stored,
        [good.decision_id, without_primary.decision_id],
        "rejected decisions are not written"
    );
    let row = sql
        .query_one(
            "SELECT primary_signal_type, primary_signal_id, quantity, limit_price, signal_strength \
             FROM trade_decisions WHERE decision_id = $1",
            &[&good.decision_id],
        )
        .await
        .unwrap();
    assert_eq!(row.get::<_, &str>(0), "QuiverTrade");
    assert_eq!(row.get::<_, &str>(1), "qt-1");
    assert_eq!(row.get::<_, Decimal>(2), Decimal::new(10, 0));
    assert_eq!(row.get::<_, Decimal>(3), Decimal::new(18_512, 2));
    assert_eq!(row.get::<_, Decimal>(4), Decimal::new(87, 2));
    // the same decision again is refused, not doubled
    let again = create_decisions(&sql, std::slice::from_ref(&good), DAY)
        .await
        .unwrap();
    assert_eq!(again[0].as_ref().unwrap_err().code, "duplicate_decision");
    // twice in one batch: the first is written, the second refused, the rest unaffected
    let twin = decision(None);
    let after = decision(None);
    let batch = create_decisions(
        &sql,
        &[twin.clone(), twin.clone(), good, after.clone()],
        DAY,
    )
    .await
    .unwrap();
    assert_eq!(batch[0].as_ref().unwrap().decision_id, twin.decision_id);
    assert_eq!(batch[1].as_ref().unwrap_err().code, "duplicate_decision");
    assert_eq!(batch[2].as_ref().unwrap_err().code, "duplicate_decision");
    assert_eq!(batch[3].as_ref().unwrap().decision_id, after.decision_id);
    let count: i64 = sql
        .query_one(
            "SELECT count(*) FROM trade_decisions WHERE decision_id = $1",
            &[&twin.decision_id],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(count, 1);
    // requests stored with their decisions: one per decision written, none for a duplicate
    let fresh = [decision(None), decision(None)];
    let batch = [fresh[0].clone(), twin.clone(), fresh[1].clone()];
    let requests: Vec<_> = batch.iter().map(order_request).collect();
    let written = create_decisions_with_requests(&sql, &batch, &requests, DAY)
        .await
        .unwrap();
    assert_eq!(written[1].as_ref().unwrap_err().code, "duplicate_decision");
    for (i, d) in [(0, &fresh[0]), (2, &fresh[1])] {
        let (created, request_id) = written[i].as_ref().unwrap();
        assert_eq!(created.decision_id, d.decision_id);
        let stored = get_payload(&sql, request_id.unwrap())
            .await
            .unwrap()
            .unwrap();
        assert_eq!(
            stored.payload["body"]["client_order_id"],
            d.decision_id.to_string(),
            "each decision gets its own request"
        );
        assert_eq!(stored.captured_at, created.created_at);
    }
    let twin_requests: i64 = sql
        .query_one(
            "SELECT count(*) FROM api_payloads WHERE payload #>> '{body,client_order_id}' = $1",
            &[&twin.decision_id.to_string()],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(twin_requests, 0, "a refused duplicate stores no request");
    // a batch's payloads come back with their ids in the order given
    let payloads: Vec<ApiPayload> = (0..5)
        .map(|i| {
            ApiPayload::request(
                "alpaca",
                json!({"endpoint": format!("/v2/orders/{i}"), "method": "GET"}),
            )
            .unwrap()
        })
        .collect();
    let ids = insert_payloads(&sql, &payloads).await.unwrap();
    assert_eq!(ids.len(), 5);
    for (i, id) in ids.iter().enumerate() {
        let stored = get_payload(&sql, *id).await.unwrap().unwrap();
        assert_eq!(stored.payload["endpoint"], format!("/v2/orders/{i}"));
    }
    assert!(insert_payloads(&sql, &[]).await.unwrap().is_empty());
    logger.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn lineage_lists_only_runs_inside_the_window() {
    let logger = Logger::start().await;
    let sql = logger.db.client().await;
    let old = logger.start_run("old.job").await;
    logger.client.complete(old.run_id, None).await.unwrap();
    tokio::time::sleep(Duration::from_millis(1_500)).await;
    let fresh = logger.start_run("fresh.job").await;
    logger.client.complete(fresh.run_id, None).await.unwrap();
    let policy = LineagePolicy {
        window: Duration::from_secs(1),
        max_runs: 50,
    };
    let results = create_decisions(&sql, &[decision(None)], policy)
        .await
        .unwrap();
    let lineage = &results[0].as_ref().unwrap().decision_rationale["data_lineage"];
    let listed: Vec<&str> = lineage["ingestion_runs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["task"].as_str().unwrap())
        .collect();
    assert_eq!(listed, ["fresh.job"]);
    assert_eq!(lineage["window_secs"], 1);
    // the cap keeps the newest
    let capped = LineagePolicy {
        window: Duration::from_secs(3_600),
        max_runs: 1,
    };
    let results = create_decisions(&sql, &[decision(None)], capped)
        .await
        .unwrap();
    let listed = results[0].as_ref().unwrap().decision_rationale["data_lineage"]["ingestion_runs"]
        .as_array()
        .unwrap()
        .len();
    assert_eq!(listed, 1);
    logger.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn run_queries_find_recent_runs_by_task_source_and_outcome() {
    let logger = Logger::start().await;
    let mut ids = Vec::new();
    for (task, source, outcome) in [
        ("congress.daily", "quiverquant", "completed"),
        ("congress.daily", "quiverquant", "failed"),
        ("insiders.daily", "quiverquant", "completed"),
        ("prices.eod", "polygon", "running"),
        ("prices.eod", "polygon", "completed"),
    ] {
        let run = logger
            .client
            .start_run(NewRun::new(task, source))
            .await
            .unwrap();
        match outcome {
            "completed" => {
                logger.client.complete(run.run_id, None).await.unwrap();
            }
            "failed" => {
                logger.client.fail(run.run_id, "boom", None).await.unwrap();
            }
            _ => {}
        }
        ids.push(run.run_id);
    }
    let found = |filter: RunFilter| {
        let client = logger.client.clone();
        async move {
            client
                .list(filter)
                .await
                .unwrap()
                .iter()
                .map(|r| r.run_id)
                .collect::<Vec<_>>()
        }
    };
    assert_eq!(
        found(RunFilter::recent(2)).await,
        [ids[4], ids[3]],
        "newest first"
    );
    assert_eq!(
        found(RunFilter::recent(10).for_task("congress.daily")).await,
        [ids[1], ids[0]]
    );
    assert_eq!(
        found(RunFilter::recent(10).for_source("polygon")).await,
        [ids[4], ids[3]]
    );
    assert_eq!(
        found(RunFilter::recent(10).successful()).await,
        [ids[4], ids[2], ids[0]]
    );
    assert_eq!(found(RunFilter::recent(10).failed()).await, [ids[1]]);
    assert_eq!(
        found(RunFilter::recent(10).for_source("quiverquant").successful()).await,
        [ids[2], ids[0]]
    );
    assert!(
        found(RunFilter::recent(10).for_task("nope"))
            .await
            .is_empty()
    );
    logger.stop().await;
}

/// A session's submissions are stored together, one statement for a whole group: each keeps
/// its own response payload, request payload and execution row, each decision its own status,
/// and the execution ids come back in the order given.
#[tokio::test]
async fn submissions_recorded_together_each_keep_their_own_response_and_decision() {
    use tradegate_actors::store::orders::{DecisionOutcome, Submission, record_submissions};
    let db = TestDb::new().await;
    let sql = db.client().await;
    let decisions = [decision(None), decision(None), decision(None)];
    let requests: Vec<_> = decisions.iter().map(order_request).collect();
    let written = create_decisions_with_requests(&sql, &decisions, &requests, DAY)
        .await
        .unwrap();
    let submission = |i: usize, accepted: bool| {
        let (created, request_id) = written[i].as_ref().unwrap();
        let (code, body) = if accepted {
            (200, json!({"id": format!("order-{i}"), "status": "new"}))
        } else {
            (
                403,
                json!({"code": 40310000, "message": "insufficient buying power"}),
            )
        };
        Submission {
            decision_pk: created.id,
            execution_id: Uuid::now_v7(),
            broker: "alpaca",
            request_payload_id: request_id.unwrap(),
            response: ApiPayload::response(
                "alpaca",
                json!({"status_code": code, "body": body, "n": i}),
            )
            .unwrap(),
            status: if accepted { "accepted" } else { "rejected" },
            broker_order_id: accepted.then(|| format!("order-{i}")),
            http_status: Some(code),
            error_code: (!accepted).then(|| "40310000".to_string()),
            error_message: (!accepted).then(|| "insufficient buying power".to_string()),
            error_details: (!accepted).then(|| body.clone()),
            filled_qty: Decimal::ZERO,
            filled_avg_price: None,
            commission: None,
            submitted_at: chrono::Utc::now(),
            filled_at: None,
            outcome: if accepted {
                DecisionOutcome::Executed
            } else {
                DecisionOutcome::Failed("insufficient buying power".into())
            },
        }
    };
    let subs = [
        submission(0, true),
        submission(1, false),
        submission(2, true),
    ];
    let ids = record_submissions(&sql, &subs).await.unwrap();
    assert_eq!(ids.len(), 3);
    for (i, (s, id)) in subs.iter().zip(&ids).enumerate() {
        let row = sql
            .query_one(
                "SELECT e.execution_id, e.trade_decision_id, e.status, e.http_status_code, \
                        e.error_message, e.api_request_payload_id, (r.payload ->> 'n')::int, \
                        d.status, d.failure_reason, e.rejected_at IS NOT NULL, \
                        d.executed_at IS NOT NULL, d.failed_at IS NOT NULL \
                 FROM trade_executions e \
                 JOIN api_payloads r ON r.id = e.api_response_payload_id \
                 JOIN trade_decisions d ON d.id = e.trade_decision_id \
                 WHERE e.id = $1",
                &[&id.expect("an execution row for every submission")],
            )
            .await
            .unwrap();
        assert_eq!(
            row.get::<_, Uuid>(0),
            s.execution_id,
            "ids in the order given"
        );
        assert_eq!(row.get::<_, i64>(1), s.decision_pk);
        assert_eq!(row.get::<_, &str>(2), s.status);
        assert_eq!(row.get::<_, Option<i32>>(3), s.http_status);
        assert_eq!(row.get::<_, Option<String>>(4), s.error_message);
        assert_eq!(row.get::<_, Option<i64>>(5), Some(s.request_payload_id));
        assert_eq!(row.get::<_, i32>(6), i as i32, "its own response payload");
        let accepted = i != 1;
        assert_eq!(
            row.get::<_, &str>(7),
            if accepted { "executed" } else { "failed" }
        );
        assert_eq!(
            row.get::<_, Option<String>>(8).as_deref(),
            (!accepted).then_some("insufficient buying power")
        );
        assert_eq!(
            row.get::<_, bool>(9),
            !accepted,
            "rejected_at only when rejected"
        );
        assert_eq!(row.get::<_, bool>(10), accepted);
        assert_eq!(row.get::<_, bool>(11), !accepted);
    }
    // one attempt per decision: a second outcome for a decision is refused whole (no retry can
    // be recorded, and its response payload does not stay behind either)
    let count = "SELECT count(*) FROM api_payloads";
    let before: i64 = sql.query_one(count, &[]).await.unwrap().get(0);
    let again = Submission {
        execution_id: Uuid::now_v7(),
        outcome: DecisionOutcome::Failed("again".into()),
        ..submission(0, true)
    };
    let refused = record_submissions(&sql, std::slice::from_ref(&again)).await;
    assert!(refused.is_err(), "a second attempt was stored");
    let after: i64 = sql.query_one(count, &[]).await.unwrap().get(0);
    assert_eq!(after, before);
    let status: String = sql
        .query_one(
            "SELECT status FROM trade_decisions WHERE id = $1",
            &[&again.decision_pk],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(status, "executed");
}

/// The lineage the decisions insert writes reads exactly as the same runs serialized in Rust
/// (chrono's RFC 3339 in UTC with 0, 3 or 6 fraction digits), whoever wrote it.
#[tokio::test]
async fn lineage_written_by_the_database_reads_as_the_rust_serialization() {
    use chrono::{DurationRound, Utc};
    use tradegate_actors::domain::LineageRun;
    let db = TestDb::new().await;
    let sql = db.client().await;
    let whole = Utc::now()
        .duration_trunc(chrono::Duration::seconds(1))
        .unwrap()
        - chrono::Duration::minutes(10);
    let times = [
        whole,
        whole + chrono::Duration::milliseconds(1_123),
        whole + chrono::Duration::microseconds(2_123_456),
        whole + chrono::Duration::microseconds(3_000_010),
    ];
    let mut expected = Vec::new();
    for (i, at) in times.iter().enumerate() {
        let run_id = Uuid::now_v7();
        let task = format!("job.{i}");
        sql.execute(
            "INSERT INTO data_ingestion_runs (run_id, task_name, data_source, started_at) \
             VALUES ($1, $2, 'src', $3)",
            &[&run_id, &task, &(*at - chrono::Duration::seconds(1))],
        )
        .await
        .unwrap();
        sql.execute(
            "UPDATE data_ingestion_runs SET status = 'completed', completed_at = $2 \
             WHERE run_id = $1",
            &[&run_id, at],
        )
        .await
        .unwrap();
        expected.push(LineageRun {
            run_id,
            task,
            source: "src".into(),
            completed_at: *at,
        });
    }
    expected.reverse(); // newest first
    let results = create_decisions(&sql, &[decision(None)], DAY)
        .await
        .unwrap();
    let runs = &results[0].as_ref().unwrap().decision_rationale["data_lineage"]["ingestion_runs"];
    assert_eq!(*runs, serde_json::to_value(&expected).unwrap());
    let texts: Vec<&str> = runs
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["completed_at"].as_str().unwrap())
        .collect();
    assert!(
        texts[3].ends_with('Z') && !texts[3].contains('.'),
        "{texts:?}"
    );
    assert!(texts[2].ends_with(".123Z"), "{texts:?}");
    assert!(texts[1].ends_with(".123456Z"), "{texts:?}");
    assert!(texts[0].ends_with(".000010Z"), "{texts:?}");
    let read: Vec<LineageRun> = serde_json::from_value(runs.clone()).unwrap();
    assert_eq!(read, expected);
}
