//! `cargo bench --bench ingestion`: what logging a data ingestion run costs, against the floor of
//! one bare `INSERT ... RETURNING` round trip, all measured in one run on one private, durable
//! cluster (fsync and synchronous commit on, the server's defaults).
//!
//! (a) run overhead: `start_run` + `complete` through the IngestionLogger actor (two commits);
//! (b) one batch of 10,000 new records through the actor (one statement, one commit);
//! (c) the floor: a prepared `INSERT INTO t (v) VALUES ($1) RETURNING id` on a plain connection
//!     (one commit).
//!
//! Each is timed many times (`TRADEGATE_BENCH_ROUNDS` scales the counts); the medians make the
//! last line, `ingestion: run overhead <a> ms, 10k records <b> ms, insert floor <c> ms`, and the
//! p99s and ratios to the floor are printed above it.

// Percentiles and ratios of timings are statistics, not money.
#![allow(clippy::float_arithmetic)]

use std::time::{Duration, Instant};

use tradegate_actors::domain::{NewRun, RecordOperation, RunCounts, RunRecord};
use tradegate_actors::gateway::{ChildSpec, Gateway, RestartPolicy};
use tradegate_actors::ingestion_logger::{
    IngestionClient, IngestionConfig, IngestionLogger, IngestionLoggerArgs,
};

#[path = "support/mod.rs"]
mod support;

fn main() {
    let rounds: u32 = std::env::var("TRADEGATE_BENCH_ROUNDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(run(rounds.max(1)));
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1_000.0
}

/// (p50, p99) in milliseconds.
fn percentiles(mut samples: Vec<Duration>) -> (f64, f64) {
    samples.sort();
    let at = |q: f64| {
        let i = ((samples.len() - 1) as f64 * q).round() as usize;
        ms(samples[i])
    };
    (at(0.50), at(0.99))
}

async fn run(rounds: u32) {
    let (mut cluster, conninfo, client, _) =
        support::bench_database("bench-ingestion", Vec::new()).await;
    let timeout = support::TIMEOUT;
    client
        .batch_execute("CREATE TABLE floor (id BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY, v TEXT NOT NULL)")
        .await
        .unwrap();

    let pool = tradegate::database::pool(&conninfo, 4, timeout).unwrap();
    let args = IngestionLoggerArgs {
        pool,
        config: IngestionConfig::default(),
    };
    let gateway = Gateway::start(
        vec![ChildSpec::new("bench_ingestion_logger", move || {
            (IngestionLogger, args.clone())
        })],
        RestartPolicy::default(),
    )
    .await
    .unwrap();
    let logger = IngestionClient::new("bench_ingestion_logger");

    let runs = 300 * rounds;
    let batches = 30 * rounds;
    let inserts = 600 * rounds;
    let counts = Some(RunCounts {
        fetched: 1,
        created: 1,
        ..RunCounts::default()
    });
    let insert = client
        .prepare("INSERT INTO floor (v) VALUES ($1) RETURNING id")
        .await
        .unwrap();
    // warm-up: connections, prepared statements, caches
    for i in 0..20 {
        let run = logger
            .start_run(NewRun::new("warm", "bench"))
            .await
            .unwrap();
        logger.complete(run.run_id, counts).await.unwrap();
        client
            .query_one(&insert, &[&format!("w{i}")])
            .await
            .unwrap();
    }

    // interleaved, so that the machine's noise falls on all three alike
    let mut run_samples = Vec::with_capacity(runs as usize);
    let mut floor_samples = Vec::with_capacity(inserts as usize);
    for i in 0..runs {
        let started = Instant::now();
        let run = logger
            .start_run(NewRun::new("bench.task", "bench"))
            .await
            .unwrap();
        logger.complete(run.run_id, counts).await.unwrap();
        run_samples.push(started.elapsed());
        for j in 0..2 {
            let started = Instant::now();
            client
                .query_one(&insert, &[&format!("{i}-{j}")])
                .await
                .unwrap();
            floor_samples.push(started.elapsed());
        }
    }
    let mut batch_samples = Vec::with_capacity(batches as usize);
    let run = logger
        .start_run(NewRun::new("bench.records", "bench"))
        .await
        .unwrap();
    for b in 0..batches {
        let records: Vec<RunRecord> = (0..10_000)
            .map(|i| {
                RunRecord::new("QuiverTrade", format!("{b}-{i}"), RecordOperation::Created)
                    .with_symbol(["AAPL", "MSFT", "NVDA", "TSLA"][i % 4])
            })
            .collect();
        let started = Instant::now();
        let outcome = logger.record_records(run.run_id, records).await.unwrap();
        batch_samples.push(started.elapsed());
        assert_eq!(outcome.inserted, 10_000);
    }
    logger.complete(run.run_id, None).await.unwrap();

    let (run_p50, run_p99) = percentiles(run_samples);
    let (batch_p50, batch_p99) = percentiles(batch_samples);
    let (floor_p50, floor_p99) = percentiles(floor_samples);
    println!("runs (start + complete): {runs}, p50 {run_p50:.2} ms, p99 {run_p99:.2} ms");
    println!("10k-record batches: {batches}, p50 {batch_p50:.2} ms, p99 {batch_p99:.2} ms");
    println!("insert floor: {inserts}, p50 {floor_p50:.2} ms, p99 {floor_p99:.2} ms");
    println!(
        "ratios to the floor (p50): run {:.2}x, 10k records {:.2}x",
        run_p50 / floor_p50,
        batch_p50 / floor_p50
    );
    println!(
        "ingestion: run overhead {run_p50:.2} ms, 10k records {batch_p50:.2} ms, insert floor {floor_p50:.2} ms"
    );
    gateway.shutdown().await.unwrap();
    drop(client);
    let _ = tokio::task::spawn_blocking(move || cluster.stop()).await;
}
