//! The webhooks module's errors, and the one place that maps what the database reports to them.

use crate::ids::MessageId;
use pgstrata_core::error::DbError;
use pgstrata_core::ids::InvalidId;
use pgstrata_core::page::InvalidPage;

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A value the module does not take, named by its field (`url`, `event_types`, `headers`,
    /// `event_type`, `payload`, `key`, ...), refused before any SQL or by a CHECK of the
    /// database. Nothing was written.
    #[error("invalid {field}: {reason}")]
    InvalidInput { field: &'static str, reason: String },

    /// A limit was reached: the payload size, endpoints per tenant, live secrets per endpoint
    /// (`field` says which; `limit` is the limit in force when known).
    #[error("{field} over the limit{}: {reason}", limit.map(|l| format!(" of {l}")).unwrap_or_default())]
    TooLarge {
        field: &'static str,
        limit: Option<i64>,
        reason: String,
    },

    /// The idempotency key was already used by the tenant for a message with another event type
    /// or payload (`existing`).
    #[error("idempotency key already used for message {}: send the same message with it, or another key",
            existing.map(|m| m.to_string()).unwrap_or_default())]
    IdempotencyConflict { existing: Option<MessageId> },

    /// The endpoint or message does not exist in this tenant (`message` names it).
    #[error("not found: {message}")]
    NotFound { message: String },

    /// The endpoint is disabled, so it cannot be replayed to: enable it first.
    #[error("endpoint disabled: {message}")]
    Disabled { message: String },

    /// A string that is not a UUID where an id was expected.
    #[error(transparent)]
    InvalidId(#[from] InvalidId),

    /// A page size outside 1..=1000.
    #[error(transparent)]
    InvalidPage(#[from] InvalidPage),

    #[error(transparent)]
    Db(DbError),
}

/// CHECK constraints of the module's tables and the field each one guards.
const CONSTRAINTS: [(&str, &str); 12] = [
    ("endpoints_url_format", "url"),
    ("endpoints_description_length", "description"),
    ("endpoints_event_types_format", "event_types"),
    ("endpoints_payload_filter_object", "payload_filter"),
    ("endpoints_rate_limit_range", "rate_limit"),
    ("endpoints_max_in_flight_range", "max_in_flight"),
    ("endpoints_headers_valid", "headers"),
    ("secrets_key_length", "key"),
    ("messages_event_type_format", "event_type"),
    ("messages_payload_size", "payload"),
    ("messages_idempotency_key_length", "idempotency_key"),
    ("attempts_response_body_size", "response_body"),
];

/// Fields the functions and triggers name in `DETAIL field=<name>`.
const FIELDS: [&str; 12] = [
    "event_type",
    "payload",
    "idempotency_key",
    "grace",
    "since",
    "limit",
    "lease",
    "worker",
    "endpoints",
    "secrets",
    "url",
    "key",
];

fn field_named(name: Option<&str>) -> Option<&'static str> {
    name.and_then(|n| FIELDS.into_iter().find(|f| *f == n))
}

impl From<DbError> for Error {
    fn from(db: DbError) -> Self {
        match db {
            DbError::InvalidInput {
                ref code,
                constraint: Some(ref constraint),
                ref message,
                ..
            } if code == "23514" => match CONSTRAINTS.iter().find(|(c, _)| c == constraint) {
                Some((_, field)) => Error::InvalidInput {
                    field,
                    reason: message.clone(),
                },
                None => Error::Db(db),
            },
            DbError::InvalidInput {
                ref code, ref message, ..
            } if code == "22023" => match field_named(db.detail_value("field")) {
                Some(field) => Error::InvalidInput {
                    field,
                    reason: message.clone(),
                },
                None => Error::Db(db),
            },
            // What the message trigger's cast refuses: not UTF-8 (22021) or not JSON (22P02).
            DbError::InvalidInput {
                ref code, ref message, ..
            } if code == "22021" || code == "22P02" => Error::InvalidInput {
                field: "payload",
                reason: format!("the payload must be JSON in UTF-8: {message}"),
            },
            // The operation names the field (`Error::limit_of`): PS413 carries only the limit.
            DbError::LimitExceeded { limit, message } => Error::TooLarge {
                field: "limit",
                limit,
                reason: message,
            },
            DbError::Rejected { ref detail, .. }
                if pgstrata_core::error::detail_value(detail.as_deref(), "field") == Some("idempotency_key") =>
            {
                Error::IdempotencyConflict {
                    existing: pgstrata_core::error::detail_value(detail.as_deref(), "message")
                        .and_then(|m| m.parse().ok()),
                }
            }
            DbError::NotFound { message } => Error::NotFound { message },
            DbError::Gone { message, .. } => Error::Disabled { message },
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
    /// The same error, naming `field` when it is a limit (PS413) the operation knows the field of.
    pub(crate) fn limit_of(self, field: &'static str) -> Self {
        match self {
            Error::TooLarge { limit, reason, .. } => Error::TooLarge { field, limit, reason },
            other => other,
        }
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;
