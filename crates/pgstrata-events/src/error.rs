//! The events module's errors, and the one place that maps what the database reports to them.

use crate::ids::EventId;
use pgstrata_core::error::DbError;
use pgstrata_core::ids::InvalidId;
use pgstrata_core::page::InvalidPage;

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// An event the table does not take: refused by the checks of [`crate::NewEvent`] before any
    /// SQL (`index` is its position in the batch), or by the database (a time outside the
    /// accepted window, a name outside an enforced catalog; `event_id` names it, and `index` is
    /// filled in when it came from a batch). Nothing of the batch is written.
    #[error("invalid event{} {}: {field}: {reason}",
            index.map(|i| format!(" #{i}")).unwrap_or_default(),
            event_id.map(|id| id.to_string()).unwrap_or_default())]
    InvalidEvent {
        index: Option<usize>,
        event_id: Option<EventId>,
        field: &'static str,
        reason: String,
    },

    /// An argument that is not an event's: a batch id reused for other events, an empty or
    /// oversized batch, a time range, funnel steps, a maintenance setting.
    #[error("invalid {field}: {reason}")]
    InvalidField { field: &'static str, reason: String },

    /// A string that is not a UUID where an event or batch id was expected.
    #[error(transparent)]
    InvalidId(#[from] InvalidId),

    /// A page size outside 1..=1000.
    #[error(transparent)]
    InvalidPage(#[from] InvalidPage),

    /// The month of an event has no partition: partitions were not created ahead.
    #[error("events.events has no partition for this month ({message}): run `pgstrata events maintain`")]
    NoPartition { message: String },

    #[error(transparent)]
    Db(DbError),
}

/// The fields the database refuses by name: 22023 with `DETAIL field=<name> event_id=<id>`
/// from the insert trigger, or a CHECK constraint of `events.events`.
const EVENT_FIELDS: [&str; 6] = ["occurred_at", "name", "actor", "properties", "session_id", "source"];

/// Other arguments the functions refuse with 22023 and `DETAIL field=<name>`.
const ARGUMENT_FIELDS: [&str; 4] = ["batch_id", "limit", "ahead", "retention_months"];

/// The CHECK constraints of `events.events` and the field each one guards.
const CONSTRAINTS: [(&str, &str); 6] = [
    ("events_name_format", "name"),
    ("events_actor_length", "actor"),
    ("events_properties_size", "properties"),
    ("events_properties_object", "properties"),
    ("events_session_id_length", "session_id"),
    ("events_source_length", "source"),
];

impl From<DbError> for Error {
    fn from(db: DbError) -> Self {
        match db {
            // A row no partition takes is a 23514 that names no constraint.
            DbError::InvalidInput {
                ref code,
                constraint: None,
                ref message,
                ..
            } if code == "23514" => Error::NoPartition {
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
                    event_id: None,
                    field,
                    reason: message.clone(),
                },
                None => Error::Db(db),
            },
            DbError::InvalidInput {
                ref code, ref message, ..
            } if code == "22023" => {
                let named = db.detail_value("field");
                if let Some(field) = named.and_then(|n| EVENT_FIELDS.into_iter().find(|f| *f == n)) {
                    Error::InvalidEvent {
                        index: None,
                        event_id: db.detail_value("event_id").and_then(|id| id.parse().ok()),
                        field,
                        reason: message.clone(),
                    }
                } else if let Some(field) = named.and_then(|n| ARGUMENT_FIELDS.into_iter().find(|f| *f == n)) {
                    Error::InvalidField {
                        field,
                        reason: message.clone(),
                    }
                } else {
                    Error::Db(db)
                }
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

impl Error {
    /// The same error, naming the event's position in its batch when the database named its id.
    pub(crate) fn in_batch(self, position: impl Fn(EventId) -> Option<usize>) -> Self {
        match self {
            Error::InvalidEvent {
                index: None,
                event_id: Some(id),
                field,
                reason,
            } => Error::InvalidEvent {
                index: position(id),
                event_id: Some(id),
                field,
                reason,
            },
            other => other,
        }
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;
