//! Every door locked: each route of the HTTP API against no token, an unknown token, each role
//! and the right one; the route table read from the route definitions themselves; operator
//! actions on record under the token's name; the listener refused beyond loopback without
//! tokens.

mod common;

use std::collections::BTreeSet;
use std::net::SocketAddr;

use serde_json::{Value, json};
use tokio::net::TcpListener;
use tradegate::api::auth::{Access, ROUTES};
use tradegate::app::Running;
use tradegate::config::{Config, Role};
use tradegate::sim::tws::{Scenario, spawn};
use uuid::Uuid;

use common::api::{ALL, AUDITOR, INGEST, OPERATOR};
use common::{TestDb, scratch_dir};

/// Every `.route("path", method(..).method(..))` in `src/api`: (method, path).
fn defined_routes() -> BTreeSet<(String, String)> {
    let mut files = vec![std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("src/api")];
    let mut found = BTreeSet::new();
    while let Some(path) = files.pop() {
        if path.is_dir() {
            files.extend(std::fs::read_dir(&path).unwrap().map(|e| e.unwrap().path()));
            continue;
        }
        if path.extension().is_none_or(|e| e != "rs") {
            continue;
        }
        let text = std::fs::read_to_string(&path).unwrap();
        // routes the table could not see: services, fallbacks, nests, any-method handlers
        for unseen in [
            ".route_service(",
            ".nest(",
            ".nest_service(",
            ".fallback(",
            ".fallback_service(",
            "on(MethodFilter",
        ] {
            assert!(
                !text.contains(unseen),
                "{path:?} uses {unseen}: the route table cannot check what it serves"
            );
        }
        // axum's any(handler), not Iterator::any
        let any_handler = text.match_indices("any(").any(|(i, _)| {
            text[..i]
                .chars()
                .last()
                .is_some_and(|c| c != '.' && !c.is_alphanumeric() && c != '_')
        });
        assert!(
            !any_handler,
            "{path:?} routes any method: the table needs each method"
        );
        let mut rest = text.as_str();
        while let Some(at) = rest.find(".route(") {
            rest = &rest[at + ".route(".len()..];
            // the call's arguments: up to the parenthesis that closes `.route(`
            let mut depth = 1;
            let end = rest
                .char_indices()
                .find(|(_, c)| {
                    match c {
                        '(' => depth += 1,
                        ')' => depth -= 1,
                        _ => {}
                    }
                    depth == 0
                })
                .map(|(i, _)| i)
                .expect("a closed .route( call");
            let call = &rest[..end];
            let route = call
                .split('"')
                .nth(1)
                .unwrap_or_else(|| panic!("a .route( without a literal path in {path:?}"));
            let handlers = &call[call.find(',').expect("a method router")..];
            let mut methods = 0;
            for (word, method) in [
                ("get(", "GET"),
                ("post(", "POST"),
                ("put(", "PUT"),
                ("patch(", "PATCH"),
                ("delete(", "DELETE"),
            ] {
                let mut h = handlers;
                while let Some(i) = h.find(word) {
                    let before = h[..i].chars().last();
                    if before.is_none_or(|c| !c.is_alphanumeric() && c != '_') {
                        found.insert((method.to_string(), route.to_string()));
                        methods += 1;
                    }
                    h = &h[i + word.len()..];
                }
            }
            assert!(methods > 0, "no method found for {route} in {path:?}");
        }
    }
    found
}

#[test]
fn every_defined_route_has_a_role_assignment_and_every_assignment_is_a_route() {
    let defined = defined_routes();
    assert!(defined.len() >= 20, "found only {defined:?}");
    let table: BTreeSet<(String, String)> = ROUTES
        .iter()
        .map(|r| (r.method.to_string(), r.path.to_string()))
        .collect();
    let unassigned: Vec<_> = defined.difference(&table).collect();
    assert!(
        unassigned.is_empty(),
        "routes without a role assignment in tradegate::api::auth::ROUTES: {unassigned:?}"
    );
    let stale: Vec<_> = table.difference(&defined).collect();
    assert!(
        stale.is_empty(),
        "ROUTES entries that are no route: {stale:?}"
    );
    assert_eq!(table.len(), ROUTES.len(), "a route is listed twice");
}

/// A gateway with the test tokens, a simulated TWS for account GA1, and a decision on record.
struct Secured {
    _one: tokio::sync::MutexGuard<'static, ()>,
    _db: TestDb,
    running: Running,
    base: String,
    decision: Uuid,
    sql: tokio_postgres::Client,
    conninfo: String,
}

