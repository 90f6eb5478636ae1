//! `operator_actions`: the append-only history of operator changes.

use chrono::{DateTime, Utc};
use tokio_postgres::GenericClient;

use super::StoreError;
use crate::domain::{NewOperatorAction, OperatorAction};

/// The longest reason an operator may give (the column allows more; callers refuse longer).
pub const MAX_REASON_CHARS: usize = 1024;

/// Records one change; its id.
pub async fn record(
    client: &impl GenericClient,
    a: &NewOperatorAction<'_>,
) -> Result<i64, StoreError> {
    let row = client
        .query_one(
            "INSERT INTO operator_actions (actor, peer, action, target, previous, new, reason) \
             VALUES ($1, $2, $3, $4, $5, $6, $7) RETURNING id",
            &[
                &a.by.name,
                &a.by.peer,
                &a.action,
                &a.target,
                &a.previous,
                &a.new,
                &a.reason,
            ],
        )
        .await
        .map_err(StoreError::new("recording an operator action"))?;
    Ok(row.get(0))
}

/// Which changes to list.
#[derive(Debug, Clone, Default)]
pub struct ActionFilter {
    /// Made at or after
    pub since: Option<DateTime<Utc>>,
    /// Made before
    pub until: Option<DateTime<Utc>>,
    /// By this credential
    pub actor: Option<String>,
    /// Of this kind
    pub action: Option<String>,
    /// At most this many, newest first
    pub limit: i64,
}

/// Changes matching `f`, newest first.
pub async fn list(
    client: &impl GenericClient,
    f: &ActionFilter,
) -> Result<Vec<OperatorAction>, StoreError> {
    let rows = client
        .query(
            "SELECT id, at, actor, peer, action, target, previous, new, reason \
             FROM operator_actions \
             WHERE ($1::timestamptz IS NULL OR at >= $1) AND ($2::timestamptz IS NULL OR at < $2) \
               AND ($3::text IS NULL OR actor = $3) AND ($4::text IS NULL OR action = $4) \
             ORDER BY at DESC, id DESC LIMIT $5",
            &[&f.since, &f.until, &f.actor, &f.action, &f.limit],
        )
        .await
        .map_err(StoreError::new("listing operator actions"))?;
    Ok(rows
        .iter()
        .map(|r| OperatorAction {
            id: r.get(0),
            at: r.get(1),
            actor: r.get(2),
            peer: r.get(3),
            action: r.get(4),
            target: r.get(5),
            previous: r.get(6),
            new: r.get(7),
            reason: r.get(8),
        })
        .collect())
}
