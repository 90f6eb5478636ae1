//! A property test of the spill/replay state machine against a simple model: random sequences
//! of logging, database outages, commits whose answer is lost, flushes and writer restarts, on
//! a real PostgreSQL behind a fault-injecting proxy. The model: every logged event is, at every
//! flush, either in the table or in a spill file, never stored twice; once the database is
//! healthy again, the table holds exactly the logged events.

mod common;

use std::collections::HashSet;
use std::path::Path;
use std::time::Duration;

use common::pgproxy::PgProxy;
use common::scratch_dir;
use common::writer::{OwnCluster, WriterUnderTest, sample_event, test_config};
use proptest::prelude::*;
use proptest::test_runner::{Config as ProptestConfig, TestCaseError, TestRunner};
use tradegate_actors::trade_log_writer::spill::SpillStore;
use uuid::Uuid;

#[derive(Debug, Clone)]
enum Op {
    /// Log this many new events
    Log(u16),
    /// The database becomes unreachable
    Down,
    /// It is reachable again
    Up,
    /// The next COMMIT succeeds on the server but its answer is lost
    CutCommit,
    /// Persist everything queued (and replay if possible), then check the model
    Flush,
    /// Stop the writer cleanly and start a new one over the same spill directory
    Restart,
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        4 => (1u16..400).prop_map(Op::Log),
        1 => Just(Op::Down),
        2 => Just(Op::Up),
        1 => Just(Op::CutCommit),
        2 => Just(Op::Flush),
        1 => Just(Op::Restart),
    ]
}

fn spilled_ids(dir: &Path) -> Vec<Uuid> {
    let mut ids = Vec::new();
    let Ok(entries) = std::fs::read_dir(dir) else {
        return ids;
    };
    for path in entries.filter_map(|e| e.ok().map(|e| e.path())) {
        if path
            .file_name()
            .is_some_and(|n| n.to_string_lossy().starts_with("spill-"))
        {
            let read = SpillStore::read(&path).unwrap();
            ids.extend(
                read.events
                    .iter()
                    .filter(|e| e.event_type.code() != 90)
                    .map(|e| e.event_id),
            );
        }
    }
    ids
}

async fn stored_ids(conninfo: &str) -> Vec<Uuid> {
    let client = tradegate::postgres::connect(conninfo, Duration::from_secs(10))
        .await
        .unwrap();
    client
        .query("SELECT event_id FROM tradelog WHERE event_type <> 90", &[])
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect()
}

async fn run_case(
    cluster: &OwnCluster,
    proxy: &PgProxy,
    case: u64,
    ops: Vec<Op>,
) -> Result<(), TestCaseError> {
    proxy.set_down(false);
    proxy.disarm();
    let dbname = format!("model_{case}_{}", Uuid::new_v4().simple());
    let admin = cluster.conninfo.replace("dbname=tg", "dbname=postgres");
    tradegate::postgres::ensure_database(&admin, &dbname, Duration::from_secs(10))
        .await
        .unwrap();
    let direct = cluster
        .conninfo
        .replace("dbname=tg", &format!("dbname={dbname}"));
    {
        let mut client = tradegate::postgres::connect(&direct, Duration::from_secs(10))
            .await
            .unwrap();
        tradegate::migrate::run(&mut client).await.unwrap();
    }
    let spill = scratch_dir("model-spill");
    let config = test_config(&spill);
    let through_proxy = proxy.conninfo(&dbname);
    let mut writer = WriterUnderTest::start(&through_proxy, config.clone()).await;
    let mut sent: Vec<Uuid> = Vec::new();
    let mut next = case * 1_000_000;

    for op in ops {
        match op {
            Op::Log(n) => {
                for _ in 0..n {
                    let event = sample_event(next);
                    next += 1;
                    sent.push(event.event_id);
                    writer.log.log(event);
                }
            }
            Op::Down => proxy.set_down(true),
            Op::Up => proxy.set_down(false),
            Op::CutCommit => proxy.cut_next_commit(),
            Op::Flush => {
                writer.flush().await;
                let stored = stored_ids(&direct).await;
                let stored_set: HashSet<Uuid> = stored.iter().copied().collect();
                prop_assert_eq!(stored.len(), stored_set.len(), "an event was stored twice");
                let spilled: HashSet<Uuid> = spilled_ids(&spill).into_iter().collect();
                let missing = sent
                    .iter()
                    .filter(|id| !stored_set.contains(id) && !spilled.contains(id))
                    .count();
                prop_assert_eq!(missing, 0, "events neither stored nor spilled");
            }
            Op::Restart => {
                writer.stop().await;
                writer = WriterUnderTest::start(&through_proxy, config.clone()).await;
            }
        }
    }

    // heal, then everything logged is stored exactly once and nothing waits on disk
    proxy.set_down(false);
    proxy.disarm();
    writer.flush().await;
    let stats = writer.flush().await;
    writer.stop().await;
    let stored = stored_ids(&direct).await;
    let stored_set: HashSet<Uuid> = stored.iter().copied().collect();
    prop_assert_eq!(stored.len(), stored_set.len(), "an event was stored twice");
    let sent_set: HashSet<Uuid> = sent.iter().copied().collect();
    let missing = sent_set.difference(&stored_set).count();
    let unexpected = stored_set.difference(&sent_set).count();
    prop_assert_eq!(
        (missing, unexpected),
        (0, 0),
        "(missing, unexpected) events after healing"
    );
    prop_assert_eq!(stats.spill_files_pending, 0);
    prop_assert!(spilled_ids(&spill).is_empty());
    let _ = std::fs::remove_dir_all(&spill);
    Ok(())
}

#[test]
fn spill_and_replay_match_the_model() {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let cluster = runtime.block_on(OwnCluster::start("model"));
    let proxy = runtime.block_on(PgProxy::start(&cluster.socket_dir()));
    let mut runner = TestRunner::new(ProptestConfig {
        cases: 16,
        max_shrink_iters: 32,
        failure_persistence: None,
        ..ProptestConfig::default()
    });
    let case = std::sync::atomic::AtomicU64::new(0);
    let result = runner.run(&proptest::collection::vec(op(), 1..24), |ops| {
        let n = case.fetch_add(1, std::sync::atomic::Ordering::SeqCst) + 1;
        runtime.block_on(run_case(&cluster, &proxy, n, ops))
    });
    drop(proxy);
    runtime
        .block_on(async move { tokio::task::spawn_blocking(move || drop(cluster)).await })
        .unwrap();
    if let Err(e) = result {
        panic!("{e}");
    }
}
