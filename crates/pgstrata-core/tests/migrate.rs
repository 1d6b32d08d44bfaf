//! The migration engine against real PostgreSQL, with two small modules defined here:
//! `gadgets` and `widgets` (which depends on gadgets).

#![allow(clippy::unwrap_used, clippy::expect_used)]

use pgstrata_core::catalog;
use pgstrata_core::migrate::{MigrateError, MigrationFile, MigrationState, Migrator, Module};
use pgstrata_core::testing::TestDb;
use sqlx::Connection;

static GADGETS: Module = Module {
    name: "gadgets",
    depends_on: &[],
    after_migrate: None,
    column_types: &[],
    migrations: &[
        MigrationFile {
            version: 1,
            name: "init",
            up: "CREATE SCHEMA gadgets;
                 CREATE TABLE gadgets.runs (version int NOT NULL);
                 INSERT INTO gadgets.runs VALUES (1);
                 SELECT pg_sleep(0.05);",
            down: "DROP SCHEMA gadgets CASCADE;",
        },
        MigrationFile {
            version: 2,
            name: "gadgets",
            up: "CREATE TABLE gadgets.gadgets (id int PRIMARY KEY, name text NOT NULL);
                 INSERT INTO gadgets.runs VALUES (2);",
            down: "DROP TABLE gadgets.gadgets; DELETE FROM gadgets.runs WHERE version = 2;",
        },
    ],
    seed: "INSERT INTO gadgets.gadgets VALUES (1, 'one') ON CONFLICT DO NOTHING;",
    maintenance: &[],
};

/// Same versions as GADGETS, but V2's SQL was edited after release.
static GADGETS_TAMPERED: Module = Module {
    name: "gadgets",
    depends_on: &[],
    after_migrate: None,
    column_types: &[],
    migrations: &[
        GADGETS.migrations[0],
        MigrationFile {
            version: 2,
            name: "gadgets",
            up: "CREATE TABLE gadgets.gadgets (id bigint PRIMARY KEY, name text NOT NULL);
                 INSERT INTO gadgets.runs VALUES (2);",
            down: "DROP TABLE gadgets.gadgets;",
        },
    ],
    seed: "",
    maintenance: &[],
};

static WIDGETS: Module = Module {
    name: "widgets",
    depends_on: &["gadgets"],
    after_migrate: None,
    column_types: &[],
    migrations: &[MigrationFile {
        version: 1,
        name: "init",
        up:
            "CREATE SCHEMA widgets;
             CREATE TABLE widgets.widgets (id int PRIMARY KEY, gadget_id int NOT NULL REFERENCES gadgets.gadgets (id));",
        down: "DROP SCHEMA widgets CASCADE;",
    }],
    seed: "INSERT INTO widgets.widgets VALUES (1, 1) ON CONFLICT DO NOTHING;",
    maintenance: &[],
};

static BROKEN: Module = Module {
    name: "broken",
    depends_on: &[],
    after_migrate: None,
    column_types: &[],
    migrations: &[
        MigrationFile {
            version: 1,
            name: "ok",
            up: "CREATE SCHEMA broken;",
            down: "DROP SCHEMA broken CASCADE;",
        },
        MigrationFile {
            version: 2,
            name: "fails",
            up: "CREATE TABLE broken.t (id int); SELECT 1/0;",
            down: "DROP TABLE broken.t;",
        },
    ],
    seed: "",
    maintenance: &[],
};

fn both() -> Migrator {
    // Given in the wrong order on purpose: the migrator sorts by dependency.
    Migrator::new([&WIDGETS, &GADGETS]).unwrap()
}

#[tokio::test]
async fn modules_are_ordered_by_dependency_and_missing_ones_are_named() {
    let names: Vec<_> = both().modules().iter().map(|m| m.name).collect();
    assert_eq!(names, ["gadgets", "widgets"]);
    let err = Migrator::new([&WIDGETS]).unwrap_err();
    assert!(
        matches!(&err, MigrateError::MissingDependency { module, missing } if module == "widgets" && missing == "gadgets")
    );
}