async fn secured(tune: impl FnOnce(&mut Config)) -> Secured {
    let one = common::orders::one_gateway().await;
    let db = TestDb::new().await;
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let tws_addr = listener.local_addr().unwrap();
    let _tws = spawn(
        listener,
        Scenario {
            accounts: vec!["GA1".into()],
            ..Scenario::default()
        },
    );
    let mut config = Config::default();
    config.database.url = db.conninfo.clone();
    config.tradelog.spill_dir = scratch_dir("api-security").join("spill");
    config.ibkr.accounts = vec!["GA1".into()];
    config.ibkr.host = tws_addr.ip().to_string();
    config.ibkr.port = tws_addr.port();
    config.ibkr.sync_interval_secs = 0;
    config.orders.strategies.insert(
        "alpha".into(),
        tradegate_actors::order_router::StrategyConfig {
            token: "alpha-strategy-token".into(),
            ..Default::default()
        },
    );
    common::api::secure(&mut config);
    tune(&mut config);
    let running = Running::start(&config, SocketAddr::from(([127, 0, 0, 1], 0)))
        .await
        .unwrap();
    let sql = db.client().await;
    let decision = Uuid::now_v7();
    sql.execute(
        "INSERT INTO trade_decisions (decision_id, strategy_name, strategy_version, account, \
             symbol, side, quantity, order_type, time_in_force, status, failure_reason, \
             failed_at) \
         VALUES ($1, 'alpha', '1', 'paper', 'AAPL', 'buy', 1, 'market', 'day', 'failed', \
             'rejected by broker', now())",
        &[&decision],
    )
    .await
    .unwrap();
    Secured {
        _one: one,
        base: format!("http://{}", running.api_addr()),
        conninfo: db.conninfo.clone(),
        _db: db,
        running,
        decision,
        sql,
    }
}

impl Secured {
    async fn call(
        &self,
        token: Option<&str>,
        method: &str,
        path: &str,
        body: Option<&Value>,
    ) -> (u16, Value) {
        let http = match token {
            Some(t) => common::api::client(t),
            None => tradegate_actors::tls::local_http(),
        };
        let url = format!("{}{path}", self.base);
        let request = match method {
            "GET" => http.get(url),
            "POST" => http.post(url),
            other => panic!("no test request for {other}"),
        };
        let request = match body {
            Some(b) => request.json(b),
            None => request,
        };
        let response = request.send().await.unwrap();
        let status = response.status().as_u16();
        let text = response.text().await.unwrap();
        (
            status,
            serde_json::from_str(&text).unwrap_or(Value::String(text)),
        )
    }

    /// Each of `reasons` is counted in `tradegate_api_refused_total`.
    async fn assert_refusals_counted(&self, reasons: &[&str]) {
        let metrics = common::metrics_text(&self.base).await;
        for reason in reasons {
            assert!(
                metrics.contains(&format!(
                    "tradegate_api_refused_total{{reason=\"{reason}\"}}"
                )),
                "{reason} not counted"
            );
        }
    }

    /// A new ingestion run, started with the ingest token.
    async fn new_run(&self) -> String {
        let (status, run) = self
            .call(
                Some(INGEST),
                "POST",
                "/api/v1/ingestion/runs",
                Some(&json!({"task": "t", "source": "s"})),
            )
            .await;
        assert_eq!(status, 201, "{run}");
        run["run_id"].as_str().unwrap().to_string()
    }

