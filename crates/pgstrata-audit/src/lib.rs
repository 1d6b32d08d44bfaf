//! pgstrata-audit: an append-only, tamper-evident audit log in PostgreSQL (schema `audit`).
//!
//! - [`capture::enable`] attaches the generic capture trigger to any table: every insert, update
//!   and delete is recorded with its tenant, actor (`app.actor_id`), request (`app.request_id`)
//!   and transaction id; updates keep only the columns that changed. [`capture::record`] writes an
//!   application event (`user.login`) into the same log, in the caller's [`TenantTx`].
//! - The application role can read its tenant's records; only the capture trigger (origin
//!   `capture`) and `audit.record` (origin `event`) write them; nobody changes or removes one
//!   (privileges and triggers); months are dropped whole by [`partitions::maintain`].
//! - Records are written unsealed; [`chain::seal`] (or a [`chain::Sealer`] running every few
//!   seconds until its [`CancellationToken`] is cancelled) chains committed records per tenant
//!   with SHA-256, and [`chain::verify`] returns the first broken link of each tenant's chain.
//! - [`query::list`] answers the three questions (a resource's history, an actor's actions, a
//!   time range) from an index: a [`RecordFilter`] and a keyset
//!   [`Page<Cursor>`](pgstrata_core::Page), in the tenant of the [`TenantTx`], returning the
//!   generated [`Record`] rows.
//!
//! ```no_run
//! use pgstrata_audit::{Cursor, Event, RecordFilter, capture, query};
//! use pgstrata_core::{Page, TenantContext, begin_tenant};
//! # async fn run(pool: sqlx::PgPool, ctx: TenantContext) -> pgstrata_audit::Result<()> {
//! let mut tx = begin_tenant(&pool, &ctx).await?;
//! capture::record(&mut tx, &Event::new("invoice.sent", "invoice").resource_id("42")).await?;
//! let filter = RecordFilter::new().resource("billing.invoices", "42");
//! let mut page = Page::<Cursor>::first(20);
//! loop {
//!     let rows = query::list(&mut tx, &filter, &page).await?;
//!     // ... show rows ...
//!     let Some(next) = page.next(&rows, Cursor::of) else { break };
//!     page = next;
//! }
//! tx.commit().await?;
//! # Ok(()) }
//! ```
//!
//! [`TenantTx`]: pgstrata_core::TenantTx
//! [`CancellationToken`]: pgstrata_core::CancellationToken

pub mod capture;
pub mod chain;
pub mod error;
pub mod functions;
pub mod generated;
pub mod ids;
pub mod partitions;
pub mod query;

pub use capture::{Event, TableOptions};
pub use chain::{BrokenLink, Sealer, SealerConfig, SealerStats, Unsealed};
pub use error::{Error, Result};
pub use generated::Record;
pub use ids::{RecordId, RecordOrigin, TenantSource};
pub use partitions::{MaintainAction, MaintainStep, Partition};
pub use query::{Cursor, RecordFilter};

use pgstrata_core::migrate::{Maintenance, Module};

/// The audit module: schema `audit`, depends on `tenancy` (the tenant and actor context, the
/// application role, and the tables it audits from the start).
pub static MODULE: Module = Module {
    name: "audit",
    depends_on: &["tenancy"],
    // Audits the tables of modules migrated after audit (rbac); every path that migrates runs it.
    after_migrate: Some("SELECT audit.enable_defaults()"),
    column_types: &[
        ("records.id", "crate::ids::RecordId"),
        ("records.actor_id", "pgstrata_core::UserId"),
        ("records.origin", "crate::ids::RecordOrigin"),
        ("seals.record_ids", "Vec<crate::ids::RecordId>"),
        ("seal_locks.after_id", "crate::ids::RecordId"),
        ("tables.tenant_source", "crate::ids::TenantSource"),
    ],
    migrations: &[
        pgstrata_core::migration!("audit", 1, "audit"),
        pgstrata_core::migration!("audit", 2, "hardening"),
        pgstrata_core::migration!("audit", 3, "lighter_writes"),
        pgstrata_core::migration!("audit", 4, "record_comments"),
        pgstrata_core::migration!("audit", 5, "leaner_capture"),
        pgstrata_core::migration!("audit", 6, "cheaper_update"),
        pgstrata_core::migration!("audit", 7, "shared_partitions"),
    ],
    seed: include_str!(concat!(env!("CARGO_MANIFEST_DIR"), "/seed.sql")),
    maintenance: &[
        Maintenance {
            name: "audit.seal",
            schedule: "* * * * *",
            sql: "SELECT audit.seal()",
            role: "pgstrata_worker",
        },
        Maintenance {
            name: "audit.maintain",
            schedule: "23 2 * * *",
            sql: "SELECT * FROM audit.maintain()",
            role: "pgstrata_worker",
        },
    ],
};
