//! IBKR executions sync against the simulated TWS over TCP and a real PostgreSQL: every
//! acceptance criterion of the trades-and-executions-sync spec, corrections across syncs,
//! faults mid-sync, the account lock, the ingestion run of each sync, and a property test
//! against a simple model.

mod common;

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::time::Duration;

use chrono::{DateTime, NaiveTime, Utc};
use chrono_tz::Tz;
use proptest::prelude::*;
use rust_decimal::Decimal;
use rust_decimal::RoundingStrategy;
use tokio::net::TcpListener;
use tradegate::sim::tws::{Fault, Scenario, SharedScenario, spawn};
use tradegate_actors::domain::{SyncReport, TradeFilter};
use tradegate_actors::ibkr_syncer::client::TwsSession;
use tradegate_actors::ibkr_syncer::tws::{CommissionReport, Contract, Execution, TwsTime};
use tradegate_actors::ibkr_syncer::{SyncError, SyncRequest, sync_account};
use tradegate_actors::store::broker_sync;

use common::TestDb;

/// A fill as a test describes it.
#[derive(Debug, Clone)]
struct F {
    exec_id: String,
    account: &'static str,
    perm_id: i64,
    order_ref: &'static str,
    order_id: i64,
    client_id: i64,
    symbol: &'static str,
    side: &'static str,
    shares: i64,
    price: Decimal,
    cum: i64,
    at: DateTime<Utc>,
}

impl F {
    fn new(exec_id: &str, perm_id: i64, shares: i64, price: Decimal) -> Self {
        Self {
            exec_id: exec_id.into(),
            account: "DU1",
            perm_id,
            order_ref: "",
            order_id: 11,
            client_id: 3,
            symbol: "AAPL",
            side: "BOT",
            shares,
            price,
            cum: shares,
            at: Utc::now() - chrono::Duration::hours(2),
        }
    }

    fn execution(&self) -> Execution {
        Execution {
            order_id: self.order_id,
            contract: Contract {
                con_id: 265_598,
                symbol: self.symbol.into(),
                sec_type: "STK".into(),
                exchange: "SMART".into(),
                currency: "USD".into(),
                ..Contract::default()
            },
            exec_id: self.exec_id.clone(),
            time: TwsTime::parse(&self.at.format("%Y%m%d  %H:%M:%S").to_string()).unwrap(),
            account: self.account.into(),
            exchange: "ISLAND".into(),
            side: self.side.into(),
            shares: Decimal::from(self.shares),
            price: self.price,
            perm_id: self.perm_id,
            client_id: self.client_id,
            cum_qty: Decimal::from(self.cum),
            avg_price: self.price,
            order_ref: self.order_ref.into(),
            last_liquidity: 1,
            ..Execution::default()
        }
    }

    fn with_commission(
        &self,
        commission: Option<Decimal>,
    ) -> (Execution, Option<CommissionReport>) {
        (
            self.execution(),
            Some(CommissionReport {
                exec_id: self.exec_id.clone(),
                commission,
                currency: "USD".into(),
                realized_pnl: None,
            }),
        )
    }
}

fn px(cents: i64) -> Decimal {
    Decimal::new(cents, 2)
}

struct Harness {
    db: TestDb,
    pool: deadpool_postgres::Pool,
    tws: SharedScenario,
    addr: SocketAddr,
}

impl Harness {
    async fn new(accounts: &[&str]) -> Self {
        let db = TestDb::new().await;
        let pool = common::pool(&db.conninfo, 4);
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let tws = spawn(
            listener,
            Scenario {
                accounts: accounts.iter().map(|a| a.to_string()).collect(),
                ..Scenario::default()
            },
        );
        Self {
            db,
            pool,
            tws,
            addr,
        }
    }

    fn set(&self, fills: &[F]) {
        let mut s = self.tws.lock().unwrap();
        s.executions = fills.iter().map(|f| f.with_commission(None)).collect();
    }

    fn push(&self, execution: (Execution, Option<CommissionReport>)) {
        self.tws.lock().unwrap().executions.push(execution);
    }

    async fn sync(&self, account: &str) -> Result<SyncReport, SyncError> {
        let mut session =
            TwsSession::connect(self.addr, 7, Duration::from_secs(5), Duration::from_secs(5))
                .await
                .expect("connect to the simulated TWS");
        sync_account(
            &self.pool,
            &mut session,
            &SyncRequest {
                account_id: account.into(),
                lookback: chrono::Duration::days(7),
                zone: Some(Tz::UTC),
            },
        )
        .await
    }

    async fn count(&self, sql: &str) -> i64 {
        self.db
            .client()
            .await
            .query_one(sql, &[])
            .await
            .unwrap()
            .get(0)
    }