    /// A request to `route` that its handler answers with success, and that status.
    async fn example(&self, method: &str, route: &str) -> (String, Option<Value>, u16) {
        let d = self.decision;
        let run = || async { self.new_run().await };
        match (method, route) {
            ("GET", "/health") => (route.into(), None, 200),
            ("GET", "/metrics") => (route.into(), None, 200),
            ("GET", "/api/v1/kill-switch") => (route.into(), None, 200),
            ("POST", "/api/v1/kill-switch") => (
                route.into(),
                Some(json!({"state": "active", "reason": "test"})),
                200,
            ),
            ("GET", "/api/v1/operator-actions") => (route.into(), None, 200),
            ("GET", "/api/v1/audit/seals") => (route.into(), None, 200),
            ("GET", "/api/v1/decisions") => (route.into(), None, 200),
            ("GET", "/api/v1/decisions/{id}") => (format!("/api/v1/decisions/{d}"), None, 200),
            ("POST", "/api/v1/ingestion/runs") => {
                (route.into(), Some(json!({"task": "t", "source": "s"})), 201)
            }
            ("GET", "/api/v1/ingestion/runs") => (route.into(), None, 200),
            ("GET", "/api/v1/ingestion/runs/{run_id}") => {
                (format!("/api/v1/ingestion/runs/{}", run().await), None, 200)
            }
            ("POST", "/api/v1/ingestion/runs/{run_id}/api-calls") => (
                format!("/api/v1/ingestion/runs/{}/api-calls", run().await),
                Some(json!({"endpoint": "/x", "status_code": 200})),
                201,
            ),
            ("POST", "/api/v1/ingestion/runs/{run_id}/records") => (
                format!("/api/v1/ingestion/runs/{}/records", run().await),
                Some(json!({"records": [
                    {"record_type": "T", "record_id": "1", "operation": "created"}
                ]})),
                200,
            ),
            ("POST", "/api/v1/ingestion/runs/{run_id}/complete") => (
                format!("/api/v1/ingestion/runs/{}/complete", run().await),
                None,
                200,
            ),
            ("POST", "/api/v1/ingestion/runs/{run_id}/fail") => (
                format!("/api/v1/ingestion/runs/{}/fail", run().await),
                Some(json!({"error": "test"})),
                200,
            ),
            ("GET", "/api/v1/trades") => (route.into(), None, 200),
            ("POST", "/api/v1/trades/sync") => {
                (route.into(), Some(json!({"account_id": "GA1"})), 200)
            }
            // no trade is on record: the handler's own 404 shows the request reached it
            ("GET", "/api/v1/trades/{id}") => ("/api/v1/trades/1".into(), None, 404),
            ("GET", "/api/v1/trades/{id}/executions") => {
                ("/api/v1/trades/1/executions".into(), None, 404)
            }
            ("POST", "/api/v1/jobs/trades.sync") => {
                (route.into(), Some(json!({"account_id": "GA1"})), 202)
            }
            ("GET", "/api/v1/reports/symbol/{symbol}") => {
                ("/api/v1/reports/symbol/AAPL".into(), None, 200)
            }
            ("GET", "/api/v1/reports/decision/{id}") => {
                (format!("/api/v1/reports/decision/{d}"), None, 200)
            }
            ("GET", "/api/v1/reports/order/{id}") => {
                (format!("/api/v1/reports/order/{d}"), None, 200)
            }
            ("GET", "/api/v1/reports/strategy") => (route.into(), None, 200),
            ("GET", "/api/v1/reports/failures") => (route.into(), None, 200),
            ("GET", "/api/v1/reports/daily") => (route.into(), None, 200),
            ("POST", "/api/v1/reconcile") => (route.into(), Some(json!({"account": "GA1"})), 202),
            ("GET", "/api/v1/reconciliation") => (route.into(), None, 200),
            _ => panic!(
                "no example request for {method} {route}: add one here, with what its role \
                 gets back"
            ),
        }
    }
}

/// A path for `route` that needs no record to exist (the access check answers first).
fn any_path(route: &str) -> String {
    route
        .replace("{run_id}", &Uuid::now_v7().to_string())
        .replace("{id}", &Uuid::now_v7().to_string())
        .replace("{symbol}", "AAPL")
}

