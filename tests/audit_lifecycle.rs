//! The order lifecycle export (`tradegate audit lifecycle`) after real trading through the
//! simulated Alpaca venue: a filled order, a resting order cancelled on the strategy's request
//! and a refused order each show their events in order, with the gateway's and the broker's
//! ids and microsecond UTC times; a bad range is refused clearly.

mod common;

use std::time::Duration;

use common::orders::{decision_outcome, gateway_at, start_venue};
use serde_json::{Value, json};
use tradegate::sim::alpaca::SimConfig;

const WAIT: Duration = Duration::from_secs(30);

async fn until_status(gw: &common::orders::Gateway, decision: &str, want: &str) {
    let id = uuid::Uuid::parse_str(decision).unwrap();
    let reached = common::wait_until(WAIT, || async {
        let (_, status, ..) = decision_outcome(&gw.client, id).await?;
        (status == want).then_some(())
    })
    .await;
    assert!(reached.is_some(), "{decision} never became {want}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn every_event_of_an_orders_life_is_exported_in_order_with_its_ids() {
    let mut gw = gateway_at(
        "audit-lifecycle",
        start_venue(SimConfig::default()).await,
        |c| c.orders.risk.max_qty = Some(rust_decimal::Decimal::from(2000)),
    )
    .await;
    let mut submit = async |order: Value| {
        let id = order["request_id"].as_str().unwrap().to_string();
        gw.alpha.send(order).await;
        gw.alpha.answer(&id).await
    };
    let filled = submit(
        json!({"type": "submit_order", "request_id": "f", "strategy": "alpha",
        "symbol": "AAPL", "side": "buy", "qty": "3", "order_type": "market",
        "time_in_force": "day"}),
    )
    .await;
    let filled = filled["decision_id"].as_str().unwrap().to_string();
    let resting = submit(
        json!({"type": "submit_order", "request_id": "r", "strategy": "alpha",
        "symbol": "MSFT", "side": "buy", "qty": "2", "order_type": "limit",
        "limit_price": "1", "time_in_force": "gtc"}),
    )
    .await;
    let resting = resting["decision_id"].as_str().unwrap().to_string();
    let refused = submit(
        json!({"type": "submit_order", "request_id": "big", "strategy": "alpha",
        "symbol": "AAPL", "side": "buy", "qty": "2001", "order_type": "market",
        "time_in_force": "day"}),
    )
    .await;
    assert_eq!(refused["type"], "reject", "{refused}");
    until_status(&gw, &filled, "filled").await;
    common::wait_until(WAIT, || async {
        common::orders::execution_text(
            &gw.client,
            uuid::Uuid::parse_str(&resting).unwrap(),
            "broker_order_id",
        )
        .await
    })
    .await
    .expect("the resting order reached the venue");
    gw.alpha
        .send(json!({"type": "cancel_order", "request_id": "c", "decision_id": resting}))
        .await;
    until_status(&gw, &resting, "cancelled").await;

    let dir = common::scratch_dir("audit-lifecycle-cli");
    let run = |args: &[&str]| {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_tradegate"))
            .env("DATABASE_URL", &gw.db.conninfo)
            .env("RUST_LOG", "warn")
            .current_dir(&dir)
            .args(args)
            .output()
            .unwrap();
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    let today = chrono::Utc::now().date_naive().to_string();
    let file = dir.join("lifecycle.jsonl");
    let (code, _, err) = run(&[
        "audit",
        "lifecycle",
        "--day",
        &today,
        "--timezone",
        "UTC",
        "--out",
        file.to_str().unwrap(),
    ]);
    assert_eq!(code, Some(0), "{err}");
    let events: Vec<Value> = std::fs::read_to_string(&file)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert!(
        err.contains(&format!("{} lifecycle event(s)", events.len())),
        "{err}"
    );
    let stamp = regex_lite(&events);
    assert!(
        stamp,
        "every event_at is UTC to the microsecond: {events:#?}"
    );
    let of = |decision: &str| -> Vec<String> {
        events
            .iter()
            .filter(|e| e["decision_id"] == decision)
            .map(|e| e["event"].as_str().unwrap().to_string())
            .collect()
    };
    // the filled order: decided, routed, accepted by the broker, filled
    let life = of(&filled);
    assert_eq!(life[..2], ["new_order", "route"], "{life:?}");
    assert!(life.contains(&"fill".to_string()), "{life:?}");
    let fills: Vec<&Value> = events
        .iter()
        .filter(|e| e["decision_id"] == filled.as_str() && e["event"] == "fill")
        .collect();
    let qty: rust_decimal::Decimal = fills
        .iter()
        .map(|f| {
            f["fill_quantity"]
                .as_str()
                .unwrap()
                .parse::<rust_decimal::Decimal>()
                .unwrap()
        })
        .sum();
    assert_eq!(qty, rust_decimal::Decimal::from(3), "{fills:?}");
    let route = events
        .iter()
        .find(|e| e["decision_id"] == filled.as_str() && e["event"] == "route")
        .unwrap();
    assert_eq!(route["client_order_id"], filled.as_str());
    assert_eq!(route["symbol"], "AAPL");
    assert_eq!(route["strategy"], "alpha");
    assert!(
        route["broker_order_id"]
            .as_str()
            .is_some_and(|s| !s.is_empty()),
        "{route}"
    );
    assert_eq!(fills[0]["broker_order_id"], route["broker_order_id"]);
    // the cancelled one: its cancel request before the broker's cancel
    let life = of(&resting);
    let at = |name: &str| life.iter().position(|e| e == name);
    assert_eq!(life[..2], ["new_order", "route"], "{life:?}");
    assert!(
        at("cancel_request").unwrap() < at("cancel").unwrap(),
        "{life:?}"
    );
    // the refused order, with its reason
    let refusal = events
        .iter()
        .find(|e| e["event"] == "refusal" && e["quantity"] == "2001")
        .unwrap_or_else(|| panic!("the refusal: {events:#?}"));
    assert_eq!(refusal["reason_code"], "risk.max_qty");
    assert_eq!(refusal["symbol"], "AAPL");
    assert_eq!(refusal["strategy"], "alpha");
    assert!(
        refusal["request"].is_object(),
        "the refused order as received: {refusal}"
    );
    // in time order
    let times: Vec<&str> = events
        .iter()
        .map(|e| e["event_at"].as_str().unwrap())
        .collect();
    let mut sorted = times.clone();
    sorted.sort_unstable();
    assert_eq!(times, sorted);
    // to standard output, and a range the wrong way round refused
    let (code, out, _) = run(&[
        "audit",
        "lifecycle",
        "--from",
        &today,
        "--to",
        &today,
        "--timezone",
        "UTC",
    ]);
    assert_eq!(code, Some(0));
    assert_eq!(out.lines().count(), events.len());
    let (code, _, err) = run(&[
        "audit",
        "lifecycle",
        "--from",
        "2026-12-02",
        "--to",
        "2026-12-01",
    ]);
    assert_eq!(code, Some(1));
    assert!(err.contains("is after"), "{err}");
    let (code, _, err) = run(&[
        "audit",
        "lifecycle",
        "--day",
        &today,
        "--timezone",
        "Mars/Base",
    ]);
    assert_eq!(code, Some(1));
    assert!(err.contains("--timezone"), "{err}");
    gw.running.stop().await.unwrap();
}

/// Whether every event's time reads `YYYY-MM-DDTHH:MM:SS.ffffffZ`.
fn regex_lite(events: &[Value]) -> bool {
    !events.is_empty()
        && events.iter().all(|e| {
            let t = e["event_at"].as_str().unwrap_or("");
            t.len() == 27
                && t.ends_with('Z')
                && chrono::NaiveDateTime::parse_from_str(&t[..26], "%Y-%m-%dT%H:%M:%S%.6f").is_ok()
        })
}