    /// Every row of fills and trades with its physical version: equal fingerprints mean no row
    /// was inserted, updated or deleted in between.
    async fn fingerprint(&self) -> String {
        self.db
            .client()
            .await
            .query_one(
                "SELECT coalesce((SELECT string_agg(id || ':' || xmin::text || ':' || ctid::text, ',' ORDER BY id) FROM broker_fills), '') \
                 || '|' || coalesce((SELECT string_agg(id || ':' || xmin::text || ':' || ctid::text, ',' ORDER BY id) FROM broker_trades), '')",
                &[],
            )
            .await
            .unwrap()
            .get(0)
    }
}

#[tokio::test]
async fn rerunning_a_sync_over_the_same_window_duplicates_nothing_and_writes_nothing() {
    let h = Harness::new(&["DU1"]).await;
    let mut a = F::new("0000e0d5.0001.01.01", 9001, 60, px(18512));
    a.cum = 60;
    let mut b = F::new("0000e0d5.0001.02.01", 9001, 40, px(18520));
    b.cum = 100;
    h.set(&[a, b]);
    let first = h.sync("DU1").await.unwrap();
    assert_eq!(first.counts.fetched_executions_count, 2);
    assert_eq!(first.counts.inserted_executions_count, 2);
    assert_eq!(first.counts.touched_trades_count, 1);
    let before = h.fingerprint().await;
    for _ in 0..2 {
        let again = h.sync("DU1").await.unwrap();
        assert_eq!(again.counts.fetched_executions_count, 2);
        assert_eq!(again.counts.unchanged_executions_count, 2);
        assert_eq!(again.counts.writes(), 0, "{again:?}");
        assert_eq!(
            again.window_end - again.window_start,
            chrono::Duration::days(7)
        );
    }
    assert_eq!(h.fingerprint().await, before, "a re-sync rewrote rows");
    assert_eq!(h.count("SELECT count(*) FROM broker_fills").await, 2);
    assert_eq!(h.count("SELECT count(*) FROM broker_trades").await, 1);
    assert_eq!(
        h.count("SELECT count(*) FROM sync_runs WHERE status = 'completed'")
            .await,
        3
    );
}

/// A new parent's aggregates are computed before it is written, in exact 96-bit decimals; sums
/// beyond them (here 10^15 shares at 10^15) are left to the database's NUMERIC, so the parent
/// still ends up with the right aggregates, recorded once, and a re-sync writes nothing.
#[tokio::test]
async fn aggregates_beyond_exact_decimals_in_memory_are_computed_by_the_database() {
    let h = Harness::new(&["DU1"]).await;
    let big = 1_000_000_000_000_000_i64;
    let mut a = F::new("0000e0d5.0009.01.01", 9009, big, Decimal::from(big));
    a.cum = big;
    let small = F::new("0000e0d5.0010.01.01", 9010, 5, px(1_000));
    h.set(&[a, small]);
    let report = h.sync("DU1").await.unwrap();
    assert_eq!(report.counts.inserted_executions_count, 2);
    assert_eq!(report.counts.created_trades_count, 2);
    assert_eq!(report.counts.touched_trades_count, 2);
    let client = h.db.client().await;
    let trades = broker_sync::list_trades(&client, &TradeFilter::default())
        .await
        .unwrap();
    let t = trades.iter().find(|t| t.ib_perm_id == Some(9009)).unwrap();
    assert_eq!(t.total_quantity, Decimal::from(big));
    assert_eq!(t.avg_price, Some(Decimal::from(big)));
    assert_eq!(t.status, "filled");
    let s = trades.iter().find(|t| t.ib_perm_id == Some(9010)).unwrap();
    assert_eq!(s.total_quantity, Decimal::from(5));
    assert_eq!(s.avg_price, Some(px(1_000)));
    assert_eq!(
        h.count(
            "SELECT count(*) FROM data_ingestion_run_records \
             WHERE record_type = 'broker_trade' AND operation = 'created'"
        )
        .await,
        2,
        "each created trade is recorded once"
    );
    let before = h.fingerprint().await;
    let again = h.sync("DU1").await.unwrap();
    assert_eq!(again.counts.writes(), 0, "{again:?}");
    assert_eq!(h.fingerprint().await, before);
}

