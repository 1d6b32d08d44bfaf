//! Changing who may do what: custom roles, their permissions and parents, grants, groups.
//!
//! Every operation takes the tenant transaction (`&mut TenantTx`, from
//! [`begin_tenant`](pgstrata_core::begin_tenant)) and changes that tenant's rows; its SQL is the
//! pure builder `<operation>_stmt`, beside it. The acting user of the transaction
//! (`app.actor_id`) must hold, tenant-wide and without a deny, what the change confers, for as
//! long as it confers it ([`Error::EscalationRefused`], [`Error::OutlivesActor`]), and what a
//! deny it removes restricts ([`Error::DenyRemovalRefused`]). The database enforces this for
//! every client. Removing something that is not there is [`Error::NotFound`].

use crate::error::{About, Error, Result, from_db};
use crate::generated::{Grant, Grants, GroupMembers, RoleParents, RolePermissions, Roles};
use crate::ids::{Effect, GrantId, GroupId, PrincipalType};
use crate::{Principal, Resource, is_pattern};
use chrono::{DateTime, Utc};
use pgstrata_core::page::Page;
use pgstrata_core::sql::{self, Built};
use pgstrata_core::{TenantId, TenantTx};
use sea_query::{Asterisk, Expr, ExprTrait, OnConflict, Order, Query};
use sqlx::PgConnection;

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

/// Runs a built statement; returns the rows it changed.
async fn execute(conn: &mut PgConnection, built: Built, about: About<'_>) -> Result<u64> {
    sql::query(built)
        .execute(conn)
        .await
        .map(|r| r.rows_affected())
        .map_err(|e| from_db(e.into(), about))
}

/// `Ok` when a statement changed a row, else [`Error::NotFound`] naming it.
fn found(rows: u64, what: &'static str, key: impl FnOnce() -> String) -> Result<()> {
    if rows == 0 {
        Err(Error::NotFound {
            entity: what,
            id: key(),
        })
    } else {
        Ok(())
    }
}

fn role(key: &str) -> About<'_> {
    About {
        role: Some(key),
        parent: None,
    }
}

// ---------------------------------------------------------------------------------------------
// Roles
// ---------------------------------------------------------------------------------------------

/// The SQL of [`create_role`].
///
/// ```
/// use pgstrata_core::TenantId;
/// let t = TenantId("0190b6a0-0000-7000-8000-000000000001".parse().unwrap());
/// let (sql, _) = pgstrata_rbac::admin::create_role_stmt(t, "billing_manager", "Manages billing").unwrap();
/// assert_eq!(sql, r#"INSERT INTO "rbac"."roles" ("tenant_id", "key", "description") VALUES ($1, $2, $3)"#);
/// assert!(pgstrata_rbac::admin::create_role_stmt(t, "Billing", "").is_err());
/// ```
pub fn create_role_stmt(tenant: TenantId, key: &str, description: &str) -> Result<Built> {
    role_key(key)?;
    let stmt = Query::insert()
        .into_table(Roles::qualified())
        .columns([Roles::TenantId, Roles::Key, Roles::Description])
        .values([tenant.into(), key.into(), description.into()])
        .map_err(|_| Error::InvalidRoleKey { key: key.into() })?
        .to_owned();
    Ok(sql::build(&stmt))
}

/// Creates a custom role of the transaction's tenant (its key may not be a system role's:
/// [`Error::RoleExists`]).
pub async fn create_role(tx: &mut TenantTx<'_>, key: &str, description: &str) -> Result<()> {
    let built = create_role_stmt(tx.tenant_id(), key, description)?;
    execute(tx, built, role(key)).await.map(drop)
}

/// The SQL of [`delete_role`].
///
/// ```
/// use pgstrata_core::TenantId;
/// let t = TenantId("0190b6a0-0000-7000-8000-000000000001".parse().unwrap());
/// let (sql, _) = pgstrata_rbac::admin::delete_role_stmt(t, "billing_manager").unwrap();
/// assert_eq!(sql, r#"DELETE FROM "rbac"."roles" WHERE "tenant_id" = $1 AND "key" = $2"#);
/// ```
pub fn delete_role_stmt(tenant: TenantId, key: &str) -> Result<Built> {
    role_key(key)?;
    Ok(sql::build(
        Query::delete()
            .from_table(Roles::qualified())
            .and_where(Expr::col(Roles::TenantId).eq(tenant))
            .and_where(Expr::col(Roles::Key).eq(key)),
    ))
}

