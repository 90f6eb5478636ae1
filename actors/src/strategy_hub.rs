//! Where results reach strategies: every connection of a strategy (WebSocket or in-process)
//! subscribes under the strategy's name, and the router and broker sessions push to all of them.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use tokio::sync::mpsc;

use crate::domain::StrategyEvent;

type Subscribers = HashMap<String, Vec<(u64, mpsc::UnboundedSender<StrategyEvent>)>>;

/// The strategies' connections, shared by the strategy API, the OrderRouter and the sessions.
#[derive(Clone, Default)]
pub struct StrategyHub {
    subscribers: Arc<Mutex<Subscribers>>,
    next_id: Arc<AtomicU64>,
}

impl std::fmt::Debug for StrategyHub {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StrategyHub")
            .field("connections", &self.connections())
            .finish()
    }
}

/// One connection's subscription; dropping it unsubscribes.
#[derive(Debug)]
pub struct Subscription {
    hub: StrategyHub,
    strategy: String,
    id: u64,
    sender: mpsc::UnboundedSender<StrategyEvent>,
    /// What is pushed to this connection, in order
    pub events: mpsc::UnboundedReceiver<StrategyEvent>,
}

impl Subscription {
    /// A sender into this connection's own queue (answers to its requests travel with the
    /// pushed events, so they arrive in order).
    pub fn sender(&self) -> mpsc::UnboundedSender<StrategyEvent> {
        self.sender.clone()
    }
}

impl Drop for Subscription {
    fn drop(&mut self) {
        if let Ok(mut subs) = self.hub.subscribers.lock()
            && let Some(list) = subs.get_mut(&self.strategy)
        {
            list.retain(|(id, _)| *id != self.id);
            if list.is_empty() {
                subs.remove(&self.strategy);
            }
        }
    }
}

impl StrategyHub {
    /// A new connection of `strategy`.
    pub fn subscribe(&self, strategy: &str) -> Subscription {
        let (sender, events) = mpsc::unbounded_channel();
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        if let Ok(mut subs) = self.subscribers.lock() {
            subs.entry(strategy.to_string())
                .or_default()
                .push((id, sender.clone()));
        }
        Subscription {
            hub: self.clone(),
            strategy: strategy.to_string(),
            id,
            sender,
            events,
        }
    }

    /// A subscription for one more connection of `strategy`, unless it holds `max` already.
    pub fn try_subscribe(&self, strategy: &str, max: usize) -> Option<Subscription> {
        let (sender, events) = mpsc::unbounded_channel();
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        {
            let mut subs = self.subscribers.lock().ok()?;
            let list = subs.entry(strategy.to_string()).or_default();
            if list.len() >= max {
                return None;
            }
            list.push((id, sender.clone()));
        }
        Some(Subscription {
            hub: self.clone(),
            strategy: strategy.to_string(),
            id,
            sender,
            events,
        })
    }

    /// Pushes `event` to every connection of `strategy` (none connected: it is dropped here;
    /// everything pushed is also in the audit trail).
    pub fn push(&self, strategy: &str, event: StrategyEvent) {
        let Ok(subs) = self.subscribers.lock() else {
            return;
        };
        if let Some(list) = subs.get(strategy) {
            for (_, sender) in list {
                let _ = sender.send(event.clone());
            }
        }
    }

    /// Open connections over all strategies.
    pub fn connections(&self) -> usize {
        self.subscribers
            .lock()
            .map(|s| s.values().map(Vec::len).sum())
            .unwrap_or(0)
    }
}
