//! Tenants: create, get, list, update with expected version, soft delete, restore.
//!
//! A tenant sees only its own row (`id = tenancy.current_tenant_id()`), so every operation
//! runs in that tenant's context; creating one means opening the new id's context first, which
//! [`create_tenant`] does. Builders are pure and return SQL with bound values; the operations
//! take a `&mut PgConnection` so they join the caller's transaction.

use crate::error::{Error, Result};
use crate::exec;
use crate::generated::{Tenant, Tenants};
use crate::validate;
use pgstrata_core::error::DbError;
use pgstrata_core::page::Page;
use pgstrata_core::sql::{self, Built};
use pgstrata_core::{TenantContext, TenantId, UserId};
use sea_query::{Asterisk, Expr, ExprTrait, Order, Query};
use serde::{Deserialize, Serialize};
use sqlx::{PgConnection, PgPool};

/// Lifecycle state of a tenant.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TenantStatus {
    Active,
    Suspended,
}

impl TenantStatus {
    pub fn as_str(&self) -> &'static str {
        match self {
            TenantStatus::Active => "active",
            TenantStatus::Suspended => "suspended",
        }
    }
}

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
/// only; `status` and `settings` need a connection holding `pgstrata_operator` (else
/// [`DbError::Forbidden`]).
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
    pub status: String,
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

fn named(slug: &str) -> impl Fn(&DbError) -> Option<Error> + '_ {
    move |db| match db {
        DbError::Conflict { constraint, .. } if constraint == "tenants_slug_live_key" => {
            Some(Error::SlugTaken { slug: slug.to_owned() })
        }
        _ => None,
    }
}

/// `INSERT` of a new tenant, after validating it.
///
/// ```
/// use pgstrata_tenancy::tenants::{insert, NewTenant};
/// use pgstrata_core::TenantId;
/// let id = TenantId("0190b6a0-0000-7000-8000-000000000001".parse().unwrap());
/// let (sql, _values) = insert(id, &NewTenant::new("acme", "Acme")).unwrap();
/// assert_eq!(sql, r#"INSERT INTO "tenancy"."tenants" ("id", "slug", "name") VALUES ($1, $2, $3) RETURNING *"#);
/// ```
pub fn insert(id: TenantId, new: &NewTenant) -> Result<Built> {
    validate::slug(&new.slug)?;
    validate::name("name", &new.name, true)?;
    let stmt = Query::insert()
        .into_table(Tenants::qualified())
        .columns([Tenants::Id, Tenants::Slug, Tenants::Name])
        .values([id.0.into(), new.slug.clone().into(), new.name.clone().into()])
        .map_err(|e| Error::InvalidField {
            field: "tenant",
            reason: e.to_string(),
        })?
        .returning_all()
        .to_owned();
    Ok(sql::build(&stmt))
}

/// `SELECT` of one tenant by id.
pub fn select_by_id(id: TenantId) -> Built {
    sql::build(
        Query::select()
            .column(Asterisk)
            .from(Tenants::qualified())
            .and_where(Expr::col(Tenants::Id).eq(id.0)),
    )
}