/// Deletes a custom role; its grants and the inheritance edges naming it go with it.
/// [`Error::NotFound`] when the tenant has no such custom role (system roles are never deleted).
pub async fn delete_role(tx: &mut TenantTx<'_>, key: &str) -> Result<()> {
    let built = delete_role_stmt(tx.tenant_id(), key)?;
    let rows = execute(tx, built, role(key)).await?;
    found(rows, "role", || key.to_owned())
}

/// The SQL of [`add_role_permission`].
///
/// ```
/// use pgstrata_core::TenantId;
/// use pgstrata_rbac::Effect;
/// let t = TenantId("0190b6a0-0000-7000-8000-000000000001".parse().unwrap());
/// let (sql, _) = pgstrata_rbac::admin::add_role_permission_stmt(t, "auditor", "invoice:delete", Effect::Deny).unwrap();
/// assert_eq!(
///     sql,
///     r#"INSERT INTO "rbac"."role_permissions" ("tenant_id", "role_key", "permission", "effect") VALUES ($1, $2, $3, $4)"#
/// );
/// ```
pub fn add_role_permission_stmt(tenant: TenantId, key: &str, permission: &str, effect: Effect) -> Result<Built> {
    role_key(key)?;
    pattern(permission)?;
    let stmt = Query::insert()
        .into_table(RolePermissions::qualified())
        .columns([
            RolePermissions::TenantId,
            RolePermissions::RoleKey,
            RolePermissions::Permission,
            RolePermissions::Effect,
        ])
        .values([tenant.into(), key.into(), permission.into(), effect.into()])
        .map_err(|_| Error::InvalidPattern {
            pattern: permission.into(),
        })?
        .to_owned();
    Ok(sql::build(&stmt))
}

/// Adds an allow or deny pattern to a custom role ([`Error::UnknownRole`] when the tenant has
/// no such custom role).
pub async fn add_role_permission(tx: &mut TenantTx<'_>, key: &str, permission: &str, effect: Effect) -> Result<()> {
    let built = add_role_permission_stmt(tx.tenant_id(), key, permission, effect)?;
    execute(tx, built, role(key)).await.map(drop)
}

/// The SQL of [`remove_role_permission`].
///
/// ```
/// use pgstrata_core::TenantId;
/// use pgstrata_rbac::Effect;
/// let t = TenantId("0190b6a0-0000-7000-8000-000000000001".parse().unwrap());
/// let (sql, _) = pgstrata_rbac::admin::remove_role_permission_stmt(t, "auditor", "invoice:delete", Effect::Deny).unwrap();
/// assert_eq!(
///     sql,
///     r#"DELETE FROM "rbac"."role_permissions" WHERE "tenant_id" = $1 AND "role_key" = $2 AND "permission" = $3 AND "effect" = $4"#
/// );
/// ```
pub fn remove_role_permission_stmt(tenant: TenantId, key: &str, permission: &str, effect: Effect) -> Result<Built> {
    role_key(key)?;
    pattern(permission)?;
    Ok(sql::build(
        Query::delete()
            .from_table(RolePermissions::qualified())
            .and_where(Expr::col(RolePermissions::TenantId).eq(tenant))
            .and_where(Expr::col(RolePermissions::RoleKey).eq(key))
            .and_where(Expr::col(RolePermissions::Permission).eq(permission))
            .and_where(Expr::col(RolePermissions::Effect).eq(effect)),
    ))
}

/// Removes an allow or deny pattern from a custom role; removing a deny needs the acting user
/// to hold what it denies ([`Error::DenyRemovalRefused`]). [`Error::NotFound`] when the role
/// does not have it.
pub async fn remove_role_permission(tx: &mut TenantTx<'_>, key: &str, permission: &str, effect: Effect) -> Result<()> {
    let built = remove_role_permission_stmt(tx.tenant_id(), key, permission, effect)?;
    let rows = execute(tx, built, role(key)).await?;
    found(rows, "role permission", || format!("{effect} {permission} of {key}"))
}

/// The SQL of [`add_role_parent`].
///
/// ```
/// use pgstrata_core::TenantId;
/// let t = TenantId("0190b6a0-0000-7000-8000-000000000001".parse().unwrap());
/// let (sql, _) = pgstrata_rbac::admin::add_role_parent_stmt(t, "auditor", "viewer").unwrap();
/// assert_eq!(
///     sql,
///     r#"INSERT INTO "rbac"."role_parents" ("tenant_id", "role_key", "parent_key") VALUES ($1, $2, $3)"#
/// );
/// ```
pub fn add_role_parent_stmt(tenant: TenantId, key: &str, parent: &str) -> Result<Built> {
    role_key(key)?;
    role_key(parent)?;
    let stmt = Query::insert()
        .into_table(RoleParents::qualified())
        .columns([RoleParents::TenantId, RoleParents::RoleKey, RoleParents::ParentKey])
        .values([tenant.into(), key.into(), parent.into()])
        .map_err(|_| Error::InvalidRoleKey { key: parent.into() })?
        .to_owned();
    Ok(sql::build(&stmt))
}

