//! queue's SQL artefacts agree: schema.sql via psql equals the migrations, generated types
//! equal the catalog.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use pgstrata_core::migrate::Migrator;
use pgstrata_core::testing::Artefacts;

#[tokio::test]
async fn schema_sql_and_generated_types_match_the_migrations() {
    let migrator = Migrator::new([&pgstrata_tenancy::MODULE, &pgstrata_queue::MODULE]).unwrap();
    let compared = Artefacts {
        module: &pgstrata_queue::MODULE,
        psql_files: &[
            ("schemas/tenancy/schema.sql", false),
            ("schemas/queue/schema.sql", false),
            ("schemas/queue/seed.sql", false),
        ],
        schemas: &["queue"],
        generated_rs: include_str!("../src/generated.rs"),
    }
    .check(&migrator)
    .await
    .unwrap();
    assert!(compared.snapshot.contains("jobs_fetch_idx"));
    compared.migrated.close().await.unwrap();
    compared.copied.close().await.unwrap();
}