#[tokio::test]
async fn multiple_fills_of_one_trade_are_stored_aggregated_and_queryable() {
    let h = Harness::new(&["DU1"]).await;
    let mut fills = Vec::new();
    for (i, (qty, cents)) in [(10, 10_000), (20, 10_050), (30, 10_101)]
        .iter()
        .enumerate()
    {
        let mut f = F::new(
            &format!("0000e0d5.0002.{:02}.01", i + 1),
            9002,
            *qty,
            px(*cents),
        );
        f.at -= chrono::Duration::minutes(10 - i as i64);
        f.cum = [10, 30, 60][i];
        fills.push(f);
    }
    h.tws.lock().unwrap().executions = fills
        .iter()
        .map(|f| f.with_commission(Some(px(100))))
        .collect();
    let report = h.sync("DU1").await.unwrap();
    assert_eq!(report.counts.inserted_executions_count, 3);
    let client = h.db.client().await;
    let trades = broker_sync::list_trades(&client, &TradeFilter::default())
        .await
        .unwrap();
    assert_eq!(trades.len(), 1);
    let t = &trades[0];
    assert_eq!(t.ib_perm_id, Some(9002));
    assert_eq!(t.total_quantity, Decimal::from(60));
    // (10*100.00 + 20*100.50 + 30*101.01) / 60 = 6040.30 / 60 = 100.67166666...
    assert_eq!(t.avg_price, Some(Decimal::new(10_067_166_667, 8)));
    assert_eq!(t.total_commission, Some(px(300)));
    assert_eq!(t.status, "filled");
    assert_eq!(t.side.as_deref(), Some("buy"));
    assert_eq!(t.first_executed_at, Some(fills[0].at.with_nanosecond0()));
    assert_eq!(t.last_executed_at, Some(fills[2].at.with_nanosecond0()));
    let stored = broker_sync::list_trade_fills(&client, t.id).await.unwrap();
    assert_eq!(stored.len(), 3);
    assert!(
        stored
            .iter()
            .all(|f| f.is_canonical && f.exec_revision == 1)
    );
    assert_eq!(stored[2].price, px(10_101));
    assert_eq!(stored[0].raw["execution"]["price"], "100.00");
    assert_eq!(stored[0].commission, Some(px(100)));
}

trait Whole {
    fn with_nanosecond0(self) -> Self;
}

impl Whole for DateTime<Utc> {
    fn with_nanosecond0(self) -> Self {
        use chrono::Timelike;
        self.with_nanosecond(0).unwrap()
    }
}

#[tokio::test]
async fn a_correction_in_the_same_fetch_leaves_one_canonical_fill_per_base() {
    let h = Harness::new(&["DU1"]).await;
    let original = F::new("0000e0d5.0003.01.01", 9003, 50, px(20_000));
    let mut corrected = original.clone();
    corrected.exec_id = "0000e0d5.0003.01.02".into();
    corrected.price = px(20_010);
    h.set(&[original, corrected]);
    let report = h.sync("DU1").await.unwrap();
    assert_eq!(report.counts.inserted_executions_count, 2);
    assert_eq!(report.counts.canonical_changes_count, 1);
    let client = h.db.client().await;
    let rows = client
        .query(
            "SELECT exec_id, exec_id_base, exec_revision, is_canonical FROM broker_fills ORDER BY exec_id",
            &[],
        )
        .await
        .unwrap();
    let view: Vec<(String, String, i32, bool)> = rows
        .iter()
        .map(|r| (r.get(0), r.get(1), r.get(2), r.get(3)))
        .collect();
    assert_eq!(
        view,
        [
            (
                "0000e0d5.0003.01.01".into(),
                "0000e0d5.0003.01".into(),
                1,
                false
            ),
            (
                "0000e0d5.0003.01.02".into(),
                "0000e0d5.0003.01".into(),
                2,
                true
            ),
        ]
    );
    let t = &broker_sync::list_trades(&client, &TradeFilter::default())
        .await
        .unwrap()[0];
    assert_eq!(
        t.total_quantity,
        Decimal::from(50),
        "the correction is not counted twice"
    );
    assert_eq!(t.avg_price, Some(px(20_010)));
}

