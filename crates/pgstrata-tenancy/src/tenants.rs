//! Tenants: create, read, rename, and the operator's changes (status, settings, soft delete,
//! restore).
//!
//! A tenant sees only its own row (`id = tenancy.current_tenant_id()`). The request path works
//! on it through its [`TenantTx`]: [`create`] inserts the transaction's tenant, [`current`] reads
//! it, [`rename`] changes the one field the application may change. The operator
//! (`pgstrata_operator`) works across tenants on a `&mut PgConnection`, naming the tenant:
//! [`get`], [`list`], [`update_tenant`], [`soft_delete`], [`restore`]. [`create_tenant`] opens
//! the new tenant's transaction itself; [`actor_tenants`] and [`resolve`] are the lookups
//! before any tenant is chosen. Each operation's SQL is the pure builder `<operation>_stmt`.

use crate::error::{Error, Result, Subject};
use crate::exec;
use crate::generated::{Tenant, Tenants};
use crate::validate;
use pgstrata_core::page::Page;
use pgstrata_core::sql::{self, Built};
use pgstrata_core::{TenantContext, TenantId, TenantTx, UserId};
use sea_query::{Asterisk, Expr, ExprTrait, Func, Order, Query};
use serde::{Deserialize, Serialize};
use sqlx::PgConnection;

pub use crate::ids::TenantStatus;

/// `tenancy.actor_tenants()`: the live tenants of the acting user.
const ACTOR_TENANTS: &str = "tenancy.actor_tenants";
/// `tenancy.resolve_tenant(text)`: the actor's tenant behind a slug or a domain.
const RESOLVE_TENANT: &str = "tenancy.resolve_tenant";

/// A tenant to create. Status, settings and domain start at their defaults: they are the
/// operator's to change (`pgstrata_operator`), not the request path's.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NewTenant {
    pub slug: String,
    pub name: String,
}

impl NewTenant {
    pub fn new(slug: impl Into<String>, name: impl Into<String>) -> Self {
        Self {
            slug: slug.into(),
            name: name.into(),
        }
    }
}

/// Fields to change; `None` leaves a field as it is. The application role may change `name`
/// only (see [`rename`]); `status` and `settings` need a connection holding
/// `pgstrata_operator` (else [`DbError::Forbidden`](pgstrata_core::DbError::Forbidden)).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct TenantChanges {
    pub name: Option<String>,
    pub status: Option<TenantStatus>,
    pub settings: Option<serde_json::Value>,
}

/// A tenant the acting user belongs to, found before any tenant context is open.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, sqlx::FromRow)]
pub struct ActorTenant {
    pub tenant_id: TenantId,
    pub slug: String,
    pub name: String,
    pub status: TenantStatus,
    pub domain: Option<String>,
    /// The actor's role in it.
    pub role: String,
}

/// Which tenants to list (within what RLS lets the connection see).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TenantFilter {
    pub status: Option<TenantStatus>,
    pub slug_prefix: Option<String>,
    pub include_deleted: bool,
}

/// `INSERT` of a new tenant with id `id`, after validating it.
///
/// ```
/// use pgstrata_tenancy::tenants::{create_stmt, NewTenant};
/// let id = "0190b6a0-0000-7000-8000-000000000001".parse().unwrap();
/// let (sql, _values) = create_stmt(id, &NewTenant::new("acme", "Acme")).unwrap();
/// assert_eq!(sql, r#"INSERT INTO "tenancy"."tenants" ("id", "slug", "name") VALUES ($1, $2, $3) RETURNING *"#);
/// ```
pub fn create_stmt(id: TenantId, new: &NewTenant) -> Result<Built> {
    validate::slug(&new.slug)?;
    validate::name("name", &new.name, true)?;
    let stmt = Query::insert()
        .into_table(Tenants::qualified())
        .columns([Tenants::Id, Tenants::Slug, Tenants::Name])
        .values([id.into(), new.slug.clone().into(), new.name.clone().into()])
        .map_err(|e| Error::InvalidField {
            field: "tenant",
            reason: e.to_string(),
        })?
        .returning_all()
        .to_owned();
    Ok(sql::build(&stmt))
}

