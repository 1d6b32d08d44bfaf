//! The backend a B2B SaaS team starts from: an axum application on pgstrata.
//!
//! - **Auth to tenant context.** A bearer token (HS256 JWT: `sub` user, `tenant`, `exp`) gives
//!   the [`http::Caller`]; every request runs in one transaction opened by
//!   `pgstrata::begin_tenant` with the token's tenant and user and the `x-request-id` (made up
//!   when absent, echoed back). Row-level security scopes each statement to the tenant; the
//!   audit log and jobs record the user and request id.
//! - **Permissions.** Each endpoint checks one permission with `rbac::check`; a denial is
//!   answered 403 and logged with the deciding rule from `rbac::explain`.
//! - **Resources.** [`members`], [`invitations`], [`roles`] (pgstrata's tenancy and rbac) and
//!   [`projects`], the application's own versioned table (`ETag` / `If-Match`: 428, 412) whose
//!   audit history is an endpoint.
//! - **Jobs.** E-mails are enqueued in the request's transaction and sent by the worker that
//!   [`background::run`] starts in the same binary, beside the audit sealer.
//! - **Stripe.** [`webhooks`] hands deliveries to `pgstrata::billing::process_webhook`.
//!
//! `src/main.rs` wires it: configuration from the environment ([`config`]), migrations
//! ([`schema::backend`]), the background loops, and the server with graceful shutdown.

pub mod auth;
pub mod background;
pub mod config;
pub mod error;
pub mod http;
pub mod invitations;
pub mod jobs;
pub mod members;
pub mod projects;
pub mod roles;
pub mod schema;
pub mod webhooks;

use axum::Router;
use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::get;
use sqlx::PgPool;
use std::sync::Arc;

/// What every handler shares.
#[derive(Debug, Clone)]
pub struct AppState {
    /// The request path's pool: a login role granted `pgstrata_app` only.
    pub pool: PgPool,
    /// Verifies bearer tokens.
    pub tokens: Arc<auth::TokenKey>,
    /// The Stripe endpoint, when configured.
    pub stripe: Option<webhooks::StripeWebhook>,
}

/// The application: every route, behind the request-id and tracing middleware.
pub fn app(state: AppState) -> Router {
    let stripe = state.stripe.clone();
    let mut router = Router::new()
        .route("/healthz", get(healthz))
        .merge(members::routes())
        .merge(invitations::routes())
        .merge(roles::routes())
        .merge(projects::routes())
        .with_state(state);
    if let Some(hook) = stripe {
        router = router.merge(webhooks::router(hook));
    }
    router.layer(axum::middleware::from_fn(http::trace_requests))
}

/// 200 when the database answers, 503 when it does not.
async fn healthz(State(state): State<AppState>) -> (StatusCode, &'static str) {
    match sqlx::query("SELECT 1").execute(&state.pool).await {
        Ok(_) => (StatusCode::OK, "ok"),
        Err(e) => {
            tracing::warn!(error = %e, "health check: database unavailable");
            (StatusCode::SERVICE_UNAVAILABLE, "database unavailable")
        }
    }
}

/// Logs to stderr, filtered by `RUST_LOG` (default: `info`, sqlx's statements at `warn`).
pub fn init_tracing() {
    use tracing_subscriber::EnvFilter;
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info,sqlx=warn"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .try_init();
}

/// Completes on Ctrl-C or, on Unix, SIGTERM (what container runtimes send).
pub async fn shutdown_signal() {
    let ctrl_c = async {
        if let Err(e) = tokio::signal::ctrl_c().await {
            tracing::error!(error = %e, "cannot listen for Ctrl-C");
            std::future::pending::<()>().await;
        }
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(e) => {
                tracing::error!(error = %e, "cannot listen for SIGTERM");
                std::future::pending::<()>().await;
            }
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {}
        () = terminate => {}
    }
}