#[tokio::test]
async fn up_down_up_round_trip_leaves_nothing_behind() {
    let db = TestDb::new().await.unwrap();
    let mut conn = db.admin_conn().await.unwrap();
    let empty = catalog::user_objects(&mut conn).await.unwrap();

    let steps = both().up(&mut conn).await.unwrap();
    assert_eq!(steps.len(), 3);
    let first = catalog::snapshot(&mut conn, &["gadgets", "widgets", "pgstrata"])
        .await
        .unwrap();
    assert!(first.contains("relation gadgets.gadgets"));

    // Down to 0 removes both modules, dependents first, the history tables and the lease.
    let reverted = both().down(&mut conn, None, 0).await.unwrap();
    let order: Vec<_> = reverted.iter().map(|s| (s.module, s.version)).collect();
    assert_eq!(order, [("widgets", 1), ("gadgets", 2), ("gadgets", 1)]);
    assert_eq!(catalog::user_objects(&mut conn).await.unwrap(), empty);
    // Down again, with nothing applied, is a no-op.
    assert!(both().down(&mut conn, None, 0).await.unwrap().is_empty());

    both().up(&mut conn).await.unwrap();
    let again = catalog::snapshot(&mut conn, &["gadgets", "widgets", "pgstrata"])
        .await
        .unwrap();
    assert_eq!(first, again);
    conn.close().await.unwrap();
    db.close().await.unwrap();
}

#[tokio::test]
async fn down_to_a_target_reverts_newer_versions_only_and_up_to_a_target_stops_there() {
    let db = TestDb::new().await.unwrap();
    let mut conn = db.admin_conn().await.unwrap();
    let gadgets = Migrator::new([&GADGETS]).unwrap();
    let steps = gadgets.up_to(&mut conn, None, Some(1)).await.unwrap();
    assert_eq!(steps.len(), 1);
    let status = gadgets.status(&mut conn).await.unwrap();
    assert_eq!(
        status.iter().map(|s| s.state).collect::<Vec<_>>(),
        [MigrationState::Applied, MigrationState::Pending]
    );

    gadgets.up(&mut conn).await.unwrap();
    let reverted = gadgets.down(&mut conn, None, 1).await.unwrap();
    assert_eq!(reverted.len(), 1);
    let exists: bool = sqlx::query_scalar("SELECT to_regclass('gadgets.gadgets') IS NOT NULL")
        .fetch_one(&mut conn)
        .await
        .unwrap();
    assert!(!exists, "V2's table must be gone");
    let runs: Vec<i32> = sqlx::query_scalar("SELECT version FROM gadgets.runs")
        .fetch_all(&mut conn)
        .await
        .unwrap();
    assert_eq!(runs, [1]);
    conn.close().await.unwrap();
    db.close().await.unwrap();
}

#[tokio::test]
async fn removing_a_module_others_depend_on_is_refused() {
    let db = TestDb::new().await.unwrap();
    let mut conn = db.admin_conn().await.unwrap();
    both().up(&mut conn).await.unwrap();
    let err = both().down(&mut conn, Some("gadgets"), 0).await.unwrap_err();
    assert!(
        matches!(&err, MigrateError::Dependent { module, dependent } if module == "gadgets" && dependent == "widgets")
    );
    // Nothing was reverted.
    let status = both().status(&mut conn).await.unwrap();
    assert!(status.iter().all(|s| s.state == MigrationState::Applied));
    conn.close().await.unwrap();
    db.close().await.unwrap();
}

#[tokio::test]
async fn eight_concurrent_migrators_apply_each_migration_exactly_once() {
    let db = TestDb::new().await.unwrap();
    let mut tasks = Vec::new();
    for _ in 0..8 {
        let options = db.admin_options();
        tasks.push(tokio::spawn(async move {
            let mut conn = sqlx::PgConnection::connect_with(&options).await.unwrap();
            let steps = both().up(&mut conn).await.unwrap();
            conn.close().await.unwrap();
            steps.len()
        }));
    }
    let mut applied = 0;
    for t in tasks {
        applied += t.await.unwrap();
    }
    assert_eq!(
        applied, 3,
        "three migrations in all, each applied by exactly one migrator"
    );
    let mut conn = db.admin_conn().await.unwrap();
    let runs: Vec<i32> = sqlx::query_scalar("SELECT version FROM gadgets.runs ORDER BY version")
        .fetch_all(&mut conn)
        .await
        .unwrap();
    assert_eq!(runs, [1, 2], "each migration's body ran once");
    let history: i64 = sqlx::query_scalar("SELECT count(*) FROM pgstrata.gadgets_history")
        .fetch_one(&mut conn)
        .await
        .unwrap();
    assert_eq!(history, 2);
    conn.close().await.unwrap();
    db.close().await.unwrap();
}

