//! A Stripe webhook endpoint on its own: `POST /webhooks/stripe` hands the raw body and its
//! `Stripe-Signature` header to `pgstrata::billing::process_webhook`, which verifies, claims
//! and applies the event in one statement. The route is the backend example's
//! (`examples/backend/src/webhooks.rs`), served here by itself on axum; in a whole application
//! it is one route among the others (see `examples/backend`).
//!
//! Run: `DATABASE_URL=postgres://postgres@127.0.0.1/postgres STRIPE_WEBHOOK_SECRET=whsec_...
//! cargo run -p pgstrata-examples --bin stripe_webhook`, then forward Stripe's events to it,
//! e.g. `stripe listen --forward-to localhost:4242/webhooks/stripe`. While rolling the
//! endpoint secret, give both: `STRIPE_WEBHOOK_SECRET=whsec_new,whsec_old`.
//!
//! In production the endpoint connects as its own LOGIN role that is granted
//! `pgstrata_billing_sync` (and nothing else); the migration owner is only needed to migrate.
//!
//! Customers reach their tenant through the events themselves: create each Stripe customer
//! with `metadata.tenant_id` (or put it on the Checkout Session, as `metadata.tenant_id` or
//! `client_reference_id`). Server code that creates a customer without it links it with
//! `pgstrata::billing::link_customer(&mut conn, customer_id, tenant)` on a connection of this
//! role; the application's request path cannot link.

use backend::webhooks::{StripeWebhook, router};
use pgstrata::Backend;
use pgstrata::billing::Verifier;
use sqlx::PgPool;

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    backend::init_tracing();
    let url = std::env::var("DATABASE_URL").map_err(|_| "set DATABASE_URL")?;
    let secrets = std::env::var("STRIPE_WEBHOOK_SECRET").map_err(|_| "set STRIPE_WEBHOOK_SECRET (whsec_...)")?;
    let verifier = Verifier::new(secrets.split(','))?;
    let pool = PgPool::connect(&url).await?;
    Backend::builder()
        .with(&pgstrata::billing::MODULE)
        .build()?
        .migrate(&pool)
        .await?;

    let app = router(StripeWebhook { pool, verifier }).layer(axum::middleware::from_fn(backend::http::trace_requests));
    let addr = std::env::var("LISTEN").unwrap_or_else(|_| "127.0.0.1:4242".into());
    let listener = tokio::net::TcpListener::bind(&addr).await?;
    println!("listening on http://{addr}/webhooks/stripe");
    axum::serve(listener, app)
        .with_graceful_shutdown(backend::shutdown_signal())
        .await?;
    Ok(())
}
