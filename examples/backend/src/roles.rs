//! Roles and grants of the caller's tenant (rbac), and what the caller may do.
//!
//! | route | permission |
//! | --- | --- |
//! | `GET /me`: the caller's tenant, user and effective permissions | none |
//! | `POST /roles` (`{"key", "description", "allow", "deny", "parents"}`) | `role:manage` |
//! | `DELETE /roles/{key}` | `role:manage` |
//! | `GET /users/{id}/grants` | `role:read` |
//! | `POST /grants` (`{"user_id", "role" \| "allow" \| "deny", "resource", "expires_at"}`) | `role:grant` |
//! | `DELETE /grants/{id}` | `role:grant` |
//!
//! The permission check decides who may manage roles at all; the database then refuses any
//! change that would give more than the acting user holds, or lift a deny on what it lacks
//! (answered 403 with the reason).

use crate::AppState;
use crate::error::ApiError;
use crate::http::{Caller, JsonBody, PageQuery, Paged, PathParams, QueryParams};
use axum::Json;
use axum::Router;
use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::{delete, get, post};
use chrono::{DateTime, Utc};
use pgstrata::rbac::generated::Grant;
use pgstrata::rbac::{self, Effect, GrantId, NewGrant, Principal, Resource, admin};
use pgstrata::{TenantId, UserId};
use serde::{Deserialize, Serialize};

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/me", get(me))
        .route("/roles", post(create_role))
        .route("/roles/{key}", delete(delete_role))
        .route("/users/{id}/grants", get(list_grants))
        .route("/grants", post(grant))
        .route("/grants/{id}", delete(revoke))
}

/// `GET /me` answer.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Me {
    pub user: UserId,
    pub tenant: TenantId,
    /// Catalog permissions the caller holds tenant-wide.
    pub permissions: Vec<String>,
}

async fn me(State(state): State<AppState>, caller: Caller) -> Result<Json<Me>, ApiError> {
    let mut tx = caller.begin(&state.pool).await?;
    let permissions = rbac::effective_permissions(&mut tx, &caller.principal(), None).await?;
    tx.commit().await?;
    Ok(Json(Me {
        user: caller.user,
        tenant: caller.tenant,
        permissions,
    }))
}

/// `POST /roles` body: a custom role, its patterns and the roles it inherits.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RoleInput {
    pub key: String,
    #[serde(default)]
    pub description: String,
    #[serde(default)]
    pub allow: Vec<String>,
    #[serde(default)]
    pub deny: Vec<String>,
    #[serde(default)]
    pub parents: Vec<String>,
}

/// All of the role or none: one transaction.
async fn create_role(
    State(state): State<AppState>,
    caller: Caller,
    JsonBody(input): JsonBody<RoleInput>,
) -> Result<(StatusCode, Json<serde_json::Value>), ApiError> {
    let mut tx = caller.begin(&state.pool).await?;
    caller.authorize(&mut tx, "role:manage", None).await?;
    admin::create_role(&mut tx, &input.key, &input.description).await?;
    for (patterns, effect) in [(&input.allow, Effect::Allow), (&input.deny, Effect::Deny)] {
        for pattern in patterns {
            admin::add_role_permission(&mut tx, &input.key, pattern, effect).await?;
        }
    }
    for parent in &input.parents {
        admin::add_role_parent(&mut tx, &input.key, parent).await?;
    }
    tx.commit().await?;
    Ok((StatusCode::CREATED, Json(serde_json::json!({ "key": input.key }))))
}

async fn delete_role(
    State(state): State<AppState>,
    caller: Caller,
    PathParams(key): PathParams<String>,
) -> Result<StatusCode, ApiError> {
    let mut tx = caller.begin(&state.pool).await?;
    caller.authorize(&mut tx, "role:manage", None).await?;
    admin::delete_role(&mut tx, &key).await?;
    tx.commit().await?;
    Ok(StatusCode::NO_CONTENT)
}

async fn list_grants(
    State(state): State<AppState>,
    caller: Caller,
    PathParams(user): PathParams<UserId>,
    QueryParams(query): QueryParams<PageQuery<GrantId>>,
) -> Result<Json<Paged<Grant, GrantId>>, ApiError> {
    let page = query.page();
    let mut tx = caller.begin(&state.pool).await?;
    caller.authorize(&mut tx, "role:read", None).await?;
    let grants = admin::list_grants(&mut tx, &Principal::user(user), &page).await?;
    tx.commit().await?;
    Ok(Json(Paged::new(grants, &page, |g| g.id)))
}

/// `{"kind": "project", "id": "..."}`: the one resource a grant is scoped to.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ResourceInput {
    pub kind: String,
    pub id: String,
}

/// `POST /grants` body: exactly one of `role`, `allow`, `deny`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GrantInput {
    pub user_id: UserId,
    pub role: Option<String>,
    pub allow: Option<String>,
    pub deny: Option<String>,
    pub resource: Option<ResourceInput>,
    pub expires_at: Option<DateTime<Utc>>,
}

impl GrantInput {
    fn to_grant(&self) -> Result<NewGrant, ApiError> {
        let principal = Principal::user(self.user_id);
        let mut grant = match (&self.role, &self.allow, &self.deny) {
            (Some(role), None, None) => NewGrant::role(principal, role),
            (None, Some(pattern), None) => NewGrant::allow(principal, pattern),
            (None, None, Some(pattern)) => NewGrant::deny(principal, pattern),
            _ => {
                return Err(ApiError::BadRequest(
                    "give exactly one of role, allow (a pattern) or deny (a pattern)".into(),
                ));
            }
        };
        if let Some(r) = &self.resource {
            grant = grant.on(Resource::new(&r.kind, &r.id));
        }
        if let Some(at) = self.expires_at {
            grant = grant.until(at);
        }
        Ok(grant)
    }
}

async fn grant(
    State(state): State<AppState>,
    caller: Caller,
    JsonBody(input): JsonBody<GrantInput>,
) -> Result<(StatusCode, Json<Grant>), ApiError> {
    let new = input.to_grant()?;
    let mut tx = caller.begin(&state.pool).await?;
    caller.authorize(&mut tx, "role:grant", None).await?;
    let grant = admin::grant(&mut tx, &new).await?;
    tx.commit().await?;
    Ok((StatusCode::CREATED, Json(grant)))
}

async fn revoke(
    State(state): State<AppState>,
    caller: Caller,
    PathParams(id): PathParams<GrantId>,
) -> Result<StatusCode, ApiError> {
    let mut tx = caller.begin(&state.pool).await?;
    caller.authorize(&mut tx, "role:grant", None).await?;
    admin::revoke(&mut tx, id).await?;
    tx.commit().await?;
    Ok(StatusCode::NO_CONTENT)
}
