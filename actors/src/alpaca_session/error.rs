//! Why an AlpacaSession step did not complete: typed, with its source, so a caller can tell a
//! database failure from the broker's answer (each told in the source's own words).

use crate::domain::ingestion::Invalid;
use crate::store::StoreError;
use crate::store::group::CommitError;

use super::rest::CallError;

/// Why a session step failed.
#[derive(Debug, thiserror::Error)]
pub enum SessionError {
    /// No database connection
    #[error(transparent)]
    Pool(#[from] deadpool_postgres::PoolError),
    /// A statement failed
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The session's group commit did not commit the write
    #[error(transparent)]
    Commit(#[from] CommitError),
    /// A payload that cannot be stored as given
    #[error(transparent)]
    Payload(#[from] Invalid),
    /// The broker could not be asked, or its answer was lost
    #[error(transparent)]
    Call(#[from] CallError),
    /// The broker answered a look-up with neither the order nor 404
    #[error("the look-up answered {status}: {body}")]
    LookUp {
        /// Its HTTP status
        status: u16,
        /// Its body
        body: String,
    },
    /// The broker answered a listing with an error status
    #[error("listing orders answered {status}: {body}")]
    Listing {
        /// Its HTTP status
        status: u16,
        /// Its body
        body: String,
    },
    /// The broker answered the look-up of a working order with an error status, or not at all
    #[error("looking up order {order}{problem}")]
    OrderLookUp {
        /// The broker's order id
        order: String,
        /// What it answered (`answered 503: ...`), or why it did not (`: ...`)
        problem: String,
    },
    /// A position the broker sent cannot be read (the snapshot is not recorded)
    #[error("a position the broker sent cannot be read: {0}")]
    BadPosition(String),
    /// A `positions.sync` job with a payload it does not take (it takes none)
    #[error("a positions.sync job takes no payload, got {0}")]
    BadJob(String),
    /// A stream frame that is not JSON
    #[error("not JSON: {0}")]
    NotJson(#[source] serde_json::Error),
    /// The stream said nothing within the wait
    #[error("no answer within {0} s")]
    Silent(u64),
    /// The stream closed
    #[error("the stream closed")]
    Closed,
    /// The session is stopping
    #[error("the session is stopping")]
    Stopping,
    /// The stream's connect did not complete within the wait
    #[error("connect timed out after {0} s")]
    ConnectTimeout(u64),
    /// The stream's TLS handshake failed (an untrusted or mismatched certificate, ...)
    #[error("TLS handshake with {url} failed: {source}")]
    TlsHandshake {
        /// The stream's URL
        url: String,
        /// Why
        source: tokio_tungstenite::tungstenite::error::TlsError,
    },
    /// The stream refused the credentials (its answer, redacted)
    #[error("not authorized: {0}")]
    NotAuthorized(String),
    /// The stream did not confirm the subscription (its answer, redacted)
    #[error("listen was not confirmed: {0}")]
    NotListening(String),
    /// The stream's write buffer is full (the frame it held is not kept: it may carry the
    /// credentials)
    #[error("the stream's write buffer is full")]
    WriteBufferFull,
    /// The WebSocket failed
    #[error(transparent)]
    WebSocket(#[from] tokio_tungstenite::tungstenite::Error),
    /// The broker answered, but its answer could not be stored (the order is looked up)
    #[error("the broker answered {answered} but it could not be stored: {source}")]
    Unstored {
        /// The outcome the broker told
        answered: String,
        /// Why it was not stored
        source: Box<SessionError>,
    },
    /// What should have been written was not (a bug, or a database that lost it)
    #[error("{0}")]
    Missing(&'static str),
}
