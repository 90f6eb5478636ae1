//! The TradeLogWriter actor: owns the writer loop (a thread draining the queue), its spill
//! directory, and the maintenance schedule. A restart recovers from disk: leftover spill files
//! are replayed before new events are written.

use std::time::Duration;

use chrono::Utc;
use ractor::{Actor, ActorProcessingErr, ActorRef};
use tokio::sync::{mpsc, oneshot, watch};
use tokio::task::JoinHandle;

use super::config::TradeLogConfig;
use super::handle::TradeLog;
use super::maintenance::run_maintenance;
use super::messages::TradeLogWriterMessage;
use super::spill::SpillStore;
use super::worker::{Command, Worker};

/// How long a stop may take to drain the queue.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(60);

/// The writer actor.
#[derive(Debug, Default)]
pub struct TradeLogWriter;

/// What the writer is started with; cloned for every restart.
#[derive(Debug, Clone)]
pub struct TradeLogWriterArgs {
    /// The queue producers push into (it outlives writer restarts)
    pub log: TradeLog,
    /// `[tradelog]`
    pub config: TradeLogConfig,
    /// Where to write
    pub conninfo: String,
}

/// The writer's state.
#[derive(Debug)]
pub struct TradeLogWriterState {
    commands: mpsc::Sender<Command>,
    /// Some once the writer's thread has ended
    thread_done: watch::Receiver<Option<String>>,
    args: TradeLogWriterArgs,
    maintenance: Option<JoinHandle<()>>,
    schedule: Option<JoinHandle<()>>,
}

impl Actor for TradeLogWriter {
    type Msg = TradeLogWriterMessage;
    type State = TradeLogWriterState;
    type Arguments = TradeLogWriterArgs;

    async fn pre_start(
        &self,
        myself: ActorRef<Self::Msg>,
        args: Self::Arguments,
    ) -> Result<Self::State, ActorProcessingErr> {
        let spill = SpillStore::open(&args.config.spill_dir, args.config.spill_file_max_bytes)?;
        let (commands, receiver) = mpsc::channel(16);
        let worker = Worker::new(
            args.log.clone(),
            args.config.clone(),
            args.conninfo.clone(),
            spill,
        );
        // The writer loop runs on a thread and runtime of its own: with `overflow = "block"`
        // producers on the gateway's runtime wait for room in the queue, and if the loop that
        // makes the room were a task among them, enough waiting producers would starve it.
        // Its database connections are opened (and driven) on that runtime too.
        let (exited, mut exit) = watch::channel::<Option<String>>(None);
        let thread_done = exit.clone();
        std::thread::Builder::new()
            .name("tradelog-writer".into())
            .spawn(move || {
                // sent when the thread ends, normally or by a panic: the worker (and the spill
                // directory's lock) is gone by then
                struct Exit(watch::Sender<Option<String>>, Option<String>);
                impl Drop for Exit {
                    fn drop(&mut self) {
                        let reason = self.1.take().unwrap_or_else(|| {
                            "the writer loop failed (its thread panicked)".to_string()
                        });
                        let _ = self.0.send(Some(reason));
                    }
                }
                let mut exit = Exit(exited, None);
                let ended = match tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                {
                    Ok(runtime) => {
                        runtime.block_on(worker.run(receiver));
                        drop(runtime);
                        "the writer loop ended".to_string()
                    }
                    Err(e) => format!("the writer's runtime could not start: {e}"),
                };
                exit.1 = Some(ended);
            })?;
        let monitor = myself.clone();
        tokio::spawn(async move {
            let reason = match exit.wait_for(Option::is_some).await {
                Ok(reason) => reason.clone().unwrap_or_default(),
                Err(_) => "the writer loop failed".to_string(),
            };
            // fails harmlessly when the actor is already stopping
            let _ = monitor.send_message(TradeLogWriterMessage::WorkerExited { reason });
        });
        Ok(TradeLogWriterState {
            commands,
            thread_done,
            args,
            maintenance: None,
            schedule: None,
        })
    }

    async fn post_start(
        &self,
        myself: ActorRef<Self::Msg>,
        state: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        let _ = myself.send_message(TradeLogWriterMessage::MaintenanceTick);
        state.schedule = Some(myself.send_interval(
            Duration::from_secs(state.args.config.maintenance_interval_secs),
            || TradeLogWriterMessage::MaintenanceTick,
        ));
        Ok(())
    }

    async fn handle(
        &self,
        _myself: ActorRef<Self::Msg>,
        message: Self::Msg,
        state: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        match message {
            TradeLogWriterMessage::Flush { reply } => {
                let (tx, rx) = oneshot::channel();
                state.commands.send(Command::Flush(tx)).await?;
                let _ = reply.send(rx.await?);
            }
            TradeLogWriterMessage::Stats { reply } => {
                let (tx, rx) = oneshot::channel();
                state.commands.send(Command::Stats(tx)).await?;
                let _ = reply.send(rx.await?);
            }
            TradeLogWriterMessage::RunMaintenance { today, reply } => {
                // one maintenance at a time: let a scheduled run finish first
                if let Some(running) = state.maintenance.take() {
                    let _ = running.await;
                }
                let result = run_maintenance(&state.args.conninfo, &state.args.config, today).await;
                let _ = reply.send(result);
            }
            TradeLogWriterMessage::MaintenanceTick => {
                if state.maintenance.as_ref().is_some_and(|t| !t.is_finished()) {
                    return Ok(());
                }
                let conninfo = state.args.conninfo.clone();
                let config = state.args.config.clone();
                state.maintenance = Some(tokio::spawn(async move {
                    let today = Utc::now().date_naive();
                    if let Err(e) = run_maintenance(&conninfo, &config, today).await {
                        metrics::counter!("tradegate_tradelog_errors_total", "kind" => "maintenance")
                            .increment(1);
                        tracing::warn!(error = %e, "trade-log maintenance failed; it runs again at the next interval");
                    }
                }));
            }
            TradeLogWriterMessage::WorkerExited { reason } => {
                return Err(reason.into());
            }
        }
        Ok(())
    }

    async fn post_stop(
        &self,
        _myself: ActorRef<Self::Msg>,
        state: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        if let Some(schedule) = state.schedule.take() {
            schedule.abort();
        }
        let (tx, rx) = oneshot::channel();
        if state.commands.send(Command::Stop(tx)).await.is_ok() {
            match tokio::time::timeout(DRAIN_TIMEOUT, rx).await {
                Ok(Ok(stats)) => tracing::info!(?stats, "trade-log writer drained"),
                Ok(Err(_)) => {}
                Err(_) => {
                    tracing::error!("trade-log writer did not drain within {DRAIN_TIMEOUT:?}")
                }
            }
            // its thread has let go of the spill directory before the next writer takes it
            let _ = tokio::time::timeout(
                Duration::from_secs(5),
                state.thread_done.wait_for(Option::is_some),
            )
            .await;
        }
        Ok(())
    }
}
