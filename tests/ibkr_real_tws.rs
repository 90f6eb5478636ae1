//! IBKR sync against a TWS that behaves like the real one (the simulated TWS with its real-TWS
//! switches on), over TCP, into a real PostgreSQL: one session per client id (326), the master
//! client id rule, commission reports that trail their executions or come in a later request,
//! times as IB writes them (UTC `yyyymmdd-hh:mm:ss`, the login's zone, IB's zone names, a GB2312
//! handshake), IB's exec id forms (combo legs, hexadecimal revisions, odd ids), TWS's notices
//! in the middle of an answer, and a TWS that never ends its answer.

mod common;

use std::net::SocketAddr;
use std::time::Duration;

use chrono::{DateTime, Utc};
use chrono_tz::Tz;
use rust_decimal::Decimal;
use tokio::net::TcpListener;
use tradegate::sim::tws::{CommissionTiming, Fault, Scenario, SharedScenario, spawn};
use tradegate_actors::domain::SyncReport;
use tradegate_actors::ibkr_syncer::client::{NoticeKind, Timeouts, TwsSession};
use tradegate_actors::ibkr_syncer::tws::{CommissionReport, Contract, Execution, TwsTime};
use tradegate_actors::ibkr_syncer::{SyncError, SyncRequest, sync_account};

use common::TestDb;

const SECOND: Duration = Duration::from_secs(1);

fn execution(exec_id: &str, perm_id: i64, shares: i64, time: &str) -> Execution {
    Execution {
        order_id: 11,
        contract: Contract {
            con_id: 265_598,
            symbol: "AAPL".into(),
            sec_type: "STK".into(),
            exchange: "SMART".into(),
            currency: "USD".into(),
            ..Contract::default()
        },
        exec_id: exec_id.into(),
        time: TwsTime::parse(time).unwrap(),
        account: "DU1".into(),
        exchange: "ISLAND".into(),
        side: "BOT".into(),
        shares: Decimal::from(shares),
        price: Decimal::new(18_512, 2),
        perm_id,
        client_id: 3,
        cum_qty: Decimal::from(shares),
        avg_price: Decimal::new(18_512, 2),
        last_liquidity: 1,
        ..Execution::default()
    }
}

/// An execution two hours ago, in IB's UTC form.
fn recent(exec_id: &str, perm_id: i64, shares: i64) -> Execution {
    let at = Utc::now() - chrono::Duration::hours(2);
    execution(
        exec_id,
        perm_id,
        shares,
        &at.format("%Y%m%d-%H:%M:%S").to_string(),
    )
}

fn report(exec_id: &str, commission: Option<i64>) -> CommissionReport {
    CommissionReport {
        exec_id: exec_id.into(),
        commission: commission.map(|c| Decimal::new(c, 2)),
        currency: "USD".into(),
        realized_pnl: None,
    }
}

struct Tws {
    db: TestDb,
    pool: deadpool_postgres::Pool,
    sim: SharedScenario,
    addr: SocketAddr,
}

impl Tws {
    async fn new(scenario: Scenario) -> Self {
        let db = TestDb::new().await;
        let pool = common::pool(&db.conninfo, 4);
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let sim = spawn(listener, scenario);
        Self {
            db,
            pool,
            sim,
            addr,
        }
    }

    async fn session(&self, client_id: i64) -> TwsSession {
        TwsSession::connect(self.addr, client_id, 5 * SECOND, 5 * SECOND)
            .await
            .expect("connect to the simulated TWS")
    }

    async fn sync_over(
        &self,
        session: &mut TwsSession,
        account: &str,
        zone: Option<Tz>,
    ) -> Result<SyncReport, SyncError> {
        sync_account(
            &self.pool,
            session,
            &SyncRequest {
                account_id: account.into(),
                lookback: chrono::Duration::days(3650),
                zone,
            },
        )
        .await
    }

    async fn query_one(&self, sql: &str) -> tokio_postgres::Row {
        self.db.client().await.query_one(sql, &[]).await.unwrap()
    }

