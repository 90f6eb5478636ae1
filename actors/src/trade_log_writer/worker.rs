//! The writer loop: takes events off the queue, batches them by size or age, and writes each
//! batch in one transaction. A database failure spills the batch to disk (fsynced) and starts
//! exponential backoff with jitter; meanwhile new batches spill too, so memory stays bounded.
//! Once the database answers again, spill files are replayed oldest first through the
//! deduplicating path, and each file is deleted only after its commit.

use std::collections::{HashSet, VecDeque};
use std::time::{Duration, Instant};

use chrono::NaiveDate;
use serde::Serialize;
use tokio::sync::{mpsc, oneshot};
use tokio_postgres::Client;

use super::config::{TradeLogConfig, WriteMode};
use super::handle::{Gap, TradeLog};
use super::spill::{SpillStore, append_dead_letter};
use crate::domain::{TradeLogEvent, now_us};
use crate::store::{self, tradelog};

/// How often an idle writer checks for recovery and spill files.
const HOUSEKEEPING_EVERY: Duration = Duration::from_millis(250);
/// Connect timeout of the writer's own connection.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// Longest a batch's write may take. A write without an answer (a lost COMMIT answer, a
/// half-open connection) is a failure: the batch is spilled to disk and replayed later through
/// the deduplicating path, so events never wait in memory, where a SIGKILL would take them,
/// for longer than this.
const WRITE_TIMEOUT: Duration = Duration::from_secs(3);
/// How long one round of recovery may replay spill files before the loop takes new events
/// again (it goes on at the next round): a long backlog never holds new events in memory.
const REPLAY_BUDGET: Duration = Duration::from_secs(1);

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

/// A failed write: a database error, or no connection at all.
#[derive(Debug)]
enum WriteError {
    Db(tokio_postgres::Error),
    NotConnected,
    TimedOut,
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
            Self::NotConnected | Self::TimedOut => None,
        }
    }
}

