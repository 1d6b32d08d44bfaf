//! Memberships: a user in a tenant with a role name.

use crate::error::{Error, Result};
use crate::exec;
use crate::generated::{Membership, Memberships};
use crate::validate;
use pgstrata_core::error::DbError;
use pgstrata_core::page::Page;
use pgstrata_core::sql::{self, Built};
use pgstrata_core::{TenantId, UserId};
use sea_query::{Asterisk, Expr, ExprTrait, Order, Query};
use sqlx::PgConnection;
use uuid::Uuid;

/// Which memberships to list.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MembershipFilter {
    pub role: Option<String>,
    pub user_id: Option<UserId>,
}

fn named(tenant: TenantId, user: UserId) -> impl Fn(&DbError) -> Option<Error> {
    move |db| match db {
        DbError::Conflict { constraint, .. } if constraint == "memberships_tenant_user_key" => {
            Some(Error::AlreadyMember)
        }
        DbError::MissingReference { constraint, .. } if constraint == "memberships_tenant_fkey" => {
            Some(Error::UnknownTenant(tenant))
        }
        DbError::MissingReference { constraint, .. } if constraint == "memberships_user_fkey" => {
            Some(Error::NotFound {
                entity: "user",
                id: user.0,
            })
        }
        _ => None,
    }
}

/// `INSERT` of a membership.
///
/// ```
/// use pgstrata_core::{TenantId, UserId};
/// let t = TenantId("0190b6a0-0000-7000-8000-000000000001".parse().unwrap());
/// let u = UserId("0190b6a0-0000-7000-8000-000000000002".parse().unwrap());
/// let (sql, _) = pgstrata_tenancy::memberships::insert(t, u, "admin").unwrap();
/// assert_eq!(sql, r#"INSERT INTO "tenancy"."memberships" ("tenant_id", "user_id", "role") VALUES ($1, $2, $3) RETURNING *"#);
/// ```
pub fn insert(tenant: TenantId, user: UserId, role: &str) -> Result<Built> {
    validate::role(role)?;
    let stmt = Query::insert()
        .into_table(Memberships::qualified())
        .columns([Memberships::TenantId, Memberships::UserId, Memberships::Role])
        .values([tenant.0.into(), user.0.into(), role.into()])
        .map_err(|e| Error::InvalidField {
            field: "membership",
            reason: e.to_string(),
        })?
        .returning_all()
        .to_owned();
    Ok(sql::build(&stmt))
}

/// `SELECT` of one membership by its key.
pub fn select_by_id(tenant: TenantId, id: Uuid) -> Built {
    sql::build(
        Query::select()
            .column(Asterisk)
            .from(Memberships::qualified())
            .and_where(Expr::col(Memberships::TenantId).eq(tenant.0))
            .and_where(Expr::col(Memberships::Id).eq(id)),
    )
}

/// `SELECT` of a page of a tenant's memberships (walks the primary key `(tenant_id, id)`).
///
/// ```
/// use pgstrata_core::{Page, TenantId};
/// use pgstrata_tenancy::memberships::{select_page, MembershipFilter};
/// let t = TenantId("0190b6a0-0000-7000-8000-000000000001".parse().unwrap());
/// let after = "0190b6a0-0000-7000-8000-0000000000ff".parse().unwrap();
/// let (sql, _) = select_page(t, &MembershipFilter::default(), &Page::after(after, 50)).unwrap();
/// assert_eq!(sql, r#"SELECT * FROM "tenancy"."memberships" WHERE "tenant_id" = $1 AND "id" > $2 ORDER BY "tenant_id" ASC, "id" ASC LIMIT $3"#);
/// ```
pub fn select_page(tenant: TenantId, filter: &MembershipFilter, page: &Page) -> Result<Built> {
    page.validate()?;
    let mut q = Query::select();
    q.column(Asterisk)
        .from(Memberships::qualified())
        .and_where(Expr::col(Memberships::TenantId).eq(tenant.0));
    if let Some(role) = &filter.role {
        q.and_where(Expr::col(Memberships::Role).eq(role.as_str()));
    }
    if let Some(user) = filter.user_id {
        q.and_where(Expr::col(Memberships::UserId).eq(user.0));
    }
    if let Some(after) = page.after {
        q.and_where(Expr::col(Memberships::Id).gt(after));
    }
    q.order_by(Memberships::TenantId, Order::Asc)
        .order_by(Memberships::Id, Order::Asc)
        .limit(page.limit);
    Ok(sql::build(&q))
}

/// `UPDATE` of the role, refused when `expected_version` is stale.
pub fn update_role_stmt(tenant: TenantId, id: Uuid, expected_version: i64, role: &str) -> Result<Built> {
    validate::role(role)?;
    Ok(sql::build(
        Query::update()
            .table(Memberships::qualified())
            .value(Memberships::Version, expected_version)
            .value(Memberships::Role, role)
            .and_where(Expr::col(Memberships::TenantId).eq(tenant.0))
            .and_where(Expr::col(Memberships::Id).eq(id))
            .returning_all(),
    ))
}

/// `DELETE` of one membership.
pub fn delete_stmt(tenant: TenantId, id: Uuid) -> Built {
    sql::build(
        Query::delete()
            .from_table(Memberships::qualified())
            .and_where(Expr::col(Memberships::TenantId).eq(tenant.0))
            .and_where(Expr::col(Memberships::Id).eq(id)),
    )
}

/// Adds `user` to `tenant` (the current tenant context) with `role`.
pub async fn add(conn: &mut PgConnection, tenant: TenantId, user: UserId, role: &str) -> Result<Membership> {
    exec::one(
        conn,
        insert(tenant, user, role)?,
        "membership",
        user.0,
        named(tenant, user),
    )
    .await
}

pub async fn get(conn: &mut PgConnection, tenant: TenantId, id: Uuid) -> Result<Membership> {
    exec::one(conn, select_by_id(tenant, id), "membership", id, exec::none).await
}

pub async fn list(
    conn: &mut PgConnection,
    tenant: TenantId,
    filter: &MembershipFilter,
    page: &Page,
) -> Result<Vec<Membership>> {
    exec::all(conn, select_page(tenant, filter, page)?).await
}

/// Changes the role if the membership is still at `expected_version`.
pub async fn update_role(
    conn: &mut PgConnection,
    tenant: TenantId,
    id: Uuid,
    expected_version: i64,
    role: &str,
) -> Result<Membership> {
    let built = update_role_stmt(tenant, id, expected_version, role)?;
    exec::versioned(conn, built, "membership", id, expected_version, exec::none).await
}

/// Removes a membership; `NotFound` if there was none.
pub async fn remove(conn: &mut PgConnection, tenant: TenantId, id: Uuid) -> Result<()> {
    let done = sql::query(delete_stmt(tenant, id)).execute(conn).await?;
    if done.rows_affected() == 0 {
        return Err(Error::NotFound {
            entity: "membership",
            id,
        });
    }
    Ok(())
}
