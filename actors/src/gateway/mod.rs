//! The root supervisor: spawns the gateway's children linked, restarts a failed child by name
//! with exponential backoff, and gives up — stopping the whole gateway with an error that names
//! the child — when a child fails more than `max_restarts` times within `restart_window`.

mod actor;
mod messages;
#[cfg(test)]
mod tests;

pub use actor::{Gateway, GatewayHandle, status_of};
pub use messages::{ChildReport, ChildState, GatewayMessage, GatewayStatus};

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use ractor::{Actor, ActorCell, SpawnErr};

/// How the Gateway restarts its children.
#[derive(Debug, Clone)]
pub struct RestartPolicy {
    /// A child may fail at most this many times within `window`; one more failure stops the
    /// gateway.
    pub max_restarts: u32,
    /// The sliding window over which failures are counted.
    pub window: Duration,
    /// Delay before the first restart; doubled for each further failure in the window.
    pub backoff_base: Duration,
    /// Upper bound of the restart delay.
    pub backoff_max: Duration,
}

impl Default for RestartPolicy {
    fn default() -> Self {
        Self {
            max_restarts: 5,
            window: Duration::from_secs(60),
            backoff_base: Duration::from_millis(100),
            backoff_max: Duration::from_secs(5),
        }
    }
}

impl RestartPolicy {
    /// The delay before restarting a child that has failed `failures_in_window` times (>= 1).
    pub fn backoff(&self, failures_in_window: u32) -> Duration {
        let exponent = failures_in_window.saturating_sub(1).min(20);
        self.backoff_base
            .saturating_mul(1u32 << exponent)
            .min(self.backoff_max)
    }
}

type SpawnFuture = Pin<Box<dyn Future<Output = Result<ActorCell, SpawnErr>> + Send>>;

/// How to (re)start one child of the Gateway. The child is registered under `name`, so other
/// actors find the current incarnation with `ractor::registry::where_is(name)` rather than
/// holding an `ActorRef` that goes stale on restart.
#[derive(Clone)]
pub struct ChildSpec {
    name: String,
    spawn: Arc<dyn Fn(ActorCell) -> SpawnFuture + Send + Sync>,
}

impl std::fmt::Debug for ChildSpec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ChildSpec")
            .field("name", &self.name)
            .finish()
    }
}

impl ChildSpec {
    /// A child built by `factory` on every (re)start: it returns a fresh actor and its arguments,
    /// so a restarted child recovers its state in `pre_start`, never from the failed incarnation.
    pub fn new<A, F>(name: impl Into<String>, factory: F) -> Self
    where
        A: Actor,
        F: Fn() -> (A, A::Arguments) + Send + Sync + 'static,
    {
        let name = name.into();
        let registered = name.clone();
        let factory = Arc::new(factory);
        Self {
            name,
            spawn: Arc::new(move |supervisor| {
                let (actor, args) = factory();
                let name = registered.clone();
                Box::pin(async move {
                    let (actor_ref, _join) =
                        Actor::spawn_linked(Some(name), actor, args, supervisor).await?;
                    Ok(actor_ref.get_cell())
                })
            }),
        }
    }

    /// The name the child is registered under.
    pub fn name(&self) -> &str {
        &self.name
    }

    pub(crate) fn spawn(&self, supervisor: ActorCell) -> SpawnFuture {
        (self.spawn)(supervisor)
    }
}

/// Why the gateway stopped on its own.
#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
pub enum GatewayError {
    /// A child failed more often than the restart budget allows.
    #[error(
        "actor '{child}' failed {failures} times within {window_secs}s (restart budget {max_restarts}); giving up. Last error: {last_error}"
    )]
    RestartBudgetExhausted {
        /// The child's registered name
        child: String,
        /// Failures counted within the window
        failures: u32,
        /// The configured budget
        max_restarts: u32,
        /// The window, in seconds
        window_secs: u64,
        /// The last failure's message
        last_error: String,
    },
    /// A child could not be started when the gateway started.
    #[error("actor '{child}' could not be started: {message}")]
    ChildStartFailed {
        /// The child's registered name
        child: String,
        /// Why
        message: String,
    },
    /// The gateway actor itself ended unexpectedly.
    #[error("the gateway supervisor stopped unexpectedly: {0}")]
    Unexpected(String),
}

/// Reports panics through `tracing` instead of raw stderr. Installed once per process by
/// [`Gateway::start`]; ractor turns the panic itself into a supervision event. Where no
/// `tracing` subscriber is active (a bare test, say) the previous hook still prints the panic,
/// so it is never lost.
pub fn install_panic_hook() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        let previous = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            let subscribed =
                tracing::dispatcher::get_default(|d| !d.is::<tracing::subscriber::NoSubscriber>());
            if !subscribed {
                previous(info);
                return;
            }
            let message = if let Some(s) = info.payload().downcast_ref::<&str>() {
                (*s).to_string()
            } else if let Some(s) = info.payload().downcast_ref::<String>() {
                s.clone()
            } else {
                "non-string panic payload".to_string()
            };
            let location = info
                .location()
                .map(|l| format!("{}:{}", l.file(), l.line()))
                .unwrap_or_default();
            let thread = std::thread::current();
            tracing::error!(
                panic = %message,
                %location,
                thread = thread.name().unwrap_or("unnamed"),
                "panic"
            );
        }));
    });
}
