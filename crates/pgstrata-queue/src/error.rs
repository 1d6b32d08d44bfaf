//! The queue module's errors, and the one place a [`DbError`] becomes one.

use crate::ids::{JobId, JobState};
use pgstrata_core::error::DbError;
use pgstrata_core::page::InvalidPage;

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    #[error("invalid queue name {0:?}: 1 to 63 of a-z, 0-9, _, ., -")]
    InvalidQueue(String),

    #[error("invalid job kind {0:?}: 1 to 200 characters")]
    InvalidKind(String),

    #[error("invalid {field}: {reason}")]
    InvalidField { field: &'static str, reason: String },

    #[error("payload of a {kind} job does not serialize: {source}")]
    Payload {
        kind: String,
        #[source]
        source: serde_json::Error,
    },

    #[error(
        "role {role} does not hold pgstrata_worker: a worker's pool must log in as a role granted \
         pgstrata_worker (GRANT pgstrata_worker TO {role})"
    )]
    NotWorker { role: String },

    /// An operator action named a job the caller does not see (none with this id, another
    /// tenant's, or a system job for the request path).
    #[error("job {id} not found (or not visible to this role in this tenant context)")]
    NotFound { id: JobId },

    /// An operator action on a job whose state does not allow it.
    #[error("job {id} is {state}: {operation} takes a job that is {allowed}")]
    Gone {
        id: JobId,
        state: JobState,
        operation: &'static str,
        allowed: &'static str,
    },

    /// A page size outside 1..=1000.
    #[error(transparent)]
    InvalidPage(#[from] InvalidPage),

    #[error(transparent)]
    Db(DbError),
}

impl From<DbError> for Error {
    /// The queue's SQL raises no code of its own (PS4xx) and its constraints are internal, so
    /// every database error keeps [`DbError`]'s meaning: `Forbidden` (a tenant other than the
    /// context's, a worker function on the request path), `InvalidInput` (a lease or retention
    /// out of range, 22023), `Retryable`, ...
    fn from(e: DbError) -> Self {
        Error::Db(e)
    }
}

impl From<sqlx::Error> for Error {
    fn from(e: sqlx::Error) -> Self {
        DbError::from(e).into()
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;
