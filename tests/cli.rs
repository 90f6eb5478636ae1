//! The `tradegate` binary, run as a user runs it.

mod common;

use std::net::TcpListener;
use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use common::{TestDb, scratch_dir, wait_until};

fn tradegate() -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_tradegate"));
    command
        .env_remove("DATABASE_URL")
        .env_remove("TRADEGATE_CONFIG")
        .env_remove("APCA_API_KEY_ID")
        .env_remove("APCA_API_SECRET_KEY")
        .env("RUST_LOG", "warn");
    command
}

fn text(output: &Output) -> (String, String) {
    (
        String::from_utf8_lossy(&output.stdout).to_string(),
        String::from_utf8_lossy(&output.stderr).to_string(),
    )
}

fn modified(path: &Path) -> std::time::SystemTime {
    std::fs::metadata(path).unwrap().modified().unwrap()
}

#[test]
fn demo_starts_a_private_cluster_from_scratch_and_reuses_it_the_second_time() {
    let workdir = scratch_dir("demo");
    let data_dir = workdir.join(".tradegate/pg");

    let started = Instant::now();
    let first = tradegate()
        .arg("demo")
        .current_dir(&workdir)
        .output()
        .unwrap();
    let first_took = started.elapsed();
    let (stdout, stderr) = text(&first);
    assert!(first.status.success(), "demo failed:\n{stdout}\n{stderr}");
    assert!(
        stdout.contains("private PostgreSQL cluster in .tradegate/pg (initialized now)"),
        "{stdout}"
    );
    assert!(
        stdout.contains("migrations: applied V1__audit_trail"),
        "{stdout}"
    );
    assert!(
        stdout.contains("health:     ok (database ok: true"),
        "{stdout}"
    );
    assert!(stdout.contains("gateway running"), "{stdout}");
    assert!(
        stdout.contains("of demo.prices completed: 2 records fetched"),
        "{stdout}"
    );
    assert!(stdout.contains("ingestion_logger running"), "{stdout}");
    assert!(stdout.contains("reporter running"), "{stdout}");
    // the overview's three questions, answered from the trail the demo just wrote: the
    // symbol's activity, the data the AAPL decision rested on, why the TSLA order failed
    assert!(
        stdout.contains("report:     tradegate report symbol AAPL"),
        "{stdout}"
    );
    assert!(
        stdout.contains("primary ingestion run:")
            && stdout.contains("demo.prices (demo), completed"),
        "{stdout}"
    );
    assert!(stdout.contains(", before the decision"), "{stdout}");
    assert!(stdout.contains("request_order_new"), "{stdout}");
    assert!(
        stdout.contains("reason insufficient_buying_power (broker_reject)")
            && stdout.contains("HTTP 403"),
        "{stdout}"
    );
    assert!(stdout.contains("(private cluster stopped)"), "{stdout}");
    assert!(data_dir.join("PG_VERSION").is_file());
    assert!(
        !data_dir.join("postmaster.pid").exists(),
        "the server was left running"
    );
    let initialized_at = modified(&data_dir.join("PG_VERSION"));

    let started = Instant::now();
    let second = tradegate()
        .arg("demo")
        .current_dir(&workdir)
        .output()
        .unwrap();
    let second_took = started.elapsed();
    let (stdout, stderr) = text(&second);
    assert!(
        second.status.success(),
        "second demo failed:\n{stdout}\n{stderr}"
    );
    assert!(stdout.contains("(reused, started)"), "{stdout}");
    assert!(stdout.contains("migrations: up to date"), "{stdout}");
    assert!(
        !data_dir.join("postmaster.pid").exists(),
        "the server was left running"
    );
    // reused, not re-created
    assert_eq!(modified(&data_dir.join("PG_VERSION")), initialized_at);
    eprintln!("demo from scratch took {first_took:?}, with the cluster reused {second_took:?}");

    // what two demos wrote (orders filled, runs completed, trades synced: every legitimate
    // state change) verifies, all of it sealed by the demos' clean stops
    let verified = tradegate()
        .args(["audit", "verify"])
        .current_dir(&workdir)
        .output()
        .unwrap();
    let (stdout, stderr) = text(&verified);
    assert!(
        verified.status.success(),
        "verify failed:\n{stdout}\n{stderr}"
    );
    assert!(stdout.contains("the trail verifies"), "{stdout}");
    assert!(
        !stdout.contains("unsealed"),
        "the clean stops sealed everything:\n{stdout}"
    );

    std::fs::remove_dir_all(&workdir).unwrap();
}

