//! A Python that can import a given client library: the machine's own, or a virtual
//! environment under `target/` that the tests make and fill from PyPI with pip (a pinned
//! version), so the tests that run real third-party clients need no manual step in CI.

use std::path::{Path, PathBuf};
use std::process::Command;

fn can_import(python: &Path, module: &str) -> bool {
    Command::new(python)
        .args(["-c", &format!("import {module}")])
        .output()
        .is_ok_and(|o| o.status.success())
}

/// A Python interpreter that imports `module`, installing `requirement` (e.g.
/// `alpaca-py==0.44.0`) into `target/tmp/pyenv-<module>` when the machine's Python lacks it.
/// Blocking: call it from `spawn_blocking` in async tests.
pub fn with_module(module: &str, requirement: &str) -> PathBuf {
    let system = PathBuf::from("python3");
    if can_import(&system, module) {
        return system;
    }
    let venv = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join(format!("pyenv-{module}"));
    let python = venv.join("bin/python");
    if can_import(&python, module) {
        return python;
    }
    let made = Command::new("python3")
        .args(["-m", "venv"])
        .arg(&venv)
        .status()
        .unwrap_or_else(|e| panic!("python3 must be installed to run the {module} test: {e}"));
    assert!(made.success(), "python3 -m venv {} failed", venv.display());
    let installed = Command::new(&python)
        .args([
            "-m",
            "pip",
            "install",
            "--quiet",
            "--disable-pip-version-check",
            requirement,
        ])
        .status()
        .expect("run pip");
    assert!(installed.success(), "pip install {requirement} failed");
    assert!(
        can_import(&python, module),
        "{module} still cannot be imported"
    );
    python
}

/// Runs `script` (under `scripts/`) with `args`; its stdout parsed as one JSON value, or a
/// panic carrying its stderr.
pub async fn run_json(python: &Path, script: &str, args: &[String]) -> serde_json::Value {
    let script = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("scripts")
        .join(script);
    let output = tokio::process::Command::new(python)
        .arg(&script)
        .args(args)
        .kill_on_drop(true)
        .output()
        .await
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success(),
        "{} failed: {stderr}",
        script.display()
    );
    serde_json::from_slice(&output.stdout).unwrap_or_else(|e| {
        panic!(
            "not JSON ({e}): {}\nstderr: {stderr}",
            String::from_utf8_lossy(&output.stdout)
        )
    })
}
