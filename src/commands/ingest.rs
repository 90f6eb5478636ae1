//! `tradegate ingest --task NAME --source SRC -- CMD ARGS...`: runs an external data job as one
//! logged ingestion run. The run is started before the job; the job gets its id
//! (`TRADEGATE_INGESTION_RUN_ID`), the address of an ingestion API on loopback
//! (`TRADEGATE_API_URL`, `TRADEGATE_INGESTION_URL`) to post API calls and records to, and a
//! token for it (`TRADEGATE_TOKEN`, as `Authorization: Bearer`) that writes only to its own
//! run; its last
//! stdout line must be a JSON summary (`{"fetched":..,"created":..,"updated":..,"skipped":..}`).
//! Exit 0 with a summary completes the run; anything else — a non-zero exit, a signal, no or a
//! bad summary, the timeout, Ctrl-C — fails it with the reason and the tail of stderr.

use std::ffi::OsString;
use std::net::SocketAddr;
use std::os::unix::process::ExitStatusExt;
use std::process::{ExitStatus, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpListener;
use tokio::process::{Child, Command};
use tokio::sync::oneshot;
use tradegate_actors::domain::{IngestionRun, NewRun, RunCounts, RunStatus, is_sensitive_key};
use tradegate_actors::gateway::{ChildSpec, Gateway};
use tradegate_actors::ingestion_logger::{
    self, IngestionClient, IngestionConfig, IngestionLogger, IngestionLoggerArgs,
};

use crate::api::{self, ApiState};
use tokio::signal::unix::{SignalKind, signal};

use crate::config::Config;
use crate::database::Database;
use crate::telemetry;

/// Exit status of `tradegate ingest` when the job timed out (as `timeout(1)` uses).
pub const EXIT_TIMED_OUT: u8 = 124;
/// Exit status when `tradegate ingest` itself was interrupted.
pub const EXIT_INTERRUPTED: u8 = 130;
/// How long the job's output pipes may stay open after it exits (a background process it left
/// behind may hold them); then its process group is killed.
const PIPE_GRACE: Duration = Duration::from_secs(2);

/// What to run.
#[derive(Debug, Clone)]
pub struct IngestArgs {
    /// The run's task name
    pub task: String,
    /// The run's data source
    pub source: String,
    /// Overrides `ingestion.job_timeout_secs`
    pub timeout: Option<Duration>,
    /// The program and its arguments
    pub command: Vec<OsString>,
}

/// How a run ended, and the exit status `tradegate ingest` gives.
#[derive(Debug, Clone)]
pub struct IngestOutcome {
    /// The run as stored
    pub run: IngestionRun,
    /// 0 when the run completed
    pub exit_code: u8,
}

/// How the job's process ended.
#[derive(Debug, Clone, Copy)]
enum JobEnd {
    Exited(ExitStatus),
    TimedOut(Duration),
    Interrupted,
}

/// `tradegate ingest`: opens the database, starts an IngestionLogger under a supervisor and the
/// ingestion API on 127.0.0.1 (a free port), runs the job, and finishes the run.
pub async fn run(config: &Config, args: IngestArgs) -> Result<IngestOutcome> {
    anyhow::ensure!(!args.command.is_empty(), "no command given after --");
    crate::database::install_writer_key(config)?;
    let database = Database::open(&config.database).await?;
    let result = async {
        database.migrate().await?;
        let pool = database.pool(config.database.pool_size)?;
        let logger = IngestionLoggerArgs {
            pool: pool.clone(),
            config: config.ingestion.clone(),
        };
        let gateway = Gateway::start(
            vec![ChildSpec::new(ingestion_logger::NAME, move || {
                (IngestionLogger, logger.clone())
            })],
            config.supervisor.policy(),
        )
        .await?;
        let listener = TcpListener::bind(SocketAddr::from(([127, 0, 0, 1], 0)))
            .await
            .context("cannot open the ingestion API on 127.0.0.1")?;
        let api_addr = listener.local_addr()?;
        let client = IngestionClient::new(ingestion_logger::NAME);
        let (run, signals) = begin(&client, &args).await?;
        let run_id = run.run_id;
        // the job's token opens only its own run's write endpoints
        let job_token = api::auth::new_token();
        let state = ApiState {
            pool,
            gateway: gateway.actor().clone(),
            metrics: telemetry::metrics_handle(),
            ingestion: client.clone(),
            ibkr: tradegate_actors::ibkr_syncer::IbkrSyncClient::new(
                std::time::Duration::from_secs(60),
            ),
            ibkr_accounts: Vec::new(),
            alpaca_accounts: Vec::new(),
            reconcile: Default::default(),
            orders: Default::default(),
            hub: Default::default(),
            router: Default::default(),
            auth: std::sync::Arc::new(api::auth::Auth::for_run(run_id, &job_token)),
            limits: api::Limits::of(&config.api),
            tls: None,
        };
        let (stop_api, stopped) = oneshot::channel::<()>();
        let api_task = tokio::spawn(api::serve(listener, state, async {
            let _ = stopped.await;
        }));
        let job = Job {
            run,
            signals,
            api_addr,
            token: job_token,
            hidden: secret_vars(config),
        };
        let outcome = supervise(&client, &config.ingestion, &args, job).await;
        let _ = stop_api.send(());
        let _ = api_task.await;
        let tree = gateway.shutdown().await;
        let outcome = outcome?;
        tree?;
        Ok::<_, anyhow::Error>(outcome)
    }
    .await;
    let closed = database.close().await;
    let outcome = result?;
    closed?;
    Ok(outcome)
}

/// The variables holding the gateway's secrets, which a job does not inherit: configuration
/// overrides (`TRADEGATE_*`, which can carry the database URL) and every variable the
/// configuration names for a token or a broker key. The job still runs as the same user:
/// this bounds what it is given, not what it could read for itself.
fn secret_vars(config: &Config) -> Vec<String> {
    let mut vars: Vec<String> = std::env::vars_os()
        .filter_map(|(k, _)| k.into_string().ok())
        .filter(|k| k.starts_with(crate::config::ENV_PREFIX) && k.contains("__"))
        .collect();
    vars.extend(config.api.tokens.iter().map(|t| t.token_env.clone()));
    vars.extend(
        config
            .orders
            .strategies
            .values()
            .map(|s| s.token_env.clone()),
    );
    for account in &config.alpaca.accounts {
        vars.push(account.key_id_env.clone());
        vars.push(account.secret_key_env.clone());
    }
    vars.retain(|v| !v.is_empty());
    vars
}

/// Ctrl-C and SIGTERM, listened for from before the run exists.
struct Signals {
    interrupt: tokio::signal::unix::Signal,
    terminate: tokio::signal::unix::Signal,
}

/// A started run and what its job is given.
struct Job {
    run: IngestionRun,
    signals: Signals,
    api_addr: SocketAddr,
    token: String,
    /// Environment variables the job does not inherit (the gateway's secrets)
    hidden: Vec<String>,
}

/// Starts the run, with the interrupt signals listened for first.
async fn begin(client: &IngestionClient, args: &IngestArgs) -> Result<(IngestionRun, Signals)> {
    let new_run = NewRun {
        task: args.task.clone(),
        source: args.source.clone(),
        metadata: Some(json!({
            "wrapper": "tradegate ingest",
            "command": redact_argv(&args.command),
            "wrapper_pid": std::process::id(),
        })),
    };
    // listen for Ctrl-C and SIGTERM before the run exists, so an interrupt from then on fails
    // the run instead of killing this process with the run left running
    let interrupt = signal(SignalKind::interrupt()).context("listening for SIGINT")?;
    let terminate = signal(SignalKind::terminate()).context("listening for SIGTERM")?;
    let run = client.start_run(new_run).await?;
    Ok((
        run,
        Signals {
            interrupt,
            terminate,
        },
    ))
}

/// Runs the job of a started run, and finishes the run.
async fn supervise(
    client: &IngestionClient,
    config: &IngestionConfig,
    args: &IngestArgs,
    job: Job,
) -> Result<IngestOutcome> {
    let started = Instant::now();
    let Job {
        run,
        signals: Signals {
            mut interrupt,
            mut terminate,
        },
        api_addr,
        token,
        hidden,
    } = job;
    let run_id = run.run_id;
    eprintln!(
        "ingest: run {run_id} of {} ({}) started",
        run.task_name, run.data_source
    );
    let timeout = args
        .timeout
        .unwrap_or(Duration::from_secs(config.job_timeout_secs));
    let mut command = Command::new(&args.command[0]);
    for var in &hidden {
        command.env_remove(var);
    }
    command
        .args(&args.command[1..])
        // the gateway's own secrets are not the job's: its database, broker keys, tokens
        .env_remove("DATABASE_URL")
        .env_remove("APCA_API_KEY_ID")
        .env_remove("APCA_API_SECRET_KEY")
        .env_remove("TRADEGATE_CONFIG")
        .env_remove(crate::config::AUDIT_KEY_ENV)
        .env("TRADEGATE_INGESTION_RUN_ID", run_id.to_string())
        .env("TRADEGATE_API_URL", format!("http://{api_addr}"))
        .env("TRADEGATE_TOKEN", &token)
        .env(
            "TRADEGATE_INGESTION_URL",
            format!("http://{api_addr}/api/v1/ingestion/runs/{run_id}"),
        )
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        // its own process group, so a timeout stops the job's children too
        .process_group(0)
        .kill_on_drop(true);
    let mut child = match command.spawn() {
        Ok(child) => child,
        Err(e) => {
            let program = args.command[0].to_string_lossy();
            let message = format!("could not start {program}: {e}");
            let details = json!({ "command": redact_argv(&args.command) });
            let run = client.fail(run_id, message, Some(details)).await?;
            report(&run, started);
            return Ok(IngestOutcome { run, exit_code: 1 });
        }
    };
    let group = child.id();
    let stdout = tokio::spawn(last_line(child.stdout.take()));
    let stderr = tokio::spawn(tail(child.stderr.take(), config.stderr_tail_bytes));
    let grace = Duration::from_secs(config.kill_grace_secs);
    let end = tokio::select! {
        status = child.wait() => JobEnd::Exited(status.context("waiting for the job")?),
        () = tokio::time::sleep(timeout) => JobEnd::TimedOut(timeout),
        _ = interrupt.recv() => JobEnd::Interrupted,
        _ = terminate.recv() => JobEnd::Interrupted,
    };
    let status = match end {
        JobEnd::Exited(status) => Some(status),
        JobEnd::TimedOut(_) | JobEnd::Interrupted => stop(&mut child, group, grace).await,
    };
    // the pipes close when every process holding them is gone; kill leftovers that linger
    let mut leftovers_killed = false;
    let (last_line, stderr_tail) =
        match tokio::time::timeout(PIPE_GRACE, async { (stdout.await, stderr.await) }).await {
            Ok((out, err)) => (out.ok().flatten(), err.unwrap_or_default()),
            Err(_) => {
                leftovers_killed = true;
                signal_group(group, nix::sys::signal::Signal::SIGKILL);
                (None, String::new())
            }
        };
    let mut details = json!({
        "duration_ms": u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX),
        "exit_code": status.and_then(|s| s.code()),
        "signal": status.and_then(|s| s.signal()),
        "stderr_tail": stderr_tail,
        "last_stdout_line": last_line,
    });
    if leftovers_killed {
        details["leftover_processes_killed"] = Value::Bool(true);
    }
    // the job may have finished its run itself over the API; that stands
    if let Some(current) = client.get(run_id).await?
        && current.status.is_terminal()
    {
        let exit_code = match (current.status, status.and_then(|s| s.code())) {
            (RunStatus::Completed, _) => 0,
            (_, Some(code)) if code != 0 => u8::try_from(code).unwrap_or(1),
            _ => 1,
        };
        report(&current, started);
        return Ok(IngestOutcome {
            run: current,
            exit_code,
        });
    }
    let last_stderr = stderr_tail
        .lines()
        .rev()
        .find(|l| !l.trim().is_empty())
        .map(|l| format!(": {}", l.trim()))
        .unwrap_or_default();
    let (failure, exit_code) = match end {
        JobEnd::TimedOut(after) => (
            format!("timed out after {after:?}; the job was stopped"),
            EXIT_TIMED_OUT,
        ),
        JobEnd::Interrupted => (
            "interrupted: tradegate ingest was asked to stop, and stopped the job".to_string(),
            EXIT_INTERRUPTED,
        ),
        JobEnd::Exited(status) => match (status.code(), status.signal()) {
            (_, Some(signal)) => (
                format!("killed by signal {signal}{last_stderr}"),
                128u8.saturating_add(u8::try_from(signal).unwrap_or(0)),
            ),
            (Some(code), _) if code != 0 => (
                format!("exited with status {code}{last_stderr}"),
                u8::try_from(code).unwrap_or(1),
            ),
            _ => match last_line.as_deref().map(RunCounts::from_summary_line) {
                Some(Ok(counts)) => {
                    let run = client.complete(run_id, Some(counts)).await?;
                    report(&run, started);
                    return Ok(IngestOutcome { run, exit_code: 0 });
                }
                Some(Err(e)) => (format!("exited 0 but printed no valid summary: {e}"), 1),
                None => (
                    "exited 0 but printed no summary line (the last line of stdout must be \
                     {\"fetched\":N,\"created\":N,\"updated\":N,\"skipped\":N})"
                        .to_string(),
                    1,
                ),
            },
        },
    };
    let run = client.fail(run_id, failure, Some(details)).await?;
    report(&run, started);
    Ok(IngestOutcome { run, exit_code })
}

