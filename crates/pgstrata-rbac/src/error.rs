//! The rbac module's errors.

use pgstrata_core::error::DbError;
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

    #[error("role graph limit reached: {message}")]
    RoleGraphLimit { message: String },

    #[error("the same grant already exists")]
    DuplicateGrant,

    #[error("grant not found (or not visible in the current tenant context)")]
    GrantNotFound,

    #[error(transparent)]
    Db(DbError),
}

impl From<sqlx::Error> for Error {
    fn from(e: sqlx::Error) -> Self {
        Error::from(DbError::from(e))
    }
}

/// Database refusals in rbac's terms (constraint names and pgstrata SQLSTATEs).
impl From<DbError> for Error {
    fn from(e: DbError) -> Self {
        match &e {
            DbError::Conflict { constraint, .. } if constraint == "grants_unique" => Error::DuplicateGrant,
            DbError::Forbidden { code, message } if code == pgstrata_core::error::sqlstate::FORBIDDEN => {
                let pattern = |after: &str| {
                    message
                        .split_once(after)
                        .map(|(_, rest)| rest.split([',', ' ']).next().unwrap_or(rest).to_owned())
                };
                if message.starts_with("deny removal refused") {
                    match pattern("does not hold ") {
                        Some(pattern) => Error::DenyRemovalRefused { pattern },
                        None => Error::Db(e),
                    }
                } else if message.contains(" only until ") {
                    match pattern(" holds ") {
                        Some(pattern) => Error::OutlivesActor { pattern },
                        None => Error::Db(e),
                    }
                } else {
                    match pattern("does not hold ") {
                        Some(missing) => Error::EscalationRefused { missing },
                        None => Error::Db(e),
                    }
                }
            }
            DbError::Other(sqlx::Error::Database(db)) if db.code().as_deref() == Some(CYCLE) => Error::Cycle {
                cycle: db
                    .message()
                    .trim_start_matches("role inheritance would form a cycle: ")
                    .to_owned(),
            },
            DbError::Other(sqlx::Error::Database(db)) if db.code().as_deref() == Some(ROLE_GRAPH_LIMIT) => {
                Error::RoleGraphLimit {
                    message: db.message().trim_start_matches("role graph limit: ").to_owned(),
                }
            }
            _ => Error::Db(e),
        }
    }
}

/// SQLSTATE raised when a new inheritance edge would close a cycle.
pub const CYCLE: &str = "PS422";

/// SQLSTATE raised when a tenant's role graph would pass (or, when resolving, has passed) its
/// limits: [`MAX_ROLE_DEPTH`](crate::MAX_ROLE_DEPTH), [`MAX_ROLES`](crate::MAX_ROLES),
/// [`MAX_ROLE_EDGES`](crate::MAX_ROLE_EDGES).
pub const ROLE_GRAPH_LIMIT: &str = "PS413";

pub type Result<T, E = Error> = std::result::Result<T, E>;
