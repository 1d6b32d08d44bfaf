//! The application's own tables, as one more module beside pgstrata's: `migrations/` of this
//! crate, migrated by the same [`Backend`] in dependency order, under the same lease, with its
//! own history table (`pgstrata.app_history`). Add `V2__...sql` (and its `.down.sql`) here when
//! the application's schema changes; never edit a migration that has run.

use pgstrata::{Backend, MigrateError, Module};

/// The example's schema `app`: projects (versioned, audited) and the e-mails the worker sent.
pub static MODULE: Module = Module {
    name: "app",
    depends_on: &["tenancy", "rbac", "queue", "audit"],
    after_migrate: None,
    column_types: &[],
    // Reads this crate's `migrations/V1__app.sql` and `V1__app.down.sql`.
    migrations: &[pgstrata::core::migration!("app", 1, "app")],
    seed: "",
    maintenance: &[],
};

/// Every module the application uses, in dependency order: pgstrata's tenancy, rbac, queue,
/// audit and billing, then the application's own.
pub fn backend() -> Result<Backend, MigrateError> {
    Backend::builder()
        .with(&pgstrata::billing::MODULE)
        .with(&MODULE)
        .build()
}
