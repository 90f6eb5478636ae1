//! `cargo bench --bench reports`: a generated year (`tradegate seed-data`'s generator; by
//! default 365 days at scale 10: about 1 million decisions and executions, 2 million payloads,
//! 10 million trade-log events over 500 symbols) in a private durable cluster, then each
//! report's latency, p50 and p99, against the floor measured in the same run: a primary-key
//! look-up of one decision; then `audit verify` over the whole year in rows per second, against
//! a bare sequential read of the same tables. Environment: TRADEGATE_BENCH_DAYS (365),
//! TRADEGATE_BENCH_SCALE (10).
#![allow(clippy::float_arithmetic)] // statistics of timings, not money

#[path = "support/mod.rs"]
mod support;

use std::time::Instant;

use tradegate::report::{ReportRequest, produce};
use tradegate_actors::store::reports::Range;
use uuid::Uuid;

fn env_or(name: &str, default: u32) -> u32 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    let i = ((sorted.len() - 1) as f64 * p).round() as usize;
    sorted[i]
}

/// p50 and p99 in milliseconds of `times` (seconds).
fn stats(mut times: Vec<f64>) -> (f64, f64) {
    times.sort_by(f64::total_cmp);
    (
        percentile(&times, 0.5) * 1e3,
        percentile(&times, 0.99) * 1e3,
    )
}

fn main() {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(run(
        env_or("TRADEGATE_BENCH_DAYS", 365),
        env_or("TRADEGATE_BENCH_SCALE", 10),
    ));
}

