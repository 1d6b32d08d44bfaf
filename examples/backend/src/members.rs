//! Members of the caller's tenant (`tenancy.memberships`).
//!
//! | route | permission |
//! | --- | --- |
//! | `GET /members`, `GET /members/{id}` | `member:read` |
//! | `PATCH /members/{id}` (`{"role": ...}`, `If-Match`) | `role:grant` |
//! | `DELETE /members/{id}` | `member:remove` |
//!
//! A membership is versioned like a project: changing its role needs `If-Match` (428 without,
//! 412 when stale). Beyond the permission check, the database refuses a role change that would
//! give more than the acting user holds (rbac's escalation guard, answered 403 with its
//! reason).

use crate::AppState;
use crate::error::ApiError;
use crate::http::{Caller, IfMatch, JsonBody, PageQuery, Paged, PathParams, QueryParams, etag};
use axum::Json;
use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use pgstrata::tenancy::MembershipId;
use pgstrata::tenancy::generated::Membership;
use pgstrata::tenancy::memberships::{self, MembershipFilter};
use serde::Deserialize;

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/members", get(list))
        .route("/members/{id}", get(read).patch(change_role).delete(remove))
}

fn respond(membership: Membership) -> Response {
    ([(header::ETAG, etag(membership.version))], Json(membership)).into_response()
}

/// `GET /members?role=admin&after=..&limit=..`
#[derive(Debug, Clone, Default, Deserialize)]
pub struct MemberQuery {
    pub role: Option<String>,
    pub after: Option<MembershipId>,
    pub limit: Option<u64>,
}

async fn list(
    State(state): State<AppState>,
    caller: Caller,
    QueryParams(query): QueryParams<MemberQuery>,
) -> Result<Json<Paged<Membership, MembershipId>>, ApiError> {
    let page = PageQuery {
        after: query.after,
        limit: query.limit,
    }
    .page();
    let filter = MembershipFilter {
        role: query.role,
        user_id: None,
    };
    let mut tx = caller.begin(&state.pool).await?;
    caller.authorize(&mut tx, "member:read", None).await?;
    let members = memberships::list(&mut tx, &filter, &page).await?;
    tx.commit().await?;
    Ok(Json(Paged::new(members, &page, |m| m.id)))
}

async fn read(
    State(state): State<AppState>,
    caller: Caller,
    PathParams(id): PathParams<MembershipId>,
) -> Result<Response, ApiError> {
    let mut tx = caller.begin(&state.pool).await?;
    caller.authorize(&mut tx, "member:read", None).await?;
    let membership = memberships::get(&mut tx, id)
        .await?
        .ok_or_else(|| ApiError::NotFound(format!("no member {id} in this tenant")))?;
    tx.commit().await?;
    Ok(respond(membership))
}

/// `PATCH /members/{id}` body.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RoleChange {
    pub role: String,
}

async fn change_role(
    State(state): State<AppState>,
    caller: Caller,
    PathParams(id): PathParams<MembershipId>,
    expected: IfMatch,
    JsonBody(change): JsonBody<RoleChange>,
) -> Result<Response, ApiError> {
    let mut tx = caller.begin(&state.pool).await?;
    caller.authorize(&mut tx, "role:grant", None).await?;
    let membership = memberships::update_role(&mut tx, id, expected.0, &change.role).await?;
    tx.commit().await?;
    Ok(respond(membership))
}

async fn remove(
    State(state): State<AppState>,
    caller: Caller,
    PathParams(id): PathParams<MembershipId>,
) -> Result<StatusCode, ApiError> {
    let mut tx = caller.begin(&state.pool).await?;
    caller.authorize(&mut tx, "member:remove", None).await?;
    memberships::remove(&mut tx, id).await?;
    tx.commit().await?;
    Ok(StatusCode::NO_CONTENT)
}
