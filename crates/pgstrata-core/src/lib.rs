//! pgstrata-core: what every pgstrata module shares.
//!
//! - [`migrate`]: the migration engine (refinery over sqlx, per-module history, migration lease,
//!   down migrations).
//! - [`connect`]: database URL checks, and connect options for transaction poolers.
//! - [`context`]: transaction-local tenant and actor context.
//! - [`error`]: SQLSTATE-to-meaning mapping.
//! - [`ids`]: UUIDv7 and newtype ids.
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
pub mod error;
pub mod ids;
pub mod migrate;
pub mod page;
pub mod server;
pub mod sql;
pub mod testing;

pub use context::{TenantContext, begin_tenant, set_tenant_context};
pub use error::DbError;
pub use ids::{TenantId, UserId, new_id};
pub use migrate::{MigrateError, Migrator, Module};
pub use page::Page;
