//! The tenancy module's errors: what was wrong, in the caller's terms.
//!
//! `Error::from_db` is the one place that reads the database's refusals (constraint names and
//! SQLSTATEs, never message text) and turns them into these variants; every operation goes
//! through it.

use crate::ids::InvitationStatus;
use pgstrata_core::error::{DbError, sqlstate};
use pgstrata_core::ids::InvalidId;
use pgstrata_core::page::InvalidPage;
use pgstrata_core::{TenantId, UserId};
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

    #[error("{operation} acts as a user: open the transaction with TenantContext::with_actor(user)")]
    ActorRequired { operation: &'static str },

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

    #[error("tenant {0} is suspended: it takes no new members until the operator makes it active again")]
    TenantSuspended(TenantId),

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

    #[error("invitation is {status}, it can no longer be accepted or revoked")]
    InvitationClosed { status: InvitationStatus },

    #[error("the invitation was sent to another email address")]
    InvitationEmailMismatch,

    #[error(transparent)]
    Db(DbError),
}

/// What a statement was about: the values an error names. Each operation describes its
/// statement with one; [`Error::from_db`] reads it.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct Subject<'a> {
    /// `"tenant"`, `"user"`, `"membership"`, `"invitation"`.
    pub(crate) entity: &'static str,
    /// The key of the row the statement reads or changes.
    pub(crate) id: Option<Uuid>,
    /// The version a guarded UPDATE expects.
    pub(crate) expected_version: Option<i64>,
    pub(crate) slug: Option<&'a str>,
    pub(crate) email: Option<&'a str>,
    pub(crate) tenant: Option<TenantId>,
    pub(crate) user: Option<UserId>,
}

impl<'a> Subject<'a> {
    /// A statement about one row of `entity`.
    pub(crate) fn row(entity: &'static str, id: impl Into<Uuid>) -> Self {
        Self {
            entity,
            id: Some(id.into()),
            ..Self::default()
        }
    }

    /// A statement about `entity` with no single row yet (an insert, a function call).
    pub(crate) fn of(entity: &'static str) -> Self {
        Self {
            entity,
            ..Self::default()
        }
    }

    pub(crate) fn version(self, expected: i64) -> Self {
        Self {
            expected_version: Some(expected),
            ..self
        }
    }

    pub(crate) fn slug(self, slug: &'a str) -> Self {
        Self {
            slug: Some(slug),
            ..self
        }
    }

    pub(crate) fn email(self, email: &'a str) -> Self {
        Self {
            email: Some(email),
            ..self
        }
    }

    pub(crate) fn tenant(self, tenant: TenantId) -> Self {
        Self {
            tenant: Some(tenant),
            ..self
        }
    }

    pub(crate) fn user(self, user: UserId) -> Self {
        Self {
            user: Some(user),
            ..self
        }
    }

    /// `NotFound` for this subject's row.
    pub(crate) fn not_found(&self) -> Error {
        Error::NotFound {
            entity: self.entity,
            id: self.id.unwrap_or_default(),
        }
    }
}

impl Error {
    /// The one mapping from a database refusal to this crate's errors, by constraint name and
    /// SQLSTATE. What the statement was about fills in the names; a refusal this crate has no
    /// word for stays [`Error::Db`].
    pub(crate) fn from_db(db: DbError, s: &Subject<'_>) -> Error {
        let invitation = s.entity == "invitation";
        match &db {
            DbError::Conflict { constraint, .. } => match (constraint.as_str(), s.slug, s.email) {
                ("tenants_slug_live_key", Some(slug), _) => Error::SlugTaken { slug: slug.to_owned() },
                ("users_email_key", _, Some(email)) => Error::EmailTaken {
                    email: email.to_owned(),
                },
                ("memberships_tenant_user_key", _, _) => Error::AlreadyMember,
                ("invitations_pending_email_key", _, Some(email)) => Error::InvitationPending {
                    email: email.to_owned(),
                },
                _ => Error::Db(db),
            },
            DbError::MissingReference { constraint, .. } => match (constraint.as_str(), s.tenant, s.user) {
                ("memberships_tenant_fkey" | "invitations_tenant_fkey", Some(tenant), _) => {
                    Error::UnknownTenant(tenant)
                }
                ("memberships_user_fkey", _, Some(user)) => Error::NotFound {
                    entity: "user",
                    id: user.0,
                },
                _ => Error::Db(db),
            },
            DbError::StaleVersion { current, .. } => match (s.id, s.expected_version) {
                (Some(id), Some(expected)) => Error::StaleVersion {
                    entity: s.entity,
                    id,
                    expected,
                    current: *current,
                },
                _ => Error::Db(db),
            },
            // PS404, PS410 and PS403 come from tenancy.accept_invitation (tenancy V6): the token
            // is not this tenant's; the invitation (DETAIL status=...) or the tenant
            // (status=inactive) is closed; the user's email is not the invited one.
            DbError::NotFound { .. } if invitation => Error::InvalidToken,
            DbError::Gone { status, .. } if invitation => match (status.as_deref(), s.tenant) {
                (Some("inactive"), Some(tenant)) => Error::TenantSuspended(tenant),
                (Some(word), _) => match word.parse() {
                    Ok(status) => Error::InvitationClosed { status },
                    Err(_) => Error::Db(db),
                },
                _ => Error::Db(db),
            },
            DbError::Forbidden { code, .. } if invitation && code == sqlstate::FORBIDDEN => {
                Error::InvitationEmailMismatch
            }
            _ => Error::Db(db),
        }
    }
}

impl From<sqlx::Error> for Error {
    fn from(e: sqlx::Error) -> Self {
        Error::from_db(e.into(), &Subject::default())
    }
}

impl From<DbError> for Error {
    fn from(e: DbError) -> Self {
        Error::from_db(e, &Subject::default())
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;