fn classify(e: &WriteError) -> Failure {
    let WriteError::Db(e) = e else {
        return Failure::Transient;
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
        WriteError::TimedOut => format!("no answer within {WRITE_TIMEOUT:?}"),
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

pub(crate) struct Worker {
    log: TradeLog,
    config: TradeLogConfig,
    conninfo: String,
    client: Option<Client>,
    /// A second connection, so that a large batch is written as two concurrent halves
    spare: Option<Client>,
    mode: WriteMode,
    spill: SpillStore,
    memory: VecDeque<TradeLogEvent>,
    gaps: Vec<(Gap, GapReason)>,
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
                continue;
            }
            // a backlog being replayed is served even while batches come (they spill behind it)
            if (self.batch.is_empty() || self.retry_at.is_some())
                && self.last_housekeeping.elapsed() >= HOUSEKEEPING_EVERY
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
            match (first_result, second_result) {
                (Ok(_), Ok(_)) => {}
                (Err(e), second_result) => {
                    self.database_failed(&e, "writing a batch");
                    gaps_saved = false;
                    unsaved = if second_result.is_ok() {
                        first
                    } else {
                        &rows[..]
                    };
                }
                (Ok(_), Err(e)) => {
                    self.database_failed(&e, "writing a batch");
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
            if self.spill_or_buffer(&unsaved[gaps.len()..], &unsaved[..gaps.len()]) {
                self.stats.gap_rows += gaps.len() as u64;
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
        let client = store::connect(&self.conninfo, CONNECT_TIMEOUT).await?;
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

    /// Recovers round after round until the backlog is written or the database fails.
    async fn recover_all(&mut self) {
        loop {
            self.recover().await;
            let failed =
                self.retry_at.is_some_and(|t| t > Instant::now()) || !self.stats.database_ok;
            if failed || !self.has_backlog() {
                return;
            }
            self.retry_at = None;
        }
    }

    /// Reconnects and replays the spill files (oldest first) and the memory buffer, for at
    /// most [`REPLAY_BUDGET`] per call: files left over wait for the next round, and until the
    /// backlog is done new batches are spilled behind it (on disk, never held in memory).
    async fn recover(&mut self) {
        if let Err(e) = self.connect().await {
            self.database_failed(&e, "reconnecting");
            return;
        }
        let budget = Instant::now() + REPLAY_BUDGET;
        self.spill.close_active();
        let files = match self.spill.closed_files() {
            Ok(files) => files,
            Err(e) => {
                tracing::error!(error = %e, "trade-log writer: cannot list spill files");
                Vec::new()
            }
        };
        for path in files {
            let read = match SpillStore::read(&path) {
                Ok(read) => read,
                Err(e) => {
                    tracing::error!(error = %e, "trade-log writer: cannot read a spill file; it stays for the next attempt");
                    continue;
                }
            };
            if !read.events.is_empty()
                && let Err(e) = self.replay(&read.events).await
            {
                self.database_failed(&e, "replaying a spill file");
                return;
            }
            self.after_replay(&path, &read);
            if Instant::now() >= budget && self.spill.pending_files() > 0 {
                // the rest at the next round; new batches spill meanwhile
                self.failures_in_a_row = 0;
                self.stats.database_ok = true;
                self.retry_at = Some(Instant::now());
                return;
            }
        }
        if !self.memory.is_empty() {
            let buffered: Vec<TradeLogEvent> = self.memory.iter().cloned().collect();
            if let Err(e) = self.replay(&buffered).await {
                self.database_failed(&e, "writing the memory buffer");
                return;
            }
            self.memory.clear();
        }
        self.failures_in_a_row = 0;
        self.retry_at = None;
        self.stats.database_ok = true;
        // gaps recorded while nothing could be written are written now
        if !self.gaps.is_empty() && self.batch.is_empty() {
            self.persist_batch().await;
        }
    }

    async fn replay(&mut self, events: &[TradeLogEvent]) -> Result<(), WriteError> {
        // a big file may take a while: a second more per 10,000 events
        let limit = WRITE_TIMEOUT
            + Duration::from_secs(u64::try_from(events.len() / 10_000).unwrap_or(u64::MAX));
        let inserted = tokio::time::timeout(limit, self.write(events, true))
            .await
            .unwrap_or(Err(WriteError::TimedOut))?;
        self.stats.replayed += inserted;
        self.stats.replay_duplicates += events.len() as u64 - inserted.min(events.len() as u64);
        metrics::counter!("tradegate_tradelog_replayed_events_total").increment(inserted);
        Ok(())
    }

    /// A file's events are committed: quarantine what was wrong with it and remove it.
    fn after_replay(&mut self, path: &std::path::Path, read: &super::spill::SpillRead) {
        if read.torn.is_some() {
            self.stats.torn_lines += 1;
            metrics::counter!("tradegate_tradelog_spill_torn_lines_total").increment(1);
            tracing::warn!(file = %path.display(), "trade-log spill file ended in a torn line (a crash mid-append); quarantined it");
            let at = read.events.last().map_or_else(now_us, |e| e.local_ts_us);
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
                intact_events = read.events.len(),
                "trade-log spill file has corrupt lines: its intact events were replayed, the file is quarantined, and a gap row records the loss"
            );
            let first = read.events.first().map_or_else(now_us, |e| e.local_ts_us);
            let last = read.events.last().map_or(first, |e| e.local_ts_us);
            self.add_gap(
                Gap {
                    count: corrupt,
                    first_local_ts_us: first,
                    last_local_ts_us: last,
                },
                GapReason::SpillCorruptLine,
            );
        }
        let moved = match self.spill.quarantine(path, read) {
            Ok(moved) => moved.is_some(),
            Err(e) => {
                tracing::error!(error = %e, file = %path.display(), "trade-log writer: cannot quarantine a spill file; keeping it in place");
                return;
            }
        };
        if !moved && let Err(e) = self.spill.remove(path) {
            tracing::error!(error = %e, "trade-log writer: cannot remove a replayed spill file (its replay will be deduplicated)");
        }
        self.stats.replayed_files += 1;
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
        self.spare = store::connect(&self.conninfo, CONNECT_TIMEOUT).await.ok();
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
        let (a, b) = tokio::join!(copy_committed(main, first), copy_committed(spare, second));
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
    /// Returns the rows inserted. Refused rows are dead-lettered; only transient failures are
    /// returned.
    async fn write(&mut self, events: &[TradeLogEvent], dedupe: bool) -> Result<u64, WriteError> {
        self.ensure_partitions(events).await?;
        let mut retried_partitions = false;
        loop {
            let result = self.write_once(events, dedupe).await;
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
                _ => return self.isolate(events).await,
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

    /// Writes row by row, each under a savepoint, so one bad row cannot hold back its batch;
    /// refused rows go to the dead-letter file (after the commit) and a gap row records them.
    async fn isolate(&mut self, events: &[TradeLogEvent]) -> Result<u64, WriteError> {
        let mut refused: Vec<(TradeLogEvent, Option<String>, String)> = Vec::new();
        let mut inserted = 0;
        {
            let Some(client) = self.client.as_mut() else {
                return Err(WriteError::NotConnected);
            };
            let mut tx = client.transaction().await?;
            for event in events {
                let savepoint = tx.savepoint("tradelog_row").await?;
                match tradelog::insert_events(&savepoint, std::slice::from_ref(event), true).await {
                    Ok(n) => {
                        savepoint.commit().await?;
                        inserted += n;
                    }
                    Err(e) => {
                        let e = WriteError::from(e);
                        if classify(&e) == Failure::Transient {
                            return Err(e);
                        }
                        savepoint.rollback().await?;
                        refused.push((event.clone(), e.sqlstate(), describe(&e)));
                    }
                }
            }
            tx.commit().await?;
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
        Ok(inserted)
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
            store::ensure_tradelog_partitions(client, day, 1)
                .await
                .map_err(|e| WriteError::Db(e.into_inner()))?;
            self.known_days.insert(day);
        }
        Ok(())
    }

    fn stats(&mut self) -> WriterStats {
        self.stats.spill_files_pending = self.spill.pending_files();
        self.stats.memory_buffered = self.memory.len();
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
