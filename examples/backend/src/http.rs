//! What every request goes through: a request id and a tracing span ([`trace_requests`]), the
//! caller from the bearer token ([`Caller`]), its tenant transaction ([`Caller::begin`]) and
//! permission checks ([`Caller::authorize`]); and the HTTP pieces of optimistic concurrency
//! ([`IfMatch`], [`etag`]), JSON bodies and paths that answer bad input with a typed 400.

use crate::AppState;
use crate::error::ApiError;
use axum::extract::{FromRequest, FromRequestParts, Request};
use axum::http::request::Parts;
use axum::http::{HeaderName, HeaderValue, header};
use axum::middleware::Next;
use axum::response::Response;
use pgstrata::rbac::{self, Effect, Explanation, Principal, Resource};
use pgstrata::{Page, TenantContext, TenantId, TenantTx, UserId};
use serde::Deserialize;
use serde::de::DeserializeOwned;
use sqlx::PgPool;
use std::time::Instant;
use tracing::Instrument;
use uuid::Uuid;

/// The header a request id arrives in and is echoed back in.
pub static REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

/// Longest request id accepted from a client (it is stored with audit records and jobs).
pub const MAX_REQUEST_ID: usize = 128;

/// The request id of the current request, set by [`trace_requests`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RequestId(pub String);

fn valid_request_id(id: &str) -> bool {
    (1..=MAX_REQUEST_ID).contains(&id.len())
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b':'))
}

/// Middleware: takes the request id from `x-request-id` (or makes one, a UUIDv7), runs the
/// request inside a span that carries it (and, once authenticated, the tenant and user), logs
/// the outcome, and echoes the id in the response. A malformed id is refused with 400.
pub async fn trace_requests(mut request: Request, next: Next) -> Response {
    let given = request
        .headers()
        .get(&REQUEST_ID)
        .map(|v| v.to_str().ok().filter(|s| valid_request_id(s)).map(str::to_owned));
    let (id, refused) = match given {
        None => (Uuid::now_v7().to_string(), false),
        Some(Some(id)) => (id, false),
        Some(None) => (Uuid::now_v7().to_string(), true),
    };
    let span = tracing::info_span!(
        "request",
        method = %request.method(),
        path = %request.uri().path(),
        request_id = %id,
        tenant = tracing::field::Empty,
        user = tracing::field::Empty,
    );
    let started = Instant::now();
    let mut response = async {
        let response = if refused {
            axum::response::IntoResponse::into_response(ApiError::BadRequest(format!(
                "x-request-id must be 1 to {MAX_REQUEST_ID} characters of A-Z, a-z, 0-9, '-', '_', '.', ':'"
            )))
        } else {
            request.extensions_mut().insert(RequestId(id.clone()));
            next.run(request).await
        };
        tracing::info!(
            status = response.status().as_u16(),
            elapsed_ms = started.elapsed().as_millis() as u64,
            "handled"
        );
        response
    }
    .instrument(span)
    .await;
    if let Ok(value) = HeaderValue::from_str(&id) {
        response.headers_mut().insert(REQUEST_ID.clone(), value);
    }
    response
}

/// The authenticated caller: the user and tenant of a verified bearer token, and the request
/// id. Extracting it answers 401 when the token is missing, malformed, forged or expired.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Caller {
    pub user: UserId,
    pub tenant: TenantId,
    pub request_id: String,
}

impl FromRequestParts<AppState> for Caller {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        let header = parts
            .headers
            .get(header::AUTHORIZATION)
            .map(|v| v.to_str().unwrap_or_default());
        let claims = state.tokens.verify(crate::auth::bearer(header)?)?;
        let request_id = parts
            .extensions
            .get::<RequestId>()
            .map_or_else(|| Uuid::now_v7().to_string(), |r| r.0.clone());
        let span = tracing::Span::current();
        span.record("tenant", tracing::field::display(claims.tenant));
        span.record("user", tracing::field::display(claims.sub));
        Ok(Caller {
            user: claims.sub,
            tenant: claims.tenant,
            request_id,
        })
    }
}