#[tokio::test]
async fn a_tampered_applied_migration_stops_the_run_and_names_the_file() {
    let db = TestDb::new().await.unwrap();
    let mut conn = db.admin_conn().await.unwrap();
    Migrator::new([&GADGETS]).unwrap().up(&mut conn).await.unwrap();

    let tampered = Migrator::new([&GADGETS_TAMPERED]).unwrap();
    let err = tampered.up(&mut conn).await.unwrap_err();
    match &err {
        MigrateError::Divergent {
            file, applied, current, ..
        } => {
            assert_eq!(file, "migrations/gadgets/V2__gadgets.sql");
            assert_ne!(applied, current);
        }
        other => panic!("expected Divergent, got {other:?}"),
    }
    assert!(err.to_string().contains("migrations/gadgets/V2__gadgets.sql"));
    let status = tampered.status(&mut conn).await.unwrap();
    assert_eq!(status[1].state, MigrationState::Divergent);
    // Down refuses too: the down file may not match what was applied.
    assert!(matches!(
        tampered.down(&mut conn, None, 0).await.unwrap_err(),
        MigrateError::Divergent { .. }
    ));
    conn.close().await.unwrap();
    db.close().await.unwrap();
}

#[tokio::test]
async fn a_failing_migration_names_its_file_and_leaves_nothing_half_applied() {
    let db = TestDb::new().await.unwrap();
    let mut conn = db.admin_conn().await.unwrap();
    let broken = Migrator::new([&BROKEN]).unwrap();
    let err = broken.up(&mut conn).await.unwrap_err();
    match &err {
        MigrateError::Apply { file, source } => {
            assert_eq!(file, "migrations/broken/V2__fails.sql");
            assert_eq!(source.code(), Some("22012"), "division by zero, classified");
        }
        other => panic!("expected Apply, got {other:?}"),
    }
    let exists: bool = sqlx::query_scalar("SELECT to_regclass('broken.t') IS NOT NULL")
        .fetch_one(&mut conn)
        .await
        .unwrap();
    assert!(!exists, "V2's table must have been rolled back with it");
    let status = broken.status(&mut conn).await.unwrap();
    assert_eq!(
        status.iter().map(|s| s.state).collect::<Vec<_>>(),
        [MigrationState::Applied, MigrationState::Pending]
    );
    // The lock was released: another run can start (and fails the same way).
    assert!(broken.up(&mut conn).await.is_err());
    conn.close().await.unwrap();
    db.close().await.unwrap();
}

#[tokio::test]
async fn seed_runs_in_dependency_order() {
    let db = TestDb::new().await.unwrap();
    let mut conn = db.admin_conn().await.unwrap();
    both().up(&mut conn).await.unwrap();
    both().seed(&mut conn).await.unwrap();
    both().seed(&mut conn).await.unwrap();
    let widgets: i64 = sqlx::query_scalar("SELECT count(*) FROM widgets.widgets")
        .fetch_one(&mut conn)
        .await
        .unwrap();
    assert_eq!(widgets, 1);
    conn.close().await.unwrap();
    db.close().await.unwrap();
}

