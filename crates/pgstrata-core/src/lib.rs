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
//! - [`sql`]: the one place built SQL is handed to sqlx.
//! - [`catalog`], [`doctor`], [`codegen`]: reading a module's schema back from the catalog.
//! - [`server`]: a throwaway PostgreSQL from the local binaries; [`testing`]: a database per test.
//!
//! This crate is an implementation detail of `pgstrata`: its API follows the umbrella crate's
//! version but may change in any release.

pub mod catalog;
pub mod codegen;
pub mod connect;
pub mod context;
pub mod doctor;
pub mod enums;
pub mod error;
pub mod ids;
pub mod migrate;
pub mod page;
pub mod server;
pub mod sql;
pub mod testing;

pub use context::{TenantContext, TenantTx, begin_tenant, set_tenant_context};
pub use error::DbError;
pub use ids::{TenantId, UserId, new_id};
pub use migrate::{MigrateError, Migrator, Module};
pub use page::Page;
/// The one way every background loop (queue worker, audit sealer, ...) is told to stop.
pub use tokio_util::sync::CancellationToken;

/// What [`uuid_id!`] and [`text_enum!`] expand to need; not part of the API.
#[doc(hidden)]
pub mod __private {
    pub use sea_query;
    pub use serde;
    pub use sqlx;
    pub use uuid::Uuid;
}
