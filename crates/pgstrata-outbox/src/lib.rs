//! pgstrata-outbox: a transactional outbox in PostgreSQL (schema `outbox`).
//!
//! - [`publish::publish`] writes a message in the business transaction (the tenant's
//!   [`TenantTx`]), so the message exists exactly when the change it announces committed.
//!   SQL clients call `outbox.publish(aggregate_type, aggregate_id, event_type, payload)`.
//! - A [`Relay`] delivers every committed message to a [`Sink`], at least once, in the order
//!   the transactions of each aggregate committed, with a checkpoint per sink. It reads only
//!   below the xmin horizon of its snapshot, so a transaction that commits late is never
//!   skipped (it waits for it instead: [`health::held_back`] says which transaction holds the
//!   relays back, and for how long).
//! - Several relays of one sink share its 32 hash partitions of the aggregate keys: a round
//!   holds the partitions it takes by their checkpoint rows' locks, so two relays never
//!   deliver one key at once, and a relay that dies releases them at once.
//! - Sinks: any in-process handler implementing [`Sink`] (its writes commit with the
//!   checkpoint: effectively once), `sink::QueueSink` (feature `queue`: one job per message),
//!   `sink::WebhooksSink` (feature `webhooks`: one webhook of the message's tenant per message,
//!   exactly once) and `sink::HttpSink` (feature `http`: each message POSTed to a URL, at least
//!   once, with its id as `Idempotency-Key`).
//! - [`health::cleanup`] deletes messages every sink has passed, after a retention.
//!
//! ```no_run
//! use pgstrata_core::{CancellationToken, TenantContext, begin_tenant};
//! use pgstrata_outbox::{Message, Relay, Sink, SinkError, publish};
//! use sqlx::PgConnection;
//!
//! struct Search;
//! impl Sink for Search {
//!     fn name(&self) -> &str { "search" }
//!     async fn deliver(&self, conn: &mut PgConnection, batch: &[Message]) -> Result<(), SinkError> {
//!         for m in batch {
//!             // Written in the relay's transaction: applied once, with the checkpoint.
//!             sqlx::query("INSERT INTO app.search_docs (id, doc) VALUES ($1, $2)
//!                          ON CONFLICT (id) DO UPDATE SET doc = EXCLUDED.doc")
//!                 .bind(&m.aggregate_id).bind(&m.payload).execute(&mut *conn).await?;
//!         }
//!         Ok(())
//!     }
//! }
//!
//! # async fn run(app: sqlx::PgPool, worker: sqlx::PgPool, ctx: TenantContext) -> pgstrata_outbox::Result<()> {
//! let mut tx = begin_tenant(&app, &ctx).await?;
//! // ... the business change ...
//! publish::publish(&mut tx, "order", "order-42", "OrderPlaced", &serde_json::json!({"total_cents": 2400})).await?;
//! tx.commit().await?;
//!
//! let token = CancellationToken::new();
//! Relay::new(worker, Search).run(token).await?;
//! # Ok(()) }
//! ```
//!
//! [`TenantTx`]: pgstrata_core::TenantTx

pub mod error;
pub mod functions;
pub mod generated;
pub mod health;
pub mod ids;
pub mod publish;
pub mod relay;
pub mod sink;

pub use error::{Error, Result, SinkError};
pub use health::{HeldBack, SinkStats};
pub use ids::MessageId;
pub use relay::{Message, Relay, RelayConfig, Round, Sink};

use pgstrata_core::migrate::{Maintenance, Module};

/// The outbox module: schema `outbox`, depends on `tenancy` (the tenant context and the roles).
pub static MODULE: Module = Module {
    name: "outbox",
    depends_on: &["tenancy"],
    after_migrate: None,
    column_types: &[("messages.id", "crate::ids::MessageId")],
    migrations: &[
        pgstrata_core::migration!("outbox", 1, "outbox"),
        pgstrata_core::migration!("outbox", 2, "relay_and_sinks"),
        pgstrata_core::migration!("outbox", 3, "cheaper_publish"),
    ],
    seed: include_str!(concat!(env!("CARGO_MANIFEST_DIR"), "/seed.sql")),
    maintenance: &[Maintenance {
        name: "outbox.cleanup",
        schedule: "*/5 * * * *",
        sql: "SELECT outbox.cleanup(make_interval(days => 7), 50000)",
        role: "pgstrata_worker",
    }],
};