/// Class 6 of the hardening: the migration lock is a lease only the owner can take. A role
/// with no privileges cannot hold it (not through the old advisory key, not by locking its
/// row), and a lease left by a session that died is taken over.
#[tokio::test]
async fn no_other_role_can_hold_the_migration_lock_and_a_dead_holders_lease_is_taken_over() {
    use pgstrata_core::testing::{Owner, ensure_login_role};
    for owner in Owner::BOTH {
        let db = TestDb::migrated_by(&Migrator::new([&GADGETS]).unwrap(), owner)
            .await
            .unwrap();
        let mut admin = db.admin_conn().await.unwrap();
        ensure_login_role(&mut admin, "pgstrata_test_nobody", "").await.unwrap();
        let mut nobody = sqlx::PgConnection::connect_with(&db.login_options("pgstrata_test_nobody"))
            .await
            .unwrap();
        // The key the migrator used to take: held, it no longer stalls anything.
        sqlx::query("SELECT pg_advisory_lock(8099569398821516385)")
            .execute(&mut nobody)
            .await
            .unwrap();
        let mut tx = nobody.begin().await.unwrap();
        let err = sqlx::query("SELECT 1 FROM pgstrata.migration_lock FOR UPDATE")
            .execute(&mut *tx)
            .await
            .unwrap_err();
        assert_eq!(err.as_database_error().unwrap().code().as_deref(), Some("42501"));
        tx.rollback().await.unwrap();

        // A lease whose session is gone (pid reused or not, its application_name differs).
        sqlx::query(
            "UPDATE pgstrata.migration_lock SET holder_pid = pg_backend_pid(), holder = 'pgstrata migrate gone'",
        )
        .execute(&mut admin)
        .await
        .unwrap();
        let mut conn = sqlx::PgConnection::connect_with(&db.owner_options()).await.unwrap();
        let steps = Migrator::new([&GADGETS, &WIDGETS])
            .unwrap()
            .up(&mut conn)
            .await
            .unwrap();
        assert_eq!(steps.len(), 1, "widgets V1 applied while another role held the old key");
        let holder: Option<String> = sqlx::query_scalar("SELECT holder FROM pgstrata.migration_lock")
            .fetch_one(&mut admin)
            .await
            .unwrap();
        assert_eq!(holder, None, "the lease is released after the run");
        let name: String = sqlx::query_scalar("SELECT current_setting('application_name')")
            .fetch_one(&mut conn)
            .await
            .unwrap();
        assert!(!name.starts_with("pgstrata migrate"), "the session's name is restored");
        conn.close().await.unwrap();
        nobody.close().await.unwrap();
        admin.close().await.unwrap();
        db.close().await.unwrap();
    }
}

/// A live holder is waited for, not taken over.
#[tokio::test]
async fn a_live_lease_is_waited_for() {
    let db = TestDb::migrated(&Migrator::new([&GADGETS]).unwrap()).await.unwrap();
    let mut holder = db.admin_conn().await.unwrap();
    sqlx::raw_sql(
        "SELECT set_config('application_name', 'pgstrata migrate held', false);
         UPDATE pgstrata.migration_lock SET holder_pid = pg_backend_pid(), holder = 'pgstrata migrate held'",
    )
    .execute(&mut holder)
    .await
    .unwrap();
    let options = db.admin_options();
    let waiting = tokio::spawn(async move {
        let mut conn = sqlx::PgConnection::connect_with(&options).await.unwrap();
        Migrator::new([&GADGETS, &WIDGETS])
            .unwrap()
            .up(&mut conn)
            .await
            .unwrap()
            .len()
    });
    tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    assert!(!waiting.is_finished(), "the run waits while the lease's session lives");
    let widgets: bool = sqlx::query_scalar("SELECT to_regnamespace('widgets') IS NOT NULL")
        .fetch_one(&mut holder)
        .await
        .unwrap();
    assert!(!widgets);
    holder.close().await.unwrap();
    assert_eq!(waiting.await.unwrap(), 1, "applied once the holder's session ended");
    db.close().await.unwrap();
}

/// Counts its own `after_migrate` calls; depends on nothing.
static HOOKED: Module = Module {
    name: "hooked",
    depends_on: &[],
    after_migrate: Some("INSERT INTO hooked.calls DEFAULT VALUES"),
    column_types: &[],
    migrations: &[MigrationFile {
        version: 1,
        name: "init",
        up: "CREATE SCHEMA hooked; CREATE TABLE hooked.calls (at timestamptz NOT NULL DEFAULT now());",
        down: "DROP SCHEMA hooked CASCADE;",
    }],
    seed: "",
    maintenance: &[],
};

