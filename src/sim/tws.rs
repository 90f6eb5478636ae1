//! A simulated TWS: the socket protocol far enough for executions sync and for clients such as
//! `ib_async` that ask for more on connect (each such request gets its end marker; anything
//! else a TWS error message, never a dropped connection). Serves a fixed set of executions with
//! their commission reports, and can be told to fail mid-stream for fault tests.

use std::sync::{Arc, Mutex};

use chrono::{DateTime, Utc};
use chrono_tz::Tz;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tradegate_actors::ibkr_syncer::fills::resolve_time;
use tradegate_actors::ibkr_syncer::tws::{
    self, CommissionReport, Execution, MAX_VERSION, MIN_VERSION,
};

/// A fault to inject while serving executions.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    /// Close the connection after sending this many executions
    DisconnectAfter(usize),
    /// Send a malformed execution frame after this many executions
    MalformedAfter(usize),
}

/// What the simulated TWS serves.
#[derive(Debug, Clone, Default)]
pub struct Scenario {
    /// The accounts of the login
    pub accounts: Vec<String>,
    /// Executions, each with its commission report
    pub executions: Vec<(Execution, Option<CommissionReport>)>,
    /// A fault, if any
    pub fault: Option<Fault>,
}

/// A scenario shared with the server, so a test can add executions (corrections, say) or
/// switch faults between syncs.
pub type SharedScenario = Arc<Mutex<Scenario>>;

/// Serves `scenario` on `listener` until the task is dropped; one task per connection. Each
/// executions request sees the scenario as it is when the request arrives.
pub async fn serve(listener: TcpListener, scenario: SharedScenario) -> std::io::Result<()> {
    loop {
        let (stream, _) = listener.accept().await?;
        let scenario = scenario.clone();
        tokio::spawn(async move {
            if let Err(e) = session(stream, &scenario).await {
                tracing::debug!(error = %e, "simulated TWS session ended");
            }
        });
    }
}

/// Starts a simulated TWS on `listener` on its own task; returns the shared scenario.
pub fn spawn(listener: TcpListener, scenario: Scenario) -> SharedScenario {
    let shared = Arc::new(Mutex::new(scenario));
    tokio::spawn(serve(listener, shared.clone()));
    shared
}

fn lock(scenario: &SharedScenario) -> std::sync::MutexGuard<'_, Scenario> {
    // a panic while holding the lock cannot leave a scenario half-changed in a way that matters
    scenario
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// The UTC instant of a REQ_EXECUTIONS filter time (`yyyymmdd-hh:mm:ss` is UTC; a time with a
/// zone name is in that zone; one without, in the simulated login's zone, UTC).
fn filter_since(text: &str) -> Result<Option<DateTime<Utc>>, tws::TwsError> {
    if text.trim().is_empty() {
        return Ok(None);
    }
    let time = tws::TwsTime::parse(text)?;
    resolve_time(&time, Tz::UTC)
        .map(Some)
        .map_err(tws::TwsError::Malformed)
}

async fn session(mut stream: TcpStream, shared: &SharedScenario) -> Result<(), tws::TwsError> {
    let mut prefix = [0u8; 4];
    stream.read_exact(&mut prefix).await?;
    if &prefix != b"API\0" {
        return Err(tws::TwsError::Malformed("no API prefix".into()));
    }
    let Some(range) = tws::read_frame(&mut stream).await? else {
        return Ok(());
    };
    let range = String::from_utf8_lossy(&range).into_owned();
    let (min, max) = tws::parse_version_range(range.trim_end_matches('\0'))?;
    let version = max.min(MAX_VERSION);
    if version < min.max(MIN_VERSION) {
        return Err(tws::TwsError::Version(version));
    }
    let now = chrono::Utc::now().format("%Y%m%d %H:%M:%S UTC").to_string();
    tws::write_fields(&mut stream, &[version.to_string(), now]).await?;
    while let Some(frame) = tws::read_frame(&mut stream).await? {
        let mut f = tws::Fields::parse(&frame)?;
        let id: u32 = f.int("message id")?;
        let s = |v: &str| v.to_string();
        match id {
            // START_API
            71 => {
                tws::write_fields(&mut stream, &[s("9"), s("1"), s("1")]).await?;
                let accounts = lock(shared).accounts.join(",");
                tws::write_fields(&mut stream, &[s("15"), s("1"), accounts]).await?;
            }
            // REQ_EXECUTIONS
            7 => {
                let _version: i64 = f.int("version")?;
                let req_id: i64 = f.int("request id")?;
                let _client: i64 = f.int("client id")?;
                let account = f.string("account")?.to_string();
                let since = filter_since(f.string("time")?)?;
                let symbol = f.string("symbol")?.to_string();
                let scenario = lock(shared).clone();
                let mut sent = 0usize;
                let mut out = Vec::with_capacity(64 * 1024);
                for (execution, commission) in &scenario.executions {
                    if (!account.is_empty() && execution.account != account)
                        || (!symbol.is_empty() && execution.contract.symbol != symbol)
                    {
                        continue;
                    }
                    if let Some(since) = since
                        && resolve_time(&execution.time, Tz::UTC).is_ok_and(|t| t < since)
                    {
                        continue;
                    }
                    match scenario.fault {
                        Some(Fault::DisconnectAfter(n)) if sent == n => {
                            stream.write_all(&out).await?;
                            return Ok(());
                        }
                        Some(Fault::MalformedAfter(n)) if sent == n => {
                            out.extend_from_slice(&tws::encode_fields(&[
                                "11",
                                &req_id.to_string(),
                                "not-a-number",
                            ]));
                        }
                        _ => {}
                    }
                    let mut e = execution.clone();
                    e.req_id = req_id;
                    out.extend_from_slice(&tws::encode_fields(&tws::execution_fields(&e, version)));
                    if let Some(c) = commission {
                        out.extend_from_slice(&tws::encode_fields(&tws::commission_fields(c)));
                    }
                    sent += 1;
                    if out.len() > 60 * 1024 {
                        stream.write_all(&out).await?;
                        out.clear();
                    }
                }
                out.extend_from_slice(&tws::encode_fields(&[s("55"), s("1"), req_id.to_string()]));
                stream.write_all(&out).await?;
            }
            // positions, open orders, completed orders, account updates, account updates multi
            61 => tws::write_fields(&mut stream, &[s("62"), s("1")]).await?,
            5 => tws::write_fields(&mut stream, &[s("53"), s("1")]).await?,
            99 => tws::write_fields(&mut stream, &[s("102")]).await?,
            6 => {
                let account = lock(shared).accounts.first().cloned().unwrap_or_default();
                tws::write_fields(&mut stream, &[s("54"), s("1"), account]).await?;
            }
            76 => {
                let _version: i64 = f.int("version")?;
                let req_id: i64 = f.int("request id")?;
                tws::write_fields(&mut stream, &[s("74"), s("1"), req_id.to_string()]).await?;
            }
            other => {
                tws::write_fields(
                    &mut stream,
                    &[
                        s("4"),
                        s("2"),
                        s("-1"),
                        s("321"),
                        format!("the simulated TWS does not support message {other}"),
                        String::new(),
                    ],
                )
                .await?;
            }
        }
    }
    Ok(())
}
