//! `tradegate ingest`, run as a cron job runs it: a succeeding job, a failing one, one with no
//! summary, one killed, one past its timeout; each leaves the right run row.

mod common;

use std::path::PathBuf;
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use common::{TestDb, scratch_dir};
use serde_json::Value;

struct Ingest {
    db: TestDb,
    workdir: PathBuf,
}

/// A run row as the test reads it back.
#[derive(Debug)]
struct Run {
    status: String,
    counts: [i32; 4],
    error: Option<String>,
    details: Option<Value>,
    metadata: Value,
    records: i64,
    calls: i64,
}

impl Ingest {
    async fn new() -> Self {
        Self {
            db: TestDb::new().await,
            workdir: scratch_dir("ingest"),
        }
    }

    /// Runs `tradegate ingest --task TASK --source src [extra] -- job...` to its end.
    async fn run(&self, task: &str, extra: &[&str], job: &[&str]) -> Output {
        let mut command = Command::new(env!("CARGO_BIN_EXE_tradegate"));
        command
            .env_remove("TRADEGATE_CONFIG")
            .env("DATABASE_URL", &self.db.conninfo)
            .env("RUST_LOG", "warn")
            .env("TRADEGATE_INGESTION__KILL_GRACE_SECS", "1")
            .current_dir(&self.workdir)
            .args(["ingest", "--task", task, "--source", "src"])
            .args(extra)
            .arg("--")
            .args(job);
        tokio::task::spawn_blocking(move || command.output().expect("run tradegate ingest"))
            .await
            .unwrap()
    }

    async fn stored(&self, task: &str) -> Run {
        let client = self.db.client().await;
        let row = client
            .query_one(
                "SELECT d.status, d.records_fetched, d.records_created, d.records_updated, \
                        d.records_skipped, d.error_message, d.error_details, d.metadata, \
                        (SELECT count(*) FROM data_ingestion_run_records r WHERE r.data_ingestion_run_id = d.id), \
                        (SELECT count(*) FROM api_call_logs c WHERE c.data_ingestion_run_id = d.id) \
                 FROM data_ingestion_runs d WHERE task_name = $1",
                &[&task],
            )
            .await
            .expect("exactly one run of the task");
        Run {
            status: row.get(0),
            counts: [row.get(1), row.get(2), row.get(3), row.get(4)],
            error: row.get(5),
            details: row.get(6),
            metadata: row.get(7),
            records: row.get(8),
            calls: row.get(9),
        }
    }
}

fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

fn example_job() -> String {
    format!(
        "{}/scripts/example_ingest_job.py",
        env!("CARGO_MANIFEST_DIR")
    )
}

