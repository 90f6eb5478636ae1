//! Database writes: the connections, the COPY or INSERT of a batch (in two halves when it is
//! large), refused rows isolated, partitions created.

use std::time::Instant;

use chrono::NaiveDate;
use tokio_postgres::Client;

use super::errors::{Failure, WriteError, classify, describe, statement_limit, within};
use super::{CONNECT_TIMEOUT, GapReason, SPARE_CONNECT_TIMEOUT, STATEMENT_TIMEOUT, Worker};
use crate::domain::TradeLogEvent;
use crate::store::{self, tradelog};
use crate::trade_log_writer::config::WriteMode;
use crate::trade_log_writer::spill::append_dead_letter;

impl Worker {
    pub(super) async fn connect(&mut self) -> Result<(), WriteError> {
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
}

impl Worker {
    /// Opens the second connection if it is not open; false if it cannot be (the batch is then
    /// written on one connection).
    pub(super) async fn ensure_spare(&mut self) -> bool {
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
    pub(super) async fn write_halves(
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
    pub(super) async fn write(
        &mut self,
        events: &[TradeLogEvent],
        dedupe: bool,
    ) -> Result<u64, WriteError> {
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

    pub(super) async fn write_once(
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
    pub(super) async fn isolate(
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
    pub(super) async fn ensure_partitions(
        &mut self,
        events: &[TradeLogEvent],
    ) -> Result<(), WriteError> {
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
}

/// One binary COPY of `events` into `tradelog`, committed.
pub(super) async fn copy_committed(
    client: &mut Client,
    events: &[TradeLogEvent],
) -> Result<u64, WriteError> {
    let tx = client.transaction().await?;
    let n = tradelog::copy_events(&tx, "tradelog", events).await?;
    tx.commit().await?;
    Ok(n)
}