async fn schema_exists(conn: &mut sqlx::PgConnection, name: &str) -> bool {
    sqlx::query_scalar("SELECT to_regnamespace($1) IS NOT NULL")
        .bind(name)
        .fetch_one(conn)
        .await
        .unwrap()
}

#[tokio::test]
async fn down_goes_one_step_by_default_and_asks_before_removing_a_module() {
    use pgstrata_core::migrate::{DownTo, Removal};
    let db = TestDb::new().await.unwrap();
    let mut conn = db.admin_conn().await.unwrap();

    // Nothing applied: a no-op that creates nothing, not even the history schema.
    assert!(
        both()
            .revert(&mut conn, None, DownTo::OneStep, Removal::Refused)
            .await
            .unwrap()
            .is_empty()
    );
    assert!(both().down(&mut conn, None, 0).await.unwrap().is_empty());
    assert!(!schema_exists(&mut conn, "pgstrata").await);

    both().up(&mut conn).await.unwrap();
    assert!(matches!(
        both()
            .revert(&mut conn, None, DownTo::Version(-1), Removal::Allowed)
            .await
            .unwrap_err(),
        MigrateError::InvalidTarget(-1)
    ));
    // The newest migration is widgets V1, whose down drops the schema: refused unconfirmed.
    let err = both()
        .revert(&mut conn, None, DownTo::OneStep, Removal::Refused)
        .await
        .unwrap_err();
    assert!(
        matches!(&err, MigrateError::RemovalNotConfirmed(m) if m == &["widgets"]),
        "{err}"
    );
    assert!(schema_exists(&mut conn, "widgets").await);
    let plan = both().plan_down(&mut conn, None, DownTo::OneStep).await.unwrap();
    assert_eq!(plan.removed, ["widgets"]);
    assert_eq!(plan.steps[0].file, "migrations/widgets/V1__init.down.sql");
    assert_eq!(plan.steps[0].sql, WIDGETS.migrations[0].down);

    // One step of one module: gadgets V2 only, which removes nothing (widgets' FK goes with it).
    sqlx::raw_sql("ALTER TABLE widgets.widgets DROP CONSTRAINT widgets_gadget_id_fkey")
        .execute(&mut conn)
        .await
        .unwrap();
    let steps = both()
        .revert(&mut conn, Some("gadgets"), DownTo::OneStep, Removal::Refused)
        .await
        .unwrap();
    assert_eq!(
        steps.iter().map(|s| (s.module, s.version)).collect::<Vec<_>>(),
        [("gadgets", 2)]
    );
    let steps = both()
        .revert(&mut conn, None, DownTo::OneStep, Removal::Allowed)
        .await
        .unwrap();
    assert_eq!(
        steps.iter().map(|s| (s.module, s.version)).collect::<Vec<_>>(),
        [("widgets", 1)]
    );
    assert!(!schema_exists(&mut conn, "widgets").await);
    conn.close().await.unwrap();
    db.close().await.unwrap();
}

#[tokio::test]
async fn dependents_are_read_from_the_database_not_from_the_migrator() {
    let db = TestDb::new().await.unwrap();
    let mut conn = db.admin_conn().await.unwrap();
    both().up(&mut conn).await.unwrap();
    // A migrator that knows only gadgets still sees widgets applied, and what it depends on.
    let gadgets_only = Migrator::new([&GADGETS]).unwrap();
    let err = gadgets_only.down(&mut conn, Some("gadgets"), 0).await.unwrap_err();
    assert!(
        matches!(&err, MigrateError::Dependent { module, dependent } if module == "gadgets" && dependent == "widgets"),
        "{err}"
    );
    // Without the recorded dependencies, an unknown applied module is not assumed harmless.
    sqlx::raw_sql("COMMENT ON TABLE pgstrata.widgets_history IS NULL")
        .execute(&mut conn)
        .await
        .unwrap();
    let err = gadgets_only.down(&mut conn, None, 0).await.unwrap_err();
    assert!(
        matches!(&err, MigrateError::UnknownApplied { other, .. } if other == "widgets"),
        "{err}"
    );
    // A migrator that knows widgets falls back to its declaration.
    assert!(matches!(
        both().down(&mut conn, Some("gadgets"), 0).await.unwrap_err(),
        MigrateError::Dependent { .. }
    ));
    assert!(schema_exists(&mut conn, "gadgets").await && schema_exists(&mut conn, "widgets").await);
    conn.close().await.unwrap();
    db.close().await.unwrap();
}

