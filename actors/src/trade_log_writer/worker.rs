//! The writer loop: takes events off the queue, batches them by size or age, and writes each
//! batch in one transaction. A database failure spills the batch to disk (fsynced) and starts
//! exponential backoff with jitter; meanwhile new batches spill too, so memory stays bounded.
//! Once the database answers again, spill files are replayed oldest first through the
//! deduplicating path, in chunks, and each file is deleted only after its last chunk commits.
//!
//! No single wait on the database holds the loop for long: a batch's write has [`WRITE_TIMEOUT`],
//! a connect [`CONNECT_TIMEOUT`], every statement of a replay or of the row isolation its own
//! deadline, and a replay round stops after [`REPLAY_BUDGET`] (resuming where it stopped). So an
//! event waits in memory (where a SIGKILL would take it) for at most about one deadline plus one
//! round before it is committed or fsynced to a spill file.

use std::collections::{HashSet, VecDeque};
use std::time::{Duration, Instant};

use chrono::NaiveDate;
use serde::Serialize;
use tokio::sync::{mpsc, oneshot};
use tokio_postgres::Client;

use super::config::{TradeLogConfig, WriteMode};
use super::handle::{Gap, TradeLog};
use super::spill::{SpillReader, SpillStore, append_dead_letter};
use crate::domain::{TradeLogEvent, now_us};
use crate::store::{self, OwnedClient, tradelog};

/// How often an idle writer checks for recovery and spill files.
const HOUSEKEEPING_EVERY: Duration = Duration::from_millis(250);
/// Connect timeout of the writer's own connection.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(3);
/// Connect timeout of the second connection: only a speed-up, so it may not wait long.
const SPARE_CONNECT_TIMEOUT: Duration = Duration::from_secs(1);
/// Longest a batch's write may take. A write without an answer (a lost COMMIT answer, a
/// half-open connection) is a failure: the batch is spilled to disk and replayed later through
/// the deduplicating path, so events never wait in memory, where a SIGKILL would take them,
/// for longer than this.
const WRITE_TIMEOUT: Duration = Duration::from_secs(3);
/// How long one round of recovery may replay spill files before the loop takes new events
/// again (it goes on at the next round, where it stopped): a long backlog never holds new
/// events in memory.
const REPLAY_BUDGET: Duration = Duration::from_secs(1);
/// Longest one statement of a replay or of the row isolation may take, for up to
/// [`ROWS_PER_EXTRA_SECOND`] rows; a second more per as many rows again.
const STATEMENT_TIMEOUT: Duration = Duration::from_secs(3);
const ROWS_PER_EXTRA_SECOND: usize = 5_000;
/// Events replayed per transaction: a spill file of any size is replayed in bounded steps.
const REPLAY_CHUNK: usize = 5_000;
/// Gap rows kept, exactly as built, while it is unknown whether a write stored them (a
/// timed-out write that may have committed, and no spill directory to put them in): they are
/// written again through the deduplicating path, so a gap is never recorded twice.
const UNSURE_GAP_ROWS_MAX: usize = 1_000;

/// What the writer has done since it started.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct WriterStats {
    /// Events committed through the normal path
    pub written: u64,
    /// Batches committed through the normal path
    pub batches: u64,
    /// Events appended to spill files
    pub spilled: u64,
    /// Events inserted by replays of spill files
    pub replayed: u64,
    /// Replayed events that were already in the table (commit outcome had been unknown)
    pub replay_duplicates: u64,
    /// Spill files replayed and removed
    pub replayed_files: u64,
    /// Rows the database refused, written to the dead-letter file
    pub dead_letters: u64,
    /// Events dropped by producers on queue overflow (from the handle)
    pub dropped_on_overflow: u64,
    /// Events lost because neither the database nor the spill directory could take them
    pub lost: u64,
    /// Gap rows written
    pub gap_rows: u64,
    /// Torn last lines quarantined
    pub torn_lines: u64,
    /// Corrupt lines found in spill files
    pub corrupt_lines: u64,
    /// Spill files moved to quarantine
    pub quarantined_files: u64,
    /// Spill files skipped until the next start: unreadable, or replayed but not removable
    pub set_aside_files: usize,
    /// Batches a row of which the database refused; written again row by row in the replay
    pub refused_batches: u64,
    /// Spill files waiting for replay
    pub spill_files_pending: usize,
    /// Events held in memory because the spill directory failed
    pub memory_buffered: usize,
    /// Database failures seen
    pub db_errors: u64,
    /// Whether the last database operation succeeded
    pub database_ok: bool,
    /// Current write mode
    pub write_mode: String,
}

/// Commands from the actor.
#[derive(Debug)]
pub(crate) enum Command {
    /// Persist everything queued; if the database answers, replay every spill file; reply.
    Flush(oneshot::Sender<WriterStats>),
    /// Reply with the statistics.
    Stats(oneshot::Sender<WriterStats>),
    /// Persist (or spill) everything queued, then stop.
    Stop(oneshot::Sender<WriterStats>),
}

/// How a failed statement is handled.
#[derive(Debug, PartialEq, Eq)]
enum Failure {
    /// The connection or server failed; the outcome may be unknown. Spill and back off.
    Transient,
    /// Some row is unacceptable (constraint, type, range); isolate it.
    Poison,
    /// A day has no partition.
    MissingPartition,
    /// COPY itself is not possible here; use INSERT.
    CopyUnsupported,
}

