//! `tradegate tradelog load`: pushes synthetic execution events through the real trade-log
//! pipeline (producer handle, writer, PostgreSQL, spill and replay), to size a deployment or to
//! exercise it under faults. Event ids are derived from a seed, so a run can be checked
//! afterwards.

use std::time::{Duration, Instant};

use anyhow::Result;
use rust_decimal::Decimal;
use tradegate_actors::domain::{ExecutionFields, OrderIds, RawJson, Side, TradeLogEvent};
use uuid::Uuid;

use crate::app::Running;
use crate::config::Config;

/// The event id of synthetic event `i` of a run with `seed`.
pub fn event_id(seed: u64, i: u64) -> Uuid {
    Uuid::from_u64_pair(seed, i)
}

/// Synthetic execution event `i` of a run with `seed`: a body shaped like the trade-log spec's
/// execution example (about 500 bytes) and exact decimals.
pub fn synthetic_event(seed: u64, i: u64) -> TradeLogEvent {
    let body = format!(
        r#"{{"timestamp":1737485965222000,"market_id":10042,"account_id":7,"exec_type":"XTrade","side":"Buy","native_ord_id":"{seed}-{i}","cl_ord_id":{i},"orig_cl_ord_id":-1,"ord_status":"OStatusPartiallyFilled","last_qty":0.4,"last_px":42000.500000000000000001,"leaves_qty":0.6,"ord_qty":1.0,"ord_price":42000.5,"ord_mode":"MLimit","tif":"TifGoodTillCancel","fee":0.0002,"native_execution_id":"{seed}-{i}","metadata":{{"load_seed":{seed},"seq":{i}}},"is_taker":false}}"#
    );
    let ids = OrderIds {
        cl_ord_id: Some(format!("load-{seed}-{i}")),
        native_ord_id: Some(format!("{seed}-{i}")),
        market_id: Some(10042),
        account_id: Some("load".into()),
        symbol: Some("LOAD".into()),
        ..OrderIds::default()
    };
    let exec = ExecutionFields {
        side: Some(Side::Buy),
        last_px: Some(Decimal::new(420_005, 1)),
        last_qty: Some(Decimal::new(4, 1)),
        leaves_qty: Some(Decimal::new(6, 1)),
        fee: Some(Decimal::new(2, 4)),
        ..ExecutionFields::default()
    };
    // the body is built from numbers and fixed text, so it is JSON
    let body = RawJson::parse(body).unwrap_or_default();
    let mut event = TradeLogEvent::api_event_execution(&ids, &exec, body).with_source("load");
    event.event_id = event_id(seed, i);
    event
}

/// Starts the gateway, pushes `events` events at `rate` per second (0: as fast as possible),
/// flushes, prints the writer's statistics as JSON, and stops.
pub async fn run(config: &Config, events: u64, rate: u64, seed: u64) -> Result<()> {
    let running = Running::start(config, config.api.listen).await?;
    let log = running.trade_log().clone();
    let started = Instant::now();
    let pushed = tokio::task::spawn_blocking(move || {
        for i in 0..events {
            if rate > 0 {
                let due_nanos = u128::from(i) * 1_000_000_000 / u128::from(rate);
                let due = Duration::from_nanos(u64::try_from(due_nanos).unwrap_or(u64::MAX));
                if let Some(wait) = due.checked_sub(started.elapsed()) {
                    std::thread::sleep(wait);
                }
            }
            log.log(synthetic_event(seed, i));
        }
        events
    })
    .await?;
    let stats = running.flush_trade_log().await;
    let elapsed = started.elapsed();
    let dropped = running.trade_log().dropped_total();
    running.stop().await?;
    let stats = stats?;
    println!(
        "{}",
        serde_json::json!({
            "events": pushed,
            "seconds": elapsed.as_secs_f64(),
            "dropped_on_overflow": dropped,
            "writer": stats,
        })
    );
    Ok(())
}
