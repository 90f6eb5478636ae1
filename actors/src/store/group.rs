//! Group commit for independent writes: callers hand over a unit of work and wait for its
//! result; one task takes every unit waiting, runs them pipelined in one transaction and commits
//! once, so a burst of N writes costs one commit instead of N. Each caller still gets its own
//! result only after the commit. If the shared transaction fails (one unit's statement is
//! refused, say), the units are run again one transaction each, so one bad write never takes the
//! others down with it.
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

struct Job<T> {
    work: Work<T>,
    reply: oneshot::Sender<Result<T, String>>,
}

/// The handle callers submit work through; cheap to clone.
pub struct GroupCommit<T> {
    jobs: mpsc::UnboundedSender<Job<T>>,
}

impl<T> Clone for GroupCommit<T> {
    fn clone(&self) -> Self {
        Self {
            jobs: self.jobs.clone(),
        }
    }
}

impl<T> std::fmt::Debug for GroupCommit<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GroupCommit").finish_non_exhaustive()
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
        let (jobs, rx) = mpsc::unbounded_channel();
        let task = tokio::spawn(run(pool, rx, max_group.max(1), linger, what));
        (Self { jobs }, task)
    }

    /// Runs `work` in the next group commit; its result once committed, or why it was not.
    pub async fn write(&self, work: Work<T>) -> Result<T, String> {
        let (reply, answer) = oneshot::channel();
        self.jobs
            .send(Job { work, reply })
            .map_err(|_| "the database writer has stopped".to_string())?;
        answer
            .await
            .map_err(|_| "the database writer has stopped".to_string())?
    }
}

async fn run<T: Send + 'static>(
    pool: deadpool_postgres::Pool,
    mut rx: mpsc::UnboundedReceiver<Job<T>>,
    max_group: usize,
    linger: Duration,
    what: &'static str,
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
                let e = format!("no database connection: {e}");
                for job in group {
                    let _ = job.reply.send(Err(e.clone()));
                }
                continue;
            }
        };
        match together(&mut client, &group).await {
            Ok(results) => {
                for (job, result) in group.into_iter().zip(results) {
                    let _ = job.reply.send(Ok(result));
                }
            }
            Err(e) if group.len() == 1 => {
                for job in group {
                    let _ = job.reply.send(Err(e.clone()));
                }
            }
            Err(e) => {
                tracing::warn!(writes = what, units = group.len(), error = %e,
                    "a group commit failed; writing its units one by one");
                for job in group {
                    let result = together(&mut client, std::slice::from_ref(&job))
                        .await
                        .map(|mut r| r.remove(0));
                    let _ = job.reply.send(result);
                }
            }
        }
    }
}

/// Runs `group` pipelined in one transaction and commits; all results, or the first error.
async fn together<T>(
    client: &mut deadpool_postgres::Object,
    group: &[Job<T>],
) -> Result<Vec<T>, String> {
    let tx = client
        .transaction()
        .await
        .map_err(|e| super::describe(&e))?;
    // statements prepared on this connection before are taken from its cache
    let results = join_all(group.iter().map(|job| (job.work)(&tx))).await;
    let results = results
        .into_iter()
        .collect::<Result<Vec<T>, StoreError>>()
        .map_err(|e| e.to_string())?;
    tx.commit().await.map_err(|e| super::describe(&e))?;
    Ok(results)
}
