//! The IbkrSyncer actor, one per TWS session (host, port, client id): it syncs every account
//! the session serves (one TWS login may serve several; TWS refuses a second session with one
//! client id), on a schedule, on request, and for `trades.sync` jobs (idempotently enqueued, at
//! most one pending per account). A disconnect or a failed connect is a `connectivity_info`
//! trade-log event and a retry after a backoff with jitter; TWS's notices (farm status, the
//! 1100/1101/1102 of its nightly reset) are logged as connectivity state. A refusal of the
//! client id (326) is a configuration error: an alert, and no retry until a sync is asked for.
//! It holds no state a restart could lose: syncs are idempotent and jobs live in PostgreSQL (a
//! job left running by a crash is failed on start and the next job or scheduled sync covers
//! its window).
//!
//! Positions: each time the session connects (at start, after every reconnect) and for each
//! `positions.sync` job, the syncer records a snapshot of every account's positions and then
//! syncs the executions, so the window the snapshot closes has all its fills on record; after
//! every completed sync the windows that are ready are reconciled. Live: between requests the
//! session is read every [`LIVE_READ`] for what TWS pushes; a fill it pushes (an order of this
//! client, or of any with the Master API client id) enqueues a `trades.sync` and a
//! `positions.sync` of its account once TWS has been quiet for [`LIVE_QUIET`] (at most
//! [`LIVE_MAX_WAIT`] after the first), and runs them at once; a connection TWS closed while
//! idle is noticed there too, and the reconnect syncs the look-back window at once.

use std::collections::{HashMap, HashSet};
use std::time::{Duration, Instant};

use ractor::{Actor, ActorProcessingErr, ActorRef};
use rand::Rng;
use serde_json::{Value, json};
use tokio::task::JoinHandle;

use super::backfill::{FlexBackfill, run_backfill};
use super::client::{NoticeKind, TwsSession};
use super::config::{IbkrConfig, SessionConfig};
use super::job::JobOverrides;
use super::messages::IbkrSyncerMessage;
use super::sync::{SyncError, SyncRequest, sync_account};
use crate::domain::{RawJson, SyncReport, TradeLogEvent};
use crate::reconciliation::ReconcileConfig;
use crate::store::alerts::{NewAlert, insert_alert};
use crate::store::jobs::{self, POSITIONS_SYNC, TRADES_SYNC};
use crate::trade_log_writer::TradeLog;

/// How often the session is read for what TWS pushed while no request was under way.
pub const LIVE_READ: Duration = Duration::from_millis(250);
/// How long TWS must be quiet after a pushed fill before its account is synced.
pub const LIVE_QUIET: Duration = Duration::from_millis(500);
/// How long a stream of pushed fills may delay its account's sync at most.
pub const LIVE_MAX_WAIT: Duration = Duration::from_secs(2);

/// The kind of the alert raised when TWS refuses the session's client id.
pub const CLIENT_ID_IN_USE_ALERT: &str = "ibkr.client_id_in_use";
/// The kind of the alert raised when a configured account is not one of the login's.
pub const ACCOUNT_NOT_MANAGED_ALERT: &str = "ibkr.account_not_managed";

/// The process group the syncer of `account` joins (the syncer is named by its session).
pub fn group_for(account: &str) -> String {
    format!("ibkr_account.{account}")
}

/// What a syncer starts with.
#[derive(Clone)]
pub struct IbkrSyncerArgs {
    /// The session and the accounts it syncs
    pub session: SessionConfig,
    /// `[ibkr]`
    pub config: IbkrConfig,
    /// Database connections
    pub pool: deadpool_postgres::Pool,
    /// Where connectivity events go
    pub trade_log: Option<TradeLog>,
    /// The backfill from IB's Flex Web Service this syncer runs (one syncer of the gateway
    /// runs it, for every account)
    pub flex: Option<FlexBackfill>,
    /// `[reconcile]`
    pub reconcile: ReconcileConfig,
}