/// A loopback port that accepts connections and never answers.
fn silent_server() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    std::thread::spawn(move || {
        let mut held = Vec::new();
        for stream in listener.incoming().take(16) {
            held.push(stream);
        }
        std::thread::sleep(Duration::from_secs(30));
    });
    port
}

#[test]
fn an_unreachable_database_url_fails_clearly_within_ten_seconds() {
    let port = silent_server();
    let started = Instant::now();
    let output = tradegate()
        .arg("migrate")
        .env(
            "DATABASE_URL",
            format!("postgres://trader:hunter2@127.0.0.1:{port}/tg"),
        )
        .output()
        .unwrap();
    let took = started.elapsed();
    let (_, stderr) = text(&output);
    assert!(!output.status.success());
    assert!(took < Duration::from_secs(10), "took {took:?}");
    assert!(
        stderr.contains(&format!(
            "cannot connect to PostgreSQL at postgres://trader:***@127.0.0.1:{port}/tg"
        )),
        "{stderr}"
    );
    assert!(!stderr.contains("hunter2"), "the password leaked: {stderr}");

    // a closed port is refused at once
    let closed = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let output = tradegate()
        .arg("demo")
        .env(
            "DATABASE_URL",
            format!("postgres://trader@127.0.0.1:{closed}/tg"),
        )
        .output()
        .unwrap();
    let (_, stderr) = text(&output);
    assert!(!output.status.success());
    assert!(stderr.contains("cannot connect to PostgreSQL"), "{stderr}");
    assert!(stderr.to_lowercase().contains("refused"), "{stderr}");
}

#[test]
fn a_missing_config_file_is_named_and_exits_2() {
    let output = tradegate()
        .args(["--config", "/nonexistent/tg.toml", "demo"])
        .output()
        .unwrap();
    let (_, stderr) = text(&output);
    assert_eq!(output.status.code(), Some(2));
    assert!(
        stderr.contains("config file /nonexistent/tg.toml not found"),
        "{stderr}"
    );
}

#[test]
fn every_subcommand_has_help() {
    for sub in ["run", "migrate", "demo"] {
        let output = tradegate().args([sub, "--help"]).output().unwrap();
        assert!(output.status.success(), "{sub} --help");
        assert!(String::from_utf8_lossy(&output.stdout).contains("Usage: tradegate"));
    }
}

#[tokio::test]
async fn migrate_twice_against_a_database_url() {
    let db = TestDb::empty().await;
    let run = || {
        tradegate()
            .arg("migrate")
            .env("DATABASE_URL", &db.conninfo)
            .output()
            .unwrap()
    };
    let first = run();
    let (stdout, stderr) = text(&first);
    assert!(first.status.success(), "{stderr}");
    assert!(stdout.contains("applied V1__audit_trail"), "{stdout}");
    assert!(stdout.contains("applied V3__tradelog"), "{stdout}");
    let second = run();
    let (stdout, stderr) = text(&second);
    assert!(second.status.success(), "{stderr}");
    assert!(stdout.starts_with("schema is up to date"), "{stdout}");
}

