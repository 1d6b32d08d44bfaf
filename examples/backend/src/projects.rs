//! Projects: the application's own versioned resource, with optimistic concurrency over HTTP.
//!
//! Each response carrying a project has `ETag: "<version>"`. `PUT`, `PATCH` and `DELETE` need
//! `If-Match` with that ETag: without it 428, with a version that is no longer current 412
//! (the database refuses the stale write, `tenancy.bump_version`), so two editors never
//! overwrite each other unknowingly. Every change lands in the audit log, read back by
//! `GET /projects/{id}/history`.
//!
//! | route | permission |
//! | --- | --- |
//! | `GET /projects`, `GET /projects/{id}`, `GET /projects/{id}/history` | `project:read` |
//! | `POST /projects` | `project:create` |
//! | `PUT /projects/{id}`, `PATCH /projects/{id}` | `project:update` on the project |
//! | `DELETE /projects/{id}` | `project:delete` on the project |

use crate::AppState;
use crate::error::ApiError;
use crate::http::{Caller, IfMatch, JsonBody, PageQuery, Paged, PathParams, QueryParams, etag};
use axum::Json;
use axum::Router;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use chrono::{DateTime, Utc};
use pgstrata::audit::{Record, RecordFilter, query as audit_query};
use pgstrata::rbac::Resource;
use pgstrata::{Page, TenantId};
use serde::{Deserialize, Serialize};
use sqlx::PgConnection;
use uuid::Uuid;

/// The audit log's name for this table's records.
pub const RESOURCE_TYPE: &str = "app.projects";

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/projects", get(list).post(create))
        .route("/projects/{id}", get(read).put(replace).patch(modify).delete(remove))
        .route("/projects/{id}/history", get(history))
}

/// A project as stored and returned.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, sqlx::FromRow)]
pub struct Project {
    pub tenant_id: TenantId,
    pub id: Uuid,
    pub name: String,
    pub description: String,
    pub version: i64,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

/// `POST` and `PUT` body.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProjectInput {
    pub name: String,
    #[serde(default)]
    pub description: String,
}

/// `PATCH` body: the fields to change.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProjectPatch {
    pub name: Option<String>,
    pub description: Option<String>,
}

fn check_name(name: &str) -> Result<(), ApiError> {
    let n = name.chars().count();
    if name.trim().is_empty() || n > 200 {
        return Err(ApiError::BadRequest(format!(
            "name must be 1 to 200 characters and not blank, got {n}"
        )));
    }
    Ok(())
}

fn check_description(description: &str) -> Result<(), ApiError> {
    let n = description.chars().count();
    if n > 10_000 {
        return Err(ApiError::BadRequest(format!(
            "description must be at most 10000 characters, got {n}"
        )));
    }
    Ok(())
}

fn not_found(id: Uuid) -> ApiError {
    ApiError::NotFound(format!("project {id} not found"))
}

fn project_resource(id: Uuid) -> Resource {
    Resource::new("project", id.to_string())
}

/// A project with its ETag (and, for a new one, 201 and its Location).
fn respond(status: StatusCode, project: Project) -> Response {
    let mut headers = HeaderMap::new();
    headers.insert(header::ETAG, etag(project.version));
    if status == StatusCode::CREATED
        && let Ok(location) = format!("/projects/{}", project.id).parse()
    {
        headers.insert(header::LOCATION, location);
    }
    (status, headers, Json(project)).into_response()
}

// The store: one statement each, on the request's transaction. The tenant is named in every
// statement so each walks the tenant-led key; RLS would keep another tenant's rows out anyway.

async fn insert_project(conn: &mut PgConnection, tenant: TenantId, input: &ProjectInput) -> Result<Project, ApiError> {
    sqlx::query_as("INSERT INTO app.projects (tenant_id, name, description) VALUES ($1, $2, $3) RETURNING *")
        .bind(tenant)
        .bind(&input.name)
        .bind(&input.description)
        .fetch_one(conn)
        .await
        .map_err(|e| name_taken(e, &input.name))
}

