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

use super::config::{TradeLogConfig, WriteMode};
use super::handle::{Gap, TradeLog};
use super::spill::{SpillReader, SpillStore};
use crate::domain::TradeLogEvent;
use crate::store::OwnedClient;

mod batch;
mod errors;
mod recovery;
mod write;

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

/// Exponential backoff with jitter: base · 2^(n-1), capped, times a random factor in [0.5, 1.0].
pub(crate) fn backoff_delay(base_ms: u64, max_ms: u64, failures: u32) -> Duration {
    let exponent = failures.saturating_sub(1).min(30);
    let ceiling = base_ms.saturating_mul(1u64 << exponent).min(max_ms);
    let jittered = rand::random_range(ceiling / 2..=ceiling.max(1));
    Duration::from_millis(jittered.max(1))
}