/// A stored fill whose parent identity changes (TWS now reports its perm id) moves into a
/// parent created by that same sync: the new parent holds the fill's quantity, and the parent
/// it left is recomputed to nothing.
#[tokio::test]
async fn a_stored_fill_moving_into_a_parent_created_in_the_same_sync_is_aggregated_there() {
    let h = Harness::new(&["DU1"]).await;
    // first seen without a perm id or order ref: a composite parent
    let mut fill = F::new("0000e0d5.0031.01.01", 0, 40, px(2_000));
    let other = F::new("0000e0d5.0032.01.01", 9032, 5, px(1_000));
    h.set(&[fill.clone(), other.clone()]);
    h.sync("DU1").await.unwrap();
    let client = h.db.client().await;
    let trades = broker_sync::list_trades(&client, &TradeFilter::default())
        .await
        .unwrap();
    let composite = trades
        .iter()
        .find(|t| t.ib_perm_id.is_none())
        .expect("the composite parent")
        .id;

    // now reported with its perm id: its parent is a new one, created by this sync
    fill.perm_id = 9031;
    h.set(&[fill, other]);
    let report = h.sync("DU1").await.unwrap();
    assert_eq!(report.counts.updated_executions_count, 1);
    assert_eq!(report.counts.inserted_executions_count, 0);
    assert_eq!(report.counts.created_trades_count, 1);
    let trades = broker_sync::list_trades(&client, &TradeFilter::default())
        .await
        .unwrap();
    let moved_to = trades
        .iter()
        .find(|t| t.ib_perm_id == Some(9031))
        .expect("the parent by perm id");
    assert_eq!(moved_to.total_quantity, Decimal::from(40));
    assert_eq!(moved_to.avg_price, Some(px(2_000)));
    assert_eq!(moved_to.status, "filled");
    assert!(moved_to.first_executed_at.is_some());
    let left = broker_sync::get_trade(&client, composite)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(left.total_quantity, Decimal::ZERO);
    assert_eq!(left.status, "unknown");
    let untouched = trades.iter().find(|t| t.ib_perm_id == Some(9032)).unwrap();
    assert_eq!(untouched.total_quantity, Decimal::from(5));
}

#[tokio::test]
async fn a_correction_in_a_later_sync_becomes_canonical_and_changes_the_aggregates() {
    let h = Harness::new(&["DU1"]).await;
    let mut first = F::new("0000e0d5.0004.01.01", 9004, 100, px(5_000));
    first.cum = 150;
    let mut second = F::new("0000e0d5.0004.02.01", 9004, 50, px(5_100));
    second.cum = 150;
    h.set(&[first.clone(), second]);
    h.sync("DU1").await.unwrap();
    let client = h.db.client().await;
    let before = broker_sync::list_trades(&client, &TradeFilter::default())
        .await
        .unwrap()
        .remove(0);
    // (100*50 + 50*51) / 150 = 50.33333333
    assert_eq!(before.avg_price, Some(Decimal::new(5_033_333_333, 8)));
    assert_eq!(before.total_quantity, Decimal::from(150));

    // the broker corrects the first fill: 80 shares at 49.90
    let mut fix = first;
    fix.exec_id = "0000e0d5.0004.01.02".into();
    fix.shares = 80;
    fix.price = px(4_990);
    fix.cum = 130;
    h.push(fix.with_commission(None));
    let report = h.sync("DU1").await.unwrap();
    assert_eq!(report.counts.fetched_executions_count, 3);
    assert_eq!(report.counts.inserted_executions_count, 1);
    assert_eq!(report.counts.unchanged_executions_count, 2);
    assert_eq!(report.counts.canonical_changes_count, 1);
    assert_eq!(report.counts.touched_trades_count, 1);
    let after = broker_sync::get_trade(&client, before.id)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(after.total_quantity, Decimal::from(130));
    // (80*49.90 + 50*51.00) / 130 = 50.32307692
    assert_eq!(after.avg_price, Some(Decimal::new(5_032_307_692, 8)));
    let canonical: Vec<(String, bool)> = broker_sync::list_trade_fills(&client, before.id)
        .await
        .unwrap()
        .into_iter()
        .map(|f| (f.exec_id, f.is_canonical))
        .collect();
    assert!(canonical.contains(&("0000e0d5.0004.01.01".into(), false)));
    assert!(canonical.contains(&("0000e0d5.0004.01.02".into(), true)));
    assert!(canonical.contains(&("0000e0d5.0004.02.01".into(), true)));
    // a later revision seen before an earlier one: the earlier arrives superseded
    let mut late = F::new("0000e0d5.0005.01.03", 9005, 5, px(100));
    h.push(late.with_commission(None));
    h.sync("DU1").await.unwrap();
    late.exec_id = "0000e0d5.0005.01.02".into();
    h.push(late.with_commission(None));
    let report = h.sync("DU1").await.unwrap();
    assert_eq!(report.counts.canonical_changes_count, 1);
    assert_eq!(
        h.count("SELECT count(*) FROM broker_fills WHERE exec_id_base = '0000e0d5.0005.01' AND is_canonical AND exec_revision = 3").await,
        1
    );
}

