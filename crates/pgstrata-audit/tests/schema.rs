//! audit's SQL artefacts agree: schema.sql via psql equals the migrations, generated types
//! equal the catalog, and migrating audits the tenancy tables.

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
    let on_disk = std::fs::read_to_string(repo_file("schemas/audit/schema.sql")).unwrap();
    assert!(
        on_disk == pgstrata_audit::MODULE.schema_sql(),
        "schemas/audit/schema.sql is out of date: run `cargo run -p pgstrata-cli -- schema print audit > schemas/audit/schema.sql`"
    );
    let migrator = Migrator::new([&pgstrata_tenancy::MODULE, &pgstrata_audit::MODULE]).unwrap();
    let migrated = TestDb::migrated(&migrator).await.unwrap();
    let copied = TestDb::new().await.unwrap();
    for file in [
        "schemas/tenancy/schema.sql",
        "schemas/audit/schema.sql",
        "schemas/tenancy/seed.sql",
        "schemas/audit/seed.sql",
    ] {
        psql_file(&copied.url().unwrap(), &repo_file(file), true).unwrap();
    }
    let mut a = migrated.admin_conn().await.unwrap();
    let mut b = copied.admin_conn().await.unwrap();
    let from_migrations = catalog::snapshot(&mut a, &["audit", "tenancy"]).await.unwrap();
    assert!(from_migrations.contains("records_resource_idx"));
    assert!(from_migrations.contains("audit_capture"));
    assert_eq!(
        from_migrations,
        catalog::snapshot(&mut b, &["audit", "tenancy"]).await.unwrap()
    );

    // The seeds were audited: tenancy's writes and the login event, sealed into valid chains.
    let sealed: i32 = sqlx::query_scalar("SELECT audit.seal()")
        .fetch_one(&mut b)
        .await
        .unwrap();
    assert!(sealed > 5, "{sealed}");
    let broken: i64 = sqlx::query_scalar("SELECT count(*) FROM audit.verify()")
        .fetch_one(&mut b)
        .await
        .unwrap();
    assert_eq!(broken, 0);
    let audited: Vec<String> = sqlx::query_scalar("SELECT table_name FROM audit.tables ORDER BY 1")
        .fetch_all(&mut a)
        .await
        .unwrap();
    assert_eq!(
        audited,
        ["tenancy.invitations", "tenancy.memberships", "tenancy.tenants"]
    );

    let rendered = codegen::render_schema(&mut a, "audit").await.unwrap();
    assert!(
        rendered == include_str!("../src/generated.rs"),
        "crates/pgstrata-audit/src/generated.rs is out of date: run `cargo run -p pgstrata-cli -- codegen`"
    );
    drop((a, b));
    migrated.close().await.unwrap();
    copied.close().await.unwrap();
}

#[tokio::test]
async fn rbac_tables_are_audited_when_rbac_is_installed() {
    let migrator = Migrator::new([
        &pgstrata_tenancy::MODULE,
        &pgstrata_rbac::MODULE,
        &pgstrata_audit::MODULE,
    ])
    .unwrap();
    let db = TestDb::migrated(&migrator).await.unwrap();
    let audited: Vec<String> =
        sqlx::query_scalar("SELECT table_name FROM audit.tables WHERE table_name LIKE 'rbac.%' ORDER BY 1")
            .fetch_all(&db.admin)
            .await
            .unwrap();
    assert_eq!(
        audited,
        [
            "rbac.grants",
            "rbac.group_members",
            "rbac.role_parents",
            "rbac.role_permissions",
            "rbac.roles"
        ]
    );
    // Down removes audit and its triggers, and leaves the audited tables as they were.
    let mut conn = db.admin_conn().await.unwrap();
    migrator.down(&mut conn, Some("audit"), 0).await.unwrap();
    let triggers: i64 = sqlx::query_scalar("SELECT count(*) FROM pg_trigger WHERE tgname = 'audit_capture'")
        .fetch_one(&mut conn)
        .await
        .unwrap();
    assert_eq!(triggers, 0);
    drop(conn);
    db.close().await.unwrap();
}