/// Prints the run's outcome on stderr (stdout carries the job's own output).
fn report(run: &IngestionRun, started: Instant) {
    let took = started.elapsed();
    match run.status {
        RunStatus::Completed => eprintln!(
            "ingest: run {} completed in {took:.1?}: fetched {}, created {}, updated {}, skipped {}",
            run.run_id,
            run.counts.fetched,
            run.counts.created,
            run.counts.updated,
            run.counts.skipped
        ),
        _ => eprintln!(
            "ingest: run {} failed after {took:.1?}: {}",
            run.run_id,
            run.error_message.as_deref().unwrap_or("(no reason)")
        ),
    }
}

/// SIGTERM to the job's group, then SIGKILL after `grace`; returns how the job ended.
async fn stop(child: &mut Child, group: Option<u32>, grace: Duration) -> Option<ExitStatus> {
    signal_group(group, nix::sys::signal::Signal::SIGTERM);
    match tokio::time::timeout(grace, child.wait()).await {
        Ok(Ok(status)) => Some(status),
        _ => {
            signal_group(group, nix::sys::signal::Signal::SIGKILL);
            child.wait().await.ok()
        }
    }
}

fn signal_group(group: Option<u32>, signal: nix::sys::signal::Signal) {
    let Some(pid) = group.and_then(|g| i32::try_from(g).ok()) else {
        return;
    };
    // fails harmlessly when the group is already gone
    let _ = nix::sys::signal::killpg(nix::unistd::Pid::from_raw(pid), signal);
}

