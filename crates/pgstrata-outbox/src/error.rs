//! The outbox module's errors, and the one place that maps what the database reports to them.

use pgstrata_core::error::DbError;

/// What a [`crate::Sink`] returns when it cannot deliver: the relay rolls the partition back,
/// logs it and tries again later, in order.
pub type SinkError = Box<dyn std::error::Error + Send + Sync>;

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A message the table does not take (`aggregate_type`, `aggregate_id`, `event_type`:
    /// 1 to 255 characters, no control characters; `payload`: at most 128 KiB of JSON), refused
    /// before any SQL or by `outbox.publish` (23514 naming the rule's constraint). Nothing is
    /// written.
    #[error("invalid message {field}: {reason}")]
    InvalidMessage { field: &'static str, reason: String },

    /// An argument out of range (a sink name, a batch size, a retention).
    #[error("invalid {field}: {reason}")]
    InvalidField { field: &'static str, reason: String },

    /// A relay's pool logs in as a role that does not hold `pgstrata_worker`.
    #[error(
        "role {role} does not hold pgstrata_worker: a relay's pool must log in as a role granted \
         pgstrata_worker (GRANT pgstrata_worker TO {role})"
    )]
    NotWorker { role: String },

    /// Anything else the database reported, with [`DbError`]'s meaning: `Forbidden` (no tenant
    /// in context, a suspended tenant, a function the role may not run), `Retryable` (40001:
    /// the transaction is older than one that already published for the same aggregate and
    /// committed; run the whole transaction again, which gets a newer transaction id).
    #[error(transparent)]
    Db(DbError),
}

/// The rules `outbox.publish` refuses a field by (23514 with the constraint's name; CHECK
/// constraints of `outbox.messages` until V3) and the field each one guards.
const CONSTRAINTS: [(&str, &str); 4] = [
    ("messages_aggregate_type_format", "aggregate_type"),
    ("messages_aggregate_id_format", "aggregate_id"),
    ("messages_event_type_format", "event_type"),
    ("messages_payload_size", "payload"),
];

/// Arguments the functions refuse with 22023 and `DETAIL field=<name>`.
const ARGUMENT_FIELDS: [&str; 4] = ["partitions", "limit", "older_than", "payload"];

impl From<DbError> for Error {
    fn from(db: DbError) -> Self {
        match db {
            DbError::InvalidInput {
                ref code,
                constraint: Some(ref constraint),
                ref message,
                ..
            } if code == "23514" => match CONSTRAINTS.iter().find(|(c, _)| c == constraint) {
                Some((_, field)) => Error::InvalidMessage {
                    field,
                    reason: message.clone(),
                },
                None => Error::Db(db),
            },
            DbError::InvalidInput {
                ref code, ref message, ..
            } if code == "22023" => match db
                .detail_value("field")
                .and_then(|n| ARGUMENT_FIELDS.into_iter().find(|f| *f == n))
            {
                Some("payload") => Error::InvalidMessage {
                    field: "payload",
                    reason: message.clone(),
                },
                Some(field) => Error::InvalidField {
                    field,
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

pub type Result<T, E = Error> = std::result::Result<T, E>;
