//! The TWS session against the simulated TWS over TCP: handshake, executions with exact
//! decimals and commissions, filters, and faults mid-stream.

use std::net::SocketAddr;
use std::time::Duration;

use rust_decimal::Decimal;
use tokio::net::TcpListener;
use tradegate::sim::tws::{Fault, Scenario, spawn};
use tradegate_actors::ibkr_syncer::client::{ExecutionFilter, TwsSession};
use tradegate_actors::ibkr_syncer::tws::{
    CommissionReport, Contract, Execution, MAX_VERSION, TwsTime, parse_exec_id,
};

fn execution(exec_id: &str, account: &str, symbol: &str, shares: i64, price: Decimal) -> Execution {
    Execution {
        req_id: 0,
        order_id: 7,
        contract: Contract {
            con_id: 265_598,
            symbol: symbol.into(),
            sec_type: "STK".into(),
            exchange: "SMART".into(),
            currency: "USD".into(),
            local_symbol: symbol.into(),
            ..Contract::default()
        },
        exec_id: exec_id.into(),
        time: TwsTime::parse("20261120 15:30:01 US/Eastern").unwrap(),
        account: account.into(),
        exchange: "ISLAND".into(),
        side: "BOT".into(),
        shares: Decimal::new(shares, 0),
        price,
        perm_id: 1_481_406_469,
        client_id: 3,
        liquidation: 0,
        cum_qty: Decimal::new(shares, 0),
        avg_price: price,
        order_ref: String::new(),
        ev_rule: String::new(),
        ev_multiplier: None,
        model_code: String::new(),
        last_liquidity: 1,
        pending_price_revision: false,
    }
}

fn scenario(fault: Option<Fault>) -> Scenario {
    let px = Decimal::new(18_512_345, 5); // 185.12345
    let commission = |id: &str, c: Option<Decimal>| CommissionReport {
        exec_id: id.into(),
        commission: c,
        currency: "USD".into(),
        realized_pnl: None,
    };
    Scenario {
        accounts: vec!["DU111".into(), "DU222".into()],
        executions: vec![
            (
                execution("0000e0d5.6a1b.01.01", "DU111", "AAPL", 60, px),
                Some(commission("0000e0d5.6a1b.01.01", Some(Decimal::new(35, 2)))),
            ),
            (
                execution("0000e0d5.6a1b.02.01", "DU111", "AAPL", 40, px),
                Some(commission("0000e0d5.6a1b.02.01", None)),
            ),
            (
                execution(
                    "0000e0d5.6a1b.02.02",
                    "DU111",
                    "AAPL",
                    40,
                    Decimal::new(18_511, 2),
                ),
                None,
            ),
            (
                execution(
                    "0000e0d5.7c2d.01.01",
                    "DU222",
                    "MSFT",
                    5,
                    Decimal::new(41_130, 2),
                ),
                None,
            ),
        ],
        fault,
        ..Scenario::default()
    }
}

async fn start(scenario: Scenario) -> SocketAddr {
    let listener = TcpListener::bind(SocketAddr::from(([127, 0, 0, 1], 0)))
        .await
        .unwrap();
    let addr = listener.local_addr().unwrap();
    spawn(listener, scenario);
    addr
}

async fn connect(addr: SocketAddr) -> TwsSession {
    TwsSession::connect(addr, 3, Duration::from_secs(5), Duration::from_secs(5))
        .await
        .expect("connect to the simulated TWS")
}

#[tokio::test]
async fn a_session_fetches_every_execution_with_exact_values_and_commissions() {
    let addr = start(scenario(None)).await;
    let mut session = connect(addr).await;
    assert_eq!(session.server_version(), MAX_VERSION);
    assert_eq!(session.accounts(), ["DU111", "DU222"]);
    assert_eq!(session.next_order_id(), 1);
    let all = session
        .executions(&ExecutionFilter::default())
        .await
        .unwrap();
    assert_eq!(all.executions.len(), 4);
    let first = &all.executions[0];
    assert_eq!(first.price, Decimal::new(18_512_345, 5), "every digit kept");
    assert_eq!(first.shares, Decimal::new(60, 0));
    assert_eq!(first.time.zone.as_deref(), Some("US/Eastern"));
    let id = parse_exec_id(&all.executions[2].exec_id);
    assert_eq!((id.base.as_ref(), id.revision), ("0000e0d5.6a1b.02", 2));
    assert_eq!(all.commissions.len(), 2);
    assert_eq!(all.commissions[0].commission, Some(Decimal::new(35, 2)));
    assert_eq!(all.commissions[1].commission, None, "Double.MAX is unset");
    // filters, and a second request on the same session
    let filter = ExecutionFilter {
        account: "DU222".into(),
        ..ExecutionFilter::default()
    };
    let one = session.executions(&filter).await.unwrap();
    assert_eq!(one.executions.len(), 1);
    assert_eq!(one.executions[0].contract.symbol, "MSFT");
}

#[tokio::test]
async fn a_disconnect_or_a_malformed_frame_mid_stream_is_an_error_and_the_next_session_works() {
    for fault in [Fault::DisconnectAfter(2), Fault::MalformedAfter(1)] {
        let addr = start(scenario(Some(fault))).await;
        let mut session = connect(addr).await;
        let err = session
            .executions(&ExecutionFilter::default())
            .await
            .expect_err("the fetch must fail, not return part of the window");
        let text = err.to_string();
        match fault {
            Fault::DisconnectAfter(_) => assert!(text.contains("closed"), "{text}"),
            Fault::MalformedAfter(_) => assert!(text.contains("malformed"), "{text}"),
            Fault::HangAfter(_) => unreachable!("not in this test"),
        }
    }
    let addr = start(scenario(None)).await;
    let mut session = connect(addr).await;
    assert_eq!(
        session
            .executions(&ExecutionFilter::default())
            .await
            .unwrap()
            .executions
            .len(),
        4
    );
}

#[tokio::test]
async fn connecting_to_nothing_fails_within_the_timeout() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    drop(listener);
    let err = TwsSession::connect(addr, 1, Duration::from_secs(2), Duration::from_secs(2))
        .await
        .unwrap_err();
    assert!(err.to_string().contains("TWS connection"), "{err}");
}
