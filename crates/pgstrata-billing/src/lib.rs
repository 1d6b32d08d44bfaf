//! pgstrata-billing: a mirror of Stripe billing in PostgreSQL (schema `billing`) that no
//! duplicate, late or out-of-order webhook can corrupt, and the access rules read from it.
//!
//! - [`webhook::process_webhook`]: one call per delivery. It verifies the `Stripe-Signature`
//!   header ([`signature::Verifier`]), then `billing.process_event` claims the event id in the
//!   ledger and applies the object in the same transaction, under a per-object guard that lets
//!   only a greater state replace the mirrored one (see the migration for the order).
//! - [`access`]: [`has_feature`] and [`current_plan`] for the tenant of a
//!   [`TenantTx`](pgstrata_core::TenantTx), as the application role under row-level security.
//! - A Stripe customer is linked to a tenant by a signed source (the customer's, or a completed
//!   checkout session's, `metadata.tenant_id` or the session's `client_reference_id`, arriving
//!   through a verified webhook) or by [`link_customer`] on a connection of the sync role; the
//!   application role cannot link.
//!
//! - [`ledger`]: the event ledger page by page, retries and pruning, for operators;
//!   [`backfill`]: the mirror filled from Stripe's list endpoints.
//!
//! Webhook processing runs before any tenant is known: its functions are SECURITY DEFINER and
//! executable only by the role `pgstrata_billing_sync` (see README.md for the setup), so the
//! sync role's operations (webhooks, links, ledger, backfill) take a `&mut PgConnection` of
//! that role, and only the tenant's reads take a `TenantTx`. Stripe's ids stay `String`; the
//! states of the ledger, links, subscriptions, invoices and backfill are enums ([`ids`]), in
//! the generated rows too. The SQL of each operation `x` is built by `x_stmt`.

pub mod access;
pub mod backfill;
pub mod error;
pub mod fixtures;
mod functions;
pub mod generated;
pub mod ids;
pub mod ledger;
pub mod signature;
pub mod webhook;

pub use access::{AccessRules, CurrentPlan, PlanItem, current_plan, has_feature};
pub use error::{Error, MalformedEvent, Result, SignatureError};
pub use ids::{BackfillResource, EventStatus, InvoiceStatus, LinkSource, Outcome, SubscriptionStatus};
pub use signature::Verifier;
pub use webhook::{Processed, Refetch, apply_event, apply_refetched, link_customer, process_webhook, refetch_on_tie};

use pgstrata_core::migrate::{Maintenance, Module};

/// Role whose members may run the webhook path (`billing.process_event` and friends).
pub const SYNC_ROLE: &str = "pgstrata_billing_sync";

/// The billing module: schema `billing`, depends on `tenancy` (tenants, the application role
/// and the tenant context its policies read).
pub static MODULE: Module = Module {
    name: "billing",
    depends_on: &["tenancy"],
    after_migrate: None,
    column_types: &[
        ("events.status", "crate::EventStatus"),
        ("customer_links.source", "crate::LinkSource"),
        ("subscriptions.status", "crate::SubscriptionStatus"),
        ("invoices.status", "crate::InvoiceStatus"),
        ("backfill_cursors.resource", "crate::BackfillResource"),
    ],
    migrations: &[
        pgstrata_core::migration!("billing", 1, "billing"),
        pgstrata_core::migration!("billing", 2, "hardening"),
        pgstrata_core::migration!("billing", 3, "inline_helpers"),
        pgstrata_core::migration!("billing", 4, "current_shapes"),
        pgstrata_core::migration!("billing", 5, "ledger_pages"),
        pgstrata_core::migration!("billing", 6, "webhook_throughput"),
    ],
    seed: include_str!(concat!(env!("CARGO_MANIFEST_DIR"), "/seed.sql")),
    maintenance: &[Maintenance {
        name: "billing.retry_failed",
        schedule: "*/10 * * * *",
        sql: "SELECT billing.retry_failed()",
        role: "pgstrata_billing_sync",
    }],
};