/// Makes `key` inherit everything `parent` has; refused with [`Error::Cycle`] if `parent`
/// already inherits from `key`, [`Error::UnknownRole`] if either does not exist.
pub async fn add_role_parent(tx: &mut TenantTx<'_>, key: &str, parent: &str) -> Result<()> {
    let built = add_role_parent_stmt(tx.tenant_id(), key, parent)?;
    let about = About {
        role: Some(key),
        parent: Some(parent),
    };
    execute(tx, built, about).await.map(drop)
}

/// The SQL of [`remove_role_parent`].
///
/// ```
/// use pgstrata_core::TenantId;
/// let t = TenantId("0190b6a0-0000-7000-8000-000000000001".parse().unwrap());
/// let (sql, _) = pgstrata_rbac::admin::remove_role_parent_stmt(t, "auditor", "viewer").unwrap();
/// assert_eq!(
///     sql,
///     r#"DELETE FROM "rbac"."role_parents" WHERE "tenant_id" = $1 AND "role_key" = $2 AND "parent_key" = $3"#
/// );
/// ```
pub fn remove_role_parent_stmt(tenant: TenantId, key: &str, parent: &str) -> Result<Built> {
    role_key(key)?;
    role_key(parent)?;
    Ok(sql::build(
        Query::delete()
            .from_table(RoleParents::qualified())
            .and_where(Expr::col(RoleParents::TenantId).eq(tenant))
            .and_where(Expr::col(RoleParents::RoleKey).eq(key))
            .and_where(Expr::col(RoleParents::ParentKey).eq(parent)),
    ))
}

/// Removes an inheritance edge; refused if `parent` carries denies the acting user does not
/// cover ([`Error::DenyRemovalRefused`]). [`Error::NotFound`] when there is no such edge.
pub async fn remove_role_parent(tx: &mut TenantTx<'_>, key: &str, parent: &str) -> Result<()> {
    let built = remove_role_parent_stmt(tx.tenant_id(), key, parent)?;
    let rows = execute(tx, built, role(key)).await?;
    found(rows, "role parent", || format!("{key} -> {parent}"))
}

// ---------------------------------------------------------------------------------------------
// Grants
// ---------------------------------------------------------------------------------------------

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
    /// Grants a role (system or custom).
    pub fn role(principal: Principal, key: impl Into<String>) -> Self {
        Self {
            principal,
            target: GrantTarget::Role(key.into()),
            resource: None,
            expires_at: None,
        }
    }

    /// Allows a permission pattern.
    pub fn allow(principal: Principal, pattern: impl Into<String>) -> Self {
        Self::permission(principal, pattern, Effect::Allow)
    }

    /// Denies a permission pattern (a deny wins over every allow).
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

    /// The role it grants, if it grants one.
    fn role_key(&self) -> Option<&str> {
        match &self.target {
            GrantTarget::Role(key) => Some(key),
            GrantTarget::Permission { .. } => None,
        }
    }
}

/// The SQL of [`grant`].
///
/// ```
/// use pgstrata_core::TenantId;
/// use pgstrata_rbac::{NewGrant, Principal, Resource};
/// let t = TenantId("0190b6a0-0000-7000-8000-000000000001".parse().unwrap());
/// let user = Principal::user("0190b6a0-0000-7000-8000-000000000002".parse().unwrap());
/// let grant = NewGrant::deny(user, "invoice:delete").on(Resource::new("invoice", "42"));
/// let (sql, _) = pgstrata_rbac::admin::grant_stmt(t, &grant).unwrap();
/// assert_eq!(sql, r#"INSERT INTO "rbac"."grants" ("tenant_id", "principal_type", "principal_id", "role_key", "permission", "effect", "resource_type", "resource_id", "expires_at") VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9) RETURNING *"#);
/// ```
pub fn grant_stmt(tenant: TenantId, grant: &NewGrant) -> Result<Built> {
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
            tenant.into(),
            grant.principal.kind.into(),
            grant.principal.id.into(),
            role.into(),
            permission.into(),
            effect.into(),
            grant.resource.as_ref().map(|r| r.kind.clone()).into(),
            grant.resource.as_ref().map(|r| r.id.clone()).into(),
            grant.expires_at.into(),
        ])
        .map_err(|_| Error::InvalidResource("grant values"))?
        .returning_all()
        .to_owned();
    Ok(sql::build(&stmt))
}

