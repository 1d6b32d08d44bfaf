//! Changing who may do what: custom roles, their permissions and parents, grants, groups.
//! Operations run in the current tenant context and need an acting user (`app.actor_id`) who
//! holds, tenant-wide and without a deny, what the change confers, for as long as it confers it
//! ([`Error::EscalationRefused`], [`Error::OutlivesActor`]), and what a deny it removes restricts
//! ([`Error::DenyRemovalRefused`]). The database enforces this for every client.

use crate::error::{Error, Result};
use crate::generated::{Grant, Grants, RoleParents, RolePermissions, Roles};
use crate::{Effect, Principal, Resource, is_pattern};
use chrono::{DateTime, Utc};
use pgstrata_core::TenantId;
use pgstrata_core::error::DbError;
use pgstrata_core::page::Page;
use pgstrata_core::sql::{self, Built};
use sea_query::{Asterisk, Expr, ExprTrait, Order, Query};
use sqlx::PgConnection;
use uuid::Uuid;

fn role_key(key: &str) -> Result<()> {
    let valid = (1..=63).contains(&key.len())
        && key.starts_with(|c: char| c.is_ascii_lowercase())
        && key
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_');
    if valid {
        Ok(())
    } else {
        Err(Error::InvalidRoleKey {
            key: key.chars().take(80).collect(),
        })
    }
}

fn pattern(p: &str) -> Result<()> {
    if is_pattern(p) {
        Ok(())
    } else {
        Err(Error::InvalidPattern {
            pattern: p.chars().take(80).collect(),
        })
    }
}

/// Maps "role does not exist" and "role exists" refusals to errors naming the key.
fn role_errors(key: &str) -> impl Fn(DbError) -> Error + '_ {
    move |db| match &db {
        DbError::MissingReference { .. } => Error::UnknownRole { key: key.to_owned() },
        DbError::Conflict { constraint, .. } if constraint.starts_with("roles_") => {
            Error::RoleExists { key: key.to_owned() }
        }
        _ => Error::from(db),
    }
}

async fn execute(conn: &mut PgConnection, built: Built, on_err: impl Fn(DbError) -> Error) -> Result<u64> {
    sql::query(built)
        .execute(conn)
        .await
        .map(|r| r.rows_affected())
        .map_err(|e| on_err(e.into()))
}

/// `INSERT` of a custom role.
pub fn insert_role(tenant: TenantId, key: &str, description: &str) -> Result<Built> {
    role_key(key)?;
    let stmt = Query::insert()
        .into_table(Roles::qualified())
        .columns([Roles::TenantId, Roles::Key, Roles::Description])
        .values([tenant.0.into(), key.into(), description.into()])
        .map_err(|_| Error::InvalidRoleKey { key: key.into() })?
        .to_owned();
    Ok(sql::build(&stmt))
}

/// Creates a custom role (its key may not be a system role's).
pub async fn create_role(conn: &mut PgConnection, tenant: TenantId, key: &str, description: &str) -> Result<()> {
    execute(conn, insert_role(tenant, key, description)?, role_errors(key))
        .await
        .map(drop)
}

/// Deletes a custom role; its grants and the inheritance edges naming it go with it.
pub async fn delete_role(conn: &mut PgConnection, tenant: TenantId, key: &str) -> Result<bool> {
    let built = sql::build(
        Query::delete()
            .from_table(Roles::qualified())
            .and_where(Expr::col(Roles::TenantId).eq(tenant.0))
            .and_where(Expr::col(Roles::Key).eq(key)),
    );
    Ok(execute(conn, built, Error::from).await? > 0)
}

/// Adds an allow or deny pattern to a custom role.
pub async fn add_role_permission(
    conn: &mut PgConnection,
    tenant: TenantId,
    key: &str,
    permission: &str,
    effect: Effect,
) -> Result<()> {
    pattern(permission)?;
    let stmt = Query::insert()
        .into_table(RolePermissions::qualified())
        .columns([
            RolePermissions::TenantId,
            RolePermissions::RoleKey,
            RolePermissions::Permission,
            RolePermissions::Effect,
        ])
        .values([tenant.0.into(), key.into(), permission.into(), effect.as_str().into()])
        .map_err(|_| Error::InvalidPattern {
            pattern: permission.into(),
        })?
        .to_owned();
    execute(conn, sql::build(&stmt), role_errors(key)).await.map(drop)
}

