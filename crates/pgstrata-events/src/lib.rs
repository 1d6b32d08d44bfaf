//! pgstrata-events: product-analytics events in PostgreSQL (schema `events`).
//!
//! - [`ingest::track`] stores one event in the caller's [`TenantTx`]; [`ingest::ingest`] stores
//!   a batch of the tenant's events with COPY, and [`ingest::collect`] a batch spanning tenants
//!   (an ingest service, as `pgstrata_worker`). Events are deduplicated by their client-made
//!   [`EventId`], and a retried batch ([`BatchId`]) writes nothing, so both are safe to retry.
//! - Each event is checked before any SQL ([`NewEvent`]: name, actor, properties size) and by
//!   the database (the time window against the server's clock, the catalog of names when it is
//!   enforced, see [`catalog`]); a bad event fails its whole batch, naming its position.
//! - Daily counts per name and daily unique actors are kept as events are inserted, once per
//!   statement, exactly (no sketch); [`query`] reads them, and raw events where it must (partial
//!   days, funnels, an actor's recent events).
//! - [`retention`]: months are created ahead and dropped whole ([`retention::maintain`]), a
//!   tenant's shorter retention is deleted in the background ([`retention::purge`]), and an
//!   actor's events are erased through the actor index ([`retention::erase_actor`]).
//!
//! ```no_run
//! use pgstrata_events::{BatchId, NewEvent, ingest, query};
//! use pgstrata_core::{TenantContext, begin_tenant};
//! # async fn run(pool: sqlx::PgPool, ctx: TenantContext) -> pgstrata_events::Result<()> {
//! let mut tx = begin_tenant(&pool, &ctx).await?;
//! ingest::track(&mut tx, &NewEvent::new("project.created", "user-42")).await?;
//! tx.commit().await?;
//!
//! // A batch from an API endpoint: the client's batch id makes a retry harmless.
//! let batch = vec![
//!     NewEvent::new("page.viewed", "anon-7").properties(serde_json::json!({"path": "/pricing"})),
//!     NewEvent::new("signup", "anon-7"),
//! ];
//! let mut tx = begin_tenant(&pool, &ctx).await?;
//! let report = ingest::ingest(&mut tx, BatchId::new(), &batch).await?;
//! tx.commit().await?;
//!
//! let mut tx = begin_tenant(&pool, &ctx).await?;
//! let today = chrono::Utc::now().date_naive();
//! let week_ago = today - chrono::Days::new(7);
//! let per_day = query::daily_counts(&mut tx, week_ago, today.succ_opt().unwrap_or(today), &["signup"]).await?;
//! # let _ = (report, per_day);
//! # Ok(()) }
//! ```
//!
//! [`TenantTx`]: pgstrata_core::TenantTx

pub mod catalog;
pub mod error;
pub mod event;
pub mod functions;
pub mod generated;
pub mod ids;
pub mod ingest;
pub mod query;
pub mod retention;

pub use error::{Error, Result};
pub use event::NewEvent;
pub use generated::{DailyCount, DailyUnique, Event};
pub use ids::{BatchId, EventId};
pub use ingest::{IngestOutcome, IngestReport};
pub use query::{Cursor, FunnelStep};
pub use retention::{MaintainAction, MaintainStep, Partition};

use pgstrata_core::migrate::{Maintenance, Module};

/// The events module: schema `events`, depends on `tenancy` (the tenant context and the roles).
pub static MODULE: Module = Module {
    name: "events",
    depends_on: &["tenancy"],
    after_migrate: None,
    column_types: &[
        ("events.event_id", "crate::ids::EventId"),
        ("batches.batch_id", "crate::ids::BatchId"),
    ],
    migrations: &[
        pgstrata_core::migration!("events", 1, "events"),
        pgstrata_core::migration!("events", 2, "shared_partitions"),
    ],
    seed: include_str!(concat!(env!("CARGO_MANIFEST_DIR"), "/seed.sql")),
    maintenance: &[
        Maintenance {
            name: "events.maintain",
            schedule: "41 2 * * *",
            sql: "SELECT * FROM events.maintain()",
            role: "pgstrata_worker",
        },
        Maintenance {
            name: "events.purge",
            schedule: "*/5 * * * *",
            sql: "SELECT events.purge(10000)",
            role: "pgstrata_worker",
        },
    ],
};
