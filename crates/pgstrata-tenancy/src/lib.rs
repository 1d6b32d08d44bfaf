//! pgstrata-tenancy: tenants, users, memberships and invitations, isolated by forced,
//! fail-closed row-level security (Postgres schema `tenancy`).
//!
//! The guarantees live in the SQL ([`MODULE`]'s migrations); this crate is a typed front:
//! pure sea-query builders (`insert`, `select_page`, `update`, ...) that return SQL and bound
//! values, and operations that run them on a `&mut PgConnection` so they join the caller's
//! transaction. Open the transaction with [`pgstrata_core::begin_tenant`].

pub mod error;
mod exec;
pub mod fixtures;
pub mod generated;
pub mod invitations;
pub mod memberships;
pub mod tables;
pub mod tenants;
pub mod users;
mod validate;

pub use error::{Error, Result};

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
    column_types: &[],
    migrations: &[
        pgstrata_core::migration!("tenancy", 1, "tenancy"),
        pgstrata_core::migration!("tenancy", 2, "roles"),
        pgstrata_core::migration!("tenancy", 3, "hardening"),
        pgstrata_core::migration!("tenancy", 4, "membership_keyed_users"),
        pgstrata_core::migration!("tenancy", 5, "tenant_tables"),
    ],
    seed: include_str!(concat!(env!("CARGO_MANIFEST_DIR"), "/seed.sql")),
};