/// A failed write: a database error, no connection at all, no answer in time, or a row the
/// database refuses (the batch is then spilled and isolated by the replay, where it cannot hold
/// anything else back).
#[derive(Debug)]
enum WriteError {
    Db(tokio_postgres::Error),
    NotConnected,
    TimedOut,
    Refused(String),
}

impl From<tokio_postgres::Error> for WriteError {
    fn from(e: tokio_postgres::Error) -> Self {
        Self::Db(e)
    }
}

impl WriteError {
    fn sqlstate(&self) -> Option<String> {
        match self {
            Self::Db(e) => e.as_db_error().map(|db| db.code().code().to_string()),
            Self::NotConnected | Self::TimedOut | Self::Refused(_) => None,
        }
    }

    /// Whether the write may have been stored although it reported a failure.
    fn outcome_unknown(&self) -> bool {
        match self {
            Self::TimedOut => true,
            Self::Db(e) => e.as_db_error().is_none(),
            Self::NotConnected | Self::Refused(_) => false,
        }
    }
}

/// `future` with a deadline: no answer in `limit` is [`WriteError::TimedOut`].
async fn within<T, E>(
    limit: Duration,
    future: impl Future<Output = Result<T, E>>,
) -> Result<T, WriteError>
where
    WriteError: From<E>,
{
    match tokio::time::timeout(limit, future).await {
        Ok(result) => result.map_err(WriteError::from),
        Err(_) => Err(WriteError::TimedOut),
    }
}

/// The deadline of one statement over `rows` rows.
fn statement_limit(rows: usize) -> Duration {
    STATEMENT_TIMEOUT
        + Duration::from_secs(u64::try_from(rows / ROWS_PER_EXTRA_SECOND).unwrap_or(u64::MAX))
}

fn classify(e: &WriteError) -> Failure {
    let e = match e {
        WriteError::Db(e) => e,
        WriteError::Refused(_) => return Failure::Poison,
        WriteError::NotConnected | WriteError::TimedOut => return Failure::Transient,
    };
    let Some(db) = e.as_db_error() else {
        return Failure::Transient;
    };
    let code = db.code().code();
    if code == "23514" && db.message().contains("no partition") {
        return Failure::MissingPartition;
    }
    if code == "0A000" {
        return Failure::CopyUnsupported;
    }
    if store::is_refusal(e) {
        return Failure::Poison;
    }
    Failure::Transient
}

fn describe(e: &WriteError) -> String {
    match e {
        WriteError::Db(e) => store::describe(e),
        WriteError::NotConnected => "not connected".into(),
        WriteError::TimedOut => "no answer in time".into(),
        WriteError::Refused(why) => format!("a row was refused: {why}"),
    }
}

/// Why a gap row is written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum GapReason {
    QueueOverflow,
    MemoryBufferOverflow,
    DeadLetter,
    SpillTornLine,
    SpillCorruptLine,
}

impl GapReason {
    fn as_str(self) -> &'static str {
        match self {
            Self::QueueOverflow => "queue_overflow",
            Self::MemoryBufferOverflow => "memory_buffer_overflow",
            Self::DeadLetter => "dead_letter",
            Self::SpillTornLine => "spill_torn_line",
            Self::SpillCorruptLine => "spill_corrupt_line",
        }
    }
}

/// A spill file part way through its replay: read a chunk at a time; `pending` is the chunk
/// read and not yet settled.
struct Replaying {
    path: std::path::PathBuf,
    reader: SpillReader,
    pending: Vec<TradeLogEvent>,
}

pub(crate) struct Worker {
    log: TradeLog,
    config: TradeLogConfig,
    conninfo: String,
    client: Option<OwnedClient>,
    /// A second connection, so that a large batch is written as two concurrent halves
    spare: Option<OwnedClient>,
    mode: WriteMode,
    spill: SpillStore,
    memory: VecDeque<TradeLogEvent>,
    gaps: Vec<(Gap, GapReason)>,
    unsure_gap_rows: Vec<TradeLogEvent>,
    /// The spill file being replayed, read once, and how many of its events are settled
    replaying: Option<Replaying>,
    /// Counts steps of recovery that settled something (a chunk, a file, the memory buffer)
    progress: u64,
    failures_in_a_row: u32,
    retry_at: Option<Instant>,
    known_days: HashSet<NaiveDate>,
    stats: WriterStats,
    batch: Vec<TradeLogEvent>,
    batch_started: Option<Instant>,
    last_housekeeping: Instant,
}

impl Worker {
    pub(crate) fn new(
        log: TradeLog,
        config: TradeLogConfig,
        conninfo: String,
        spill: SpillStore,
    ) -> Self {
        let mode = config.write_mode;
        Self {
            log,
            conninfo,
            client: None,
            spare: None,
            mode,
            spill,
            memory: VecDeque::new(),
            gaps: Vec::new(),
            unsure_gap_rows: Vec::new(),
            replaying: None,
            progress: 0,
            failures_in_a_row: 0,
            retry_at: None,
            known_days: HashSet::new(),
            stats: WriterStats::default(),
            batch: Vec::with_capacity(config.batch_size),
            batch_started: None,
            last_housekeeping: Instant::now(),
            config,
        }
    }

