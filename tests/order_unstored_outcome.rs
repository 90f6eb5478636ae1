//! An order the broker took whose outcome could not be stored (the database went away while
//! the call was out): the decision is reconciled as soon as the database is back, without a
//! restart, by looking the order up; it is recorded once and never sent again. (Its own test
//! binary: a gateway registers its actors by name, one gateway per process at a time.)

mod common;

use std::time::Duration;

use tradegate::sim::alpaca::Faults;

use common::orders::{behind_proxy, market_buy, venue_looked_up, venue_posts, wait_for_posts};

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_outcome_that_could_not_be_stored_is_recovered_without_a_restart() {
    let mut gw = behind_proxy("outcome-unstored", |config| {
        config.database.connect_timeout_secs = 2;
    })
    .await;
    // the venue takes the order at once but answers only after the database is gone
    gw.venue.set_faults(Faults {
        delay_ms: 1500,
        ..Faults::default()
    });
    gw.alpha.send(market_buy("taken")).await;
    let ack = gw.alpha.answer("taken").await;
    assert_eq!(ack["type"], "ack", "{ack}");
    let decision = ack["decision_id"].as_str().unwrap().to_string();
    wait_for_posts(&gw.venue, 1).await;
    gw.proxy.go_down().await;
    gw.venue.set_faults(Faults::default());
    // the session cannot store the answer and says so
    let unstored = gw
        .alpha
        .wait_for(Duration::from_secs(20), |v| {
            v["type"] == "error" && v["message"].as_str().unwrap_or("").contains(&decision)
        })
        .await;
    assert!(unstored.is_some(), "seen: {:?}", gw.alpha.seen);

    gw.proxy.set_down(false);
    let client = tradegate::postgres::connect(&gw.db.conninfo, Duration::from_secs(10))
        .await
        .unwrap();
    let recorded = common::wait_until(Duration::from_secs(30), || async {
        let row = client
            .query_one(
                "SELECT d.status, (SELECT count(*) FROM trade_executions e \
                                   WHERE e.trade_decision_id = d.id) \
                 FROM trade_decisions d WHERE d.decision_id::text = $1",
                &[&decision],
            )
            .await
            .ok()?;
        let (status, executions): (String, i64) = (row.get(0), row.get(1));
        (status != "pending").then_some((status, executions))
    })
    .await;
    assert_eq!(
        recorded,
        Some(("executed".to_string(), 1)),
        "the decision was not reconciled once the database was back"
    );
    // looked up, not sent again
    assert_eq!(venue_posts(&gw.venue), 1, "the order was sent twice");
    assert!(venue_looked_up(&gw.venue), "the order was not looked up");
    gw.running.stop().await.unwrap();
}
