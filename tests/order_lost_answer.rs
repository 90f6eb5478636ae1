//! Outbox first, when the commit's answer is lost: the server committed the decision but the
//! gateway could not know. The order is refused (`audit_unavailable`) and never sent; the
//! decision is reconciled at once, without a restart, as not received by the broker. (Its own
//! test binary: a gateway registers its actors by name, one gateway per process at a time.)

mod common;

use std::time::Duration;

use common::orders::{behind_proxy, market_buy, venue_looked_up, venue_posts, wait_for_posts};

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_decision_whose_commit_answer_was_lost_is_reconciled_and_never_sent() {
    let gw = behind_proxy("outbox-lost-answer", |_| {}).await;
    let (proxy, venue, mut alpha) = (&gw.proxy, &gw.venue, gw.alpha);
    alpha.send(market_buy("first")).await;
    let first = alpha.answer("first").await;
    assert_eq!(first["type"], "ack", "{first}");
    wait_for_posts(venue, 1).await;

    // the server runs (and commits) the next decisions insert; its answer is lost
    proxy.cut_next_statement("INSERT INTO trade_decisions");
    alpha.send(market_buy("lost")).await;
    let lost = alpha.answer("lost").await;
    assert_eq!(lost["type"], "reject", "{lost}");
    assert_eq!(lost["code"], "audit_unavailable", "{lost}");
    assert_eq!(proxy.cuts(), 1, "the answer was not cut");

    let client = tradegate::postgres::connect(&gw.db.conninfo, Duration::from_secs(10))
        .await
        .unwrap();
    let first_id = first["decision_id"].as_str().unwrap().to_string();
    let other: (String, String) = client
        .query_one(
            "SELECT decision_id::text, status FROM trade_decisions WHERE decision_id::text <> $1",
            &[&first_id],
        )
        .await
        .map(|r| (r.get(0), r.get(1)))
        .expect("the lost answer's decision was committed");
    // reconciled without a restart: looked up at the broker, not found, failed
    let reconciled = common::wait_until(Duration::from_secs(20), || async {
        let row = client
            .query_one(
                "SELECT status, failure_reason FROM trade_decisions WHERE decision_id::text = $1",
                &[&other.0],
            )
            .await
            .unwrap();
        let (status, reason): (String, Option<String>) = (row.get(0), row.get(1));
        (status == "failed").then_some(reason)
    })
    .await;
    assert_eq!(
        reconciled,
        Some(Some("not_received_by_broker".to_string())),
        "decision {} stayed {}",
        other.0,
        other.1
    );
    // it was looked up, never sent
    assert_eq!(
        venue_posts(venue),
        1,
        "the lost answer's order reached the venue"
    );
    assert!(
        venue_looked_up(venue),
        "the decision was not looked up at the broker: {:?}",
        venue.requests()
    );
    // orders flow again
    alpha.send(market_buy("after")).await;
    assert_eq!(alpha.answer("after").await["type"], "ack");
    gw.running.stop().await.unwrap();
}