impl std::fmt::Debug for IbkrSyncerArgs {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("IbkrSyncerArgs")
            .field("session", &self.session)
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

/// The actor.
#[derive(Debug, Clone, Copy, Default)]
pub struct IbkrSyncer;

/// Its state.
#[derive(Debug)]
pub struct IbkrSyncerState {
    args: IbkrSyncerArgs,
    session: Option<TwsSession>,
    /// Consecutive failures that broke the session (drives the backoff)
    failures: u32,
    /// TWS refused the client id: no scheduled retries until a requested sync connects
    refused: Option<String>,
    tick_generation: u64,
    poller: Option<JoinHandle<()>>,
    /// The Flex backfill's schedule
    backfill: Option<JoinHandle<()>>,
    /// Warnings told already over this session (each is logged once per session)
    warned: HashSet<String>,
    /// The live read's schedule
    live: Option<JoinHandle<()>>,
    /// When the session was last read for pushes (a backlog of read messages after a long
    /// sync is skipped, not read one by one)
    last_live_read: Option<Instant>,
    /// Accounts with pushed fills not synced yet: when the first and the latest came
    pushed: HashMap<String, (Instant, Instant)>,
}

impl IbkrSyncerState {
    fn connectivity(&self, account: Option<&str>, event: &str, detail: Value) {
        let a = &self.args;
        let s = &a.session;
        tracing::info!(session = %s.name(), event, %detail, "IBKR connectivity");
        if let Some(log) = &a.trade_log {
            let body = json!({
                "event": event,
                "host": s.host,
                "port": s.port,
                "client_id": s.client_id,
                "accounts": s.accounts,
                "detail": detail,
            });
            log.log(TradeLogEvent::connectivity(
                "ibkr",
                account.map(str::to_string),
                RawJson::from_value(&body),
            ));
        }
    }

    async fn alert(&self, kind: &'static str, message: String, details: Value) {
        tracing::error!(session = %self.args.session.name(), kind, %message, "IBKR alert");
        metrics::counter!("tradegate_alerts_total", "kind" => kind).increment(1);
        let alert = NewAlert {
            kind: kind.into(),
            severity: "critical",
            message,
            details,
            dedupe_key: Some(format!(
                "{}:{}",
                self.args.session.name(),
                chrono::Utc::now().date_naive()
            )),
        };
        match self.args.pool.get().await {
            Ok(client) => {
                if let Err(e) = insert_alert(&**client, &alert).await {
                    tracing::warn!(error = %e, "could not store the alert");
                }
            }
            Err(e) => tracing::warn!(error = %e, "no database connection to store the alert"),
        }
    }

    /// The retry delay after `failures` consecutive failures: 1 s doubling up to the
    /// configured maximum, with up to 20 % jitter so many syncers do not reconnect in step.
    fn backoff(&self) -> Duration {
        let max = self.args.config.reconnect_max_backoff_secs.max(1);
        let secs = 1u64
            .checked_shl(self.failures.saturating_sub(1).min(16))
            .unwrap_or(max)
            .min(max);
        let base = Duration::from_secs(secs);
        let jitter_ms = rand::rng().random_range(0..=base.as_millis() / 5);
        base + Duration::from_millis(u64::try_from(jitter_ms).unwrap_or(0))
    }

    fn schedule(&mut self, myself: &ActorRef<IbkrSyncerMessage>, after: Duration) {
        self.tick_generation += 1;
        let generation = self.tick_generation;
        myself.send_after(after, move || IbkrSyncerMessage::Tick(generation));
    }

    /// The notices TWS sent since the last look, logged as connectivity state.
    fn log_notices(&mut self) {
        let Some(session) = self.session.as_mut() else {
            return;
        };
        for notice in session.take_notices() {
            let event = match notice.kind {
                NoticeKind::ConnectivityLost => "tws_lost_ib",
                NoticeKind::RestoredDataLost | NoticeKind::RestoredDataKept => "tws_restored",
                NoticeKind::SocketPortReset => "tws_port_reset",
                NoticeKind::Info | NoticeKind::Warning => "tws_notice",
            };
            self.connectivity(None, event, json!(notice));
        }
    }

