//! pgstrata-eventstore: event-sourced streams in PostgreSQL (schema `eventstore`).
//!
//! - [`append::append`] adds events to a stream in the caller's [`TenantTx`] if the stream is
//!   at the [`ExpectedVersion`] the caller read; a stale writer gets
//!   [`Error::WrongExpectedVersion`] with the current version, and writes nothing. Versions are
//!   gapless per stream; positions are global (with gaps where a transaction aborted).
//!   Appending at any version is the operator's ([`ExpectedVersion::Any`]).
//! - Each event carries its type, data, metadata, the event that caused it and its correlation;
//!   the actor and request id come from the transaction's context.
//! - [`read`] reads a tenant's stream, category or whole log, a page at a time.
//! - [`subscription`] follows the log across tenants as `pgstrata_worker`, after a checkpoint
//!   and below the xmin horizon, so an event whose transaction commits late is never skipped.
//!   A [`subscription::Projection`] folds batches into read models in the transaction that
//!   moves its checkpoint (each event applied once), and [`subscription::rebuild`] replays the
//!   log into a new generation of its read models and swaps it in.
//! - [`snapshot`] keeps the state a fold of a long stream reached at a version (optional): a
//!   load reads the snapshot and the events after it.
//!
//! ```no_run
//! use pgstrata_eventstore::{ExpectedVersion, NewEvent, append, read};
//! use pgstrata_core::{Page, TenantContext, begin_tenant};
//! # async fn run(pool: sqlx::PgPool, ctx: TenantContext) -> pgstrata_eventstore::Result<()> {
//! let mut tx = begin_tenant(&pool, &ctx).await?;
//! append::append(&mut tx, "order-42", ExpectedVersion::NoStream,
//!                &[NewEvent::new("OrderPlaced", serde_json::json!({"items": 2}))]).await?;
//! tx.commit().await?;
//!
//! // Load, decide, append at the version read: a concurrent writer makes this fail, not lose.
//! let mut tx = begin_tenant(&pool, &ctx).await?;
//! let events = read::read_stream(&mut tx, "order-42", &Page::first(1000)).await?;
//! let version = events.last().map_or(0, |e| e.version);
//! append::append(&mut tx, "order-42", ExpectedVersion::Exact(version),
//!                &[NewEvent::new("Delivered", serde_json::json!({}))]).await?;
//! tx.commit().await?;
//! # Ok(()) }
//! ```
//!
//! [`TenantTx`]: pgstrata_core::TenantTx

pub mod append;
pub mod error;
pub mod functions;
pub mod generated;
pub mod ids;
pub mod read;
pub mod snapshot;
pub mod subscription;

pub use append::{Appended, ExpectedVersion, NewEvent};
pub use error::{Error, Result};
pub use generated::{Event, Snapshot, Stream, Subscription};
pub use ids::EventId;

use pgstrata_core::migrate::Module;

/// The eventstore module: schema `eventstore`, depends on `tenancy` (the tenant context and the
/// roles).
pub static MODULE: Module = Module {
    name: "eventstore",
    depends_on: &["tenancy"],
    after_migrate: None,
    column_types: &[
        ("events.event_id", "crate::ids::EventId"),
        ("events.actor_id", "pgstrata_core::UserId"),
    ],
    migrations: &[
        pgstrata_core::migration!("eventstore", 1, "eventstore"),
        pgstrata_core::migration!("eventstore", 2, "snapshots"),
    ],
    seed: include_str!(concat!(env!("CARGO_MANIFEST_DIR"), "/seed.sql")),
    maintenance: &[],
};