    /// Runs until told to stop; replays leftover spill files first.
    pub(crate) async fn run(mut self, mut commands: mpsc::Receiver<Command>) {
        self.recover().await;
        loop {
            self.fill_batch();
            let full = self.batch.len() >= self.config.batch_size;
            let aged = self
                .batch_started
                .is_some_and(|t| t.elapsed() >= self.config.batch_max_age());
            if full || aged {
                self.persist_batch().await;
                // under constant load a batch is always due: the backlog (a refused batch
                // spilled for isolation) is still served every round
                if self.last_housekeeping.elapsed() < HOUSEKEEPING_EVERY {
                    continue;
                }
            }
            // a backlog being replayed is served even while batches come (they spill behind it)
            if self.last_housekeeping.elapsed() >= HOUSEKEEPING_EVERY
                && (self.batch.is_empty() || self.retry_at.is_some() || self.has_backlog())
            {
                self.housekeeping().await;
                self.last_housekeeping = Instant::now();
            }
            let wait = match self.batch_started {
                Some(t) => self.config.batch_max_age().saturating_sub(t.elapsed()),
                None if self.log.queued() > 0 => Duration::ZERO,
                None => self.config.idle_poll(),
            };
            let command = tokio::select! {
                command = commands.recv() => Some(command),
                () = tokio::time::sleep(wait.min(self.config.idle_poll())) => None,
            };
            match command {
                None => {}
                Some(Some(Command::Stats(reply))) => {
                    let _ = reply.send(self.stats());
                }
                Some(Some(Command::Flush(reply))) => {
                    self.drain().await;
                    self.retry_at = None;
                    self.recover_all().await;
                    let _ = reply.send(self.stats());
                }
                Some(Some(Command::Stop(reply))) => {
                    self.drain().await;
                    tracing::info!(
                        spill_files_pending = self.spill.pending_files(),
                        "trade-log writer stopped after draining its queue"
                    );
                    let _ = reply.send(self.stats());
                    return;
                }
                // the actor is gone: drain and stop
                Some(None) => {
                    self.drain().await;
                    return;
                }
            }
        }
    }

    /// Takes events off the queue: up to `batch_size`, or, once a batch is due and more are
    /// already waiting, up to `max_batch_size`.
    fn fill_batch(&mut self) {
        let limit = if self.batch.len() + self.log.queued() > self.config.batch_size {
            self.config.max_batch_size
        } else {
            self.config.batch_size
        };
        while self.batch.len() < limit {
            match self.log.shared.rx.try_recv() {
                Ok(event) => {
                    if self.batch.is_empty() {
                        self.batch_started = Some(Instant::now());
                    }
                    self.batch.push(event);
                }
                Err(_) => break,
            }
        }
        metrics::gauge!("tradegate_tradelog_queue_depth").set(self.log.queued() as f64);
    }

    /// Persists everything queued, batch by batch, including pending gap records.
    async fn drain(&mut self) {
        loop {
            self.fill_batch();
            if self.batch.is_empty() {
                break;
            }
            self.persist_batch().await;
        }
        if self.log.gap_pending() || !self.gaps.is_empty() {
            self.persist_batch().await;
        }
    }

    /// Writes the current batch, with rows for any pending gaps in front. When the database
    /// cannot take it, the batch is spilled; when even that fails, the events wait in memory
    /// while the gaps stay pending as compact records (a gap is never itself lost).
    async fn persist_batch(&mut self) {
        let events = std::mem::take(&mut self.batch);
        self.batch_started = None;
        self.batch.reserve(self.config.batch_size);
        if let Some(gap) = self.log.take_gap() {
            self.add_gap(gap, GapReason::QueueOverflow);
        }
        let gaps = std::mem::take(&mut self.gaps);
        if events.is_empty() && gaps.is_empty() {
            return;
        }
        let mut rows: Vec<TradeLogEvent> = gaps.iter().map(|(g, r)| gap_row(*g, *r)).collect();
        rows.extend(events);
        metrics::histogram!("tradegate_tradelog_batch_size").record(rows.len() as f64);
        if self.database_usable() {
            let started = Instant::now();
            // A large batch (a backlog) is written as two halves in two concurrent
            // transactions, so that two server processes share the work. The gap rows are at
            // the front, in the first half. Each half succeeds or is spilled on its own.
            let split = if rows.len() >= 2 * self.config.batch_size && self.ensure_spare().await {
                rows.len() / 2
            } else {
                rows.len()
            };
            let (first, second) = rows.split_at(split);
            let written = tokio::time::timeout(WRITE_TIMEOUT, async {
                if second.is_empty() {
                    (self.write(first, false).await, Ok(0))
                } else {
                    self.write_halves(first, second).await
                }
            })
            .await;
            // unanswered: neither half is known to be stored (the replay skips what was)
            let (first_result, second_result) =
                written.unwrap_or((Err(WriteError::TimedOut), Err(WriteError::TimedOut)));
            let mut unsaved: &[TradeLogEvent] = &[];
            let mut gaps_saved = true;
            let mut gaps_unsure = false;
            match (first_result, second_result) {
                (Ok(_), Ok(_)) => {}
                (Err(e), second_result) => {
                    self.write_failed(&e);
                    gaps_saved = false;
                    gaps_unsure = e.outcome_unknown();
                    unsaved = match second_result {
                        Ok(_) => first,
                        Err(second_error) => {
                            // one failure of the database counts once
                            if matches!(e, WriteError::Refused(_))
                                || matches!(second_error, WriteError::Refused(_))
                            {
                                self.write_failed(&second_error);
                            }
                            &rows[..]
                        }
                    };
                }
                (Ok(_), Err(e)) => {
                    self.write_failed(&e);
                    unsaved = second;
                }
            }
            let saved = rows.len() - unsaved.len();
            self.stats.written += (saved - if gaps_saved { gaps.len() } else { 0 }) as u64;
            if gaps_saved {
                self.stats.gap_rows += gaps.len() as u64;
            }
            if unsaved.is_empty() {
                metrics::histogram!("tradegate_tradelog_insert_seconds")
                    .record(started.elapsed().as_secs_f64());
                self.stats.batches += 1;
                return;
            }
            if gaps_saved {
                self.spill_or_buffer(unsaved, &[]);
                return;
            }
            let unsaved = unsaved.to_vec();
            let (gap_rows, events) = unsaved.split_at(gaps.len());
            if self.spill_or_buffer(events, gap_rows) {
                self.stats.gap_rows += gaps.len() as u64;
            } else if gaps_unsure && self.unsure_gap_rows.len() < UNSURE_GAP_ROWS_MAX {
                // they may be stored already: keep them as they are, to be deduplicated
                self.unsure_gap_rows.extend_from_slice(gap_rows);
            } else {
                for (gap, reason) in gaps {
                    self.add_gap(gap, reason);
                }
            }
            return;
        }
        if self.spill_or_buffer(&rows[gaps.len()..], &rows[..gaps.len()]) {
            self.stats.gap_rows += gaps.len() as u64;
        } else {
            for (gap, reason) in gaps {
                self.add_gap(gap, reason);
            }
        }
    }