    async fn connect(&mut self, myself: &ActorRef<IbkrSyncerMessage>) -> Result<(), SyncError> {
        let s = self.args.session.clone();
        let addr = format!("{}:{}", s.host, s.port);
        let connected = match tokio::net::lookup_host(&addr).await {
            Ok(mut addrs) => match addrs.next() {
                Some(socket) => {
                    TwsSession::open(socket, s.client_id, self.args.config.timeouts()).await
                }
                None => Err(super::tws::TwsError::Io(std::io::Error::other(format!(
                    "{addr} resolves to no address"
                )))),
            },
            Err(e) => Err(super::tws::TwsError::Io(e)),
        };
        match connected {
            Ok(session) => {
                let missing: Vec<&String> = s
                    .accounts
                    .iter()
                    .filter(|a| !session.accounts().contains(a))
                    .collect();
                self.connectivity(
                    None,
                    if self.failures > 0 || self.refused.is_some() {
                        "reconnected"
                    } else {
                        "connected"
                    },
                    json!({
                        "server_version": session.server_version(),
                        "accounts": session.accounts(),
                        "connection_time": session.connection_time(),
                        "missing_accounts": missing,
                    }),
                );
                if !missing.is_empty() {
                    let message = format!(
                        "the TWS login at {addr} serves {}, not the configured {}: those are \
                         not synced (check [ibkr] accounts and which login this TWS runs)",
                        session.accounts().join(", "),
                        missing
                            .iter()
                            .map(|a| a.as_str())
                            .collect::<Vec<_>>()
                            .join(", ")
                    );
                    self.alert(
                        ACCOUNT_NOT_MANAGED_ALERT,
                        message,
                        json!({"session": s.name(), "missing": missing,
                               "managed": session.accounts()}),
                    )
                    .await;
                }
                if let Some(text) =
                    super::fills::login_zone_warning(s.zone, session.connection_time())
                {
                    tracing::warn!(session = %s.name(), "{text}");
                }
                self.refused = None;
                metrics::gauge!("tradegate_ibkr_session_refused", "session" => s.name()).set(0.0);
                self.session = Some(session);
                self.log_notices();
                Ok(())
            }
            Err(e) if e.client_id_in_use() => {
                let message = format!(
                    "TWS at {addr} refused client id {}: another session uses it (error 326). \
                     Each TWS session needs its own client id; stop the other one or change \
                     [ibkr] client_id. No retries until a sync is asked for",
                    s.client_id
                );
                self.connectivity(None, "client_id_in_use", json!({"error": e.to_string()}));
                metrics::gauge!("tradegate_ibkr_session_refused", "session" => s.name()).set(1.0);
                if self.refused.is_none() {
                    self.alert(
                        CLIENT_ID_IN_USE_ALERT,
                        message.clone(),
                        json!({"session": s.name(), "error": e.to_string()}),
                    )
                    .await;
                }
                self.refused = Some(message);
                Err(e.into())
            }
            Err(e) => {
                self.failures += 1;
                let retry = self.backoff();
                self.connectivity(
                    None,
                    "connect_failed",
                    json!({"error": e.to_string(), "retry_in_ms": retry.as_millis() as u64}),
                );
                self.schedule(myself, retry);
                Err(e.into())
            }
        }
    }