#[tokio::test]
async fn perm_ids_are_unique_per_account_and_zero_perm_ids_resolve_by_order_ref_or_composite() {
    let h = Harness::new(&["DU1", "DU2"]).await;
    let at = Utc::now()
        .date_naive()
        .and_time(NaiveTime::from_hms_opt(0, 30, 0).unwrap())
        .and_utc()
        - chrono::Duration::days(1);
    let mut fills = vec![
        // one perm id in two accounts: two trades; twice in one account: one trade
        F::new("e.1.01", 777, 1, px(100)),
        F::new("e.2.01", 777, 2, px(100)),
        F {
            account: "DU2",
            ..F::new("e.3.01", 777, 3, px(100))
        },
        // perm id 0 with an order ref: by the ref, across days
        F {
            order_ref: "strat-a",
            at,
            ..F::new("e.4.01", 0, 4, px(100))
        },
        F {
            order_ref: "strat-a",
            at: at - chrono::Duration::hours(2),
            ..F::new("e.5.01", 0, 5, px(100))
        },
        // perm id 0, no ref: the composite, split by the UTC trade date
        F {
            order_id: 42,
            at,
            ..F::new("e.6.01", 0, 6, px(100))
        },
        F {
            order_id: 42,
            at: at + chrono::Duration::hours(1),
            ..F::new("e.7.01", 0, 7, px(100))
        },
        F {
            order_id: 42,
            at: at - chrono::Duration::hours(1),
            ..F::new("e.8.01", 0, 8, px(100))
        },
        // ...and by client id, order id, symbol and side
        F {
            order_id: 42,
            client_id: 4,
            at,
            ..F::new("e.9.01", 0, 9, px(100))
        },
        F {
            order_id: 42,
            side: "SLD",
            at,
            ..F::new("e.10.01", 0, 10, px(100))
        },
        F {
            order_id: 42,
            symbol: "MSFT",
            at,
            ..F::new("e.11.01", 0, 11, px(100))
        },
    ];
    for f in &mut fills {
        f.cum = f.shares;
    }
    h.set(&fills);
    let one = h.sync("DU1").await.unwrap();
    let two = h.sync("DU2").await.unwrap();
    assert_eq!(
        one.counts.fetched_executions_count, 10,
        "only DU1's executions"
    );
    assert_eq!(two.counts.fetched_executions_count, 1);
    let client = h.db.client().await;
    let rows = client
        .query(
            "SELECT t.account_id, t.ib_perm_id, t.order_ref, t.trade_date::text, t.total_quantity, \
                    t.client_id, t.side, t.symbol \
             FROM broker_trades t ORDER BY t.account_id, t.total_quantity",
            &[],
        )
        .await
        .unwrap();
    let quantities: Vec<(String, Decimal)> = rows.iter().map(|r| (r.get(0), r.get(4))).collect();
    assert_eq!(quantities, expected_quantities());
    // the perm-id unique index refuses a second parent for one perm id
    let dup = client
        .execute(
            "INSERT INTO broker_trades (account_id, ib_perm_id, fetched_at) VALUES ('DU1', 777, now())",
            &[],
        )
        .await;
    assert_eq!(common::sqlstate(dup), "23505");
    // the order-ref trade spans two UTC days and is still one trade, dated by its first fill
    let r = rows
        .iter()
        .find(|r| r.get::<_, Option<String>>(2).as_deref() == Some("strat-a"))
        .unwrap();
    assert_eq!(r.get::<_, Decimal>(4), Decimal::from(9));
    assert_eq!(
        r.get::<_, String>(3),
        (at - chrono::Duration::hours(2)).date_naive().to_string()
    );
}

/// DU1: perm 777 (1+2), strat-a (4+5), composite day D-1 at 23:30 (8), composite day D (6+7),
/// client 4 (9), sell side (10), MSFT (11); DU2: perm 777 (3).
fn expected_quantities() -> Vec<(String, Decimal)> {
    let mut v: Vec<(String, Decimal)> = [3, 8, 9, 9, 10, 11, 13]
        .into_iter()
        .map(|n| ("DU1".to_string(), Decimal::from(n)))
        .collect();
    v.push(("DU2".into(), Decimal::from(3)));
    v
}

