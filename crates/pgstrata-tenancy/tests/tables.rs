//! `tenancy.make_tenant_table()`: the application's own tables get pgstrata's rules, doctor
//! agrees, the policy isolates for real as the application role, and what it cannot fix is
//! reported rather than half-done.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::migrated_db;
use pgstrata_core::DbError;
use pgstrata_core::doctor::{TableKind, check_tables};
use pgstrata_tenancy::tables::{TableStep, make_tenant_table};
use pgstrata_tenancy::{Error, TENANT_ROOT};
use sqlx::{ConnectOptions, Connection, PgConnection};

const TENANT_A: &str = "00000000-0000-7000-8000-00000000000a";
const TENANT_B: &str = "00000000-0000-7000-8000-00000000000b";

const SETUP: &str = r#"
INSERT INTO tenancy.tenants (id, slug, name) VALUES
    ('00000000-0000-7000-8000-00000000000a', 'a', 'A'),
    ('00000000-0000-7000-8000-00000000000b', 'b', 'B');
CREATE SCHEMA app;
GRANT USAGE ON SCHEMA app TO pgstrata_app;
CREATE TABLE app.projects (
    tenant_id uuid NOT NULL REFERENCES tenancy.tenants (id),
    id        uuid NOT NULL DEFAULT gen_random_uuid(),
    name      text NOT NULL,
    PRIMARY KEY (tenant_id, id)
);
GRANT SELECT, INSERT, UPDATE, DELETE ON app.projects TO pgstrata_app;
"#;

fn undone(steps: &[TableStep]) -> Vec<&str> {
    steps.iter().filter(|s| !s.done).map(|s| s.step.as_str()).collect()
}

async fn in_tenant(conn: &mut PgConnection, tenant: &str, sql: &str) -> Result<Vec<String>, sqlx::Error> {
    let mut tx = conn.begin().await?;
    sqlx::query("SELECT set_config('app.tenant_id', $1, true)")
        .bind(tenant)
        .execute(&mut *tx)
        .await?;
    let rows: Vec<String> = pgstrata_core::sql::trusted_as::<(String,)>(sql.to_owned())
        .fetch_all(&mut *tx)
        .await?
        .into_iter()
        .map(|(s,)| s)
        .collect();
    tx.commit().await?;
    Ok(rows)
}

#[tokio::test]
async fn an_application_table_becomes_a_tenant_table_that_doctor_passes_and_that_isolates() {
    let db = migrated_db().await;
    sqlx::raw_sql(SETUP).execute(&db.admin).await.unwrap();
    let mut admin = db.admin_conn().await.unwrap();

    let before = check_tables(&mut admin, &TENANT_ROOT, &["app"]).await.unwrap();
    assert_eq!(before.len(), 1);
    assert_eq!(before[0].kind, TableKind::Tenant);
    assert!(!before[0].ok(), "RLS is off before: {before:?}");

    let steps = make_tenant_table(&mut admin, "app.projects", false).await.unwrap();
    assert!(undone(&steps).is_empty(), "{steps:?}");
    assert!(steps.iter().any(|s| s.step == "policy" && s.done), "{steps:?}");
    let after = check_tables(&mut admin, &TENANT_ROOT, &["app"]).await.unwrap();
    assert!(
        after.iter().all(|r| r.ok()),
        "{}",
        pgstrata_core::doctor::render(&after)
    );

    // Again: nothing new to do, and still one policy.
    let again = make_tenant_table(&mut admin, "app.projects", false).await.unwrap();
    assert!(
        undone(&again).is_empty() && !again.iter().any(|s| s.step == "policy"),
        "{again:?}"
    );
    let policies: i64 = sqlx::query_scalar("SELECT count(*) FROM pg_policy WHERE polrelid = 'app.projects'::regclass")
        .fetch_one(&mut admin)
        .await
        .unwrap();
    assert_eq!(policies, 1);

    // As the application role: each tenant sees and writes only its own rows.
    let mut app = db.app_options().connect().await.unwrap();
    in_tenant(
        &mut app,
        TENANT_A,
        &format!("INSERT INTO app.projects (tenant_id, name) VALUES ('{TENANT_A}', 'alpha') RETURNING name"),
    )
    .await
    .unwrap();
    assert_eq!(
        in_tenant(&mut app, TENANT_A, "SELECT name FROM app.projects")
            .await
            .unwrap(),
        ["alpha"]
    );
    assert!(
        in_tenant(&mut app, TENANT_B, "SELECT name FROM app.projects")
            .await
            .unwrap()
            .is_empty()
    );
    let err = in_tenant(
        &mut app,
        TENANT_B,
        &format!("INSERT INTO app.projects (tenant_id, name) VALUES ('{TENANT_A}', 'planted') RETURNING name"),
    )
    .await
    .unwrap_err();
    assert_eq!(DbError::from(err).code(), Some("42501"));
    db.close().await.unwrap();
}

