//! The Gateway actor and the handle the binary holds to it.

use std::collections::VecDeque;
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use ractor::{Actor, ActorCell, ActorProcessingErr, ActorRef, SupervisionEvent};
use tokio::task::JoinHandle;

use super::messages::{ChildReport, ChildState, GatewayMessage, GatewayStatus};
use super::{ChildSpec, GatewayError, RestartPolicy, install_panic_hook};

/// How long a child may take to drain and stop during a shutdown.
const CHILD_STOP_TIMEOUT: Duration = Duration::from_secs(30);

/// The root supervisor.
#[derive(Debug, Default)]
pub struct Gateway;

/// What the Gateway is started with.
#[derive(Debug)]
pub struct GatewayArgs {
    children: Vec<ChildSpec>,
    policy: RestartPolicy,
    outcome: Arc<OnceLock<GatewayError>>,
}

/// One supervised child.
#[derive(Debug)]
struct Child {
    spec: ChildSpec,
    cell: Option<ActorCell>,
    state: ChildState,
    restarts: u32,
    failures: VecDeque<Instant>,
    last_error: Option<String>,
}

/// The Gateway's state.
#[derive(Debug)]
pub struct GatewayState {
    children: Vec<Child>,
    policy: RestartPolicy,
    outcome: Arc<OnceLock<GatewayError>>,
    shutting_down: bool,
}

impl Gateway {
    /// Starts the Gateway and its children, in order. Fails with the name of the first child
    /// that cannot start.
    pub async fn start(
        children: Vec<ChildSpec>,
        policy: RestartPolicy,
    ) -> Result<GatewayHandle, GatewayError> {
        install_panic_hook();
        let outcome = Arc::new(OnceLock::new());
        let args = GatewayArgs {
            children,
            policy,
            outcome: outcome.clone(),
        };
        match Actor::spawn(None, Gateway, args).await {
            Ok((actor, join)) => Ok(GatewayHandle {
                actor,
                join: Some(join),
                outcome,
            }),
            Err(e) => Err(outcome
                .get()
                .cloned()
                .unwrap_or_else(|| GatewayError::Unexpected(e.to_string()))),
        }
    }
}

impl Actor for Gateway {
    type Msg = GatewayMessage;
    type State = GatewayState;
    type Arguments = GatewayArgs;

    async fn pre_start(
        &self,
        myself: ActorRef<Self::Msg>,
        args: Self::Arguments,
    ) -> Result<Self::State, ActorProcessingErr> {
        let mut children = Vec::with_capacity(args.children.len());
        for spec in args.children {
            match spec.spawn(myself.get_cell()).await {
                Ok(cell) => {
                    tracing::info!(actor = spec.name(), "started");
                    metrics::gauge!("tradegate_actor_up", "actor" => spec.name().to_string())
                        .set(1.0);
                    children.push(Child {
                        spec,
                        cell: Some(cell),
                        state: ChildState::Running,
                        restarts: 0,
                        failures: VecDeque::new(),
                        last_error: None,
                    });
                }
                Err(e) => {
                    let err = GatewayError::ChildStartFailed {
                        child: spec.name().to_string(),
                        message: e.to_string(),
                    };
                    tracing::error!("{err}");
                    stop_children(&mut children).await;
                    let _ = args.outcome.set(err.clone());
                    return Err(err.into());
                }
            }
        }
        Ok(GatewayState {
            children,
            policy: args.policy,
            outcome: args.outcome,
            shutting_down: false,
        })
    }

    async fn post_stop(
        &self,
        _myself: ActorRef<Self::Msg>,
        state: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        state.shutting_down = true;
        stop_children(&mut state.children).await;
        Ok(())
    }

    async fn handle(
        &self,
        myself: ActorRef<Self::Msg>,
        message: Self::Msg,
        state: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        match message {
            GatewayMessage::Status { reply } => {
                let _ = reply.send(state.status());
            }
            GatewayMessage::RestartChild { name } => {
                if state.shutting_down {
                    return Ok(());
                }
                let Some(index) = state.children.iter().position(|c| c.spec.name() == name) else {
                    return Ok(());
                };
                let spec = state.children[index].spec.clone();
                match spec.spawn(myself.get_cell()).await {
                    Ok(cell) => {
                        let child = &mut state.children[index];
                        child.cell = Some(cell);
                        child.state = ChildState::Running;
                        child.restarts += 1;
                        metrics::counter!("tradegate_actor_restarts_total", "actor" => name.clone())
                            .increment(1);
                        metrics::gauge!("tradegate_actor_up", "actor" => name.clone()).set(1.0);
                        tracing::info!(actor = %name, restarts = child.restarts, "restarted");
                    }
                    // A restart that cannot even start counts as one more failure.
                    Err(e) => state.child_failed(&myself, index, format!("restart failed: {e}")),
                }
            }
            GatewayMessage::Shutdown { reply } => {
                state.shutting_down = true;
                stop_children(&mut state.children).await;
                let _ = reply.send(());
                myself.stop(Some("shutdown".to_string()));
            }
        }
        Ok(())
    }