fn name_taken(e: sqlx::Error, name: &str) -> ApiError {
    match ApiError::from(e) {
        ApiError::Conflict(_) => ApiError::Conflict(format!("a project named {name:?} already exists")),
        other => other,
    }
}

async fn select_project(conn: &mut PgConnection, tenant: TenantId, id: Uuid) -> Result<Project, ApiError> {
    sqlx::query_as("SELECT * FROM app.projects WHERE tenant_id = $1 AND id = $2")
        .bind(tenant)
        .bind(id)
        .fetch_optional(conn)
        .await?
        .ok_or_else(|| not_found(id))
}

async fn select_projects(conn: &mut PgConnection, tenant: TenantId, page: &Page) -> Result<Vec<Project>, ApiError> {
    page.validate().map_err(|e| ApiError::BadRequest(e.to_string()))?;
    Ok(sqlx::query_as(
        "SELECT * FROM app.projects WHERE tenant_id = $1 AND ($2::uuid IS NULL OR id > $2)
          ORDER BY tenant_id, id LIMIT $3",
    )
    .bind(tenant)
    .bind(page.after)
    .bind(i64::try_from(page.limit).unwrap_or(i64::MAX))
    .fetch_all(conn)
    .await?)
}

/// The guarded UPDATE: it names the version the client read; `tenancy.bump_version` refuses a
/// stale one (PS409, answered 412) and bumps a current one.
async fn update_project(
    conn: &mut PgConnection,
    tenant: TenantId,
    id: Uuid,
    expected: IfMatch,
    patch: &ProjectPatch,
) -> Result<Project, ApiError> {
    sqlx::query_as(
        "UPDATE app.projects
            SET name = coalesce($4, name), description = coalesce($5, description), version = $3
          WHERE tenant_id = $1 AND id = $2
      RETURNING *",
    )
    .bind(tenant)
    .bind(id)
    .bind(expected.0)
    .bind(&patch.name)
    .bind(&patch.description)
    .fetch_optional(conn)
    .await
    .map_err(|e| name_taken(e, patch.name.as_deref().unwrap_or_default()))?
    .ok_or_else(|| not_found(id))
}

/// Deletes the project only at the expected version; tells a stale version (412) from a
/// missing project (404).
async fn delete_project(
    conn: &mut PgConnection,
    tenant: TenantId,
    id: Uuid,
    expected: IfMatch,
) -> Result<(), ApiError> {
    // The outer SELECT sees the statement's snapshot: the row as it was before the DELETE.
    let (deleted, current): (bool, Option<i64>) = sqlx::query_as(
        "WITH gone AS (DELETE FROM app.projects WHERE tenant_id = $1 AND id = $2 AND version = $3 RETURNING id)
         SELECT EXISTS (SELECT 1 FROM gone), (SELECT version FROM app.projects WHERE tenant_id = $1 AND id = $2)",
    )
    .bind(tenant)
    .bind(id)
    .bind(expected.0)
    .fetch_one(conn)
    .await?;
    match (deleted, current) {
        (true, _) => Ok(()),
        (false, None) => Err(not_found(id)),
        // A concurrent update may have moved the version after this statement's snapshot.
        (false, Some(v)) => Err(ApiError::PreconditionFailed {
            current: (v != expected.0).then_some(v),
        }),
    }
}

// The handlers: authenticate (the `Caller` extractor), open the tenant transaction, check the
// permission, do one thing, commit.

async fn list(
    State(state): State<AppState>,
    caller: Caller,
    QueryParams(query): QueryParams<PageQuery>,
) -> Result<Json<Paged<Project>>, ApiError> {
    let mut tx = caller.begin(&state.pool).await?;
    caller.authorize(&mut tx, "project:read", None).await?;
    let page = query.page();
    let projects = select_projects(&mut tx, caller.tenant, &page).await?;
    tx.commit().await?;
    Ok(Json(Paged::new(projects, &page, |p| p.id)))
}