#[tokio::test(flavor = "multi_thread")]
async fn a_succeeding_job_posting_ten_thousand_records_completes_its_run() {
    let ingest = Ingest::new().await;
    let job = example_job();
    let output = ingest
        .run(
            "congress.daily",
            &[],
            &[
                "python3",
                &job,
                "10000",
                "--post-twice",
                "--api-key",
                "SECRET-1",
            ],
        )
        .await;
    assert_eq!(output.status.code(), Some(0), "{}", stderr(&output));
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        stdout.contains(r#""fetched": 10000"#),
        "the job's output is passed on: {stdout}"
    );
    assert!(stderr(&output).contains("completed"), "{}", stderr(&output));
    let run = ingest.stored("congress.daily").await;
    assert_eq!(run.status, "completed");
    assert_eq!(run.counts, [10_000, 10_000, 0, 0]);
    assert_eq!(run.records, 10_000, "posted twice, kept once");
    assert_eq!(run.calls, 1);
    assert_eq!(run.error, None);
    let command = run.metadata["command"].to_string();
    assert!(command.contains("example_ingest_job.py"), "{command}");
    assert!(
        !command.contains("SECRET-1"),
        "credentials stay off the record: {command}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_failing_job_fails_its_run_with_status_and_stderr() {
    let ingest = Ingest::new().await;
    let output = ingest
        .run(
            "fails",
            &[],
            &[
                "sh",
                "-c",
                "echo working; echo 'quota exceeded' >&2; exit 3",
            ],
        )
        .await;
    assert_eq!(
        output.status.code(),
        Some(3),
        "the job's status is passed on"
    );
    assert!(
        stderr(&output).contains("quota exceeded"),
        "stderr is passed on"
    );
    let run = ingest.stored("fails").await;
    assert_eq!(run.status, "failed");
    assert_eq!(
        run.error.as_deref(),
        Some("exited with status 3: quota exceeded")
    );
    let details = run.details.unwrap();
    assert_eq!(details["exit_code"], 3);
    assert!(
        details["stderr_tail"]
            .as_str()
            .unwrap()
            .contains("quota exceeded")
    );
    assert_eq!(details["last_stdout_line"], "working");
    assert_eq!(run.counts, [0, 0, 0, 0]);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_job_without_a_valid_summary_fails_its_run() {
    let ingest = Ingest::new().await;
    let silent = ingest.run("silent", &[], &["true"]).await;
    assert_eq!(silent.status.code(), Some(1));
    let run = ingest.stored("silent").await;
    assert_eq!(run.status, "failed");
    assert!(
        run.error
            .as_deref()
            .unwrap()
            .contains("printed no summary line"),
        "{:?}",
        run.error
    );
    let chatty = ingest
        .run("chatty", &[], &["sh", "-c", "echo all done"])
        .await;
    assert_eq!(chatty.status.code(), Some(1));
    let run = ingest.stored("chatty").await;
    assert_eq!(run.status, "failed");
    assert!(
        run.error.as_deref().unwrap().contains("not JSON"),
        "{:?}",
        run.error
    );
    let partial = ingest
        .run(
            "partial",
            &[],
            &["sh", "-c", r#"echo '{"fetched":3,"created":3}'"#],
        )
        .await;
    assert_eq!(partial.status.code(), Some(1));
    let run = ingest.stored("partial").await;
    assert!(
        run.error.as_deref().unwrap().contains("\"updated\""),
        "{:?}",
        run.error
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_job_past_its_timeout_is_stopped_and_its_run_failed() {
    let ingest = Ingest::new().await;
    let started = Instant::now();
    // the shell ignores SIGTERM and its child sleeps on: only the group SIGKILL ends them
    let output = ingest
        .run(
            "hangs",
            &["--timeout", "1"],
            &["sh", "-c", "trap '' TERM; sleep 60 & sleep 60; wait"],
        )
        .await;
    let took = started.elapsed();
    assert_eq!(output.status.code(), Some(124), "{}", stderr(&output));
    assert!(
        took < Duration::from_secs(30),
        "the job was stopped, not waited for ({took:?})"
    );
    let run = ingest.stored("hangs").await;
    assert_eq!(run.status, "failed");
    assert!(
        run.error
            .as_deref()
            .unwrap()
            .starts_with("timed out after 1s"),
        "{:?}",
        run.error
    );
    assert_eq!(run.details.unwrap()["signal"], 9);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_killed_or_missing_job_fails_its_run() {
    let ingest = Ingest::new().await;
    let killed = ingest
        .run("killed", &[], &["sh", "-c", "kill -KILL $$"])
        .await;
    assert_eq!(killed.status.code(), Some(137));
    let run = ingest.stored("killed").await;
    assert_eq!(run.status, "failed");
    assert_eq!(run.error.as_deref(), Some("killed by signal 9"));
    let missing = ingest.run("missing", &[], &["/nonexistent/data-job"]).await;
    assert_eq!(missing.status.code(), Some(1));
    let run = ingest.stored("missing").await;
    assert_eq!(run.status, "failed");
    assert!(
        run.error
            .as_deref()
            .unwrap()
            .starts_with("could not start /nonexistent/data-job"),
        "{:?}",
        run.error
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_job_that_finishes_its_own_run_keeps_that_outcome() {
    let ingest = Ingest::new().await;
    let script = r#"
import json, os, urllib.request
req = urllib.request.Request(os.environ["TRADEGATE_INGESTION_URL"] + "/fail",
    data=json.dumps({"error": "source schema changed"}).encode(), method="POST",
    headers={"Content-Type": "application/json",
             "Authorization": "Bearer " + os.environ["TRADEGATE_TOKEN"]})
urllib.request.urlopen(req, timeout=30).read()
print(json.dumps({"fetched": 1, "created": 1, "updated": 0, "skipped": 0}))
"#;
    let output = ingest.run("self", &[], &["python3", "-c", script]).await;
    assert_eq!(output.status.code(), Some(1), "{}", stderr(&output));
    let run = ingest.stored("self").await;
    assert_eq!(run.status, "failed");
    assert_eq!(run.error.as_deref(), Some("source schema changed"));
}

#[test]
fn the_readme_shows_the_example_job_the_tests_run() {
    let root = env!("CARGO_MANIFEST_DIR");
    let readme = std::fs::read_to_string(format!("{root}/README.md")).unwrap();
    let script = std::fs::read_to_string(example_job()).unwrap();
    assert!(
        readme.contains(&script),
        "README.md must show scripts/example_ingest_job.py verbatim"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn ctrl_c_stops_the_job_and_fails_its_run() {
    let ingest = Ingest::new().await;
    let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_tradegate"))
        .env_remove("TRADEGATE_CONFIG")
        .env("DATABASE_URL", &ingest.db.conninfo)
        .env("RUST_LOG", "warn")
        .env("TRADEGATE_INGESTION__KILL_GRACE_SECS", "1")
        .current_dir(&ingest.workdir)
        .args(["ingest", "--task", "interrupted", "--source", "src", "--"])
        .args(["sh", "-c", "sleep 60"])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let client = ingest.db.client().await;
    let started = common::wait_until(Duration::from_secs(30), || async {
        let row = client
            .query_opt(
                "SELECT 1 FROM data_ingestion_runs WHERE task_name = 'interrupted'",
                &[],
            )
            .await
            .unwrap();
        row.map(|_| ())
    })
    .await;
    assert!(started.is_some(), "the run was started");
    let pid = child.id().unwrap().to_string();
    let sent = Command::new("kill").args(["-INT", &pid]).status().unwrap();
    assert!(sent.success());
    let status = tokio::time::timeout(Duration::from_secs(30), child.wait())
        .await
        .expect("tradegate ingest stops")
        .unwrap();
    assert_eq!(status.code(), Some(130));
    let run = ingest.stored("interrupted").await;
    assert_eq!(run.status, "failed");
    assert!(
        run.error.as_deref().unwrap().starts_with("interrupted"),
        "{:?}",
        run.error
    );
}

// The job's token writes to its own run and nowhere else: not to another running run, not a new
// run, and it reads nothing; without it nothing is accepted.
#[tokio::test(flavor = "multi_thread")]
async fn a_jobs_token_writes_only_to_its_own_run() {
    let ingest = Ingest::new().await;
    let other = uuid::Uuid::now_v7();
    ingest
        .db
        .client()
        .await
        .execute(
            "INSERT INTO data_ingestion_runs (run_id, task_name, data_source, status, started_at) \
             VALUES ($1, 'someone-else', 'src', 'running', now())",
            &[&other],
        )
        .await
        .unwrap();
    let script = r#"
import json, os, sys, urllib.request, urllib.error
base, own = os.environ["TRADEGATE_API_URL"], os.environ["TRADEGATE_INGESTION_URL"]
other, token = sys.argv[1], os.environ["TRADEGATE_TOKEN"]
def call(method, url, body=None, auth=True):
    headers = {"Content-Type": "application/json"}
    if auth:
        headers["Authorization"] = "Bearer " + token
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(url, data=data, headers=headers, method=method)
    try:
        with urllib.request.urlopen(req, timeout=30) as r:
            return [r.status, json.load(r).get("code")]
    except urllib.error.HTTPError as e:
        return [e.code, json.load(e).get("code")]
rec = {"records": [{"record_type": "T", "record_id": "1", "operation": "created"}]}
print(json.dumps({
    "own": call("POST", own + "/records", rec),
    "other": call("POST", base + "/api/v1/ingestion/runs/" + other + "/records", rec),
    "other_fail": call("POST", base + "/api/v1/ingestion/runs/" + other + "/fail", {"error": "x"}),
    "new_run": call("POST", base + "/api/v1/ingestion/runs", {"task": "x", "source": "y"}),
    "read": call("GET", own),
    "no_token": call("POST", own + "/records", rec, auth=False),
    "db_url_inherited": "DATABASE_URL" in os.environ,
}), file=sys.stderr)
print(json.dumps({"fetched": 1, "created": 1, "updated": 0, "skipped": 0}))
"#;
    let output = ingest
        .run(
            "scoped",
            &[],
            &["python3", "-c", script, &other.to_string()],
        )
        .await;
    let err = stderr(&output);
    assert_eq!(output.status.code(), Some(0), "{err}");
    let line = err
        .lines()
        .find(|l| l.starts_with('{'))
        .unwrap_or_else(|| panic!("no result line in {err}"));
    let got: Value = serde_json::from_str(line).unwrap();
    assert_eq!(got["own"], serde_json::json!([200, null]), "{got}");
    for write in ["other", "other_fail", "new_run"] {
        assert_eq!(
            got[write],
            serde_json::json!([403, "auth.other_run"]),
            "{write}: {got}"
        );
    }
    assert_eq!(
        got["read"],
        serde_json::json!([403, "auth.forbidden"]),
        "{got}"
    );
    assert_eq!(
        got["no_token"],
        serde_json::json!([401, "auth.missing_token"]),
        "{got}"
    );
    assert_eq!(
        got["db_url_inherited"], false,
        "the gateway's database URL reached the job"
    );
    let run = ingest.stored("scoped").await;
    assert_eq!((run.status.as_str(), run.records), ("completed", 1));
    let untouched = ingest.stored("someone-else").await;
    assert_eq!(
        (untouched.status.as_str(), untouched.records),
        ("running", 0)
    );
}
