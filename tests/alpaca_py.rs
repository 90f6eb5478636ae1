//! Alpaca's official Python SDK, alpaca-py, pointed at the simulated venue (base URL and stream
//! URL overrides) submits, gets, lists, replaces and cancels orders and receives trade updates
//! (`scripts/alpaca_py_orders.py`): the venue is faithful enough for real clients. The SDK is
//! installed into a private virtual environment under `target/` when the machine lacks it.

mod common;

use std::collections::HashMap;

use rust_decimal::Decimal;
use serde_json::Value;
use tradegate::sim::alpaca::SimConfig;

use common::orders::start_venue;

const ALPACA_PY: &str = "alpaca-py==0.44.0";

#[tokio::test(flavor = "multi_thread")]
async fn alpaca_py_trades_against_the_simulated_venue() {
    let python = tokio::task::spawn_blocking(|| common::python::with_module("alpaca", ALPACA_PY))
        .await
        .unwrap();
    let (venue, base_url) = start_venue(SimConfig {
        prices: HashMap::from([("AAPL".to_string(), Decimal::new(18_750, 2))]),
        ..SimConfig::default()
    })
    .await;
    let stream_url = format!("{}/stream", base_url.replace("http://", "ws://"));
    let out = common::python::run_json(
        &python,
        "alpaca_py_orders.py",
        &[base_url, stream_url, "SIMKEY".into(), "SIMSECRET".into()],
    )
    .await;

    assert_eq!(out["account_buying_power"], "100000");
    // a market order fills at once at the symbol's price, and reads back the same three ways
    let market = &out["market_submitted"];
    assert_eq!(market["client_order_id"], "sdk-market-1");
    assert_eq!(market["symbol"], "AAPL");
    assert_eq!(market["side"], "buy");
    assert_eq!(market["type"], "market");
    assert_eq!(market["qty"], "3");
    assert_eq!(out["market_by_id"]["status"], "filled");
    assert_eq!(out["market_by_id"]["filled_qty"], "3");
    assert_eq!(out["market_by_id"]["filled_avg_price"], "187.5");
    assert_eq!(out["market_by_client_id"]["id"], market["id"]);
    // a limit far below the market rests, is listed as open, replaced, then cancelled
    assert_eq!(out["limit_submitted"]["status"], "new");
    assert_eq!(out["limit_submitted"]["limit_price"], "1.25");
    assert_eq!(out["open_client_ids"], serde_json::json!(["sdk-limit-1"]));
    assert_eq!(out["replaced"]["limit_price"], "1.5");
    assert_ne!(out["replaced"]["id"], out["limit_submitted"]["id"]);
    assert_eq!(out["after_cancel"]["status"], "canceled");
    let all: Vec<&str> = out["all_client_ids"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(Value::as_str)
        .collect();
    assert!(
        all.contains(&"sdk-market-1") && all.contains(&"sdk-limit-1"),
        "{all:?}"
    );
    // the position the fills make, parsed by the SDK's own Position model
    assert_eq!(
        out["positions"],
        serde_json::json!([{"symbol": "AAPL", "qty": "3", "side": "long",
            "avg_entry_price": "187.5"}]),
        "{}",
        out["positions"]
    );
    // Alpaca's error shapes reach the SDK's APIError intact
    assert_eq!(out["too_big"]["status_code"], 403, "{}", out["too_big"]);
    assert_eq!(out["too_big"]["code"], 40310000);
    assert_eq!(out["unknown"]["status_code"], 404);
    assert_eq!(out["unknown"]["code"], 40410000);
    // trade updates parsed by the SDK's own models: the market order's new and fill, the
    // resting order's cancel
    let updates = out["updates"].as_array().unwrap();
    let of = |client: &str, event: &str| {
        updates
            .iter()
            .filter(|u| u["client_order_id"] == client && u["event"] == event)
            .collect::<Vec<_>>()
    };
    let fills = of("sdk-market-1", "fill");
    assert_eq!(fills.len(), 1, "{updates:?}");
    assert_eq!(fills[0]["qty"], "3.0");
    assert_eq!(fills[0]["price"], "187.5");
    assert_eq!(fills[0]["status"], "filled");
    assert!(fills[0]["execution_id"].is_string());
    assert_eq!(of("sdk-market-1", "new").len(), 1, "{updates:?}");
    assert!(
        updates
            .iter()
            .any(|u| u["event"] == "canceled" && u["status"] == "canceled"),
        "{updates:?}"
    );
    // and the venue saw each SDK submission exactly once
    assert_eq!(venue.submissions_of("sdk-market-1"), 1);
    assert_eq!(venue.submissions_of("sdk-limit-1"), 1);
    assert_eq!(venue.submissions_of("sdk-too-big"), 1);
}
