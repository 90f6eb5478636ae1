//! Group commit for independent writes: callers hand over a unit of work (or an item of a
//! batch) and wait for its result; one task takes every unit waiting, runs them in one
//! transaction and commits once, so a burst of N writes costs one commit instead of N. Units
//! of work run pipelined, each its own statements ([`GroupCommit`]); items of a
//! [`BatchCommit`] are written by one call for the whole group (a multi-row statement). Each
//! caller still gets its own result only after the commit. If the shared transaction fails
//! (one unit's statement is refused, say), the units are run again one transaction each, so
//! one bad write never takes the others down with it.
//!
//! Written here rather than taken from a crate: no maintained crate offers group commit over
//! tokio-postgres; the pattern is a channel drain plus a transaction.

use std::sync::Arc;
use std::time::Duration;

use deadpool_postgres::Transaction;
use futures_util::future::{BoxFuture, join_all};
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;

use super::StoreError;

/// One unit of work: statements on the shared transaction. It may run twice (a second time
/// alone when the shared transaction failed), so it must not consume what it writes.
pub type Work<T> =
    Arc<dyn for<'t> Fn(&'t Transaction<'t>) -> BoxFuture<'t, Result<T, StoreError>> + Send + Sync>;

/// Wraps a closure as a unit of work (the annotation makes it generic over the transaction's
/// lifetime).
pub fn work<T, F>(f: F) -> Work<T>
where
    F: for<'t> Fn(&'t Transaction<'t>) -> BoxFuture<'t, Result<T, StoreError>>
        + Send
        + Sync
        + 'static,
{
    Arc::new(f)
}

/// A batch writer: every item of a group in one call, on the shared transaction, answering one
/// result per item in order. It may run twice (a second time item by item when the shared
/// transaction failed), so it must not consume what it writes.
pub type Batch<I, T> = Arc<
    dyn for<'t> Fn(&'t Transaction<'t>, &'t [I]) -> BoxFuture<'t, Result<Vec<T>, StoreError>>
        + Send
        + Sync,
>;

/// Wraps a closure as a batch writer (the annotation makes it generic over the lifetimes).
pub fn batch<I, T, F>(f: F) -> Batch<I, T>
where
    F: for<'t> Fn(&'t Transaction<'t>, &'t [I]) -> BoxFuture<'t, Result<Vec<T>, StoreError>>
        + Send
        + Sync
        + 'static,
{
    Arc::new(f)
}

struct Job<I, T> {
    item: I,
    reply: oneshot::Sender<Result<T, CommitError>>,
}

/// Why a write of a group commit did not commit.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct CommitError {
    /// What happened
    pub message: String,
    /// The server refused this write for what it carries (see
    /// [`is_refusal`](super::is_refusal)): writing it again would be refused again. Otherwise
    /// the database or the connection failed and the write may succeed later.
    pub refused: bool,
    /// The committing task has stopped: no write through this handle will ever succeed
    pub stopped: bool,
}

impl CommitError {
    fn failed(message: impl Into<String>) -> Self {
        Self {
            message: message.into(),
            refused: false,
            stopped: false,
        }
    }

    fn stopped() -> Self {
        Self {
            message: "the database writer has stopped".into(),
            refused: false,
            stopped: true,
        }
    }
}

impl From<CommitError> for String {
    fn from(e: CommitError) -> Self {
        e.message
    }
}

/// The handle callers submit items through; cheap to clone. Items of one group are written by
/// one call of the group's [`Batch`] (a multi-row statement costs the database far less per
/// row than a statement per row).
pub struct BatchCommit<I, T> {
    jobs: mpsc::UnboundedSender<Job<I, T>>,
}

/// Group commit of independent units of work, each its own statements.
pub type GroupCommit<T> = BatchCommit<Work<T>, T>;

impl<I, T> Clone for BatchCommit<I, T> {
    fn clone(&self) -> Self {
        Self {
            jobs: self.jobs.clone(),
        }
    }
}

impl<I, T> std::fmt::Debug for BatchCommit<I, T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BatchCommit").finish_non_exhaustive()
    }
}