    async fn executed_at(&self, exec_id: &str) -> DateTime<Utc> {
        self.db
            .client()
            .await
            .query_one(
                "SELECT executed_at FROM broker_fills WHERE exec_id = $1",
                &[&exec_id],
            )
            .await
            .unwrap()
            .get(0)
    }
}

fn scenario(executions: Vec<(Execution, Option<CommissionReport>)>) -> Scenario {
    Scenario {
        accounts: vec!["DU1".into(), "DU2".into()],
        executions,
        ..Scenario::default()
    }
}

// ---- 1. one session per client id ----

/// TWS refuses a second session with a client id in use (error 326) and closes it; tradegate
/// names it a configuration error (its own code, no retry loop), and the id is free again once
/// the first session is gone.
#[tokio::test]
async fn a_second_session_with_a_client_id_in_use_is_refused_with_326() {
    let tws = Tws::new(scenario(vec![(recent("a.1.01", 1, 5), None)])).await;
    let first = tws.session(17).await;
    let err = TwsSession::connect(tws.addr, 17, 5 * SECOND, 5 * SECOND)
        .await
        .expect_err("TWS refuses a second session with one client id");
    assert!(err.client_id_in_use(), "{err}");
    assert!(err.to_string().contains("326"), "{err}");
    assert_eq!(SyncError::from(err).code(), "tws_client_id_in_use");
    // another id is fine meanwhile, and the refused one is free once the first has gone
    let mut other = tws.session(18).await;
    tws.sync_over(&mut other, "DU1", None).await.unwrap();
    drop(first);
    let mut again = tws.session(17).await;
    tws.sync_over(&mut again, "DU1", None).await.unwrap();
    let stats = tws.sim.lock().unwrap().stats.clone();
    assert_eq!((stats.sessions, stats.refused), (3, 1), "{stats:?}");
}

/// Several accounts of one login are synced over one session; an account the login does not
/// serve is an error that says which accounts it does serve, never an empty sync.
#[tokio::test]
async fn one_session_serves_every_account_of_its_login_and_refuses_others() {
    let mut du2 = recent("b.1.01", 2, 7);
    du2.account = "DU2".into();
    let tws = Tws::new(scenario(vec![(recent("a.1.01", 1, 5), None), (du2, None)])).await;
    let mut session = tws.session(17).await;
    let one = tws.sync_over(&mut session, "DU1", None).await.unwrap();
    let two = tws.sync_over(&mut session, "DU2", None).await.unwrap();
    assert_eq!(
        (
            one.counts.inserted_executions_count,
            two.counts.inserted_executions_count
        ),
        (1, 1)
    );
    let err = tws
        .sync_over(&mut session, "DU9", None)
        .await
        .expect_err("DU9 is not an account of this login");
    assert_eq!(err.code(), "account_not_managed");
    assert!(err.to_string().contains("DU1, DU2"), "{err}");
    assert_eq!(tws.sim.lock().unwrap().stats.sessions, 1);
    let failed = tws
        .query_one("SELECT count(*) FROM sync_runs WHERE account_id = 'DU9' AND status = 'failed'")
        .await;
    assert_eq!(failed.get::<_, i64>(0), 1, "the refusal is on record");
}

// ---- 2. the master client id ----

