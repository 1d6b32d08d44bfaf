//! The eventstore module's errors, and the one place that maps what the database reports to them.

use crate::append::ExpectedVersion;
use pgstrata_core::error::DbError;
use pgstrata_core::page::InvalidPage;

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The stream is not at the version the appender read: another writer appended first (or
    /// the stream exists where none was expected). Nothing was written. Read the stream again,
    /// decide again, append with the version read.
    #[error("stream {stream} is at version {current}, not the expected {expected}: read it again and retry")]
    WrongExpectedVersion {
        stream: String,
        expected: ExpectedVersion,
        current: i64,
    },

    /// An event the log does not take: refused before any SQL (`index` is its position in the
    /// append) or by a CHECK of `eventstore.events`. Nothing of the append is written.
    #[error("invalid event{}: {field}: {reason}", index.map(|i| format!(" #{i}")).unwrap_or_default())]
    InvalidEvent {
        index: Option<usize>,
        field: &'static str,
        reason: String,
    },

    /// An argument that is not an event's: a stream name, an expected version, the number of
    /// events, a batch size, a subscription's name or category.
    #[error("invalid {field}: {reason}")]
    InvalidField { field: &'static str, reason: String },

    /// An event id that the stream's tenant already stored: the append was a retry of one that
    /// committed, or two events share an id. Nothing of this append was written.
    #[error("duplicate event id: {message}")]
    DuplicateEvent { message: String },

    /// A page size outside 1..=1000.
    #[error(transparent)]
    InvalidPage(#[from] InvalidPage),

    /// The subscription has no checkpoint row: create it first ([`crate::subscription::create`]).
    #[error("no subscription named {name}: create it first")]
    UnknownSubscription { name: String },

    /// A projection's own code failed; the batch's transaction was rolled back, so neither its
    /// read models nor its checkpoint moved.
    #[error("projection {name} failed: {message}")]
    Projection { name: String, message: String },

    #[error(transparent)]
    Db(DbError),
}

/// The fields the database refuses with 22023 and `DETAIL field=<name>`.
const ARGUMENT_FIELDS: [&str; 6] = ["stream", "expected_version", "events", "limit", "version", "state"];

/// The CHECK constraints of `eventstore.snapshots` and the argument each one guards.
const SNAPSHOT_CONSTRAINTS: [(&str, &str); 3] = [
    ("snapshots_name_format", "name"),
    ("snapshots_version_positive", "version"),
    ("snapshots_state_size", "state"),
];

/// The CHECK constraints of `eventstore.events` and the field each one guards.
const CONSTRAINTS: [(&str, &str); 7] = [
    ("events_stream_format", "stream"),
    ("events_type_format", "type"),
    ("events_data_size", "data"),
    ("events_data_object", "data"),
    ("events_metadata_size", "metadata"),
    ("events_metadata_object", "metadata"),
    ("events_request_id_length", "request_id"),
];

impl From<DbError> for Error {
    fn from(db: DbError) -> Self {
        match db {
            // The stream is not where the appender expected it; `for_append` names it.
            DbError::StaleVersion { current, .. } => Error::WrongExpectedVersion {
                stream: String::new(),
                expected: ExpectedVersion::Any,
                current: current.unwrap_or(-1),
            },
            DbError::Conflict {
                ref constraint,
                ref message,
            } if constraint == "events_pkey" => Error::DuplicateEvent {
                message: message.clone(),
            },
            DbError::InvalidInput {
                ref code,
                constraint: Some(ref constraint),
                ref message,
                ..
            } if code == "23514" => match CONSTRAINTS.iter().find(|(c, _)| c == constraint) {
                Some((_, field)) => Error::InvalidEvent {
                    index: None,
                    field,
                    reason: message.clone(),
                },
                None => match SNAPSHOT_CONSTRAINTS.iter().find(|(c, _)| c == constraint) {
                    Some((_, field)) => Error::InvalidField {
                        field,
                        reason: message.clone(),
                    },
                    None => Error::Db(db),
                },
            },
            DbError::InvalidInput {
                ref code, ref message, ..
            } if code == "22023" => match db
                .detail_value("field")
                .and_then(|n| ARGUMENT_FIELDS.into_iter().find(|f| *f == n))
            {
                Some(field) => Error::InvalidField {
                    field,
                    reason: message.clone(),
                },
                None if db.detail_value("field") == Some("type") => Error::InvalidEvent {
                    index: None,
                    field: "type",
                    reason: message.clone(),
                },
                None => Error::Db(db),
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

impl Error {
    /// The same error, naming the stream and the version the appender expected.
    pub(crate) fn for_append(self, stream: &str, expected: ExpectedVersion) -> Self {
        match self {
            Error::WrongExpectedVersion { current, .. } => Error::WrongExpectedVersion {
                stream: stream.to_owned(),
                expected,
                current,
            },
            other => other,
        }
    }

    /// Whether running the same transaction again may succeed (a serialization failure or a
    /// deadlock). A wrong expected version is not: the caller must read and decide again.
    pub fn is_retryable(&self) -> bool {
        matches!(self, Error::Db(db) if db.is_retryable())
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;
