//! The order path end to end against the outcomes a broker really gives: a notional (dollar)
//! order with fractional shares, a 429 from the rate limit, partial fills, an order the broker
//! itself expires or cancels. Each is recorded as it happened and told to the strategy; none
//! is retried.

mod common;

use std::time::Duration;

use rust_decimal::Decimal;
use serde_json::{Value, json};
use tradegate::config::Config;
use tradegate::sim::alpaca::SimConfig;
use tradegate_actors::order_router::RiskLimits;
use uuid::Uuid;

use common::orders::{Gateway, StrategyWs, decision_outcome, gateway_at, start_venue};
use common::wait_until;

const WAIT: Duration = Duration::from_secs(20);

async fn gateway(label: &str, venue: SimConfig, tune: impl FnOnce(&mut Config)) -> Gateway {
    let g = gateway_at(label, start_venue(venue).await, tune).await;
    wait_until(WAIT, || async {
        (g.venue.stream_listeners() == 1).then_some(())
    })
    .await
    .expect("the stream did not connect");
    g
}

fn order(id: &str, extra: Value) -> Value {
    let mut o = json!({"type": "submit_order", "request_id": id, "strategy": "alpha",
        "symbol": "AAPL", "side": "buy", "qty": "4", "order_type": "market",
        "time_in_force": "day"});
    for (k, v) in extra.as_object().unwrap() {
        if v.is_null() {
            o.as_object_mut().unwrap().remove(k);
        } else {
            o[k] = v.clone();
        }
    }
    o
}

async fn answer(ws: &mut StrategyWs, o: Value) -> Value {
    let id = o["request_id"].as_str().unwrap().to_string();
    ws.send(o).await;
    ws.answer(&id).await
}