    /// Adds to the pending gap of the same reason (one record per reason, so memory stays
    /// bounded however long an outage lasts).
    fn add_gap(&mut self, gap: Gap, reason: GapReason) {
        match self.gaps.iter_mut().find(|(_, r)| *r == reason) {
            Some((pending, _)) => pending.add(gap),
            None => self.gaps.push((gap, reason)),
        }
    }

    fn database_usable(&self) -> bool {
        self.client.as_ref().is_some_and(|c| !c.is_closed()) && self.retry_at.is_none()
    }

    /// A batch's write failed: a refused row is not the database's failure (the batch is
    /// spilled and its rows isolated by the replay), anything else is.
    fn write_failed(&mut self, error: &WriteError) {
        if let WriteError::Refused(why) = error {
            self.stats.refused_batches += 1;
            metrics::counter!("tradegate_tradelog_refused_batches_total").increment(1);
            tracing::warn!(error = %why, "trade-log writer: the database refused a row of a batch; the batch is spilled and its rows written one by one by the replay");
        } else {
            self.database_failed(error, "writing a batch");
        }
    }

    fn database_failed(&mut self, error: &WriteError, doing: &str) {
        self.stats.db_errors += 1;
        self.stats.database_ok = false;
        self.failures_in_a_row = self.failures_in_a_row.saturating_add(1);
        let delay = backoff_delay(
            self.config.backoff_base_ms,
            self.config.backoff_max_ms,
            self.failures_in_a_row,
        );
        self.retry_at = Some(Instant::now() + delay);
        self.client = None;
        self.spare = None;
        metrics::counter!("tradegate_tradelog_errors_total", "kind" => "database").increment(1);
        tracing::warn!(
            error = %describe(error),
            retry_in_ms = u64::try_from(delay.as_millis()).unwrap_or(u64::MAX),
            "trade-log writer: database failed while {doing}; spilling to disk until it is back"
        );
    }

    /// Appends `gap_rows` and `events` to the spill file; returns whether that worked. If it
    /// did not, the events are kept in memory (the oldest beyond the limit are lost, counted
    /// and recorded as a gap) and the caller keeps the gaps pending.
    fn spill_or_buffer(&mut self, events: &[TradeLogEvent], gap_rows: &[TradeLogEvent]) -> bool {
        if !self.memory.is_empty() {
            let buffered: Vec<TradeLogEvent> = self.memory.iter().cloned().collect();
            if self.spill.append(&buffered).is_ok() {
                self.count_spilled(buffered.len());
                self.memory.clear();
            }
        }
        let mut rows = Vec::with_capacity(gap_rows.len() + events.len());
        rows.extend_from_slice(gap_rows);
        rows.extend_from_slice(events);
        let spilled = match self.spill.append(&rows) {
            Ok(()) => {
                self.count_spilled(rows.len());
                true
            }
            Err(e) => {
                metrics::counter!("tradegate_tradelog_errors_total", "kind" => "spill")
                    .increment(1);
                tracing::error!(
                    error = %e,
                    "trade-log writer: cannot spill to disk; holding events in memory"
                );
                self.memory.extend(events.iter().cloned());
                let excess = self
                    .memory
                    .len()
                    .saturating_sub(self.config.memory_buffer_events);
                if excess > 0 {
                    let lost: Vec<TradeLogEvent> = self.memory.drain(..excess).collect();
                    self.stats.lost += lost.len() as u64;
                    metrics::counter!("tradegate_tradelog_lost_events_total")
                        .increment(lost.len() as u64);
                    tracing::error!(
                        lost = lost.len(),
                        lost_total = self.stats.lost,
                        "trade-log writer: memory buffer full with neither database nor spill directory available; events lost (a gap row will record them)"
                    );
                    self.record_gap(&lost, GapReason::MemoryBufferOverflow);
                }
                false
            }
        };
        metrics::gauge!("tradegate_tradelog_memory_buffered_events").set(self.memory.len() as f64);
        spilled
    }

