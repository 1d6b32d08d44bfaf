//! The modules' periodic maintenance run as queue jobs: the same tasks as their cron.sql files,
//! each once per period however many workers run, and doctor's word on what is overdue.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use pgstrata::maintenance::{self, MaintenanceJob};
use pgstrata::queue::{Worker, WorkerConfig, periodic};
use pgstrata::{Backend, CancellationToken};
use pgstrata_core::testing::{TestDb, WORKER_LOGIN_ROLE};

/// Collapses every run of whitespace to one space.
fn squeeze(s: &str) -> String {
    s.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// Each module's `schemas/<module>/cron.sql` schedules exactly its `Module::maintenance`: the same
/// names, schedules, statements and roles, and nothing else. A module without tasks has no file.
#[test]
fn cron_files_schedule_exactly_each_modules_maintenance() {
    let backend = Backend::all().unwrap();
    for module in backend.modules() {
        let path = format!("{}/../../schemas/{}/cron.sql", env!("CARGO_MANIFEST_DIR"), module.name);
        let Ok(text) = std::fs::read_to_string(&path) else {
            assert!(
                module.maintenance.is_empty(),
                "{} has tasks but no cron.sql",
                module.name
            );
            continue;
        };
        let text = squeeze(&text);
        assert_eq!(
            text.matches("cron.schedule_in_database(").count(),
            module.maintenance.len(),
            "{path} schedules another number of tasks than {}'s Module::maintenance",
            module.name
        );
        for task in module.maintenance {
            let role_variable = match task.role {
                "pgstrata_worker" => "worker",
                "pgstrata_billing_sync" => "sync",
                other => panic!("{}: unexpected role {other}", task.name),
            };
            let line = format!(
                "':{}', '{}', '{}', :'db', :'{role_variable}')",
                task.name, task.schedule, task.sql
            );
            assert!(text.contains(&line), "{path} lacks {line}");
        }
    }
}

/// Two workers with every task of the worker role: each task's period is enqueued once, every job
/// completes (the audit record gets sealed), and doctor, which named every task as never run,
/// names none afterwards, then names a task whose last run is three periods old.
#[tokio::test]
async fn two_workers_run_each_task_once_per_period_and_doctor_sees_it() {
    let backend = Backend::all().unwrap();
    let db = TestDb::migrated(backend.migrator()).await.unwrap();
    let mut admin = db.admin_conn().await.unwrap();
    sqlx::raw_sql(
        "INSERT INTO tenancy.tenants (id, slug, name) VALUES ('0193f2a4-6c1e-7b2d-9e4f-5a6b7c8d9e0f', 'acme', 'Acme');
         SELECT set_config('app.tenant_id', '0193f2a4-6c1e-7b2d-9e4f-5a6b7c8d9e0f', false);
         SELECT audit.record('user.login', 'user', 'u1');
         SELECT set_config('app.tenant_id', '', false);",
    )
    .execute(&mut admin)
    .await
    .unwrap();

    let tasks = maintenance::tasks(backend.modules(), &["pgstrata_worker"]);
    assert!(tasks.iter().any(|t| t.name == "audit.seal"));
    assert!(
        tasks.iter().all(|t| t.role == "pgstrata_worker"),
        "billing's retry needs the sync role and is left out: {tasks:?}"
    );
    let before = maintenance::overdue(&mut admin, &tasks).await.unwrap();
    assert_eq!(before.len(), tasks.len(), "{before:#?}");
    assert!(before.iter().all(|l| l.contains("has never completed")), "{before:#?}");

    let config = maintenance::configure(WorkerConfig::new("default"), &tasks).unwrap();
    let mut runs = Vec::new();
    for _ in 0..2 {
        let pool = db.pool_as(WORKER_LOGIN_ROLE, 6).await.unwrap();
        let config = config.clone();
        let tasks = tasks.clone();
        runs.push(tokio::spawn(async move {
            let mut conn = pool.acquire().await.unwrap();
            let created = periodic::enqueue_due(&mut conn, &config.periodic, chrono::Utc::now())
                .await
                .unwrap();
            drop(conn);
            let worker = Worker::new(pool, config)
                .unwrap()
                .register::<MaintenanceJob, _>(maintenance::runner(&tasks));
            worker.run_until_drained(CancellationToken::new()).await.unwrap();
            created.len()
        }));
    }
    let mut created = 0;
    for run in runs {
        created += run.await.unwrap();
    }
    // Exactly once per period: every job the two created has its own period row, and the
    // queue holds no other maintenance job.
    let (periods, jobs): (i64, i64) = sqlx::query_as(
        "SELECT (SELECT count(*) FROM queue.periodic_runs WHERE name LIKE 'pgstrata:%'),
                (SELECT count(*) FROM queue.jobs WHERE queue = $1)",
    )
    .bind(maintenance::QUEUE)
    .fetch_one(&mut admin)
    .await
    .unwrap();
    assert_eq!((created as i64, jobs), (periods, periods));
    let states: Vec<(String, String)> =
        sqlx::query_as("SELECT j.kind, j.state::text FROM queue.jobs j WHERE j.queue = $1 AND j.state <> 'completed'")
            .bind(maintenance::QUEUE)
            .fetch_all(&mut admin)
            .await
            .unwrap();
    assert!(states.is_empty(), "every maintenance job completed: {states:?}");
    assert!(created >= tasks.len(), "created {created} for {} tasks", tasks.len());
    let unsealed: i64 = sqlx::query_scalar("SELECT unsealed FROM audit.unsealed()")
        .fetch_one(&mut admin)
        .await
        .unwrap();
    assert_eq!(unsealed, 0, "the audit.seal job sealed the record");
    let after = maintenance::overdue(&mut admin, &tasks).await.unwrap();
    assert!(after.is_empty(), "{after:#?}");

    // The last sealing three minutes back: overdue for a task that runs every minute.
    sqlx::raw_sql("UPDATE queue.periodic_runs SET period_start = period_start - interval '3 minutes' WHERE name = 'pgstrata:audit.seal'")
        .execute(&mut admin)
        .await
        .unwrap();
    let late = maintenance::overdue(&mut admin, &tasks).await.unwrap();
    assert_eq!(late.len(), 1, "{late:#?}");
    assert!(
        late[0].contains("audit.seal") && late[0].contains("is overdue"),
        "{late:#?}"
    );
    drop(admin);
    db.close().await.unwrap();
}