    async fn handle_supervisor_evt(
        &self,
        myself: ActorRef<Self::Msg>,
        event: SupervisionEvent,
        state: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        if state.shutting_down {
            return Ok(());
        }
        let (who, error) = match event {
            SupervisionEvent::ActorFailed(who, err) => (who, err.to_string()),
            // A permanent child that stops on its own is restarted like a failed one.
            SupervisionEvent::ActorTerminated(who, _, reason) => (
                who,
                format!(
                    "stopped unexpectedly ({})",
                    reason.unwrap_or_else(|| "no reason given".into())
                ),
            ),
            _ => return Ok(()),
        };
        // Only the current incarnation counts; events from a replaced one are stale.
        if let Some(index) = state.children.iter().position(|c| {
            c.cell
                .as_ref()
                .is_some_and(|cell| cell.get_id() == who.get_id())
        }) {
            state.children[index].cell = None;
            state.child_failed(&myself, index, error);
        }
        Ok(())
    }
}

impl GatewayState {
    fn status(&self) -> GatewayStatus {
        GatewayStatus {
            children: self
                .children
                .iter()
                .map(|c| ChildReport {
                    name: c.spec.name().to_string(),
                    state: c.state,
                    restarts: c.restarts,
                    last_error: c.last_error.clone(),
                })
                .collect(),
        }
    }

    /// Records a failure of child `index`; schedules its restart or, over budget, stops the
    /// Gateway with an error naming it.
    fn child_failed(&mut self, myself: &ActorRef<GatewayMessage>, index: usize, error: String) {
        let now = Instant::now();
        let window = self.policy.window;
        let child = &mut self.children[index];
        let name = child.spec.name().to_string();
        child.state = ChildState::Restarting;
        child.last_error = Some(error.clone());
        child.failures.push_back(now);
        while child
            .failures
            .front()
            .is_some_and(|t| now.duration_since(*t) > window)
        {
            child.failures.pop_front();
        }
        let failures = u32::try_from(child.failures.len()).unwrap_or(u32::MAX);
        metrics::counter!("tradegate_actor_failures_total", "actor" => name.clone()).increment(1);
        metrics::gauge!("tradegate_actor_up", "actor" => name.clone()).set(0.0);

        if failures > self.policy.max_restarts {
            let err = GatewayError::RestartBudgetExhausted {
                child: name,
                failures,
                max_restarts: self.policy.max_restarts,
                window_secs: window.as_secs(),
                last_error: error,
            };
            tracing::error!("{err}");
            let _ = self.outcome.set(err.clone());
            self.shutting_down = true;
            myself.stop(Some(err.to_string()));
            return;
        }

        let delay = self.policy.backoff(failures);
        tracing::warn!(
            actor = %name,
            error = %error,
            failures_in_window = failures,
            delay_ms = u64::try_from(delay.as_millis()).unwrap_or(u64::MAX),
            "actor failed; restarting after backoff"
        );
        myself.send_after(delay, move || GatewayMessage::RestartChild { name });
    }
}

/// Stops running children, last started first, each given time to drain.
async fn stop_children(children: &mut [Child]) {
    for child in children.iter_mut().rev() {
        if let Some(cell) = child.cell.take()
            && let Err(e) = cell
                .stop_and_wait(Some("shutdown".to_string()), Some(CHILD_STOP_TIMEOUT))
                .await
        {
            tracing::warn!(actor = child.spec.name(), error = %e, "child did not stop cleanly");
        }
        child.state = ChildState::Stopped;
        metrics::gauge!("tradegate_actor_up", "actor" => child.spec.name().to_string()).set(0.0);
    }
}

/// The binary's handle to a running Gateway.
#[derive(Debug)]
pub struct GatewayHandle {
    actor: ActorRef<GatewayMessage>,
    join: Option<JoinHandle<()>>,
    outcome: Arc<OnceLock<GatewayError>>,
}

impl GatewayHandle {
    /// The Gateway actor.
    pub fn actor(&self) -> &ActorRef<GatewayMessage> {
        &self.actor
    }

    /// Every child's state; an error if the Gateway does not answer within 5 seconds.
    pub async fn status(&self) -> Result<GatewayStatus, GatewayError> {
        status_of(&self.actor).await
    }

    /// Waits until the Gateway stops on its own; returns why.
    pub async fn wait(&mut self) -> Result<(), GatewayError> {
        if let Some(join) = self.join.as_mut() {
            let _ = join.await;
            self.join = None;
        }
        self.result()
    }

    /// Stops every child (draining them) and then the Gateway.
    pub async fn shutdown(mut self) -> Result<(), GatewayError> {
        let _ = ractor::call_t!(
            self.actor,
            |reply| GatewayMessage::Shutdown { reply },
            u64::try_from(CHILD_STOP_TIMEOUT.as_millis() * 8).unwrap_or(u64::MAX)
        );
        self.wait().await
    }

    fn result(&self) -> Result<(), GatewayError> {
        match self.outcome.get() {
            Some(err) => Err(err.clone()),
            None => Ok(()),
        }
    }
}

/// Asks a Gateway for its status.
pub async fn status_of(actor: &ActorRef<GatewayMessage>) -> Result<GatewayStatus, GatewayError> {
    ractor::call_t!(actor, |reply| GatewayMessage::Status { reply }, 5_000)
        .map_err(|e| GatewayError::Unexpected(format!("status query failed: {e}")))
}