/// Copies the job's stdout to ours and returns its last non-empty line.
async fn last_line(pipe: Option<impl AsyncRead + Unpin>) -> Option<String> {
    let mut reader = BufReader::new(pipe?);
    let mut out = tokio::io::stdout();
    let mut line = Vec::new();
    let mut last = None;
    loop {
        line.clear();
        match reader.read_until(b'\n', &mut line).await {
            Ok(0) | Err(_) => break,
            Ok(_) => {
                let _ = out.write_all(&line).await;
                let text = String::from_utf8_lossy(&line);
                if !text.trim().is_empty() {
                    last = Some(text.trim().to_string());
                }
            }
        }
    }
    let _ = out.flush().await;
    last
}

/// Copies the job's stderr to ours and keeps its last `keep` bytes.
async fn tail(pipe: Option<impl AsyncRead + Unpin>, keep: usize) -> String {
    let Some(mut pipe) = pipe else {
        return String::new();
    };
    let mut err = tokio::io::stderr();
    let mut kept: Vec<u8> = Vec::with_capacity(keep.min(64 * 1024));
    let mut buf = [0u8; 8192];
    loop {
        match pipe.read(&mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(n) => {
                let _ = err.write_all(&buf[..n]).await;
                kept.extend_from_slice(&buf[..n]);
                if kept.len() > keep {
                    kept.drain(..kept.len() - keep);
                }
            }
        }
    }
    String::from_utf8_lossy(&kept).into_owned()
}

