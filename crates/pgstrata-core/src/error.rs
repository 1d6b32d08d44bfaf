//! SQLSTATE-to-meaning mapping shared by every module.
//!
//! Each module crate has its own error enum; they all wrap [`DbError`] for failures that the
//! database reports, so "which constraint", "which version" and "may I retry" are answered the
//! same way everywhere.

/// SQLSTATEs raised by pgstrata's own SQL functions and triggers (class `PS` is ours).
pub mod sqlstate {
    /// A versioned UPDATE named a version that is no longer current (DETAIL: `current_version=N`).
    pub const STALE_VERSION: &str = "PS409";
    /// The row or token a function was asked for does not exist (in this tenant).
    pub const NOT_FOUND: &str = "PS404";
    /// A rule of a pgstrata function refused the caller (e.g. an invitation sent to another
    /// email address); mapped to [`DbError::Forbidden`](super::DbError::Forbidden).
    pub const FORBIDDEN: &str = "PS403";
    /// The row exists but is no longer in a state that allows the change (DETAIL: `status=...`).
    pub const GONE: &str = "PS410";
    /// A size limit of a pgstrata function was reached (DETAIL: `limit=N`), e.g. rbac's role
    /// graph; mapped to [`DbError::LimitExceeded`](super::DbError::LimitExceeded).
    pub const LIMIT_EXCEEDED: &str = "PS413";
    /// Well-formed input that a rule of the data refuses (a role cycle, a Stripe object in a
    /// state the mirror does not take); mapped to [`DbError::Rejected`](super::DbError::Rejected).
    pub const REJECTED: &str = "PS422";

    /// Internal to billing's webhook path (V6): the event is in the ledger already. Raised and
    /// caught inside `billing.apply_payload` to roll its writes back; it never reaches a caller.
    pub const ALREADY_RECORDED: &str = "PS208";

    /// Every SQLSTATE pgstrata's SQL raises. A test reads every migration and fails when one
    /// raises a code missing here.
    pub const ALL: &[&str] = &[
        STALE_VERSION,
        NOT_FOUND,
        FORBIDDEN,
        GONE,
        LIMIT_EXCEEDED,
        REJECTED,
        ALREADY_RECORDED,
    ];
}

/// A database failure, classified by what the caller can do about it.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum DbError {
    /// A unique constraint or index refused the write; `constraint` names it.
    #[error("conflict: {constraint} already holds this value ({message})")]
    Conflict { constraint: String, message: String },

    /// A foreign key refused the write: the referenced row does not exist (in this tenant).
    #[error("reference not found: {constraint} ({message})")]
    MissingReference { constraint: String, message: String },

    /// A CHECK, NOT NULL or type conversion refused the value. `detail` is the DETAIL line, which
    /// pgstrata's own functions write as `key=value` (e.g. `field=details`, read with
    /// [`DbError::detail_value`]); boxed, so that `DbError` stays small enough to return.
    #[error("invalid input ({code}{}): {message}", constraint.as_deref().map(|c| format!(", {c}")).unwrap_or_default())]
    InvalidInput {
        code: String,
        constraint: Option<String>,
        message: String,
        detail: Option<Box<str>>,
    },

    /// Row-level security or a privilege refused the statement (SQLSTATE 42501), or a
    /// function refused to run without a tenant in context. `detail` is a pgstrata function's
    /// DETAIL (e.g. rbac's `missing=invoice:delete`), which says which rule refused.
    #[error("forbidden ({code}): {message}; is the tenant context set for this transaction?")]
    Forbidden {
        code: String,
        message: String,
        detail: Option<String>,
    },

    /// A versioned UPDATE named a stale version; `current` is the version the row has now.
    #[error("stale version: {message}")]
    StaleVersion { current: Option<i64>, message: String },

    /// A pgstrata function did not find what it was asked for.
    #[error("not found: {message}")]
    NotFound { message: String },

    /// The row is in a state that no longer allows the change (e.g. an accepted invitation).
    #[error("no longer possible: {message}")]
    Gone { status: Option<String>, message: String },

    /// A size limit of a pgstrata function was reached; `limit` is the limit when known.
    #[error("limit exceeded: {message}")]
    LimitExceeded { limit: Option<i64>, message: String },

    /// Well-formed input that a rule of the data refuses; `detail` is the function's DETAIL
    /// (e.g. `cycle=admin>ops>admin`).
    #[error("rejected: {message}")]
    Rejected { detail: Option<String>, message: String },

    /// Serialization failure or deadlock: run the whole transaction again.
    #[error("transient conflict ({code}): retry the transaction")]
    Retryable {
        code: String,
        #[source]
        source: sqlx::Error,
    },

    /// Anything else: connection loss, protocol errors, bugs.
    #[error(transparent)]
    Other(sqlx::Error),
}

impl DbError {
    /// The SQLSTATE of the underlying database error, if any.
    pub fn code(&self) -> Option<&str> {
        match self {
            DbError::InvalidInput { code, .. } | DbError::Retryable { code, .. } | DbError::Forbidden { code, .. } => {
                Some(code)
            }
            DbError::Conflict { .. } => Some("23505"),
            DbError::MissingReference { .. } => Some("23503"),
            DbError::StaleVersion { .. } => Some(sqlstate::STALE_VERSION),
            DbError::NotFound { .. } => Some(sqlstate::NOT_FOUND),
            DbError::Gone { .. } => Some(sqlstate::GONE),
            DbError::LimitExceeded { .. } => Some(sqlstate::LIMIT_EXCEEDED),
            DbError::Rejected { .. } => Some(sqlstate::REJECTED),
            DbError::Other(_) => None,
        }
    }

