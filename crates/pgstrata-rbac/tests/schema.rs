//! rbac's SQL artefacts agree: schema.sql via psql equals the migrations, generated types
//! equal the catalog, the seed loads and means what it says.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use pgstrata_core::testing::Artefacts;

#[tokio::test]
async fn schema_sql_and_generated_types_match_the_migrations() {
    let compared = Artefacts {
        module: &pgstrata_rbac::MODULE,
        psql_files: &[
            ("schemas/tenancy/schema.sql", false),
            ("schemas/rbac/schema.sql", false),
            ("schemas/tenancy/seed.sql", true),
            ("schemas/rbac/seed.sql", true),
        ],
        schemas: &["rbac"],
        generated_rs: include_str!("../src/generated.rs"),
    }
    .check(&common::migrator())
    .await
    .unwrap();
    assert!(compared.snapshot.lines().count() > 80);
    let mut b = compared.copied.admin_conn().await.unwrap();

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
    drop(b);
    compared.migrated.close().await.unwrap();
    compared.copied.close().await.unwrap();
}
