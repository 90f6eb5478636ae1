//! A simulated TWS: the socket protocol far enough for executions sync and for clients such as
//! `ib_async` that ask for more on connect (each such request gets its end marker; anything
//! else a TWS error message, never a dropped connection). It serves a set of executions with
//! their commission reports and behaves as a real TWS does where that matters to a client, each
//! behaviour switchable in the [`Scenario`]:
//!
//! - a second session with a client id in use is refused with error 326 and closed;
//! - with a Master API client ID set, a session of another id sees only its own client's
//!   executions and their commission reports;
//! - commission reports can trail the end marker;
//! - zone-less times are in the login's zone, which the handshake names (in any bytes: a Chinese
//!   locale's zone is GB2312);
//! - data farm notices (2104/2106/2158) at connect and the 1100/1102 of IB's nightly reset in
//!   the middle of an answer;
//! - executions pushed with reqId -1 in between, and live: [`push_execution`] adds a fill
//!   and sends it at once to every session that sees it, as TWS does for a new fill;
//! - positions (REQ_POSITIONS): the net of the canonical executions served (a correction
//!   replaces the revision it corrects), per account and instrument, plus the scenario's
//!   `trades_elsewhere` (a position changed without a fill the API would show);
//! - faults: a disconnect or a malformed frame mid-answer, or a hang (no end marker, a notice
//!   trickled now and then).
//!
//! Times are read here with the simulator's own small parser, not tradegate's, so the two
//! cannot agree on a mistake.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::{DateTime, LocalResult, NaiveDateTime, TimeZone, Utc};
use chrono_tz::Tz;

use rust_decimal::Decimal;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::OwnedWriteHalf;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::broadcast;
use tradegate_actors::ibkr_syncer::tws::{
    self, CommissionReport, Contract, Execution, MAX_VERSION, MIN_VERSION, Position,
};

/// A fault to inject while serving executions.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    /// Close the connection after sending this many executions
    DisconnectAfter(usize),
    /// Send a malformed execution frame after this many executions
    MalformedAfter(usize),
    /// Stop answering after this many executions, without the end marker, while sending a
    /// notice every 200 ms (so no read timeout fires) until the client leaves
    HangAfter(usize),
}

/// When commission reports are sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum CommissionTiming {
    /// Right after each execution
    #[default]
    WithExecution,
    /// All after the end marker, this long after it
    AfterEnd(Duration),
}

/// What the simulated TWS has seen (for tests).
#[derive(Debug, Clone, Default)]
pub struct Stats {
    /// Sessions started (START_API accepted)
    pub sessions: usize,
    /// Sessions refused with 326
    pub refused: usize,
    /// Executions requests answered
    pub requests: usize,
    /// Positions requests answered
    pub position_requests: usize,
    /// Client ids in use now, with how many sessions use each
    pub in_use: HashMap<i64, usize>,
}

/// What the simulated TWS serves.
#[derive(Debug, Clone)]
pub struct Scenario {
    /// The accounts of the login
    pub accounts: Vec<String>,
    /// Executions, each with its commission report
    pub executions: Vec<(Execution, Option<CommissionReport>)>,
    /// A fault, if any
    pub fault: Option<Fault>,
    /// TWS's Master API client ID: a session of another id sees only executions its own client
    /// placed. `None`: every session sees everything (the simulator's lenient default; a real
    /// TWS has no master until one is set)
    pub master_client_id: Option<i64>,
    /// Refuse a second session with a client id in use (error 326), as TWS does; default on
    pub refuse_duplicate_client_ids: bool,
    /// When commission reports are sent
    pub commissions: CommissionTiming,
    /// The login's zone: zone-less times are in it
    pub login_zone: Tz,
    /// The zone name the handshake writes after the connection time, as bytes (`None`: the
    /// login zone's IANA name); a Chinese locale writes GB2312
    pub handshake_zone: Option<Vec<u8>>,
    /// Data farm notices at connect, and 1100/1102 in the middle of each answer; default on
    pub notices: bool,
    /// Push the last execution and its report with reqId -1 before each answer
    pub push_unsolicited: bool,
    /// Position changes no execution shows (a transfer, a trade at another broker given up,
    /// an exercise): (account, symbol, signed quantity), added to a stock position of that
    /// symbol
    pub trades_elsewhere: Vec<(String, String, Decimal)>,
    /// TWS is down (restarting, say): every session is closed within 100 ms and a new
    /// connection is closed as soon as it is accepted, until this is cleared
    pub down: bool,
    /// What the server has seen
    pub stats: Stats,
    /// Live fills, to the sessions that see them (public only so that a scenario can be built
    /// with `..Scenario::default()`; [`push_execution`] sends on it)
    pub pushes: broadcast::Sender<(Execution, Option<CommissionReport>)>,
}

