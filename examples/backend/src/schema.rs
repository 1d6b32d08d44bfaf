//! The application's own tables, as one more module beside pgstrata's: `migrations/` of this
//! crate, migrated by the same [`Backend`] in dependency order, under the same lease, with its
//! own history table (`pgstrata.app_history`). Add `V2__...sql` (and its `.down.sql`) here when
//! the application's schema changes; never edit a migration that has run.

use pgstrata::core::migrate::MigrationFile;
use pgstrata::{Backend, MigrateError, Module};

/// The example's schema `app`: projects (versioned, audited) and the e-mails the worker sent.
pub static MODULE: Module = Module {
    name: "app",
    depends_on: &["tenancy", "rbac", "queue", "audit"],
    after_migrate: None,
    migrations: &[MigrationFile {
        version: 1,
        name: "app",
        up: include_str!("../migrations/V1__app.sql"),
        down: include_str!("../migrations/V1__app.down.sql"),
    }],
    seed: "",
};

/// Every module the application uses, in dependency order: pgstrata's tenancy, rbac, queue,
/// audit and billing, then the application's own.
pub fn backend() -> Result<Backend, MigrateError> {
    Backend::builder()
        .with(&pgstrata::billing::MODULE)
        .with(&MODULE)
        .build()
}