/// Grants a role or a permission; the acting user must hold what it grants. Returns the grant
/// as stored (with its id and `granted_by`).
pub async fn grant(tx: &mut TenantTx<'_>, new: &NewGrant) -> Result<Grant> {
    let built = grant_stmt(tx.tenant_id(), new)?;
    sql::query_as::<Grant>(built).fetch_one(&mut **tx).await.map_err(|e| {
        let about = About {
            role: new.role_key(),
            parent: None,
        };
        from_db(e.into(), about)
    })
}

/// The SQL of [`revoke`].
///
/// ```
/// use pgstrata_core::TenantId;
/// use pgstrata_rbac::GrantId;
/// let t = TenantId("0190b6a0-0000-7000-8000-000000000001".parse().unwrap());
/// let g = GrantId("0190b6a0-0000-7000-8000-000000000003".parse().unwrap());
/// let (sql, _) = pgstrata_rbac::admin::revoke_stmt(t, g);
/// assert_eq!(sql, r#"DELETE FROM "rbac"."grants" WHERE "tenant_id" = $1 AND "id" = $2"#);
/// ```
pub fn revoke_stmt(tenant: TenantId, grant_id: GrantId) -> Built {
    sql::build(
        Query::delete()
            .from_table(Grants::qualified())
            .and_where(Expr::col(Grants::TenantId).eq(tenant))
            .and_where(Expr::col(Grants::Id).eq(grant_id)),
    )
}

/// Revokes a grant; revoking a deny needs the acting user to hold what it denies
/// ([`Error::DenyRemovalRefused`]). [`Error::NotFound`] when the tenant has no such grant.
pub async fn revoke(tx: &mut TenantTx<'_>, grant_id: GrantId) -> Result<()> {
    let built = revoke_stmt(tx.tenant_id(), grant_id);
    let rows = execute(tx, built, About::default()).await?;
    found(rows, "grant", || grant_id.to_string())
}

/// The SQL of [`list_grants`]: a page of a principal's own grants, in id order (served by
/// `grants_principal_idx`).
///
/// ```
/// use pgstrata_core::{Page, TenantId};
/// use pgstrata_rbac::{GrantId, Principal};
/// let t = TenantId("0190b6a0-0000-7000-8000-000000000001".parse().unwrap());
/// let user = Principal::user("0190b6a0-0000-7000-8000-000000000002".parse().unwrap());
/// let after = GrantId("0190b6a0-0000-7000-8000-000000000003".parse().unwrap());
/// let (sql, _) = pgstrata_rbac::admin::list_grants_stmt(t, &user, &Page::after(after, 20)).unwrap();
/// assert_eq!(
///     sql,
///     r#"SELECT * FROM "rbac"."grants" WHERE "tenant_id" = $1 AND "principal_type" = $2 AND "principal_id" = $3 AND "id" > $4 ORDER BY "id" ASC LIMIT $5"#
/// );
/// assert!(pgstrata_rbac::admin::list_grants_stmt(t, &user, &Page::first(0)).is_err());
/// ```
pub fn list_grants_stmt(tenant: TenantId, principal: &Principal, page: &Page<GrantId>) -> Result<Built> {
    page.validate()?;
    let mut q = Query::select();
    q.column(Asterisk)
        .from(Grants::qualified())
        .and_where(Expr::col(Grants::TenantId).eq(tenant))
        .and_where(Expr::col(Grants::PrincipalType).eq(principal.kind))
        .and_where(Expr::col(Grants::PrincipalId).eq(principal.id));
    if let Some(after) = page.after {
        q.and_where(Expr::col(Grants::Id).gt(after));
    }
    q.order_by(Grants::Id, Order::Asc).limit(page.limit);
    Ok(sql::build(&q))
}

/// A page of a principal's own grants (not its groups' nor its membership's role); the next
/// page is `page.next(&rows, |g| g.id)`.
pub async fn list_grants(tx: &mut TenantTx<'_>, principal: &Principal, page: &Page<GrantId>) -> Result<Vec<Grant>> {
    let built = list_grants_stmt(tx.tenant_id(), principal, page)?;
    Ok(sql::query_as::<Grant>(built).fetch_all(&mut **tx).await?)
}

// ---------------------------------------------------------------------------------------------
// Groups
// ---------------------------------------------------------------------------------------------

