//! `cargo bench --bench ibkr_sync`: 100,000 executions (`TRADEGATE_BENCH_EXECUTIONS` overrides)
//! served by the simulated TWS over TCP, synced into a private, durable cluster (fsync and
//! synchronous commit on):
//!
//! (a) the baseline: the same fetch alone (handshake, request, decode of every execution and
//!     commission report), nothing stored;
//! (b) the first sync of the window: fetch, normalize, stage, upsert, parents, aggregates,
//!     ingestion records, one commit;
//! (c) a re-sync of the same window, which must write nothing: its counts say so, and every
//!     fill and trade row's physical version (`xmin`, `ctid`) is compared before and after, so
//!     a rewritten row is counted even if the counts missed it.
//!
//! (d) the write floor: the stored fill rows copied server-side into a table with the same
//!     indexes, what storing them costs at the least on this machine.
//!
//! Last line: `ibkr_sync: first <n> exec/s, resync <m> exec/s, resync writes <k>`.

// Rates and ratios of timings are statistics, not money.
#![allow(clippy::float_arithmetic)]

use std::time::{Duration, Instant};

use chrono::Utc;
use chrono_tz::Tz;
use tokio::net::TcpListener;
use tradegate::sim::tws::spawn;
use tradegate::sim::tws_scenario::{Generate, generate};
use tradegate_actors::ibkr_syncer::client::{ExecutionFilter, TwsSession};
use tradegate_actors::ibkr_syncer::{SyncRequest, sync_account};

#[path = "support/mod.rs"]
mod support;

const ACCOUNT: &str = "DU0100000";

