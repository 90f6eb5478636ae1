//! An unknown outcome is never a failure: a submission whose answer was lost (a timeout after
//! the venue filled it, a 5xx) is looked up by its client order id until its real outcome is
//! known, never resent; one that surely never left (connection refused) fails at once. A
//! stream event that contradicts the recorded state is applied and the correction kept.

mod common;

use std::time::Duration;

use rust_decimal::Decimal;
use serde_json::{Value, json};
use tradegate::config::Config;
use tradegate::sim::alpaca::{Faults, SimAlpaca, SimConfig};
use uuid::Uuid;

use common::orders::{
    Gateway, StrategyWs, decision_outcome, execution_text, gateway_at, start_venue,
};
use common::wait_until;

const WAIT: Duration = Duration::from_secs(20);

async fn setup(label: &str, venue: SimConfig, tune: impl FnOnce(&mut Config)) -> Gateway {
    gateway_at(label, start_venue(venue).await, tune).await
}

fn buy(request_id: &str, qty: &str) -> Value {
    json!({"type": "submit_order", "request_id": request_id, "strategy": "alpha",
        "symbol": "AAPL", "side": "buy", "qty": qty, "order_type": "market",
        "time_in_force": "day"})
}

async fn submit(alpha: &mut StrategyWs, order: Value) -> Uuid {
    let request_id = order["request_id"].as_str().unwrap().to_string();
    alpha.send(order).await;
    let ack = alpha.answer(&request_id).await;
    assert_eq!(ack["type"], "ack", "{ack}");
    Uuid::parse_str(ack["decision_id"].as_str().unwrap()).unwrap()
}

/// The execution's error code and status while its outcome is unknown.
async fn unknown_execution(client: &tokio_postgres::Client, decision: Uuid) -> Option<String> {
    let row = client
        .query_opt(
            "SELECT e.error_code FROM trade_executions e \
             JOIN trade_decisions d ON d.id = e.trade_decision_id \
             WHERE d.decision_id = $1 AND d.status = 'pending' AND e.status = 'submitted' \
               AND e.broker_order_id IS NULL",
            &[&decision],
        )
        .await
        .unwrap()?;
    row.get(0)
}