#[tokio::test]
async fn a_disconnect_or_malformed_frame_mid_sync_commits_nothing_and_the_next_sync_completes() {
    let h = Harness::new(&["DU1"]).await;
    let fills: Vec<F> = (1..=6)
        .map(|i| F::new(&format!("0000e0d5.0006.{i:02}.01"), 9006, i, px(1_000)))
        .collect();
    h.set(&fills);
    for fault in [Fault::DisconnectAfter(3), Fault::MalformedAfter(2)] {
        h.tws.lock().unwrap().fault = Some(fault);
        let err = h.sync("DU1").await.expect_err("the sync must fail");
        assert!(matches!(err, SyncError::Tws(_)), "{err:?}");
        assert_eq!(
            h.count("SELECT count(*) FROM broker_fills").await,
            0,
            "nothing partial"
        );
        assert_eq!(h.count("SELECT count(*) FROM broker_trades").await, 0);
    }
    let client = h.db.client().await;
    let failed = client
        .query(
            "SELECT s.error_message, r.status, r.error_message FROM sync_runs s \
             JOIN data_ingestion_runs r ON r.id = s.data_ingestion_run_id \
             WHERE s.status = 'failed' ORDER BY s.id",
            &[],
        )
        .await
        .unwrap();
    assert_eq!(failed.len(), 2);
    for row in &failed {
        let message: String = row.get(0);
        assert!(message.contains("TWS"), "{message}");
        assert_eq!(row.get::<_, String>(1), "failed");
        assert_eq!(row.get::<_, Option<String>>(2), Some(message));
    }
    h.tws.lock().unwrap().fault = None;
    let report = h.sync("DU1").await.unwrap();
    assert_eq!(report.counts.inserted_executions_count, 6);
    assert_eq!(h.count("SELECT count(*) FROM broker_fills").await, 6);
}

#[tokio::test]
async fn two_syncs_of_one_account_never_run_at_once() {
    let h = Harness::new(&["DU1", "DU2"]).await;
    h.set(&[F::new("x.1.01", 1, 1, px(100))]);
    let mut holder = h.db.client().await;
    let tx = holder.transaction().await.unwrap();
    tx.execute(
        "SELECT pg_advisory_xact_lock(hashtextextended('tradegate.ibkr.sync:DU1', 0))",
        &[],
    )
    .await
    .unwrap();
    let err = h.sync("DU1").await.expect_err("the lock is held");
    assert!(
        matches!(err, SyncError::InProgress(ref a) if a == "DU1"),
        "{err:?}"
    );
    assert_eq!(err.code(), "sync_in_progress");
    // another account is not blocked
    h.sync("DU2").await.unwrap();
    tx.rollback().await.unwrap();
    let report = h.sync("DU1").await.unwrap();
    assert_eq!(report.counts.inserted_executions_count, 1);
}