async fn create(
    State(state): State<AppState>,
    caller: Caller,
    JsonBody(input): JsonBody<ProjectInput>,
) -> Result<Response, ApiError> {
    check_name(&input.name)?;
    check_description(&input.description)?;
    let mut tx = caller.begin(&state.pool).await?;
    caller.authorize(&mut tx, "project:create", None).await?;
    let project = insert_project(&mut tx, caller.tenant, &input).await?;
    tx.commit().await?;
    Ok(respond(StatusCode::CREATED, project))
}

async fn read(
    State(state): State<AppState>,
    caller: Caller,
    PathParams(id): PathParams<Uuid>,
) -> Result<Response, ApiError> {
    let mut tx = caller.begin(&state.pool).await?;
    caller
        .authorize(&mut tx, "project:read", Some(&project_resource(id)))
        .await?;
    let project = select_project(&mut tx, caller.tenant, id).await?;
    tx.commit().await?;
    Ok(respond(StatusCode::OK, project))
}

async fn replace(
    State(state): State<AppState>,
    caller: Caller,
    PathParams(id): PathParams<Uuid>,
    expected: IfMatch,
    JsonBody(input): JsonBody<ProjectInput>,
) -> Result<Response, ApiError> {
    check_name(&input.name)?;
    check_description(&input.description)?;
    let patch = ProjectPatch {
        name: Some(input.name),
        description: Some(input.description),
    };
    update(state, caller, id, expected, patch).await
}

async fn modify(
    State(state): State<AppState>,
    caller: Caller,
    PathParams(id): PathParams<Uuid>,
    expected: IfMatch,
    JsonBody(patch): JsonBody<ProjectPatch>,
) -> Result<Response, ApiError> {
    if let Some(name) = &patch.name {
        check_name(name)?;
    }
    if let Some(description) = &patch.description {
        check_description(description)?;
    }
    update(state, caller, id, expected, patch).await
}

async fn update(
    state: AppState,
    caller: Caller,
    id: Uuid,
    expected: IfMatch,
    patch: ProjectPatch,
) -> Result<Response, ApiError> {
    let mut tx = caller.begin(&state.pool).await?;
    caller
        .authorize(&mut tx, "project:update", Some(&project_resource(id)))
        .await?;
    let project = update_project(&mut tx, caller.tenant, id, expected, &patch).await?;
    tx.commit().await?;
    Ok(respond(StatusCode::OK, project))
}

async fn remove(
    State(state): State<AppState>,
    caller: Caller,
    PathParams(id): PathParams<Uuid>,
    expected: IfMatch,
) -> Result<StatusCode, ApiError> {
    let mut tx = caller.begin(&state.pool).await?;
    caller
        .authorize(&mut tx, "project:delete", Some(&project_resource(id)))
        .await?;
    delete_project(&mut tx, caller.tenant, id, expected).await?;
    tx.commit().await?;
    Ok(StatusCode::NO_CONTENT)
}

/// `?limit=<n>`: the newest records first.
#[derive(Debug, Clone, Copy, Default, Deserialize)]
pub struct HistoryQuery {
    pub limit: Option<u64>,
}

/// The project's audit records, newest first: who changed what, in which request. A deleted
/// project keeps its history.
async fn history(
    State(state): State<AppState>,
    caller: Caller,
    PathParams(id): PathParams<Uuid>,
    QueryParams(query): QueryParams<HistoryQuery>,
) -> Result<Json<Vec<Record>>, ApiError> {
    let mut tx = caller.begin(&state.pool).await?;
    caller
        .authorize(&mut tx, "project:read", Some(&project_resource(id)))
        .await?;
    let filter = RecordFilter::new().resource(RESOURCE_TYPE, id.to_string());
    let page = Page::first(query.limit.unwrap_or(pgstrata::core::page::DEFAULT_PAGE_SIZE));
    let records = audit_query::list(&mut tx, &filter, &page).await?;
    tx.commit().await?;
    Ok(Json(records))
}
