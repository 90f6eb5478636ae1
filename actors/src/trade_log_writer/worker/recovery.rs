//! Recovery after an outage: housekeeping, and the chunked replay of unsure gap rows, spill
//! files and the memory buffer within a time budget.

use std::time::Instant;

use super::errors::WriteError;
use super::{GapReason, REPLAY_BUDGET, REPLAY_CHUNK, Replaying, Worker};
use crate::domain::{TradeLogEvent, now_us};
use crate::trade_log_writer::handle::Gap;
use crate::trade_log_writer::spill::SpillReader;

impl Worker {
    /// Checks for recovery when the backoff has passed and replays spill files when the
    /// database is usable.
    pub(super) async fn housekeeping(&mut self) {
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

    pub(super) fn has_backlog(&self) -> bool {
        !self.memory.is_empty() || self.spill.pending_files() > 0
    }

    /// Recovers round after round until the backlog is written, the database fails, or a
    /// round settles nothing (a file that can be neither read nor removed is set aside, so
    /// this cannot spin).
    pub(super) async fn recover_all(&mut self) {
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
    pub(super) fn pause_recovery(&mut self) {
        self.failures_in_a_row = 0;
        self.stats.database_ok = true;
        self.retry_at = Some(Instant::now());
    }

    /// Reconnects and replays, in chunks, the gap rows of unknown outcome, the spill files
    /// (oldest first) and the memory buffer, for about [`REPLAY_BUDGET`] per call: what is left
    /// waits for the next round, which resumes where this one stopped.
    pub(super) async fn recover(&mut self) {
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
    pub(super) async fn replay_all(
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
    pub(super) async fn replay_chunk(
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
    pub(super) fn set_aside(&mut self, path: &std::path::Path, why: &str) {
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
    pub(super) fn after_replay(&mut self, path: &std::path::Path, read: &SpillReader) {
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
}