/// `SELECT` of a page of tenants, oldest first, keyset-paginated by id.
///
/// ```
/// use pgstrata_tenancy::tenants::{select_page, TenantFilter, TenantStatus};
/// use pgstrata_core::Page;
/// let filter = TenantFilter { status: Some(TenantStatus::Active), slug_prefix: Some("ac".into()), include_deleted: false };
/// let (sql, _) = select_page(&filter, &Page::first(20)).unwrap();
/// assert_eq!(sql, r#"SELECT * FROM "tenancy"."tenants" WHERE "deleted_at" IS NULL AND "status" = $1 AND "slug" LIKE $2 ORDER BY "id" ASC LIMIT $3"#);
/// ```
pub fn select_page(filter: &TenantFilter, page: &Page) -> Result<Built> {
    page.validate()?;
    let mut q = Query::select();
    q.column(Asterisk).from(Tenants::qualified());
    if !filter.include_deleted {
        q.and_where(Expr::col(Tenants::DeletedAt).is_null());
    }
    if let Some(status) = filter.status {
        q.and_where(Expr::col(Tenants::Status).eq(status.as_str()));
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

/// `UPDATE` of the given fields, refused by the database when `expected_version` is stale.
///
/// ```
/// use pgstrata_tenancy::tenants::{update, TenantChanges};
/// use pgstrata_core::TenantId;
/// let id = TenantId("0190b6a0-0000-7000-8000-000000000001".parse().unwrap());
/// let changes = TenantChanges { name: Some("Acme Inc".into()), ..Default::default() };
/// let (sql, _) = update(id, 3, &changes).unwrap();
/// assert_eq!(sql, r#"UPDATE "tenancy"."tenants" SET "version" = $1, "name" = $2 WHERE "id" = $3 AND "deleted_at" IS NULL RETURNING *"#);
/// ```
pub fn update(id: TenantId, expected_version: i64, changes: &TenantChanges) -> Result<Built> {
    let mut q = Query::update();
    q.table(Tenants::qualified()).value(Tenants::Version, expected_version);
    if let Some(name) = &changes.name {
        validate::name("name", name, true)?;
        q.value(Tenants::Name, name.clone());
    }
    if let Some(status) = changes.status {
        q.value(Tenants::Status, status.as_str());
    }
    if let Some(settings) = &changes.settings {
        validate::settings(settings)?;
        q.value(Tenants::Settings, settings.clone());
    }
    q.and_where(Expr::col(Tenants::Id).eq(id.0))
        .and_where(Expr::col(Tenants::DeletedAt).is_null())
        .returning_all();
    Ok(sql::build(&q))
}

/// `UPDATE` that marks a live tenant deleted (its slug becomes free again).
pub fn soft_delete_stmt(id: TenantId, expected_version: i64) -> Built {
    sql::build(
        Query::update()
            .table(Tenants::qualified())
            .value(Tenants::Version, expected_version)
            .value(Tenants::DeletedAt, Expr::current_timestamp())
            .and_where(Expr::col(Tenants::Id).eq(id.0))
            .and_where(Expr::col(Tenants::DeletedAt).is_null())
            .returning_all(),
    )
}

/// `UPDATE` that brings a deleted tenant back; refused if its slug was taken meanwhile.
pub fn restore_stmt(id: TenantId, expected_version: i64) -> Built {
    sql::build(
        Query::update()
            .table(Tenants::qualified())
            .value(Tenants::Version, expected_version)
            .value(
                Tenants::DeletedAt,
                Expr::value(Option::<chrono::DateTime<chrono::Utc>>::None),
            )
            .and_where(Expr::col(Tenants::Id).eq(id.0))
            .and_where(Expr::col(Tenants::DeletedAt).is_not_null())
            .returning_all(),
    )
}

/// Inserts a tenant with id `id`. The connection's transaction must already be in `id`'s
/// tenant context (the row-level policy checks it); see [`create_tenant`].
pub async fn create(conn: &mut PgConnection, id: TenantId, new: &NewTenant) -> Result<Tenant> {
    exec::one(conn, insert(id, new)?, "tenant", id.0, named(&new.slug)).await
}

/// Creates a tenant and, if given, its owner's membership, in one transaction.
pub async fn create_tenant(pool: &PgPool, new: &NewTenant, owner: Option<UserId>) -> Result<Tenant> {
    let id = TenantId::new();
    let mut ctx = TenantContext::tenant(id);
    ctx.actor_id = owner;
    let mut tx = pgstrata_core::begin_tenant(pool, &ctx).await?;
    let tenant = create(&mut tx, id, new).await?;
    if let Some(owner) = owner {
        crate::memberships::add(&mut tx, id, owner, "owner").await?;
    }
    tx.commit().await?;
    Ok(tenant)
}

/// The tenant, if visible in the current context.
pub async fn get(conn: &mut PgConnection, id: TenantId) -> Result<Tenant> {
    exec::one(conn, select_by_id(id), "tenant", id.0, exec::none).await
}

/// A page of tenants visible in the current context.
pub async fn list(conn: &mut PgConnection, filter: &TenantFilter, page: &Page) -> Result<Vec<Tenant>> {
    exec::all(conn, select_page(filter, page)?).await
}

/// Applies `changes` if the tenant is still at `expected_version`.
pub async fn update_tenant(
    conn: &mut PgConnection,
    id: TenantId,
    expected_version: i64,
    changes: &TenantChanges,
) -> Result<Tenant> {
    exec::versioned(
        conn,
        update(id, expected_version, changes)?,
        "tenant",
        id.0,
        expected_version,
        exec::none,
    )
    .await
}

/// Soft-deletes the tenant if it is still at `expected_version`. An operator's decision: the
/// connection must hold `pgstrata_operator`. A deleted tenant's context sees nothing.
pub async fn soft_delete(conn: &mut PgConnection, id: TenantId, expected_version: i64) -> Result<Tenant> {
    exec::versioned(
        conn,
        soft_delete_stmt(id, expected_version),
        "tenant",
        id.0,
        expected_version,
        exec::none,
    )
    .await
}

/// Restores a soft-deleted tenant; `SlugTaken` if a live tenant has its slug now. Needs
/// `pgstrata_operator`, like [`soft_delete`].
pub async fn restore(conn: &mut PgConnection, id: TenantId, expected_version: i64) -> Result<Tenant> {
    let slug = get(conn, id).await?.slug;
    exec::versioned(
        conn,
        restore_stmt(id, expected_version),
        "tenant",
        id.0,
        expected_version,
        named(&slug),
    )
    .await
}

/// The live tenants the acting user (the context's actor) belongs to, with its role in each.
/// Needs no tenant context: this is how an application finds the tenants to offer a user
/// before it opens one (`tenancy.actor_tenants()`).
pub async fn actor_tenants(conn: &mut PgConnection) -> Result<Vec<ActorTenant>> {
    Ok(sqlx::query_as("SELECT * FROM tenancy.actor_tenants()")
        .fetch_all(&mut *conn)
        .await?)
}

/// The tenant behind a slug or a domain, if the acting user belongs to it; `None` otherwise,
/// whether or not such a tenant exists (`tenancy.resolve_tenant(text)`).
pub async fn resolve(conn: &mut PgConnection, slug_or_domain: &str) -> Result<Option<ActorTenant>> {
    Ok(sqlx::query_as("SELECT * FROM tenancy.resolve_tenant($1)")
        .bind(slug_or_domain)
        .fetch_optional(&mut *conn)
        .await?)
}
