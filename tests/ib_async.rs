//! The widely used Python client `ib_async` connects to the simulated TWS over TCP and reads
//! its executions, commission reports and positions (`scripts/ib_async_fetch.py`). The test installs the
//! client into a private virtual environment under `target/` when the machine's Python lacks it
//! (pinned version, from PyPI with pip), so it runs the same in CI as on a workstation.

mod common;

use rust_decimal::Decimal;
use tokio::net::TcpListener;
use tradegate::sim::tws::{Scenario, spawn};
use tradegate_actors::ibkr_syncer::tws::{CommissionReport, Contract, Execution, TwsTime};

fn execution(exec_id: &str, account: &str, shares: i64, price: Decimal, perm_id: i64) -> Execution {
    Execution {
        order_id: 12,
        contract: Contract {
            con_id: 265_598,
            symbol: "AAPL".into(),
            sec_type: "STK".into(),
            exchange: "SMART".into(),
            currency: "USD".into(),
            local_symbol: "AAPL".into(),
            ..Contract::default()
        },
        exec_id: exec_id.into(),
        time: TwsTime::parse("20261120 10:30:01 US/Eastern").unwrap(),
        account: account.into(),
        exchange: "ISLAND".into(),
        side: "BOT".into(),
        shares: Decimal::from(shares),
        price,
        perm_id,
        client_id: 5,
        cum_qty: Decimal::from(shares),
        avg_price: price,
        order_ref: if perm_id == 0 {
            "strat-1".into()
        } else {
            String::new()
        },
        last_liquidity: 1,
        ..Execution::default()
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn ib_async_reads_executions_and_commissions_from_the_simulated_tws() {
    let python =
        tokio::task::spawn_blocking(|| common::python::with_module("ib_async", "ib_async==2.1.0"))
            .await
            .unwrap();
    let commission = |id: &str, c: Option<Decimal>| {
        Some(CommissionReport {
            exec_id: id.into(),
            commission: c,
            currency: "USD".into(),
            realized_pnl: None,
        })
    };
    let scenario = Scenario {
        accounts: vec!["DU7001".into(), "DU7002".into()],
        executions: vec![
            (
                execution(
                    "0000e0d5.77.01.01",
                    "DU7001",
                    60,
                    Decimal::new(18_512, 2),
                    4242,
                ),
                commission("0000e0d5.77.01.01", Some(Decimal::new(125, 2))),
            ),
            (
                execution(
                    "0000e0d5.77.01.02",
                    "DU7001",
                    60,
                    Decimal::new(18_513, 2),
                    4242,
                ),
                commission("0000e0d5.77.01.02", Some(Decimal::new(125, 2))),
            ),
            (
                execution("0000e0d5.78.01.01", "DU7002", 7, Decimal::new(41_130, 2), 0),
                commission("0000e0d5.78.01.01", None),
            ),
        ],
        // a position no fill shows (a transfer in)
        trades_elsewhere: vec![("DU7002".into(), "MSFT".into(), Decimal::from(3))],
        ..Scenario::default()
    };
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let _tws = spawn(listener, scenario);
    let out = common::python::run_json(
        &python,
        "ib_async_fetch.py",
        &[addr.ip().to_string(), addr.port().to_string(), "5".into()],
    )
    .await;
    assert_eq!(out["accounts"], serde_json::json!(["DU7001", "DU7002"]));
    let fills = out["fills"].as_array().unwrap();
    let ids: Vec<&str> = fills
        .iter()
        .map(|f| f["exec_id"].as_str().unwrap())
        .collect();
    assert_eq!(
        ids,
        [
            "0000e0d5.77.01.01",
            "0000e0d5.77.01.02",
            "0000e0d5.78.01.01"
        ]
    );
    let first = &fills[0];
    assert_eq!(first["account"], "DU7001");
    assert_eq!(first["symbol"], "AAPL");
    assert_eq!(first["side"], "BOT");
    assert_eq!(first["price"], "185.12");
    assert_eq!(first["perm_id"], 4242);
    assert_eq!(first["commission"], "1.25");
    assert_eq!(first["commission_currency"], "USD");
    assert_eq!(fills[1]["price"], "185.13", "the correction's own price");
    assert_eq!(fills[2]["order_ref"], "strat-1");
    assert_eq!(fills[2]["shares"], "7.0");
    // an unset commission travels as Java's Double.MAX_VALUE, and ib_async reads exactly that
    assert_eq!(fills[2]["commission"], "1.7976931348623157e+308");
    // reqPositions: the net of the canonical fills (the correction replaces the 60 it
    // corrects, it is not 60 more), at the correction's price, and the position made elsewhere
    assert_eq!(
        out["positions"],
        serde_json::json!([
            {"account": "DU7001", "symbol": "AAPL", "sec_type": "STK", "con_id": 265_598,
             "position": "60.0", "avg_cost": "185.13"},
            {"account": "DU7002", "symbol": "AAPL", "sec_type": "STK", "con_id": 265_598,
             "position": "7.0", "avg_cost": "411.3"},
            {"account": "DU7002", "symbol": "MSFT", "sec_type": "STK", "con_id": 0,
             "position": "3.0", "avg_cost": "0.0"},
        ])
    );
}
