//! pgstrata-rbac: roles and permissions with deny-wins resolution (Postgres schema `rbac`).
//!
//! One call answers "may this principal do `invoice:delete` on invoice 42 in this tenant?":
//! [`check`] in Rust, `rbac.check(...)` in SQL and inside RLS policies. Both read the same SQL
//! function, `rbac.resolve`, as do [`explain`], [`effective_permissions`],
//! [`principals_with`] and the escalation guards, so they always agree. The rules, in order:
//!
//! 1. the statements that apply are those of the principal's unexpired grants (its own and its
//!    groups'), tenant-wide or on the very resource asked about, plus its membership's role;
//!    roles expand through their parents;
//! 2. any matching `deny` wins; else any matching `allow` allows; else denied.
//!
//! Patterns are `resource:action`, where either part may be `*`, or `*` alone.
//! Every change of authorization data is guarded in the database (roles, their permissions and
//! parents, groups, grants, and tenancy's membership and invitation roles): the acting user must
//! hold, tenant-wide and without a deny, what the change confers, for as long as it confers it,
//! and must hold what a deny restricts to remove the deny. A tenant's role graph is bounded
//! ([`MAX_ROLE_DEPTH`], [`MAX_ROLES`], [`MAX_ROLE_EDGES`]).
//!
//! The API follows the module contract (ARCHITECTURE.md): every operation takes the tenant
//! transaction that [`begin_tenant`](pgstrata_core::begin_tenant) returns and reads the tenant
//! from it; keys and states are typed ([`GrantId`], [`GroupId`], [`ApiKeyId`], [`ServiceId`],
//! [`PrincipalType`], [`Effect`], in [`ids`]); the SQL of operation `x` is the pure builder
//! `x_stmt`; changing a row that is not there is [`Error::NotFound`]; [`error`] is the one
//! place that reads what the database refused.
//!
//! ```no_run
//! use pgstrata_core::{TenantContext, TenantId, UserId, begin_tenant};
//! use pgstrata_rbac::admin::{self, NewGrant};
//! use pgstrata_rbac::{GroupId, Principal, Resource, check};
//!
//! # async fn run(pool: sqlx::PgPool, tenant: TenantId, admin_user: UserId, bob: UserId) -> pgstrata_rbac::Result<()> {
//! let ctx = TenantContext::tenant(tenant).with_actor(admin_user);
//! let mut tx = begin_tenant(&pool, &ctx).await?;
//! let auditors = GroupId::new();
//! admin::grant(&mut tx, &NewGrant::role(Principal::group(auditors), "viewer")).await?;
//! admin::add_group_member(&mut tx, auditors, &Principal::user(bob)).await?;
//! let invoice = Resource::new("invoice", "42");
//! let may_read = check(&mut tx, &Principal::user(bob), "invoice:read", Some(&invoice)).await?;
//! tx.commit().await?;
//! # let _ = may_read;
//! # Ok(()) }
//! ```

pub mod admin;
pub mod authz;
pub mod error;
pub mod generated;
pub mod ids;
mod pattern;

pub use admin::{GrantTarget, NewGrant};
pub use authz::{Explanation, Statement, check, effective_permissions, explain, principals_with};
pub use error::{Error, Result};
pub use ids::{ApiKeyId, Effect, GrantId, GroupId, PrincipalType, ServiceId};
pub use pattern::{covers, is_pattern, is_permission};

use pgstrata_core::UserId;
use pgstrata_core::migrate::Module;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

/// The rbac module: schema `rbac`, depends on `tenancy`.
pub static MODULE: Module = Module {
    name: "rbac",
    depends_on: &["tenancy"],
    after_migrate: None,
    column_types: &[
        ("grants.id", "crate::ids::GrantId"),
        ("grants.principal_type", "crate::ids::PrincipalType"),
        ("grants.effect", "crate::ids::Effect"),
        ("grants.granted_by", "pgstrata_core::UserId"),
        ("group_members.group_id", "crate::ids::GroupId"),
        ("group_members.principal_type", "crate::ids::PrincipalType"),
        ("role_permissions.effect", "crate::ids::Effect"),
        ("system_role_permissions.effect", "crate::ids::Effect"),
    ],
    migrations: &[
        pgstrata_core::migration!("rbac", 1, "rbac"),
        pgstrata_core::migration!("rbac", 2, "hardening"),
        pgstrata_core::migration!("rbac", 3, "refusal_details"),
        pgstrata_core::migration!("rbac", 4, "check_as_owner"),
    ],
    seed: include_str!(concat!(env!("CARGO_MANIFEST_DIR"), "/seed.sql")),
    maintenance: &[],
};

/// Longest chain of inheritance edges a tenant's role graph may hold (`rbac.max_role_depth()`).
pub const MAX_ROLE_DEPTH: u32 = 32;
/// Custom roles a tenant may define (`rbac.max_roles()`).
pub const MAX_ROLES: u32 = 1000;
/// Inheritance edges a tenant's custom roles may hold (`rbac.max_role_edges()`).
pub const MAX_ROLE_EDGES: u32 = 4000;

/// Someone or something that can hold grants: a kind and the id of that kind. The id is a plain
/// uuid because one column (`principal_id`) holds ids of every kind; build a principal with the
/// typed constructors ([`Principal::user`], [`Principal::group`], ...), so that a user's id is
/// never taken for a group's.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Principal {
    pub kind: PrincipalType,
    pub id: Uuid,
}

impl Principal {
    /// A user (a member of the tenant, or any global user the tenant grants to).
    pub fn user(id: UserId) -> Self {
        Self {
            kind: PrincipalType::User,
            id: id.0,
        }
    }

    /// An API key the application issued.
    pub fn api_key(id: ApiKeyId) -> Self {
        Self {
            kind: PrincipalType::ApiKey,
            id: id.0,
        }
    }

    /// A group: its members receive its grants.
    pub fn group(id: GroupId) -> Self {
        Self {
            kind: PrincipalType::Group,
            id: id.0,
        }
    }

    /// A service principal.
    pub fn service(id: ServiceId) -> Self {
        Self {
            kind: PrincipalType::Service,
            id: id.0,
        }
    }
}

/// One resource a check or a grant is scoped to, e.g. `("invoice", "42")`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Resource {
    pub kind: String,
    pub id: String,
}

impl Resource {
    pub fn new(kind: impl Into<String>, id: impl Into<String>) -> Self {
        Self {
            kind: kind.into(),
            id: id.into(),
        }
    }

    fn validate(&self) -> Result<()> {
        if self.kind.is_empty() || self.id.is_empty() {
            return Err(Error::InvalidResource("resource type and id must not be empty"));
        }
        if self.kind.len() > 63 || self.id.len() > 200 {
            return Err(Error::InvalidResource(
                "resource type is at most 63 bytes, id at most 200",
            ));
        }
        Ok(())
    }
}