impl Caller {
    /// The transaction-local context every statement of the request runs in.
    pub fn context(&self) -> TenantContext {
        TenantContext::tenant(self.tenant)
            .with_actor(self.user)
            .with_request_id(self.request_id.clone())
    }

    /// Opens the request's transaction in the caller's tenant context. Commit it at the end;
    /// an early return (an error) drops it, which rolls back.
    pub async fn begin(&self, pool: &PgPool) -> Result<TenantTx<'static>, ApiError> {
        Ok(pgstrata::begin_tenant(pool, &self.context()).await?)
    }

    /// The caller as an rbac principal.
    pub fn principal(&self) -> Principal {
        Principal::user(self.user)
    }

    /// Passes when the caller may do `permission` (on `resource`, or tenant-wide) in its
    /// tenant, by `rbac::check`. Otherwise logs the deciding rule from `rbac::explain` (the
    /// deny that won, or that nothing allowed it) and answers 403 without it: the rules of a
    /// tenant are not the caller's to read.
    pub async fn authorize(
        &self,
        tx: &mut TenantTx<'_>,
        permission: &str,
        resource: Option<&Resource>,
    ) -> Result<(), ApiError> {
        let principal = self.principal();
        if rbac::check(tx, &principal, permission, resource).await? {
            return Ok(());
        }
        let why = rbac::explain(tx, &principal, permission, resource).await?;
        tracing::warn!(
            permission,
            resource = %resource.map(|r| format!("{}:{}", r.kind, r.id)).unwrap_or_else(|| "tenant".into()),
            rule = %deciding_rule(&why),
            "forbidden"
        );
        Err(ApiError::Forbidden)
    }
}

/// The statements that decided a denial, for the log: e.g. `deny project:update on project:42
/// (grant 0190...)`, or that nothing allowed it.
pub fn deciding_rule(why: &Explanation) -> String {
    if why.decided_by.is_empty() {
        return "no statement allows it (denied by default)".into();
    }
    why.decided_by
        .iter()
        .map(|s| {
            let effect = match s.effect {
                Effect::Allow => "allow",
                Effect::Deny => "deny",
            };
            let scope = s
                .resource
                .as_ref()
                .map(|r| format!(" on {}:{}", r.kind, r.id))
                .unwrap_or_default();
            let via = s
                .role_path
                .as_ref()
                .map(|p| format!(" via role {}", p.join(" > ")))
                .unwrap_or_default();
            let source = s
                .grant_id
                .map_or_else(|| "membership role".to_owned(), |g| format!("grant {g}"));
            format!("{effect} {}{scope}{via} ({source})", s.pattern)
        })
        .collect::<Vec<_>>()
        .join("; ")
}

/// `ETag: "<version>"` of a versioned row.
pub fn etag(version: i64) -> HeaderValue {
    HeaderValue::from_str(&format!("\"{version}\"")).unwrap_or_else(|_| HeaderValue::from_static("\"0\""))
}

/// The version a write expects, from `If-Match: "<version>"`. Missing: 428. Anything but one
/// strong entity tag holding a version (a list, `*`, a weak tag): 400.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IfMatch(pub i64);

impl IfMatch {
    pub fn parse(value: &str) -> Result<Self, ApiError> {
        let bad = || {
            ApiError::BadRequest(format!(
                "If-Match must be the ETag you read, one quoted version such as \"3\"; got {:?}",
                value.chars().take(40).collect::<String>()
            ))
        };
        let value = value.trim();
        let inner = value
            .strip_prefix('"')
            .and_then(|v| v.strip_suffix('"'))
            .ok_or_else(bad)?;
        inner
            .parse::<i64>()
            .ok()
            .filter(|v| *v >= 1)
            .map(IfMatch)
            .ok_or_else(bad)
    }
}

impl<S: Send + Sync> FromRequestParts<S> for IfMatch {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, ApiError> {
        let value = parts
            .headers
            .get(header::IF_MATCH)
            .ok_or(ApiError::PreconditionRequired)?;
        IfMatch::parse(value.to_str().unwrap_or_default())
    }
}

