//! Real brokers are reached over verified TLS: the gateway trades through `https` and `wss`
//! with a venue whose certificate comes from a private CA trusted through `[tls]
//! extra_ca_file` or `SSL_CERT_FILE`; a venue it cannot verify gets nothing, and the order is
//! failed as never received.

mod common;

use std::time::Duration;

use rust_decimal::Decimal;
use serde_json::json;
use tradegate::sim::alpaca::SimConfig;
use uuid::Uuid;

use common::orders::{
    StrategyWs, decision_outcome, execution_text, gateway_at, market_buy, start_gateway_process,
};
use common::tls::{TestPki, start_tls_venue};
use common::{TestDb, scratch_dir, wait_until};

const WAIT: Duration = Duration::from_secs(20);

fn decision_of(ack: &serde_json::Value) -> Uuid {
    assert_eq!(ack["type"], "ack", "{ack}");
    Uuid::parse_str(ack["decision_id"].as_str().unwrap()).unwrap()
}

/// The `fill` events the stream delivered for `decision` (recorded from `wss`).
async fn stream_fills(client: &tokio_postgres::Client, decision: Uuid) -> i64 {
    client
        .query_one(
            "SELECT count(*) FROM broker_order_events v \
             JOIN trade_decisions d ON d.id = v.trade_decision_id \
             WHERE d.decision_id = $1 AND v.event = 'fill' AND v.event_key NOT LIKE 'recovered:%'",
            &[&decision],
        )
        .await
        .unwrap()
        .get(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn trades_over_https_and_wss_with_a_ca_from_extra_ca_file() {
    let dir = scratch_dir("order-tls-extra");
    let pki = TestPki::new(&dir, "extra-ca");
    let served = start_tls_venue(SimConfig::default(), &pki.server).await;
    assert!(served.1.starts_with("https://"));
    let mut g = gateway_at("order-tls-extra", served, |c| {
        c.tls.extra_ca_file = pki.ca_file.clone();
    })
    .await;
    let (client, venue, alpha) = (&g.client, &g.venue, &mut g.alpha);
    // the stream (wss) is listening before the order goes
    wait_until(WAIT, || async {
        (venue.stream_listeners() == 1).then_some(())
    })
    .await
    .expect("the trade_updates stream did not connect over wss");
    alpha.send(market_buy("tls1")).await;
    let decision = decision_of(&alpha.answer("tls1").await);
    let outcome = wait_until(WAIT, || async {
        decision_outcome(client, decision)
            .await
            .filter(|o| o.1 == "filled")
    })
    .await
    .expect("the order was not filled over https");
    assert_eq!(outcome.0, "executed");
    assert_eq!(outcome.2, Decimal::ONE);
    wait_until(WAIT, || async {
        (stream_fills(client, decision).await == 1).then_some(())
    })
    .await
    .expect("the fill did not arrive on the wss stream");
    let fill = alpha
        .wait_for(WAIT, |v| v["type"] == "fill")
        .await
        .expect("the strategy was not told of the fill");
    assert_eq!(fill["decision_id"], decision.to_string());
    // connections are kept and reused: a handful of handshakes, not one per call
    assert!(venue.handshakes().completed() >= 2);
    assert_eq!(venue.handshakes().failed(), 0);
    g.running.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_venue_with_an_untrusted_certificate_gets_nothing_and_the_order_fails_as_never_received()
{
    let dir = scratch_dir("order-tls-untrusted");
    let trusted = TestPki::new(&dir, "trusted-ca");
    let stranger = TestPki::new(&dir, "stranger-ca");
    // the venue shows a certificate of a CA the gateway does not trust
    let served = start_tls_venue(SimConfig::default(), &stranger.server).await;
    let mut g = gateway_at("order-tls-untrusted", served, |c| {
        c.tls.extra_ca_file = trusted.ca_file.clone();
    })
    .await;
    let (client, venue, alpha) = (&g.client, &g.venue, &mut g.alpha);
    alpha.send(market_buy("bad-cert")).await;
    let decision = decision_of(&alpha.answer("bad-cert").await);
    let outcome = wait_until(WAIT, || async { decision_outcome(client, decision).await })
        .await
        .expect("the order got no outcome");
    assert_eq!(outcome.0, "failed");
    assert_eq!(outcome.1, "rejected");
    assert_eq!(outcome.4.as_deref(), Some("not_received_by_broker"));
    let message = execution_text(client, decision, "error_message")
        .await
        .unwrap_or_default();
    assert_eq!(
        execution_text(client, decision, "error_code")
            .await
            .as_deref(),
        Some("tls"),
        "{message}"
    );
    assert!(
        message.contains("TLS handshake with 127.0.0.1 failed")
            && message.contains("UnknownIssuer"),
        "the error names the host and the reason: {message}"
    );
    let execution = alpha
        .wait_for(WAIT, |v| v["type"] == "execution")
        .await
        .expect("the strategy was not told");
    assert_eq!(execution["status"], "rejected");
    assert!(
        execution["error"].as_str().unwrap_or("").contains("TLS"),
        "{execution}"
    );
    // nothing reached the venue: no HTTP request, and every handshake was refused
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(venue.requests().is_empty(), "{:?}", venue.requests());
    assert_eq!(venue.handshakes().completed(), 0);
    assert!(venue.handshakes().failed() >= 1);
    assert_eq!(
        venue.stream_listeners(),
        0,
        "the stream must not connect either"
    );
    g.running.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn tradegate_run_trusts_the_ca_named_by_ssl_cert_file() {
    let db = TestDb::new().await;
    let client = db.client().await;
    let dir = scratch_dir("order-tls-env");
    let pki = TestPki::new(&dir, "env-ca");
    let (venue, base_url) = start_tls_venue(SimConfig::default(), &pki.server).await;
    let config = dir.join("config.toml");
    std::fs::write(
        &config,
        format!(
            r#"
[database]
url = "{db}"
[api]
listen = "127.0.0.1:0"
[tradelog]
spill_dir = "{spill}"
[alpaca]
reconnect_max_backoff_secs = 1
[[alpaca.accounts]]
name = "paper"
base_url = "{base_url}"
key_id_env = "SIM_KEY"
secret_key_env = "SIM_SECRET"
[orders.strategies.alpha]
token = "alpha-token"
"#,
            db = db.conninfo,
            spill = dir.join("spill").display()
        ),
    )
    .unwrap();
    let ca = pki.ca_file.to_str().unwrap();
    let (gateway, addr) = start_gateway_process(&config, &[("SSL_CERT_FILE", ca)]).await;
    let mut alpha = StrategyWs::connect(addr, "alpha-token").await.unwrap();
    alpha
        .send(
            json!({"type": "submit_order", "request_id": "env1", "strategy": "alpha",
            "symbol": "MSFT", "side": "buy", "qty": "2", "order_type": "market",
            "time_in_force": "day"}),
        )
        .await;
    let decision = decision_of(&alpha.answer("env1").await);
    let outcome = wait_until(WAIT, || async {
        decision_outcome(&client, decision)
            .await
            .filter(|o| o.1 == "filled")
    })
    .await
    .expect("the order was not filled over https with SSL_CERT_FILE");
    assert_eq!(outcome.2, Decimal::TWO);
    wait_until(WAIT, || async {
        (stream_fills(&client, decision).await == 1).then_some(())
    })
    .await
    .expect("the fill did not arrive on the wss stream");
    assert_eq!(venue.submissions_of(&decision.to_string()), 1);
    drop(gateway);
}

#[test]
fn a_ca_file_that_cannot_be_used_is_a_clear_error() {
    let dir = scratch_dir("order-tls-bad-file");
    std::fs::create_dir_all(&dir).unwrap();
    let missing = dir.join("missing.pem");
    let err = tradegate_actors::tls::ClientTls::with_sources(None, Some(&missing)).unwrap_err();
    let text = err.to_string();
    assert!(
        text.contains("[tls] extra_ca_file") && text.contains("missing.pem"),
        "{text}"
    );
    let empty = dir.join("empty.pem");
    std::fs::write(&empty, "not a certificate\n").unwrap();
    let err = tradegate_actors::tls::ClientTls::with_sources(Some(&empty), None).unwrap_err();
    assert!(
        err.to_string().contains("SSL_CERT_FILE") && err.to_string().contains("no usable CA"),
        "{err}"
    );
    // a good file adds exactly its CA to the platform's roots
    let pki = TestPki::new(&dir, "counted-ca");
    let platform = tradegate_actors::tls::ClientTls::with_sources(None, None)
        .map(|t| t.root_count())
        .unwrap_or(0);
    let with_extra =
        tradegate_actors::tls::ClientTls::with_sources(None, Some(&pki.ca_file)).unwrap();
    assert_eq!(with_extra.root_count(), platform + 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_burst_reuses_a_bounded_set_of_tls_connections() {
    let dir = scratch_dir("order-tls-burst");
    let pki = TestPki::new(&dir, "burst-ca");
    let served = start_tls_venue(SimConfig::default(), &pki.server).await;
    let mut g = gateway_at("order-tls-burst", served, |c| {
        c.tls.extra_ca_file = pki.ca_file.clone();
    })
    .await;
    let (client, venue, alpha) = (&g.client, &g.venue, &mut g.alpha);
    // every answer is held a while, so the whole burst is in flight at once
    venue.set_faults(tradegate::sim::alpaca::Faults {
        delay_ms: 300,
        ..Default::default()
    });
    let n = 3 * tradegate_actors::alpaca_session::rest::MAX_IN_FLIGHT;
    for i in 0..n {
        alpha.send(market_buy(&format!("b{i}"))).await;
    }
    let executed = wait_until(Duration::from_secs(60), || async {
        let row = client
            .query_one(
                "SELECT count(*) FROM trade_decisions WHERE status = 'executed'",
                &[],
            )
            .await
            .unwrap();
        (row.get::<_, i64>(0) == n as i64).then_some(())
    })
    .await;
    assert!(executed.is_some(), "the burst was not executed");
    let handshakes = venue.handshakes().completed();
    assert!(
        handshakes <= tradegate_actors::alpaca_session::rest::MAX_IN_FLIGHT as u64 + 1,
        "{n} orders opened {handshakes} TLS connections (at most the pool's, plus the stream's)"
    );
    g.running.stop().await.unwrap();
}