/// A timeout after the venue took and filled the order, with or without the stream.
async fn timed_out_after_the_fill(label: &str, stream: bool) {
    let mut s = setup(label, SimConfig::default(), |c| {
        c.alpaca.request_timeout_ms = 300;
        c.alpaca.stream = stream;
        c.alpaca.recovery_grace_secs = 30;
    })
    .await;
    // the venue fills at once and holds its answer past the gateway's timeout
    s.venue.set_faults(Faults {
        delay_ms: 2_000,
        ..Faults::default()
    });
    let decision = submit(&mut s.alpha, buy("slow", "3")).await;
    let unknown = wait_until(WAIT, || async {
        match decision_outcome(&s.client, decision).await {
            Some(o) if o.0 == "executed" => Some("resolved".to_string()),
            _ => unknown_execution(&s.client, decision).await,
        }
    })
    .await
    .expect("the timed-out submission was not recorded");
    if !stream {
        assert_eq!(
            unknown, "timeout",
            "recorded as outcome unknown, not failed"
        );
        let told = s
            .alpha
            .wait_for(WAIT, |v| v["type"] == "execution")
            .await
            .expect("the strategy was told the outcome is unknown");
        assert_eq!(told["status"], "submitted", "{told}");
    }
    // the venue answers again: the look-up finds the order
    s.venue.set_faults(Faults::default());
    let outcome = wait_until(WAIT, || async {
        decision_outcome(&s.client, decision)
            .await
            .filter(|o| o.0 == "executed" && o.1 == "filled")
    })
    .await
    .expect("the order the venue filled was not recorded as filled");
    assert_eq!(outcome.2, Decimal::from(3), "the venue's quantity");
    assert_eq!(outcome.3, Some(Decimal::from(100)), "the venue's price");
    assert_eq!(
        outcome.4, None,
        "no failure reason stays on an executed decision"
    );
    let executions: i64 = s
        .client
        .query_one(
            "SELECT count(*) FROM trade_executions e JOIN trade_decisions d \
             ON d.id = e.trade_decision_id WHERE d.decision_id = $1 \
               AND e.broker_order_id IS NOT NULL",
            &[&decision],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(executions, 1, "one execution, with the broker's order id");
    assert_eq!(
        s.venue.submissions_of(&decision.to_string()),
        1,
        "never resent"
    );
    let filled = s
        .venue
        .order_by_client_id(&decision.to_string())
        .expect("the venue holds the order");
    assert_eq!(filled["status"], "filled");
    s.running.stop().await.unwrap();
    drop(s.db);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_timeout_after_the_venue_filled_is_looked_up_and_recorded_filled() {
    timed_out_after_the_fill("unknown-lookup", false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_timeout_after_the_venue_filled_is_resolved_by_the_streamed_fill() {
    timed_out_after_the_fill("unknown-stream", true).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_500_for_an_order_the_venue_never_took_fails_as_not_received_after_the_grace() {
    let mut s = setup("unknown-500", SimConfig::default(), |c| {
        c.alpaca.recovery_grace_secs = 1;
    })
    .await;
    s.venue.set_faults(Faults {
        fail_next: 1,
        ..Faults::default()
    });
    let decision = submit(&mut s.alpha, buy("five-hundred", "1")).await;
    let outcome = wait_until(WAIT, || async {
        decision_outcome(&s.client, decision)
            .await
            .filter(|o| o.0 == "failed")
    })
    .await
    .expect("the decision was not failed");
    assert_eq!(outcome.1, "rejected");
    assert_eq!(outcome.4.as_deref(), Some("not_received_by_broker"));
    let reason = execution_text(&s.client, decision, "status_reason").await;
    let reason = reason.unwrap_or_default();
    assert!(reason.contains("not found by client order id"), "{reason}");
    assert!(reason.contains("internal server error"), "{reason}");
    assert!(
        s.venue
            .requests()
            .iter()
            .any(|r| r.method == "GET" && r.path == "/v2/orders:by_client_order_id"),
        "it was looked up"
    );
    assert_eq!(
        s.venue.submissions_of(&decision.to_string()),
        1,
        "never resent"
    );
    assert!(s.venue.order_by_client_id(&decision.to_string()).is_none());
    s.running.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_refused_connection_fails_at_once_as_never_received() {
    // a port bound but never listened on: it refuses connections, and it stays ours for the
    // whole test (a port merely freed could be handed to another test's server meanwhile)
    let closed = tokio::net::TcpSocket::new_v4().unwrap();
    closed.bind("127.0.0.1:0".parse().unwrap()).unwrap();
    let base_url = format!("http://{}", closed.local_addr().unwrap());
    let nobody = SimAlpaca::new(SimConfig::default());
    let mut g = gateway_at("unknown-refused", (nobody, base_url), |c| {
        c.alpaca.recovery_grace_secs = 3600;
    })
    .await;
    let decision = submit(&mut g.alpha, buy("refused", "1")).await;
    // at once: well inside the (hour-long) grace a look-up would wait
    let outcome = wait_until(Duration::from_secs(5), || async {
        decision_outcome(&g.client, decision).await
    })
    .await
    .expect("no outcome");
    assert_eq!(outcome.0, "failed");
    assert_eq!(outcome.1, "rejected");
    assert_eq!(outcome.4.as_deref(), Some("not_received_by_broker"));
    let code = execution_text(&g.client, decision, "error_code").await;
    assert_eq!(code.as_deref(), Some("not_sent"));
    g.running.stop().await.unwrap();
    drop(closed);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_streamed_fill_for_a_decision_recorded_failed_is_applied_and_the_correction_kept() {
    let mut s = setup(
        "unknown-correction",
        SimConfig {
            buying_power: Decimal::from(50),
            ..SimConfig::default()
        },
        |_| {},
    )
    .await;
    wait_until(WAIT, || async {
        (s.venue.stream_listeners() == 1).then_some(())
    })
    .await
    .expect("the stream did not connect");
    // 2 x 100 > 50 of buying power: the venue answers 403
    let decision = submit(&mut s.alpha, buy("too-big", "2")).await;
    let outcome = wait_until(WAIT, || async {
        decision_outcome(&s.client, decision).await
    })
    .await
    .expect("no outcome");
    assert_eq!(
        (outcome.0.as_str(), outcome.1.as_str()),
        ("failed", "rejected")
    );

    // ...and yet the broker reports a fill for it: the broker is the truth
    let order_id = Uuid::new_v4();
    let now = chrono::Utc::now().to_rfc3339();
    s.venue
        .push_message(json!({"stream": "trade_updates", "data": {
        "event": "fill", "execution_id": Uuid::new_v4(), "price": "101.5", "qty": "2",
        "position_qty": "2", "timestamp": now,
        "order": {"id": order_id, "client_order_id": decision.to_string(), "symbol": "AAPL",
                  "side": "buy", "qty": "2", "filled_qty": "2", "filled_avg_price": "101.5",
                  "status": "filled", "type": "market", "time_in_force": "day"}}}));
    let outcome = wait_until(WAIT, || async {
        decision_outcome(&s.client, decision)
            .await
            .filter(|o| o.0 == "executed")
    })
    .await
    .expect("the streamed fill was not applied");
    assert_eq!(outcome.1, "filled");
    assert_eq!(outcome.2, Decimal::TWO);
    assert_eq!(outcome.3, Some(Decimal::new(1015, 1)));
    let rows = s
        .client
        .query(
            "SELECT c.entity, c.from_status, c.to_status, c.reason FROM order_state_corrections c \
             JOIN trade_decisions d ON d.id = c.trade_decision_id WHERE d.decision_id = $1 \
             ORDER BY c.id",
            &[&decision],
        )
        .await
        .unwrap();
    let kept: Vec<(String, String, String, String)> = rows
        .iter()
        .map(|r| (r.get(0), r.get(1), r.get(2), r.get(3)))
        .collect();
    assert_eq!(kept.len(), 2, "{kept:?}");
    assert_eq!(
        (kept[0].0.as_str(), kept[0].1.as_str(), kept[0].2.as_str()),
        ("execution", "rejected", "filled")
    );
    assert_eq!(
        (kept[1].0.as_str(), kept[1].1.as_str(), kept[1].2.as_str()),
        ("decision", "failed", "executed")
    );
    assert!(kept[0].3.contains("trade_updates fill"), "{kept:?}");
    assert!(
        kept[1].3.contains("after failed: 403"),
        "the earlier state's reason is kept: {kept:?}"
    );
    let broker_id = execution_text(&s.client, decision, "broker_order_id").await;
    assert_eq!(broker_id, Some(order_id.to_string()));
    s.running.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn api_response_rows_hold_the_venues_json_as_it_sent_it() {
    let mut s = setup(
        "native-bodies",
        SimConfig {
            buying_power: Decimal::from(150),
            ..SimConfig::default()
        },
        |_| {},
    )
    .await;
    let filled = submit(&mut s.alpha, buy("fits", "1")).await;
    let refused = submit(&mut s.alpha, buy("too-big", "5")).await;
    for decision in [filled, refused] {
        wait_until(WAIT, || async {
            decision_outcome(&s.client, decision).await
        })
        .await
        .expect("no outcome");
    }
    let answers: Vec<_> = s
        .venue
        .answers()
        .into_iter()
        .filter(|a| a.method == "POST" && a.path == "/v2/orders")
        .collect();
    assert_eq!(answers.len(), 2);
    for (decision, status) in [(filled, 200i16), (refused, 403)] {
        let row = wait_until(WAIT, || async {
            s.client
                .query_opt(
                    "SELECT body::text, response_meta FROM tradelog \
                     WHERE event_type = 20 AND cl_ord_id = $1 AND response_status = $2",
                    &[&decision.to_string(), &status],
                )
                .await
                .unwrap()
        })
        .await
        .expect("the api_response row was not written");
        let stored: String = row.get(0);
        let meta: Value = row.get(1);
        // the venue's bytes, as PostgreSQL stores any JSON: equal byte for byte, no wrapper
        let sent = answers
            .iter()
            .find(|a| a.status == status as u16)
            .expect("the venue's answer");
        let canonical: String = s
            .client
            .query_one("SELECT $1::text::jsonb::text", &[&sent.body])
            .await
            .unwrap()
            .get(0);
        assert_eq!(stored, canonical);
        assert!(
            sent.body.contains(&decision.to_string()) || status == 403,
            "the answer belongs to the order: {}",
            sent.body
        );
        assert_eq!(meta["endpoint"], "/v2/orders");
        assert_eq!(meta["status_code"], status);
        assert!(meta["duration_ms"].is_u64(), "{meta}");
        assert!(
            meta["rate_limit"]["x-ratelimit-limit"].is_string(),
            "the rate-limit headers are kept beside the body: {meta}"
        );
    }
    s.running.stop().await.unwrap();
}