    async fn sync(
        &mut self,
        myself: &ActorRef<IbkrSyncerMessage>,
        account: &str,
        lookback_days: Option<u32>,
    ) -> Result<SyncReport, SyncError> {
        if !self.args.session.accounts.iter().any(|a| a == account) {
            return Err(SyncError::UnknownAccount(account.to_string()));
        }
        if self.session.is_none() {
            self.connect(myself).await?;
            if !self.snapshot_all(myself).await {
                // the positions request ended the session: the executions sync goes on over a
                // new one, without positions (the next connect or positions.sync asks again)
                self.connect(myself).await?;
            }
        }
        let config = &self.args.config;
        let request = SyncRequest {
            account_id: account.to_string(),
            lookback: chrono::Duration::days(i64::from(
                lookback_days.unwrap_or(config.lookback_days),
            )),
            zone: self.args.session.zone,
        };
        let Some(session) = self.session.as_mut() else {
            unreachable!("connected above");
        };
        let outcome = sync_account(&self.args.pool, session, &request).await;
        self.log_notices();
        match &outcome {
            Ok(report) => {
                self.failures = 0;
                for warning in &report.warnings {
                    if self.warned.insert(warning.clone()) {
                        tracing::warn!(session = %self.args.session.name(), account, "{warning}");
                    }
                }
                // the windows a completed sync makes ready (their fills all on record)
                crate::reconciliation::reconcile_logged(
                    &self.args.pool,
                    crate::store::reconciliation::IBKR,
                    account,
                    &self.args.reconcile,
                    "sync",
                )
                .await;
            }
            Err(e) if e.breaks_session() => self.broken(myself, Some(account), e),
            Err(_) => {}
        }
        outcome
    }

    /// The session broke: it is dropped, and a reconnect scheduled after the backoff.
    fn broken(
        &mut self,
        myself: &ActorRef<IbkrSyncerMessage>,
        account: Option<&str>,
        e: &SyncError,
    ) {
        self.session = None;
        self.warned.clear();
        self.failures += 1;
        let retry = self.backoff();
        self.connectivity(
            account,
            "disconnected",
            json!({"error": e.to_string(), "retry_in_ms": retry.as_millis() as u64}),
        );
        self.schedule(myself, retry);
    }

    /// Records a positions snapshot of each of `accounts` over the session (one request).
    async fn snapshot(
        &mut self,
        myself: &ActorRef<IbkrSyncerMessage>,
        accounts: &[String],
    ) -> Result<(), SyncError> {
        let Some(session) = self.session.as_mut() else {
            return Err(SyncError::Unavailable("no TWS session".into()));
        };
        let s = &self.args.session;
        let outcome =
            super::positions::snapshot(&self.args.pool, session, (&s.host, s.port), accounts).await;
        self.log_notices();
        match &outcome {
            Err(e) if e.breaks_session() => self.broken(myself, None, e),
            Err(e) => tracing::warn!(session = %self.args.session.name(), error = %e,
                "could not record the IBKR positions; the next connect or positions.sync asks again"),
            Ok(_) => {}
        }
        outcome.map(|_| ())
    }

    /// A snapshot of every account the new session serves, before anything is synced over it
    /// (so the sync that follows completes each window); whether the session survived it.
    async fn snapshot_all(&mut self, myself: &ActorRef<IbkrSyncerMessage>) -> bool {
        let managed: Vec<String> = match &self.session {
            Some(session) => session.accounts().to_vec(),
            None => return false,
        };
        let accounts: Vec<String> = self
            .args
            .session
            .accounts
            .iter()
            .filter(|a| managed.contains(a))
            .cloned()
            .collect();
        if !accounts.is_empty() {
            let _ = self.snapshot(myself, &accounts).await;
        }
        self.session.is_some()
    }

