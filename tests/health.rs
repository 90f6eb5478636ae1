//! `/health` tells the truth when the database goes away and comes back.

mod common;

use std::net::SocketAddr;
use std::time::Duration;

use common::wait_until;
use common::writer::OwnCluster;
use tradegate::app::{Running, check_health};
use tradegate::config::Config;

#[tokio::test]
async fn health_reports_a_lost_database_and_its_return() {
    let mut db = OwnCluster::start("health").await;
    let mut config = Config::default();
    config.database.url = db.conninfo.clone();
    config.tradelog.spill_dir = db.dir.join("spill");
    let running = Running::start(&config, SocketAddr::from(([127, 0, 0, 1], 0)))
        .await
        .unwrap();
    let addr = running.api_addr();
    assert_eq!(check_health(addr).await.unwrap().status, "ok");
    running.trade_log().log(common::writer::sample_event(1));
    let stats = running.flush_trade_log().await.unwrap();
    assert_eq!(stats.written, 1);

    db.stop_server().await;
    let degraded = check_health(addr).await.unwrap();
    assert_eq!(degraded.status, "degraded");
    assert!(!degraded.database.ok);
    assert!(degraded.database.error.is_some());
    assert!(degraded.actors.gateway, "the tree itself is still up");
    // with the database gone, the trade log spills
    running.trade_log().log(common::writer::sample_event(2));
    let stats = running.flush_trade_log().await.unwrap();
    assert_eq!(stats.spilled, 1, "{stats:?}");
    let metrics = common::metrics_text(&format!("http://{addr}")).await;
    for name in [
        "tradegate_actor_up{actor=\"trade_log_writer\"} 1",
        "tradegate_tradelog_batch_size",
        "tradegate_tradelog_insert_seconds",
        "tradegate_tradelog_queue_depth",
        "tradegate_tradelog_spilled_events_total 1",
        "tradegate_tradelog_errors_total{kind=\"database\"}",
        "tradegate_health_checks_total{result=\"degraded\"}",
    ] {
        assert!(
            metrics.contains(name),
            "{name} missing from /metrics:\n{metrics}"
        );
    }

    db.start_server().await;
    let recovered = wait_until(Duration::from_secs(15), || async {
        check_health(addr).await.ok().filter(|h| h.status == "ok")
    })
    .await;
    assert!(
        recovered.is_some(),
        "health did not recover after the database returned"
    );
    let stats = running.flush_trade_log().await.unwrap();
    assert_eq!(
        stats.replayed, 1,
        "the spilled event was not replayed: {stats:?}"
    );

    running.stop().await.unwrap();
    let pid_file = db.socket_dir().join("postmaster.pid");
    let cluster = db.cluster.take();
    tokio::task::spawn_blocking(move || drop(cluster))
        .await
        .unwrap();
    assert!(!pid_file.exists(), "the cluster was not stopped");
}