#[tokio::test]
async fn each_sync_is_an_ingestion_run_with_its_records() {
    let h = Harness::new(&["DU1"]).await;
    let mut a = F::new("0000e0d5.0007.01.01", 9007, 5, px(100));
    a.symbol = "NVDA";
    h.set(&[a.clone()]);
    let report = h.sync("DU1").await.unwrap();
    let client = h.db.client().await;
    let row = client
        .query_one(
            "SELECT task_name, data_source, status, records_fetched, records_created, \
                    records_updated, records_skipped, \
                    (SELECT count(*) FROM data_ingestion_run_records x WHERE x.data_ingestion_run_id = r.id AND record_type = 'broker_fill' AND operation = 'created' AND symbol = 'NVDA'), \
                    (SELECT count(*) FROM data_ingestion_run_records x WHERE x.data_ingestion_run_id = r.id AND record_type = 'broker_trade') \
             FROM data_ingestion_runs r WHERE run_id = $1",
            &[&report.ingestion_run_id],
        )
        .await
        .unwrap();
    assert_eq!(row.get::<_, String>(0), "ibkr.trades.sync");
    assert_eq!(row.get::<_, String>(1), "ibkr");
    assert_eq!(row.get::<_, String>(2), "completed");
    assert_eq!(
        (
            row.get::<_, i32>(3),
            row.get::<_, i32>(4),
            row.get::<_, i32>(5),
            row.get::<_, i32>(6)
        ),
        (1, 1, 0, 0)
    );
    assert_eq!((row.get::<_, i64>(7), row.get::<_, i64>(8)), (1, 1));
    // where the time went: phases of the whole, not overlapping (each rounded down)
    let phases = report.fetch_ms + report.normalize_ms + report.store_ms;
    assert!(phases <= report.duration_ms, "{report:?}");
    // the commission report arrives later: an update, recorded as such
    h.tws.lock().unwrap().executions = vec![a.with_commission(Some(px(105)))];
    let report = h.sync("DU1").await.unwrap();
    assert_eq!(report.counts.updated_executions_count, 1);
    let updated: i64 = client
        .query_one(
            "SELECT count(*) FROM data_ingestion_run_records x JOIN data_ingestion_runs r ON r.id = x.data_ingestion_run_id \
             WHERE r.run_id = $1 AND x.operation = 'updated' AND x.record_type = 'broker_fill'",
            &[&report.ingestion_run_id],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(updated, 1);
    let total: Decimal = client
        .query_one("SELECT total_commission FROM broker_trades", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(total, px(105));
}

/// An execution that cannot be read (here an unknown side, and a zone name no table knows) is
/// refused alone, with its code and what TWS sent kept on the sync run; the rest of the batch is
/// stored, and the next sync does the same without writing anything.
#[tokio::test]
async fn an_execution_that_cannot_be_read_is_refused_alone_and_kept_on_the_sync_run() {
    let h = Harness::new(&["DU1"]).await;
    let good = F::new("g.1.01", 1, 1, px(100));
    let bad = F {
        side: "HOLD",
        ..F::new("b.1.01", 2, 1, px(100))
    };
    let mut elsewhere = F::new("z.1.01", 3, 1, px(100)).execution();
    elsewhere.time = TwsTime::parse("20240102 10:00:00 Mars/Olympus").unwrap();
    h.set(&[good, bad]);
    h.push((elsewhere, None));
    let report = h.sync("DU1").await.unwrap();
    assert_eq!(report.counts.fetched_executions_count, 3);
    assert_eq!(report.counts.inserted_executions_count, 1);
    assert_eq!(report.counts.rejected_executions_count, 2);
    let codes: Vec<(&str, &str)> = report
        .rejected
        .iter()
        .map(|r| (r.exec_id.as_str(), r.code.as_str()))
        .collect();
    assert_eq!(
        codes,
        [("b.1.01", "unknown_side"), ("z.1.01", "unknown_time_zone")]
    );
    assert_eq!(h.count("SELECT count(*) FROM broker_fills").await, 1);
    let row =
        h.db.client()
            .await
            .query_one(
                "SELECT rejected_count, rejected_executions FROM sync_runs WHERE id = $1",
                &[&report.sync_run_id],
            )
            .await
            .unwrap();
    assert_eq!(row.get::<_, i32>(0), 2);
    let kept: serde_json::Value = row.get(1);
    assert_eq!(kept[0]["code"], "unknown_side");
    assert_eq!(kept[0]["raw"]["execution"]["side"], "HOLD", "what TWS sent");
    assert_eq!(
        kept[1]["raw"]["execution"]["time"],
        "20240102 10:00:00 Mars/Olympus"
    );
    let before = h.fingerprint().await;
    let again = h.sync("DU1").await.unwrap();
    assert_eq!(
        (
            again.counts.writes(),
            again.counts.rejected_executions_count
        ),
        (0, 2)
    );
    assert_eq!(h.fingerprint().await, before);
}

// ---- property test: random fills, corrections and re-syncs against a model ----

#[derive(Debug, Clone)]
enum Step {
    /// A new fill of order `order` (0..4) with this quantity and price (cents)
    Fill { order: usize, qty: i64, cents: i64 },
    /// A correction of the n-th fill so far (mod count): new quantity and price
    Correct { which: usize, qty: i64, cents: i64 },
    /// Sync now
    Sync,
}

fn step() -> impl Strategy<Value = Step> {
    prop_oneof![
        4 => (0usize..4, 1i64..500, 100i64..100_000)
            .prop_map(|(order, qty, cents)| Step::Fill { order, qty, cents }),
        2 => (0usize..64, 1i64..500, 100i64..100_000)
            .prop_map(|(which, qty, cents)| Step::Correct { which, qty, cents }),
        2 => Just(Step::Sync),
    ]
}

/// The four orders of a case: perm ids, an order ref, and a composite key.
fn order_identity(order: usize) -> (i64, &'static str, i64) {
    match order {
        0 => (5001, "", 1),
        1 => (5002, "", 2),
        2 => (0, "ref-a", 3),
        _ => (0, "", 4),
    }
}

#[test]
fn random_fills_corrections_and_resyncs_always_match_the_model() {
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let h = runtime.block_on(Harness::new(&[]));
    let case = std::sync::atomic::AtomicU32::new(0);
    let config = ProptestConfig {
        cases: 24,
        ..ProptestConfig::default()
    };
    proptest!(config, |(steps in proptest::collection::vec(step(), 1..24))| {
        let n = case.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let account = format!("P{n}");
        runtime.block_on(check_against_model(&h, &account, &steps));
    });
}

async fn check_against_model(h: &Harness, account: &str, steps: &[Step]) {
    // the model: exec id -> (order, base, revision, qty, price)
    let mut model: Vec<(usize, String, i32, i64, Decimal)> = Vec::new();
    let at = Utc::now() - chrono::Duration::hours(1);
    let mut served: Vec<(Execution, Option<CommissionReport>)> = Vec::new();
    let mut fill_no = 0;
    let with_final_sync = steps.iter().cloned().chain([Step::Sync]);
    for step in with_final_sync {
        match step {
            Step::Fill { order, qty, cents } => {
                fill_no += 1;
                let base = format!("{account}.{order}.{fill_no:03}");
                model.push((order, base.clone(), 1, qty, px(cents)));
                served.push(fill(account, order, &format!("{base}.01"), qty, cents, at));
            }
            Step::Correct { which, qty, cents } => {
                if model.is_empty() {
                    continue;
                }
                let (order, base, _, _, _) = model[which % model.len()].clone();
                let revision = model
                    .iter()
                    .filter(|m| m.1 == base)
                    .map(|m| m.2)
                    .max()
                    .unwrap()
                    + 1;
                model.push((order, base.clone(), revision, qty, px(cents)));
                served.push(fill(
                    account,
                    order,
                    &format!("{base}.{revision:02}"),
                    qty,
                    cents,
                    at,
                ));
            }
            Step::Sync => {
                h.tws.lock().unwrap().accounts = vec![account.to_string()];
                {
                    let mut s = h.tws.lock().unwrap();
                    s.executions.retain(|(e, _)| e.account != account);
                    s.executions.extend(served.iter().cloned());
                }
                let before = h.fingerprint().await;
                let report = h.sync(account).await.expect("sync");
                if report.counts.inserted_executions_count == 0 {
                    assert_eq!(report.counts.writes(), 0);
                    assert_eq!(
                        h.fingerprint().await,
                        before,
                        "a sync with nothing new wrote rows"
                    );
                }
                compare(h, account, &model).await;
            }
        }
    }
}

fn fill(
    account: &str,
    order: usize,
    exec_id: &str,
    qty: i64,
    cents: i64,
    at: DateTime<Utc>,
) -> (Execution, Option<CommissionReport>) {
    let (perm_id, order_ref, order_id) = order_identity(order);
    let f = F {
        exec_id: exec_id.into(),
        account: "DU1",
        perm_id,
        order_ref,
        order_id,
        cum: qty,
        ..F::new(exec_id, perm_id, qty, px(cents))
    };
    let (mut e, c) = f.with_commission(Some(px(100)));
    e.account = account.into();
    e.time = TwsTime::parse(&at.format("%Y%m%d  %H:%M:%S").to_string()).unwrap();
    (e, c)
}

async fn compare(h: &Harness, account: &str, model: &[(usize, String, i32, i64, Decimal)]) {
    // canonical per base: exactly the highest revision
    let client = h.db.client().await;
    let rows = client
        .query(
            "SELECT exec_id_base, exec_revision, is_canonical FROM broker_fills WHERE account_id = $1",
            &[&account],
        )
        .await
        .unwrap();
    assert_eq!(rows.len(), model.len(), "one stored fill per exec id");
    let mut top: HashMap<&str, i32> = HashMap::new();
    for (_, base, rev, _, _) in model {
        let t = top.entry(base.as_str()).or_insert(*rev);
        *t = (*t).max(*rev);
    }
    let mut canonical_per_base: HashMap<String, u32> = HashMap::new();
    for r in &rows {
        let base: String = r.get(0);
        let rev: i32 = r.get(1);
        let canonical: bool = r.get(2);
        assert_eq!(canonical, top[base.as_str()] == rev, "{base} rev {rev}");
        *canonical_per_base.entry(base).or_default() += u32::from(canonical);
    }
    assert!(canonical_per_base.values().all(|&n| n == 1));
    // aggregates per order, from the model's canonical fills
    let mut expected: BTreeMap<usize, (Decimal, Decimal)> = BTreeMap::new();
    for (order, base, rev, qty, price) in model {
        if top[base.as_str()] == *rev {
            let e = expected.entry(*order).or_default();
            e.0 += Decimal::from(*qty);
            e.1 += Decimal::from(*qty) * price;
        }
    }
    let trades = client
        .query(
            "SELECT coalesce(ib_perm_id, 0), coalesce(order_ref, ''), ib_order_id, total_quantity, avg_price \
             FROM broker_trades WHERE account_id = $1",
            &[&account],
        )
        .await
        .unwrap();
    assert_eq!(trades.len(), expected.len(), "one trade per order");
    for t in &trades {
        let key = (
            t.get::<_, i64>(0),
            t.get::<_, String>(1),
            t.get::<_, Option<i64>>(2),
        );
        let order = (0..4)
            .find(|o| {
                let (p, r, id) = order_identity(*o);
                key.0 == p && key.1 == r && key.2 == Some(id)
            })
            .unwrap_or_else(|| panic!("unexpected trade {key:?}"));
        let (qty, notional) = expected[&order];
        assert_eq!(t.get::<_, Decimal>(3), qty, "order {order} quantity");
        let avg =
            (notional / qty).round_dp_with_strategy(8, RoundingStrategy::MidpointAwayFromZero);
        assert_eq!(
            t.get::<_, Option<Decimal>>(4),
            Some(avg),
            "order {order} average price"
        );
    }
}