impl<T: Send + 'static> GroupCommit<T> {
    /// Starts the committing task on `pool`, taking at most `max_group` units per commit;
    /// `what` names the writes in logs and metrics. The task ends when every handle is dropped.
    ///
    /// `linger` is how long the task waits after the first unit for more to join: nothing for
    /// writes someone is waiting on, a few milliseconds for background writes, where bigger
    /// groups cost the database (and the CPU it shares with the gateway) far less per write.
    pub fn spawn(
        pool: deadpool_postgres::Pool,
        max_group: usize,
        linger: Duration,
        what: &'static str,
    ) -> (Self, JoinHandle<()>) {
        // the units of a group run pipelined on the shared transaction
        let units: Batch<Work<T>, T> = batch(|tx, units: &[Work<T>]| {
            Box::pin(async move {
                join_all(units.iter().map(|unit| unit(tx)))
                    .await
                    .into_iter()
                    .collect()
            })
        });
        Self::spawn_batch(pool, max_group, linger, what, units)
    }
}

impl<I: Send + Sync + 'static, T: Send + 'static> BatchCommit<I, T> {
    /// Starts the committing task on `pool` writing each group with `write` (at most
    /// `max_group` items, waiting `linger` for more to join, as [`GroupCommit::spawn`]).
    pub fn spawn_batch(
        pool: deadpool_postgres::Pool,
        max_group: usize,
        linger: Duration,
        what: &'static str,
        write: Batch<I, T>,
    ) -> (Self, JoinHandle<()>) {
        let (jobs, rx) = mpsc::unbounded_channel();
        let task = tokio::spawn(run(pool, rx, max_group.max(1), linger, what, write));
        (Self { jobs }, task)
    }

    /// Writes `item` in the next group commit; its result once committed, or why it was not.
    pub async fn write(&self, item: I) -> Result<T, CommitError> {
        let (reply, answer) = oneshot::channel();
        self.jobs
            .send(Job { item, reply })
            .map_err(|_| CommitError::stopped())?;
        answer.await.map_err(|_| CommitError::stopped())?
    }
}

async fn run<I, T>(
    pool: deadpool_postgres::Pool,
    mut rx: mpsc::UnboundedReceiver<Job<I, T>>,
    max_group: usize,
    linger: Duration,
    what: &'static str,
    write: Batch<I, T>,
) {
    while let Some(first) = rx.recv().await {
        let mut group = vec![first];
        let deadline = tokio::time::Instant::now() + linger;
        while group.len() < max_group {
            match rx.try_recv() {
                Ok(job) => group.push(job),
                Err(_) if linger.is_zero() => break,
                Err(_) => match tokio::time::timeout_at(deadline, rx.recv()).await {
                    Ok(Some(job)) => group.push(job),
                    Ok(None) | Err(_) => break,
                },
            }
        }
        metrics::histogram!("tradegate_group_commit_size", "writes" => what)
            .record(group.len() as f64);
        let mut client = match pool.get().await {
            Ok(c) => c,
            Err(e) => {
                let e = CommitError::failed(format!("no database connection: {e}"));
                for job in group {
                    let _ = job.reply.send(Err(e.clone()));
                }
                continue;
            }
        };
        let (items, replies): (Vec<I>, Vec<_>) =
            group.into_iter().map(|job| (job.item, job.reply)).unzip();
        match together(&mut client, &write, &items).await {
            Ok(results) => {
                for (reply, result) in replies.into_iter().zip(results) {
                    let _ = reply.send(Ok(result));
                }
            }
            Err(e) if items.len() == 1 => {
                for reply in replies {
                    let _ = reply.send(Err(e.clone()));
                }
            }
            Err(e) => {
                tracing::warn!(writes = what, units = items.len(), error = %e,
                    "a group commit failed; writing its units one by one");
                for (item, reply) in items.iter().zip(replies) {
                    let result = together(&mut client, &write, std::slice::from_ref(item))
                        .await
                        .map(|mut r| r.remove(0));
                    let _ = reply.send(result);
                }
            }
        }
    }
}

/// Writes `items` with `write` in one transaction and commits; one result per item, or the
/// first error.
async fn together<I, T>(
    client: &mut deadpool_postgres::Object,
    write: &Batch<I, T>,
    items: &[I],
) -> Result<Vec<T>, CommitError> {
    let failed = |e: tokio_postgres::Error| CommitError {
        message: super::describe(&e),
        refused: super::is_refusal(&e),
        stopped: false,
    };
    let tx = client.transaction().await.map_err(failed)?;
    // statements prepared on this connection before are taken from its cache
    let results = write(&tx, items).await.map_err(|e| CommitError {
        message: e.to_string(),
        refused: e.is_refusal(),
        stopped: false,
    })?;
    if results.len() != items.len() {
        return Err(CommitError::failed(format!(
            "a batch of {} writes answered {} results",
            items.len(),
            results.len()
        )));
    }
    // a deferred constraint refuses at the commit
    tx.commit().await.map_err(failed)?;
    Ok(results)
}
