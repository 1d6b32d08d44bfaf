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

    /// Another sealer holds the sealer's lock (`audit.seal_locks`) for its transaction: this round
    /// sealed nothing. Expected now and then with two sealers; persistent, it means something
    /// holds the lock (doctor then reports records left unsealed).
    #[error("another audit sealer is running: {message}")]
    SealerBusy { message: String },

    #[error(transparent)]
    Db(DbError),
}

/// The fields the database refuses by name (SQLSTATE 22023, `DETAIL: field=<name>`).
const CHECKED_FIELDS: [&str; 7] = [
    "details",
    "old_values",
    "new_values",
    "action",
    "resource_type",
    "resource_id",
    "request_id",
];

impl From<DbError> for Error {
    fn from(db: DbError) -> Self {
        match db {
            // 23514 is also a CHECK violation; only the routing failure names "no partition".
            DbError::InvalidInput {
                ref code, ref message, ..
            } if code == "23514" && message.contains("no partition of relation") => Error::NoPartition {
                message: message.clone(),
            },
            DbError::InvalidInput {
                ref code, ref message, ..
            } if code == "22023" => match CHECKED_FIELDS
                .iter()
                .find(|f| message.contains(&format!("{f} is")) || message.contains(&format!("{f} must")))
            {
                Some(field) => Error::InvalidField {
                    field,
                    reason: message.clone(),
                },
                None => Error::Db(db),
            },
            DbError::Other(ref e)
                if e.as_database_error()
                    .and_then(|d| d.code())
                    .is_some_and(|c| c == "55P03") =>
            {
                Error::SealerBusy { message: e.to_string() }
            }
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