/// With a Master API client ID set, TWS shows any other session only its own client's
/// executions (none, for a gateway that places no IBKR orders) and says nothing about it; the
/// sync's report warns. The master sees everything, commission reports included.
#[tokio::test]
async fn a_session_that_is_not_the_master_sees_nothing_and_the_sync_says_why() {
    let executions = vec![
        (recent("a.1.01", 1, 5), Some(report("a.1.01", Some(105)))),
        (recent("a.2.01", 2, 5), Some(report("a.2.01", Some(110)))),
    ];
    let tws = Tws::new(Scenario {
        master_client_id: Some(0),
        ..scenario(executions)
    })
    .await;
    let mut other = tws.session(17).await;
    let blind = tws.sync_over(&mut other, "DU1", None).await.unwrap();
    assert_eq!(blind.counts.fetched_executions_count, 0);
    assert_eq!(blind.warnings.len(), 1, "{blind:?}");
    assert!(
        blind.warnings[0].contains("Master API client ID")
            && blind.warnings[0].contains("set it to 17"),
        "{}",
        blind.warnings[0]
    );
    let row = tws
        .query_one("SELECT warnings FROM sync_runs ORDER BY id LIMIT 1")
        .await;
    assert_eq!(row.get::<_, Vec<String>>(0), blind.warnings, "on record");
    let mut master = tws.session(0).await;
    let seen = tws.sync_over(&mut master, "DU1", None).await.unwrap();
    assert_eq!(seen.counts.inserted_executions_count, 2);
    assert!(seen.warnings.is_empty(), "{:?}", seen.warnings);
    let total = tws
        .query_one("SELECT sum(commission) FROM broker_fills")
        .await;
    assert_eq!(total.get::<_, Decimal>(0), Decimal::new(215, 2));
}

/// The other half of the master rule: executions of other clients whose commission reports
/// never come (TWS sends reports of other clients only to the master).
#[test]
fn executions_of_other_clients_without_any_report_are_a_warning() {
    use tradegate_actors::ibkr_syncer::client::Executions;
    use tradegate_actors::ibkr_syncer::sync::master_warnings;
    let fetched = Executions {
        executions: vec![recent("a.1.01", 1, 5), recent("a.2.01", 2, 5)],
        commissions: Vec::new(),
        unsolicited: 0,
    };
    let warnings = master_warnings("DU1", &fetched, 17, chrono::Duration::days(7));
    assert_eq!(warnings.len(), 1);
    assert!(
        warnings[0].contains("no commission report"),
        "{}",
        warnings[0]
    );
    let reported = Executions {
        commissions: vec![report("a.1.01", Some(1))],
        ..fetched
    };
    assert!(master_warnings("DU1", &reported, 17, chrono::Duration::days(7)).is_empty());
}

// ---- 3. commissions that stay ----