impl Default for Scenario {
    fn default() -> Self {
        Self {
            accounts: Vec::new(),
            executions: Vec::new(),
            fault: None,
            master_client_id: None,
            refuse_duplicate_client_ids: true,
            commissions: CommissionTiming::WithExecution,
            login_zone: Tz::UTC,
            handshake_zone: None,
            notices: true,
            push_unsolicited: false,
            trades_elsewhere: Vec::new(),
            down: false,
            stats: Stats::default(),
            pushes: broadcast::channel(1024).0,
        }
    }
}

impl Scenario {
    /// The positions the executions imply, with the trades made elsewhere: per account and
    /// instrument, the canonical executions (of each execution, the highest revision, by the
    /// simulator's own reading of an exec id) netted, bought positive, at a running average
    /// cost. A position netted to zero is still reported (TWS reports positions closed today
    /// as zero).
    pub fn positions(&self) -> Vec<Position> {
        let mut canonical: BTreeMap<(String, String), (u32, &Execution)> = BTreeMap::new();
        for (e, _) in &self.executions {
            let (base, revision) = match e.exec_id.rsplit_once('.') {
                Some((base, rev)) => (base, u32::from_str_radix(rev, 16).unwrap_or(0)),
                None => (e.exec_id.as_str(), 0),
            };
            let key = (e.account.clone(), base.to_string());
            if canonical.get(&key).is_none_or(|(r, _)| *r <= revision) {
                canonical.insert(key, (revision, e));
            }
        }
        let mut fills: Vec<&Execution> = canonical.into_values().map(|(_, e)| e).collect();
        fills.sort_by_key(|e| instant(&e.time.text, self.login_zone));
        let mut held: BTreeMap<(String, String, String), Position> = BTreeMap::new();
        for e in fills {
            let key = (
                e.account.clone(),
                e.contract.symbol.clone(),
                e.contract.sec_type.clone(),
            );
            let p = held.entry(key).or_insert_with(|| Position {
                account: e.account.clone(),
                contract: e.contract.clone(),
                position: Decimal::ZERO,
                avg_cost: None,
            });
            let signed = if e.side == "SLD" { -e.shares } else { e.shares };
            let before = p.position;
            p.position += signed;
            let cost = p.avg_cost.unwrap_or_default();
            p.avg_cost = if p.position.is_zero() {
                None
            } else if before.is_zero() || before.is_sign_negative() != p.position.is_sign_negative()
            {
                // opened, or crossed through flat: the cost is this fill's price
                Some(e.price)
            } else if before.abs() < p.position.abs() {
                // added to: the weighted average of what it held and what it bought
                Some((cost * before.abs() + e.price * e.shares) / p.position.abs())
            } else {
                Some(cost)
            };
        }
        for (account, symbol, quantity) in &self.trades_elsewhere {
            let key = (account.clone(), symbol.clone(), "STK".to_string());
            let p = held.entry(key).or_insert_with(|| Position {
                account: account.clone(),
                contract: Contract {
                    symbol: symbol.clone(),
                    sec_type: "STK".into(),
                    currency: "USD".into(),
                    local_symbol: symbol.clone(),
                    ..Contract::default()
                },
                position: Decimal::ZERO,
                avg_cost: None,
            });
            p.position += *quantity;
        }
        held.into_values().collect()
    }
}

/// Adds a fill to the scenario and pushes it (reqId -1, with its commission report) to every
/// session that sees it now, as TWS pushes a fill of an order as it happens.
pub fn push_execution(
    shared: &SharedScenario,
    execution: Execution,
    commission: Option<CommissionReport>,
) {
    let mut s = lock(shared);
    s.executions.push((execution.clone(), commission.clone()));
    // no session listening is no error: the fill waits for the next executions request
    let _ = s.pushes.send((execution, commission));
}

/// A scenario shared with the server, so a test can add executions (corrections, say) or
/// switch faults between syncs.
pub type SharedScenario = Arc<Mutex<Scenario>>;

