//! The backend binary: migrate, start the worker and the audit sealer, serve HTTP; on Ctrl-C or
//! SIGTERM stop taking requests, finish the running ones, then stop the background loops.
//!
//! ```text
//! DATABASE_URL=postgres://postgres@127.0.0.1/app JWT_SECRET=$(openssl rand -hex 32) \
//!     cargo run -p pgstrata-example-backend
//! ```
//!
//! `backend token <user-id> <tenant-id> [ttl-seconds]` prints a bearer token signed with
//! `JWT_SECRET`, for trying the API by hand (your login service issues them in production).
//! The variables are listed in `src/config.rs`.

use backend::config::Config;
use backend::webhooks::StripeWebhook;
use backend::{AppState, auth, background, schema};
use sqlx::postgres::PgPoolOptions;
use std::process::ExitCode;
use std::sync::Arc;
use tokio_util::sync::CancellationToken;

type Failure = Box<dyn std::error::Error + Send + Sync>;

#[tokio::main]
async fn main() -> ExitCode {
    backend::init_tracing();
    let args: Vec<String> = std::env::args().skip(1).collect();
    let done = match args.first().map(String::as_str) {
        Some("token") => token(&args[1..]),
        Some(other) => Err(format!(
            "unknown command {other:?}: run without arguments to serve, or `token <user-id> <tenant-id> [ttl-seconds]`"
        )
        .into()),
        None => serve().await,
    };
    match done {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!(error = %e, "backend stopped");
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}

/// Prints a token for a user in a tenant.
fn token(args: &[String]) -> Result<(), Failure> {
    let [user, tenant, rest @ ..] = args else {
        return Err("usage: backend token <user-id> <tenant-id> [ttl-seconds]".into());
    };
    let ttl: i64 = rest
        .first()
        .map_or(Ok(3600), |t| t.parse())
        .map_err(|_| "ttl-seconds must be a number")?;
    let secret = std::env::var("JWT_SECRET").map_err(|_| "set JWT_SECRET")?;
    let key = auth::TokenKey::new(secret.as_bytes())?;
    println!("{}", key.sign(&auth::Claims::new(user.parse()?, tenant.parse()?, ttl)));
    Ok(())
}

async fn serve() -> Result<(), Failure> {
    let config = Config::from_env()?;

    // The owner migrates pgstrata's modules and the application's own, then disconnects: the
    // running service uses only the narrower roles below.
    let owner = PgPoolOptions::new()
        .max_connections(1)
        .connect_with(config.database_url.options())
        .await?;
    let applied = schema::backend()?.migrate(&owner).await?;
    owner.close().await;
    tracing::info!(applied = applied.len(), "migrations done");

    let settings = background::Settings::new()?;
    let app_pool = PgPoolOptions::new()
        .max_connections(16)
        .connect_with(config.app_database_url.options())
        .await?;
    // The worker holds one connection per executor, plus LISTEN, maintenance and heartbeats;
    // the sealer takes one more.
    let worker_connections = u32::try_from(settings.worker.concurrency + 4).unwrap_or(8);
    let worker_pool = PgPoolOptions::new()
        .max_connections(worker_connections)
        .connect_with(config.worker_database_url.options())
        .await?;
    let stripe = match config.stripe {
        Some(verifier) => Some(StripeWebhook {
            pool: PgPoolOptions::new()
                .max_connections(4)
                .connect_with(config.billing_database_url.options())
                .await?,
            verifier,
        }),
        None => {
            tracing::info!("no STRIPE_WEBHOOK_SECRET: /webhooks/stripe is not served");
            None
        }
    };
    let state = AppState {
        pool: app_pool.clone(),
        tokens: Arc::new(config.tokens),
        stripe,
    };

    let http_stop = CancellationToken::new();
    let background_stop = CancellationToken::new();
    let background = tokio::spawn({
        let (http_stop, stop) = (http_stop.clone(), background_stop.clone());
        async move {
            let done = background::run(worker_pool, settings, stop).await;
            // A worker that cannot run (its role lacks pgstrata_worker) stops the service.
            if done.is_err() {
                http_stop.cancel();
            }
            done
        }
    });
    tokio::spawn({
        let http_stop = http_stop.clone();
        async move {
            tokio::select! {
                () = backend::shutdown_signal() => tracing::info!("shutting down: no new requests, then the background loops"),
                () = http_stop.cancelled() => {}
            }
            http_stop.cancel();
        }
    });

    let listener = tokio::net::TcpListener::bind(config.listen).await?;
    tracing::info!(address = %config.listen, "listening");
    axum::serve(listener, backend::app(state))
        .with_graceful_shutdown(http_stop.cancelled_owned())
        .await?;
    background_stop.cancel();
    background.await??;
    app_pool.close().await;
    Ok(())
}
