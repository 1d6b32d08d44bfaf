//! billing's SQL artefacts agree: schema.sql via psql equals the migrations, generated types
//! equal the catalog.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use pgstrata_core::migrate::Migrator;
use pgstrata_core::testing::{Artefacts, TestDb};

#[tokio::test]
async fn schema_sql_and_generated_types_match_the_migrations() {
    let migrator = Migrator::new([&pgstrata_tenancy::MODULE, &pgstrata_billing::MODULE]).unwrap();
    let compared = Artefacts {
        module: &pgstrata_billing::MODULE,
        psql_files: &[
            ("schemas/tenancy/schema.sql", false),
            ("schemas/billing/schema.sql", false),
            ("schemas/billing/seed.sql", false),
        ],
        schemas: &["billing"],
        generated_rs: include_str!("../src/generated.rs"),
    }
    .check(&migrator)
    .await
    .unwrap();
    assert!(compared.snapshot.contains("events_deferred_idx"));
    compared.migrated.close().await.unwrap();
    compared.copied.close().await.unwrap();
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
