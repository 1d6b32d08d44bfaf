//! A worker that keeps working: its connections terminated under it, handlers that panic or
//! overrun their time limit, a shutdown that cannot wait for a stuck handler. Every job's
//! effects commit exactly once (a side table written in the handler's transaction), none is
//! lost, and the workers are still running at the end.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use pgstrata_core::migrate::Migrator;
use pgstrata_core::testing::{TestDb, WORKER_LOGIN_ROLE};
use pgstrata_queue::client::{self, NewJob};
use pgstrata_queue::worker::{BoxFuture, HandlerError};
use pgstrata_queue::{Handler, JobKind, JobMeta, Worker, WorkerConfig};
use serde::{Deserialize, Serialize};
use sqlx::PgConnection;
use std::hash::BuildHasher;
use std::sync::Once;
use std::time::Duration;

const PANIC_TEXT: &str = "chaos: a planned panic";

/// The handler panics are planned: keep them out of the test output, and every other panic in.
fn quiet_planned_panics() {
    static HOOK: Once = Once::new();
    HOOK.call_once(|| {
        let default = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            let planned = info.payload().downcast_ref::<&str>().is_some_and(|m| *m == PANIC_TEXT);
            if !planned {
                default(info);
            }
        }));
    });
}

async fn setup() -> TestDb {
    let migrator = Migrator::new([&pgstrata_tenancy::MODULE, &pgstrata_queue::MODULE]).unwrap();
    let db = TestDb::migrated(&migrator).await.unwrap();
    sqlx::raw_sql(
        "CREATE TABLE public.executions (job_id bigint NOT NULL, n bigint NOT NULL);
         GRANT SELECT, INSERT ON public.executions TO pgstrata_worker;",
    )
    .execute(&db.admin)
    .await
    .unwrap();
    db
}

#[derive(Debug, Serialize, Deserialize)]
struct Chaos {
    n: i64,
}

impl JobKind for Chaos {
    const KIND: &'static str = "chaos";
    const MAX_ATTEMPTS: i32 = 25;
    // Retried at once, so that the test waits on the workers rather than on backoff.
    fn backoff(_attempt: i32) -> Option<Duration> {
        Some(Duration::from_millis(100))
    }
}

/// Records each execution in the job's transaction, then panics for about one attempt in a
/// hundred.
struct Panicky;

impl Handler<Chaos> for Panicky {
    async fn handle(&self, tx: &mut PgConnection, job: Chaos, meta: &JobMeta) -> Result<(), HandlerError> {
        sqlx::query("INSERT INTO public.executions (job_id, n) VALUES ($1, $2)")
            .bind(meta.id.0)
            .bind(job.n)
            .execute(&mut *tx)
            .await?;
        if std::collections::hash_map::RandomState::new()
            .hash_one((job.n, meta.attempt))
            .is_multiple_of(100)
        {
            std::panic::panic_any(PANIC_TEXT);
        }
        Ok(())
    }
}

