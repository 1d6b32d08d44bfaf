//! The queue module's errors.

use pgstrata_core::error::DbError;

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

    #[error(transparent)]
    Db(#[from] DbError),
}

impl From<sqlx::Error> for Error {
    fn from(e: sqlx::Error) -> Self {
        Error::Db(e.into())
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;
