//! `POST /webhooks/stripe`: hands the raw body and its `Stripe-Signature` header to
//! `pgstrata::billing::process_webhook`, which verifies, claims and applies the event in one
//! statement. No bearer token: Stripe's signature is the authentication.
//!
//! Answers: 200 when the event is recorded (applied, stale, duplicate, ignored, deferred,
//! rejected), 400 when it is not Stripe's (bad signature, malformed), 500 when Stripe should
//! deliver it again (the apply failed and was recorded, or the database is unavailable).
//!
//! The pool logs in as a role granted `pgstrata_billing_sync` and nothing else; the request
//! path's role cannot process webhooks. Customers reach their tenant through the events
//! themselves: create each Stripe customer with `metadata.tenant_id` (or put it on the Checkout
//! Session, as `metadata.tenant_id` or `client_reference_id`).

use axum::Router;
use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, State};
use axum::http::{HeaderMap, StatusCode};
use axum::routing::post;
use pgstrata::DbError;
use pgstrata::billing::{Error, Outcome, Verifier, process_webhook};
use sqlx::PgPool;

/// Stripe's events are a few kilobytes; anything past this is refused with 413 unread.
pub const MAX_BODY: usize = 1 << 20;

/// What the endpoint needs: the sync role's pool and the endpoint secrets.
#[derive(Debug, Clone)]
pub struct StripeWebhook {
    pub pool: PgPool,
    pub verifier: Verifier,
}

/// The route, with its own state, to merge into any router.
pub fn router(hook: StripeWebhook) -> Router {
    Router::new()
        .route("/webhooks/stripe", post(receive))
        .layer(DefaultBodyLimit::max(MAX_BODY))
        .with_state(hook)
}

async fn receive(State(hook): State<StripeWebhook>, headers: HeaderMap, body: Bytes) -> (StatusCode, String) {
    let Some(signature) = headers.get("stripe-signature").and_then(|v| v.to_str().ok()) else {
        return (StatusCode::BAD_REQUEST, "missing Stripe-Signature header".into());
    };
    let mut conn = match hook.pool.acquire().await {
        Ok(conn) => conn,
        Err(e) => {
            tracing::error!(error = %e, "stripe webhook: database unavailable");
            return (StatusCode::INTERNAL_SERVER_ERROR, "database unavailable; retry".into());
        }
    };
    match process_webhook(&mut conn, &hook.verifier, &body, signature).await {
        Ok(p) if p.outcome == Outcome::Failed => {
            tracing::error!(event = %p.event_id, kind = %p.event_type, error = ?p.error, "stripe event failed; recorded for retry");
            (StatusCode::INTERNAL_SERVER_ERROR, "failed; recorded for retry".into())
        }
        Ok(p) => {
            tracing::info!(event = %p.event_id, kind = %p.event_type, outcome = p.outcome.as_str(), tie = p.tie, "stripe event");
            (StatusCode::OK, p.outcome.as_str().into())
        }
        Err(e @ (Error::Signature(_) | Error::Malformed(_))) => {
            tracing::warn!(error = %e, "stripe webhook refused");
            (StatusCode::BAD_REQUEST, e.to_string())
        }
        Err(Error::Db(e)) if e.is_retryable() => (StatusCode::INTERNAL_SERVER_ERROR, "busy; retry".into()),
        Err(Error::Db(DbError::Forbidden { .. })) => {
            tracing::error!("stripe webhook: the pool's role may not process webhooks: grant it pgstrata_billing_sync");
            (
                StatusCode::INTERNAL_SERVER_ERROR,
                "not configured to process webhooks".into(),
            )
        }
        Err(e) => {
            tracing::error!(error = %e, "stripe webhook failed");
            (StatusCode::INTERNAL_SERVER_ERROR, "internal error; retry".into())
        }
    }
}
