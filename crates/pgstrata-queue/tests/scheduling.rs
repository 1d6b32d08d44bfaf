//! Periodic jobs with concurrent schedulers, and fairness between a heavy and a light tenant.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use pgstrata_core::migrate::Migrator;
use pgstrata_core::testing::{TestDb, WORKER_LOGIN_ROLE};
use pgstrata_core::{TenantContext, TenantId, begin_tenant};
use pgstrata_queue::client::{self, NewJob};
use pgstrata_queue::{Periodic, periodic};
use std::time::Duration;

async fn setup() -> TestDb {
    let migrator = Migrator::new([&pgstrata_tenancy::MODULE, &pgstrata_queue::MODULE]).unwrap();
    TestDb::migrated(&migrator).await.unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 3)]
async fn three_concurrent_schedulers_enqueue_each_period_exactly_once() {
    let db = setup().await;
    let schedules = vec![
        Periodic::new(
            "every_second",
            "* * * * * *",
            NewJob::new("tick", serde_json::json!({})),
        )
        .unwrap(),
        Periodic::new(
            "every_two",
            "*/2 * * * * *",
            NewJob::new("tock", serde_json::json!({})).queue("slow"),
        )
        .unwrap(),
    ];
    let mut schedulers = Vec::new();
    for _ in 0..3 {
        let workers = db.pool_as(WORKER_LOGIN_ROLE, 1).await.unwrap();
        let schedules = schedules.clone();
        schedulers.push(tokio::spawn(async move {
            let mut created = 0;
            let until = tokio::time::Instant::now() + Duration::from_millis(3500);
            while tokio::time::Instant::now() < until {
                let mut conn = workers.acquire().await.unwrap();
                created += periodic::enqueue_due(&mut conn, &schedules, chrono::Utc::now())
                    .await
                    .unwrap()
                    .len();
                drop(conn);
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            created
        }));
    }
    let mut created = 0;
    for s in schedulers {
        created += s.await.unwrap();
    }
    // Periods by schedule, from the runs table (one row per period, keyed by its start): the
    // second a job was created in is not its period when a scheduler runs late.
    let per_period: Vec<(String, i64)> = sqlx::query_as(
        "SELECT name, count(*) FROM queue.periodic_runs WHERE job_id IS NOT NULL GROUP BY name ORDER BY 1",
    )
    .fetch_all(&db.admin)
    .await
    .unwrap();
    let (runs, jobs): (i64, i64) = sqlx::query_as(
        "SELECT (SELECT count(*) FROM queue.periodic_runs WHERE job_id IS NOT NULL), (SELECT count(*) FROM queue.jobs)",
    )
    .fetch_one(&db.admin)
    .await
    .unwrap();
    assert_eq!(runs, jobs, "every job belongs to exactly one period");
    assert_eq!(created as i64, jobs, "the schedulers together created each job once");
    let ticks = per_period
        .iter()
        .find(|(name, _)| name == "every_second")
        .map_or(0, |(_, periods)| *periods);
    assert!(
        ticks >= 3,
        "three and a half seconds hold at least three periods: {per_period:?}"
    );
    db.close().await.unwrap();
}

#[tokio::test]
async fn a_heavy_tenant_does_not_starve_a_light_one() {
    let db = setup().await;
    let workers = db.pool_as(WORKER_LOGIN_ROLE, 2).await.unwrap();
    let (heavy, light) = (TenantId::new(), TenantId::new());
    let mut admin = db.admin_conn().await.unwrap();
    pgstrata_tenancy::fixtures::insert_tenants(&mut admin, &[heavy, light])
        .await
        .unwrap();
    drop(admin);
    // The heavy tenant's 5,000 jobs are all older than the light tenant's 10; the worker
    // enqueues each tenant's in that tenant's transaction.
    for (tenant, kind, count) in [(heavy, "import", 5_000), (light, "invite", 10)] {
        let jobs: Vec<NewJob> = (0..count)
            .map(|n| NewJob::new(kind, serde_json::json!({ "n": n })))
            .collect();
        let mut tx = begin_tenant(&workers, &TenantContext::tenant(tenant)).await.unwrap();
        client::enqueue_many(&mut tx, &jobs).await.unwrap();
        tx.commit().await.unwrap();
    }
    let mut conn = workers.acquire().await.unwrap();
    sqlx::query("ANALYZE queue.jobs").execute(&db.admin).await.unwrap();

    let mut light_done = 0;
    let mut claims = 0;
    while light_done < 10 {
        let batch = client::claim(&mut conn, "default", 10, "w", Duration::from_secs(60))
            .await
            .unwrap();
        light_done += batch.iter().filter(|j| j.tenant_id == Some(light)).count();
        claims += 1;
        assert!(claims <= 3, "the light tenant waited behind the heavy one");
    }
    let heavy_left: i64 =
        sqlx::query_scalar("SELECT count(*) FROM queue.jobs WHERE state = 'available' AND tenant_id = $1")
            .bind(heavy.0)
            .fetch_one(&db.admin)
            .await
            .unwrap();
    assert!(
        heavy_left >= 4_980,
        "the heavy tenant still had most of its backlog: {heavy_left}"
    );
    drop(conn);
    workers.close().await;
    db.close().await.unwrap();
}