async fn run(days: u32, scale: u32) {
    let settings = [
        ("shared_buffers", "512MB"),
        ("max_wal_size", "8GB"),
        ("checkpoint_timeout", "30min"),
    ]
    .iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect();
    let (_cluster, conninfo, mut client, _) =
        support::bench_database("bench-reports", settings).await;
    let started = Instant::now();
    let seeded = tradegate::commands::seed::seed(&mut client, days, scale, |n, day| {
        if n % 30 == 0 {
            eprintln!(
                "seeded {n}/{days} days (up to {day}) in {:.0?}",
                started.elapsed()
            );
        }
    })
    .await
    .unwrap();
    // a year-old database is at rest: checkpointed, not still flushing the generator's writes
    client.batch_execute("CHECKPOINT").await.unwrap();
    let count = |table: &str| format!("SELECT count(*) FROM {table}");
    let mut sizes = Vec::new();
    for table in [
        "trade_decisions",
        "trade_executions",
        "api_payloads",
        "tradelog",
    ] {
        let n: i64 = client.query_one(&count(table), &[]).await.unwrap().get(0);
        sizes.push(format!("{table} {n}"));
    }
    println!(
        "seeded {days} days at scale {scale} in {:.1} s: {}",
        started.elapsed().as_secs_f64(),
        sizes.join(", ")
    );
    let range = Range::days(seeded.first_day.unwrap(), seeded.last_day.unwrap()).unwrap();
    let decisions: Vec<(i64, Uuid)> = client
        .query(
            "SELECT id, decision_id FROM trade_decisions ORDER BY hashtext(decision_id::text) \
             LIMIT 200",
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect();
    // the floor: one decision by primary key
    let mut floor = Vec::new();
    for (id, _) in decisions.iter().cycle().take(400) {
        let t = Instant::now();
        client
            .query_one("SELECT * FROM trade_decisions WHERE id = $1", &[id])
            .await
            .unwrap();
        floor.push(t.elapsed().as_secs_f64());
    }
    let (floor_p50, _) = stats(floor);
    // warm the caches the way a running gateway has them: one report of each kind, on inputs
    // the measured runs do not use
    produce(&client, &ReportRequest::Failures(range))
        .await
        .unwrap();
    produce(
        &client,
        &ReportRequest::Symbol {
            symbol: "S499".into(),
            range,
            limit: 100,
        },
    )
    .await
    .unwrap();
    produce(
        &client,
        &ReportRequest::Decision(decisions[decisions.len() - 1].1),
    )
    .await
    .unwrap();

    let mut symbol_times = Vec::new();
    for i in 0..100u32 {
        let symbol = format!("S{:03}", (i * 37) % 500);
        let t = Instant::now();
        produce(
            &client,
            &ReportRequest::Symbol {
                symbol,
                range,
                limit: 100,
            },
        )
        .await
        .unwrap();
        symbol_times.push(t.elapsed().as_secs_f64());
    }
    let mut lineage_times = Vec::new();
    for (_, decision) in decisions
        .iter()
        .take(decisions.len().saturating_sub(1).min(100))
    {
        let t = Instant::now();
        produce(&client, &ReportRequest::Decision(*decision))
            .await
            .unwrap();
        lineage_times.push(t.elapsed().as_secs_f64());
    }
    let mut failure_times = Vec::new();
    for _ in 0..10 {
        let t = Instant::now();
        produce(&client, &ReportRequest::Failures(range))
            .await
            .unwrap();
        failure_times.push(t.elapsed().as_secs_f64());
    }
    let (s50, s99) = stats(symbol_times);
    let (l50, l99) = stats(lineage_times);
    let (f50, f99) = stats(failure_times);
    println!(
        "symbol-year (100 symbols): p50 {s50:.2} ms, p99 {s99:.2} ms = {:.0}x the floor",
        s99 / floor_p50
    );
    println!(
        "lineage (100 decisions): p50 {l50:.2} ms, p99 {l99:.2} ms = {:.0}x the floor",
        l99 / floor_p50
    );
    println!("failures-year (10 runs): p50 {f50:.2} ms, p99 {f99:.2} ms");
    println!("pk floor (400 look-ups): p50 {floor_p50:.3} ms");
    println!(
        "goals: symbol-year and lineage p99 < 50 ms ({}), failures-year p99 < 500 ms ({})",
        if s99 < 50.0 && l99 < 50.0 {
            "met"
        } else {
            "NOT met"
        },
        if f99 < 500.0 { "met" } else { "NOT met" }
    );
    println!(
        "reports: symbol-year p99 {s99:.2} ms, lineage p99 {l99:.2} ms, failures-year p99 {f99:.2} ms, pk floor {floor_p50:.3} ms"
    );
    verify_year(&mut client, &conninfo).await;
}

/// `audit verify` over the generated year (sealed first, as a running gateway would have it)
/// against the floor: a bare sequential read of the same tables, every row sent to the client.
async fn verify_year(client: &mut tokio_postgres::Client, conninfo: &str) {
    use futures_util::{StreamExt, pin_mut};
    use tradegate_actors::store::audit::{self, COVERED, SealKind, VerifyOptions};
    audit::seals::seal(&*client, SealKind::Interval, None)
        .await
        .unwrap();
    client.batch_execute("CHECKPOINT").await.unwrap();
    let second = tradegate::postgres::connect(conninfo, support::TIMEOUT)
        .await
        .unwrap();
    // the floor reads as verify does: the trade log on a second connection beside the rest
    let read = async |client: &tokio_postgres::Client, big: bool| {
        let mut rows = 0u64;
        for covered in COVERED.iter().filter(|c| (c.table == "tradelog") == big) {
            let sql = format!("SELECT * FROM {}", covered.table);
            let stream = client
                .query_raw(&sql, std::iter::empty::<i32>())
                .await
                .unwrap();
            pin_mut!(stream);
            while let Some(row) = stream.next().await {
                row.unwrap();
                rows += 1;
            }
        }
        rows
    };
    let bare_read = async || {
        let (a, b) = futures_util::future::join(read(client, false), read(&second, true)).await;
        a + b
    };
    // warm both the same way: one bare read first
    bare_read().await;
    let t = Instant::now();
    let rows = bare_read().await;
    let bare_secs = t.elapsed().as_secs_f64();
    let mut second = second;
    let t = Instant::now();
    let report = audit::verify::verify(client, Some(&mut second), &VerifyOptions::default())
        .await
        .unwrap();
    let verify_secs = t.elapsed().as_secs_f64();
    assert!(report.is_clean(), "{:#?}", report.findings);
    assert_eq!(report.rows() as u64, rows, "verify checked every row");
    let (a, b) = (rows as f64 / verify_secs, rows as f64 / bare_secs);
    println!(
        "audit verify: {rows} rows and {} seals in {verify_secs:.1} s; bare read {bare_secs:.1} s; goal >= 0.5x ({})",
        report.seals_checked,
        if a / b >= 0.5 { "met" } else { "NOT met" }
    );
    println!(
        "audit verify: {a:.0} rows/s, bare read: {b:.0} rows/s, ratio: {:.2}",
        a / b
    );
}
