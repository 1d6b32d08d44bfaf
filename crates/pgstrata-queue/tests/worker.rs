//! The worker runtime with real concurrency: 8 workers on their own connections drain 20,000
//! jobs, each executed exactly once (counted in a side table written in the handler's
//! transaction); tenant context around handlers; graceful shutdown.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use pgstrata_core::TenantId;
use pgstrata_core::migrate::Migrator;
use pgstrata_core::testing::{TestDb, WORKER_LOGIN_ROLE};
use pgstrata_queue::client::{self, NewJob};
use pgstrata_queue::worker::HandlerError;
use pgstrata_queue::{Handler, JobKind, JobMeta, Worker, WorkerConfig};
use serde::{Deserialize, Serialize};
use sqlx::PgConnection;
use std::time::Duration;

#[derive(Debug, Serialize, Deserialize)]
struct Count {
    n: i64,
}

impl JobKind for Count {
    const KIND: &'static str = "count";
}

/// Records each execution in `public.executions`, in the job's transaction.
struct Record;

impl Handler<Count> for Record {
    async fn handle(&self, tx: &mut PgConnection, job: Count, meta: &JobMeta) -> Result<(), HandlerError> {
        sqlx::query(
            "INSERT INTO public.executions (job_id, n, tenant) VALUES ($1, $2, tenancy.current_tenant_id()::text)",
        )
        .bind(meta.id.0)
        .bind(job.n)
        .execute(&mut *tx)
        .await?;
        // Every 100th job fails once, to exercise the retry path under load.
        if job.n % 100 == 0 && meta.attempt == 1 {
            return Err("planned failure".into());
        }
        Ok(())
    }
}

async fn setup() -> TestDb {
    let migrator = Migrator::new([&pgstrata_tenancy::MODULE, &pgstrata_queue::MODULE]).unwrap();
    let db = TestDb::migrated(&migrator).await.unwrap();
    sqlx::raw_sql(
        "CREATE TABLE public.executions (job_id bigint NOT NULL, n bigint NOT NULL, tenant text);
         GRANT SELECT, INSERT ON public.executions TO pgstrata_worker;",
    )
    .execute(&db.admin)
    .await
    .unwrap();
    db
}

