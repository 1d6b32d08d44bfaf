//! The tenancy module's errors: what was wrong, in the caller's terms.

use pgstrata_core::TenantId;
use pgstrata_core::error::DbError;
use pgstrata_core::ids::InvalidId;
use pgstrata_core::page::InvalidPage;
use uuid::Uuid;

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    #[error("invalid slug {slug:?}: {reason}")]
    InvalidSlug { slug: String, reason: &'static str },

    #[error("invalid {field}: {reason}")]
    InvalidField { field: &'static str, reason: String },

    #[error("invalid email address {email:?}: expected name@domain, at most 254 characters")]
    InvalidEmail { email: String },

    #[error("invalid role {role:?}: lowercase letters, digits and _, starting with a letter, at most 63")]
    InvalidRole { role: String },

    #[error(transparent)]
    InvalidId(#[from] InvalidId),

    #[error(transparent)]
    InvalidPage(#[from] InvalidPage),

    #[error("slug {slug:?} is already used by a live tenant")]
    SlugTaken { slug: String },

    #[error("email {email:?} is already registered")]
    EmailTaken { email: String },

    #[error("the user is already a member of this tenant")]
    AlreadyMember,

    #[error("{email:?} already has a pending invitation to this tenant; revoke it first or let it expire")]
    InvitationPending { email: String },

    #[error("unknown tenant {0}: no tenant has this id")]
    UnknownTenant(TenantId),

    #[error("{entity} {id} not found (or not visible in the current tenant context)")]
    NotFound { entity: &'static str, id: Uuid },

    #[error("{entity} {id} was changed by someone else: expected version {expected}, current version is {}",
            current.map(|c| c.to_string()).unwrap_or_else(|| "unknown".into()))]
    StaleVersion {
        entity: &'static str,
        id: Uuid,
        expected: i64,
        current: Option<i64>,
    },

    #[error("invitation token is malformed: {0}")]
    MalformedToken(&'static str),

    #[error("invitation token is not valid for this tenant")]
    InvalidToken,

    #[error("invitation is {status}, it can no longer be accepted")]
    InvitationClosed { status: String },

    #[error("the invitation was sent to another email address")]
    InvitationEmailMismatch,

    #[error(transparent)]
    Db(DbError),
}

impl From<sqlx::Error> for Error {
    fn from(e: sqlx::Error) -> Self {
        Error::Db(e.into())
    }
}

impl From<DbError> for Error {
    fn from(e: DbError) -> Self {
        Error::Db(e)
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;
