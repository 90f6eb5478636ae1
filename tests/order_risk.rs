//! Pre-trade risk for market orders and the price collar, end to end over the strategy API:
//! a market order is valued at the strategy's reference price, else at the last fill price the
//! gateway recorded, and refused without either; a limit price far from the reference is
//! refused as a fat finger. Nothing refused reaches the venue.

mod common;

use std::time::Duration;

use rust_decimal::Decimal;
use serde_json::{Value, json};
use tradegate::sim::alpaca::SimConfig;
use tradegate_actors::order_router::RiskLimits;
use uuid::Uuid;

use common::orders::{StrategyWs, gateway_at, start_venue, venue_posts};
use common::wait_until;

fn order(
    id: &str,
    qty: u32,
    order_type: &str,
    limit: Option<&str>,
    reference: Option<&str>,
) -> Value {
    let mut o = json!({"type": "submit_order", "request_id": id, "strategy": "alpha",
        "symbol": "AAPL", "side": "buy", "qty": qty.to_string(), "order_type": order_type,
        "time_in_force": "day"});
    if let Some(p) = limit {
        o["limit_price"] = json!(p);
    }
    if let Some(p) = reference {
        o["reference_price"] = json!(p);
    }
    o
}

async fn answer(ws: &mut StrategyWs, o: Value) -> Value {
    let id = o["request_id"].as_str().unwrap().to_string();
    ws.send(o).await;
    ws.answer(&id).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn market_orders_are_notional_checked_and_limit_prices_collared() {
    let mut g = gateway_at("order-risk", start_venue(SimConfig::default()).await, |c| {
        c.orders.risk = RiskLimits {
            max_notional: Some(Decimal::from(1000)),
            max_price_deviation: Some(Decimal::new(10, 2)),
            ..RiskLimits::default()
        };
    })
    .await;
    let api = g.running.api_addr();
    let (client, venue, alpha) = (&g.client, &g.venue, &mut g.alpha);

    // nothing recorded for AAPL yet and no reference: it cannot be valued
    let a = answer(alpha, order("m0", 5, "market", None, None)).await;
    assert_eq!(a["code"], "risk.no_reference_price", "{a}");
    // the strategy's reference values it: 20 x 100 > 1000
    let a = answer(alpha, order("m1", 20, "market", None, Some("100"))).await;
    assert_eq!(a["code"], "risk.max_notional", "{a}");
    let a = answer(alpha, order("m2", 5, "market", None, Some("100"))).await;
    assert_eq!(a["type"], "ack", "{a}");
    let a = answer(alpha, order("m-bad", 5, "market", None, Some("0"))).await;
    assert_eq!(a["code"], "invalid", "a zero reference is refused: {a}");
    // the venue fills m2 at 100: from now on that is AAPL's recorded price
    wait_until(Duration::from_secs(20), || async {
        client
            .query_opt(
                "SELECT 1 FROM trade_executions WHERE filled_avg_price = 100",
                &[],
            )
            .await
            .unwrap()
    })
    .await
    .expect("the market order was not filled");
    let a = answer(alpha, order("m3", 11, "market", None, None)).await;
    assert_eq!(
        a["code"], "risk.max_notional",
        "valued at the last fill: {a}"
    );
    let a = answer(alpha, order("m4", 9, "market", None, None)).await;
    assert_eq!(a["type"], "ack", "{a}");

    // the collar: 10 % around the reference (the last fill, 100)
    let a = answer(alpha, order("fat", 1, "limit", Some("1000"), None)).await;
    assert_eq!(a["code"], "risk.price_collar", "{a}");
    let a = answer(alpha, order("low", 1, "limit", Some("89"), None)).await;
    assert_eq!(a["code"], "risk.price_collar", "{a}");
    let a = answer(alpha, order("near", 1, "limit", Some("95"), None)).await;
    assert_eq!(a["type"], "ack", "{a}");
    // the strategy's own reference moves the collar
    let a = answer(alpha, order("moved", 1, "limit", Some("150"), Some("148"))).await;
    assert_eq!(a["type"], "ack", "{a}");

    // a replace is checked as the order it would leave at the broker
    let near = Uuid::parse_str(
        answer(alpha, order("rest", 1, "limit", Some("95"), None)).await["decision_id"]
            .as_str()
            .unwrap(),
    )
    .unwrap();
    wait_until(Duration::from_secs(20), || async {
        client
            .query_opt(
                "SELECT 1 FROM trade_executions e JOIN trade_decisions d \
                 ON d.id = e.trade_decision_id WHERE d.decision_id = $1 \
                   AND e.broker_order_id IS NOT NULL",
                &[&near],
            )
            .await
            .unwrap()
    })
    .await
    .expect("the resting order was not accepted");
    let replace = |id: &str, change: Value| {
        let mut r = json!({"type": "replace_order", "request_id": id, "decision_id": near});
        for (k, v) in change.as_object().unwrap() {
            r[k] = v.clone();
        }
        r
    };
    let a = answer(alpha, replace("r-fat", json!({"limit_price": "1000"}))).await;
    assert_eq!(a["code"], "risk.price_collar", "{a}");
    let a = answer(alpha, replace("r-big", json!({"qty": "20"}))).await;
    assert_eq!(a["code"], "risk.max_notional", "20 x 95: {a}");
    let a = answer(alpha, replace("r-ok", json!({"limit_price": "96"}))).await;
    assert_eq!(a["type"], "ack", "{a}");
    let halted = common::api::client(common::api::OPERATOR)
        .post(format!("http://{}/api/v1/kill-switch", api))
        .body(r#"{"state":"halted"}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(halted.status(), 200);
    let mut refused = None;
    for i in 0..50 {
        let a = answer(
            alpha,
            replace(&format!("r-halted-{i}"), json!({"limit_price": "97"})),
        )
        .await;
        if a["code"] == "risk.halted" {
            refused = Some(a);
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(refused.is_some(), "a halted gateway amended an order");
    let patches = venue
        .requests()
        .iter()
        .filter(|r| r.method == "PATCH")
        .count();
    assert!(
        patches >= 1,
        "the amendment within the limits reached the venue"
    );

    // the refusals are on record with their codes, and none reached the venue
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(
        venue_posts(venue),
        5,
        "only the five accepted orders were sent"
    );
    let codes: Vec<String> = client
        .query("SELECT reason_code FROM order_rejects ORDER BY id", &[])
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert_eq!(
        codes,
        [
            "risk.no_reference_price",
            "risk.max_notional",
            "invalid",
            "risk.max_notional",
            "risk.price_collar",
            "risk.price_collar"
        ]
    );
    g.running.stop().await.unwrap();
}
