//! billing's SQL artefacts agree: schema.sql via psql equals the migrations, generated types
//! equal the catalog.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use pgstrata_core::migrate::Migrator;
use pgstrata_core::testing::{TestDb, psql_file};
use pgstrata_core::{catalog, codegen};
use std::path::PathBuf;

fn repo_file(path: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..").join(path)
}

#[tokio::test]
async fn schema_sql_and_generated_types_match_the_migrations() {
    let on_disk = std::fs::read_to_string(repo_file("schemas/billing/schema.sql")).unwrap();
    assert!(
        on_disk == pgstrata_billing::MODULE.schema_sql(),
        "schemas/billing/schema.sql is out of date: run `cargo run -p pgstrata-cli -- schema print billing > schemas/billing/schema.sql`"
    );
    let migrator = Migrator::new([&pgstrata_tenancy::MODULE, &pgstrata_billing::MODULE]).unwrap();
    let migrated = TestDb::migrated(&migrator).await.unwrap();
    let copied = TestDb::new().await.unwrap();
    for file in [
        "schemas/tenancy/schema.sql",
        "schemas/billing/schema.sql",
        "schemas/billing/seed.sql",
    ] {
        psql_file(&copied.url().unwrap(), &repo_file(file), false).unwrap();
    }
    let mut a = migrated.admin_conn().await.unwrap();
    let mut b = copied.admin_conn().await.unwrap();
    let from_migrations = catalog::snapshot(&mut a, &["billing"]).await.unwrap();
    assert!(from_migrations.contains("events_deferred_idx"));
    assert_eq!(from_migrations, catalog::snapshot(&mut b, &["billing"]).await.unwrap());
    let rendered = codegen::render_schema(&mut a, "billing").await.unwrap();
    assert!(
        rendered == include_str!("../src/generated.rs"),
        "crates/pgstrata-billing/src/generated.rs is out of date: run `cargo run -p pgstrata-cli -- codegen`"
    );
    drop((a, b));
    migrated.close().await.unwrap();
    copied.close().await.unwrap();
}

/// The doctor's tenancy rules hold for every billing table: tenant tables have forced RLS,
/// the tenant policy and tenant-led keys; global tables reference no tenant table.
#[tokio::test]
async fn every_billing_table_passes_the_doctor() {
    let migrator = Migrator::new([&pgstrata_tenancy::MODULE, &pgstrata_billing::MODULE]).unwrap();
    let db = TestDb::migrated(&migrator).await.unwrap();
    let mut conn = db.admin_conn().await.unwrap();
    let reports = pgstrata_core::doctor::check_tables(&mut conn, &["billing"])
        .await
        .unwrap();
    let tenant_tables = reports
        .iter()
        .filter(|r| r.kind == pgstrata_core::doctor::TableKind::Tenant)
        .count();
    assert_eq!(tenant_tables, 6, "{}", pgstrata_core::doctor::render(&reports));
    assert!(
        reports.iter().all(|r| r.ok()),
        "{}",
        pgstrata_core::doctor::render(&reports)
    );
    drop(conn);
    db.close().await.unwrap();
}