/// A stored commission survives a fetch without its report (the report trails, the session is
/// not the master, TWS restarted): the re-sync writes nothing. A report TWS sends after the end
/// marker, later than the grace, is read by the next request on the session and applied to
/// the stored fill, and its trade's total follows.
#[tokio::test]
async fn a_commission_once_stored_stays_and_a_late_report_reaches_its_fill() {
    let a = recent("a.1.01", 1, 5);
    let b = recent("a.2.01", 1, 5);
    let tws = Tws::new(scenario(vec![
        (a.clone(), Some(report("a.1.01", Some(105)))),
        (b.clone(), Some(report("a.2.01", Some(95)))),
    ]))
    .await;
    let mut session = tws.session(17).await;
    tws.sync_over(&mut session, "DU1", None).await.unwrap();
    // TWS restarted: the executions come back without their reports
    tws.sim.lock().unwrap().executions = vec![(a.clone(), None), (b.clone(), None)];
    let before = tws
        .query_one("SELECT string_agg(xmin::text, ',' ORDER BY id) FROM broker_fills")
        .await
        .get::<_, String>(0);
    let again = tws.sync_over(&mut session, "DU1", None).await.unwrap();
    assert_eq!(again.counts.writes(), 0, "{again:?}");
    let after = tws
        .query_one("SELECT string_agg(xmin::text, ',' ORDER BY id) FROM broker_fills")
        .await
        .get::<_, String>(0);
    assert_eq!(before, after, "no fill rewritten");
    let kept = tws
        .query_one("SELECT sum(commission), bool_and(raw ? 'commission_report') FROM broker_fills")
        .await;
    assert_eq!(kept.get::<_, Decimal>(0), Decimal::new(200, 2));
    assert!(kept.get::<_, bool>(1), "the raw record keeps the report");
    // an unset commission does not clear one either
    tws.sim.lock().unwrap().executions = vec![(a.clone(), Some(report("a.1.01", None)))];
    let unset = tws.sync_over(&mut session, "DU1", None).await.unwrap();
    assert_eq!(unset.counts.writes(), 0, "{unset:?}");

    // a new fill whose report comes 300 ms after the end marker (the session waits 50 ms)
    let c = recent("a.3.01", 1, 5);
    {
        let mut s = tws.sim.lock().unwrap();
        s.executions = vec![(c.clone(), Some(report("a.3.01", Some(70))))];
        s.commissions = CommissionTiming::AfterEnd(Duration::from_millis(300));
    }
    let first = tws.sync_over(&mut session, "DU1", None).await.unwrap();
    assert_eq!(first.counts.inserted_executions_count, 1);
    let bare = tws
        .query_one("SELECT commission FROM broker_fills WHERE exec_id = 'a.3.01'")
        .await;
    assert_eq!(bare.get::<_, Option<Decimal>>(0), None, "not there yet");
    tokio::time::sleep(Duration::from_millis(500)).await;
    // the next request on the session reads the late report; its fill is no longer served
    tws.sim.lock().unwrap().executions.clear();
    let late = tws.sync_over(&mut session, "DU1", None).await.unwrap();
    assert_eq!(late.counts.late_commissions_count, 1, "{late:?}");
    let applied = tws
        .query_one(
            "SELECT f.commission, f.raw -> 'commission_report' ->> 'commission', \
                    t.total_commission \
             FROM broker_fills f JOIN broker_trades t ON t.id = f.trade_id \
             WHERE f.exec_id = 'a.3.01'",
        )
        .await;
    assert_eq!(applied.get::<_, Decimal>(0), Decimal::new(70, 2));
    assert_eq!(applied.get::<_, String>(1), "0.70");
    assert_eq!(
        applied.get::<_, Decimal>(2),
        Decimal::new(270, 2),
        "the trade's total follows"
    );
    let recorded = tws
        .query_one(
            "SELECT count(*) FROM data_ingestion_run_records x \
             JOIN data_ingestion_runs r ON r.id = x.data_ingestion_run_id \
             WHERE x.operation = 'updated' AND x.record_type = 'broker_fill' \
               AND r.run_id = (SELECT run_id FROM data_ingestion_runs ORDER BY id DESC LIMIT 1)",
        )
        .await;
    assert_eq!(recorded.get::<_, i64>(0), 1, "recorded as an update");
    let quiet = tws.sync_over(&mut session, "DU1", None).await.unwrap();
    assert_eq!(quiet.counts.writes(), 0);
}

/// A late report that belongs to another account of the login is kept by the session until
/// that account's sync.
#[tokio::test]
async fn a_late_report_of_another_account_waits_for_that_accounts_sync() {
    let mut other = recent("b.1.01", 2, 4);
    other.account = "DU2".into();
    let tws = Tws::new(Scenario {
        commissions: CommissionTiming::AfterEnd(Duration::from_millis(200)),
        ..scenario(vec![(other.clone(), Some(report("b.1.01", Some(40))))])
    })
    .await;
    let mut session = tws.session(17).await;
    let du2 = tws.sync_over(&mut session, "DU2", None).await.unwrap();
    assert_eq!(du2.counts.inserted_executions_count, 1);
    tokio::time::sleep(Duration::from_millis(400)).await;
    // DU1's request reads DU2's late report: not DU1's, kept
    tws.sim.lock().unwrap().executions = vec![(other.clone(), None)];
    let du1 = tws.sync_over(&mut session, "DU1", None).await.unwrap();
    assert_eq!(du1.counts.late_commissions_count, 0);
    let du2 = tws.sync_over(&mut session, "DU2", None).await.unwrap();
    assert_eq!(du2.counts.updated_executions_count, 1, "{du2:?}");
    let stored = tws
        .query_one("SELECT commission FROM broker_fills WHERE exec_id = 'b.1.01'")
        .await;
    assert_eq!(stored.get::<_, Decimal>(0), Decimal::new(40, 2));
}

