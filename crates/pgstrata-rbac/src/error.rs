//! The rbac module's errors, and the one place that reads what the database refused.
//!
//! One function, `from_db`, is the only code of this crate that looks at constraint names,
//! SQLSTATEs and DETAIL keys; it never reads message text. The refusals it recognises:
//!
//! | database                                                   | [`Error`]                 |
//! |------------------------------------------------------------|---------------------------|
//! | `grants_unique` (23505)                                    | `DuplicateGrant`          |
//! | `roles_pkey`, `roles_key_not_system` (23505)               | `RoleExists`              |
//! | `grants_role_exists`, `role_permissions_role_fkey`, `role_parents_role_fkey`, `role_parents_parent_exists` (23503) | `UnknownRole` |
//! | PS403, DETAIL `lift=`                                      | `DenyRemovalRefused`      |
//! | PS403, DETAIL `outlives=`                                  | `OutlivesActor`           |
//! | PS403, DETAIL `missing=`                                   | `EscalationRefused`       |
//! | PS422, DETAIL `cycle=`                                     | `Cycle`                   |
//! | PS413                                                      | `RoleGraphLimit`          |
//!
//! Everything else stays a [`DbError`] in [`Error::Db`] (e.g. granting with no acting user:
//! `DbError::Forbidden` without a DETAIL).

use crate::ids::PrincipalType;
use pgstrata_core::error::{DbError, detail_value};
use pgstrata_core::page::InvalidPage;

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    #[error("invalid permission pattern {pattern:?}: expected resource:action, either part may be *, or * alone")]
    InvalidPattern { pattern: String },

    #[error("invalid permission {permission:?}: expected resource:action in lowercase letters, digits and _")]
    InvalidPermission { permission: String },

    #[error("invalid role key {key:?}: lowercase letters, digits and _, starting with a letter, at most 63")]
    InvalidRoleKey { key: String },

    #[error("invalid resource: {0}")]
    InvalidResource(&'static str),

    #[error("a group cannot have a {kind} as a member: groups hold users, API keys and services")]
    InvalidMember { kind: PrincipalType },

    #[error(transparent)]
    InvalidPage(#[from] InvalidPage),

    #[error("role {key:?} does not exist in this tenant or among the system roles")]
    UnknownRole { key: String },

    #[error("role {key:?} already exists (custom roles may not reuse a system role's key)")]
    RoleExists { key: String },

    #[error("role inheritance would form a cycle: {cycle}")]
    Cycle { cycle: String },

    #[error("escalation refused: the acting user does not hold {missing}, so it cannot grant it")]
    EscalationRefused { missing: String },

    #[error(
        "escalation refused: the acting user holds {pattern} only for a shorter time, so it cannot grant it for longer"
    )]
    OutlivesActor { pattern: String },

    #[error("deny removal refused: the acting user does not hold {pattern}, so it cannot lift a deny on it")]
    DenyRemovalRefused { pattern: String },

    /// A tenant's role graph would pass (or, when resolving, has passed) one of its limits:
    /// [`MAX_ROLE_DEPTH`](crate::MAX_ROLE_DEPTH), [`MAX_ROLES`](crate::MAX_ROLES),
    /// [`MAX_ROLE_EDGES`](crate::MAX_ROLE_EDGES). `limit` is the limit that was reached and
    /// `message` the database's account of it.
    #[error("{message}; flatten the role hierarchy or remove unused roles")]
    RoleGraphLimit { limit: Option<i64>, message: String },

    #[error("the same grant already exists")]
    DuplicateGrant,

    /// The row an operation was to change does not exist in this tenant (`entity` names it:
    /// `grant`, `role`, `role permission`, `role parent`, `group member`; `id` is its key).
    /// The same shape as every module's `NotFound`.
    #[error("{entity} {id} not found (or not visible in the current tenant context)")]
    NotFound { entity: &'static str, id: String },

    #[error(transparent)]
    Db(DbError),
}

/// The role keys an operation was about, so that a refusal names the right one.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct About<'a> {
    /// The role the operation changes or grants.
    pub role: Option<&'a str>,
    /// The parent of a new inheritance edge.
    pub parent: Option<&'a str>,
}

/// Database refusals in rbac's terms. The one place that reads constraint names, SQLSTATEs and
/// DETAIL keys.
pub(crate) fn from_db(e: DbError, about: About<'_>) -> Error {
    let key = |k: Option<&str>| k.map(str::to_owned);
    let mapped = match &e {
        DbError::Conflict { constraint, .. } => match constraint.as_str() {
            "grants_unique" => Some(Error::DuplicateGrant),
            "roles_pkey" | "roles_key_not_system" => key(about.role).map(|key| Error::RoleExists { key }),
            _ => None,
        },
        DbError::MissingReference { constraint, .. } => match constraint.as_str() {
            "role_parents_parent_exists" => key(about.parent).map(|key| Error::UnknownRole { key }),
            "grants_role_exists" | "role_permissions_role_fkey" | "role_parents_role_fkey" => {
                key(about.role).map(|key| Error::UnknownRole { key })
            }
            _ => None,
        },
        DbError::Forbidden { detail, .. } => {
            let value = |k| detail_value(detail.as_deref(), k).map(str::to_owned);
            if let Some(pattern) = value("lift") {
                Some(Error::DenyRemovalRefused { pattern })
            } else if let Some(pattern) = value("outlives") {
                Some(Error::OutlivesActor { pattern })
            } else {
                value("missing").map(|missing| Error::EscalationRefused { missing })
            }
        }
        DbError::Rejected { detail, .. } => detail_value(detail.as_deref(), "cycle").map(|c| Error::Cycle {
            cycle: c.split('>').collect::<Vec<_>>().join(" -> "),
        }),
        DbError::LimitExceeded { limit, message } => Some(Error::RoleGraphLimit {
            limit: *limit,
            message: message.clone(),
        }),
        _ => None,
    };
    mapped.unwrap_or(Error::Db(e))
}

impl From<DbError> for Error {
    fn from(e: DbError) -> Self {
        from_db(e, About::default())
    }
}

impl From<sqlx::Error> for Error {
    fn from(e: sqlx::Error) -> Self {
        Error::from(DbError::from(e))
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;
