//! What every bench shares: the application and worker login roles, cleanup of scratch
//! databases left by crashed runs, and percentile arithmetic.

use pgstrata_core::sql::trusted;
use sqlx::postgres::PgConnectOptions;
use sqlx::{ConnectOptions, Connection, PgConnection, PgPool};
use std::error::Error;
use std::str::FromStr;
use std::time::Duration;

/// Scratch databases are named `pgstrata_bench_<pid>`.
pub const DB_PREFIX: &str = "pgstrata_bench_";
/// The login role the application side of every bench runs as.
pub const APP_ROLE: &str = "pgstrata_bench_app";

/// The LOGIN role the application side runs as: a member of `pgstrata_app` and nothing more.
/// Roles are cluster-wide, so it is kept between runs (as the test suite keeps its own).
pub async fn create_app_role(admin: &PgPool) -> Result<(), sqlx::Error> {
    let mut conn = admin.acquire().await?;
    pgstrata_core::testing::ensure_login_role(&mut conn, APP_ROLE, "IN ROLE pgstrata_app").await
}

/// The login role queue workers run as.
pub const WORKER_ROLE: &str = "pgstrata_bench_worker";

/// The LOGIN role the workers run as: a member of `pgstrata_worker` and nothing more. Kept
/// between runs, like [`APP_ROLE`].
pub async fn create_worker_role(admin: &PgPool) -> Result<(), sqlx::Error> {
    let mut conn = admin.acquire().await?;
    pgstrata_core::testing::ensure_login_role(&mut conn, WORKER_ROLE, "IN ROLE pgstrata_worker").await
}

/// Drops scratch databases of bench runs that crashed (their process is gone). Like the test
/// harness, this assumes the server's earlier clients ran on this machine.
async fn drop_stale_databases(admin: &mut PgConnection) -> Result<(), sqlx::Error> {
    let names: Vec<String> =
        sqlx::query_scalar("SELECT datname FROM pg_database WHERE datname LIKE 'pgstrata\\_bench\\_%'")
            .fetch_all(&mut *admin)
            .await?;
    for name in names {
        let pid = name.trim_start_matches(DB_PREFIX).parse::<u32>().ok();
        if let Some(pid) = pid
            && pid != std::process::id()
            && !std::path::Path::new(&format!("/proc/{pid}")).exists()
        {
            eprintln!("Dropping {name}, left behind by an earlier run.");
            trusted(format!("DROP DATABASE IF EXISTS \"{name}\" WITH (FORCE)"))
                .execute(&mut *admin)
                .await?;
        }
    }
    Ok(())
}

/// Nearest-rank percentile of sorted samples, in milliseconds.
pub fn percentile_ms(sorted: &[Duration], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let rank = ((p * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len());
    sorted[rank - 1].as_secs_f64() * 1000.0
}

pub fn round(x: f64, decimals: i32) -> f64 {
    let f = 10f64.powi(decimals);
    (x * f).round() / f
}

/// A scratch database `pgstrata_bench_<pid>` on the server of a superuser URL.
#[derive(Debug)]
pub struct Scratch {
    admin: PgConnection,
    server: PgConnectOptions,
    name: String,
}

impl Scratch {
    /// Checks the URL is a superuser's (a bench creates a database and loads data past RLS),
    /// drops databases of crashed runs, and creates this run's.
    pub async fn create(url: &str) -> Result<Self, Box<dyn Error>> {
        let server = PgConnectOptions::from_str(url)?;
        let mut admin = server.connect().await?;
        let superuser: bool = sqlx::query_scalar("SELECT rolsuper FROM pg_roles WHERE rolname = current_user")
            .fetch_one(&mut admin)
            .await?;
        if !superuser {
            return Err("the bench needs a superuser URL: it creates a database and loads data past RLS".into());
        }
        drop_stale_databases(&mut admin).await?;
        let name = format!("{DB_PREFIX}{}", std::process::id());
        trusted(format!("CREATE DATABASE \"{name}\""))
            .execute(&mut admin)
            .await?;
        eprintln!("Created database {name}.");
        Ok(Self { admin, server, name })
    }

    /// Connect options for the scratch database as the superuser.
    pub fn options(&self) -> PgConnectOptions {
        self.server.clone().database(&self.name)
    }

    /// Drops the database (unless `keep`), then returns the bench's outcome.
    pub async fn finish(mut self, outcome: Result<(), Box<dyn Error>>, keep: bool) -> Result<(), Box<dyn Error>> {
        if keep {
            self.admin.close().await?;
            outcome?;
            eprintln!("Kept database {} (--keep-database): drop it when done.", self.name);
            return Ok(());
        }
        // FORCE: a failed run may leave connections open.
        let dropped = trusted(format!("DROP DATABASE IF EXISTS \"{}\" WITH (FORCE)", self.name))
            .execute(&mut self.admin)
            .await;
        self.admin.close().await?;
        outcome?;
        dropped?;
        eprintln!("Dropped database {}.", self.name);
        Ok(())
    }
}