/// `SELECT` of one tenant by id.
///
/// ```
/// let id = "0190b6a0-0000-7000-8000-000000000001".parse().unwrap();
/// let (sql, _) = pgstrata_tenancy::tenants::get_stmt(id);
/// assert_eq!(sql, r#"SELECT * FROM "tenancy"."tenants" WHERE "id" = $1"#);
/// ```
pub fn get_stmt(id: TenantId) -> Built {
    sql::build(
        Query::select()
            .column(Asterisk)
            .from(Tenants::qualified())
            .and_where(Expr::col(Tenants::Id).eq(id)),
    )
}

/// `SELECT` of a page of tenants, oldest first, keyset-paginated by id.
///
/// ```
/// use pgstrata_tenancy::tenants::{list_stmt, TenantFilter, TenantStatus};
/// use pgstrata_core::Page;
/// let filter = TenantFilter { status: Some(TenantStatus::Active), slug_prefix: Some("ac".into()), include_deleted: false };
/// let (sql, _) = list_stmt(&filter, &Page::first(20)).unwrap();
/// assert_eq!(sql, r#"SELECT * FROM "tenancy"."tenants" WHERE "deleted_at" IS NULL AND "status" = $1 AND "slug" LIKE $2 ORDER BY "id" ASC LIMIT $3"#);
/// ```
pub fn list_stmt(filter: &TenantFilter, page: &Page<TenantId>) -> Result<Built> {
    page.validate()?;
    let mut q = Query::select();
    q.column(Asterisk).from(Tenants::qualified());
    if !filter.include_deleted {
        q.and_where(Expr::col(Tenants::DeletedAt).is_null());
    }
    if let Some(status) = filter.status {
        q.and_where(Expr::col(Tenants::Status).eq(status));
    }
    if let Some(prefix) = &filter.slug_prefix {
        q.and_where(Expr::col(Tenants::Slug).like(validate::like_prefix(prefix)));
    }
    if let Some(after) = page.after {
        q.and_where(Expr::col(Tenants::Id).gt(after));
    }
    q.order_by(Tenants::Id, Order::Asc).limit(page.limit);
    Ok(sql::build(&q))
}

/// `UPDATE` of the name, refused by the database when `expected_version` is stale.
///
/// ```
/// let id = "0190b6a0-0000-7000-8000-000000000001".parse().unwrap();
/// let (sql, _) = pgstrata_tenancy::tenants::rename_stmt(id, 3, "Acme Inc").unwrap();
/// assert_eq!(sql, r#"UPDATE "tenancy"."tenants" SET "version" = $1, "name" = $2 WHERE "id" = $3 AND "deleted_at" IS NULL RETURNING *"#);
/// ```
pub fn rename_stmt(id: TenantId, expected_version: i64, name: &str) -> Result<Built> {
    update_tenant_stmt(
        id,
        expected_version,
        &TenantChanges {
            name: Some(name.to_owned()),
            ..TenantChanges::default()
        },
    )
}

/// `UPDATE` of the given fields, refused by the database when `expected_version` is stale.
///
/// ```
/// use pgstrata_tenancy::tenants::{update_tenant_stmt, TenantChanges, TenantStatus};
/// let id = "0190b6a0-0000-7000-8000-000000000001".parse().unwrap();
/// let changes = TenantChanges { status: Some(TenantStatus::Suspended), settings: Some(serde_json::json!({})), ..Default::default() };
/// let (sql, _) = update_tenant_stmt(id, 3, &changes).unwrap();
/// assert_eq!(sql, r#"UPDATE "tenancy"."tenants" SET "version" = $1, "status" = $2, "settings" = $3 WHERE "id" = $4 AND "deleted_at" IS NULL RETURNING *"#);
/// ```
pub fn update_tenant_stmt(id: TenantId, expected_version: i64, changes: &TenantChanges) -> Result<Built> {
    let mut q = Query::update();
    q.table(Tenants::qualified()).value(Tenants::Version, expected_version);
    if let Some(name) = &changes.name {
        validate::name("name", name, true)?;
        q.value(Tenants::Name, name.clone());
    }
    if let Some(status) = changes.status {
        q.value(Tenants::Status, status);
    }
    if let Some(settings) = &changes.settings {
        validate::settings(settings)?;
        q.value(Tenants::Settings, settings.clone());
    }
    q.and_where(Expr::col(Tenants::Id).eq(id))
        .and_where(Expr::col(Tenants::DeletedAt).is_null())
        .returning_all();
    Ok(sql::build(&q))
}