    /// Reads what TWS pushed since the last look; the accounts whose pushed fills are due
    /// (TWS quiet for [`LIVE_QUIET`], or the first [`LIVE_MAX_WAIT`] ago) get their jobs,
    /// and the jobs run now.
    async fn read_live(&mut self, myself: &ActorRef<IbkrSyncerMessage>) {
        if self
            .last_live_read
            .is_some_and(|at| at.elapsed() < LIVE_READ / 2)
        {
            return;
        }
        self.last_live_read = Some(Instant::now());
        if let Some(session) = self.session.as_mut() {
            let read = session.read_pushed(Duration::from_millis(1)).await;
            let accounts = session.take_pushed();
            self.log_notices();
            if let Err(e) = read {
                self.broken(myself, None, &e.into());
            }
            let now = Instant::now();
            for account in accounts {
                if self.args.session.accounts.contains(&account) {
                    self.pushed
                        .entry(account)
                        .and_modify(|(_, last)| *last = now)
                        .or_insert((now, now));
                }
            }
        }
        let due: Vec<String> = self
            .pushed
            .iter()
            .filter(|(_, (first, last))| {
                last.elapsed() >= LIVE_QUIET || first.elapsed() >= LIVE_MAX_WAIT
            })
            .map(|(a, _)| a.clone())
            .collect();
        if due.is_empty() {
            return;
        }
        let client = match self.args.pool.get().await {
            Ok(client) => client,
            Err(e) => {
                tracing::warn!(error = %e, "no database connection to enqueue the syncs of pushed fills; retried");
                return;
            }
        };
        let empty = Value::Object(serde_json::Map::new());
        for account in &due {
            let mut enqueued = true;
            for kind in [TRADES_SYNC, POSITIONS_SYNC] {
                if let Err(e) = jobs::enqueue(&**client, kind, account, &empty).await {
                    tracing::warn!(account, kind, error = %e, "could not enqueue the sync of a pushed fill; retried");
                    enqueued = false;
                }
            }
            if enqueued {
                self.pushed.remove(account);
                tracing::info!(
                    account,
                    "TWS pushed fills: trades.sync and positions.sync enqueued"
                );
            }
        }
        drop(client);
        for account in due {
            self.run_positions_job(myself, &account).await;
            self.run_job(myself, &account).await;
        }
    }

    /// Syncs every account of the session in turn; whether any failure scheduled a retry.
    async fn sync_all(&mut self, myself: &ActorRef<IbkrSyncerMessage>) -> bool {
        let failures_before = self.failures;
        for account in self.args.session.accounts.clone() {
            match self.sync(myself, &account, None).await {
                Ok(_) => {}
                // the session is gone or refused: the others would fail the same way
                Err(e) if e.breaks_session() || self.session.is_none() => break,
                Err(_) => {}
            }
        }
        self.failures > failures_before
    }

    async fn run_jobs(&mut self, myself: &ActorRef<IbkrSyncerMessage>) {
        for account in self.args.session.accounts.clone() {
            self.run_positions_job(myself, &account).await;
            self.run_job(myself, &account).await;
        }
    }

    /// Claims the oldest pending job of `kind` for `account`, if any (a failure to look is
    /// logged: the next poll looks again).
    async fn claim(&self, kind: &'static str, account: &str) -> Option<jobs::Job> {
        let claimed = match self.args.pool.get().await {
            Ok(client) => jobs::claim(&**client, kind, account).await,
            Err(e) => {
                tracing::debug!(account, error = %e, "no connection to look for jobs");
                return None;
            }
        };
        claimed.unwrap_or_else(|e| {
            tracing::warn!(account, kind, error = %e, "could not claim a job");
            None
        })
    }

    /// Finishes a job with its outcome: the row keeps the error as its text.
    async fn finish<T>(&self, account: &str, job: &jobs::Job, outcome: Result<T, SyncError>) {
        let error = outcome.err().map(|e| e.to_string());
        tracing::info!(account, job = job.id, kind = %job.job_type, error = error.as_deref(),
            "job finished");
        if let Ok(client) = self.args.pool.get().await
            && let Err(e) = jobs::finish(&**client, job.id, error.as_deref()).await
        {
            tracing::warn!(account, job = job.id, error = %e, "could not finish a job");
        }
    }

    /// Claims and runs a pending `positions.sync` job of `account`: a snapshot, then an
    /// executions sync (which completes the window the snapshot closes and reconciles it). It
    /// takes no overrides; a payload with any fails, naming what it got.
    async fn run_positions_job(&mut self, myself: &ActorRef<IbkrSyncerMessage>, account: &str) {
        let Some(job) = self.claim(POSITIONS_SYNC, account).await else {
            return;
        };
        let outcome = match job.payload.as_object() {
            Some(map) if map.is_empty() => {
                let snapped = if self.session.is_some() {
                    self.snapshot(myself, &[account.to_string()]).await
                } else {
                    // a new session snapshots every account as it starts
                    Ok(())
                };
                match snapped {
                    Ok(()) => self.sync(myself, account, None).await.map(|_| ()),
                    Err(e) => Err(e),
                }
            }
            _ => Err(SyncError::Unavailable(format!(
                "a positions.sync job takes no payload, got {}",
                job.payload
            ))),
        };
        self.finish(account, &job, outcome).await;
    }