#[tokio::test]
async fn a_lock_timeout_names_the_holder_and_progress_is_reported_while_waiting() {
    use pgstrata_core::migrate::{LockHolder, LockWait};
    use std::sync::{Arc, Mutex};
    let db = TestDb::migrated(&Migrator::new([&GADGETS]).unwrap()).await.unwrap();
    let mut holder = db.admin_conn().await.unwrap();
    sqlx::raw_sql(
        "SELECT set_config('application_name', 'pgstrata migrate held', false);
         UPDATE pgstrata.migration_lock
            SET holder_pid = pg_backend_pid(), holder = 'pgstrata migrate held', taken_at = now()",
    )
    .execute(&mut holder)
    .await
    .unwrap();
    let holder_pid: i32 = sqlx::query_scalar("SELECT pg_backend_pid()")
        .fetch_one(&mut holder)
        .await
        .unwrap();
    let reports: Arc<Mutex<Vec<LockHolder>>> = Arc::default();
    let seen = reports.clone();
    let migrator = Migrator::new([&GADGETS, &WIDGETS]).unwrap().with_lock_wait(LockWait {
        timeout: Some(std::time::Duration::from_millis(1500)),
        on_wait: Some(Arc::new(move |h| seen.lock().unwrap().push(h.clone()))),
    });
    let mut conn = db.admin_conn().await.unwrap();
    let started = std::time::Instant::now();
    let err = migrator.up(&mut conn).await.unwrap_err();
    assert!(started.elapsed() >= std::time::Duration::from_millis(1500));
    match &err {
        MigrateError::LockTimeout(h) => {
            assert_eq!(h.pid, Some(holder_pid));
            assert!(h.since.is_some());
        }
        other => panic!("expected LockTimeout, got {other:?}"),
    }
    assert!(
        err.to_string().contains(&format!("held by pid {holder_pid} since ")),
        "{err}"
    );
    let reports = reports.lock().unwrap().clone();
    assert!(!reports.is_empty() && reports[0].pid == Some(holder_pid), "{reports:?}");
    assert!(!schema_exists(&mut conn, "widgets").await, "nothing applied");
    holder.close().await.unwrap();
    conn.close().await.unwrap();
    db.close().await.unwrap();
}

#[tokio::test]
async fn after_migrate_runs_after_every_run_that_applied_something_and_dependencies_come_along() {
    let db = TestDb::new().await.unwrap();
    let mut conn = db.admin_conn().await.unwrap();
    let all = Migrator::new([&GADGETS, &WIDGETS, &HOOKED]).unwrap();
    all.up_to(&mut conn, Some("hooked"), None).await.unwrap();
    let calls = async |conn: &mut sqlx::PgConnection| -> i64 {
        sqlx::query_scalar("SELECT count(*) FROM hooked.calls")
            .fetch_one(conn)
            .await
            .unwrap()
    };
    assert_eq!(calls(&mut conn).await, 1);
    assert!(all.up(&mut conn).await.unwrap().len() == 3, "gadgets and widgets");
    assert_eq!(
        calls(&mut conn).await,
        2,
        "another module's migration runs the hook again"
    );
    assert!(all.up(&mut conn).await.unwrap().is_empty());
    assert_eq!(calls(&mut conn).await, 2, "a run that applied nothing does not");

    // Naming a module brings the modules it depends on.
    let db2 = TestDb::new().await.unwrap();
    let mut conn2 = db2.admin_conn().await.unwrap();
    let steps = both().up_to(&mut conn2, Some("widgets"), None).await.unwrap();
    assert_eq!(
        steps.iter().map(|s| (s.module, s.version)).collect::<Vec<_>>(),
        [("gadgets", 1), ("gadgets", 2), ("widgets", 1)]
    );
    conn.close().await.unwrap();
    conn2.close().await.unwrap();
    db.close().await.unwrap();
    db2.close().await.unwrap();
}