/// `UPDATE` that marks a live tenant deleted (its slug becomes free again).
///
/// ```
/// let id = "0190b6a0-0000-7000-8000-000000000001".parse().unwrap();
/// let (sql, _) = pgstrata_tenancy::tenants::soft_delete_stmt(id, 3);
/// assert_eq!(sql, r#"UPDATE "tenancy"."tenants" SET "version" = $1, "deleted_at" = CURRENT_TIMESTAMP WHERE "id" = $2 AND "deleted_at" IS NULL RETURNING *"#);
/// ```
pub fn soft_delete_stmt(id: TenantId, expected_version: i64) -> Built {
    sql::build(
        Query::update()
            .table(Tenants::qualified())
            .value(Tenants::Version, expected_version)
            .value(Tenants::DeletedAt, Expr::current_timestamp())
            .and_where(Expr::col(Tenants::Id).eq(id))
            .and_where(Expr::col(Tenants::DeletedAt).is_null())
            .returning_all(),
    )
}

/// `UPDATE` that brings a deleted tenant back; refused if its slug was taken meanwhile.
///
/// ```
/// let id = "0190b6a0-0000-7000-8000-000000000001".parse().unwrap();
/// let (sql, _) = pgstrata_tenancy::tenants::restore_stmt(id, 3);
/// assert_eq!(sql, r#"UPDATE "tenancy"."tenants" SET "version" = $1, "deleted_at" = $2 WHERE "id" = $3 AND "deleted_at" IS NOT NULL RETURNING *"#);
/// ```
pub fn restore_stmt(id: TenantId, expected_version: i64) -> Built {
    sql::build(
        Query::update()
            .table(Tenants::qualified())
            .value(Tenants::Version, expected_version)
            .value(
                Tenants::DeletedAt,
                Expr::value(Option::<chrono::DateTime<chrono::Utc>>::None),
            )
            .and_where(Expr::col(Tenants::Id).eq(id))
            .and_where(Expr::col(Tenants::DeletedAt).is_not_null())
            .returning_all(),
    )
}

/// `SELECT` from `tenancy.actor_tenants()`.
///
/// ```
/// let (sql, _) = pgstrata_tenancy::tenants::actor_tenants_stmt();
/// assert_eq!(sql, r#"SELECT * FROM tenancy.actor_tenants() AS "t""#);
/// ```
pub fn actor_tenants_stmt() -> Built {
    sql::build(
        Query::select()
            .column(Asterisk)
            .from_function(Func::cust(ACTOR_TENANTS), "t"),
    )
}

/// `SELECT` from `tenancy.resolve_tenant(text)`.
///
/// ```
/// let (sql, _) = pgstrata_tenancy::tenants::resolve_stmt("acme");
/// assert_eq!(sql, r#"SELECT * FROM tenancy.resolve_tenant($1) AS "t""#);
/// ```
pub fn resolve_stmt(slug_or_domain: &str) -> Built {
    sql::build(
        Query::select()
            .column(Asterisk)
            .from_function(Func::cust(RESOLVE_TENANT).arg(slug_or_domain), "t"),
    )
}

/// Inserts the transaction's tenant (`tx.tenant_id()` is its id); the row-level policy lets
/// a context insert only its own tenant. See [`create_tenant`], which opens that transaction.
pub async fn create(tx: &mut TenantTx<'_>, new: &NewTenant) -> Result<Tenant> {
    let id = tx.tenant_id();
    let s = Subject::row("tenant", id).slug(&new.slug);
    exec::one(tx, create_stmt(id, new)?, &s).await
}