/// Executions TWS pushes with reqId -1 (new fills on an open session) are not part of the
/// answer: nothing is counted or stored twice.
#[tokio::test]
async fn pushed_executions_are_not_part_of_the_answer() {
    let tws = Tws::new(Scenario {
        push_unsolicited: true,
        ..scenario(vec![
            (recent("p.1.01", 1, 2), Some(report("p.1.01", Some(20)))),
            (recent("p.2.01", 1, 3), Some(report("p.2.01", Some(30)))),
        ])
    })
    .await;
    let mut session = tws.session(17).await;
    let report = tws.sync_over(&mut session, "DU1", None).await.unwrap();
    assert_eq!(report.counts.fetched_executions_count, 2);
    assert_eq!(report.counts.inserted_executions_count, 2);
    let total = tws
        .query_one("SELECT total_quantity, total_commission FROM broker_trades")
        .await;
    assert_eq!(
        (total.get::<_, Decimal>(0), total.get::<_, Decimal>(1)),
        (Decimal::from(5), Decimal::new(50, 2))
    );
}

// ---- 4. and 5. times and bytes as IB sends them ----

/// Zone-less times are in the login's zone, which TWS names in its handshake (here `EST`, IB's
/// name for New York time); `yyyymmdd-hh:mm:ss` is UTC; IB's zone names are mapped; a time in a
/// zone nobody knows fails only its own execution. The UTC trade date of a composite parent
/// follows the placed time.
#[tokio::test]
async fn times_are_placed_as_ib_writes_them() {
    let executions = vec![
        (execution("t.1.01", 0, 1, "20240102  21:30:00"), None),
        (execution("t.2.01", 0, 1, "20240102-21:30:00"), None),
        (execution("t.3.01", 0, 1, "20240702 10:00:00 MET"), None),
        (
            execution("t.4.01", 0, 1, "20240702 10:00:00 Universal"),
            None,
        ),
        (
            execution("t.5.01", 0, 1, "20240702 10:00:00 Mars/Olympus"),
            None,
        ),
    ];
    let tws = Tws::new(Scenario {
        login_zone: Tz::America__New_York,
        handshake_zone: Some(b"EST".to_vec()),
        ..scenario(executions)
    })
    .await;
    let mut session = tws.session(17).await;
    assert!(
        session.connection_time().ends_with(" EST"),
        "{}",
        session.connection_time()
    );
    let report = tws.sync_over(&mut session, "DU1", None).await.unwrap();
    assert_eq!(report.counts.inserted_executions_count, 4);
    let refused: Vec<(&str, &str)> = report
        .rejected
        .iter()
        .map(|r| (r.exec_id.as_str(), r.code.as_str()))
        .collect();
    assert_eq!(refused, [("t.5.01", "unknown_time_zone")]);
    let at = |t: DateTime<Utc>| t.to_rfc3339();
    assert_eq!(
        at(tws.executed_at("t.1.01").await),
        "2024-01-03T02:30:00+00:00",
        "the login's zone, not UTC"
    );
    assert_eq!(
        at(tws.executed_at("t.2.01").await),
        "2024-01-02T21:30:00+00:00"
    );
    assert_eq!(
        at(tws.executed_at("t.3.01").await),
        "2024-07-02T08:00:00+00:00"
    );
    assert_eq!(
        at(tws.executed_at("t.4.01").await),
        "2024-07-02T10:00:00+00:00"
    );
    let day = tws
        .query_one(
            "SELECT t.trade_date::text FROM broker_trades t JOIN broker_fills f \
             ON f.trade_id = t.id WHERE f.exec_id = 't.1.01'",
        )
        .await;
    assert_eq!(day.get::<_, String>(0), "2024-01-03", "the UTC trade date");
    // a configured zone wins over the handshake's
    let mut zoned = tws.session(18).await;
    tws.sim.lock().unwrap().executions =
        vec![(execution("t.6.01", 0, 1, "20240102  21:30:00"), None)];
    tws.sync_over(&mut zoned, "DU1", Some(Tz::Europe__London))
        .await
        .unwrap();
    assert_eq!(
        at(tws.executed_at("t.6.01").await),
        "2024-01-02T21:30:00+00:00"
    );
}

