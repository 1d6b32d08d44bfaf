//! Errors as HTTP answers. Every handler returns `Result<_, ApiError>`; the modules' typed
//! errors map here once, so a stale version is a 412 and a unique violation a 409 wherever they
//! happen. Bodies are JSON, `{"error": "<code>", "message": "<what to do>"}`.
//!
//! What an answer never carries: the rule that denied a permission (it goes to the log, see
//! [`crate::http::Caller::authorize`]), and the text of unexpected failures (logged with the
//! request id, answered as a bare 500).

use crate::auth::AuthError;
use axum::Json;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use pgstrata::DbError;
use pgstrata::{audit, queue, rbac, tenancy};
use serde_json::json;

/// A request that did not succeed, by what the client can do about it.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ApiError {
    /// 401: no valid bearer token.
    #[error(transparent)]
    Unauthorized(#[from] AuthError),
    /// 403 from a permission check. The body says no more than this; the deciding rule is
    /// logged.
    #[error("you are not allowed to do this")]
    Forbidden,
    /// 403 from a rule the database enforces (escalation, consent); the reason is the actor's
    /// own request, so it is shown.
    #[error("{0}")]
    Refused(String),
    /// 400: the request itself is wrong; the message names what.
    #[error("{0}")]
    BadRequest(String),
    /// 404.
    #[error("{0}")]
    NotFound(String),
    /// 409: the request conflicts with the current state (a name taken, a duplicate).
    #[error("{0}")]
    Conflict(String),
    /// 410: the thing exists but no longer allows this (an accepted invitation).
    #[error("{0}")]
    Gone(String),
    /// 428: a write of a versioned resource without `If-Match`.
    #[error("this write needs an If-Match header with the ETag you read (GET the resource first)")]
    PreconditionRequired,
    /// 412: `If-Match` named a version that is no longer current.
    #[error("the resource changed since you read it{}: GET it again and reapply your change",
            current.map(|v| format!(" (current version {v})")).unwrap_or_default())]
    PreconditionFailed { current: Option<i64> },
    /// 503: a serialization failure or deadlock; the same request may succeed.
    #[error("the database was busy with a conflicting change: retry the request")]
    Busy,
    /// 500: logged in full, answered without detail.
    #[error("internal error: {0}")]
    Internal(String),
}

