//! pgstrata-tenancy: tenants, users, memberships and invitations, isolated by forced,
//! fail-closed row-level security (Postgres schema `tenancy`).
//!
//! The guarantees live in the SQL ([`MODULE`]'s migrations); this crate is a typed front that
//! follows the module contract (ARCHITECTURE.md):
//!
//! - Operations on a tenant's rows ([`memberships`], [`invitations`], and a tenant's own row:
//!   [`tenants::create`], [`tenants::current`], [`tenants::rename`]) take the
//!   [`TenantTx`](pgstrata_core::TenantTx) that [`pgstrata_core::begin_tenant`] returns and read
//!   the tenant from it. Operations on global rows ([`users`], [`tenants::create_tenant`],
//!   [`invitations::accept`]) and the operator's work across tenants ([`tenants::update_tenant`],
//!   [`tenants::soft_delete`], ...) take a `&mut PgConnection`.
//! - Keys and states are types ([`ids`]): [`pgstrata_core::TenantId`], [`pgstrata_core::UserId`],
//!   [`MembershipId`], [`InvitationId`], [`TenantStatus`], [`InvitationStatus`]; the generated
//!   rows ([`generated`]) carry them.
//! - Reading one row by its key returns `Option`; changing one returns [`Error::NotFound`] when
//!   it is not there.
//! - The SQL of operation `x` is the pure builder `x_stmt`, which returns SQL and bound values.
//!
//! ```no_run
//! # async fn run(pool: sqlx::PgPool) -> Result<(), Box<dyn std::error::Error>> {
//! use pgstrata_core::{Page, TenantContext};
//! use pgstrata_tenancy::{memberships, tenants, users};
//!
//! let mut conn = pool.acquire().await?;
//! let new = users::NewUser { email: "ann@example.com".into(), display_name: "Ann".into() };
//! let ann = users::register(&mut conn, &new).await?;
//! let acme = tenants::create_tenant(&mut conn, &tenants::NewTenant::new("acme", "Acme"), Some(ann.id)).await?;
//!
//! let ctx = TenantContext::tenant(acme.id).with_actor(ann.id);
//! let mut tx = pgstrata_core::begin_tenant(&pool, &ctx).await?;
//! let members = memberships::list(&mut tx, &Default::default(), &Page::first(20)).await?;
//! tx.commit().await?;
//! # Ok(()) }
//! ```

pub mod error;
mod exec;
pub mod fixtures;
pub mod generated;
pub mod ids;
pub mod invitations;
pub mod memberships;
pub mod tables;
pub mod tenants;
pub mod users;
mod validate;

pub use error::{Error, Result};
pub use ids::{InvitationId, InvitationStatus, MembershipId, TenantStatus};

use pgstrata_core::migrate::Module;

/// Where tenants live: the root every other module's tenant tables hang from, and the context
/// functions their policies call. Doctor checks every module's tables against it.
pub const TENANT_ROOT: pgstrata_core::TenantRoot = pgstrata_core::TenantRoot {
    table: "tenancy.tenants",
    current_tenant: "tenancy.current_tenant_id()",
    context_tenant: "tenancy.context_tenant_id()",
};

/// The tenancy module: schema `tenancy`, no dependencies.
pub static MODULE: Module = Module {
    name: "tenancy",
    depends_on: &[],
    after_migrate: None,
    column_types: &[
        ("tenants.id", "pgstrata_core::TenantId"),
        ("tenants.status", "crate::ids::TenantStatus"),
        ("users.id", "pgstrata_core::UserId"),
        ("memberships.id", "crate::ids::MembershipId"),
        ("invitations.id", "crate::ids::InvitationId"),
        ("invitations.status", "crate::ids::InvitationStatus"),
        ("invitations.invited_by", "pgstrata_core::UserId"),
        ("invitations.accepted_by", "pgstrata_core::UserId"),
    ],
    migrations: &[
        pgstrata_core::migration!("tenancy", 1, "tenancy"),
        pgstrata_core::migration!("tenancy", 2, "roles"),
        pgstrata_core::migration!("tenancy", 3, "hardening"),
        pgstrata_core::migration!("tenancy", 4, "membership_keyed_users"),
        pgstrata_core::migration!("tenancy", 5, "tenant_tables"),
        pgstrata_core::migration!("tenancy", 6, "accept_errors"),
        pgstrata_core::migration!("tenancy", 7, "cheaper_context"),
        pgstrata_core::migration!("tenancy", 8, "month_partitions"),
    ],
    seed: include_str!(concat!(env!("CARGO_MANIFEST_DIR"), "/seed.sql")),
    maintenance: &[],
};