/// Removes an allow or deny pattern from a custom role; removing a deny needs the acting user
/// to hold what it denies ([`Error::DenyRemovalRefused`]). Returns whether it was there.
pub async fn remove_role_permission(
    conn: &mut PgConnection,
    tenant: TenantId,
    key: &str,
    permission: &str,
    effect: Effect,
) -> Result<bool> {
    let built = sql::build(
        Query::delete()
            .from_table(RolePermissions::qualified())
            .and_where(Expr::col(RolePermissions::TenantId).eq(tenant.0))
            .and_where(Expr::col(RolePermissions::RoleKey).eq(key))
            .and_where(Expr::col(RolePermissions::Permission).eq(permission))
            .and_where(Expr::col(RolePermissions::Effect).eq(effect.as_str())),
    );
    Ok(execute(conn, built, Error::from).await? > 0)
}

/// Removes an inheritance edge; refused if `parent` carries denies the acting user does not
/// cover. Returns whether it was there.
pub async fn remove_role_parent(conn: &mut PgConnection, tenant: TenantId, key: &str, parent: &str) -> Result<bool> {
    let built = sql::build(
        Query::delete()
            .from_table(RoleParents::qualified())
            .and_where(Expr::col(RoleParents::TenantId).eq(tenant.0))
            .and_where(Expr::col(RoleParents::RoleKey).eq(key))
            .and_where(Expr::col(RoleParents::ParentKey).eq(parent)),
    );
    Ok(execute(conn, built, Error::from).await? > 0)
}

/// Makes `key` inherit everything `parent` has; refused with [`Error::Cycle`] if `parent`
/// already inherits from `key`.
pub async fn add_role_parent(conn: &mut PgConnection, tenant: TenantId, key: &str, parent: &str) -> Result<()> {
    role_key(parent)?;
    let stmt = Query::insert()
        .into_table(RoleParents::qualified())
        .columns([RoleParents::TenantId, RoleParents::RoleKey, RoleParents::ParentKey])
        .values([tenant.0.into(), key.into(), parent.into()])
        .map_err(|_| Error::InvalidRoleKey { key: parent.into() })?
        .to_owned();
    execute(conn, sql::build(&stmt), |db| match &db {
        DbError::MissingReference { constraint, .. } if constraint == "role_parents_parent_exists" => {
            Error::UnknownRole { key: parent.to_owned() }
        }
        _ => role_errors(key)(db),
    })
    .await
    .map(drop)
}

/// What a grant gives.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum GrantTarget {
    /// A role (system or custom), always as an allow.
    Role(String),
    /// One permission pattern, allowed or denied.
    Permission { pattern: String, effect: Effect },
}

/// A grant to make.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewGrant {
    pub principal: Principal,
    pub target: GrantTarget,
    /// `None`: tenant-wide.
    pub resource: Option<Resource>,
    /// `None`: until revoked.
    pub expires_at: Option<DateTime<Utc>>,
}

impl NewGrant {
    pub fn role(principal: Principal, key: impl Into<String>) -> Self {
        Self {
            principal,
            target: GrantTarget::Role(key.into()),
            resource: None,
            expires_at: None,
        }
    }

    pub fn allow(principal: Principal, pattern: impl Into<String>) -> Self {
        Self::permission(principal, pattern, Effect::Allow)
    }

    pub fn deny(principal: Principal, pattern: impl Into<String>) -> Self {
        Self::permission(principal, pattern, Effect::Deny)
    }

    fn permission(principal: Principal, pattern: impl Into<String>, effect: Effect) -> Self {
        Self {
            principal,
            target: GrantTarget::Permission {
                pattern: pattern.into(),
                effect,
            },
            resource: None,
            expires_at: None,
        }
    }

    /// Scopes the grant to one resource.
    pub fn on(mut self, resource: Resource) -> Self {
        self.resource = Some(resource);
        self
    }

    /// Makes the grant temporary.
    pub fn until(mut self, expires_at: DateTime<Utc>) -> Self {
        self.expires_at = Some(expires_at);
        self
    }
}

