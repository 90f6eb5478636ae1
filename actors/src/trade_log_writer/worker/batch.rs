//! The normal write path: a batch persisted with its gap rows, or spilled to disk or held in
//! memory when the database fails.

use std::time::Instant;

use super::errors::{WriteError, describe};
use super::{GapReason, UNSURE_GAP_ROWS_MAX, WRITE_TIMEOUT, Worker, backoff_delay};
use crate::domain::TradeLogEvent;
use crate::trade_log_writer::handle::Gap;

impl Worker {
    /// Writes the current batch, with rows for any pending gaps in front. When the database
    /// cannot take it, the batch is spilled; when even that fails, the events wait in memory
    /// while the gaps stay pending as compact records (a gap is never itself lost).
    pub(super) async fn persist_batch(&mut self) {
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
    pub(super) fn add_gap(&mut self, gap: Gap, reason: GapReason) {
        match self.gaps.iter_mut().find(|(_, r)| *r == reason) {
            Some((pending, _)) => pending.add(gap),
            None => self.gaps.push((gap, reason)),
        }
    }

    pub(super) fn database_usable(&self) -> bool {
        self.client.as_ref().is_some_and(|c| !c.is_closed()) && self.retry_at.is_none()
    }

    /// A batch's write failed: a refused row is not the database's failure (the batch is
    /// spilled and its rows isolated by the replay), anything else is.
    pub(super) fn write_failed(&mut self, error: &WriteError) {
        if let WriteError::Refused(why) = error {
            self.stats.refused_batches += 1;
            metrics::counter!("tradegate_tradelog_refused_batches_total").increment(1);
            tracing::warn!(error = %why, "trade-log writer: the database refused a row of a batch; the batch is spilled and its rows written one by one by the replay");
        } else {
            self.database_failed(error, "writing a batch");
        }
    }

    pub(super) fn database_failed(&mut self, error: &WriteError, doing: &str) {
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
    pub(super) fn spill_or_buffer(
        &mut self,
        events: &[TradeLogEvent],
        gap_rows: &[TradeLogEvent],
    ) -> bool {
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

    pub(super) fn count_spilled(&mut self, n: usize) {
        self.stats.spilled += n as u64;
        metrics::counter!("tradegate_tradelog_spilled_events_total").increment(n as u64);
    }

    pub(super) fn record_gap(&mut self, events: &[TradeLogEvent], reason: GapReason) {
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
}

pub(super) fn gap_row(gap: Gap, reason: GapReason) -> TradeLogEvent {
    TradeLogEvent::gap(
        gap.count,
        gap.first_local_ts_us,
        gap.last_local_ts_us,
        reason.as_str(),
    )
}
