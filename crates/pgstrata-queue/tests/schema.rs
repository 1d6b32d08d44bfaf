//! queue's SQL artefacts agree: schema.sql via psql equals the migrations, generated types
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
    let on_disk = std::fs::read_to_string(repo_file("schemas/queue/schema.sql")).unwrap();
    assert!(
        on_disk == pgstrata_queue::MODULE.schema_sql(),
        "schemas/queue/schema.sql is out of date: run `cargo run -p pgstrata-cli -- schema print queue > schemas/queue/schema.sql`"
    );
    let migrator = Migrator::new([&pgstrata_tenancy::MODULE, &pgstrata_queue::MODULE]).unwrap();
    let migrated = TestDb::migrated(&migrator).await.unwrap();
    let copied = TestDb::new().await.unwrap();
    for file in [
        "schemas/tenancy/schema.sql",
        "schemas/queue/schema.sql",
        "schemas/queue/seed.sql",
    ] {
        psql_file(&copied.url().unwrap(), &repo_file(file), false).unwrap();
    }
    let mut a = migrated.admin_conn().await.unwrap();
    let mut b = copied.admin_conn().await.unwrap();
    let from_migrations = catalog::snapshot(&mut a, &["queue"]).await.unwrap();
    assert!(from_migrations.contains("jobs_fetch_idx"));
    assert_eq!(from_migrations, catalog::snapshot(&mut b, &["queue"]).await.unwrap());
    let rendered = codegen::render_schema(&mut a, "queue").await.unwrap();
    assert!(
        rendered == include_str!("../src/generated.rs"),
        "crates/pgstrata-queue/src/generated.rs is out of date: run `cargo run -p pgstrata-cli -- codegen`"
    );
    drop((a, b));
    migrated.close().await.unwrap();
    copied.close().await.unwrap();
}