/// A JSON body; a body that does not parse is a 400 naming the problem.
#[derive(Debug, Clone)]
pub struct JsonBody<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequest<S> for JsonBody<T> {
    type Rejection = ApiError;

    async fn from_request(request: Request, state: &S) -> Result<Self, ApiError> {
        axum::Json::<T>::from_request(request, state)
            .await
            .map(|axum::Json(v)| JsonBody(v))
            .map_err(|rejection| ApiError::BadRequest(rejection.body_text()))
    }
}

/// Path parameters; a malformed one (an id that is not a UUID) is a 400 naming it.
#[derive(Debug, Clone)]
pub struct PathParams<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned + Send> FromRequestParts<S> for PathParams<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        axum::extract::Path::<T>::from_request_parts(parts, state)
            .await
            .map(|axum::extract::Path(v)| PathParams(v))
            .map_err(|rejection| ApiError::BadRequest(rejection.body_text()))
    }
}

/// `?after=<id>&limit=<n>`: keyset pagination over time-ordered ids.
#[derive(Debug, Clone, Copy, Default, Deserialize)]
pub struct PageQuery<K = Uuid> {
    pub after: Option<K>,
    pub limit: Option<u64>,
}

impl<K: Copy> PageQuery<K> {
    pub fn page(&self) -> Page<K> {
        Page {
            after: self.after,
            limit: self.limit.unwrap_or(pgstrata::core::page::DEFAULT_PAGE_SIZE),
        }
    }
}

/// Query strings; a malformed one is a 400 naming the parameter.
#[derive(Debug, Clone)]
pub struct QueryParams<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequestParts<S> for QueryParams<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        axum::extract::Query::<T>::from_request_parts(parts, state)
            .await
            .map(|axum::extract::Query(v)| QueryParams(v))
            .map_err(|rejection| ApiError::BadRequest(rejection.body_text()))
    }
}

/// A page of items and the cursor of the next one (`None` on the last page).
#[derive(Debug, Clone, serde::Serialize)]
pub struct Paged<T, K = Uuid> {
    pub items: Vec<T>,
    pub next: Option<K>,
}

impl<T, K> Paged<T, K> {
    /// `items` as read for `page`; `id` gives an item's key for the next page's `after`.
    pub fn new(items: Vec<T>, page: &Page<K>, id: impl Fn(&T) -> K) -> Self {
        let full = u64::try_from(items.len()).is_ok_and(|n| n == page.limit);
        let next = if full { items.last().map(id) } else { None };
        Self { items, next }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn if_match_takes_one_strong_version() {
        assert_eq!(IfMatch::parse("\"3\"").unwrap(), IfMatch(3));
        assert_eq!(IfMatch::parse(" \"12\" ").unwrap(), IfMatch(12));
        for bad in ["3", "W/\"3\"", "*", "\"1\", \"2\"", "\"0\"", "\"x\"", ""] {
            let err = IfMatch::parse(bad).unwrap_err();
            assert!(matches!(err, ApiError::BadRequest(_)), "{bad}: {err}");
        }
        assert_eq!(etag(7), "\"7\"");
    }

    #[test]
    fn request_ids_are_short_and_plain() {
        assert!(valid_request_id("req-1"));
        assert!(valid_request_id("0190b6a0-0000-7000-8000-000000000001"));
        assert!(!valid_request_id(""));
        assert!(!valid_request_id("has space"));
        assert!(!valid_request_id(&"x".repeat(MAX_REQUEST_ID + 1)));
    }

    #[test]
    fn deciding_rules_name_effect_pattern_scope_and_source() {
        let grant = rbac::GrantId::new();
        let why = Explanation {
            allowed: false,
            decided_by: vec![rbac::Statement {
                grant_id: Some(grant),
                role_path: None,
                pattern: "project:update".into(),
                effect: Effect::Deny,
                resource: Some(Resource::new("project", "42")),
            }],
        };
        assert_eq!(
            deciding_rule(&why),
            format!("deny project:update on project:42 (grant {grant})")
        );
        let nothing = Explanation {
            allowed: false,
            decided_by: vec![],
        };
        assert!(deciding_rule(&nothing).contains("denied by default"));
    }
}