#[tokio::test(flavor = "multi_thread")]
async fn every_route_refuses_no_token_unknown_tokens_and_wrong_roles_and_serves_the_right_one() {
    let g = secured(|_| {}).await;
    let singles = [
        (Role::Operator, OPERATOR),
        (Role::Auditor, AUDITOR),
        (Role::Ingest, INGEST),
    ];
    let mut checked = 0;
    for r in ROUTES {
        let roles = match r.access {
            Access::Roles(roles) => roles,
            Access::Open | Access::Metrics => {
                let (path, body, want) = g.example(r.method, r.path).await;
                let (status, _) = g.call(None, r.method, &path, body.as_ref()).await;
                assert_eq!(status, want, "{} {} without a token", r.method, r.path);
                continue;
            }
            Access::Strategy => continue,
        };
        let path = any_path(r.path);
        let body = Some(json!({}));
        let (status, e) = g.call(None, r.method, &path, body.as_ref()).await;
        assert_eq!(
            (status, e["code"].as_str()),
            (401, Some("auth.missing_token")),
            "{} {} without a token: {e}",
            r.method,
            r.path
        );
        assert!(e["message"].as_str().is_some_and(|m| !m.is_empty()), "{e}");
        let (status, e) = g
            .call(
                Some("not-a-token-of-this-gateway"),
                r.method,
                &path,
                body.as_ref(),
            )
            .await;
        assert_eq!(
            (status, e["code"].as_str()),
            (401, Some("auth.unknown_token")),
            "{} {} with an unknown token: {e}",
            r.method,
            r.path
        );
        // a strategy's token opens nothing here
        let (status, e) = g
            .call(Some("alpha-strategy-token"), r.method, &path, body.as_ref())
            .await;
        assert_eq!(
            status, 401,
            "{} {} with a strategy token: {e}",
            r.method, r.path
        );
        for (role, token) in singles {
            if roles.contains(&role) {
                continue;
            }
            let (status, e) = g.call(Some(token), r.method, &path, body.as_ref()).await;
            assert_eq!(
                (status, e["code"].as_str()),
                (403, Some("auth.forbidden")),
                "{} {} as {role:?}: {e}",
                r.method,
                r.path
            );
        }
        for (role, token) in singles.iter().filter(|(role, _)| roles.contains(role)) {
            let (path, body, want) = g.example(r.method, r.path).await;
            let (status, answer) = g.call(Some(token), r.method, &path, body.as_ref()).await;
            assert_eq!(
                status, want,
                "{} {path} as {role:?} is served: {answer}",
                r.method
            );
        }
        checked += 1;
    }
    assert!(checked >= 20, "{checked} routes checked");
    // the strategy WebSocket takes only strategy tokens
    let addr = g.running.api_addr();
    for token in [ALL, OPERATOR, AUDITOR, INGEST] {
        match common::orders::StrategyWs::connect(addr, token).await {
            Err(tokio_tungstenite::tungstenite::Error::Http(r)) => {
                assert_eq!(r.status(), 401, "an API token at /v1/strategy")
            }
            Err(e) => panic!("an API token at /v1/strategy: {e}"),
            Ok(_) => panic!("an API token opened /v1/strategy"),
        }
    }
    assert!(
        common::orders::StrategyWs::connect(addr, "alpha-strategy-token")
            .await
            .is_ok()
    );
    // every refusal counted by reason, and no token in the log of it
    let metrics = common::metrics_text(&g.base).await;
    for reason in ["missing_token", "unknown_token", "forbidden"] {
        assert!(
            metrics.contains(&format!(
                "tradegate_api_auth_failures_total{{reason=\"{reason}\""
            )),
            "{reason} not counted"
        );
    }
    assert!(!metrics.contains("not-a-token-of-this-gateway"));
    g.running.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn closed_metrics_need_an_auditor_or_operator_token() {
    let g = secured(|c| c.api.public_metrics = false).await;
    let (status, e) = g.call(None, "GET", "/metrics", None).await;
    assert_eq!(
        (status, e["code"].as_str()),
        (401, Some("auth.missing_token"))
    );
    let (status, e) = g.call(Some(INGEST), "GET", "/metrics", None).await;
    assert_eq!((status, e["code"].as_str()), (403, Some("auth.forbidden")));
    for token in [AUDITOR, OPERATOR] {
        let (status, body) = g.call(Some(token), "GET", "/metrics", None).await;
        assert_eq!(status, 200);
        assert!(body.as_str().unwrap().contains("tradegate_build_info"));
    }
    let (status, _) = g.call(None, "GET", "/health", None).await;
    assert_eq!(status, 200, "/health stays open");
    g.running.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn the_kill_switch_keeps_its_history_under_the_tokens_name_whatever_the_body_says() {
    let g = secured(|_| {}).await;
    let (status, answer) = g
        .call(
            Some(OPERATOR),
            "POST",
            "/api/v1/kill-switch",
            Some(&json!({"state": "halted", "reason": "venue outage", "changed_by": "mallory"})),
        )
        .await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(
        answer["changed_by"], "ops",
        "the token's name, not the body's"
    );
    let (status, _) = g
        .call(
            Some(ALL),
            "POST",
            "/api/v1/kill-switch",
            Some(&json!({"state": "active", "reason": "venue back"})),
        )
        .await;
    assert_eq!(status, 200);
    // a reason too long is refused, and nothing is recorded
    let (status, e) = g
        .call(
            Some(OPERATOR),
            "POST",
            "/api/v1/kill-switch",
            Some(&json!({"state": "halted", "reason": "x".repeat(1025)})),
        )
        .await;
    assert_eq!((status, e["code"].as_str()), (422, Some("invalid")), "{e}");
    let (status, actions) = g
        .call(
            Some(AUDITOR),
            "GET",
            "/api/v1/operator-actions?action=kill_switch.set",
            None,
        )
        .await;
    assert_eq!(status, 200, "{actions}");
    let actions = actions.as_array().unwrap();
    assert_eq!(actions.len(), 2, "{actions:?}");
    // newest first: the resume by `all`, then the halt by `ops`
    assert_eq!(actions[0]["actor"], "all");
    assert_eq!(actions[0]["previous"]["state"], "halted");
    assert_eq!(actions[0]["new"]["state"], "active");
    assert_eq!(actions[0]["reason"], "venue back");
    assert_eq!(actions[1]["actor"], "ops");
    assert_eq!(actions[1]["previous"]["state"], "active");
    assert_eq!(actions[1]["new"]["state"], "halted");
    assert_eq!(actions[1]["reason"], "venue outage");
    assert!(
        actions[1]["peer"]
            .as_str()
            .is_some_and(|p| p.starts_with("127.0.0.1:")),
        "{actions:?}"
    );
    assert!(!actions.iter().any(|a| a.to_string().contains("mallory")));
    // the history is append-only
    let refused = g
        .sql
        .execute("UPDATE operator_actions SET actor = 'someone else'", &[])
        .await;
    assert_eq!(common::sqlstate(refused), "23514");
    let refused = g.sql.execute("DELETE FROM operator_actions", &[]).await;
    assert_eq!(common::sqlstate(refused), "23514");
    // sync triggers and jobs are on record too, and the day's summary lists them all
    let (status, _) = g
        .call(
            Some(OPERATOR),
            "POST",
            "/api/v1/jobs/trades.sync",
            Some(&json!({"account_id": "GA1"})),
        )
        .await;
    assert_eq!(status, 202);
    let today = chrono::Utc::now().date_naive();
    let (status, daily) = g
        .call(
            Some(AUDITOR),
            "GET",
            &format!("/api/v1/reports/daily?date={today}"),
            None,
        )
        .await;
    assert_eq!(status, 200, "{daily}");
    let kinds: Vec<&str> = daily["operator_actions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["action"].as_str().unwrap())
        .collect();
    assert_eq!(
        kinds,
        ["kill_switch.set", "kill_switch.set", "job.enqueue"],
        "{daily}"
    );
    // a purge from the CLI is on record under the OS user, and `report actions` lists it all
    let cli = |args: &[&str]| {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_tradegate"))
            .current_dir(scratch_dir("actions-cli"))
            .env_remove("TRADEGATE_CONFIG")
            .env("DATABASE_URL", &g.conninfo)
            // the gateway's writer key: the CLI writes the same trail
            .env("TRADEGATE_AUDIT_KEY", common::audit_key())
            .env("RUST_LOG", "warn")
            .args(args)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    };
    cli(&["purge", "--format", "json"]);
    let listed: Value =
        serde_json::from_str(&cli(&["report", "actions", "--format", "json"])).unwrap();
    let listed = listed.as_array().unwrap();
    assert_eq!(listed.len(), 4, "{listed:?}");
    assert_eq!(listed[0]["action"], "payloads.purge");
    assert!(
        listed[0]["actor"].as_str().unwrap().starts_with("cli:"),
        "{listed:?}"
    );
    let table = cli(&["report", "actions"]);
    assert!(
        table.contains("venue outage") && table.contains("ops"),
        "{table}"
    );
    g.running.stop().await.unwrap();
}

#[tokio::test]
async fn a_listener_beyond_loopback_without_tokens_is_refused_at_start() {
    let db = TestDb::new().await;
    let mut config = Config::default();
    config.database.url = db.conninfo.clone();
    config.api.token_file = scratch_dir("beyond-loopback").join("operator.token");
    let Err(refused) = Running::start(&config, SocketAddr::from(([0, 0, 0, 0], 0))).await else {
        panic!("an API on every interface without tokens must not start");
    };
    let message = format!("{refused:#}");
    assert!(message.contains("[[api.tokens]]"), "{message}");
    assert!(
        message.contains("operator") && message.contains("auditor"),
        "{message}"
    );
    // an operator token alone is not enough either
    config.api.tokens = common::api::tokens()
        .into_iter()
        .filter(|t| t.roles == [Role::Operator])
        .collect();
    assert!(
        Running::start(&config, SocketAddr::from(([0, 0, 0, 0], 0)))
            .await
            .is_err()
    );
    assert!(
        !config.api.token_file.exists(),
        "nothing was made for a refused start"
    );
}

#[tokio::test]
async fn the_local_operator_token_file_is_private_and_reused() {
    let dir = scratch_dir("token-file");
    let path = dir.join("nested/operator.token");
    let first = tradegate::api::auth::local_operator_token(&path).unwrap();
    assert!(first.len() >= 64);
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600);
    assert_eq!(
        tradegate::api::auth::local_operator_token(&path).unwrap(),
        first
    );
    // a file others could read is made private again
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
    assert_eq!(
        tradegate::api::auth::local_operator_token(&path).unwrap(),
        first
    );
    let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600);
    // several processes starting at once agree on one token
    let racing = dir.join("racing.token");
    let handles: Vec<_> = (0..8)
        .map(|_| {
            let p = racing.clone();
            std::thread::spawn(move || tradegate::api::auth::local_operator_token(&p).unwrap())
        })
        .collect();
    let tokens: BTreeSet<String> = handles.into_iter().map(|h| h.join().unwrap()).collect();
    assert_eq!(tokens.len(), 1, "{tokens:?}");
    // a file without a token is an error, not a silent new token
    let empty = dir.join("empty.token");
    std::fs::write(&empty, "").unwrap();
    let e = tradegate::api::auth::local_operator_token(&empty).unwrap_err();
    assert!(e.to_string().contains("holds no token"), "{e}");
}

#[tokio::test(flavor = "multi_thread")]
async fn oversize_bodies_deep_json_and_the_routers_own_refusals_get_coded_errors() {
    let g = secured(|_| {}).await;
    // past [api] max_body_bytes (1 MiB): refused before the handler, with a code
    let big = json!({"state": "halted", "reason": "x".repeat(2 * 1024 * 1024)});
    let (status, e) = g
        .call(Some(OPERATOR), "POST", "/api/v1/kill-switch", Some(&big))
        .await;
    assert_eq!(
        (status, e["code"].as_str()),
        (413, Some("too_large")),
        "{e}"
    );
    // the ingestion batch endpoints take 100,000-record batches
    let run = g.new_run().await;
    let records: Vec<Value> = (0..30_000)
        .map(|i| json!({"record_type": "QuiverTrade", "record_id": format!("r-{i}"), "operation": "created"}))
        .collect();
    let batch = json!({ "records": records });
    assert!(batch.to_string().len() > 2 * 1024 * 1024);
    let (status, answer) = g
        .call(
            Some(INGEST),
            "POST",
            &format!("/api/v1/ingestion/runs/{run}/records"),
            Some(&batch),
        )
        .await;
    assert_eq!(
        (status, answer["inserted"].as_i64()),
        (200, Some(30_000)),
        "{answer}"
    );
    // nesting past 64 levels: refused unparsed, nothing changed
    let deep = format!(
        "{{\"state\":\"halted\",\"reason\":{}\"x\"{}}}",
        "[".repeat(100),
        "]".repeat(100)
    );
    let response = common::api::client(OPERATOR)
        .post(format!("{}/api/v1/kill-switch", g.base))
        .header("content-type", "application/json")
        .body(deep)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 400);
    let e: Value = response.json().await.unwrap();
    assert_eq!(e["code"], "too_deep", "{e}");
    let (_, state) = g
        .call(Some(AUDITOR), "GET", "/api/v1/kill-switch", None)
        .await;
    assert_eq!(state["state"], "active", "nothing was changed");
    // the router's own refusals are coded too
    let (status, e) = g.call(Some(AUDITOR), "GET", "/api/v1/nowhere", None).await;
    assert_eq!(
        (status, e["code"].as_str()),
        (404, Some("not_found")),
        "{e}"
    );
    let (status, e) = g
        .call(Some(AUDITOR), "GET", "/api/v1/decisions?bogus=1", None)
        .await;
    assert_eq!(
        (status, e["code"].as_str()),
        (400, Some("malformed")),
        "{e}"
    );
    let response = common::api::client(OPERATOR)
        .delete(format!("{}/api/v1/kill-switch", g.base))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 405);
    let e: Value = response.json().await.unwrap();
    assert_eq!(e["code"], "method_not_allowed", "{e}");
    g.assert_refusals_counted(&["body_too_large", "too_deep"])
        .await;
    g.running.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn a_token_past_its_request_rate_is_refused_and_others_are_not() {
    let g = secured(|c| c.api.max_requests_per_sec = 5).await;
    let http = common::api::client(AUDITOR);
    let mut statuses = Vec::new();
    let mut retry_after = None;
    for _ in 0..20 {
        let response = http
            .get(format!("{}/api/v1/kill-switch", g.base))
            .send()
            .await
            .unwrap();
        statuses.push(response.status().as_u16());
        if response.status() == 429 {
            retry_after = response.headers().get("retry-after").cloned();
            let e: Value = response.json().await.unwrap();
            assert_eq!(e["code"], "rate_limited", "{e}");
        }
    }
    let refused = statuses.iter().filter(|s| **s == 429).count();
    assert!(
        refused >= 10 && statuses.iter().all(|s| *s == 200 || *s == 429),
        "{statuses:?}"
    );
    assert_eq!(retry_after.unwrap(), "1");
    // another token has its own allowance
    let (status, _) = g
        .call(Some(OPERATOR), "GET", "/api/v1/kill-switch", None)
        .await;
    assert_eq!(status, 200);
    // and the next second the first one may call again
    tokio::time::sleep(std::time::Duration::from_millis(1100)).await;
    let (status, _) = g
        .call(Some(AUDITOR), "GET", "/api/v1/kill-switch", None)
        .await;
    assert_eq!(status, 200);
    g.assert_refusals_counted(&["rate_limited"]).await;
    g.running.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn strategy_connections_and_messages_are_bounded_and_a_bad_message_keeps_the_connection() {
    use futures_util::{SinkExt, StreamExt};
    use tokio_tungstenite::tungstenite::Message;
    let g = secured(|c| {
        c.api.max_connections_per_strategy = 2;
        c.api.max_ws_message_bytes = 64 * 1024;
    })
    .await;
    let addr = g.running.api_addr();
    let token = "alpha-strategy-token";
    let mut first = common::orders::StrategyWs::connect(addr, token)
        .await
        .unwrap();
    let second = common::orders::StrategyWs::connect(addr, token)
        .await
        .unwrap();
    match common::orders::StrategyWs::connect(addr, token).await {
        Err(tokio_tungstenite::tungstenite::Error::Http(r)) => assert_eq!(r.status(), 429),
        Err(e) => panic!("a third connection: {e}"),
        Ok(_) => panic!("a third connection of one strategy was accepted"),
    }
    // a place freed is a place again
    drop(second);
    let third = common::wait_until(std::time::Duration::from_secs(5), || async {
        common::orders::StrategyWs::connect(addr, token).await.ok()
    })
    .await;
    assert!(third.is_some(), "a closed connection's place was not freed");
    // nesting too deep: an error, and the connection still answers
    first
        .send_text(&format!("{}{}", "[".repeat(200), "]".repeat(200)))
        .await;
    let error = |v: &Value| v["type"] == "error";
    let wait = std::time::Duration::from_secs(10);
    let e = first.wait_for(wait, error).await.expect("an error event");
    assert_eq!(e["code"], "too_deep", "{e}");
    first.send(json!({"type": "submit_order"})).await;
    let e = first.wait_for(wait, error).await.expect("an error event");
    assert_eq!(e["code"], "invalid", "still usable: {e}");
    // a message past max_ws_message_bytes closes the connection with 1009
    let mut ws = first.into_inner();
    ws.send(Message::text("x".repeat(100 * 1024)))
        .await
        .unwrap();
    let mut closed_with = None;
    while let Some(Ok(msg)) = ws.next().await {
        if let Message::Close(frame) = msg {
            closed_with = frame.map(|f| u16::from(f.code));
            break;
        }
    }
    assert_eq!(closed_with, Some(1009));
    g.assert_refusals_counted(&["too_many_connections", "ws_message_too_large", "too_deep"])
        .await;
    g.running.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn over_tls_the_api_serves_https_and_wss_to_clients_that_trust_its_ca_and_nothing_else() {
    let dir = scratch_dir("api-tls");
    let pki = common::tls::TestPki::new(&dir, "api-test-ca");
    let (cert, key) = (pki.cert_file.clone(), pki.key_file.clone());
    let g = secured(|c| {
        c.api.tls_cert_file = cert;
        c.api.tls_key_file = key;
    })
    .await;
    let addr = g.running.api_addr();
    let trusting =
        tradegate_actors::tls::ClientTls::with_sources(None, Some(&pki.ca_file)).unwrap();
    let mut headers = reqwest::header::HeaderMap::new();
    headers.insert(
        "authorization",
        format!("Bearer {AUDITOR}").parse().unwrap(),
    );
    let https = trusting.http().default_headers(headers).build().unwrap();
    let state: Value = https
        .get(format!(
            "https://127.0.0.1:{}/api/v1/kill-switch",
            addr.port()
        ))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(state["state"], "active", "{state}");
    // a client that does not trust the CA is refused at the handshake
    let untrusting = tradegate_actors::tls::local_http()
        .get(format!("https://127.0.0.1:{}/health", addr.port()))
        .send()
        .await;
    assert!(
        untrusting.is_err(),
        "an unverified TLS connection succeeded"
    );
    // and nothing is served in the clear
    let clear = tradegate_actors::tls::local_http()
        .get(format!("http://{addr}/health"))
        .timeout(std::time::Duration::from_secs(15))
        .send()
        .await;
    assert!(
        clear.is_err(),
        "plain HTTP was answered: {:?}",
        clear.map(|r| r.status())
    );
    // strategies connect with wss://
    use tokio_tungstenite::tungstenite::client::IntoClientRequest;
    let mut request = format!("wss://127.0.0.1:{}/v1/strategy", addr.port())
        .into_client_request()
        .unwrap();
    request.headers_mut().insert(
        "authorization",
        "Bearer alpha-strategy-token".parse().unwrap(),
    );
    let (mut ws, _) = tokio_tungstenite::connect_async_tls_with_config(
        request,
        None,
        false,
        Some(trusting.ws_connector()),
    )
    .await
    .unwrap();
    use futures_util::{SinkExt, StreamExt};
    ws.send(tokio_tungstenite::tungstenite::Message::text(
        r#"{"type":"submit_order"}"#,
    ))
    .await
    .unwrap();
    let answer = loop {
        match ws.next().await.unwrap().unwrap() {
            tokio_tungstenite::tungstenite::Message::Text(t) => break t.to_string(),
            _ => continue,
        }
    };
    assert!(answer.contains("\"invalid\""), "{answer}");
    // the CLI reaches it over https, trusting the CA named by [tls] extra_ca_file
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_tradegate"))
        .current_dir(&dir)
        .env_remove("TRADEGATE_CONFIG")
        .env("TRADEGATE_TLS__EXTRA_CA_FILE", &pki.ca_file)
        .env("RUST_LOG", "warn")
        .args([
            "halt",
            "--api",
            &format!("https://127.0.0.1:{}", addr.port()),
        ])
        .args(["--token", OPERATOR])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    g.running.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn a_client_that_sends_nothing_or_goes_quiet_is_disconnected() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let g = secured(|c| {
        c.api.header_timeout_secs = 1;
        c.api.ws_idle_timeout_secs = 3;
    })
    .await;
    let addr = g.running.api_addr();
    let closed_within = async |mut tcp: tokio::net::TcpStream, secs: u64| -> bool {
        let mut buf = vec![0u8; 4096];
        tokio::time::timeout(std::time::Duration::from_secs(secs), async {
            loop {
                match tcp.read(&mut buf).await {
                    Ok(0) | Err(_) => return,
                    Ok(_) => continue,
                }
            }
        })
        .await
        .is_ok()
    };
    // connected, never a byte
    let silent = tokio::net::TcpStream::connect(addr).await.unwrap();
    assert!(
        closed_within(silent, 5).await,
        "a silent connection was kept"
    );
    // half a request, then nothing
    let mut trickle = tokio::net::TcpStream::connect(addr).await.unwrap();
    trickle
        .write_all(b"GET /health HTTP/1.1\r\nHost: x\r\n")
        .await
        .unwrap();
    assert!(
        closed_within(trickle, 5).await,
        "a half-sent request kept its connection"
    );
    // one request answered, then idle on keep-alive
    let mut idle = tokio::net::TcpStream::connect(addr).await.unwrap();
    idle.write_all(b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    let mut first = [0u8; 12];
    idle.read_exact(&mut first).await.unwrap();
    assert_eq!(&first, b"HTTP/1.1 200");
    assert!(
        closed_within(idle, 5).await,
        "an idle keep-alive connection was kept"
    );
    // a strategy that answers no ping is closed (1001); one that does stays
    let quiet = common::orders::StrategyWs::connect(addr, "alpha-strategy-token")
        .await
        .unwrap();
    let mut alive = common::orders::StrategyWs::connect(addr, "alpha-strategy-token")
        .await
        .unwrap();
    // reading answers the pings
    let _ = alive
        .wait_for(std::time::Duration::from_secs(5), |_| false)
        .await;
    alive.send(json!({"type": "submit_order"})).await;
    let e = alive
        .wait_for(std::time::Duration::from_secs(5), |v| v["type"] == "error")
        .await
        .expect("the connection that answered pings is open");
    assert_eq!(e["code"], "invalid");
    use futures_util::StreamExt;
    // the gateway closed it as idle (its close frame may be lost to the reset that the
    // client's late pongs to a closed socket cause, so the count is what is asserted)
    let metrics = common::wait_until(std::time::Duration::from_secs(10), || async {
        let text = common::metrics_text(&g.base).await;
        text.contains("tradegate_api_refused_total{reason=\"ws_idle\"}")
            .then_some(text)
    })
    .await;
    assert!(
        metrics.is_some(),
        "the silent strategy was not closed as idle"
    );
    let mut ws = quiet.into_inner();
    let ended = tokio::time::timeout(std::time::Duration::from_secs(10), async {
        loop {
            match ws.next().await {
                Some(Ok(tokio_tungstenite::tungstenite::Message::Close(frame))) => {
                    return frame.map(|f| u16::from(f.code));
                }
                Some(Ok(_)) => continue,
                Some(Err(_)) | None => return None,
            }
        }
    })
    .await
    .expect("the idle connection is closed");
    assert!(matches!(ended, None | Some(1001)), "{ended:?}");
    g.running.stop().await.unwrap();
}