impl ApiError {
    pub fn status(&self) -> StatusCode {
        match self {
            ApiError::Unauthorized(_) => StatusCode::UNAUTHORIZED,
            ApiError::Forbidden | ApiError::Refused(_) => StatusCode::FORBIDDEN,
            ApiError::BadRequest(_) => StatusCode::BAD_REQUEST,
            ApiError::NotFound(_) => StatusCode::NOT_FOUND,
            ApiError::Conflict(_) => StatusCode::CONFLICT,
            ApiError::Gone(_) => StatusCode::GONE,
            ApiError::PreconditionRequired => StatusCode::PRECONDITION_REQUIRED,
            ApiError::PreconditionFailed { .. } => StatusCode::PRECONDITION_FAILED,
            ApiError::Busy => StatusCode::SERVICE_UNAVAILABLE,
            ApiError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    fn code(&self) -> &'static str {
        match self {
            ApiError::Unauthorized(_) => "unauthorized",
            ApiError::Forbidden | ApiError::Refused(_) => "forbidden",
            ApiError::BadRequest(_) => "bad_request",
            ApiError::NotFound(_) => "not_found",
            ApiError::Conflict(_) => "conflict",
            ApiError::Gone(_) => "gone",
            ApiError::PreconditionRequired => "precondition_required",
            ApiError::PreconditionFailed { .. } => "stale_version",
            ApiError::Busy => "busy",
            ApiError::Internal(_) => "internal",
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = self.status();
        let message = match &self {
            ApiError::Internal(detail) => {
                tracing::error!(error = %detail, "request failed");
                "internal error; the server log has the details under this request's x-request-id".to_owned()
            }
            other => other.to_string(),
        };
        let mut body = json!({ "error": self.code(), "message": message });
        if let ApiError::PreconditionFailed { current: Some(v) } = &self {
            body["current_version"] = json!(v);
        }
        let mut response = (status, Json(body)).into_response();
        match &self {
            ApiError::Unauthorized(e) => {
                tracing::info!(reason = %e, "unauthenticated");
                // RFC 6750 §3: the scheme, and why the token was refused when there was one.
                let challenge = match e {
                    AuthError::Missing => "Bearer".to_owned(),
                    other => format!(
                        "Bearer error=\"invalid_token\", error_description=\"{}\"",
                        other.to_string().replace('"', "'")
                    ),
                };
                if let Ok(value) = HeaderValue::from_str(&challenge) {
                    response.headers_mut().insert(header::WWW_AUTHENTICATE, value);
                }
            }
            ApiError::Busy => {
                response
                    .headers_mut()
                    .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
            }
            _ => {}
        }
        response
    }
}

impl From<DbError> for ApiError {
    fn from(e: DbError) -> Self {
        match e {
            DbError::Conflict { constraint, .. } => {
                ApiError::Conflict(format!("conflict: {constraint} already holds this value"))
            }
            DbError::MissingReference { constraint, .. } => {
                ApiError::BadRequest(format!("a referenced row does not exist ({constraint})"))
            }
            DbError::InvalidInput { .. } => ApiError::BadRequest(e.to_string()),
            // Row-level security or a privilege refused the statement: for the request path
            // this means the tenant is suspended (read-only) or the role lacks a grant.
            DbError::Forbidden {
                ref code, ref message, ..
            } => {
                tracing::warn!(%code, %message, "the database refused the statement");
                if code == pgstrata::core::error::sqlstate::FORBIDDEN {
                    ApiError::Refused(message.clone())
                } else {
                    ApiError::Refused("the database refused this change (is the tenant suspended?)".into())
                }
            }
            DbError::StaleVersion { current, .. } => ApiError::PreconditionFailed { current },
            DbError::NotFound { message } => ApiError::NotFound(message),
            DbError::Gone { message, .. } => ApiError::Gone(message),
            DbError::Retryable { .. } => ApiError::Busy,
            other => ApiError::Internal(other.to_string()),
        }
    }
}

impl From<sqlx::Error> for ApiError {
    fn from(e: sqlx::Error) -> Self {
        DbError::from(e).into()
    }
}

impl From<tenancy::Error> for ApiError {
    fn from(e: tenancy::Error) -> Self {
        use tenancy::Error as E;
        match e {
            E::Db(db) => db.into(),
            E::StaleVersion { current, .. } => ApiError::PreconditionFailed { current },
            E::NotFound { .. } | E::UnknownTenant(_) | E::InvalidToken => ApiError::NotFound(e.to_string()),
            E::SlugTaken { .. } | E::EmailTaken { .. } | E::AlreadyMember | E::InvitationPending { .. } => {
                ApiError::Conflict(e.to_string())
            }
            E::InvitationClosed { .. } => ApiError::Gone(e.to_string()),
            E::InvitationEmailMismatch => ApiError::Refused(e.to_string()),
            // Validation: slug, field, email, role, id, page, token format.
            other => ApiError::BadRequest(other.to_string()),
        }
    }
}

impl From<rbac::Error> for ApiError {
    fn from(e: rbac::Error) -> Self {
        use rbac::Error as E;
        match e {
            E::Db(db) => db.into(),
            E::EscalationRefused { .. } | E::OutlivesActor { .. } | E::DenyRemovalRefused { .. } => {
                ApiError::Refused(e.to_string())
            }
            E::UnknownRole { .. } | E::NotFound { .. } => ApiError::NotFound(e.to_string()),
            E::RoleExists { .. } | E::Cycle { .. } | E::DuplicateGrant | E::RoleGraphLimit { .. } => {
                ApiError::Conflict(e.to_string())
            }
            other => ApiError::BadRequest(other.to_string()),
        }
    }
}

impl From<queue::Error> for ApiError {
    fn from(e: queue::Error) -> Self {
        match e {
            queue::Error::Db(db) => db.into(),
            queue::Error::NotFound { .. } => ApiError::NotFound(e.to_string()),
            queue::Error::Gone { .. } => ApiError::Conflict(e.to_string()),
            // The application builds its jobs: a refused one is a bug here, not the client's.
            other => ApiError::Internal(other.to_string()),
        }
    }
}

impl From<audit::Error> for ApiError {
    fn from(e: audit::Error) -> Self {
        match e {
            audit::Error::Db(db) => db.into(),
            audit::Error::InvalidField { .. } | audit::Error::InvalidPage(_) => ApiError::BadRequest(e.to_string()),
            other => ApiError::Internal(other.to_string()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statuses() {
        assert_eq!(ApiError::PreconditionRequired.status(), 428);
        assert_eq!(ApiError::PreconditionFailed { current: Some(3) }.status(), 412);
        assert_eq!(ApiError::from(AuthError::Missing).status(), 401);
        assert_eq!(ApiError::Forbidden.to_string(), "you are not allowed to do this");
        let stale = ApiError::from(DbError::StaleVersion {
            current: Some(4),
            message: "stale".into(),
        });
        assert!(matches!(stale, ApiError::PreconditionFailed { current: Some(4) }));
    }
}