fn main() {
    let executions: usize = std::env::var("TRADEGATE_BENCH_EXECUTIONS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(100_000);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(run(executions.max(1)));
}

fn rate(n: u64, d: Duration) -> f64 {
    n as f64 / d.as_secs_f64()
}

async fn versions(client: &tokio_postgres::Client) -> Vec<(i64, String)> {
    client
        .query(
            "SELECT id, xmin::text || ctid::text FROM broker_fills \
             UNION ALL SELECT -id, xmin::text || ctid::text FROM broker_trades ORDER BY 1",
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect()
}

async fn run(executions: usize) {
    let settings = std::env::var("TRADEGATE_BENCH_SHARED_BUFFERS")
        .map(|buffers| vec![("shared_buffers".to_string(), buffers)])
        .unwrap_or_default();
    let (mut cluster, conninfo, client, _) =
        support::bench_database("bench-ibkr-sync", settings).await;
    let timeout = support::TIMEOUT;
    if std::env::var_os("TRADEGATE_BENCH_LOG_STATEMENTS").is_some() {
        // every statement over 5 ms goes to the cluster's log, to see where the time goes
        for sql in [
            "ALTER SYSTEM SET log_min_duration_statement = 5",
            "LOAD 'auto_explain'",
            "ALTER SYSTEM SET session_preload_libraries = 'auto_explain'",
            "ALTER SYSTEM SET auto_explain.log_min_duration = 300",
            "ALTER SYSTEM SET auto_explain.log_analyze = on",
            "ALTER SYSTEM SET auto_explain.log_triggers = on",
            "SELECT pg_reload_conf()",
        ] {
            client.batch_execute(sql).await.unwrap();
        }
    }
    let pool = tradegate::database::pool(&conninfo, 4, timeout).unwrap();

    let scenario = generate(&Generate {
        accounts: vec![ACCOUNT.into()],
        executions,
        seed: 42,
        end: Utc::now() - chrono::Duration::minutes(5),
        span: chrono::Duration::days(5),
    });
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let _tws = spawn(listener, scenario);
    let connect = || TwsSession::connect(addr, 1, timeout, Duration::from_secs(60));
    let request = SyncRequest {
        account_id: ACCOUNT.into(),
        lookback: chrono::Duration::days(7),
        zone: Some(Tz::UTC),
    };

    // (a) the fetch alone
    let mut session = connect().await.unwrap();
    let started = Instant::now();
    let fetched = session
        .executions(&ExecutionFilter {
            account: ACCOUNT.into(),
            time: tradegate_actors::ibkr_syncer::sync::filter_time(
                Utc::now() - chrono::Duration::days(7),
            ),
            ..ExecutionFilter::default()
        })
        .await
        .unwrap();
    let fetch_time = started.elapsed();
    let n = fetched.executions.len() as u64;
    assert_eq!(
        n, executions as u64,
        "the simulated TWS served every execution"
    );

    // (b) the first sync
    let started = Instant::now();
    let first = sync_account(&pool, &mut session, &request).await.unwrap();
    let first_time = started.elapsed();
    assert_eq!(first.counts.fetched_executions_count, n);
    assert_eq!(first.counts.inserted_executions_count, n);
    let before = versions(&client).await;

    // the write floor: the same fill rows copied server-side into an identically indexed table
    // (no transfer, no parsing, no parents, no aggregates: what storing them costs at least)
    client
        .batch_execute("CREATE TABLE fills_floor (LIKE broker_fills INCLUDING ALL)")
        .await
        .unwrap();
    let started = Instant::now();
    client
        .batch_execute("INSERT INTO fills_floor OVERRIDING SYSTEM VALUE SELECT * FROM broker_fills")
        .await
        .unwrap();
    let floor_time = started.elapsed();

    // (c) the re-sync
    let started = Instant::now();
    let again = sync_account(&pool, &mut session, &request).await.unwrap();
    let resync_time = started.elapsed();
    let after = versions(&client).await;
    let rewritten = before.iter().zip(&after).filter(|(b, a)| b != a).count() as u64
        + before.len().abs_diff(after.len()) as u64;
    let writes = again.counts.writes().max(rewritten);
    let canonical: i64 = client
        .query_one(
            "SELECT count(*) FILTER (WHERE NOT is_canonical) FROM broker_fills",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    let trades: i64 = client
        .query_one("SELECT count(*) FROM broker_trades", &[])
        .await
        .unwrap()
        .get(0);

    let fetch_rate = rate(n, fetch_time);
    let first_rate = rate(n, first_time);
    let resync_rate = rate(n, resync_time);
    println!(
        "executions {n} ({trades} trades, {canonical} superseded by corrections), one account"
    );
    println!("baseline fetch only: {fetch_time:.2?} ({fetch_rate:.0} exec/s)");
    println!(
        "baseline write floor (server-side copy of the fill rows): {floor_time:.2?} ({:.0} rows/s)",
        rate(n, floor_time)
    );
    println!(
        "first sync: {first_time:.2?} ({first_rate:.0} exec/s, {:.2}x the fetch-only time, \
         {:.2}x the write floor)",
        first_time.as_secs_f64() / fetch_time.as_secs_f64(),
        first_time.as_secs_f64() / floor_time.as_secs_f64()
    );
    println!(
        "  of which fetch {} ms, normalize {} ms, store and commit {} ms",
        first.fetch_ms, first.normalize_ms, first.store_ms
    );
    println!(
        "re-sync: {resync_time:.2?} ({resync_rate:.0} exec/s, {:.2}x the fetch-only time), \
         counted writes {}, rows rewritten {rewritten}",
        resync_time.as_secs_f64() / fetch_time.as_secs_f64(),
        again.counts.writes()
    );
    println!(
        "goal: first >= 20000 exec/s ({}), resync writes 0 ({})",
        if first_rate >= 20_000.0 {
            "met"
        } else {
            "NOT met"
        },
        if writes == 0 { "met" } else { "NOT met" }
    );
    println!(
        "ibkr_sync: first {first_rate:.0} exec/s, resync {resync_rate:.0} exec/s, resync writes {writes}"
    );
    drop(session);
    drop(client);
    let _ = tokio::task::spawn_blocking(move || cluster.stop()).await;
}
