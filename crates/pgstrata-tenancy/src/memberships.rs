//! Memberships: a user in a tenant with a role name.
//!
//! Every operation works in the tenant of the [`TenantTx`] it is given. The builders take the
//! tenant explicitly (they are pure) and lead every condition with it, so each statement walks
//! an index that starts with `tenant_id`.

use crate::error::{Error, Result, Subject};
use crate::exec;
use crate::generated::{Membership, Memberships};
use crate::ids::MembershipId;
use crate::validate;
use pgstrata_core::page::Page;
use pgstrata_core::sql::{self, Built};
use pgstrata_core::{TenantId, TenantTx, UserId};
use sea_query::{Asterisk, Expr, ExprTrait, Order, Query};

/// Which memberships to list.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MembershipFilter {
    pub role: Option<String>,
    pub user_id: Option<UserId>,
}

/// `INSERT` of a membership.
///
/// ```
/// let t = "0190b6a0-0000-7000-8000-000000000001".parse().unwrap();
/// let u = "0190b6a0-0000-7000-8000-000000000002".parse().unwrap();
/// let (sql, _) = pgstrata_tenancy::memberships::add_stmt(t, u, "admin").unwrap();
/// assert_eq!(sql, r#"INSERT INTO "tenancy"."memberships" ("tenant_id", "user_id", "role") VALUES ($1, $2, $3) RETURNING *"#);
/// ```
pub fn add_stmt(tenant: TenantId, user: UserId, role: &str) -> Result<Built> {
    validate::role(role)?;
    let stmt = Query::insert()
        .into_table(Memberships::qualified())
        .columns([Memberships::TenantId, Memberships::UserId, Memberships::Role])
        .values([tenant.into(), user.into(), role.into()])
        .map_err(|e| Error::InvalidField {
            field: "membership",
            reason: e.to_string(),
        })?
        .returning_all()
        .to_owned();
    Ok(sql::build(&stmt))
}

/// `SELECT` of one membership by its key.
///
/// ```
/// let t = "0190b6a0-0000-7000-8000-000000000001".parse().unwrap();
/// let m = "0190b6a0-0000-7000-8000-000000000003".parse().unwrap();
/// let (sql, _) = pgstrata_tenancy::memberships::get_stmt(t, m);
/// assert_eq!(sql, r#"SELECT * FROM "tenancy"."memberships" WHERE "tenant_id" = $1 AND "id" = $2"#);
/// ```
pub fn get_stmt(tenant: TenantId, id: MembershipId) -> Built {
    sql::build(
        Query::select()
            .column(Asterisk)
            .from(Memberships::qualified())
            .and_where(Expr::col(Memberships::TenantId).eq(tenant))
            .and_where(Expr::col(Memberships::Id).eq(id)),
    )
}

/// `SELECT` of a page of a tenant's memberships (walks the primary key `(tenant_id, id)`).
///
/// ```
/// use pgstrata_core::Page;
/// use pgstrata_tenancy::memberships::{list_stmt, MembershipFilter};
/// let t = "0190b6a0-0000-7000-8000-000000000001".parse().unwrap();
/// let after = "0190b6a0-0000-7000-8000-0000000000ff".parse().unwrap();
/// let (sql, _) = list_stmt(t, &MembershipFilter::default(), &Page::after(after, 50)).unwrap();
/// assert_eq!(sql, r#"SELECT * FROM "tenancy"."memberships" WHERE "tenant_id" = $1 AND "id" > $2 ORDER BY "tenant_id" ASC, "id" ASC LIMIT $3"#);
/// ```
pub fn list_stmt(tenant: TenantId, filter: &MembershipFilter, page: &Page<MembershipId>) -> Result<Built> {
    page.validate()?;
    let mut q = Query::select();
    q.column(Asterisk)
        .from(Memberships::qualified())
        .and_where(Expr::col(Memberships::TenantId).eq(tenant));
    if let Some(role) = &filter.role {
        q.and_where(Expr::col(Memberships::Role).eq(role.as_str()));
    }
    if let Some(user) = filter.user_id {
        q.and_where(Expr::col(Memberships::UserId).eq(user));
    }
    if let Some(after) = page.after {
        q.and_where(Expr::col(Memberships::Id).gt(after));
    }
    q.order_by(Memberships::TenantId, Order::Asc)
        .order_by(Memberships::Id, Order::Asc)
        .limit(page.limit);
    Ok(sql::build(&q))
}