#[tokio::test]
async fn run_serves_health_and_metrics_and_stops_cleanly_on_sigterm() {
    let db = TestDb::new().await;
    let port = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_tradegate"))
        .arg("run")
        .env_remove("TRADEGATE_CONFIG")
        .env("DATABASE_URL", &db.conninfo)
        .env("TRADEGATE_API__LISTEN", format!("127.0.0.1:{port}"))
        .env("TRADEGATE_TRADELOG__SPILL_DIR", scratch_dir("run-spill"))
        .env("RUST_LOG", "warn")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let http = tradegate_actors::tls::local_http();
    let health = wait_until(Duration::from_secs(20), || async {
        let response = http
            .get(format!("http://127.0.0.1:{port}/health"))
            .send()
            .await
            .ok()?;
        (response.status() == 200).then_some(())?;
        response.json::<serde_json::Value>().await.ok()
    })
    .await
    .expect("/health never answered 200");
    assert_eq!(health["status"], "ok");
    assert_eq!(health["database"]["ok"], true);
    assert_eq!(health["actors"]["gateway"], true);

    let metrics = http
        .get(format!("http://127.0.0.1:{port}/metrics"))
        .send()
        .await
        .unwrap();
    assert!(
        metrics.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/plain")
    );
    let body = metrics.text().await.unwrap();
    assert!(body.contains("tradegate_build_info{version=\""), "{body}");
    assert!(
        body.contains("tradegate_health_checks_total{result=\"ok\"}"),
        "{body}"
    );

    let pid = child.id().unwrap().to_string();
    assert!(
        Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .unwrap()
            .success()
    );
    let status = tokio::time::timeout(Duration::from_secs(30), child.wait())
        .await
        .expect("tradegate run did not stop on SIGTERM")
        .unwrap();
    assert!(status.success(), "exit status {status}");
}

#[tokio::test]
async fn ctrl_c_stops_run_and_its_private_cluster() {
    let workdir = scratch_dir("run-ctrl-c");
    let port = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_tradegate"))
        .arg("run")
        .current_dir(&workdir)
        .env_remove("DATABASE_URL")
        .env_remove("TRADEGATE_CONFIG")
        .env("TRADEGATE_API__LISTEN", format!("127.0.0.1:{port}"))
        .env("RUST_LOG", "warn")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let http = tradegate_actors::tls::local_http();
    let up = wait_until(Duration::from_secs(60), || async {
        let response = http
            .get(format!("http://127.0.0.1:{port}/health"))
            .send()
            .await
            .ok()?;
        (response.status() == 200).then_some(())
    })
    .await;
    assert!(up.is_some(), "tradegate run never became healthy");
    let pid_file = workdir.join(".tradegate/pg/postmaster.pid");
    assert!(pid_file.exists(), "the private cluster is not running");

    let pid = child.id().unwrap().to_string();
    assert!(
        Command::new("kill")
            .args(["-INT", &pid])
            .status()
            .unwrap()
            .success()
    );
    let status = tokio::time::timeout(Duration::from_secs(60), child.wait())
        .await
        .expect("tradegate run did not stop on Ctrl-C")
        .unwrap();
    assert!(status.success(), "exit status {status}");
    assert!(!pid_file.exists(), "the private cluster was left running");
    std::fs::remove_dir_all(&workdir).unwrap();
}