/// The command line as stored with the run: a value given to a flag that names a credential
/// (`--api-key X`, `--token=X`, `PASSWORD=X`) is replaced by `***`.
pub fn redact_argv(argv: &[OsString]) -> Vec<String> {
    let mut out = Vec::with_capacity(argv.len());
    let mut hide_next = false;
    for arg in argv {
        let arg = arg.to_string_lossy();
        if hide_next {
            out.push("***".to_string());
            hide_next = false;
            continue;
        }
        if let Some((key, _)) = arg.split_once('=')
            && is_sensitive_key(key.trim_start_matches('-'))
        {
            out.push(format!("{key}=***"));
            continue;
        }
        if arg.starts_with('-') && is_sensitive_key(arg.trim_start_matches('-')) {
            hide_next = true;
        }
        out.push(arg.into_owned());
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn credentials_on_the_command_line_are_not_stored() {
        let argv: Vec<OsString> = [
            "fetch.py",
            "--api-key",
            "k1",
            "--token=t1",
            "PASSWORD=p1",
            "--ticker",
            "AAPL",
        ]
        .iter()
        .map(OsString::from)
        .collect();
        assert_eq!(
            redact_argv(&argv),
            [
                "fetch.py",
                "--api-key",
                "***",
                "--token=***",
                "PASSWORD=***",
                "--ticker",
                "AAPL"
            ]
        );
    }
}
