//! The umbrella's migrate: a module migrated after audit is audited by the run that migrates it
//! (audit's after-migrate step), and modules bring their dependencies.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use pgstrata::Backend;
use pgstrata_core::testing::TestDb;

async fn audited_rbac_tables(db: &TestDb) -> i64 {
    sqlx::query_scalar("SELECT count(*) FROM audit.tables WHERE table_name LIKE 'rbac.%'")
        .fetch_one(&db.admin)
        .await
        .unwrap()
}

#[tokio::test]
async fn rbac_migrated_after_audit_is_audited_and_a_run_with_nothing_to_apply_changes_nothing() {
    let db = TestDb::new().await.unwrap();
    let first = Backend::builder()
        .with_named("tenancy")
        .unwrap()
        .with_named("audit")
        .unwrap()
        .build()
        .unwrap();
    first.migrate(&db.admin).await.unwrap();
    assert_eq!(audited_rbac_tables(&db).await, 0);

    let all = Backend::builder()
        .with_named("tenancy")
        .unwrap()
        .with_named("audit")
        .unwrap()
        .with_named("rbac")
        .unwrap()
        .build()
        .unwrap();
    let steps = all.migrate(&db.admin).await.unwrap();
    assert!(!steps.is_empty());
    let audited = audited_rbac_tables(&db).await;
    assert!(audited > 0, "rbac's tenant tables are audited");

    assert!(all.migrate(&db.admin).await.unwrap().is_empty());
    assert_eq!(audited_rbac_tables(&db).await, audited);
    db.close().await.unwrap();
}

#[test]
fn a_module_brings_the_modules_it_depends_on() {
    let backend = Backend::builder().with_named("rbac").unwrap().build().unwrap();
    let names: Vec<_> = backend.modules().iter().map(|m| m.name).collect();
    assert_eq!(names, ["tenancy", "rbac"]);
    let backend = Backend::builder()
        .with(&pgstrata::audit::MODULE)
        .with(&pgstrata::rbac::MODULE)
        .build()
        .unwrap();
    let names: Vec<_> = backend.modules().iter().map(|m| m.name).collect();
    assert_eq!(names, ["tenancy", "audit", "rbac"]);
}