/// Creates a tenant with a new id and, if given, its owner's membership, in one transaction
/// (a savepoint when `conn` is already in one), acting as the owner.
pub async fn create_tenant(conn: &mut PgConnection, new: &NewTenant, owner: Option<UserId>) -> Result<Tenant> {
    let mut ctx = TenantContext::tenant(TenantId::new());
    ctx.actor_id = owner;
    let mut tx = pgstrata_core::begin_tenant(conn, &ctx).await?;
    let tenant = create(&mut tx, new).await?;
    if let Some(owner) = owner {
        crate::memberships::add(&mut tx, owner, "owner").await?;
    }
    tx.commit().await?;
    Ok(tenant)
}

/// The transaction's own tenant; `None` when it is deleted (its context sees nothing).
pub async fn current(tx: &mut TenantTx<'_>) -> Result<Option<Tenant>> {
    let id = tx.tenant_id();
    exec::optional(tx, get_stmt(id), &Subject::row("tenant", id)).await
}

/// Renames the transaction's tenant if it is still at `expected_version`: the one field the
/// application may change.
pub async fn rename(tx: &mut TenantTx<'_>, expected_version: i64, name: &str) -> Result<Tenant> {
    let id = tx.tenant_id();
    let s = Subject::row("tenant", id).version(expected_version);
    exec::one(tx, rename_stmt(id, expected_version, name)?, &s).await
}

/// The tenant, if the connection sees it (the operator sees every tenant; a tenant's context
/// its own, see [`current`]).
pub async fn get(conn: &mut PgConnection, id: TenantId) -> Result<Option<Tenant>> {
    exec::optional(conn, get_stmt(id), &Subject::row("tenant", id)).await
}

/// A page of the tenants the connection sees.
pub async fn list(conn: &mut PgConnection, filter: &TenantFilter, page: &Page<TenantId>) -> Result<Vec<Tenant>> {
    exec::all(conn, list_stmt(filter, page)?, &Subject::of("tenant")).await
}

/// Applies `changes` if the tenant is still at `expected_version`. Status and settings are the
/// operator's (`pgstrata_operator`); the request path renames with [`rename`].
pub async fn update_tenant(
    conn: &mut PgConnection,
    id: TenantId,
    expected_version: i64,
    changes: &TenantChanges,
) -> Result<Tenant> {
    let s = Subject::row("tenant", id).version(expected_version);
    exec::one(conn, update_tenant_stmt(id, expected_version, changes)?, &s).await
}

/// Soft-deletes the tenant if it is still at `expected_version`. An operator's decision: the
/// connection must hold `pgstrata_operator`. A deleted tenant's context sees nothing.
pub async fn soft_delete(conn: &mut PgConnection, id: TenantId, expected_version: i64) -> Result<Tenant> {
    let s = Subject::row("tenant", id).version(expected_version);
    exec::one(conn, soft_delete_stmt(id, expected_version), &s).await
}

/// Restores a soft-deleted tenant; `SlugTaken` if a live tenant has its slug now. Needs
/// `pgstrata_operator`, like [`soft_delete`].
pub async fn restore(conn: &mut PgConnection, id: TenantId, expected_version: i64) -> Result<Tenant> {
    let s = Subject::row("tenant", id).version(expected_version);
    let slug = get(conn, id).await?.ok_or_else(|| s.not_found())?.slug;
    exec::one(conn, restore_stmt(id, expected_version), &s.slug(&slug)).await
}

/// The live tenants the acting user (the context's actor) belongs to, with its role in each.
/// Needs no tenant context: this is how an application finds the tenants to offer a user
/// before it opens one (`tenancy.actor_tenants()`).
pub async fn actor_tenants(conn: &mut PgConnection) -> Result<Vec<ActorTenant>> {
    exec::all(conn, actor_tenants_stmt(), &Subject::of("tenant")).await
}

/// The tenant behind a slug or a domain, if the acting user belongs to it; `None` otherwise,
/// whether or not such a tenant exists (`tenancy.resolve_tenant(text)`).
pub async fn resolve(conn: &mut PgConnection, slug_or_domain: &str) -> Result<Option<ActorTenant>> {
    exec::optional(conn, resolve_stmt(slug_or_domain), &Subject::of("tenant")).await
}
