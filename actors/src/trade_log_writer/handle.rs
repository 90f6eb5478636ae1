//! The producer handle: cheap to clone, usable from any thread or task, never awaits. A bounded
//! crossbeam queue sits behind it; on overflow the oldest event is dropped (counted, warned
//! about at most once a second, and remembered as a gap the writer records in the table), or,
//! with `overflow = "block"`, the producer waits for room.

use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use crossbeam_channel::{Receiver, Sender, TrySendError, bounded};

use super::config::Overflow;
use crate::domain::{TradeLogEvent, now_us};

/// Events lost before reaching the table, with the time range they covered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Gap {
    /// How many
    pub count: u64,
    /// Local timestamp of the first lost event
    pub first_local_ts_us: i64,
    /// Local timestamp of the last lost event
    pub last_local_ts_us: i64,
}

impl Gap {
    fn of(event: &TradeLogEvent) -> Self {
        Self {
            count: 1,
            first_local_ts_us: event.local_ts_us,
            last_local_ts_us: event.local_ts_us,
        }
    }

    pub(crate) fn add(&mut self, other: Gap) {
        self.count += other.count;
        self.first_local_ts_us = self.first_local_ts_us.min(other.first_local_ts_us);
        self.last_local_ts_us = self.last_local_ts_us.max(other.last_local_ts_us);
    }
}

pub(crate) struct Shared {
    tx: Sender<TradeLogEvent>,
    pub(crate) rx: Receiver<TradeLogEvent>,
    overflow: Overflow,
    dropped: AtomicU64,
    gap: Mutex<Option<Gap>>,
    last_warning_us: AtomicI64,
    dropped_metric: metrics::Counter,
}

/// The producers' side of the trade log.
#[derive(Clone)]
pub struct TradeLog {
    pub(crate) shared: Arc<Shared>,
}

impl std::fmt::Debug for TradeLog {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TradeLog")
            .field("queued", &self.queued())
            .field("capacity", &self.shared.tx.capacity())
            .field("overflow", &self.shared.overflow)
            .field("dropped", &self.dropped_total())
            .finish()
    }
}

impl TradeLog {
    /// A queue of `capacity` events with the given overflow behaviour.
    pub fn new(capacity: usize, overflow: Overflow) -> Self {
        let (tx, rx) = bounded(capacity.max(1));
        Self {
            shared: Arc::new(Shared {
                tx,
                rx,
                overflow,
                dropped: AtomicU64::new(0),
                gap: Mutex::new(None),
                last_warning_us: AtomicI64::new(0),
                dropped_metric: metrics::counter!("tradegate_tradelog_dropped_events_total"),
            }),
        }
    }

    /// Queues one event. Never awaits; with `drop_oldest` it never blocks either.
    pub fn log(&self, event: TradeLogEvent) {
        let shared = &*self.shared;
        match shared.overflow {
            Overflow::Block => {
                // Back off instead of parking per freed slot: a parked producer would be woken
                // for every event the writer takes, a context switch each; this way it refills
                // the queue in bulk.
                let mut event = event;
                let mut waits = 0u32;
                loop {
                    match shared.tx.try_send(event) {
                        Ok(()) => break,
                        Err(TrySendError::Full(back)) => {
                            event = back;
                            if waits < 8 {
                                std::thread::yield_now();
                            } else {
                                std::thread::sleep(std::time::Duration::from_micros(100));
                            }
                            waits = waits.saturating_add(1);
                        }
                        Err(TrySendError::Disconnected(_)) => break,
                    }
                }
            }
            Overflow::DropOldest => {
                let mut event = event;
                loop {
                    match shared.tx.try_send(event) {
                        Ok(()) => break,
                        Err(TrySendError::Full(back)) => {
                            event = back;
                            if let Ok(oldest) = shared.rx.try_recv() {
                                self.record_drop(&oldest);
                            }
                        }
                        Err(TrySendError::Disconnected(_)) => break,
                    }
                }
            }
        }
    }

    /// Queues several events.
    pub fn log_all(&self, events: impl IntoIterator<Item = TradeLogEvent>) {
        for event in events {
            self.log(event);
        }
    }

    /// Events dropped on overflow since the queue was created.
    pub fn dropped_total(&self) -> u64 {
        self.shared.dropped.load(Ordering::SeqCst)
    }

    /// Events waiting in the queue.
    pub fn queued(&self) -> usize {
        self.shared.rx.len()
    }

    /// The overflow gap not yet written to the table, taken.
    pub(crate) fn take_gap(&self) -> Option<Gap> {
        self.shared
            .gap
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .take()
    }

    /// Whether an overflow gap waits to be written.
    pub(crate) fn gap_pending(&self) -> bool {
        self.shared
            .gap
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .is_some()
    }

    fn record_drop(&self, event: &TradeLogEvent) {
        let shared = &*self.shared;
        {
            let mut gap = shared
                .gap
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            match gap.as_mut() {
                Some(g) => g.add(Gap::of(event)),
                None => *gap = Some(Gap::of(event)),
            }
            // counted under the lock so the counter and the gaps always agree
            shared.dropped.fetch_add(1, Ordering::SeqCst);
        }
        shared.dropped_metric.increment(1);
        let now = now_us();
        let last = shared.last_warning_us.load(Ordering::Relaxed);
        if now - last >= 1_000_000
            && shared
                .last_warning_us
                .compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed)
                .is_ok()
        {
            tracing::warn!(
                dropped_total = shared.dropped.load(Ordering::Relaxed),
                capacity = shared.tx.capacity(),
                "trade-log queue full: dropping the oldest events (a gap row will record them)"
            );
        }
    }
}