    /// The value of `key` in the DETAIL line of an [`InvalidInput`](DbError::InvalidInput) or a
    /// [`Rejected`](DbError::Rejected) (`field=details` → `detail_value("field") == Some("details")`).
    /// pgstrata's functions name what they refused this way, so no caller reads message text.
    pub fn detail_value(&self, key: &str) -> Option<&str> {
        match self {
            DbError::InvalidInput { detail, .. } => detail_value(detail.as_deref(), key),
            DbError::Rejected { detail, .. } => detail_value(detail.as_deref(), key),
            _ => None,
        }
    }

    /// Whether running the same transaction again may succeed.
    pub fn is_retryable(&self) -> bool {
        matches!(self, DbError::Retryable { .. })
    }
}

/// Reads `key=value` out of a DETAIL line such as `current_version=3` (pairs separated by
/// commas or spaces), for the variants that carry a DETAIL.
///
/// ```
/// use pgstrata_core::error::detail_value;
/// assert_eq!(detail_value(Some("lift=invoice:read, missing=invoice:read"), "lift"), Some("invoice:read"));
/// assert_eq!(detail_value(Some("missing=invoice:read"), "lift"), None);
/// ```
pub fn detail_value<'a>(detail: Option<&'a str>, key: &str) -> Option<&'a str> {
    detail?
        .split([',', ' '])
        .find_map(|part| part.strip_prefix(key)?.strip_prefix('='))
}

impl From<sqlx::Error> for DbError {
    fn from(err: sqlx::Error) -> Self {
        let Some(db) = err.as_database_error() else {
            return DbError::Other(err);
        };
        let pg = db.try_downcast_ref::<sqlx::postgres::PgDatabaseError>();
        let code = db.code().map(|c| c.into_owned()).unwrap_or_default();
        let message = db.message().to_owned();
        let constraint = db.constraint().map(str::to_owned);
        let detail = pg.and_then(|p| p.detail());
        match code.as_str() {
            "23505" => DbError::Conflict {
                constraint: constraint.unwrap_or_default(),
                message,
            },
            "23503" => DbError::MissingReference {
                constraint: constraint.unwrap_or_default(),
                message,
            },
            "42501" | sqlstate::FORBIDDEN => DbError::Forbidden {
                code,
                message,
                detail: detail.map(str::to_owned),
            },
            "40001" | "40P01" => DbError::Retryable { code, source: err },
            sqlstate::STALE_VERSION => DbError::StaleVersion {
                current: detail_value(detail, "current_version").and_then(|v| v.parse().ok()),
                message,
            },
            sqlstate::NOT_FOUND => DbError::NotFound { message },
            sqlstate::GONE => DbError::Gone {
                status: detail_value(detail, "status").map(str::to_owned),
                message,
            },
            sqlstate::LIMIT_EXCEEDED => DbError::LimitExceeded {
                limit: detail_value(detail, "limit").and_then(|v| v.parse().ok()),
                message,
            },
            sqlstate::REJECTED => DbError::Rejected {
                detail: detail.map(str::to_owned),
                message,
            },
            // 23xxx integrity (check, not null, exclusion) and 22xxx data exceptions
            // (invalid text representation, string too long, out of range).
            c if c.starts_with("23") || c.starts_with("22") => DbError::InvalidInput {
                code,
                constraint,
                message,
                detail: detail.map(Box::from),
            },
            _ => DbError::Other(err),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::{detail_value, sqlstate};

    /// Every `ERRCODE = 'PSnnn'` in every migration is one core knows, so every module's
    /// errors map through [`DbError`](super::DbError) and none through message text.
    #[test]
    fn every_sqlstate_the_migrations_raise_is_listed() {
        let root = concat!(env!("CARGO_MANIFEST_DIR"), "/../../migrations");
        let mut raised = std::collections::BTreeSet::new();
        for module in std::fs::read_dir(root)
            .unwrap_or_else(|e| panic!("{root}: {e}"))
            .flatten()
        {
            for file in std::fs::read_dir(module.path()).into_iter().flatten().flatten() {
                let sql = std::fs::read_to_string(file.path()).unwrap_or_default();
                for (i, _) in sql.match_indices("'PS") {
                    let code = &sql[i + 1..(i + 6).min(sql.len())];
                    if code.len() == 5 && code[2..].chars().all(|c| c.is_ascii_alphanumeric()) {
                        raised.insert(code.to_owned());
                    }
                }
            }
        }
        assert!(!raised.is_empty(), "no SQLSTATE found under {root}");
        let missing: Vec<_> = raised.iter().filter(|c| !sqlstate::ALL.contains(&c.as_str())).collect();
        assert!(
            missing.is_empty(),
            "raised by migrations but not in sqlstate::ALL: {missing:?}"
        );
    }

    #[test]
    fn detail_values_are_found_by_key() {
        assert_eq!(detail_value(Some("current_version=7"), "current_version"), Some("7"));
        assert_eq!(detail_value(Some("status=accepted"), "status"), Some("accepted"));
        assert_eq!(detail_value(Some("status=accepted"), "current_version"), None);
        assert_eq!(detail_value(None, "status"), None);
    }
}