#[tokio::test]
async fn plan_up_lists_the_sql_and_changes_nothing() {
    let db = TestDb::new().await.unwrap();
    let mut conn = db.admin_conn().await.unwrap();
    let all = Migrator::new([&GADGETS, &WIDGETS, &HOOKED]).unwrap();
    let (steps, after) = all.plan_up(&mut conn, Some("widgets"), None).await.unwrap();
    assert_eq!(
        steps
            .iter()
            .map(|s| (s.module, s.version, s.file.as_str()))
            .collect::<Vec<_>>(),
        [
            ("gadgets", 1, "migrations/gadgets/V1__init.sql"),
            ("gadgets", 2, "migrations/gadgets/V2__gadgets.sql"),
            ("widgets", 1, "migrations/widgets/V1__init.sql")
        ]
    );
    assert_eq!(steps[2].sql, WIDGETS.migrations[0].up);
    assert!(after.is_empty(), "hooked is not installed");
    assert!(!schema_exists(&mut conn, "pgstrata").await && !schema_exists(&mut conn, "gadgets").await);
    conn.close().await.unwrap();
    db.close().await.unwrap();
}

/// A database loaded from `schema_sql()` (as psql would load schema.sql) is migrated in the
/// migrator's eyes, and one loaded from an older schema.sql upgrades with `up`.
#[tokio::test]
async fn schema_sql_records_the_history_so_the_migrator_can_upgrade_it() {
    let db = TestDb::new().await.unwrap();
    let mut conn = db.admin_conn().await.unwrap();
    static GADGETS_V1: Module = Module {
        name: "gadgets",
        depends_on: &[],
        after_migrate: None,
        column_types: &[],
        migrations: GADGETS.migrations.split_at(1).0,
        seed: "",
        maintenance: &[],
    };
    pgstrata_core::sql::raw(&GADGETS_V1.schema_sql())
        .execute(&mut conn)
        .await
        .unwrap();
    let gadgets = Migrator::new([&GADGETS]).unwrap();
    let states: Vec<_> = gadgets
        .status(&mut conn)
        .await
        .unwrap()
        .iter()
        .map(|s| s.state)
        .collect();
    assert_eq!(states, [MigrationState::Applied, MigrationState::Pending]);
    let steps = gadgets.up(&mut conn).await.unwrap();
    assert_eq!(steps.iter().map(|s| s.version).collect::<Vec<_>>(), [2]);
    let runs: Vec<i32> = sqlx::query_scalar("SELECT version FROM gadgets.runs ORDER BY 1")
        .fetch_all(&mut conn)
        .await
        .unwrap();
    assert_eq!(runs, [1, 2]);
    // And it can be reverted like any migrated database.
    gadgets.down(&mut conn, None, 0).await.unwrap();
    assert!(!schema_exists(&mut conn, "gadgets").await);
    conn.close().await.unwrap();
    db.close().await.unwrap();
}

#[tokio::test]
async fn a_run_logs_what_it_applied_and_reverted_inside_its_span() {
    use pgstrata_core::migrate::{DownTo, Removal};
    use pgstrata_core::testing::logs::CapturedLogs;
    let db = TestDb::new().await.unwrap();
    let mut conn = db.admin_conn().await.unwrap();
    let migrator = Migrator::new([&GADGETS]).unwrap();
    let (logs, _guard) = CapturedLogs::start();
    migrator.up(&mut conn).await.unwrap();
    let applied = logs.matching(&["applied migration", "module=gadgets", "in pgstrata.migrate{"]);
    assert_eq!(applied.len(), 2, "{:#?}", logs.lines());
    assert!(
        applied[0].starts_with("INFO ") && applied[0].contains("version=1"),
        "{applied:?}"
    );
    migrator
        .revert(&mut conn, None, DownTo::OneStep, Removal::Refused)
        .await
        .unwrap();
    let reverted = logs.matching(&["reverted migration", "version=2"]);
    assert_eq!(reverted.len(), 1, "{:#?}", logs.lines());
    drop(conn);
    db.close().await.unwrap();
}
