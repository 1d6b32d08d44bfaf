//! pgstrata-webhooks: outbound webhooks a tenant's customers can trust, sent from the business
//! transaction (schema `webhooks`).
//!
//! - [`send()`] stores a message in the caller's [`TenantTx`] and queues it for every enabled
//!   endpoint of the tenant whose event type patterns match and whose payload filter the payload
//!   contains: it goes out if and only if the business write commits. The payload is kept as
//!   the exact bytes given, which are the bytes signed and posted.
//! - [`endpoints`]: a tenant manages its endpoints (URL, patterns with wildcards, payload filter,
//!   custom headers, rate limit, concurrency cap, FIFO flag) and rotates their `whsec_` secrets
//!   (the old key keeps signing during a grace period).
//! - [`dispatch::Dispatcher`] (as `pgstrata_worker`) claims due deliveries with `SKIP LOCKED`
//!   under a lease, signs them per Standard Webhooks ([`signing`]), posts them with a pooled
//!   HTTP client (http, and https with TLS checked against the webpki roots) behind an SSRF
//!   guard, and reports the attempts in batches; retries follow the Standard
//!   Webhooks schedule with jitter, `Retry-After`, 429/503 and 410; an endpoint failing for 5
//!   days is disabled, with a notice.
//! - [`history`]: messages, deliveries, every attempt (status, first 20 kB of the answer,
//!   duration, error, trigger), replay of one message or of the failures since a time, erasure
//!   and retention.
//! - [`signing::Verifier`] verifies requests on the receiving side.
//!
//! ```no_run
//! use pgstrata_core::{TenantContext, begin_tenant};
//! use pgstrata_webhooks::{endpoints, endpoints::NewEndpoint, send};
//! # async fn run(pool: sqlx::PgPool, ctx: TenantContext) -> pgstrata_webhooks::Result<()> {
//! let mut tx = begin_tenant(&pool, &ctx).await?;
//! let endpoint = endpoints::create(&mut tx, &NewEndpoint::new("https://example.com/hooks").event_types(["invoice.*"])).await?;
//! let secret = endpoints::secrets(&mut tx, endpoint.id).await?.remove(0).secret;
//! tx.commit().await?;
//! println!("configure the receiver with {}", secret.expose());
//!
//! // Later, in the transaction that marks the invoice paid:
//! let mut tx = begin_tenant(&pool, &ctx).await?;
//! send(&mut tx, "invoice.paid", br#"{"invoice": "in_42", "amount": 4200}"#).await?;
//! tx.commit().await?;
//! # Ok(()) }
//! ```
//!
//! [`TenantTx`]: pgstrata_core::TenantTx

pub mod dispatch;
pub mod endpoints;
pub mod error;
pub mod functions;
pub mod generated;
pub mod history;
pub mod ids;
pub mod send;
pub mod signing;

pub use dispatch::{AddressPolicy, Dispatcher, DispatcherConfig};
pub use endpoints::NewEndpoint;
pub use error::{Error, Result};
pub use generated::{Attempt, Delivery, Endpoint, Message, Notice};
pub use ids::{
    AttemptId, AttemptState, AttemptTrigger, DeliveryId, DeliveryState, EndpointId, MessageId, NoticeKind, SecretId,
};
pub use send::{NewMessage, send, send_message};
pub use signing::{Secret, Verifier};

use pgstrata_core::migrate::Module;

/// The webhooks module: schema `webhooks`, depends on `tenancy` (the tenant context and roles).
pub static MODULE: Module = Module {
    name: "webhooks",
    depends_on: &["tenancy"],
    after_migrate: None,
    column_types: &[
        ("endpoints.id", "crate::ids::EndpointId"),
        ("secrets.id", "crate::ids::SecretId"),
        ("secrets.endpoint_id", "crate::ids::EndpointId"),
        ("messages.id", "crate::ids::MessageId"),
        ("deliveries.id", "crate::ids::DeliveryId"),
        ("deliveries.message_id", "crate::ids::MessageId"),
        ("deliveries.endpoint_id", "crate::ids::EndpointId"),
        ("deliveries.state", "crate::ids::DeliveryState"),
        ("attempts.id", "crate::ids::AttemptId"),
        ("attempts.delivery_id", "crate::ids::DeliveryId"),
        ("attempts.message_id", "crate::ids::MessageId"),
        ("attempts.endpoint_id", "crate::ids::EndpointId"),
        ("attempts.state", "crate::ids::AttemptState"),
        ("attempts.trigger", "crate::ids::AttemptTrigger"),
        ("notices.endpoint_id", "crate::ids::EndpointId"),
        ("lanes.endpoint_id", "crate::ids::EndpointId"),
        ("notices.kind", "crate::ids::NoticeKind"),
    ],
    migrations: &[
        pgstrata_core::migration!("webhooks", 1, "webhooks"),
        pgstrata_core::migration!("webhooks", 2, "cheaper_dispatch"),
        pgstrata_core::migration!("webhooks", 3, "claim_lanes"),
    ],
    seed: include_str!(concat!(env!("CARGO_MANIFEST_DIR"), "/seed.sql")),
    maintenance: &[pgstrata_core::Maintenance {
        name: "webhooks.prune",
        schedule: "* * * * *",
        sql: "SELECT webhooks.prune(1000)",
        role: "pgstrata_worker",
    }],
};
