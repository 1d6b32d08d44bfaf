//! The billing module's errors, and the one place that maps database refusals to them.

use crate::ids::BackfillResource;
use pgstrata_core::TenantId;
use pgstrata_core::error::{DbError, sqlstate};
use pgstrata_core::page::InvalidPage;

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

    /// An argument refused before any SQL ran; `field` names it.
    #[error("invalid {field}: {reason}")]
    InvalidField { field: &'static str, reason: String },

    #[error(transparent)]
    InvalidPage(#[from] InvalidPage),

    /// What an operation names does not exist (e.g. the tenant a customer is linked to).
    #[error("{entity} {id} not found: name one that exists and is not deleted")]
    NotFound { entity: &'static str, id: String },

    /// The Stripe customer is already linked to another tenant, which the error does not name;
    /// a link never moves.
    #[error("Stripe customer {customer} is linked to another tenant; a link never moves to another tenant")]
    LinkedElsewhere { customer: String },

    #[error("refetching {kind} {id} from Stripe failed: {reason}")]
    Refetch { kind: String, id: String, reason: String },

    #[error("backfilling {resource} from Stripe's API failed: {reason}")]
    Backfill { resource: BackfillResource, reason: String },

    #[error(transparent)]
    Db(DbError),
}

/// What a statement was about, so that a refusal can name it in the caller's terms.
#[derive(Debug, Clone, Copy)]
pub(crate) enum About<'a> {
    /// Nothing beyond what [`DbError`] says.
    Nothing,
    /// `billing.link_customer(customer, tenant)`.
    Link { customer: &'a str, tenant: TenantId },
}

impl Error {
    /// The one place billing reads SQLSTATEs: database refusals in billing's terms. The
    /// functions raise `PS404` for an unknown or deleted tenant and `PS403` for a customer linked
    /// to another tenant ([`sqlstate`]); everything else stays a [`DbError`].
    pub(crate) fn from_db(e: DbError, about: About<'_>) -> Error {
        match (e, about) {
            (DbError::NotFound { .. }, About::Link { tenant, .. }) => Error::NotFound {
                entity: "tenant",
                id: tenant.to_string(),
            },
            (DbError::Forbidden { code, .. }, About::Link { customer, .. }) if code == sqlstate::FORBIDDEN => {
                Error::LinkedElsewhere {
                    customer: customer.to_owned(),
                }
            }
            (e, _) => Error::Db(e),
        }
    }
}

impl From<DbError> for Error {
    fn from(e: DbError) -> Self {
        Error::from_db(e, About::Nothing)
    }
}

impl From<sqlx::Error> for Error {
    fn from(e: sqlx::Error) -> Self {
        Error::from(DbError::from(e))
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;