/// A member as the directory shows them: the membership with its user's email and name.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize, sqlx::FromRow)]
pub struct DirectoryEntry {
    pub tenant_id: TenantId,
    pub id: MembershipId,
    pub user_id: UserId,
    pub role: String,
    pub created_at: chrono::DateTime<chrono::Utc>,
    pub email: String,
    pub display_name: String,
}

/// Identifiers of the `tenancy.member_directory` view (tenancy V7).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum MemberDirectory {
    Table,
    TenantId,
    Id,
    UserId,
    Role,
    CreatedAt,
    Email,
    EmailKey,
    DisplayName,
}

impl sea_query::Iden for MemberDirectory {
    fn unquoted(&self) -> &str {
        match self {
            Self::Table => "member_directory",
            Self::TenantId => "tenant_id",
            Self::Id => "id",
            Self::UserId => "user_id",
            Self::Role => "role",
            Self::CreatedAt => "created_at",
            Self::Email => "email",
            Self::EmailKey => "email_key",
            Self::DisplayName => "display_name",
        }
    }
}

/// `SELECT` of a page of the member directory: memberships with their users' email and name,
/// in membership order. It reads the `tenancy.member_directory` view, which joins users without
/// paying the users policy per row (D-145). The view is ordered by `(tenant_id, id)` itself: an
/// `ORDER BY` here would make the planner sort the whole tenant, since it cannot push one
/// through the view's security barrier. `email` filters on the case-folded address.
///
/// ```
/// use pgstrata_core::Page;
/// use pgstrata_tenancy::memberships::directory_stmt;
/// let t = "0190b6a0-0000-7000-8000-000000000001".parse().unwrap();
/// let (sql, _) = directory_stmt(t, None, &Page::first(20)).unwrap();
/// assert_eq!(sql, r#"SELECT "tenant_id", "id", "user_id", "role", "created_at", "email", "display_name" FROM "tenancy"."member_directory" WHERE "tenant_id" = $1 LIMIT $2"#);
/// ```
pub fn directory_stmt(tenant: TenantId, email: Option<&str>, page: &Page<MembershipId>) -> Result<Built> {
    use crate::generated::TenancySchema;
    page.validate()?;
    let mut q = Query::select();
    q.columns([
        MemberDirectory::TenantId,
        MemberDirectory::Id,
        MemberDirectory::UserId,
        MemberDirectory::Role,
        MemberDirectory::CreatedAt,
        MemberDirectory::Email,
        MemberDirectory::DisplayName,
    ])
    .from((TenancySchema, MemberDirectory::Table))
    .and_where(Expr::col(MemberDirectory::TenantId).eq(tenant));
    if let Some(email) = email {
        q.and_where(Expr::col(MemberDirectory::EmailKey).eq(email.to_lowercase()));
    }
    if let Some(after) = page.after {
        q.and_where(Expr::col(MemberDirectory::Id).gt(after));
    }
    q.limit(page.limit);
    Ok(sql::build(&q))
}

