//! `cargo bench --bench trade_log`: the trade log's throughput against the physical baseline,
//! measured in one run on one private cluster and one table shape.
//!
//! (a) tradegate end to end: N events pushed through the producer handle until every row is
//!     committed (binary COPY batches of the default size and age; `overflow = block` so that
//!     none is dropped and every row is counted);
//! (b) `psql \copy` of the same rows, as text, into the same (truncated) table, bare: with
//!     `session_replication_role = replica`, so without the audit journal's trigger (the
//!     physical baseline; tradegate's side pays for its tamper evidence);
//! (c) the producer's enqueue latency (default settings: drop-oldest queue, writer running).
//!
//! N is 1,000,000 unless `TRADEGATE_BENCH_EVENTS` says otherwise. The last line reads
//! `trade_log: <a> rows/s, psql copy: <b> rows/s, ratio: <a/b>, enqueue p99: <n> ns`.
//!
//! The events are built before timing starts; (a) covers the producer pushes, batching,
//! encoding, COPY and commits, the audit journal's hashing of every row, and sealing them all
//! (one seal at the end, inside the timed window). Large batches (a backlog) are written on two connections.

// Rates and percentiles of timings are statistics, not money.
#![allow(clippy::float_arithmetic)]

use std::io::Write;
use std::process::Command;
use std::time::{Duration, Instant};

use tradegate_actors::domain::TradeLogEvent;
use tradegate_actors::gateway::{ChildSpec, Gateway, RestartPolicy};
use tradegate_actors::trade_log_writer::{
    Overflow, TradeLog, TradeLogConfig, TradeLogWriter, TradeLogWriterArgs, TradeLogWriterMessage,
};

const COLUMNS: &str = "event_id, local_ts_us, exchange_ts_us, event_type, req_id, cl_ord_id, \
    native_ord_id, market_id, account_id, symbol, exec_type, ord_status, side, is_taker, last_px, \
    last_qty, leaves_qty, ord_px, ord_qty, fee, response_status, error_code, error_message, \
    source, body";

use std::path::PathBuf;
use tradegate::postgres::find_server_binaries;

#[path = "support/mod.rs"]
mod support;

