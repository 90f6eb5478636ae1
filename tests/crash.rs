//! A writer process killed with SIGKILL, then restarted over the same spill directory: nothing
//! that was spilled or committed is lost, nothing is doubled.

mod common;

use std::collections::HashSet;
use std::process::{Command, Stdio};
use std::time::Duration;

use common::writer::OwnCluster;
use common::{scratch_dir, wait_until};
use tradegate_actors::trade_log_writer::spill::SpillStore;
use uuid::Uuid;

const SEED: u64 = 7;
const EVENTS: u64 = 40_000;

fn load_command(conninfo: &str, spill: &std::path::Path, events: u64) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_tradegate"));
    command
        .args([
            "tradelog",
            "load",
            "--events",
            &events.to_string(),
            "--rate",
            "8000",
        ])
        .args(["--seed", &SEED.to_string()])
        .env("DATABASE_URL", conninfo)
        .env("TRADEGATE_API__LISTEN", "127.0.0.1:0")
        .env("TRADEGATE_TRADELOG__SPILL_DIR", spill)
        .env("TRADEGATE_TRADELOG__BATCH_SIZE", "100")
        .env("TRADEGATE_TRADELOG__SPILL_FILE_MAX_BYTES", "65536")
        .env("TRADEGATE_TRADELOG__BACKOFF_BASE_MS", "50")
        .env("TRADEGATE_TRADELOG__BACKOFF_MAX_MS", "200")
        .env("RUST_LOG", "error")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    command
}

fn spill_files(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    std::fs::read_dir(dir)
        .map(|entries| {
            entries
                .filter_map(|e| e.ok().map(|e| e.path()))
                .filter(|p| {
                    p.file_name()
                        .is_some_and(|n| n.to_string_lossy().starts_with("spill-"))
                })
                .collect()
        })
        .unwrap_or_default()
}

async fn count(client: &tokio_postgres::Client) -> i64 {
    client
        .query_one("SELECT count(*) FROM tradelog WHERE event_type <> 90", &[])
        .await
        .map(|r| r.get(0))
        .unwrap_or(-1)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_writer_killed_mid_batch_loses_nothing_spilled_or_committed_and_doubles_nothing() {
    let mut db = OwnCluster::start("crash").await;
    let spill = scratch_dir("crash-spill");
    let mut child = load_command(&db.conninfo, &spill, EVENTS).spawn().unwrap();

    let client = db.client().await;
    let committed = wait_until(Duration::from_secs(30), || async {
        (count(&client).await >= 2_000).then_some(())
    })
    .await;
    assert!(committed.is_some(), "the load never reached the table");
    drop(client);

    // an outage: the child spills
    db.stop_server().await;
    let spilled = wait_until(Duration::from_secs(20), || async {
        (spill_files(&spill).len() >= 5).then_some(())
    })
    .await;
    assert!(
        spilled.is_some(),
        "the child did not spill during the outage"
    );
    tokio::time::sleep(Duration::from_millis(500)).await;
    db.start_server().await;
    let client = db.client().await;
    let before = count(&client).await;
    // kill it the moment its replay starts committing
    let replaying = wait_until(Duration::from_secs(30), || async {
        (count(&client).await > before).then_some(())
    })
    .await;
    child.kill().unwrap();
    let status = child.wait().unwrap();
    assert!(replaying.is_some(), "the child never replayed");
    assert!(!status.success(), "the child was not killed");

    // the oracle: what was committed, and what the spill files hold
    let committed: HashSet<Uuid> = client
        .query("SELECT event_id FROM tradelog WHERE event_type <> 90", &[])
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    let mut spilled: HashSet<Uuid> = HashSet::new();
    for path in spill_files(&spill) {
        let read = SpillStore::read(&path).unwrap();
        assert!(
            read.corrupt.is_empty(),
            "a complete line was damaged: {path:?}"
        );
        spilled.extend(
            read.events
                .iter()
                .filter(|e| e.event_type.code() != 90)
                .map(|e| e.event_id),
        );
    }
    assert!(
        !spilled.is_empty(),
        "nothing was left spilled at the kill; the test proved nothing"
    );
    let expected: HashSet<Uuid> = committed.union(&spilled).copied().collect();

    // a new writer process over the same spill directory replays what was left
    let output = load_command(&db.conninfo, &spill, 0).output().unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let summary: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    assert!(
        summary["writer"]["replayed"].as_u64().unwrap() > 0,
        "{summary}"
    );
    assert_eq!(summary["writer"]["spill_files_pending"], 0, "{summary}");

    let stored: Vec<Uuid> = client
        .query("SELECT event_id FROM tradelog WHERE event_type <> 90", &[])
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    let stored_set: HashSet<Uuid> = stored.iter().copied().collect();
    assert_eq!(stored.len(), stored_set.len(), "an event was doubled");
    let lost: Vec<&Uuid> = expected.difference(&stored_set).collect();
    assert!(
        lost.is_empty(),
        "{} spilled or committed events were lost",
        lost.len()
    );
    let known: HashSet<Uuid> = (0..EVENTS)
        .map(|i| tradegate::commands::load::event_id(SEED, i))
        .collect();
    assert!(
        stored_set.is_subset(&known),
        "the table holds events nobody sent"
    );
}