/// `UPDATE` of the role, refused when `expected_version` is stale.
///
/// ```
/// let t = "0190b6a0-0000-7000-8000-000000000001".parse().unwrap();
/// let m = "0190b6a0-0000-7000-8000-000000000003".parse().unwrap();
/// let (sql, _) = pgstrata_tenancy::memberships::update_role_stmt(t, m, 2, "admin").unwrap();
/// assert_eq!(sql, r#"UPDATE "tenancy"."memberships" SET "version" = $1, "role" = $2 WHERE "tenant_id" = $3 AND "id" = $4 RETURNING *"#);
/// ```
pub fn update_role_stmt(tenant: TenantId, id: MembershipId, expected_version: i64, role: &str) -> Result<Built> {
    validate::role(role)?;
    Ok(sql::build(
        Query::update()
            .table(Memberships::qualified())
            .value(Memberships::Version, expected_version)
            .value(Memberships::Role, role)
            .and_where(Expr::col(Memberships::TenantId).eq(tenant))
            .and_where(Expr::col(Memberships::Id).eq(id))
            .returning_all(),
    ))
}

/// `DELETE` of one membership.
///
/// ```
/// let t = "0190b6a0-0000-7000-8000-000000000001".parse().unwrap();
/// let m = "0190b6a0-0000-7000-8000-000000000003".parse().unwrap();
/// let (sql, _) = pgstrata_tenancy::memberships::remove_stmt(t, m);
/// assert_eq!(sql, r#"DELETE FROM "tenancy"."memberships" WHERE "tenant_id" = $1 AND "id" = $2"#);
/// ```
pub fn remove_stmt(tenant: TenantId, id: MembershipId) -> Built {
    sql::build(
        Query::delete()
            .from_table(Memberships::qualified())
            .and_where(Expr::col(Memberships::TenantId).eq(tenant))
            .and_where(Expr::col(Memberships::Id).eq(id)),
    )
}

/// Adds `user` to the transaction's tenant with `role`. Without rbac, the user adds itself
/// (as `member`), or the tenant's owner gives the role; with rbac, rbac decides.
pub async fn add(tx: &mut TenantTx<'_>, user: UserId, role: &str) -> Result<Membership> {
    let tenant = tx.tenant_id();
    let s = Subject::of("membership").tenant(tenant).user(user);
    exec::one(tx, add_stmt(tenant, user, role)?, &s).await
}

/// The membership, if it exists in the transaction's tenant.
pub async fn get(tx: &mut TenantTx<'_>, id: MembershipId) -> Result<Option<Membership>> {
    let tenant = tx.tenant_id();
    exec::optional(tx, get_stmt(tenant, id), &Subject::row("membership", id)).await
}

/// A page of the transaction's tenant's memberships.
pub async fn list(
    tx: &mut TenantTx<'_>,
    filter: &MembershipFilter,
    page: &Page<MembershipId>,
) -> Result<Vec<Membership>> {
    let tenant = tx.tenant_id();
    exec::all(tx, list_stmt(tenant, filter, page)?, &Subject::of("membership")).await
}

/// A page of the transaction's tenant's member directory, optionally only the member with
/// `email` (compared case-insensitively).
pub async fn directory(
    tx: &mut TenantTx<'_>,
    email: Option<&str>,
    page: &Page<MembershipId>,
) -> Result<Vec<DirectoryEntry>> {
    let tenant = tx.tenant_id();
    exec::all(tx, directory_stmt(tenant, email, page)?, &Subject::of("membership")).await
}

/// Changes the role if the membership is still at `expected_version`.
pub async fn update_role(
    tx: &mut TenantTx<'_>,
    id: MembershipId,
    expected_version: i64,
    role: &str,
) -> Result<Membership> {
    let tenant = tx.tenant_id();
    let s = Subject::row("membership", id).version(expected_version);
    exec::one(tx, update_role_stmt(tenant, id, expected_version, role)?, &s).await
}

/// Removes a membership; `NotFound` if there was none in the transaction's tenant.
pub async fn remove(tx: &mut TenantTx<'_>, id: MembershipId) -> Result<()> {
    let tenant = tx.tenant_id();
    exec::touch_one(tx, remove_stmt(tenant, id), &Subject::row("membership", id)).await
}
