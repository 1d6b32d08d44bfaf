//! audit's SQL artefacts agree: schema.sql via psql equals the migrations, generated types
//! equal the catalog, and migrating audits the tenancy tables.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use pgstrata_core::migrate::Migrator;
use pgstrata_core::testing::{Artefacts, TestDb};

#[tokio::test]
async fn schema_sql_and_generated_types_match_the_migrations() {
    let migrator = Migrator::new([&pgstrata_tenancy::MODULE, &pgstrata_audit::MODULE]).unwrap();
    let compared = Artefacts {
        module: &pgstrata_audit::MODULE,
        psql_files: &[
            ("schemas/tenancy/schema.sql", true),
            ("schemas/audit/schema.sql", true),
            ("schemas/tenancy/seed.sql", true),
            ("schemas/audit/seed.sql", true),
        ],
        schemas: &["audit", "tenancy"],
        generated_rs: include_str!("../src/generated.rs"),
    }
    .check(&migrator)
    .await
    .unwrap();
    assert!(compared.snapshot.contains("records_resource_idx"));
    assert!(compared.snapshot.contains("audit_capture"));
    let mut a = compared.migrated.admin_conn().await.unwrap();
    let mut b = compared.copied.admin_conn().await.unwrap();

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
    // The function identifiers the builders call name functions that exist.
    let functions: Vec<String> = sqlx::query_scalar(
        "SELECT n.nspname || '.' || p.proname FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace
          WHERE n.nspname = 'audit'",
    )
    .fetch_all(&mut a)
    .await
    .unwrap();
    for f in pgstrata_audit::functions::AuditFn::ALL {
        let name = f.qualified_name();
        assert!(functions.iter().any(|g| g == name), "{name} is not a function of audit");
    }
    drop((a, b));
    compared.migrated.close().await.unwrap();
    compared.copied.close().await.unwrap();
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
