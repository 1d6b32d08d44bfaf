//! The SQL artefacts agree with each other: schema.sql (loaded with psql) equals the
//! migrations, the generated Rust types equal the catalog, seed.sql loads, down removes
//! everything, and doctor both passes and fails when it should.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::{migrated_db, migrator};
use pgstrata_core::testing::{TestDb, psql_file};
use pgstrata_core::{catalog, codegen, doctor};
use std::path::PathBuf;

fn repo_file(path: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..").join(path)
}

#[tokio::test]
async fn schema_sql_is_what_schema_print_renders() {
    let on_disk = std::fs::read_to_string(repo_file("schemas/tenancy/schema.sql")).unwrap();
    assert!(
        on_disk == pgstrata_tenancy::MODULE.schema_sql(),
        "schemas/tenancy/schema.sql is out of date: run `cargo run -p pgstrata-cli -- schema print tenancy > schemas/tenancy/schema.sql`"
    );
}

#[tokio::test]
async fn schema_sql_loaded_with_psql_gives_the_catalog_the_migrations_give() {
    let migrated = migrated_db().await;
    let copied = TestDb::new().await.unwrap();
    psql_file(&copied.url().unwrap(), &repo_file("schemas/tenancy/schema.sql"), false).unwrap();
    psql_file(&copied.url().unwrap(), &repo_file("schemas/tenancy/seed.sql"), true).unwrap();

    let mut a = migrated.admin_conn().await.unwrap();
    let mut b = copied.admin_conn().await.unwrap();
    let from_migrations = catalog::snapshot(&mut a, &["tenancy"]).await.unwrap();
    let from_schema_sql = catalog::snapshot(&mut b, &["tenancy"]).await.unwrap();
    assert!(from_migrations.lines().count() > 50, "the snapshot covers the schema");
    assert_eq!(from_migrations, from_schema_sql);

    let tenants: i64 = sqlx::query_scalar("SELECT count(*) FROM tenancy.tenants")
        .fetch_one(&mut b)
        .await
        .unwrap();
    assert_eq!(tenants, 2, "seed.sql loads two demo tenants");
    drop((a, b));
    migrated.close().await.unwrap();
    copied.close().await.unwrap();
}

#[tokio::test]
async fn generated_types_match_the_catalog() {
    let db = migrated_db().await;
    let mut conn = db.admin_conn().await.unwrap();
    let rendered = codegen::render_all(&mut conn, &pgstrata_tenancy::MODULE).await.unwrap();
    let checked_in = include_str!("../src/generated.rs");
    assert!(
        rendered.rust == checked_in,
        "crates/pgstrata-tenancy/src/generated.rs is out of date: run `cargo run -p pgstrata-cli -- codegen`"
    );
    pgstrata_core::testing::assert_typescript_schemas_current("tenancy", &rendered);
    drop(conn);
    db.close().await.unwrap();
}

#[tokio::test]
async fn seed_loads_twice_and_migrate_down_to_zero_removes_every_object() {
    let db = TestDb::new().await.unwrap();
    let mut conn = db.admin_conn().await.unwrap();
    let empty = catalog::user_objects(&mut conn).await.unwrap();
    let m = migrator();
    m.up(&mut conn).await.unwrap();
    let first = catalog::snapshot(&mut conn, &["tenancy", "pgstrata"]).await.unwrap();
    m.seed(&mut conn).await.unwrap();
    m.seed(&mut conn).await.unwrap();
    let members: i64 = sqlx::query_scalar("SELECT count(*) FROM tenancy.memberships")
        .fetch_one(&mut conn)
        .await
        .unwrap();
    assert_eq!(members, 5);

    m.down(&mut conn, None, 0).await.unwrap();
    assert_eq!(catalog::user_objects(&mut conn).await.unwrap(), empty);
    m.up(&mut conn).await.unwrap();
    assert_eq!(
        catalog::snapshot(&mut conn, &["tenancy", "pgstrata"]).await.unwrap(),
        first
    );
    drop(conn);
    db.close().await.unwrap();
}

