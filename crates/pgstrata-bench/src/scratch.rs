//! What every bench shares: the application login role, cleanup of scratch databases left by
//! crashed runs, and percentile arithmetic.

use pgstrata_core::sql::trusted;
use sqlx::{PgConnection, PgPool};
use std::time::Duration;

/// Scratch databases are named `pgstrata_bench_<pid>`.
pub const DB_PREFIX: &str = "pgstrata_bench_";
/// The login role the application side of every bench runs as.
pub const APP_ROLE: &str = "pgstrata_bench_app";

/// The LOGIN role the application side runs as: a member of `pgstrata_app` and nothing more.
/// Roles are cluster-wide, so it is kept between runs (as the test suite keeps its own).
pub async fn create_app_role(admin: &PgPool) -> Result<(), sqlx::Error> {
    sqlx::raw_sql(
        "DO $$ BEGIN
             IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'pgstrata_bench_app') THEN
                 CREATE ROLE pgstrata_bench_app LOGIN NOSUPERUSER NOBYPASSRLS NOCREATEDB NOCREATEROLE
                     PASSWORD 'pgstrata_bench_app' IN ROLE pgstrata_app;
             END IF;
         EXCEPTION WHEN duplicate_object OR unique_violation THEN NULL; END $$",
    )
    .execute(admin)
    .await
    .map(drop)
}

/// Drops scratch databases of bench runs that crashed (their process is gone). Like the test
/// harness, this assumes the server's earlier clients ran on this machine.
pub async fn drop_stale_databases(admin: &mut PgConnection) -> Result<(), sqlx::Error> {
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
