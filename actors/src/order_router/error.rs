//! Why the router could not answer an order, a cancel or a replace on its merits. Each becomes
//! the reject the strategy receives ([`RouterError::reject`]): the audit database is
//! `audit_unavailable`, a session that does not answer is `session_unavailable`.

use crate::domain::{OrderReject, RejectCode};
use crate::store::StoreError;

/// What stopped the router.
#[derive(Debug, thiserror::Error)]
pub enum RouterError {
    /// No connection to the audit database could be had.
    #[error("no audit database connection: {0}")]
    Pool(#[from] deadpool_postgres::PoolError),
    /// A statement failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The kill switch's row is missing, so nothing changed.
    #[error("the kill switch's row is missing: nothing changed")]
    KillSwitchMissing,
    /// The broker session of an account did not answer.
    #[error("the {account} session did not answer: {source}")]
    Session {
        /// The account
        account: String,
        /// Why
        #[source]
        source: ractor::RactorErr<()>,
    },
}

impl RouterError {
    /// The reject a strategy receives for it.
    pub fn reject(&self) -> OrderReject {
        let code = match self {
            Self::Pool(_) | Self::Store(_) | Self::KillSwitchMissing => {
                RejectCode::AuditUnavailable
            }
            Self::Session { .. } => RejectCode::SessionUnavailable,
        };
        OrderReject::new(code, self.to_string())
    }
}

impl RouterError {
    /// A session's call that failed (the message it carried is dropped).
    pub fn session<T>(account: &str, e: ractor::RactorErr<T>) -> Self {
        Self::Session {
            account: account.to_string(),
            source: e.map(|_| ()),
        }
    }
}

impl From<RouterError> for OrderReject {
    fn from(e: RouterError) -> Self {
        e.reject()
    }
}