    /// A sync through a connection the job names (the spec's overrides: host, port, client
    /// id, connect timeout; see [`JobOverrides::connection`]), opened for it alone and closed
    /// after it. The session itself is left as it is.
    async fn sync_once(
        &mut self,
        account: &str,
        overrides: &JobOverrides,
        (host, port, client_id): (String, u16, i64),
    ) -> Result<SyncReport, SyncError> {
        if !self.args.session.accounts.iter().any(|a| a == account) {
            return Err(SyncError::UnknownAccount(account.to_string()));
        }
        let config = &self.args.config;
        let mut timeouts = config.timeouts();
        if let Some(secs) = overrides.connect_timeout_secs {
            timeouts.connect = Duration::from_secs(secs);
        }
        let addr = format!("{host}:{port}");
        let socket = tokio::net::lookup_host((host.as_str(), port))
            .await
            .map_err(super::tws::TwsError::Io)?
            .next()
            .ok_or_else(|| {
                super::tws::TwsError::Io(std::io::Error::other(format!(
                    "{addr} resolves to no address"
                )))
            })?;
        let mut session = TwsSession::open(socket, client_id, timeouts).await?;
        tracing::info!(account, %addr, client_id, "trades.sync job over its own connection");
        let request = SyncRequest {
            account_id: account.to_string(),
            lookback: chrono::Duration::days(i64::from(
                overrides.lookback_days.unwrap_or(config.lookback_days),
            )),
            zone: self.args.session.zone,
        };
        // the session is dropped, and its socket closed, when this returns
        let outcome = sync_account(&self.args.pool, &mut session, &request).await;
        if outcome.is_ok() {
            crate::reconciliation::reconcile_logged(
                &self.args.pool,
                crate::store::reconciliation::IBKR,
                account,
                &self.args.reconcile,
                "sync",
            )
            .await;
        }
        outcome
    }

    async fn run_job(&mut self, myself: &ActorRef<IbkrSyncerMessage>, account: &str) {
        let Some(job) = self.claim(TRADES_SYNC, account).await else {
            return;
        };
        // a bad override fails the job, with its key named, before anything is fetched
        let outcome = match JobOverrides::parse(&job.payload) {
            Ok(o) => match o.connection(&self.args.session) {
                Some(connection) => self.sync_once(account, &o, connection).await,
                None => self.sync(myself, account, o.lookback_days).await,
            },
            Err(e) => Err(SyncError::Job(e)),
        };
        self.finish(account, &job, outcome).await;
    }
}

impl Actor for IbkrSyncer {
    type Msg = IbkrSyncerMessage;
    type State = IbkrSyncerState;
    type Arguments = IbkrSyncerArgs;

    async fn pre_start(
        &self,
        myself: ActorRef<Self::Msg>,
        args: Self::Arguments,
    ) -> Result<Self::State, ActorProcessingErr> {
        match args.pool.get().await {
            Ok(client) => {
                for account in &args.session.accounts {
                    for kind in [TRADES_SYNC, POSITIONS_SYNC] {
                        match jobs::fail_interrupted(&**client, kind, account).await {
                            Ok(0) => {}
                            Ok(n) => tracing::warn!(account = %account, jobs = n, kind,
                                "jobs interrupted by a stop were marked failed"),
                            Err(e) => tracing::warn!(account = %account, error = %e,
                                "could not check for interrupted jobs"),
                        }
                    }
                }
            }
            Err(e) => tracing::warn!(session = %args.session.name(), error = %e,
                "no database connection at start; jobs are checked on the next poll"),
        }
        for account in &args.session.accounts {
            ractor::pg::join(group_for(account), vec![myself.get_cell()]);
        }
        let poll = Duration::from_secs(args.config.job_poll_secs.max(1));
        let poller = myself.send_interval(poll, || IbkrSyncerMessage::PollJobs);
        let live = myself.send_interval(LIVE_READ, || IbkrSyncerMessage::ReadLive);
        // the backfill runs beside the syncs (it waits for an account's lock while a sync
        // stores), never inside a message, so a slow Flex Web Service holds up no sync
        let backfill = args.flex.clone().map(|backfill| {
            let pool = args.pool.clone();
            tokio::spawn(async move {
                loop {
                    run_backfill(&pool, &backfill).await;
                    if backfill.interval.is_zero() {
                        break;
                    }
                    tokio::time::sleep(backfill.interval).await;
                }
            })
        });
        let mut state = IbkrSyncerState {
            args,
            session: None,
            failures: 0,
            refused: None,
            tick_generation: 0,
            poller: Some(poller),
            backfill,
            warned: HashSet::new(),
            live: Some(live),
            last_live_read: None,
            pushed: HashMap::new(),
        };
        if state.args.config.sync_interval_secs > 0 {
            state.schedule(&myself, Duration::from_millis(200));
        }
        Ok(state)
    }