#[tokio::test]
async fn halt_and_resume_work_on_a_fresh_run_with_no_token_configured() {
    use std::os::unix::fs::PermissionsExt;
    let db = TestDb::new().await;
    let workdir = scratch_dir("run-token-file");
    let port = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let start = || {
        tokio::process::Command::new(env!("CARGO_BIN_EXE_tradegate"))
            .arg("run")
            .current_dir(&workdir)
            .env_remove("TRADEGATE_CONFIG")
            .env_remove("TRADEGATE_TOKEN")
            .env("DATABASE_URL", &db.conninfo)
            .env("TRADEGATE_API__LISTEN", format!("127.0.0.1:{port}"))
            .env("RUST_LOG", "warn")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .unwrap()
    };
    let http = tradegate_actors::tls::local_http();
    let healthy = async || {
        wait_until(Duration::from_secs(30), || async {
            let r = http
                .get(format!("http://127.0.0.1:{port}/health"))
                .send()
                .await
                .ok()?;
            (r.status() == 200).then_some(())
        })
        .await
        .expect("tradegate run never became healthy")
    };
    let mut child = start();
    healthy().await;
    let token_file = workdir.join(".tradegate/operator.token");
    let mode = std::fs::metadata(&token_file).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600, "the token file is private");
    let token = std::fs::read_to_string(&token_file).unwrap();
    // without the token nothing changes
    let refused = http
        .post(format!("http://127.0.0.1:{port}/api/v1/kill-switch"))
        .json(&serde_json::json!({"state": "halted"}))
        .send()
        .await
        .unwrap();
    assert_eq!(refused.status(), 401);
    let cli = |args: &[&str]| {
        tradegate()
            .current_dir(&workdir)
            .env_remove("TRADEGATE_TOKEN")
            .env("TRADEGATE_API__LISTEN", format!("127.0.0.1:{port}"))
            .args(args)
            .output()
            .unwrap()
    };
    let halted = cli(&["halt", "--reason", "lunch"]);
    let (out, err) = text(&halted);
    assert!(halted.status.success(), "{out}{err}");
    assert!(
        out.contains("halted") && out.contains("local-operator"),
        "{out}"
    );
    let state: serde_json::Value = http
        .get(format!("http://127.0.0.1:{port}/api/v1/kill-switch"))
        .bearer_auth(token.trim())
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(state["state"], "halted", "{state}");
    // a wrong token given explicitly is refused, with the gateway's reason
    let wrong = cli(&["resume", "--token", "not-the-operator-token"]);
    let (_, err) = text(&wrong);
    assert!(!wrong.status.success());
    assert!(err.contains("401") && err.contains("not known"), "{err}");
    assert!(
        !err.contains("not-the-operator-token"),
        "the token is not echoed: {err}"
    );
    // the next run keeps the same token
    child.kill().await.unwrap();
    let _ = child.wait().await;
    let mut child = start();
    healthy().await;
    assert_eq!(std::fs::read_to_string(&token_file).unwrap(), token);
    let resumed = cli(&["resume"]);
    let (out, err) = text(&resumed);
    assert!(resumed.status.success(), "{out}{err}");
    assert!(out.contains("active"), "{out}");
    // both changes are on record under the local operator
    let client = db.client().await;
    let actors: Vec<String> = client
        .query(
            "SELECT actor FROM operator_actions WHERE action = 'kill_switch.set' ORDER BY id",
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert_eq!(actors, ["local-operator", "local-operator"]);
    child.kill().await.unwrap();
}