/// `INSERT` of a grant.
///
/// ```
/// use pgstrata_core::TenantId;
/// use pgstrata_rbac::{NewGrant, Principal, Resource};
/// let t = TenantId("0190b6a0-0000-7000-8000-000000000001".parse().unwrap());
/// let user = Principal::user("0190b6a0-0000-7000-8000-000000000002".parse().unwrap());
/// let grant = NewGrant::deny(user, "invoice:delete").on(Resource::new("invoice", "42"));
/// let (sql, _) = pgstrata_rbac::admin::insert_grant(t, &grant).unwrap();
/// assert_eq!(sql, r#"INSERT INTO "rbac"."grants" ("tenant_id", "principal_type", "principal_id", "role_key", "permission", "effect", "resource_type", "resource_id", "expires_at") VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9) RETURNING *"#);
/// ```
pub fn insert_grant(tenant: TenantId, grant: &NewGrant) -> Result<Built> {
    let (role, permission, effect) = match &grant.target {
        GrantTarget::Role(key) => {
            role_key(key)?;
            (Some(key.clone()), None, Effect::Allow)
        }
        GrantTarget::Permission { pattern: p, effect } => {
            pattern(p)?;
            (None, Some(p.clone()), *effect)
        }
    };
    if let Some(r) = &grant.resource {
        r.validate()?;
    }
    let stmt = Query::insert()
        .into_table(Grants::qualified())
        .columns([
            Grants::TenantId,
            Grants::PrincipalType,
            Grants::PrincipalId,
            Grants::RoleKey,
            Grants::Permission,
            Grants::Effect,
            Grants::ResourceType,
            Grants::ResourceId,
            Grants::ExpiresAt,
        ])
        .values([
            tenant.0.into(),
            grant.principal.kind.as_str().into(),
            grant.principal.id.into(),
            role.into(),
            permission.into(),
            effect.as_str().into(),
            grant.resource.as_ref().map(|r| r.kind.clone()).into(),
            grant.resource.as_ref().map(|r| r.id.clone()).into(),
            grant.expires_at.into(),
        ])
        .map_err(|_| Error::InvalidResource("grant values"))?
        .returning_all()
        .to_owned();
    Ok(sql::build(&stmt))
}

/// Grants a role or a permission; the acting user must hold what it grants.
pub async fn grant(conn: &mut PgConnection, tenant: TenantId, new: &NewGrant) -> Result<Grant> {
    let key = match &new.target {
        GrantTarget::Role(key) => key.as_str(),
        GrantTarget::Permission { .. } => "",
    };
    sql::query_as::<Grant>(insert_grant(tenant, new)?)
        .fetch_one(conn)
        .await
        .map_err(|e| match DbError::from(e) {
            DbError::MissingReference { constraint, .. } if constraint == "grants_role_exists" => {
                Error::UnknownRole { key: key.to_owned() }
            }
            other => Error::from(other),
        })
}

/// Revokes a grant.
pub async fn revoke(conn: &mut PgConnection, tenant: TenantId, grant_id: Uuid) -> Result<()> {
    let built = sql::build(
        Query::delete()
            .from_table(Grants::qualified())
            .and_where(Expr::col(Grants::TenantId).eq(tenant.0))
            .and_where(Expr::col(Grants::Id).eq(grant_id)),
    );
    match execute(conn, built, Error::from).await? {
        0 => Err(Error::GrantNotFound),
        _ => Ok(()),
    }
}

/// `SELECT` of a page of a principal's own grants (served by `grants_principal_idx`).
pub fn select_grants(tenant: TenantId, principal: &Principal, page: &Page) -> Result<Built> {
    page.validate()?;
    let mut q = Query::select();
    q.column(Asterisk)
        .from(Grants::qualified())
        .and_where(Expr::col(Grants::TenantId).eq(tenant.0))
        .and_where(Expr::col(Grants::PrincipalType).eq(principal.kind.as_str()))
        .and_where(Expr::col(Grants::PrincipalId).eq(principal.id));
    if let Some(after) = page.after {
        q.and_where(Expr::col(Grants::Id).gt(after));
    }
    q.order_by(Grants::Id, Order::Asc).limit(page.limit);
    Ok(sql::build(&q))
}

/// A page of a principal's own grants (not its groups' nor its membership's role).
pub async fn list_grants(
    conn: &mut PgConnection,
    tenant: TenantId,
    principal: &Principal,
    page: &Page,
) -> Result<Vec<Grant>> {
    Ok(sql::query_as::<Grant>(select_grants(tenant, principal, page)?)
        .fetch_all(conn)
        .await?)
}

/// Puts a principal in a group; it then receives the group's grants.
pub async fn add_group_member(
    conn: &mut PgConnection,
    tenant: TenantId,
    group: Uuid,
    member: &Principal,
) -> Result<()> {
    sqlx::query(
        "INSERT INTO rbac.group_members (tenant_id, group_id, principal_type, principal_id)
         VALUES ($1, $2, $3, $4) ON CONFLICT DO NOTHING",
    )
    .bind(tenant.0)
    .bind(group)
    .bind(member.kind.as_str())
    .bind(member.id)
    .execute(conn)
    .await?;
    Ok(())
}

/// Takes a principal out of a group.
pub async fn remove_group_member(
    conn: &mut PgConnection,
    tenant: TenantId,
    group: Uuid,
    member: &Principal,
) -> Result<bool> {
    let done = sqlx::query(
        "DELETE FROM rbac.group_members
          WHERE tenant_id = $1 AND group_id = $2 AND principal_type = $3 AND principal_id = $4",
    )
    .bind(tenant.0)
    .bind(group)
    .bind(member.kind.as_str())
    .bind(member.id)
    .execute(conn)
    .await?;
    Ok(done.rows_affected() > 0)
}