fn config() -> WorkerConfig {
    let mut config = WorkerConfig::new("default");
    config.concurrency = 8;
    config.lease = Duration::from_secs(30);
    config.poll_interval = Duration::from_millis(50);
    config.maintenance_interval = Duration::from_millis(100);
    config
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn eight_workers_drain_twenty_thousand_jobs_exactly_once() {
    let db = setup().await;
    let producer = db.pool_as(WORKER_LOGIN_ROLE, 1).await.unwrap();
    let mut conn = producer.acquire().await.unwrap();
    for chunk in (0..20_000i64).collect::<Vec<_>>().chunks(5_000) {
        let jobs: Vec<NewJob> = chunk.iter().map(|n| NewJob::of(&Count { n: *n }).unwrap()).collect();
        client::enqueue_system_many(&mut conn, &jobs).await.unwrap();
    }
    drop(conn);

    let token = pgstrata_core::CancellationToken::new();
    let mut workers = Vec::new();
    for _ in 0..8 {
        // Each worker has its own pool: its own connections.
        let pool = db.pool_as(WORKER_LOGIN_ROLE, 10).await.unwrap();
        let worker = Worker::new(pool, config()).unwrap().register::<Count, _>(Record);
        workers.push(tokio::spawn(worker.run(token.clone())));
    }
    let deadline = tokio::time::Instant::now() + Duration::from_secs(120);
    loop {
        let done: i64 = sqlx::query_scalar("SELECT count(*) FROM queue.jobs WHERE state = 'completed'")
            .fetch_one(&db.admin)
            .await
            .unwrap();
        if done == 20_000 {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "only {done} of 20000 completed in time"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    token.cancel();
    for w in workers {
        w.await.unwrap().unwrap();
    }
    let (executions, distinct): (i64, i64) =
        sqlx::query_as("SELECT count(*), count(DISTINCT job_id) FROM public.executions")
            .fetch_one(&db.admin)
            .await
            .unwrap();
    assert_eq!(
        (executions, distinct),
        (20_000, 20_000),
        "every job's effects committed exactly once"
    );
    let retried: i64 =
        sqlx::query_scalar("SELECT count(*) FROM queue.jobs WHERE attempt = 2 AND jsonb_array_length(errors) = 1")
            .fetch_one(&db.admin)
            .await
            .unwrap();
    assert_eq!(
        retried, 200,
        "the planned failures were retried, and their first attempt's effects rolled back"
    );
    producer.close().await;
    db.close().await.unwrap();
}

#[tokio::test]
async fn handlers_run_in_the_jobs_tenant_context_and_shutdown_is_graceful() {
    let db = setup().await;
    let app = db.app_pool(4).await.unwrap();
    let system = db.pool_as(WORKER_LOGIN_ROLE, 1).await.unwrap();
    let tenant = TenantId::new();
    let mut admin = db.admin_conn().await.unwrap();
    pgstrata_tenancy::fixtures::insert_tenants(&mut admin, &[tenant])
        .await
        .unwrap();
    drop(admin);
    // The request path enqueues in its tenant's transaction; the job takes the tenant from it.
    let mut tx = pgstrata_core::begin_tenant(&app, &pgstrata_core::TenantContext::tenant(tenant))
        .await
        .unwrap();
    client::enqueue(&mut tx, &NewJob::of(&Count { n: 1 }).unwrap())
        .await
        .unwrap();
    tx.commit().await.unwrap();
    // System work (no tenant) comes from the worker side.
    let mut conn = system.acquire().await.unwrap();
    client::enqueue_system(&mut conn, &NewJob::of(&Count { n: 2 }).unwrap())
        .await
        .unwrap();
    // One attempt, so its failure is final and the check below does not race its backoff.
    client::enqueue_system(
        &mut conn,
        &NewJob::new("unknown_kind", serde_json::json!({})).max_attempts(1),
    )
    .await
    .unwrap();
    drop(conn);

    let token = pgstrata_core::CancellationToken::new();
    let worker = Worker::new(db.pool_as(WORKER_LOGIN_ROLE, 11).await.unwrap(), config())
        .unwrap()
        .register::<Count, _>(Record);
    let handle = tokio::spawn(worker.run(token.clone()));
    tokio::time::sleep(Duration::from_millis(1500)).await;
    token.cancel();
    handle.await.unwrap().unwrap();

    let tenants: Vec<(i64, Option<String>)> = sqlx::query_as("SELECT n, tenant FROM public.executions ORDER BY n")
        .fetch_all(&db.admin)
        .await
        .unwrap();
    assert_eq!(tenants, [(1, Some(tenant.0.to_string())), (2, None)]);
    let states: Vec<(String, String, String)> =
        sqlx::query_as("SELECT kind, state, coalesce(errors->0->>'error', '') FROM queue.jobs ORDER BY id")
            .fetch_all(&db.admin)
            .await
            .unwrap();
    let (kind, state, error) = &states[2];
    assert_eq!(
        (kind.as_str(), state.as_str()),
        ("unknown_kind", "discarded"),
        "no handler: failed, not lost"
    );
    assert!(error.contains("no handler registered"), "{error}");
    let running: i64 = sqlx::query_scalar("SELECT count(*) FROM queue.jobs WHERE state = 'running'")
        .fetch_one(&db.admin)
        .await
        .unwrap();
    assert_eq!(running, 0, "nothing is left claimed after shutdown");
    app.close().await;
    system.close().await;
    db.close().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn run_until_drained_returns_once_nothing_is_due() {
    let db = setup().await;
    let producer = db.pool_as(WORKER_LOGIN_ROLE, 1).await.unwrap();
    let mut conn = producer.acquire().await.unwrap();
    // 1,000 jobs due now (none of them fails: n is never a multiple of 100), one due in an hour.
    let jobs: Vec<NewJob> = (1..=1_000i64)
        .filter(|n| n % 100 != 0)
        .map(|n| NewJob::of(&Count { n }).unwrap())
        .collect();
    let due = jobs.len() as i64;
    client::enqueue_system_many(&mut conn, &jobs).await.unwrap();
    client::enqueue_system(
        &mut conn,
        &NewJob::of(&Count { n: 1 })
            .unwrap()
            .run_at(chrono::Utc::now() + chrono::Duration::hours(1)),
    )
    .await
    .unwrap();
    drop(conn);

    // Two workers drain it together; each returns on its own, with no token cancelled.
    let token = pgstrata_core::CancellationToken::new();
    let mut workers = Vec::new();
    for _ in 0..2 {
        let pool = db.pool_as(WORKER_LOGIN_ROLE, 11).await.unwrap();
        let worker = Worker::new(pool, config()).unwrap().register::<Count, _>(Record);
        workers.push(tokio::spawn(worker.run_until_drained(token.clone())));
    }
    for w in workers {
        tokio::time::timeout(Duration::from_secs(60), w)
            .await
            .expect("the workers return once the queue is drained")
            .unwrap()
            .unwrap();
    }
    assert!(!token.is_cancelled());
    let states: Vec<(String, i64)> =
        sqlx::query_as("SELECT state, count(*) FROM queue.jobs GROUP BY state ORDER BY state")
            .fetch_all(&db.admin)
            .await
            .unwrap();
    assert_eq!(
        states,
        [("completed".into(), due), ("scheduled".into(), 1)],
        "every due job ran; the one scheduled for later waits"
    );
    let executions: i64 = sqlx::query_scalar("SELECT count(*) FROM public.executions")
        .fetch_one(&db.admin)
        .await
        .unwrap();
    assert_eq!(executions, due);

    // A failed job waiting for its retry is not due: the next drain leaves it for later.
    let mut conn = producer.acquire().await.unwrap();
    client::enqueue_system(&mut conn, &NewJob::new("no_handler_here", serde_json::json!({})))
        .await
        .unwrap();
    drop(conn);
    let pool = db.pool_as(WORKER_LOGIN_ROLE, 11).await.unwrap();
    let worker = Worker::new(pool, config()).unwrap().register::<Count, _>(Record);
    tokio::time::timeout(Duration::from_secs(30), worker.run_until_drained(token.clone()))
        .await
        .unwrap()
        .unwrap();
    let (state, attempt): (String, i32) =
        sqlx::query_as("SELECT state, attempt FROM queue.jobs WHERE kind = 'no_handler_here'")
            .fetch_one(&db.admin)
            .await
            .unwrap();
    assert_eq!((state.as_str(), attempt), ("retryable", 1));
    producer.close().await;
    db.close().await.unwrap();
}

#[derive(Debug, Serialize, Deserialize)]
struct Slow {
    n: i64,
}

impl JobKind for Slow {
    const KIND: &'static str = "slow";
}

/// Records how many of its jobs run at once, per queue.
#[derive(Default)]
struct Overlap {
    running: std::sync::Mutex<std::collections::HashMap<String, (usize, usize)>>,
}

impl Handler<Slow> for std::sync::Arc<Overlap> {
    async fn handle(&self, tx: &mut PgConnection, job: Slow, meta: &JobMeta) -> Result<(), HandlerError> {
        if let Ok(mut r) = self.running.lock() {
            let (now, max) = r.entry(meta.queue.clone()).or_default();
            *now += 1;
            *max = (*max).max(*now);
        }
        tokio::time::sleep(Duration::from_millis(40)).await;
        sqlx::query("INSERT INTO public.executions (job_id, n) VALUES ($1, $2)")
            .bind(meta.id.0)
            .bind(job.n)
            .execute(&mut *tx)
            .await?;
        if let Ok(mut r) = self.running.lock() {
            r.entry(meta.queue.clone()).or_default().0 -= 1;
        }
        Ok(())
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn one_worker_serves_several_queues_each_with_its_own_executors() {
    let db = setup().await;
    let producer = db.pool_as(WORKER_LOGIN_ROLE, 1).await.unwrap();
    let mut conn = producer.acquire().await.unwrap();
    let jobs = |queue: &str| -> Vec<NewJob> {
        (0..12i64)
            .map(|n| NewJob::of(&Slow { n }).unwrap().queue(queue))
            .collect()
    };
    for queue in ["mail", "reports", "elsewhere"] {
        client::enqueue_system_many(&mut conn, &jobs(queue)).await.unwrap();
    }
    drop(conn);

    // "mail" with one executor, "reports" with three; "elsewhere" is not this worker's.
    let mut config = config().with_queue("reports", 3);
    config.queue = "mail".into();
    config.concurrency = 1;
    config.batch_size = 1;
    let overlap = std::sync::Arc::new(Overlap::default());
    let pool = db.pool_as(WORKER_LOGIN_ROLE, 7).await.unwrap();
    let worker = Worker::new(pool, config).unwrap().register::<Slow, _>(overlap.clone());
    tokio::time::timeout(
        Duration::from_secs(60),
        worker.run_until_drained(pgstrata_core::CancellationToken::new()),
    )
    .await
    .expect("drained: both of its queues are done")
    .unwrap();

    let states: Vec<(String, String, i64)> =
        sqlx::query_as("SELECT queue, state, count(*) FROM queue.jobs GROUP BY 1, 2 ORDER BY 1, 2")
            .fetch_all(&db.admin)
            .await
            .unwrap();
    assert_eq!(
        states,
        [
            ("elsewhere".into(), "available".into(), 12),
            ("mail".into(), "completed".into(), 12),
            ("reports".into(), "completed".into(), 12),
        ]
    );
    let max = |q: &str| overlap.running.lock().unwrap().get(q).map_or(0, |r| r.1);
    assert_eq!(max("mail"), 1, "one executor for mail");
    assert!(
        (2..=3).contains(&max("reports")),
        "up to three for reports: {}",
        max("reports")
    );
    assert!(
        Worker::new(
            db.pool_as(WORKER_LOGIN_ROLE, 1).await.unwrap(),
            WorkerConfig::new("ok").with_queue("Not A Queue", 1)
        )
        .is_err(),
        "every queue name is checked"
    );
    producer.close().await;
    db.close().await.unwrap();
}