fn main() {
    let events: u64 = std::env::var("TRADEGATE_BENCH_EVENTS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1_000_000);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(run(events));
}

async fn run(events: u64) {
    // a durable cluster with the server's default settings: fsync and synchronous commit on
    let (cluster, conninfo, client, dir) =
        support::bench_database("bench-trade-log", Vec::new()).await;

    eprintln!("generating {events} events");
    let batch: Vec<TradeLogEvent> = (0..events)
        .map(|i| tradegate::commands::load::synthetic_event(1, i))
        .collect();
    let body_bytes: usize =
        batch.iter().map(|e| e.body.as_str().len()).sum::<usize>() / batch.len();
    eprintln!("average body: {body_bytes} bytes");

    // (b) the physical baseline: psql \copy of the same rows as text
    let copy_file = dir.join("rows.copy");
    write_text_copy(&copy_file, &batch);
    let psql = find_server_binaries(
        std::env::var_os("PATH").as_deref(),
        &[std::path::Path::new("/usr/lib/postgresql")],
    )
    .unwrap();
    // the psql beside the real server binaries (PATH may hold only symlinks to initdb/pg_ctl)
    let psql = std::fs::canonicalize(psql.join("initdb"))
        .ok()
        .and_then(|p| p.parent().map(|d| d.join("psql")))
        .filter(|p| p.is_file())
        .unwrap_or_else(|| PathBuf::from("psql"));
    let socket = dir.join("pg");
    let started = Instant::now();
    let status = Command::new(&psql)
        .env("PGOPTIONS", "-c session_replication_role=replica")
        .args(["-X", "-q", "-v", "ON_ERROR_STOP=1", "-h"])
        .arg(&socket)
        .args(["-U", "postgres", "-d", "bench", "-c"])
        .arg(format!(
            "\\copy tradelog ({COLUMNS}) FROM '{}'",
            copy_file.display()
        ))
        .status()
        .unwrap_or_else(|e| panic!("running {}: {e}", psql.display()));
    let psql_secs = started.elapsed().as_secs_f64();
    assert!(status.success(), "psql \\copy failed");
    assert_eq!(count(&client).await, events as i64);
    client.batch_execute("TRUNCATE tradelog").await.unwrap();
    // what the set-up wrote is sealed first: the timed seal covers the trade log's rows only
    tradegate_actors::store::audit::seals::seal(
        &client,
        tradegate_actors::store::audit::SealKind::Interval,
        None,
    )
    .await
    .unwrap();
    client.batch_execute("CHECKPOINT").await.unwrap();

    // (a) tradegate end to end
    let config = TradeLogConfig {
        batch_size: std::env::var("TRADEGATE_BENCH_BATCH")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(TradeLogConfig::default().batch_size),
        queue_capacity: std::env::var("TRADEGATE_BENCH_QUEUE")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(TradeLogConfig::default().queue_capacity),
        overflow: Overflow::Block,
        spill_dir: dir.join("spill"),
        export_dir: dir.join("exports"),
        ..TradeLogConfig::default()
    };
    let (log, gateway) = start_writer("bench_writer", config, &conninfo).await;
    let writer = ractor::ActorRef::<TradeLogWriterMessage>::where_is("bench_writer").unwrap();
    let producer_log = log.clone();
    let started = Instant::now();
    tokio::task::spawn_blocking(move || {
        for event in batch {
            producer_log.log(event);
        }
    })
    .await
    .unwrap();
    let stats = ractor::call_t!(
        writer,
        |reply| TradeLogWriterMessage::Flush { reply },
        600_000
    )
    .unwrap();
    let flushed_secs = started.elapsed().as_secs_f64();
    let sealed = tradegate_actors::store::audit::seals::seal(
        &client,
        tradegate_actors::store::audit::SealKind::Interval,
        None,
    )
    .await
    .unwrap();
    let tradegate_secs = started.elapsed().as_secs_f64();
    eprintln!(
        "written in {flushed_secs:.2}s, then sealed in {:.2}s",
        tradegate_secs - flushed_secs
    );
    assert_eq!(
        sealed.map(|s| s.rows),
        Some(events as i64),
        "every row sealed"
    );
    assert_eq!(
        count(&client).await,
        events as i64,
        "rows missing after the run: {stats:?}"
    );
    assert_eq!(stats.spilled, 0, "{stats:?}");

    // (c) enqueue latency with the default settings, while the writer drains
    client.batch_execute("TRUNCATE tradelog").await.unwrap();
    gateway.shutdown().await.unwrap();
    let latency = enqueue_latency(&conninfo, &dir, 200_000.min(events)).await;

    let a = events as f64 / tradegate_secs;
    let b = events as f64 / psql_secs;
    eprintln!(
        "tradegate: {events} rows in {tradegate_secs:.2}s ({} batches); psql \\copy: {psql_secs:.2}s; enqueue p50 {} ns",
        stats.batches, latency.0
    );
    tokio::task::spawn_blocking(move || drop(cluster))
        .await
        .unwrap();
    let _ = std::fs::remove_dir_all(&dir);
    println!(
        "trade_log: {a:.0} rows/s, psql copy: {b:.0} rows/s, ratio: {:.2}, enqueue p99: {} ns",
        a / b,
        latency.1
    );
}

/// A TradeLogWriter under a Gateway of its own, registered as `name`, and its queue.
async fn start_writer(
    name: &str,
    config: TradeLogConfig,
    conninfo: &str,
) -> (TradeLog, tradegate_actors::gateway::GatewayHandle) {
    let log = TradeLog::new(config.queue_capacity, config.overflow);
    let args = TradeLogWriterArgs {
        log: log.clone(),
        config,
        conninfo: conninfo.to_string(),
    };
    let gateway = Gateway::start(
        vec![ChildSpec::new(name, move || (TradeLogWriter, args.clone()))],
        RestartPolicy::default(),
    )
    .await
    .unwrap();
    (log, gateway)
}

async fn count(client: &tokio_postgres::Client) -> i64 {
    client
        .query_one("SELECT count(*) FROM tradelog", &[])
        .await
        .unwrap()
        .get(0)
}

/// p50 and p99 of `TradeLog::log` in nanoseconds with the default settings (drop-oldest
/// queue of 65,536) and a writer draining it: bursts of 10,000 events, each pushed once the
/// writer has emptied the queue, so that the queue never overflows. The overflow path (queue
/// full, oldest dropped) is measured too and reported on stderr.
async fn enqueue_latency(conninfo: &str, dir: &std::path::Path, n: u64) -> (u64, u64) {
    let config = TradeLogConfig {
        spill_dir: dir.join("spill-latency"),
        export_dir: dir.join("exports"),
        ..TradeLogConfig::default()
    };
    let capacity = config.queue_capacity as u64;
    let (log, gateway) = start_writer("bench_latency_writer", config, conninfo).await;
    let events: Vec<TradeLogEvent> = (0..n)
        .map(|i| tradegate::commands::load::synthetic_event(2, i))
        .collect();
    let producer = log.clone();
    let mut samples = tokio::task::spawn_blocking(move || {
        let mut samples = Vec::with_capacity(events.len());
        let mut events = events.into_iter().peekable();
        while events.peek().is_some() {
            while producer.queued() > 0 {
                std::thread::sleep(Duration::from_millis(1));
            }
            for event in events.by_ref().take(10_000) {
                let t = Instant::now();
                producer.log(event);
                samples.push(u64::try_from(t.elapsed().as_nanos()).unwrap_or(u64::MAX));
            }
        }
        samples
    })
    .await
    .unwrap();
    assert_eq!(
        log.dropped_total(),
        0,
        "the latency bursts overflowed the queue"
    );

    // the overflow path: a flood twice the queue's size
    let flood: Vec<TradeLogEvent> = (0..capacity * 2)
        .map(|i| tradegate::commands::load::synthetic_event(3, i))
        .collect();
    let producer = log.clone();
    let mut overflow = tokio::task::spawn_blocking(move || {
        let mut samples = Vec::with_capacity(flood.len());
        for event in flood {
            let t = Instant::now();
            producer.log(event);
            samples.push(u64::try_from(t.elapsed().as_nanos()).unwrap_or(u64::MAX));
        }
        samples
    })
    .await
    .unwrap();
    gateway.shutdown().await.unwrap();
    let percentile = |samples: &mut Vec<u64>, q: f64| {
        samples.sort_unstable();
        samples[((samples.len() as f64 * q) as usize).min(samples.len() - 1)]
    };
    eprintln!(
        "enqueue under overflow (flood of {} into {capacity}, {} dropped): p50 {} ns, p99 {} ns",
        capacity * 2,
        log.dropped_total(),
        percentile(&mut overflow, 0.50),
        percentile(&mut overflow, 0.99)
    );
    (
        percentile(&mut samples, 0.50),
        percentile(&mut samples, 0.99),
    )
}

/// The rows in PostgreSQL's text COPY format.
fn write_text_copy(path: &std::path::Path, events: &[TradeLogEvent]) {
    let mut out = std::io::BufWriter::new(std::fs::File::create(path).unwrap());
    fn field(out: &mut impl Write, value: Option<String>, last: bool) {
        match value {
            None => out.write_all(b"\\N").unwrap(),
            Some(v) => {
                let escaped = v
                    .replace('\\', "\\\\")
                    .replace('\n', "\\n")
                    .replace('\r', "\\r")
                    .replace('\t', "\\t");
                out.write_all(escaped.as_bytes()).unwrap();
            }
        }
        out.write_all(if last { b"\n" } else { b"\t" }).unwrap();
    }
    for e in events {
        let s = |v: &Option<String>| v.clone();
        let n = |v: Option<i64>| v.map(|x| x.to_string());
        let d = |v: Option<rust_decimal::Decimal>| v.map(|x| x.to_string());
        let values = [
            Some(e.event_id.to_string()),
            Some(e.local_ts_us.to_string()),
            n(e.exchange_ts_us),
            Some(e.event_type.code().to_string()),
            n(e.req_id),
            s(&e.cl_ord_id),
            s(&e.native_ord_id),
            n(e.market_id),
            s(&e.account_id),
            s(&e.symbol),
            e.exec_type.map(|x| x.to_string()),
            e.ord_status.map(|x| x.to_string()),
            e.side.map(|x| i16::from(x).to_string()),
            e.is_taker.map(|x| if x { "t".into() } else { "f".into() }),
            d(e.last_px),
            d(e.last_qty),
            d(e.leaves_qty),
            d(e.ord_px),
            d(e.ord_qty),
            d(e.fee),
            e.response_status.map(|x| x.to_string()),
            s(&e.error_code),
            s(&e.error_message),
            s(&e.source),
            Some(e.body.as_str().to_string()),
        ];
        let last = values.len() - 1;
        for (i, v) in values.into_iter().enumerate() {
            field(&mut out, v, i == last);
        }
    }
    out.flush().unwrap();
}