    fn count_spilled(&mut self, n: usize) {
        self.stats.spilled += n as u64;
        metrics::counter!("tradegate_tradelog_spilled_events_total").increment(n as u64);
    }

    fn record_gap(&mut self, events: &[TradeLogEvent], reason: GapReason) {
        let (Some(first), Some(last)) = (
            events.iter().map(|e| e.local_ts_us).min(),
            events.iter().map(|e| e.local_ts_us).max(),
        ) else {
            return;
        };
        self.add_gap(
            Gap {
                count: events.len() as u64,
                first_local_ts_us: first,
                last_local_ts_us: last,
            },
            reason,
        );
    }

    async fn connect(&mut self) -> Result<(), WriteError> {
        if self.client.as_ref().is_some_and(|c| !c.is_closed()) {
            return Ok(());
        }
        self.client = None;
        // tokio-postgres's connect timeout covers the socket, not the start-up exchange: a
        // server that accepts and then says nothing is given up on here
        let client = within(
            CONNECT_TIMEOUT,
            store::connect_owned(&self.conninfo, CONNECT_TIMEOUT),
        )
        .await?;
        self.client = Some(client);
        Ok(())
    }

    /// Checks for recovery when the backoff has passed and replays spill files when the
    /// database is usable.
    async fn housekeeping(&mut self) {
        if self.retry_at.is_some_and(|t| Instant::now() >= t)
            || (self.retry_at.is_none() && self.has_backlog())
        {
            self.recover().await;
        }
        self.stats.spill_files_pending = self.spill.pending_files();
        metrics::gauge!("tradegate_tradelog_spill_files")
            .set(self.stats.spill_files_pending as f64);
        metrics::gauge!("tradegate_tradelog_oldest_spill_age_seconds")
            .set(self.spill.oldest_age_secs().unwrap_or(0.0));
    }

    fn has_backlog(&self) -> bool {
        !self.memory.is_empty() || self.spill.pending_files() > 0
    }

    /// Recovers round after round until the backlog is written, the database fails, or a
    /// round settles nothing (a file that can be neither read nor removed is set aside, so
    /// this cannot spin).
    async fn recover_all(&mut self) {
        loop {
            let before = self.progress;
            self.recover().await;
            let failed =
                self.retry_at.is_some_and(|t| t > Instant::now()) || !self.stats.database_ok;
            if failed || !self.has_backlog() || self.progress == before {
                return;
            }
            self.retry_at = None;
        }
    }

    /// Ends a recovery round early with work left: the database is fine, and until the
    /// backlog is done new batches are spilled behind it (on disk, never held in memory).
    fn pause_recovery(&mut self) {
        self.failures_in_a_row = 0;
        self.stats.database_ok = true;
        self.retry_at = Some(Instant::now());
    }