async fn count(db: &TestDb, sql: &'static str) -> i64 {
    sqlx::query_scalar(sql).fetch_one(&db.admin).await.unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn workers_survive_terminated_connections_and_panicking_handlers() {
    quiet_planned_panics();
    const JOBS: i64 = 20_000;
    let db = setup().await;
    let producer = db.pool_as(WORKER_LOGIN_ROLE, 1).await.unwrap();
    let mut conn = producer.acquire().await.unwrap();
    for chunk in (0..JOBS).collect::<Vec<_>>().chunks(5_000) {
        let jobs: Vec<NewJob> = chunk.iter().map(|n| NewJob::of(&Chaos { n: *n }).unwrap()).collect();
        client::enqueue_system_many(&mut conn, &jobs).await.unwrap();
    }
    drop(conn);
    producer.close().await;

    let token = pgstrata_core::CancellationToken::new();
    let mut workers = Vec::new();
    for _ in 0..8 {
        let pool = db.pool_as(WORKER_LOGIN_ROLE, 6).await.unwrap();
        let mut config = WorkerConfig::new("default");
        // Short leases, so that jobs whose connection died come back within the test.
        config.lease = Duration::from_secs(3);
        config.poll_interval = Duration::from_millis(50);
        config.maintenance_interval = Duration::from_millis(200);
        let worker = Worker::new(pool, config).unwrap().register::<Chaos, _>(Panicky);
        workers.push(tokio::spawn(worker.run(token.clone())));
    }

    // Terminate every connection of the workers, every 700 ms, while they drain.
    let mut rounds = 0;
    let mut terminated = 0i64;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(240);
    loop {
        tokio::time::sleep(Duration::from_millis(700)).await;
        let done = count(&db, "SELECT count(*) FROM queue.jobs WHERE state = 'completed'").await;
        if done == JOBS {
            break;
        }
        if rounds < 6 {
            let killed: i64 = sqlx::query_scalar(
                "SELECT count(*) FILTER (WHERE pg_terminate_backend(pid)) FROM pg_stat_activity
                  WHERE usename = $1 AND datname = current_database()",
            )
            .bind(WORKER_LOGIN_ROLE)
            .fetch_one(&db.admin)
            .await
            .unwrap();
            rounds += 1;
            terminated += killed;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "only {done} of {JOBS} completed in time"
        );
        for w in &workers {
            assert!(!w.is_finished(), "a worker stopped before its shutdown signal");
        }
    }
    assert!(
        rounds >= 3,
        "the workers drained before connections were terminated several times ({rounds} rounds)"
    );
    assert!(
        terminated >= 8 * 3,
        "only {terminated} worker connections were terminated"
    );
    eprintln!("{rounds} rounds terminated {terminated} worker connections");
    for w in &workers {
        assert!(!w.is_finished(), "every worker is still running at the end");
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
        (JOBS, JOBS),
        "every job's effects committed exactly once, and none is lost"
    );
    let not_completed = count(&db, "SELECT count(*) FROM queue.jobs WHERE state <> 'completed'").await;
    assert_eq!(not_completed, 0);
    let panicked = count(
        &db,
        "SELECT count(*) FROM queue.jobs, jsonb_array_elements(errors) e
          WHERE e->>'error' = 'handler panicked: chaos: a planned panic'",
    )
    .await;
    assert!(
        panicked > 0,
        "panics were recorded as failed attempts with their message"
    );
    db.close().await.unwrap();
}

#[derive(Debug, Serialize, Deserialize)]
struct Sleep {
    /// Seconds the handler's statement sleeps.
    secs: f64,
}

impl JobKind for Sleep {
    const KIND: &'static str = "sleep";
    const MAX_ATTEMPTS: i32 = 1;
    const TIMEOUT: Option<Duration> = Some(Duration::from_millis(300));
}

/// Sleeps in a statement of the job's transaction, then records the execution.
struct Sleeper;

impl Handler<Sleep> for Sleeper {
    async fn handle(&self, tx: &mut PgConnection, job: Sleep, meta: &JobMeta) -> Result<(), HandlerError> {
        sqlx::query("SELECT pg_sleep($1)")
            .bind(job.secs)
            .execute(&mut *tx)
            .await?;
        sqlx::query("INSERT INTO public.executions (job_id, n) VALUES ($1, 0)")
            .bind(meta.id.0)
            .execute(&mut *tx)
            .await?;
        Ok(())
    }
}

async fn wait_until(db: &TestDb, sql: &'static str, what: &str) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while !sqlx::query_scalar::<_, bool>(sql).fetch_one(&db.admin).await.unwrap() {
        assert!(tokio::time::Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn a_handler_past_its_time_limit_fails_and_its_statement_is_cancelled() {
    let db = setup().await;
    let pool = db.pool_as(WORKER_LOGIN_ROLE, 6).await.unwrap();
    let mut conn = pool.acquire().await.unwrap();
    // The kind's limit (300 ms) against a 20 s statement; a job's own limit overrides it.
    let late = client::enqueue_system(&mut conn, &NewJob::of(&Sleep { secs: 20.0 }).unwrap())
        .await
        .unwrap();
    let allowed = client::enqueue_system(
        &mut conn,
        &NewJob::of(&Sleep { secs: 0.5 })
            .unwrap()
            .timeout(Duration::from_secs(10)),
    )
    .await
    .unwrap();
    drop(conn);
    let token = pgstrata_core::CancellationToken::new();
    let mut config = WorkerConfig::new("default");
    config.poll_interval = Duration::from_millis(50);
    let worker = Worker::new(pool.clone(), config).unwrap().register::<Sleep, _>(Sleeper);
    let handle = tokio::spawn(worker.run(token.clone()));
    wait_until(
        &db,
        "SELECT count(*) = 2 FROM queue.jobs WHERE finalized_at IS NOT NULL",
        "both jobs to finish",
    )
    .await;
    let states: Vec<(i64, String, String)> =
        sqlx::query_as("SELECT id, state, coalesce(errors->0->>'error', '') FROM queue.jobs ORDER BY id")
            .fetch_all(&db.admin)
            .await
            .unwrap();
    assert_eq!(
        states,
        [
            (late.0, "discarded".into(), "handler timed out after 300ms".into()),
            (allowed.0, "completed".into(), String::new()),
        ]
    );
    wait_until(
        &db,
        "SELECT NOT EXISTS (SELECT 1 FROM pg_stat_activity WHERE query LIKE 'SELECT pg_sleep%' AND state = 'active')",
        "the overrunning statement to be cancelled",
    )
    .await;
    let executions = count(&db, "SELECT count(*) FROM public.executions").await;
    assert_eq!(executions, 1, "the timed-out attempt's writes were rolled back");
    assert!(!handle.is_finished(), "the worker goes on");
    token.cancel();
    handle.await.unwrap().unwrap();
    pool.close().await;
    db.close().await.unwrap();
}

#[derive(Debug, Serialize, Deserialize)]
struct Stuck;

impl JobKind for Stuck {
    const KIND: &'static str = "stuck";
}

/// Never finishes on its own. Written in the form handlers had before `async fn` (a boxed
/// future), which still compiles.
struct Forever;

#[allow(refining_impl_trait)]
impl Handler<Stuck> for Forever {
    fn handle<'a>(
        &'a self,
        _tx: &'a mut PgConnection,
        _job: Stuck,
        _meta: &'a JobMeta,
    ) -> BoxFuture<'a, Result<(), HandlerError>> {
        Box::pin(async {
            tokio::time::sleep(Duration::from_secs(3600)).await;
            Ok(())
        })
    }
}

#[tokio::test]
async fn past_the_shutdown_deadline_running_jobs_are_abandoned_to_the_rescuer() {
    let db = setup().await;
    let pool = db.pool_as(WORKER_LOGIN_ROLE, 6).await.unwrap();
    let mut conn = pool.acquire().await.unwrap();
    let id = client::enqueue_system(&mut conn, &NewJob::of(&Stuck).unwrap())
        .await
        .unwrap();
    drop(conn);
    let token = pgstrata_core::CancellationToken::new();
    let mut config = WorkerConfig::new("default");
    config.lease = Duration::from_secs(2);
    config.shutdown_timeout = Duration::from_millis(300);
    let worker = Worker::new(pool.clone(), config).unwrap().register::<Stuck, _>(Forever);
    let handle = tokio::spawn(worker.run(token.clone()));
    wait_until(
        &db,
        "SELECT count(*) = 1 FROM queue.jobs WHERE state = 'running'",
        "the job to start",
    )
    .await;
    let asked = tokio::time::Instant::now();
    token.cancel();
    tokio::time::timeout(Duration::from_secs(5), handle)
        .await
        .expect("run returns soon after the deadline")
        .unwrap()
        .unwrap();
    assert!(
        asked.elapsed() >= Duration::from_millis(300),
        "the deadline was waited for"
    );
    // Abandoned, not released: the rescuer brings it back once its lease has expired.
    tokio::time::sleep(Duration::from_millis(2500)).await;
    let mut conn = pool.acquire().await.unwrap();
    assert_eq!(client::rescue(&mut conn).await.unwrap(), 1);
    let job = client::get(&mut conn, id).await.unwrap().unwrap();
    assert_eq!((job.state.as_str(), job.attempt), ("retryable", 1));
    drop(conn);
    pool.close().await;
    db.close().await.unwrap();
}