#[tokio::test]
async fn doctor_passes_on_the_migrated_schema_and_fails_on_a_weakened_one() {
    let db = migrated_db().await;
    let mut conn = db.admin_conn().await.unwrap();
    let reports = doctor::check_tables(&mut conn, &pgstrata_tenancy::TENANT_ROOT, &["tenancy"])
        .await
        .unwrap();
    assert_eq!(reports.len(), 4);
    assert!(reports.iter().all(|r| r.ok()), "{}", doctor::render(&reports));

    // Each weakening is caught by the check named for it.
    let weakenings: [(&str, &str, &[&str]); 6] = [
        (
            "ALTER TABLE tenancy.memberships NO FORCE ROW LEVEL SECURITY",
            "tenancy.memberships",
            &["forced"],
        ),
        (
            "ALTER TABLE tenancy.invitations DISABLE ROW LEVEL SECURITY",
            "tenancy.invitations",
            &["rls"],
        ),
        (
            "CREATE POLICY open ON tenancy.memberships FOR SELECT USING (true)",
            "tenancy.memberships",
            &["policy"],
        ),
        (
            "CREATE UNIQUE INDEX bad ON tenancy.invitations (email)",
            "tenancy.invitations",
            &["unique"],
        ),
        (
            "CREATE TABLE tenancy.notes (tenant_id uuid NOT NULL, id uuid NOT NULL, membership_id uuid,
                 PRIMARY KEY (id, tenant_id));
             ALTER TABLE tenancy.notes ENABLE ROW LEVEL SECURITY, FORCE ROW LEVEL SECURITY;
             CREATE POLICY p ON tenancy.notes USING (tenant_id = (SELECT tenancy.current_tenant_id()))
                 WITH CHECK (tenant_id = (SELECT tenancy.current_tenant_id()))",
            "tenancy.notes",
            &["pk", "unique"],
        ),
        (
            "CREATE TABLE tenancy.notes (tenant_id uuid NOT NULL, id uuid NOT NULL, owner_tenant uuid, user_id uuid,
                 PRIMARY KEY (tenant_id, id),
                 FOREIGN KEY (owner_tenant, user_id) REFERENCES tenancy.memberships (tenant_id, user_id));
             ALTER TABLE tenancy.notes ENABLE ROW LEVEL SECURITY, FORCE ROW LEVEL SECURITY;
             CREATE POLICY p ON tenancy.notes USING (tenant_id = (SELECT tenancy.current_tenant_id()))
                 WITH CHECK (tenant_id = (SELECT tenancy.current_tenant_id()))",
            "tenancy.notes",
            &["fk"],
        ),
    ];
    for (ddl, table, check) in weakenings {
        let mut tx = sqlx::Connection::begin(&mut conn).await.unwrap();
        sqlx::raw_sql(sqlx::AssertSqlSafe(ddl)).execute(&mut *tx).await.unwrap();
        let reports = doctor::check_tables(&mut tx, &pgstrata_tenancy::TENANT_ROOT, &["tenancy"])
            .await
            .unwrap();
        let report = reports.iter().find(|r| r.table == table).unwrap();
        let failed: Vec<_> = report.checks.iter().filter(|c| !c.ok).map(|c| c.name).collect();
        assert_eq!(failed, check, "after `{ddl}`:\n{}", doctor::render(&reports));
        tx.rollback().await.unwrap();
    }
    drop(conn);
    db.close().await.unwrap();
}

#[tokio::test]
async fn sql_uuid_v7_is_version_7_and_time_ordered() {
    let db = migrated_db().await;
    let ids: Vec<uuid::Uuid> = sqlx::query_scalar("SELECT tenancy.uuid_v7() FROM generate_series(1, 3)")
        .fetch_all(&db.admin)
        .await
        .unwrap();
    assert!(ids.iter().all(|id| id.get_version_num() == 7));
    let now_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64;
    let (secs, nanos) = ids[0].get_timestamp().unwrap().to_unix();
    let id_ms = secs * 1000 + u64::from(nanos) / 1_000_000;
    assert!(now_ms.abs_diff(id_ms) < 60_000, "the timestamp is the current time");
    db.close().await.unwrap();
}
