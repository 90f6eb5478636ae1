//! The backfill from IB's Flex reports: a Flex Query XML file in IB's format imported with
//! `tradegate sync ibkr --flex-file`, and the Flex Web Service asked over HTTPS (a simulated one
//! on loopback that answers as IB's does: reference codes, "generation in progress", rate
//! limits, expired tokens) with `--flex`; both applied through the sync's idempotent path, so
//! fills synced from TWS are left as they are and a repeated import writes nothing.

mod common;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use chrono_tz::Tz;
use rust_decimal::Decimal;
use tokio::net::TcpListener;
use tradegate::sim::flex::{FlexSimConfig, Received, SimFlex, base_url, spawn_tls};
use tradegate::sim::tws::{Scenario, spawn};
use tradegate_actors::ibkr_syncer::backfill::{Origin, import_report};
use tradegate_actors::ibkr_syncer::client::TwsSession;
use tradegate_actors::ibkr_syncer::flex::parse_report;
use tradegate_actors::ibkr_syncer::flex_service::{FlexClient, FlexToken};
use tradegate_actors::ibkr_syncer::tws::{CommissionReport, Contract, Execution, TwsTime};
use tradegate_actors::ibkr_syncer::{SyncRequest, sync_account};
use tradegate_actors::tls::ClientTls;

use common::TestDb;
use common::tls::TestPki;

const TOKEN: &str = "471234567890123456789012";
const QUERY: &str = "1048576";

fn fixture() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/flex/activity-trades.xml")
}

fn fixture_text() -> String {
    std::fs::read_to_string(fixture()).unwrap()
}

fn tradegate(db: &TestDb, dir: &Path) -> tokio::process::Command {
    let mut command = tokio::process::Command::new(env!("CARGO_BIN_EXE_tradegate"));
    command
        .env_remove("TRADEGATE_CONFIG")
        .env_remove("TRADEGATE_IBKR_FLEX_TOKEN")
        .env("DATABASE_URL", &db.conninfo)
        .env("RUST_LOG", "warn")
        .current_dir(dir);
    command
}