/// A TWS whose handshake names no zone tradegate knows, with no zone configured: zone-less
/// times are refused (kept on the sync run), never read as UTC; UTC-form times are stored.
#[tokio::test]
async fn without_a_login_zone_zone_less_times_are_refused_not_guessed() {
    let tws = Tws::new(Scenario {
        handshake_zone: Some(b"Somewhere/Else".to_vec()),
        ..scenario(vec![
            (execution("u.1.01", 0, 1, "20240102  21:30:00"), None),
            (execution("u.2.01", 0, 1, "20240102-21:30:00"), None),
        ])
    })
    .await;
    let mut session = tws.session(17).await;
    let report = tws.sync_over(&mut session, "DU1", None).await.unwrap();
    assert_eq!(report.counts.inserted_executions_count, 1);
    assert_eq!(report.rejected.len(), 1);
    assert_eq!(
        (
            report.rejected[0].exec_id.as_str(),
            report.rejected[0].code.as_str()
        ),
        ("u.1.01", "no_login_zone")
    );
    assert!(report.rejected[0].message.contains("[ibkr] timezone"));
}

/// A TWS with a Chinese locale writes its zone in GB2312 in the handshake (rust-ibapi#352):
/// the session opens, and the zone is read for what it is (China Standard Time).
#[tokio::test]
async fn a_gb2312_handshake_connects_and_names_its_zone() {
    // 中国标准时间 in GB2312
    let zone = vec![
        0xd6, 0xd0, 0xb9, 0xfa, 0xb1, 0xea, 0xd7, 0xbc, 0xca, 0xb1, 0xbc, 0xe4,
    ];
    let tws = Tws::new(Scenario {
        login_zone: Tz::Asia__Shanghai,
        handshake_zone: Some(zone),
        ..scenario(vec![(
            execution("g.1.01", 0, 1, "20240102  10:00:00"),
            None,
        )])
    })
    .await;
    let mut session = tws.session(17).await;
    assert!(
        session.connection_time().ends_with("中国标准时间"),
        "{}",
        session.connection_time()
    );
    tws.sync_over(&mut session, "DU1", None).await.unwrap();
    assert_eq!(
        tws.executed_at("g.1.01").await.to_rfc3339(),
        "2024-01-02T02:00:00+00:00"
    );
}

// ---- 7. exec ids ----

