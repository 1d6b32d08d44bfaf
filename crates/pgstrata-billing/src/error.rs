//! The billing module's errors.

use pgstrata_core::error::DbError;

/// Why a `Stripe-Signature` header was refused. Nothing is written when it is.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum SignatureError {
    #[error("Stripe-Signature header has no t= timestamp")]
    MissingTimestamp,
    #[error("Stripe-Signature header has a t= that is not a Unix timestamp: {0:?}")]
    BadTimestamp(String),
    #[error("Stripe-Signature header has no v1= signature")]
    MissingSignature,
    #[error(
        "Stripe-Signature timestamp is {age_secs} s away from now, beyond the {tolerance_secs} s tolerance: a replayed or delayed request"
    )]
    OutsideTolerance { age_secs: i64, tolerance_secs: i64 },
    #[error("no v1= signature matches the body under any configured webhook secret")]
    NoMatch,
}

/// Why a verified body is not a Stripe event the mirror can take. Nothing is written.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("malformed Stripe event: {0}")]
pub struct MalformedEvent(pub String);

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    #[error("bad webhook signature: {0}")]
    Signature(#[from] SignatureError),

    #[error(transparent)]
    Malformed(#[from] MalformedEvent),

    #[error("invalid configuration: {0}")]
    Config(String),

    #[error("refetching {kind} {id} from Stripe failed: {reason}")]
    Refetch { kind: String, id: String, reason: String },

    #[error("backfilling {resource} from Stripe's API failed: {reason}")]
    Backfill { resource: String, reason: String },

    #[error(transparent)]
    Db(#[from] DbError),
}

impl From<sqlx::Error> for Error {
    fn from(e: sqlx::Error) -> Self {
        Error::Db(e.into())
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;