#[tokio::test]
async fn an_empty_table_gets_its_column_and_what_cannot_be_fixed_is_reported() {
    let db = migrated_db().await;
    sqlx::raw_sql(SETUP).execute(&db.admin).await.unwrap();
    sqlx::raw_sql(
        "CREATE TABLE app.notes (id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY, slug text UNIQUE, body text,
                                 project uuid, project_tenant uuid,
                                 FOREIGN KEY (project_tenant, project) REFERENCES app.projects (tenant_id, id));
         CREATE POLICY open ON app.notes USING (true);",
    )
    .execute(&db.admin)
    .await
    .unwrap();
    let mut admin = db.admin_conn().await.unwrap();

    // Without leave to add the column, nothing changes.
    let steps = make_tenant_table(&mut admin, "app.notes", false).await.unwrap();
    assert_eq!(undone(&steps), ["column"], "{steps:?}");
    let rls: bool = sqlx::query_scalar("SELECT relrowsecurity FROM pg_class WHERE oid = 'app.notes'::regclass")
        .fetch_one(&mut admin)
        .await
        .unwrap();
    assert!(!rls);

    let steps = make_tenant_table(&mut admin, "app.notes", true).await.unwrap();
    assert!(steps.iter().any(|s| s.step == "column" && s.done), "{steps:?}");
    let mut left = undone(&steps);
    left.sort();
    assert_eq!(
        left,
        ["foreign key", "grant", "policy", "primary key", "unique"],
        "{steps:?}"
    );
    let open = steps.iter().find(|s| s.step == "policy" && !s.done).unwrap();
    assert!(open.detail.contains("open"), "{open:?}");

    // The new column defaults to the tenant in context.
    sqlx::raw_sql("DROP POLICY open ON app.notes; GRANT SELECT, INSERT ON app.notes TO pgstrata_app;")
        .execute(&db.admin)
        .await
        .unwrap();
    let mut app = db.app_options().connect().await.unwrap();
    let tenant = in_tenant(
        &mut app,
        TENANT_B,
        "INSERT INTO app.notes (body) VALUES ('hello') RETURNING tenant_id::text",
    )
    .await
    .unwrap();
    assert_eq!(tenant, [TENANT_B]);
    db.close().await.unwrap();
}

#[tokio::test]
async fn bad_targets_are_refused_with_nothing_changed_and_the_request_path_cannot_call_it() {
    let db = migrated_db().await;
    sqlx::raw_sql(SETUP).execute(&db.admin).await.unwrap();
    sqlx::raw_sql("CREATE TABLE app.full (id int PRIMARY KEY); INSERT INTO app.full VALUES (1);")
        .execute(&db.admin)
        .await
        .unwrap();
    let mut admin = db.admin_conn().await.unwrap();

    let rejected = |r: Result<Vec<TableStep>, Error>| match r {
        Err(Error::Db(DbError::Rejected { message, .. })) => message,
        other => panic!("expected Rejected, got {other:?}"),
    };
    let message = rejected(make_tenant_table(&mut admin, "app.full", true).await);
    assert!(message.contains("has rows"), "{message}");
    let columns: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM pg_attribute WHERE attrelid = 'app.full'::regclass AND attname = 'tenant_id'",
    )
    .fetch_one(&mut admin)
    .await
    .unwrap();
    assert_eq!(columns, 0, "nothing is half-written");

    let message = rejected(make_tenant_table(&mut admin, "tenancy.memberships", false).await);
    assert!(message.contains("pgstrata module tenancy"), "{message}");
    match make_tenant_table(&mut admin, "app.nowhere", false).await {
        Err(Error::Db(DbError::NotFound { message })) => assert!(message.contains("app.nowhere"), "{message}"),
        other => panic!("expected NotFound, got {other:?}"),
    }

    let mut app = db.app_options().connect().await.unwrap();
    let err = make_tenant_table(&mut app, "app.projects", false).await.unwrap_err();
    match err {
        Error::Db(db_err) => assert_eq!(db_err.code(), Some("42501"), "{db_err}"),
        other => panic!("expected a refusal, got {other:?}"),
    }
    db.close().await.unwrap();
}