/// Two legs of a combo fill are two fills (the fifth segment tells them apart) and a correction
/// of one leg supersedes only that leg; a revision `.0a` corrects `.09` (IB's ids are
/// hexadecimal); an id of neither form is kept whole, counted, and merged with nothing.
#[tokio::test]
async fn exec_ids_are_read_as_ib_writes_them() {
    let executions = vec![
        (recent("0000e0d5.64305db8.01.01.01", 77, 10), None),
        (recent("0000e0d5.64305db8.01.01.02", 77, 20), None),
        (recent("0000e0d5.64305db8.01.02.02", 77, 21), None),
        (recent("0000e0d5.7a.01.09", 78, 5), None),
        (recent("0000e0d5.7a.01.0a", 78, 6), None),
        (recent("manual-fill-1", 79, 3), None),
    ];
    let tws = Tws::new(scenario(executions)).await;
    let mut session = tws.session(17).await;
    let report = tws.sync_over(&mut session, "DU1", None).await.unwrap();
    assert_eq!(report.counts.inserted_executions_count, 6);
    assert_eq!(report.counts.unrecognised_exec_ids_count, 1);
    let totals: Vec<(i64, Decimal)> = tws
        .db
        .client()
        .await
        .query(
            "SELECT ib_perm_id, total_quantity FROM broker_trades ORDER BY ib_perm_id",
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect();
    assert_eq!(
        totals,
        [
            (77, Decimal::from(31)),
            (78, Decimal::from(6)),
            (79, Decimal::from(3))
        ],
        "leg 1 (10) + corrected leg 2 (21); .0a replaces .09; the odd id alone"
    );
    let odd = tws
        .query_one(
            "SELECT exec_id_base, exec_revision, is_canonical FROM broker_fills \
             WHERE exec_id = 'manual-fill-1'",
        )
        .await;
    assert_eq!(odd.get::<_, String>(0), "manual-fill-1");
    assert_eq!(odd.get::<_, i32>(1), 0);
    assert!(odd.get::<_, bool>(2));
    let row = tws
        .query_one("SELECT unrecognised_exec_ids_count FROM sync_runs")
        .await;
    assert_eq!(row.get::<_, i32>(0), 1);
}

// ---- 8. notices and deadlines ----

/// Farm notices at connect and the 1100/1102 of IB's nightly reset in the middle of an answer
/// are state the session keeps for its owner, not failures.
#[tokio::test]
async fn notices_in_the_middle_of_an_answer_are_state_not_failures() {
    let tws = Tws::new(scenario(vec![
        (recent("n.1.01", 1, 1), None),
        (recent("n.2.01", 2, 1), None),
    ]))
    .await;
    let mut session = tws.session(17).await;
    let report = tws.sync_over(&mut session, "DU1", None).await.unwrap();
    assert_eq!(report.counts.inserted_executions_count, 2);
    let notices = session.take_notices();
    let kinds: Vec<(i64, NoticeKind)> = notices.iter().map(|n| (n.code, n.kind)).collect();
    assert_eq!(
        kinds,
        [
            (2104, NoticeKind::Info),
            (2106, NoticeKind::Info),
            (2158, NoticeKind::Info),
            (1100, NoticeKind::ConnectivityLost),
            (1102, NoticeKind::RestoredDataKept),
        ]
    );
    assert!(session.take_notices().is_empty(), "taken once");
}

/// A TWS that never sends the end marker while trickling notices (ib_async#54, #82) defeats a
/// per-read timeout; the request's deadline ends it, nothing is stored, and no account lock was
/// held while it hung: another session syncs the account meanwhile.
#[tokio::test]
async fn a_tws_that_never_ends_its_answer_is_given_up_at_the_deadline_holding_no_lock() {
    let tws = Tws::new(Scenario {
        fault: Some(Fault::HangAfter(1)),
        ..scenario(vec![
            (recent("h.1.01", 1, 1), None),
            (recent("h.2.01", 2, 1), None),
        ])
    })
    .await;
    let mut hung = TwsSession::open(
        tws.addr,
        17,
        Timeouts {
            connect: 5 * SECOND,
            read: SECOND,
            request: 3 * SECOND,
        },
    )
    .await
    .unwrap();
    let started = std::time::Instant::now();
    let hanging = async { tws.sync_over(&mut hung, "DU1", None).await };
    let meanwhile = async {
        tokio::time::sleep(Duration::from_millis(1500)).await;
        tws.sim.lock().unwrap().fault = None;
        let mut other = tws.session(18).await;
        let report = tws.sync_over(&mut other, "DU1", None).await;
        tws.sim.lock().unwrap().fault = Some(Fault::HangAfter(1));
        (report, started.elapsed())
    };
    let (hung_outcome, (other_outcome, other_done)) = tokio::join!(hanging, meanwhile);
    let err = hung_outcome.expect_err("the hung request fails");
    assert_eq!(err.code(), "tws_deadline", "{err}");
    assert!(err.breaks_session());
    let elapsed = started.elapsed();
    assert!(
        elapsed >= 3 * SECOND && elapsed < 10 * SECOND,
        "given up at its deadline, not per read: {elapsed:?}"
    );
    let other = other_outcome.expect("the account was not locked while TWS hung");
    assert!(other_done < 3 * SECOND, "{other_done:?}");
    assert_eq!(other.counts.inserted_executions_count, 2);
    let failed = tws
        .query_one("SELECT count(*) FROM sync_runs WHERE status = 'failed'")
        .await;
    assert_eq!(failed.get::<_, i64>(0), 1);
    let fills = tws.query_one("SELECT count(*) FROM broker_fills").await;
    assert_eq!(fills.get::<_, i64>(0), 2, "only what the other sync stored");
}
