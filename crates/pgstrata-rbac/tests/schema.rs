//! rbac's SQL artefacts agree: schema.sql via psql equals the migrations, generated types
//! equal the catalog, the seed loads and means what it says.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use pgstrata_core::testing::{TestDb, psql_file};
use pgstrata_core::{catalog, codegen};
use std::path::PathBuf;

fn repo_file(path: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..").join(path)
}

#[tokio::test]
async fn schema_sql_is_current_and_gives_the_catalog_the_migrations_give() {
    let on_disk = std::fs::read_to_string(repo_file("schemas/rbac/schema.sql")).unwrap();
    assert!(
        on_disk == pgstrata_rbac::MODULE.schema_sql(),
        "schemas/rbac/schema.sql is out of date: run `cargo run -p pgstrata-cli -- schema print rbac > schemas/rbac/schema.sql`"
    );
    let migrated = common::migrated_db().await;
    let copied = TestDb::new().await.unwrap();
    let url = copied.url().unwrap();
    for file in ["schemas/tenancy/schema.sql", "schemas/rbac/schema.sql"] {
        psql_file(&url, &repo_file(file), false).unwrap();
    }
    for file in ["schemas/tenancy/seed.sql", "schemas/rbac/seed.sql"] {
        psql_file(&url, &repo_file(file), true).unwrap();
    }
    let mut a = migrated.admin_conn().await.unwrap();
    let mut b = copied.admin_conn().await.unwrap();
    let from_migrations = catalog::snapshot(&mut a, &["rbac"]).await.unwrap();
    assert!(from_migrations.lines().count() > 80);
    assert_eq!(from_migrations, catalog::snapshot(&mut b, &["rbac"]).await.unwrap());

    // The seed's story holds: Bob manages billing but may not delete invoices.
    let decisions: (bool, bool, bool) = sqlx::query_as(
        "SELECT set_config('app.tenant_id', '01900000-0000-7000-8000-00000000ac4e', false) IS NOT NULL
                AND rbac.check('user', '01900000-0000-7000-8000-000000000b0b', 'invoice:refund'),
                rbac.check('user', '01900000-0000-7000-8000-000000000b0b', 'invoice:delete'),
                rbac.check('user', '01900000-0000-7000-8000-00000000da7e', 'project:read', 'project', '7')",
    )
    .fetch_one(&mut b)
    .await
    .unwrap();
    assert_eq!(decisions, (true, false, false));
    drop((a, b));
    migrated.close().await.unwrap();
    copied.close().await.unwrap();
}

#[tokio::test]
async fn generated_types_match_the_catalog() {
    let db = common::migrated_db().await;
    let mut conn = db.admin_conn().await.unwrap();
    let rendered = codegen::render_schema(&mut conn, "rbac").await.unwrap();
    assert!(
        rendered == include_str!("../src/generated.rs"),
        "crates/pgstrata-rbac/src/generated.rs is out of date: run `cargo run -p pgstrata-cli -- codegen`"
    );
    drop(conn);
    db.close().await.unwrap();
}