fn group_member(member: &Principal) -> Result<()> {
    if member.kind == PrincipalType::Group {
        return Err(Error::InvalidMember { kind: member.kind });
    }
    Ok(())
}

/// The SQL of [`add_group_member`] (adding a member twice changes nothing).
///
/// ```
/// use pgstrata_core::TenantId;
/// use pgstrata_rbac::{GroupId, Principal};
/// let t = TenantId("0190b6a0-0000-7000-8000-000000000001".parse().unwrap());
/// let group = GroupId("0190b6a0-0000-7000-8000-000000000004".parse().unwrap());
/// let key = Principal::api_key("0190b6a0-0000-7000-8000-000000000005".parse().unwrap());
/// let (sql, _) = pgstrata_rbac::admin::add_group_member_stmt(t, group, &key).unwrap();
/// assert_eq!(
///     sql,
///     r#"INSERT INTO "rbac"."group_members" ("tenant_id", "group_id", "principal_type", "principal_id") VALUES ($1, $2, $3, $4) ON CONFLICT ("tenant_id", "principal_type", "principal_id", "group_id") DO NOTHING"#
/// );
/// // Groups hold users, API keys and services, not groups.
/// assert!(pgstrata_rbac::admin::add_group_member_stmt(t, group, &Principal::group(group)).is_err());
/// ```
pub fn add_group_member_stmt(tenant: TenantId, group: GroupId, member: &Principal) -> Result<Built> {
    group_member(member)?;
    let stmt = Query::insert()
        .into_table(GroupMembers::qualified())
        .columns([
            GroupMembers::TenantId,
            GroupMembers::GroupId,
            GroupMembers::PrincipalType,
            GroupMembers::PrincipalId,
        ])
        .values([tenant.into(), group.into(), member.kind.into(), member.id.into()])
        .map_err(|_| Error::InvalidMember { kind: member.kind })?
        .on_conflict(
            // group_members_pkey: being a member already is not an error.
            OnConflict::columns([
                GroupMembers::TenantId,
                GroupMembers::PrincipalType,
                GroupMembers::PrincipalId,
                GroupMembers::GroupId,
            ])
            .do_nothing()
            .to_owned(),
        )
        .to_owned();
    Ok(sql::build(&stmt))
}

/// Puts a principal in a group; it then receives the group's grants (the acting user must hold
/// what they confer).
pub async fn add_group_member(tx: &mut TenantTx<'_>, group: GroupId, member: &Principal) -> Result<()> {
    let built = add_group_member_stmt(tx.tenant_id(), group, member)?;
    execute(tx, built, About::default()).await.map(drop)
}

/// The SQL of [`remove_group_member`].
///
/// ```
/// use pgstrata_core::TenantId;
/// use pgstrata_rbac::{GroupId, Principal};
/// let t = TenantId("0190b6a0-0000-7000-8000-000000000001".parse().unwrap());
/// let group = GroupId("0190b6a0-0000-7000-8000-000000000004".parse().unwrap());
/// let key = Principal::api_key("0190b6a0-0000-7000-8000-000000000005".parse().unwrap());
/// let (sql, _) = pgstrata_rbac::admin::remove_group_member_stmt(t, group, &key);
/// assert_eq!(
///     sql,
///     r#"DELETE FROM "rbac"."group_members" WHERE "tenant_id" = $1 AND "group_id" = $2 AND "principal_type" = $3 AND "principal_id" = $4"#
/// );
/// ```
pub fn remove_group_member_stmt(tenant: TenantId, group: GroupId, member: &Principal) -> Built {
    sql::build(
        Query::delete()
            .from_table(GroupMembers::qualified())
            .and_where(Expr::col(GroupMembers::TenantId).eq(tenant))
            .and_where(Expr::col(GroupMembers::GroupId).eq(group))
            .and_where(Expr::col(GroupMembers::PrincipalType).eq(member.kind))
            .and_where(Expr::col(GroupMembers::PrincipalId).eq(member.id)),
    )
}

/// Takes a principal out of a group; leaving lifts the group's denies, which needs the acting
/// user to hold what they deny. [`Error::NotFound`] when it was not a member.
pub async fn remove_group_member(tx: &mut TenantTx<'_>, group: GroupId, member: &Principal) -> Result<()> {
    let built = remove_group_member_stmt(tx.tenant_id(), group, member);
    let rows = execute(tx, built, About::default()).await?;
    found(rows, "group member", || {
        format!("{} {} of group {group}", member.kind, member.id)
    })
}