fn decision_of(ack: &Value) -> Uuid {
    assert_eq!(ack["type"], "ack", "{ack}");
    Uuid::parse_str(ack["decision_id"].as_str().unwrap()).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_notional_order_buys_fractional_shares_and_is_risk_checked_on_its_dollars() {
    let mut g = gateway("outcomes-notional", SimConfig::default(), |c| {
        c.orders.risk = RiskLimits {
            max_notional: Some(Decimal::from(1000)),
            max_qty: Some(Decimal::from(5)),
            ..RiskLimits::default()
        };
    })
    .await;
    let a = answer(
        &mut g.alpha,
        order("big", json!({"qty": null, "notional": "1500"})),
    )
    .await;
    assert_eq!(a["code"], "risk.max_notional", "{a}");
    let a = answer(&mut g.alpha, order("both", json!({"notional": "10"}))).await;
    assert_eq!(a["code"], "invalid", "qty and notional: {a}");
    let a = answer(
        &mut g.alpha,
        order(
            "limit",
            json!({"qty": null, "notional": "10", "order_type": "limit", "limit_price": "99"}),
        ),
    )
    .await;
    assert_eq!(a["code"], "invalid", "a notional limit order: {a}");
    let a = answer(&mut g.alpha, order("neither", json!({"qty": null}))).await;
    assert_eq!(a["code"], "invalid", "{a}");
    // the order is its own value; its shares (2.5 at the reference price) are within max_qty
    let decision = decision_of(
        &answer(
            &mut g.alpha,
            order(
                "dollars",
                json!({"qty": null, "notional": "250.50", "reference_price": "100"}),
            ),
        )
        .await,
    );
    let outcome = wait_until(WAIT, || async {
        decision_outcome(&g.client, decision)
            .await
            .filter(|o| o.1 == "filled")
    })
    .await
    .expect("the notional order was not filled");
    assert_eq!(outcome.0, "executed");
    assert_eq!(
        outcome.2,
        Decimal::new(2505, 3),
        "250.50 buys 2.505 shares at 100"
    );
    let row = g
        .client
        .query_one(
            "SELECT quantity, notional FROM trade_decisions WHERE decision_id = $1",
            &[&decision],
        )
        .await
        .unwrap();
    assert_eq!(row.get::<_, Option<Decimal>>(0), None);
    assert_eq!(
        row.get::<_, Option<Decimal>>(1),
        Some(Decimal::new(25050, 2))
    );
    let sent = g
        .venue
        .order_by_client_id(&decision.to_string())
        .expect("the venue has it");
    assert_eq!(sent["notional"], "250.5");
    assert!(sent["qty"].is_null(), "sent as dollars, not shares: {sent}");
    g.running.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_429_fails_the_decision_with_the_brokers_answer_and_is_not_retried() {
    let config = SimConfig {
        rate_limit_per_min: 2,
        ..SimConfig::default()
    };
    let mut g = gateway("outcomes-429", config, |_| {}).await;
    let mut decisions = Vec::new();
    for i in 0..3 {
        decisions.push(decision_of(
            &answer(&mut g.alpha, order(&format!("r{i}"), json!({"qty": "1"}))).await,
        ));
        // one after the other, so which one meets the limit is known
        wait_until(WAIT, || async {
            decision_outcome(&g.client, decisions[i]).await
        })
        .await
        .expect("no outcome");
    }
    let limited = decision_outcome(&g.client, decisions[2]).await.unwrap();
    assert_eq!(
        (limited.0.as_str(), limited.1.as_str()),
        ("failed", "rejected")
    );
    assert!(limited.4.unwrap_or_default().starts_with("429"));
    let row = g
        .client
        .query_one(
            "SELECT e.http_status_code, e.error_code FROM trade_executions e \
             JOIN trade_decisions d ON d.id = e.trade_decision_id WHERE d.decision_id = $1",
            &[&decisions[2]],
        )
        .await
        .unwrap();
    assert_eq!(row.get::<_, Option<i32>>(0), Some(429));
    assert_eq!(row.get::<_, Option<String>>(1).as_deref(), Some("42910000"));
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(
        g.venue.submissions_of(&decisions[2].to_string()),
        1,
        "never retried"
    );
    assert!(
        !g.venue
            .requests()
            .iter()
            .any(|r| r.path == "/v2/orders:by_client_order_id"),
        "a 429 is a definite refusal: nothing to look up"
    );
    g.running.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn partial_fills_then_the_brokers_own_expiry_and_cancel_are_recorded() {
    let config = SimConfig {
        partial_fills: true,
        ..SimConfig::default()
    };
    let mut g = gateway("outcomes-partial", config, |_| {}).await;
    // a marketable order fills in two parts
    let filled = decision_of(&answer(&mut g.alpha, order("two-parts", json!({}))).await);
    let outcome = wait_until(WAIT, || async {
        decision_outcome(&g.client, filled)
            .await
            .filter(|o| o.1 == "filled")
    })
    .await
    .expect("not filled");
    assert_eq!(outcome.2, Decimal::from(4));
    let events: Vec<String> = g
        .client
        .query(
            "SELECT v.event FROM broker_order_events v JOIN trade_decisions d \
             ON d.id = v.trade_decision_id WHERE d.decision_id = $1 ORDER BY v.id",
            &[&filled],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert_eq!(events, ["new", "partial_fill", "fill"]);
    let partial = g
        .alpha
        .wait_for(WAIT, |v| v["type"] == "fill" && v["partial"] == true)
        .await
        .expect("the strategy heard of the partial fill");
    assert_eq!(partial["qty"], "2");

    // resting orders the broker ends on its own: the execution ends, the decision stays
    // executed (only the strategy's own cancel cancels a decision)
    for (id, expired, status) in [("rests-1", true, "expired"), ("rests-2", false, "canceled")] {
        let decision = decision_of(
            &answer(
                &mut g.alpha,
                order(id, json!({"order_type": "limit", "limit_price": "50"})),
            )
            .await,
        );
        wait_until(WAIT, || async {
            decision_outcome(&g.client, decision)
                .await
                .filter(|o| o.0 == "executed")
        })
        .await
        .expect("the resting order was not accepted");
        assert!(g.venue.end_order(&decision.to_string(), expired));
        let ended = wait_until(WAIT, || async {
            decision_outcome(&g.client, decision)
                .await
                .filter(|o| o.1 == "cancelled")
        })
        .await
        .unwrap_or_else(|| panic!("the broker's {status} was not recorded"));
        assert_eq!(ended.0, "executed");
        let told = g
            .alpha
            .wait_for(WAIT, |v| {
                v["type"] == "order_update"
                    && v["decision_id"] == decision.to_string()
                    && v["event"] == status
            })
            .await;
        assert!(
            told.is_some(),
            "the strategy was told the order was {status}"
        );
    }
    g.running.stop().await.unwrap();
}
