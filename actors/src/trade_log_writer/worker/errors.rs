//! How a failed write is described and classified: the write error, its kind of failure, and
//! the deadlines of statements.

use std::time::Duration;

use super::{ROWS_PER_EXTRA_SECOND, STATEMENT_TIMEOUT};
use crate::store::{self};

/// How a failed statement is handled.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum Failure {
    /// The connection or server failed; the outcome may be unknown. Spill and back off.
    Transient,
    /// Some row is unacceptable (constraint, type, range); isolate it.
    Poison,
    /// A day has no partition.
    MissingPartition,
    /// COPY itself is not possible here; use INSERT.
    CopyUnsupported,
}

/// A failed write: a database error, no connection at all, no answer in time, or a row the
/// database refuses (the batch is then spilled and isolated by the replay, where it cannot hold
/// anything else back).
#[derive(Debug)]
pub(super) enum WriteError {
    Db(tokio_postgres::Error),
    NotConnected,
    TimedOut,
    Refused(String),
}

impl From<tokio_postgres::Error> for WriteError {
    fn from(e: tokio_postgres::Error) -> Self {
        Self::Db(e)
    }
}

impl WriteError {
    pub(super) fn sqlstate(&self) -> Option<String> {
        match self {
            Self::Db(e) => e.as_db_error().map(|db| db.code().code().to_string()),
            Self::NotConnected | Self::TimedOut | Self::Refused(_) => None,
        }
    }

    /// Whether the write may have been stored although it reported a failure.
    pub(super) fn outcome_unknown(&self) -> bool {
        match self {
            Self::TimedOut => true,
            Self::Db(e) => e.as_db_error().is_none(),
            Self::NotConnected | Self::Refused(_) => false,
        }
    }
}

/// `future` with a deadline: no answer in `limit` is [`WriteError::TimedOut`].
pub(super) async fn within<T, E>(
    limit: Duration,
    future: impl Future<Output = Result<T, E>>,
) -> Result<T, WriteError>
where
    WriteError: From<E>,
{
    match tokio::time::timeout(limit, future).await {
        Ok(result) => result.map_err(WriteError::from),
        Err(_) => Err(WriteError::TimedOut),
    }
}

/// The deadline of one statement over `rows` rows.
pub(super) fn statement_limit(rows: usize) -> Duration {
    STATEMENT_TIMEOUT
        + Duration::from_secs(u64::try_from(rows / ROWS_PER_EXTRA_SECOND).unwrap_or(u64::MAX))
}

pub(super) fn classify(e: &WriteError) -> Failure {
    let e = match e {
        WriteError::Db(e) => e,
        WriteError::Refused(_) => return Failure::Poison,
        WriteError::NotConnected | WriteError::TimedOut => return Failure::Transient,
    };
    let Some(db) = e.as_db_error() else {
        return Failure::Transient;
    };
    let code = db.code().code();
    if code == "23514" && db.message().contains("no partition") {
        return Failure::MissingPartition;
    }
    if code == "0A000" {
        return Failure::CopyUnsupported;
    }
    if store::is_refusal(e) {
        return Failure::Poison;
    }
    Failure::Transient
}

pub(super) fn describe(e: &WriteError) -> String {
    match e {
        WriteError::Db(e) => store::describe(e),
        WriteError::NotConnected => "not connected".into(),
        WriteError::TimedOut => "no answer in time".into(),
        WriteError::Refused(why) => format!("a row was refused: {why}"),
    }
}