// Found by trying `tradegate demo` in a folder made by `mktemp -d` (mode 0700), as root: the
// private cluster runs as `postgres`, which cannot enter it; the refusal dropped the cluster
// while its start still held the init lock that the drop takes, and the command hung forever.
// Then it was refused at once; now the cluster is placed where `postgres` can reach it, the
// command says where, and `demo` completes there (and finds the same cluster again).
#[test]
fn in_a_folder_the_cluster_user_cannot_enter_demo_places_the_cluster_where_it_can_and_completes() {
    use std::os::unix::fs::{MetadataExt, PermissionsExt};
    let workdir = scratch_dir("private-folder");
    std::fs::set_permissions(&workdir, std::fs::Permissions::from_mode(0o700)).unwrap();
    let started = Instant::now();
    let out = tradegate()
        .current_dir(&workdir)
        .arg("migrate")
        .output()
        .unwrap();
    let (stdout, stderr) = text(&out);
    assert!(
        started.elapsed() < Duration::from_secs(60),
        "it took {:?}",
        started.elapsed()
    );
    assert!(out.status.success(), "{stdout}{stderr}");
    let root = std::fs::metadata("/proc/self").unwrap().uid() == 0;
    let placed = if root {
        let line = stderr
            .lines()
            .find(|l| l.contains("the private PostgreSQL cluster is in /var/lib/tradegate/"))
            .unwrap_or_else(|| panic!("it does not say where the cluster is: {stderr}"));
        assert!(
            line.contains(&format!("cannot enter {}", workdir.display())),
            "{line}"
        );
        let place = line
            .split(" is in ")
            .nth(1)
            .and_then(|rest| rest.split(", not ").next())
            .map(std::path::PathBuf::from)
            .unwrap();
        assert!(place.join("PG_VERSION").is_file(), "{}", place.display());
        Some(place)
    } else {
        // not root: the cluster runs as this user, who can enter its own folder
        assert!(workdir.join(".tradegate/pg/PG_VERSION").is_file());
        None
    };
    let out = tradegate()
        .current_dir(&workdir)
        .arg("demo")
        .output()
        .unwrap();
    let (stdout, stderr) = text(&out);
    assert!(out.status.success(), "demo failed:\n{stdout}\n{stderr}");
    assert!(
        stdout.contains("(reused"),
        "the same cluster is found again: {stdout}"
    );
    if let Some(place) = &placed {
        assert!(
            stdout.contains(&format!(
                "private PostgreSQL cluster in {}",
                place.display()
            )),
            "{stdout}"
        );
        // the demo stopped its cluster (it was the last user); what it left is removed
        std::fs::remove_dir_all(place.parent().unwrap()).unwrap();
    }
}

/// The demo's walk-through is not drowned by the actors' logs: they are kept to warnings
/// unless asked for.
#[test]
fn demo_keeps_the_actors_logs_to_warnings_unless_verbose() {
    let workdir = scratch_dir("demo-quiet");
    let out = tradegate()
        .current_dir(&workdir)
        .env_remove("RUST_LOG")
        .arg("demo")
        .output()
        .unwrap();
    let (stdout, stderr) = text(&out);
    assert!(out.status.success(), "{stdout}{stderr}");
    assert!(!stderr.contains(" INFO "), "{stderr}");
    assert!(stdout.contains("of demo.prices completed"), "{stdout}");
    let out = tradegate()
        .current_dir(&workdir)
        .env_remove("RUST_LOG")
        .args(["demo", "--verbose"])
        .output()
        .unwrap();
    let (stdout, stderr) = text(&out);
    assert!(out.status.success(), "{stdout}{stderr}");
    assert!(
        stderr.contains(" INFO "),
        "--verbose shows the logs: {stderr}"
    );
}

/// `audit export`, `audit verify --archive` and `audit import` as an operator runs them: a day
/// not yet ended is refused, a sealed one exported, checked and imported once; a missing
/// archive is a clear error.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn audit_export_and_import_a_sealed_day_from_the_command_line() {
    let db = TestDb::new().await;
    let workdir = scratch_dir("audit-export");
    let run = |args: &[&str]| {
        tradegate()
            .env("DATABASE_URL", &db.conninfo)
            .args(args)
            .current_dir(&workdir)
            .output()
            .unwrap()
    };
    assert!(run(&["seed-data", "--days", "2"]).status.success());
    assert!(run(&["audit", "seal"]).status.success());
    let today = chrono::Utc::now().date_naive();
    let day = (today - chrono::Days::new(1)).to_string();
    // today has not ended: it is not sealed as a day
    let early = run(&["audit", "export", "--day", &today.to_string()]);
    let (_, stderr) = text(&early);
    assert!(
        !early.status.success() && stderr.contains("is not sealed yet"),
        "{stderr}"
    );
    let exported = run(&["audit", "export", "--day", &day]);
    let (stdout, stderr) = text(&exported);
    assert!(exported.status.success(), "{stdout}\n{stderr}");
    assert!(stdout.contains(&format!("exported {day}")), "{stdout}");
    let dir = workdir
        .join(".tradegate/exports")
        .join(format!("audit-{day}"));
    assert!(dir.join("manifest.json").exists(), "{stdout}");
    let dir = dir.display().to_string();
    let checked = run(&["audit", "verify", "--archive", &dir]);
    let (stdout, stderr) = text(&checked);
    assert_eq!(checked.status.code(), Some(0), "{stdout}\n{stderr}");
    let imported = run(&["audit", "import", &dir]);
    let (stdout, stderr) = text(&imported);
    assert_eq!(imported.status.code(), Some(0), "{stdout}\n{stderr}");
    assert!(
        stdout.contains(&format!("imported {day} into the archive schema")),
        "{stdout}"
    );
    let again = run(&["audit", "import", &dir]);
    let (_, stderr) = text(&again);
    assert!(
        !again.status.success() && stderr.contains("imported already"),
        "{stderr}"
    );
    let missing = run(&["audit", "import", "no-such-archive"]);
    let (_, stderr) = text(&missing);
    assert!(
        !missing.status.success() && stderr.contains("manifest.json"),
        "{stderr}"
    );
}