    async fn post_stop(
        &self,
        _myself: ActorRef<Self::Msg>,
        state: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        if let Some(backfill) = state.backfill.take() {
            backfill.abort();
        }
        for task in [state.poller.take(), state.live.take()]
            .into_iter()
            .flatten()
        {
            task.abort();
        }
        Ok(())
    }

    async fn handle(
        &self,
        myself: ActorRef<Self::Msg>,
        message: Self::Msg,
        state: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        match message {
            IbkrSyncerMessage::SyncNow {
                account,
                lookback_days,
                reply,
            } => {
                let outcome = state.sync(&myself, &account, lookback_days).await;
                // the caller may have given up waiting; the sync is done either way
                let _ = reply.send(outcome);
            }
            IbkrSyncerMessage::Tick(generation) => {
                if generation != state.tick_generation {
                    return Ok(());
                }
                if state.refused.is_some() && state.session.is_none() {
                    // a configuration error: wait for a requested sync or a job
                    return Ok(());
                }
                // a failure scheduled its own retry; otherwise the next regular sync
                let retried = state.sync_all(&myself).await;
                let interval = state.args.config.sync_interval_secs;
                if !retried && state.refused.is_none() && interval > 0 {
                    state.schedule(&myself, Duration::from_secs(interval));
                }
            }
            IbkrSyncerMessage::PollJobs => state.run_jobs(&myself).await,
            IbkrSyncerMessage::ReadLive => state.read_live(&myself).await,
        }
        Ok(())
    }
}

/// Calls the syncer of an account, found by name on every call (so it survives restarts).
#[derive(Debug, Clone)]
pub struct IbkrSyncClient {
    timeout: Duration,
}

impl IbkrSyncClient {
    /// A client whose calls wait at most `timeout` for a sync to finish.
    pub fn new(timeout: Duration) -> Self {
        Self { timeout }
    }

    /// Syncs `account` now.
    pub async fn sync(
        &self,
        account: &str,
        lookback_days: Option<u32>,
    ) -> Result<SyncReport, SyncError> {
        let actor: ActorRef<IbkrSyncerMessage> = ractor::pg::get_members(&group_for(account))
            .into_iter()
            .next()
            .ok_or_else(|| SyncError::UnknownAccount(account.to_string()))?
            .into();
        let outcome = actor
            .call(
                |reply| IbkrSyncerMessage::SyncNow {
                    account: account.to_string(),
                    lookback_days,
                    reply,
                },
                Some(self.timeout),
            )
            .await;
        match outcome {
            Ok(ractor::rpc::CallResult::Success(result)) => result,
            Ok(ractor::rpc::CallResult::Timeout) => Err(SyncError::TimedOut(format!(
                "the sync of {account} did not finish within {:?}; it goes on and is recorded",
                self.timeout
            ))),
            Ok(ractor::rpc::CallResult::SenderError) | Err(_) => Err(SyncError::Unavailable(
                format!("the syncer of {account} stopped before it answered"),
            )),
        }
    }
}