/// Serves `scenario` on `listener` until the task is dropped; one task per connection. Each
/// executions request sees the scenario as it is when the request arrives.
pub async fn serve(listener: TcpListener, scenario: SharedScenario) -> std::io::Result<()> {
    loop {
        let (stream, _) = listener.accept().await?;
        if lock(&scenario).down {
            drop(stream);
            continue;
        }
        let scenario = scenario.clone();
        tokio::spawn(async move {
            let mut client_id = None;
            if let Err(e) = session(stream, &scenario, &mut client_id).await {
                tracing::debug!(error = %e, "simulated TWS session ended");
            }
            if let Some(id) = client_id {
                release(&scenario, id);
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

fn release(scenario: &SharedScenario, client_id: i64) {
    let mut s = lock(scenario);
    if let Some(n) = s.stats.in_use.get_mut(&client_id) {
        *n -= 1;
        if *n == 0 {
            s.stats.in_use.remove(&client_id);
        }
    }
}

/// Takes `client_id` for a new session; false if another session holds it. A session whose
/// client just left is given a moment to be noticed gone (its task sees the close a little
/// after the client's next connect can arrive).
async fn claim(scenario: &SharedScenario, client_id: i64) -> bool {
    for _ in 0..50 {
        {
            let mut s = lock(scenario);
            if !s.refuse_duplicate_client_ids || !s.stats.in_use.contains_key(&client_id) {
                *s.stats.in_use.entry(client_id).or_default() += 1;
                s.stats.sessions += 1;
                return true;
            }
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    lock(scenario).stats.refused += 1;
    false
}

/// The simulator's own reading of a TWS time: `yyyymmdd-hh:mm:ss` is UTC; `yyyymmdd hh:mm:ss`
/// (one or two spaces) is in the login's zone unless a zone name follows.
fn instant(text: &str, login_zone: Tz) -> Option<DateTime<Utc>> {
    let t = text.trim();
    if let Ok(utc) = NaiveDateTime::parse_from_str(t, "%Y%m%d-%H:%M:%S") {
        return Some(utc.and_utc());
    }
    let mut parts = t.split_whitespace();
    let date = parts.next()?;
    let clock = parts.next()?;
    let zone = match parts.collect::<Vec<_>>().join(" ") {
        name if name.is_empty() => login_zone,
        name => sim_zone(&name)?,
    };
    let wall = NaiveDateTime::parse_from_str(&format!("{date} {clock}"), "%Y%m%d %H:%M:%S").ok()?;
    match zone.from_local_datetime(&wall) {
        LocalResult::Single(t) | LocalResult::Ambiguous(t, _) => Some(t.with_timezone(&Utc)),
        LocalResult::None => None,
    }
}

/// The zone names this simulator writes and reads.
fn sim_zone(name: &str) -> Option<Tz> {
    match name {
        "EST" | "EDT" => Some(Tz::America__New_York),
        "MET" | "CET" => Some(Tz::Europe__Brussels),
        "Universal" | "GMT" => Some(Tz::UTC),
        "中国标准时间" | "CTT" => Some(Tz::Asia__Shanghai),
        other => other.parse().ok(),
    }
}

fn error_fields(id: i64, code: i64, message: &str) -> Vec<String> {
    vec![
        "4".into(),
        "2".into(),
        id.to_string(),
        code.to_string(),
        message.into(),
        String::new(),
    ]
}

const FARM_NOTICES: [(i64, &str); 3] = [
    (2104, "Market data farm connection is OK:usfarm"),
    (2106, "HMDS data farm connection is OK:ushmds"),
    (2158, "Sec-def data farm connection is OK:secdefnj"),
];

async fn session(
    mut stream: TcpStream,
    shared: &SharedScenario,
    claimed: &mut Option<i64>,
) -> Result<(), tws::TwsError> {
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
    let (login_zone, zone_bytes) = {
        let s = lock(shared);
        let bytes = s
            .handshake_zone
            .clone()
            .unwrap_or_else(|| s.login_zone.name().as_bytes().to_vec());
        (s.login_zone, bytes)
    };
    // the connection time in the login's zone, its zone name in whatever bytes TWS writes
    let now = Utc::now().with_timezone(&login_zone);
    let mut hello = format!("{version}\0{} ", now.format("%Y%m%d %H:%M:%S")).into_bytes();
    hello.extend_from_slice(&zone_bytes);
    hello.push(0);
    let mut framed = u32::try_from(hello.len())
        .unwrap_or(0)
        .to_be_bytes()
        .to_vec();
    framed.extend_from_slice(&hello);
    stream.write_all(&framed).await?;
    let mut pushes = lock(shared).pushes.subscribe();
    let (read, mut stream) = stream.into_split();
    let mut reader = tws::FrameReader::new(read);
    let mut client_id: i64 = 0;
    loop {
        // the reader is cancel-safe: a push between two reads of a frame cuts nothing
        let frame = tokio::select! {
            frame = reader.next_frame() => match frame? {
                Some(frame) => frame,
                None => break,
            },
            pushed = pushes.recv() => {
                match pushed {
                    Ok((e, c)) if *claimed == Some(client_id) => {
                        let master = lock(shared).master_client_id;
                        if master.is_none_or(|m| m == client_id) || e.client_id == client_id {
                            let mut e = e;
                            e.req_id = -1;
                            let mut out = tws::encode_fields(&tws::execution_fields(&e, version));
                            if let Some(c) = c {
                                out.extend_from_slice(&tws::encode_fields(&tws::commission_fields(&c)));
                            }
                            stream.write_all(&out).await?;
                        }
                    }
                    Ok(_) => {}
                    // a session too slow for the pushes misses some, as one that lags behind
                    // TWS would; the fills stay in the scenario for its next request
                    Err(broadcast::error::RecvError::Lagged(_)) => {}
                    // the test replaced the whole scenario: listen to the new one
                    Err(broadcast::error::RecvError::Closed) => {
                        pushes = lock(shared).pushes.subscribe();
                    }
                }
                continue;
            }
            () = tokio::time::sleep(Duration::from_millis(100)) => {
                if lock(shared).down {
                    return Ok(());
                }
                continue;
            }
        };
        let mut f = tws::Fields::parse(&frame)?;
        let id: u32 = f.int("message id")?;
        let s = |v: &str| v.to_string();
        match id {
            // START_API
            71 => {
                let _version: i64 = f.int("version")?;
                client_id = f.int("client id")?;
                if !claim(shared, client_id).await {
                    tws::write_fields(
                        &mut stream,
                        &error_fields(
                            -1,
                            tws::CLIENT_ID_IN_USE,
                            "Unable to connect as the client id is already in use. Retry with \
                             a unique client id.",
                        ),
                    )
                    .await?;
                    return Ok(());
                }
                *claimed = Some(client_id);
                tws::write_fields(&mut stream, &[s("9"), s("1"), s("1")]).await?;
                let (accounts, notices) = {
                    let sc = lock(shared);
                    (sc.accounts.join(","), sc.notices)
                };
                tws::write_fields(&mut stream, &[s("15"), s("1"), accounts]).await?;
                if notices {
                    for (code, message) in FARM_NOTICES {
                        tws::write_fields(&mut stream, &error_fields(-1, code, message)).await?;
                    }
                }
            }
            // REQ_EXECUTIONS
            7 => {
                let _version: i64 = f.int("version")?;
                let req_id: i64 = f.int("request id")?;
                let _client: i64 = f.int("client id")?;
                let account = f.string("account")?.to_string();
                let since_text = f.string("time")?.to_string();
                let symbol = f.string("symbol")?.to_string();
                let scenario = {
                    let mut sc = lock(shared);
                    sc.stats.requests += 1;
                    sc.clone()
                };
                let since = if since_text.trim().is_empty() {
                    None
                } else {
                    Some(instant(&since_text, scenario.login_zone).ok_or_else(|| {
                        tws::TwsError::Malformed(format!("filter time {since_text:?}"))
                    })?)
                };
                let open = answer(
                    &mut stream,
                    &scenario,
                    version,
                    client_id,
                    req_id,
                    (&account, &symbol, since),
                )
                .await?;
                if !open {
                    return Ok(());
                }
            }
            // REQ_POSITIONS: every account's, then the end marker
            61 => {
                let positions = {
                    let mut sc = lock(shared);
                    sc.stats.position_requests += 1;
                    sc.positions()
                };
                let mut out = Vec::new();
                for p in &positions {
                    out.extend_from_slice(&tws::encode_fields(&tws::position_fields(p)));
                }
                out.extend_from_slice(&tws::encode_fields(&[s("62"), s("1")]));
                stream.write_all(&out).await?;
            }
            // CANCEL_POSITIONS: no answer
            64 => {}
            // open orders, completed orders, account updates, account updates multi
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
                    &error_fields(
                        -1,
                        321,
                        &format!("the simulated TWS does not support message {other}"),
                    ),
                )
                .await?;
            }
        }
    }
    Ok(())
}

/// Answers one executions request; false when the connection is to be closed (a fault).
async fn answer(
    stream: &mut OwnedWriteHalf,
    scenario: &Scenario,
    version: u32,
    client_id: i64,
    req_id: i64,
    (account, symbol, since): (&str, &str, Option<DateTime<Utc>>),
) -> Result<bool, tws::TwsError> {
    let sees_all = scenario.master_client_id.is_none_or(|m| m == client_id);
    let mut out = Vec::with_capacity(64 * 1024);
    if scenario.push_unsolicited
        && let Some((execution, commission)) = scenario.executions.last()
        && (sees_all || execution.client_id == client_id)
    {
        let mut e = execution.clone();
        e.req_id = -1;
        out.extend_from_slice(&tws::encode_fields(&tws::execution_fields(&e, version)));
        if let Some(c) = commission {
            out.extend_from_slice(&tws::encode_fields(&tws::commission_fields(c)));
        }
    }
    let mut sent = 0usize;
    let mut trailing = Vec::new();
    for (execution, commission) in &scenario.executions {
        if (!account.is_empty() && execution.account != account)
            || (!symbol.is_empty() && execution.contract.symbol != symbol)
            || !(sees_all || execution.client_id == client_id)
        {
            continue;
        }
        if let Some(since) = since
            && instant(&execution.time.text, scenario.login_zone).is_some_and(|t| t < since)
        {
            continue;
        }
        match scenario.fault {
            Some(Fault::DisconnectAfter(n)) if sent == n => {
                stream.write_all(&out).await?;
                return Ok(false);
            }
            Some(Fault::MalformedAfter(n)) if sent == n => {
                out.extend_from_slice(&tws::encode_fields(&[
                    "11",
                    &req_id.to_string(),
                    "not-a-number",
                ]));
            }
            Some(Fault::HangAfter(n)) if sent == n => {
                stream.write_all(&out).await?;
                hang(stream).await?;
                return Ok(false);
            }
            _ => {}
        }
        let mut e = execution.clone();
        e.req_id = req_id;
        out.extend_from_slice(&tws::encode_fields(&tws::execution_fields(&e, version)));
        if let Some(c) = commission {
            match scenario.commissions {
                CommissionTiming::WithExecution => {
                    out.extend_from_slice(&tws::encode_fields(&tws::commission_fields(c)));
                }
                CommissionTiming::AfterEnd(_) => trailing.push(c.clone()),
            }
        }
        sent += 1;
        if sent == 1 && scenario.notices {
            // IB's nightly reset, as TWS reports it in the middle of whatever it is doing
            for (code, message) in [
                (
                    1100,
                    "Connectivity between IB and Trader Workstation has been lost.",
                ),
                (
                    1102,
                    "Connectivity between IB and Trader Workstation has been restored - data \
                     maintained.",
                ),
            ] {
                out.extend_from_slice(&tws::encode_fields(&error_fields(-1, code, message)));
            }
        }
        if out.len() > 60 * 1024 {
            stream.write_all(&out).await?;
            out.clear();
        }
    }
    if let Some(Fault::HangAfter(_)) = scenario.fault {
        stream.write_all(&out).await?;
        hang(stream).await?;
        return Ok(false);
    }
    out.extend_from_slice(&tws::encode_fields(&[
        "55".to_string(),
        "1".into(),
        req_id.to_string(),
    ]));
    stream.write_all(&out).await?;
    if let CommissionTiming::AfterEnd(delay) = scenario.commissions
        && !trailing.is_empty()
    {
        tokio::time::sleep(delay).await;
        let mut late = Vec::new();
        for c in &trailing {
            late.extend_from_slice(&tws::encode_fields(&tws::commission_fields(c)));
        }
        stream.write_all(&late).await?;
    }
    Ok(true)
}

/// A TWS that never ends its answer: a notice every 200 ms, for at most ten minutes, until the
/// client goes away.
async fn hang(stream: &mut OwnedWriteHalf) -> Result<(), tws::TwsError> {
    for _ in 0..3000 {
        tokio::time::sleep(Duration::from_millis(200)).await;
        let notice = tws::encode_fields(&error_fields(
            -1,
            2104,
            "Market data farm connection is OK:usfarm",
        ));
        if stream.write_all(&notice).await.is_err() {
            return Ok(());
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_simulator_reads_times_its_own_way() {
        let at = |text: &str, zone| instant(text, zone).map(|t| t.to_rfc3339());
        assert_eq!(
            at("20240102-10:00:00", Tz::Asia__Tokyo).as_deref(),
            Some("2024-01-02T10:00:00+00:00")
        );
        assert_eq!(
            at("20240102  10:00:00", Tz::Asia__Tokyo).as_deref(),
            Some("2024-01-02T01:00:00+00:00")
        );
        assert_eq!(
            at("20240702 10:00:00 EDT", Tz::UTC).as_deref(),
            Some("2024-07-02T14:00:00+00:00")
        );
        assert_eq!(
            at("20240102 10:00:00 US/Eastern", Tz::UTC).as_deref(),
            Some("2024-01-02T15:00:00+00:00")
        );
        assert_eq!(at("2024", Tz::UTC), None);
        assert_eq!(at("20240102 10:00:00 Mars/Olympus", Tz::UTC), None);
    }
}
