//! pgstrata-core: what every pgstrata module shares.
//!
//! - [`migrate`]: the migration engine (refinery over sqlx, per-module history, migration lease,
//!   down migrations).
//! - [`connect`]: database URL checks, and connect options for transaction poolers.
//! - [`context`]: transaction-local tenant and actor context; [`TenantTx`], the transaction
//!   every tenant-scoped operation takes.
//! - [`error`]: SQLSTATE-to-meaning mapping.
//! - [`ids`]: UUIDv7 and the [`uuid_id!`] macro every module declares its ids with;
//!   [`enums`]: the [`text_enum!`] macro for state columns.
//! - [`sql`]: the one place built SQL is handed to sqlx; the [`sql_functions!`] macro every
//!   module names its SQL functions with.
//! - Tools, each behind its feature so an application's build compiles only what runs:
//!   `doctor` (the catalog checks of `pgstrata doctor`), `codegen` (row types from the catalog),
//!   `testing` (`catalog` snapshots, `server`: a throwaway PostgreSQL from the local binaries,
//!   `testing`: a migrated database per test with the unprivileged login roles), `https` (TLS
//!   over a TCP stream the caller connected, for the outbound HTTPS clients).
//!
//! This crate is an implementation detail of `pgstrata`: its API follows the umbrella crate's
//! version but may change in any release.

#[cfg(feature = "testing")]
pub mod catalog;
#[cfg(feature = "codegen")]
pub mod codegen;
pub mod connect;
pub mod context;
#[cfg(feature = "doctor")]
pub mod doctor;
pub mod enums;
pub mod error;
#[cfg(feature = "https")]
pub mod https;
pub mod ids;
pub mod migrate;
pub mod page;
pub mod partitions;
#[cfg(feature = "testing")]
pub mod server;
pub mod sql;
#[cfg(feature = "testing")]
pub mod testing;

pub use context::{TenantContext, TenantRoot, TenantTx, begin_tenant, set_tenant_context};
pub use error::DbError;
pub use ids::{TenantId, UserId, new_id};
pub use migrate::{Maintenance, MigrateError, Migrator, Module};
pub use page::Page;
/// The one way every background loop (queue worker, audit sealer, ...) is told to stop.
pub use tokio_util::sync::CancellationToken;

/// What [`uuid_id!`], [`text_enum!`] and [`sql_functions!`] expand to need; not part of the API.
#[doc(hidden)]
pub mod __private {
    pub use sea_query;
    pub use serde;
    pub use sqlx;
    pub use uuid::Uuid;
}

#[cfg(test)]
mod portability_tests {
    /// The Windows target cannot be installed on the machines this is built on, so the check is
    /// on the source: every use of a Unix-only API sits under `#[cfg(unix)]` (within three
    /// lines), with a non-Unix alternative beside it.
    #[test]
    fn unix_only_code_is_behind_cfg_unix() {
        let src = concat!(env!("CARGO_MANIFEST_DIR"), "/src");
        let mut files = vec![std::path::PathBuf::from(src)];
        let mut offenders = Vec::new();
        while let Some(path) = files.pop() {
            if path.is_dir() {
                files.extend(
                    std::fs::read_dir(&path)
                        .into_iter()
                        .flatten()
                        .flatten()
                        .map(|e| e.path()),
                );
                continue;
            }
            let text = std::fs::read_to_string(&path).unwrap_or_default();
            let lines: Vec<&str> = text.lines().collect();
            for (i, line) in lines.iter().enumerate() {
                let needle = ["std::os::", "unix::"].concat();
                if line.contains(&needle) && !line.contains("let needle") {
                    let guarded = lines[i.saturating_sub(3)..i].iter().any(|l| l.contains("#[cfg(unix)]"));
                    if !guarded {
                        offenders.push(format!("{}:{}: {}", path.display(), i + 1, line.trim()));
                    }
                }
            }
        }
        assert!(
            offenders.is_empty(),
            "Unix-only code without #[cfg(unix)]:\n{}",
            offenders.join("\n")
        );
    }
}