async fn run(command: &mut tokio::process::Command) -> (bool, String, String) {
    let out = tokio::time::timeout(Duration::from_secs(120), command.output())
        .await
        .expect("the command did not finish in 2 minutes")
        .unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

async fn count(db: &TestDb, sql: &str) -> i64 {
    db.client().await.query_one(sql, &[]).await.unwrap().get(0)
}

/// Every fill and trade with its physical version: equal fingerprints mean nothing was
/// inserted, updated or deleted in between.
async fn fingerprint(db: &TestDb) -> String {
    db.client()
        .await
        .query_one(
            "SELECT coalesce((SELECT string_agg(id || ':' || xmin::text, ',' ORDER BY id) FROM broker_fills), '') \
             || '|' || coalesce((SELECT string_agg(id || ':' || xmin::text, ',' ORDER BY id) FROM broker_trades), '')",
            &[],
        )
        .await
        .unwrap()
        .get(0)
}

/// One stored fill: (executed_at UTC text, quantity, price, commission, realized P&L, perm id,
/// order ref, symbol, side, canonical).
async fn fill(
    db: &TestDb,
    exec_id: &str,
) -> (
    String,
    Decimal,
    Decimal,
    Option<Decimal>,
    Option<Decimal>,
    i64,
    Option<String>,
    String,
    String,
    bool,
) {
    let row = db
        .client()
        .await
        .query_one(
            "SELECT to_char(executed_at AT TIME ZONE 'UTC', 'YYYY-MM-DD HH24:MI:SS'), quantity, \
                    price, commission, realized_pnl, ib_perm_id, order_ref, symbol, side, \
                    is_canonical \
             FROM broker_fills WHERE exec_id = $1",
            &[&exec_id],
        )
        .await
        .unwrap_or_else(|e| panic!("no fill {exec_id}: {e}"));
    (
        row.get(0),
        row.get(1),
        row.get(2),
        row.get(3),
        row.get(4),
        row.get(5),
        row.get(6),
        row.get(7),
        row.get(8),
        row.get(9),
    )
}

fn dec(text: &str) -> Decimal {
    text.parse().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flex_file_backfills_fills_in_eastern_time_and_a_second_import_writes_nothing() {
    let db = TestDb::new().await;
    let dir = common::scratch_dir("ibkr-flex-file");
    let file = fixture();
    let file = file.to_str().unwrap();
    let (ok, out, err) =
        run(tradegate(&db, &dir).args(["sync", "ibkr", "--flex-file", file])).await;
    assert!(ok, "{out}{err}");
    assert!(out.contains("U1234567: fetched 5, inserted 4,"), "{out}");
    assert!(out.contains("U7654321: fetched 1, inserted 1,"), "{out}");
    assert!(out.contains("1 rows of another level of detail"), "{out}");
    // the cancellation row is refused with its code, not stored and not silently dropped
    assert!(
        err.contains("0000e0d5.6746a1d1.01.01 refused (flex_cancellation)"),
        "{err}"
    );
    assert_eq!(
        count(
            &db,
            "SELECT count(*) FROM broker_fills WHERE exec_id = '0000e0d5.6746a1d1.01.01'"
        )
        .await,
        0
    );
    assert_eq!(
        count(
            &db,
            "SELECT count(*) FROM sync_runs WHERE account_id = 'U1234567' AND status = 'completed' \
             AND rejected_executions @> '[{\"code\": \"flex_cancellation\"}]'"
        )
        .await,
        1
    );

    // times are Eastern: 09:30:15 EST is 14:30:15 UTC, 15:45:01 EDT is 19:45:01 UTC
    let aapl = fill(&db, "0000e0d5.6746a1b2.01.01").await;
    assert_eq!(aapl.0, "2026-11-27 14:30:15");
    assert_eq!((aapl.1, aapl.2), (dec("60"), dec("190.5")));
    assert_eq!(
        aapl.3,
        Some(dec("0.3")),
        "Flex's negative ibCommission is a cost paid"
    );
    assert_eq!((aapl.5, aapl.6.as_deref()), (5501, Some("mom-1")));
    let msft = fill(&db, "0000e1a2.66953c01.01.01").await;
    assert_eq!(msft.0, "2026-07-15 19:45:01");
    assert_eq!(msft.1, dec("25"), "a sale's negative quantity is its size");
    assert_eq!((msft.3, msft.4), (Some(dec("1")), Some(dec("56.5"))));
    assert_eq!(msft.8, "sell");
    let option = fill(&db, "0000e0d5.6746a1c0.01.01").await;
    assert_eq!(
        option.7, "SPY",
        "a derivative is named by its underlying, as TWS does"
    );
    assert_eq!(option.0, "2026-11-27 20:59:59");
    let sap = fill(&db, "00018037.6746b001.01.01").await;
    assert_eq!(sap.0, "2026-11-27 09:30:00");

    // the two executions of order 5501 are one trade with the order's aggregates
    let row = db
        .client()
        .await
        .query_one(
            "SELECT total_quantity, avg_price, total_commission, status FROM broker_trades \
             WHERE account_id = 'U1234567' AND ib_perm_id = 5501",
            &[],
        )
        .await
        .unwrap();
    assert_eq!(row.get::<_, Decimal>(0), dec("100"));
    assert_eq!(row.get::<_, Decimal>(1), dec("190.6"));
    assert_eq!(row.get::<_, Decimal>(2), dec("0.5"));
    assert_eq!(row.get::<_, String>(3), "filled");
    // the raw record is the row as IB wrote it, with its statement
    assert_eq!(
        count(
            &db,
            "SELECT count(*) FROM broker_fills WHERE raw ->> 'source' = 'ib_flex' \
             AND raw -> 'trade' ->> 'transactionID' IS NOT NULL \
             AND raw -> 'statement' ->> 'whenGenerated' = '20261128;081502'"
        )
        .await,
        5
    );
    // each account's import is an ingestion run listing what it created
    assert_eq!(
        count(
            &db,
            "SELECT count(*) FROM data_ingestion_runs WHERE task_name = 'ibkr.flex.import' \
             AND status = 'completed' AND metadata -> 'origin' ->> 'kind' = 'file'"
        )
        .await,
        2
    );
    assert_eq!(
        count(
            &db,
            "SELECT count(*) FROM data_ingestion_run_records r \
             JOIN data_ingestion_runs d ON d.id = r.data_ingestion_run_id \
             WHERE d.task_name = 'ibkr.flex.import' AND r.record_type = 'broker_fill' \
             AND r.operation = 'created'"
        )
        .await,
        5
    );

    let before = fingerprint(&db).await;
    let (ok, out, err) = run(tradegate(&db, &dir).args([
        "sync",
        "ibkr",
        "--flex-file",
        file,
        "--account",
        "U1234567",
        "--format",
        "json",
    ]))
    .await;
    assert!(ok, "{out}{err}");
    let reports: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(
        reports.as_array().unwrap().len(),
        1,
        "--account filters: {out}"
    );
    assert_eq!(reports[0]["inserted_executions_count"], 0, "{out}");
    assert_eq!(reports[0]["updated_executions_count"], 0, "{out}");
    assert_eq!(reports[0]["unchanged_executions_count"], 4, "{out}");
    assert_eq!(
        fingerprint(&db).await,
        before,
        "a repeated import wrote rows"
    );
    // the cancellation is an alert, once, however often the report is imported
    assert_eq!(
        count(
            &db,
            "SELECT count(*) FROM alerts WHERE kind = 'ibkr.flex_cancellation' \
             AND details ->> 'exec_id' = '0000e0d5.6746a1d1.01.01' \
             AND details ->> 'stored_fill_id' IS NULL"
        )
        .await,
        1
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_reports_are_refused_whole_with_a_clear_error_and_store_nothing() {
    let db = TestDb::new().await;
    let dir = common::scratch_dir("ibkr-flex-bad");
    let cases = [
        (
            "truncated.xml",
            fixture_text()[..3000].to_string(),
            "flex_malformed",
        ),
        (
            "orders.xml",
            "<FlexQueryResponse><FlexStatements><FlexStatement accountId=\"U1\"><Trades>\
             <Trade accountId=\"U1\" symbol=\"X\" quantity=\"1\" levelOfDetail=\"ORDER\"/>\
             </Trades></FlexStatement></FlexStatements></FlexQueryResponse>"
                .to_string(),
            "flex_no_executions",
        ),
        (
            "error.xml",
            "<FlexStatementResponse><Status>Fail</Status><ErrorCode>1012</ErrorCode>\
             <ErrorMessage>Token has expired.</ErrorMessage></FlexStatementResponse>"
                .to_string(),
            "flex_refused",
        ),
        (
            "other.xml",
            "<html><body/></html>".to_string(),
            "flex_not_a_report",
        ),
    ];
    for (name, text, code) in cases {
        let path = dir.join(name);
        std::fs::write(&path, text).unwrap();
        let (ok, out, err) =
            run(tradegate(&db, &dir).args(["sync", "ibkr", "--flex-file", path.to_str().unwrap()]))
                .await;
        assert!(!ok, "{name} was accepted: {out}");
        assert!(err.contains(code), "{name}: {err}");
    }
    let (ok, _, err) =
        run(tradegate(&db, &dir).args(["sync", "ibkr", "--flex-file", "missing.xml"])).await;
    assert!(!ok);
    assert!(
        err.contains("cannot read the Flex report missing.xml"),
        "{err}"
    );
    assert_eq!(count(&db, "SELECT count(*) FROM broker_fills").await, 0);
}

/// An execution TWS would send for one of the fixture's rows.
fn tws_execution(exec_id: &str, perm_id: i64, shares: i64, price: &str, utc: &str) -> Execution {
    Execution {
        order_id: 12,
        contract: Contract {
            con_id: 265_598,
            symbol: "AAPL".into(),
            sec_type: "STK".into(),
            exchange: "SMART".into(),
            currency: "USD".into(),
            ..Contract::default()
        },
        exec_id: exec_id.into(),
        time: TwsTime::parse(utc).unwrap(),
        account: "U1234567".into(),
        exchange: "ISLAND".into(),
        side: "BOT".into(),
        shares: Decimal::from(shares),
        price: dec(price),
        perm_id,
        client_id: 0,
        cum_qty: Decimal::from(shares),
        avg_price: dec(price),
        order_ref: "mom-1".into(),
        last_liquidity: 2,
        ..Execution::default()
    }
}

async fn tws_sync(
    pool: &deadpool_postgres::Pool,
    executions: Vec<(Execution, Option<CommissionReport>)>,
) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let _tws = spawn(
        listener,
        Scenario {
            accounts: vec!["U1234567".into()],
            executions,
            ..Scenario::default()
        },
    );
    let mut session = TwsSession::connect(addr, 0, Duration::from_secs(5), Duration::from_secs(5))
        .await
        .unwrap();
    let report = sync_account(
        pool,
        &mut session,
        &SyncRequest {
            account_id: "U1234567".into(),
            lookback: chrono::Duration::days(365),
            zone: Some(Tz::UTC),
        },
    )
    .await
    .unwrap();
    assert!(report.counts.inserted_executions_count > 0);
}

#[tokio::test]
async fn fills_synced_from_tws_stay_as_tws_sent_them_and_only_take_a_missing_commission() {
    let db = TestDb::new().await;
    let pool = common::pool(&db.conninfo, 2);
    // TWS served the first AAPL execution with its commission report, the second without
    // (the report never came)
    let first = tws_execution(
        "0000e0d5.6746a1b2.01.01",
        5501,
        60,
        "190.5",
        "20261127-14:30:15",
    );
    let second = tws_execution(
        "0000e0d5.6746a1b3.01.01",
        5501,
        40,
        "190.75",
        "20261127-14:30:16",
    );
    tws_sync(
        &pool,
        vec![
            (
                first,
                Some(CommissionReport {
                    exec_id: "0000e0d5.6746a1b2.01.01".into(),
                    commission: Some(dec("0.35")),
                    currency: "USD".into(),
                    realized_pnl: None,
                }),
            ),
            (second, None),
            // the execution the report says IB cancelled
            (
                tws_execution(
                    "0000e0d5.6746a1d1.01.01",
                    5504,
                    10,
                    "141.2",
                    "20261127-15:15:00",
                ),
                None,
            ),
        ],
    )
    .await;
    let raw_before: String = db
        .client()
        .await
        .query_one(
            "SELECT raw::text FROM broker_fills WHERE exec_id = '0000e0d5.6746a1b2.01.01'",
            &[],
        )
        .await
        .unwrap()
        .get(0);

    let statements = parse_report(&fixture_text()).unwrap();
    let origin = Origin::File("fixture".into());
    let imports = import_report(
        &pool,
        &statements,
        Tz::America__New_York,
        &["U1234567".to_string()],
        &origin,
    )
    .await;
    assert_eq!(imports.len(), 1);
    let report = imports[0].outcome.as_ref().unwrap();
    assert_eq!(
        report.counts.inserted_executions_count, 2,
        "MSFT and the option"
    );
    assert_eq!(report.counts.late_commissions_count, 1);
    assert_eq!(report.counts.unchanged_executions_count, 1);

    // what TWS sent stays: its commission (0.35, not Flex's 0.3), its raw record, its fields
    let kept = fill(&db, "0000e0d5.6746a1b2.01.01").await;
    assert_eq!(kept.3, Some(dec("0.35")));
    let raw_after: String = db
        .client()
        .await
        .query_one(
            "SELECT raw::text FROM broker_fills WHERE exec_id = '0000e0d5.6746a1b2.01.01'",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(raw_after, raw_before);
    // the fill without one takes the report's, marked as coming from Flex
    let filled = fill(&db, "0000e0d5.6746a1b3.01.01").await;
    assert_eq!(filled.3, Some(dec("0.2")));
    assert_eq!(
        count(
            &db,
            "SELECT count(*) FROM broker_fills WHERE exec_id = '0000e0d5.6746a1b3.01.01' \
             AND raw -> 'commission_report' ->> 'source' = 'ib_flex' \
             AND raw -> 'execution' ->> 'exec_id' = '0000e0d5.6746a1b3.01.01'"
        )
        .await,
        1
    );
    // and its trade's commission total follows
    let total: Decimal = db
        .client()
        .await
        .query_one(
            "SELECT total_commission FROM broker_trades WHERE ib_perm_id = 5501",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(total, dec("0.55"));
    assert_eq!(
        count(
            &db,
            "SELECT count(*) FROM broker_trades WHERE ib_perm_id = 5501"
        )
        .await,
        1,
        "the Flex fills joined the trade TWS's made"
    );

    // the cancelled execution TWS stored still counts: an alert names it
    assert_eq!(
        count(
            &db,
            "SELECT count(*) FROM alerts a JOIN broker_fills f \
               ON f.id = (a.details ->> 'stored_fill_id')::bigint \
             WHERE a.kind = 'ibkr.flex_cancellation' AND f.exec_id = '0000e0d5.6746a1d1.01.01' \
               AND a.message LIKE '%still counts%'"
        )
        .await,
        1
    );

    let again = import_report(&pool, &statements, Tz::America__New_York, &[], &origin).await;
    let report = again
        .iter()
        .find(|i| i.account_id == "U1234567")
        .unwrap()
        .outcome
        .as_ref()
        .unwrap();
    assert_eq!(report.counts.writes(), 0, "{:?}", report.counts);
    // only the other account's fill is new
    assert_eq!(count(&db, "SELECT count(*) FROM broker_fills").await, 6);
    assert_eq!(
        count(
            &db,
            "SELECT count(*) FROM broker_fills WHERE account_id = 'U1234567'"
        )
        .await,
        5
    );
}

#[tokio::test]
async fn a_correction_in_the_report_supersedes_the_revision_tws_sent() {
    let db = TestDb::new().await;
    let pool = common::pool(&db.conninfo, 2);
    // TWS sent revision .01 of the first AAPL fill; IB later corrected it to 55 shares (.02)
    tws_sync(
        &pool,
        vec![(
            tws_execution(
                "0000e0d5.6746a1b2.01.01",
                5501,
                60,
                "190.5",
                "20261127-14:30:15",
            ),
            None,
        )],
    )
    .await;
    let corrected = fixture_text()
        .replace(
            "quantity=\"60\" tradePrice=\"190.5\"",
            "quantity=\"55\" tradePrice=\"190.5\"",
        )
        .replace("0000e0d5.6746a1b2.01.01", "0000e0d5.6746a1b2.01.02");
    let statements = parse_report(&corrected).unwrap();
    let imports = import_report(
        &pool,
        &statements,
        Tz::America__New_York,
        &["U1234567".to_string()],
        &Origin::File("corrected".into()),
    )
    .await;
    let report = imports[0].outcome.as_ref().unwrap();
    assert_eq!(
        report.counts.canonical_changes_count, 1,
        "{:?}",
        report.counts
    );
    assert!(
        !fill(&db, "0000e0d5.6746a1b2.01.01").await.9,
        ".01 is superseded"
    );
    let new = fill(&db, "0000e0d5.6746a1b2.01.02").await;
    assert!(new.9, ".02 is canonical");
    assert_eq!(new.1, dec("55"));
    let qty: Decimal = db
        .client()
        .await
        .query_one(
            "SELECT total_quantity FROM broker_trades WHERE ib_perm_id = 5501",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(
        qty,
        dec("95"),
        "55 corrected + 40, the superseded 60 not counted"
    );
}

async fn flex_service(config: FlexSimConfig, pki: &TestPki) -> (SimFlex, String) {
    let listener = TcpListener::bind(SocketAddr::from(([127, 0, 0, 1], 0)))
        .await
        .unwrap();
    let addr = listener.local_addr().unwrap();
    (spawn_tls(listener, config, &pki.server), base_url(addr))
}

fn sim_config() -> FlexSimConfig {
    FlexSimConfig {
        token: TOKEN.into(),
        query_id: QUERY.into(),
        statement: fixture_text(),
        pending_polls: 2,
        send_error: None,
    }
}

fn config_file(dir: &Path, url: &str, ca: &Path) -> PathBuf {
    let path = dir.join("config.toml");
    std::fs::write(
        &path,
        format!(
            "[ibkr.flex]\nquery_id = \"{QUERY}\"\nurl = \"{url}\"\ntimeout_secs = 60\n\n\
             [tls]\nextra_ca_file = \"{}\"\n",
            ca.display()
        ),
    )
    .unwrap();
    path
}

fn answered(received: &[Received]) -> Vec<(&str, u32)> {
    received
        .iter()
        .map(|r| (r.endpoint.as_str(), r.answered))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_web_service_is_asked_over_https_waited_for_while_generating_and_the_token_stays_secret()
 {
    let db = TestDb::new().await;
    let dir = common::scratch_dir("ibkr-flex-service");
    let pki = TestPki::new(&dir, "flex-ca");
    let (sim, url) = flex_service(sim_config(), &pki).await;
    let config = config_file(&dir, &url, &pki.ca_file);
    let (ok, out, err) = run(tradegate(&db, &dir)
        .env("TRADEGATE_IBKR_FLEX_TOKEN", TOKEN)
        .env("RUST_LOG", "debug")
        .arg("--config")
        .arg(&config)
        .args(["sync", "ibkr", "--flex"]))
    .await;
    assert!(ok, "{out}{err}");
    assert!(out.contains("U1234567: fetched 5, inserted 4,"), "{out}");
    // asked once, told twice the statement is being generated, then given it; never too fast
    assert_eq!(
        answered(&sim.received()),
        vec![
            ("SendRequest", 0),
            ("GetStatement", 1019),
            ("GetStatement", 1019),
            ("GetStatement", 0)
        ]
    );
    assert!(sim.handshakes.completed() >= 1, "not over TLS");
    let at: Vec<_> = sim.received().iter().map(|r| r.at).collect();
    for pair in at.windows(2) {
        assert!(
            pair[1] - pair[0] >= Duration::from_secs(1),
            "faster than IB's one request a second"
        );
    }
    assert!(
        !out.contains(TOKEN) && !err.contains(TOKEN),
        "the token was printed or logged"
    );
    // nor stored anywhere in the audit trail
    let client = db.client().await;
    let tables: Vec<String> = client
        .query(
            "SELECT tablename FROM pg_tables WHERE schemaname = 'public'",
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert!(tables.len() > 10);
    for table in tables {
        let n: i64 = client
            .query_one(
                &format!("SELECT count(*) FROM {table} t WHERE t::text LIKE '%' || $1 || '%'"),
                &[&TOKEN],
            )
            .await
            .unwrap()
            .get(0);
        assert_eq!(n, 0, "the token is stored in {table}");
    }
    assert_eq!(
        count(
            &db,
            &format!(
                "SELECT count(*) FROM data_ingestion_runs WHERE task_name = 'ibkr.flex.import' \
                 AND metadata -> 'origin' ->> 'query_id' = '{QUERY}'"
            )
        )
        .await,
        2
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_expired_token_is_refused_at_once_with_ibs_code_and_nothing_is_stored() {
    let db = TestDb::new().await;
    let dir = common::scratch_dir("ibkr-flex-expired");
    let pki = TestPki::new(&dir, "flex-ca");
    let mut config = sim_config();
    config.send_error = Some((1012, "Token has expired.".into()));
    let (sim, url) = flex_service(config, &pki).await;
    let config = config_file(&dir, &url, &pki.ca_file);
    let (ok, out, err) = run(tradegate(&db, &dir)
        .env("TRADEGATE_IBKR_FLEX_TOKEN", TOKEN)
        .arg("--config")
        .arg(&config)
        .args(["sync", "ibkr", "--flex"]))
    .await;
    assert!(!ok, "{out}");
    assert!(
        err.contains("error 1012: Token has expired.") && err.contains("flex_refused"),
        "{err}"
    );
    assert!(!err.contains(TOKEN), "{err}");
    assert_eq!(
        answered(&sim.received()),
        vec![("SendRequest", 1012)],
        "not retried"
    );
    assert_eq!(count(&db, "SELECT count(*) FROM broker_fills").await, 0);

    // without a token, or without a query id, it says what to set
    let (ok, _, err) = run(tradegate(&db, &dir)
        .arg("--config")
        .arg(&config)
        .args(["sync", "ibkr", "--flex"]))
    .await;
    assert!(!ok);
    assert!(err.contains("TRADEGATE_IBKR_FLEX_TOKEN"), "{err}");
    let (ok, _, err) = run(tradegate(&db, &common::scratch_dir("ibkr-flex-no-query"))
        .env("TRADEGATE_IBKR_FLEX_TOKEN", TOKEN)
        .args(["sync", "ibkr", "--flex"]))
    .await;
    assert!(!ok);
    assert!(err.contains("[ibkr.flex] query_id"), "{err}");
}

#[tokio::test]
async fn the_service_enforces_ibs_limits_and_the_client_keeps_within_them() {
    let dir = common::scratch_dir("ibkr-flex-limits");
    let pki = TestPki::new(&dir, "flex-ca");
    let (sim, url) = flex_service(sim_config(), &pki).await;
    let tls = ClientTls::with_sources(None, Some(pki.ca_file.as_path())).unwrap();
    // two requests within a second: the second is answered 1018
    let http = tls.http().user_agent("test").build().unwrap();
    for _ in 0..2 {
        let body = http
            .get(format!("{url}/SendRequest"))
            .query(&[("t", TOKEN), ("q", QUERY), ("v", "3")])
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        assert!(body.contains("<FlexStatementResponse"), "{body}");
    }
    assert_eq!(
        answered(&sim.received()),
        vec![("SendRequest", 0), ("SendRequest", 1018)]
    );
    // no User-Agent: refused, as IB does
    let bare = tls.http().build().unwrap();
    let status = bare
        .get(format!("{url}/SendRequest"))
        .query(&[("t", TOKEN), ("q", QUERY), ("v", "3")])
        .send()
        .await
        .unwrap()
        .status();
    assert_eq!(status.as_u16(), 403);

    // a wrong token is fatal at once (asked a second after the last, so not refused as too fast)
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let client = FlexClient::new(
        &tls,
        &url,
        FlexToken::new("wrong"),
        QUERY,
        Duration::from_secs(30),
    )
    .unwrap();
    let err = client.fetch().await.unwrap_err();
    assert_eq!(err.code(), "flex_refused");
    assert!(err.to_string().contains("1015"), "{err}");
    assert!(format!("{:?}", FlexToken::new(TOKEN)).contains("***"));
    assert!(
        !format!("{client:?}").contains("wrong"),
        "Debug shows the token"
    );

    // a statement still generating at the deadline is given up on with the last answer
    let mut slow = sim_config();
    slow.pending_polls = 1000;
    let (_sim, url) = flex_service(slow, &pki).await;
    let client = FlexClient::new(
        &tls,
        &url,
        FlexToken::new(TOKEN),
        QUERY,
        Duration::from_secs(4),
    )
    .unwrap();
    let started = std::time::Instant::now();
    let err = client.fetch().await.unwrap_err();
    assert_eq!(err.code(), "flex_deadline", "{err}");
    assert!(err.to_string().contains("1019"), "{err}");
    assert!(started.elapsed() < Duration::from_secs(10));

    // an unreachable service is said without the URL (it carries the token)
    let closed = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = closed.local_addr().unwrap();
    drop(closed);
    let client = FlexClient::new(
        &tls,
        &base_url(addr),
        FlexToken::new(TOKEN),
        QUERY,
        Duration::from_secs(10),
    )
    .unwrap();
    let err = client.fetch().await.unwrap_err();
    assert_eq!(err.code(), "flex_unavailable");
    assert!(!err.to_string().contains(TOKEN), "{err}");
}

/// The gateway's own backfill: with `[ibkr.flex] query_id` and the token set, it fetches the
/// report at start and imports its IBKR accounts' executions (a gateway that was down across
/// midnight catches up by itself); accounts it does not sync are left out. A query id without
/// the token stops the start, naming the variable. One gateway in this process.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_gateway_backfills_its_accounts_from_the_web_service_at_start() {
    use tradegate::app::Running;
    use tradegate::config::{Config, Secret};

    let db = TestDb::new().await;
    let dir = common::scratch_dir("ibkr-flex-gateway");
    let pki = TestPki::new(&dir, "flex-ca");
    let (sim, url) = flex_service(sim_config(), &pki).await;
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let tws_addr = listener.local_addr().unwrap();
    let _tws = spawn(
        listener,
        Scenario {
            accounts: vec!["U1234567".into()],
            ..Scenario::default()
        },
    );
    let mut config = Config::default();
    config.database.url = db.conninfo.clone();
    config.tradelog.spill_dir = dir.join("spill");
    config.ibkr.accounts = vec!["U1234567".into()];
    config.ibkr.host = tws_addr.ip().to_string();
    config.ibkr.port = tws_addr.port();
    config.ibkr.sync_interval_secs = 0;
    config.ibkr.flex.query_id = QUERY.into();
    config.ibkr.flex.url = url;
    config.tls.extra_ca_file = pki.ca_file.clone();
    common::api::secure(&mut config);

    let Err(err) = Running::start(&config, SocketAddr::from(([127, 0, 0, 1], 0))).await else {
        panic!("a query id without the token started");
    };
    assert!(
        format!("{err:#}").contains("TRADEGATE_IBKR_FLEX_TOKEN"),
        "{err:#}"
    );

    config.ibkr_flex_token = Some(Secret::new(TOKEN));
    let running = Running::start(&config, SocketAddr::from(([127, 0, 0, 1], 0)))
        .await
        .unwrap();
    let imported = common::wait_until(Duration::from_secs(30), || async {
        let n = count(
            &db,
            "SELECT count(*) FROM data_ingestion_runs WHERE task_name = 'ibkr.flex.import' \
             AND status = 'completed'",
        )
        .await;
        (n > 0).then_some(n)
    })
    .await;
    running.stop().await.unwrap();
    assert_eq!(
        imported,
        Some(1),
        "one account imported: {:?}",
        sim.received()
    );
    assert_eq!(count(&db, "SELECT count(*) FROM broker_fills").await, 4);
    assert_eq!(
        count(
            &db,
            "SELECT count(*) FROM broker_fills WHERE account_id <> 'U1234567'"
        )
        .await,
        0,
        "an account the gateway does not sync was imported"
    );
    assert_eq!(
        answered(&sim.received()),
        vec![
            ("SendRequest", 0),
            ("GetStatement", 1019),
            ("GetStatement", 1019),
            ("GetStatement", 0)
        ]
    );
}
