//! `tradegate sim tws`, `tradegate sync ibkr` and `tradegate trades list|show`, run as a user
//! runs them: the simulated TWS in its own process, the syncs against it into a real PostgreSQL.

mod common;

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Output, Stdio};

use common::TestDb;

fn tradegate(db: &TestDb, port: u16) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_tradegate"));
    command
        .env_remove("TRADEGATE_CONFIG")
        .env("DATABASE_URL", &db.conninfo)
        .env("TRADEGATE_AUDIT_KEY", common::audit_key())
        .env("TRADEGATE_IBKR__PORT", port.to_string())
        .env("RUST_LOG", "warn")
        .current_dir(common::scratch_dir("ibkr-cli"));
    command
}

fn run(command: &mut Command) -> (bool, String, String) {
    let Output {
        status,
        stdout,
        stderr,
    } = command.output().unwrap();
    (
        status.success(),
        String::from_utf8_lossy(&stdout).into_owned(),
        String::from_utf8_lossy(&stderr).into_owned(),
    )
}

struct Sim(Child);

impl Drop for Sim {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Starts `tradegate sim tws` on a free port; returns it and the port from its first line.
fn sim() -> (Sim, u16) {
    sim_with(&[])
}

/// `sim` with more arguments.
fn sim_with(extra: &[&str]) -> (Sim, u16) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_tradegate"))
        .args([
            "sim",
            "tws",
            "--listen",
            "127.0.0.1:0",
            "--accounts",
            "DU9001,DU9002",
            "--executions",
            "80",
            "--seed",
            "3",
        ])
        .args(extra)
        .env("RUST_LOG", "warn")
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    assert!(
        line.starts_with("simulated TWS listening on 127.0.0.1:"),
        "{line}"
    );
    assert!(line.contains("80 executions"), "{line}");
    let port = line
        .split_whitespace()
        .nth(4)
        .and_then(|a| a.trim_end_matches(':').rsplit(':').next())
        .and_then(|p| p.parse().ok())
        .unwrap_or_else(|| panic!("no port in {line:?}"));
    (Sim(child), port)
}

#[test]
fn sync_ibkr_stores_the_simulated_executions_once_and_trades_shows_them() {
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let db = runtime.block_on(TestDb::new());
    let (_sim, port) = sim();

    let (ok, out, err) = run(tradegate(&db, port).args([
        "sync",
        "ibkr",
        "--account",
        "DU9001",
        "--account",
        "DU9002",
    ]));
    assert!(ok, "{out}{err}");
    assert!(
        out.contains("DU9001: fetched ") && out.contains("DU9002: fetched "),
        "{out}"
    );
    assert!(
        !out.contains("inserted 0,"),
        "the first sync inserts: {out}"
    );

    let (ok, out, err) =
        run(tradegate(&db, port).args(["sync", "ibkr", "--account", "DU9001", "--format", "json"]));
    assert!(ok, "{err}");
    let reports: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(reports[0]["inserted_executions_count"], 0, "{out}");
    assert_eq!(reports[0]["updated_executions_count"], 0);
    assert!(reports[0]["unchanged_executions_count"].as_u64().unwrap() > 0);

    let (ok, out, err) = run(tradegate(&db, port).args([
        "trades",
        "list",
        "--account",
        "DU9001",
        "--format",
        "json",
    ]));
    assert!(ok, "{err}");
    let trades: Vec<serde_json::Value> = serde_json::from_str(&out).unwrap();
    assert!(!trades.is_empty());
    assert!(trades.iter().all(|t| t["account_id"] == "DU9001"));
    let id = trades[0]["id"].as_i64().unwrap();

    let (ok, out, err) = run(tradegate(&db, port).args(["trades", "show", &id.to_string()]));
    assert!(ok, "{err}");
    assert!(
        out.contains("exec id") && out.contains("canonical"),
        "{out}"
    );
    assert!(out.contains("0000e0d5."), "{out}");

    let (ok, out, _) = run(tradegate(&db, port).args(["trades", "list", "--symbol", "NONE"]));
    assert!(ok);
    assert_eq!(out.trim(), "no trades match");

    // failures: a clear message and a non-zero exit
    let (ok, _, err) = run(tradegate(&db, port).args(["trades", "show", "999999"]));
    assert!(!ok && err.contains("no trade 999999"), "{err}");
    let (ok, _, err) = run(tradegate(&db, port).args(["trades", "list", "--status", "done"]));
    assert!(!ok && err.contains("status must be one of"), "{err}");
    let (ok, _, err) = run(tradegate(&db, port).args(["sync", "ibkr"]));
    assert!(!ok && err.contains("no IBKR accounts to sync"), "{err}");
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let closed_port = closed.local_addr().unwrap().port();
    drop(closed);
    let (ok, _, err) = run(tradegate(&db, closed_port)
        .env("TRADEGATE_IBKR__CONNECT_TIMEOUT_SECS", "2")
        .args(["sync", "ibkr", "--account", "DU9001"]));
    assert!(!ok && err.contains("cannot reach TWS"), "{err}");
}

/// `sim tws --master-client-id`: as a real TWS, a session that is not the master sees only its
/// own client's executions, and the sync says what to set; as the master it sees them all.
#[test]
fn a_sync_that_is_not_the_master_client_sees_nothing_and_says_so() {
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let db = runtime.block_on(TestDb::new());
    let (_sim, port) = sim_with(&["--master-client-id", "40"]);
    let (ok, out, err) = run(tradegate(&db, port).args(["sync", "ibkr", "--account", "DU9001"]));
    assert!(ok, "{out}{err}");
    assert!(out.contains("DU9001: fetched 0, inserted 0,"), "{out}");
    assert!(
        err.contains("Master API client ID") && err.contains("set it to"),
        "{err}"
    );
    let (ok, out, err) = run(tradegate(&db, port)
        .env("TRADEGATE_IBKR__CLIENT_ID", "41")
        .env("TRADEGATE_IBKR__CLI_CLIENT_ID", "40")
        .args(["sync", "ibkr", "--account", "DU9001"]));
    assert!(ok, "{out}{err}");
    assert!(
        out.contains("DU9001: fetched ") && !out.contains("fetched 0,"),
        "{out}"
    );
    assert!(!err.contains("Master API client ID"), "{err}");
}
