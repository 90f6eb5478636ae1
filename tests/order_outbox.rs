//! Outbox first: with PostgreSQL unreachable a submission is refused with `audit_unavailable`
//! and the venue receives nothing; once it is back, orders flow again.

mod common;

use std::time::Duration;

use common::orders::{behind_proxy, market_buy, venue_posts, wait_for_posts};

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn with_postgres_down_orders_are_refused_and_nothing_is_sent() {
    let mut gw = behind_proxy("outbox-down", |config| {
        config.database.connect_timeout_secs = 2;
    })
    .await;
    // a first order proves the path works
    gw.alpha.send(market_buy("up")).await;
    assert_eq!(gw.alpha.answer("up").await["type"], "ack");
    wait_for_posts(&gw.venue, 1).await;

    // every pooled connection is gone before the order comes (else its statement could still
    // reach the server just before its connection is cut: an unknown outcome, which
    // tests/order_lost_answer.rs covers)
    gw.proxy.go_down().await;
    gw.alpha.send(market_buy("down")).await;
    let answer = gw.alpha.answer("down").await;
    assert_eq!(answer["type"], "reject", "{answer}");
    assert_eq!(answer["code"], "audit_unavailable", "{answer}");
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(
        venue_posts(&gw.venue),
        1,
        "an order reached the venue without its decision"
    );

    gw.proxy.set_down(false);
    let mut ok = false;
    for i in 0..20 {
        let id = format!("again{i}");
        gw.alpha.send(market_buy(&id)).await;
        if gw.alpha.answer(&id).await["type"] == "ack" {
            ok = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    assert!(ok, "orders did not flow again after the database came back");
    let client = tradegate::postgres::connect(&gw.db.conninfo, Duration::from_secs(10))
        .await
        .unwrap();
    let refused: i64 = client
        .query_one("SELECT count(*) FROM trade_decisions", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(
        refused, 2,
        "exactly the two acknowledged orders have decisions"
    );
    gw.running.stop().await.unwrap();
}
