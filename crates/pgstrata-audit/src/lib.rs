//! pgstrata-audit: an append-only, tamper-evident audit log in PostgreSQL (schema `audit`).
//!
//! - [`capture::enable`] attaches the generic capture trigger to any table: every insert, update
//!   and delete is recorded with its tenant, actor (`app.actor_id`), request (`app.request_id`)
//!   and transaction id; updates keep only the columns that changed. [`capture::record`] writes an
//!   application event (`user.login`) into the same log, in the caller's transaction.
//! - The application role can read its tenant's records; only the capture trigger (origin
//!   `capture`) and `audit.record` (origin `event`) write them; nobody changes or removes one
//!   (privileges and triggers); months are dropped whole by [`partitions::maintain`].
//! - Records are written unsealed; [`chain::seal`] (or a [`chain::Sealer`] running every few
//!   seconds) chains committed records per tenant with SHA-256, and [`chain::verify`] returns
//!   the first broken link of each tenant's chain.
//! - [`query::AuditQuery`] answers the three questions (a resource's history, an actor's
//!   actions, a time range) from an index, with keyset pagination.

pub mod capture;
pub mod chain;
pub mod error;
pub mod generated;
pub mod partitions;
pub mod query;

pub use capture::{Event, TableOptions};
pub use chain::{BrokenLink, Sealer, SealerConfig, SealerStats, Unsealed};
pub use error::{Error, Result};
pub use generated::Record;
pub use partitions::{MaintainStep, Partition};
pub use query::{AuditQuery, AuditRecord, Cursor};

use pgstrata_core::migrate::Module;

/// The audit module: schema `audit`, depends on `tenancy` (the tenant and actor context, the
/// application role, and the tables it audits from the start).
pub static MODULE: Module = Module {
    name: "audit",
    depends_on: &["tenancy"],
    // Audits the tables of modules migrated after audit (rbac); every path that migrates runs it.
    after_migrate: Some("SELECT audit.enable_defaults()"),
    column_types: &[],
    migrations: &[
        pgstrata_core::migration!("audit", 1, "audit"),
        pgstrata_core::migration!("audit", 2, "hardening"),
        pgstrata_core::migration!("audit", 3, "lighter_writes"),
    ],
    seed: include_str!(concat!(env!("CARGO_MANIFEST_DIR"), "/seed.sql")),
};