/// `audit seal` and `audit verify` as an operator runs them against a configured database:
/// clean and exit 0; after a row is changed behind the gateway's back, the row named and exit
/// 1; a key that is not the database's writer key is refused with a clear error.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn audit_verify_exits_non_zero_naming_a_row_changed_behind_the_gateways_back() {
    let db = TestDb::new().await;
    let workdir = scratch_dir("audit-verify");
    let run = |args: &[&str]| {
        tradegate()
            .env("DATABASE_URL", &db.conninfo)
            .args(args)
            .current_dir(&workdir)
            .output()
            .unwrap()
    };
    let seeded = run(&["seed-data", "--days", "2"]);
    assert!(seeded.status.success(), "{:?}", text(&seeded));
    let sealed = run(&["audit", "seal"]);
    let (stdout, _) = text(&sealed);
    assert!(
        sealed.status.success() && stdout.contains("seal 1 (interval)"),
        "{:?}",
        text(&sealed)
    );
    let clean = run(&["audit", "verify"]);
    let (stdout, stderr) = text(&clean);
    assert_eq!(clean.status.code(), Some(0), "{stdout}\n{stderr}");
    assert!(stdout.contains("the trail verifies"), "{stdout}");

    // someone with database access edits a fill's quantity, triggers off
    let client = db.client().await;
    let (foreign, connection) = tokio_postgres::connect(&db.conninfo, tokio_postgres::NoTls)
        .await
        .unwrap();
    tokio::spawn(connection);
    let id: i64 = client
        .query_one("SELECT min(id) FROM trade_executions", &[])
        .await
        .unwrap()
        .get(0);
    foreign
        .batch_execute(&format!(
            "SET session_replication_role = replica; \
             UPDATE trade_executions SET filled_quantity = filled_quantity + 1 WHERE id = {id}"
        ))
        .await
        .unwrap();
    let tampered = run(&["audit", "verify"]);
    let (stdout, stderr) = text(&tampered);
    assert_eq!(tampered.status.code(), Some(1), "{stdout}\n{stderr}");
    assert!(
        stdout.contains(&format!("FIRST: trade_executions {id}: altered")),
        "{stdout}"
    );
    let json = run(&["audit", "verify", "--format", "json"]);
    let report: serde_json::Value = serde_json::from_slice(&json.stdout).unwrap();
    assert_eq!(report["findings"][0]["kind"], "altered", "{report}");

    // another working folder, another key: refused, the database keeps its writer key
    let elsewhere = scratch_dir("audit-verify-other");
    let other = tradegate()
        .env("DATABASE_URL", &db.conninfo)
        .args(["audit", "seal"])
        .current_dir(&elsewhere)
        .output()
        .unwrap();
    let (_, stderr) = text(&other);
    assert!(!other.status.success(), "{stderr}");
    assert!(
        stderr.contains("written under another writer key"),
        "{stderr}"
    );
    std::fs::remove_dir_all(&workdir).unwrap();
    std::fs::remove_dir_all(&elsewhere).unwrap();
}
