//! The audit module's errors, and the one place that maps what the database reports to them.

use pgstrata_core::error::DbError;
use pgstrata_core::page::InvalidPage;

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A value the log does not keep: refused by [`crate::Event`]'s checks before any SQL, by a
    /// filter ("time range"), or by the writers (22023 with `DETAIL: field=<name>`; `reason` is
    /// the database's message).
    #[error("invalid {field}: {reason}")]
    InvalidField { field: &'static str, reason: String },

    /// A page size outside 1..=1000.
    #[error(transparent)]
    InvalidPage(#[from] InvalidPage),

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

/// The fields the writers refuse by name (SQLSTATE 22023, `DETAIL: field=<name>`).
const CHECKED_FIELDS: [&str; 7] = [
    "details",
    "old_values",
    "new_values",
    "action",
    "resource_type",
    "resource_id",
    "request_id",
];

/// `lock_not_available`: `audit.seal` found the sealer's row lock taken (`FOR UPDATE NOWAIT`).
const LOCK_NOT_AVAILABLE: &str = "55P03";

impl From<DbError> for Error {
    fn from(db: DbError) -> Self {
        match db {
            // A row no partition takes is a 23514 that names no constraint (every CHECK
            // violation names its constraint); audit.records has no CHECK constraint since V3.
            DbError::InvalidInput {
                ref code,
                constraint: None,
                ref message,
                ..
            } if code == "23514" => Error::NoPartition {
                message: message.clone(),
            },
            DbError::InvalidInput {
                ref code, ref message, ..
            } if code == "22023" => match db
                .detail_value("field")
                .and_then(|named| CHECKED_FIELDS.into_iter().find(|f| *f == named))
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
                    .is_some_and(|c| c == LOCK_NOT_AVAILABLE) =>
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