    /// Reconnects and replays, in chunks, the gap rows of unknown outcome, the spill files
    /// (oldest first) and the memory buffer, for about [`REPLAY_BUDGET`] per call: what is left
    /// waits for the next round, which resumes where this one stopped.
    async fn recover(&mut self) {
        if let Err(e) = self.connect().await {
            self.database_failed(&e, "reconnecting");
            return;
        }
        let budget = Instant::now() + REPLAY_BUDGET;
        if !self.unsure_gap_rows.is_empty() {
            let rows = std::mem::take(&mut self.unsure_gap_rows);
            match self.replay_all(&rows, budget).await {
                Ok(settled) if settled == rows.len() => self.progress += 1,
                Ok(settled) => {
                    self.unsure_gap_rows = rows[settled..].to_vec();
                    self.pause_recovery();
                    return;
                }
                Err((settled, e)) => {
                    self.unsure_gap_rows = rows[settled..].to_vec();
                    self.database_failed(&e, "writing gap rows");
                    return;
                }
            }
        }
        self.spill.close_active();
        let files = match self.spill.closed_files() {
            Ok(files) => files,
            Err(e) => {
                tracing::error!(error = %e, "trade-log writer: cannot list spill files");
                Vec::new()
            }
        };
        'files: for path in files {
            // the file part way through keeps its place even if a newer name sorts before it
            // (a clock stepped back)
            let mut current = match self.replaying.take_if(|r| r.path == path) {
                Some(current) => current,
                _ => match SpillReader::open(&path) {
                    Ok(reader) => Replaying {
                        path: path.clone(),
                        reader,
                        pending: Vec::new(),
                    },
                    Err(e) => {
                        self.set_aside(&path, &e.to_string());
                        continue;
                    }
                },
            };
            loop {
                if current.pending.is_empty() {
                    match current.reader.next_events(REPLAY_CHUNK) {
                        Ok(events) if events.is_empty() => break,
                        Ok(events) => current.pending = events,
                        Err(e) => {
                            // what was replayed of it is stored; a restart replays it again
                            self.set_aside(&path, &e.to_string());
                            continue 'files;
                        }
                    }
                }
                let (settled, failure) = match self.replay_all(&current.pending, budget).await {
                    Ok(settled) => (settled, None),
                    Err((settled, e)) => (settled, Some(e)),
                };
                current.pending.drain(..settled);
                if settled > 0 {
                    self.progress += 1;
                }
                if let Some(e) = failure {
                    self.replaying = Some(current);
                    self.database_failed(&e, "replaying a spill file");
                    return;
                }
                if Instant::now() >= budget
                    && !(current.pending.is_empty() && current.reader.finished())
                {
                    self.replaying = Some(current);
                    self.pause_recovery();
                    return;
                }
            }
            self.after_replay(&current.path, &current.reader);
            self.progress += 1;
            if Instant::now() >= budget && self.spill.pending_files() > 0 {
                self.pause_recovery();
                return;
            }
        }
        while !self.memory.is_empty() {
            let buffered: Vec<TradeLogEvent> =
                self.memory.iter().take(REPLAY_CHUNK).cloned().collect();
            let result = self.replay_all(&buffered, budget).await;
            let settled = match &result {
                Ok(settled) | Err((settled, _)) => *settled,
            };
            self.memory.drain(..settled.min(self.memory.len()));
            if settled > 0 {
                self.progress += 1;
            }
            if let Err((_, e)) = result {
                self.database_failed(&e, "writing the memory buffer");
                return;
            }
            if !self.memory.is_empty() && Instant::now() >= budget {
                self.pause_recovery();
                return;
            }
        }
        self.failures_in_a_row = 0;
        self.retry_at = None;
        self.stats.database_ok = true;
        // gaps recorded while nothing could be written are written now
        if !self.gaps.is_empty() && self.batch.is_empty() {
            self.persist_batch().await;
        }
    }

    /// Replays `events` chunk by chunk until done or past `budget`; returns how many are
    /// settled (stored, found stored, or dead-lettered), a prefix of `events`.
    async fn replay_all(
        &mut self,
        events: &[TradeLogEvent],
        budget: Instant,
    ) -> Result<usize, (usize, WriteError)> {
        let mut settled = 0;
        while settled < events.len() {
            let end = (settled + REPLAY_CHUNK).min(events.len());
            match self.replay_chunk(&events[settled..end], budget).await {
                Ok(n) => settled += n,
                Err(e) => return Err((settled, e)),
            }
            if Instant::now() >= budget {
                break;
            }
        }
        Ok(settled)
    }

    /// Writes one chunk through the deduplicating path; a refused row is isolated (within
    /// `budget`, so a chunk may be settled only in part). Returns how many are settled.
    async fn replay_chunk(
        &mut self,
        events: &[TradeLogEvent],
        budget: Instant,
    ) -> Result<usize, WriteError> {
        let (inserted, settled) = match self.write(events, true).await {
            Ok(inserted) => (inserted, events.len()),
            Err(WriteError::Refused(_)) => self.isolate(events, budget).await?,
            Err(e) => return Err(e),
        };
        let duplicates = (settled as u64).saturating_sub(inserted);
        self.stats.replayed += inserted;
        self.stats.replay_duplicates += duplicates;
        metrics::counter!("tradegate_tradelog_replayed_events_total").increment(inserted);
        Ok(settled)
    }

    /// Skips a spill file that cannot be read, quarantined or removed until the next start,
    /// so that it holds back neither the newer files nor a flush.
    fn set_aside(&mut self, path: &std::path::Path, why: &str) {
        self.spill.set_aside(path);
        self.stats.set_aside_files = self.spill.set_aside_files();
        metrics::gauge!("tradegate_tradelog_spill_files_set_aside")
            .set(self.stats.set_aside_files as f64);
        tracing::error!(
            file = %path.display(),
            error = %why,
            "trade-log writer: a spill file is set aside until the next start (its events stay on disk; a replay is deduplicated)"
        );
    }

    /// A file's events are committed: quarantine what was wrong with it and remove it.
    fn after_replay(&mut self, path: &std::path::Path, read: &SpillReader) {
        if read.torn.is_some() {
            self.stats.torn_lines += 1;
            metrics::counter!("tradegate_tradelog_spill_torn_lines_total").increment(1);
            tracing::warn!(file = %path.display(), "trade-log spill file ended in a torn line (a crash mid-append); quarantined it");
            let at = read.last_local_ts_us.unwrap_or_else(now_us);
            self.add_gap(
                Gap {
                    count: 1,
                    first_local_ts_us: at,
                    last_local_ts_us: at,
                },
                GapReason::SpillTornLine,
            );
        }
        if !read.corrupt.is_empty() {
            let corrupt = read.corrupt.len() as u64;
            self.stats.corrupt_lines += corrupt;
            self.stats.quarantined_files += 1;
            metrics::counter!("tradegate_tradelog_spill_corrupt_lines_total").increment(corrupt);
            metrics::counter!("tradegate_tradelog_spill_quarantined_files_total").increment(1);
            tracing::error!(
                file = %path.display(),
                corrupt_lines = corrupt,
                intact_events = read.intact,
                "trade-log spill file has corrupt lines: its intact events were replayed, the file is quarantined, and a gap row records the loss"
            );
            let first = read.first_local_ts_us.unwrap_or_else(now_us);
            let last = read.last_local_ts_us.unwrap_or(first);
            self.add_gap(
                Gap {
                    count: corrupt,
                    first_local_ts_us: first,
                    last_local_ts_us: last,
                },
                GapReason::SpillCorruptLine,
            );
        }
        self.stats.replayed_files += 1;
        let moved = match self.spill.quarantine(path, read) {
            Ok(moved) => moved.is_some(),
            Err(e) => {
                self.set_aside(path, &format!("replayed, but cannot be quarantined: {e}"));
                return;
            }
        };
        if !moved && let Err(e) = self.spill.remove(path) {
            self.set_aside(path, &format!("replayed, but cannot be removed: {e}"));
        }
    }

    /// Opens the second connection if it is not open; false if it cannot be (the batch is then
    /// written on one connection).
    async fn ensure_spare(&mut self) -> bool {
        if self.mode != WriteMode::Copy {
            return false;
        }
        if self.spare.as_ref().is_some_and(|c| !c.is_closed()) {
            return true;
        }
        self.spare = within(
            SPARE_CONNECT_TIMEOUT,
            store::connect_owned(&self.conninfo, SPARE_CONNECT_TIMEOUT),
        )
        .await
        .ok();
        self.spare.is_some()
    }

    /// COPYs two halves of a batch concurrently, each in its own transaction on its own
    /// connection. A half refused for its content (not for a connection failure) is written
    /// again through [`Worker::write`], which isolates the bad rows.
    async fn write_halves(
        &mut self,
        first: &[TradeLogEvent],
        second: &[TradeLogEvent],
    ) -> (Result<u64, WriteError>, Result<u64, WriteError>) {
        for half in [first, second] {
            if let Err(e) = self.ensure_partitions(half).await {
                return (Err(e), Err(WriteError::NotConnected));
            }
        }
        let (Some(main), Some(spare)) = (self.client.as_mut(), self.spare.as_mut()) else {
            return (Err(WriteError::NotConnected), Err(WriteError::NotConnected));
        };
        let (a, b) = tokio::join!(
            copy_committed(&mut main.client, first),
            copy_committed(&mut spare.client, second)
        );
        // a half refused for its content goes the single-connection way, which retries a
        // missing partition or a COPY the server refuses and reports a refused row
        let mut settle =
            async |result: Result<u64, WriteError>, half: &[TradeLogEvent]| match result {
                Err(e) if classify(&e) != Failure::Transient => self.write(half, false).await,
                other => other,
            };
        let a = settle(a, first).await;
        let b = settle(b, second).await;
        (a, b)
    }

    /// Writes `events` in one transaction; with `dedupe`, rows already stored are skipped.
    /// Returns the rows inserted. A missing partition is created and a COPY the server refuses
    /// becomes INSERT; a row the database refuses is [`WriteError::Refused`], for the caller to
    /// isolate where that cannot hold new events back.
    async fn write(&mut self, events: &[TradeLogEvent], dedupe: bool) -> Result<u64, WriteError> {
        self.ensure_partitions(events).await?;
        let mut retried_partitions = false;
        loop {
            let result = within(
                statement_limit(events.len()),
                self.write_once(events, dedupe),
            )
            .await;
            let Err(e) = result else {
                return result;
            };
            match classify(&e) {
                Failure::Transient => return Err(e),
                Failure::CopyUnsupported if self.mode == WriteMode::Copy => {
                    tracing::warn!(error = %describe(&e), "trade-log writer: COPY is not possible on this connection; switching to INSERT");
                    self.mode = WriteMode::Insert;
                    // a COPY refused at its start leaves tokio-postgres's connection out of
                    // step with the server: start afresh
                    self.client = None;
                    self.spare = None;
                    self.connect().await?;
                }
                Failure::MissingPartition if !retried_partitions => {
                    retried_partitions = true;
                    self.known_days.clear();
                    self.ensure_partitions(events).await?;
                }
                _ => return Err(WriteError::Refused(describe(&e))),
            }
        }
    }

    async fn write_once(
        &mut self,
        events: &[TradeLogEvent],
        dedupe: bool,
    ) -> Result<u64, WriteError> {
        let mode = self.mode;
        let Some(client) = self.client.as_mut() else {
            return Err(WriteError::NotConnected);
        };
        let tx = client.transaction().await?;
        let inserted = match (mode, dedupe) {
            (WriteMode::Copy, false) => tradelog::copy_events(&tx, "tradelog", events).await?,
            (WriteMode::Copy, true) => tradelog::replay_events(&tx, events).await?,
            (WriteMode::Insert, dedupe) => tradelog::insert_events(&tx, events, dedupe).await?,
        };
        tx.commit().await?;
        Ok(inserted)
    }

    /// Finds the rows the database refuses by bisection, in order, each part under a
    /// savepoint and each statement under its own deadline: one bad row among 10,000 costs
    /// about 30 statements, not 10,000. Refused rows go to the dead-letter file (after the
    /// commit) and a gap row records them. Stops once past `budget` (having settled at least
    /// one row); returns (rows inserted, rows settled), the settled rows a prefix of `events`.
    async fn isolate(
        &mut self,
        events: &[TradeLogEvent],
        budget: Instant,
    ) -> Result<(u64, usize), WriteError> {
        let mut refused: Vec<(TradeLogEvent, Option<String>, String)> = Vec::new();
        let mut inserted = 0;
        let mut settled = 0;
        {
            let Some(client) = self.client.as_mut() else {
                return Err(WriteError::NotConnected);
            };
            let mut tx = within(STATEMENT_TIMEOUT, client.transaction()).await?;
            // ranges still to do, the next one on top
            let mut todo = vec![(0, events.len())];
            while let Some((lo, hi)) = todo.pop() {
                if settled > 0 && Instant::now() >= budget {
                    break;
                }
                let part = &events[lo..hi];
                let savepoint = within(STATEMENT_TIMEOUT, tx.savepoint("tradelog_part")).await?;
                let written = within(
                    statement_limit(part.len()),
                    tradelog::insert_events(&savepoint, part, true),
                )
                .await;
                match written {
                    Ok(n) => {
                        within(STATEMENT_TIMEOUT, savepoint.commit()).await?;
                        inserted += n;
                        settled = hi;
                    }
                    Err(e) if classify(&e) == Failure::Transient => return Err(e),
                    Err(e) => {
                        within(STATEMENT_TIMEOUT, savepoint.rollback()).await?;
                        if part.len() == 1 {
                            refused.push((part[0].clone(), e.sqlstate(), describe(&e)));
                            settled = hi;
                        } else {
                            let mid = lo + part.len() / 2;
                            todo.push((mid, hi));
                            todo.push((lo, mid));
                        }
                    }
                }
            }
            within(STATEMENT_TIMEOUT, tx.commit()).await?;
        }
        for (event, sqlstate, error) in &refused {
            self.stats.dead_letters += 1;
            metrics::counter!("tradegate_tradelog_dead_letters_total").increment(1);
            match append_dead_letter(
                &self.spill.dead_letter_dir(),
                event,
                sqlstate.as_deref(),
                error,
            ) {
                Ok(path) => tracing::error!(
                    event_id = %event.event_id,
                    error = %error,
                    file = %path.display(),
                    "trade-log row refused by the database; written to the dead-letter file"
                ),
                Err(e) => tracing::error!(
                    event_id = %event.event_id,
                    error = %error,
                    dead_letter_error = %e,
                    event = ?event,
                    "trade-log row refused by the database and the dead-letter file cannot be written"
                ),
            }
        }
        let refused_events: Vec<TradeLogEvent> = refused.into_iter().map(|(e, _, _)| e).collect();
        self.record_gap(&refused_events, GapReason::DeadLetter);
        Ok((inserted, settled))
    }

    /// Creates the partitions of days not seen before.
    async fn ensure_partitions(&mut self, events: &[TradeLogEvent]) -> Result<(), WriteError> {
        let missing: Vec<NaiveDate> = tradelog::days_of(events)
            .into_iter()
            .filter(|d| !self.known_days.contains(d))
            .collect();
        if missing.is_empty() {
            return Ok(());
        }
        let Some(client) = self.client.as_ref() else {
            return Err(WriteError::NotConnected);
        };
        for day in missing {
            match tokio::time::timeout(
                STATEMENT_TIMEOUT,
                store::ensure_tradelog_partitions(&client.client, day, 1),
            )
            .await
            {
                Ok(result) => result.map_err(|e| WriteError::Db(e.into_inner()))?,
                Err(_) => return Err(WriteError::TimedOut),
            };
            self.known_days.insert(day);
        }
        Ok(())
    }

    fn stats(&mut self) -> WriterStats {
        self.stats.spill_files_pending = self.spill.pending_files();
        self.stats.memory_buffered = self.memory.len();
        self.stats.set_aside_files = self.spill.set_aside_files();
        self.stats.write_mode = match self.mode {
            WriteMode::Copy => "copy".into(),
            WriteMode::Insert => "insert".into(),
        };
        let mut stats = self.stats.clone();
        stats.dropped_on_overflow = self.log.dropped_total();
        stats
    }
}

/// One binary COPY of `events` into `tradelog`, committed.
async fn copy_committed(client: &mut Client, events: &[TradeLogEvent]) -> Result<u64, WriteError> {
    let tx = client.transaction().await?;
    let n = tradelog::copy_events(&tx, "tradelog", events).await?;
    tx.commit().await?;
    Ok(n)
}

fn gap_row(gap: Gap, reason: GapReason) -> TradeLogEvent {
    TradeLogEvent::gap(
        gap.count,
        gap.first_local_ts_us,
        gap.last_local_ts_us,
        reason.as_str(),
    )
}

/// Exponential backoff with jitter: base · 2^(n-1), capped, times a random factor in [0.5, 1.0].
pub(crate) fn backoff_delay(base_ms: u64, max_ms: u64, failures: u32) -> Duration {
    let exponent = failures.saturating_sub(1).min(30);
    let ceiling = base_ms.saturating_mul(1u64 << exponent).min(max_ms);
    let jittered = rand::random_range(ceiling / 2..=ceiling.max(1));
    Duration::from_millis(jittered.max(1))
}
