//! The audit module's errors.

use pgstrata_core::error::DbError;
use pgstrata_core::page::InvalidPage;

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    #[error("invalid {field}: {reason}")]
    InvalidField { field: &'static str, reason: String },

    #[error(transparent)]
    Page(#[from] InvalidPage),

    /// The month of the write has no partition: partitions were not created ahead.
    #[error("audit.records has no partition for this month ({message}): run `pgstrata audit maintain`")]
    NoPartition { message: String },

    #[error(transparent)]
    Db(DbError),
}

impl From<DbError> for Error {
    fn from(db: DbError) -> Self {
        match db {
            // 23514 is also a CHECK violation; only the routing failure names "no partition".
            DbError::InvalidInput {
                ref code, ref message, ..
            } if code == "23514" && message.contains("no partition of relation") => Error::NoPartition {
                message: message.clone(),
            },
            other => Error::Db(other),
        }
    }
}

impl From<sqlx::Error> for Error {
    fn from(e: sqlx::Error) -> Self {
        DbError::from(e).into()
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;
