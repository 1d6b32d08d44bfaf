//! The queue bench: how fast `Worker`s on their default `WorkerConfig` drain no-op jobs, beside
//! pgmq (its published client and SQL, installed from the pgmq crate: `read` of 50 then
//! `delete_batch`), the seed document's single-statement `SKIP LOCKED` loop and a raw batch loop
//! (the SQL limit, no handler dispatch), run with the same number of workers on the same
//! database, interleaved round by round; plus the batch enqueue rate, the
//! enqueue-to-start latency with LISTEN/NOTIFY, and `queue.claim` latency as the backlog grows
//! from 10,000 to 1,000,000 ready jobs.
//!
//! Everything happens in a scratch database `pgstrata_bench_<pid>`, dropped at the end. Jobs are
//! enqueued by a LOGIN role that is only granted `pgstrata_app`, in a tenant transaction as the
//! request path would; they are claimed and completed by a LOGIN role that is only granted
//! `pgstrata_worker`. The baselines' loops run as the application role. The superuser only loads
//! the baselines' tables and the claim backlog, and counts.

use crate::scratch::{APP_ROLE, Scratch, WORKER_ROLE, create_app_role, create_worker_role, percentile_ms, round};
use pgstrata::queue::client::{self, NewJob};
use pgstrata::queue::worker::HandlerError;
use pgstrata::queue::{Handler, JobKind, JobMeta, Worker, WorkerConfig};
use pgstrata_core::CancellationToken;
use pgstrata_core::sql::{trusted, trusted_as};
use serde::{Deserialize, Serialize};
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::{PgConnection, PgPool};
use std::error::Error;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::task::JoinHandle;

/// What `main` passes in.
#[derive(Debug)]
pub struct Options {
    pub url: String,
    /// Jobs drained by each subject.
    pub jobs: usize,
    /// Workers (pgstrata) or looping connections (baselines).
    pub workers: usize,
    /// Executors per pgstrata worker; `None`: the default WorkerConfig's.
    pub executors: Option<usize>,
    /// The most jobs per pgstrata claim and commit; `None`: the default WorkerConfig's.
    pub batch_size: Option<usize>,
    /// Rounds of the four drains; the median round of each is reported.
    pub rounds: usize,
    /// Keep the scratch database for inspection instead of dropping it.
    pub keep_database: bool,
}

/// Jobs per `client::enqueue_many` call.
const ENQUEUE_CHUNK: usize = 5_000;
/// Jobs per claim of the raw batch loop.
const RAW_BATCH: i64 = 50;
/// Messages per pgmq read (then one delete_batch), and their visibility timeout.
const PGMQ_BATCH: i32 = 50;
const PGMQ_VT_SECS: i32 = 60;
const PGMQ_QUEUE: &str = "bench_drain";
/// How often the drain checks whether it is done.
const DRAIN_POLL: Duration = Duration::from_millis(50);
/// A drain slower than this is reported as an error rather than waited for.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(600);

/// Jobs enqueued one at a time for the enqueue-to-start latency, after a warm-up.
const NOTIFY_JOBS: usize = 500;
const NOTIFY_WARMUP: usize = 20;
const NOTIFY_SPACING: Duration = Duration::from_millis(8);
/// Long, so that an executor that misses a notification shows in the p99.
const NOTIFY_POLL_INTERVAL: Duration = Duration::from_secs(5);

/// Claims measured per backlog size (after a warm-up), of CLAIM_LIMIT jobs each.
const CLAIM_CALLS: usize = 500;
const CLAIM_WARMUP: usize = 50;
const CLAIM_LIMIT: i32 = 10;
/// Tenants the claim backlog is spread over (the claim is fair across tenants).
const CLAIM_TENANTS: i64 = 100;
const CLAIM_QUEUE: &str = "bench_claim";
/// Backlog sizes: ready jobs left in the queue after the measured claims.
const BACKLOGS: [(&str, i64); 2] = [("10k", 10_000), ("1m", 1_000_000)];

const DRAIN_QUEUE: &str = "default";
const NOTIFY_QUEUE: &str = "bench_notify";

const GOAL_RATIO: f64 = 8.0;
const GOAL_RATIO_TO_PGMQ: f64 = 1.2;
const CLAIM_FLATNESS_GOAL: f64 = 1.5;
const BASELINE_LABEL: &str = "seed single-statement SKIP LOCKED";

/// The seed document's loop: claim one job in one statement, then complete it in another.
const SEED_CLAIM_SQL: &str = "UPDATE bench.seed_jobs SET status = 'running' \
     WHERE id = (SELECT id FROM bench.seed_jobs WHERE status = 'queued' ORDER BY id FOR UPDATE SKIP LOCKED LIMIT 1) \
     RETURNING id";
const SEED_COMPLETE_SQL: &str = "UPDATE bench.seed_jobs SET status = 'done' WHERE id = $1";

/// The raw SQL limit: claim a batch in one CTE, complete it in one statement.
const RAW_CLAIM_SQL: &str = "WITH c AS (SELECT id FROM bench.raw_jobs WHERE status = 'queued' \
     ORDER BY id LIMIT $1 FOR UPDATE SKIP LOCKED) \
     UPDATE bench.raw_jobs j SET status = 'running' FROM c WHERE j.id = c.id RETURNING j.id";
const RAW_COMPLETE_SQL: &str = "UPDATE bench.raw_jobs SET status = 'done' WHERE id = ANY($1)";

/// The baselines' tables, as the seed document has them, and the same shape for the raw loop.
///
/// They are vacuumed but never analyzed (nor auto-analyzed: autovacuum is off for them), which
/// keeps their claims on the `(status, id)` index as in the reference pgbench runs. With fresh
/// statistics (nearly every row queued) the planner walks the primary key instead, filtering
/// out the done rows it passes, and the loops slow down quadratically as the table drains.
const SETUP_SQL: &str = r#"
CREATE SCHEMA bench;
GRANT USAGE ON SCHEMA bench TO pgstrata_app;
CREATE TABLE bench.seed_jobs (
    id          bigserial PRIMARY KEY,
    status      text NOT NULL DEFAULT 'queued',
    payload     jsonb,
    created_at  timestamptz DEFAULT now()
) WITH (autovacuum_enabled = false);
CREATE INDEX seed_jobs_status_id_idx ON bench.seed_jobs (status, id);
CREATE TABLE bench.raw_jobs (
    id          bigserial PRIMARY KEY,
    status      text NOT NULL DEFAULT 'queued',
    payload     jsonb,
    created_at  timestamptz DEFAULT now()
) WITH (autovacuum_enabled = false);
CREATE INDEX raw_jobs_status_id_idx ON bench.raw_jobs (status, id);
GRANT SELECT, INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA bench TO pgstrata_app;
GRANT USAGE ON ALL SEQUENCES IN SCHEMA bench TO pgstrata_app;
"#;

/// The drained job: its handler does nothing but count.
#[derive(Debug, Serialize, Deserialize)]
struct Noop {
    n: i64,
}

impl JobKind for Noop {
    const KIND: &'static str = "bench_noop";
}

#[derive(Debug)]
struct NoopHandler {
    ran: Arc<AtomicUsize>,
}

impl Handler<Noop> for NoopHandler {
    async fn handle(&self, _tx: &mut PgConnection, _job: Noop, _meta: &JobMeta) -> Result<(), HandlerError> {
        self.ran.fetch_add(1, Ordering::Relaxed);
        Ok(())
    }
}

/// A job that carries when it was enqueued, in microseconds since `PingHandler::base`.
#[derive(Debug, Serialize, Deserialize)]
struct Ping {
    sent_us: u64,
}

impl JobKind for Ping {
    const KIND: &'static str = "bench_ping";
}

#[derive(Debug)]
struct PingHandler {
    base: Instant,
    latencies: Arc<Mutex<Vec<Duration>>>,
}

impl Handler<Ping> for PingHandler {
    async fn handle(&self, _tx: &mut PgConnection, job: Ping, _meta: &JobMeta) -> Result<(), HandlerError> {
        let waited = self.base.elapsed().saturating_sub(Duration::from_micros(job.sent_us));
        if let Ok(mut latencies) = self.latencies.lock() {
            latencies.push(waited);
        }
        Ok(())
    }
}

/// One drain: how long `jobs` took.
#[derive(Debug, Clone, Copy, Default)]
struct Drain {
    seconds: f64,
    per_s: f64,
}

impl Drain {
    fn of(jobs: usize, took: Duration) -> Self {
        let seconds = took.as_secs_f64();
        Self {
            seconds,
            per_s: jobs as f64 / seconds,
        }
    }
}

/// The drained subjects, in the order of the first round.
#[derive(Debug, Clone, Copy)]
enum Subject {
    Pgstrata,
    Pgmq,
    Seed,
    Raw,
}

impl Subject {
    const ALL: [Subject; 4] = [Subject::Pgstrata, Subject::Pgmq, Subject::Seed, Subject::Raw];
}

/// One round: every subject drains the same number of jobs.
#[derive(Debug, Clone, Copy, Default)]
struct Round {
    enqueue: Drain,
    pgstrata: Drain,
    pgmq: Drain,
    seed: Drain,
    raw: Drain,
}

/// The round with the median rate of one subject.
fn median(rounds: &[Round], of: impl Fn(&Round) -> Drain) -> Drain {
    let mut drains: Vec<Drain> = rounds.iter().map(of).collect();
    drains.sort_by(|a, b| a.per_s.total_cmp(&b.per_s));
    drains.get(drains.len() / 2).copied().unwrap_or_default()
}

/// Claim latency at one backlog size.
#[derive(Debug, Clone)]
struct ClaimLatency {
    label: &'static str,
    backlog: i64,
    load_seconds: f64,
    p50_ms: f64,
    p99_ms: f64,
}

#[derive(Debug)]
struct Results {
    enqueue: Drain,
    pgstrata: Drain,
    pgmq: Drain,
    seed: Drain,
    raw: Drain,
    rounds: Vec<Round>,
    notify: Vec<Duration>,
    claims: Vec<ClaimLatency>,
}

/// The final JSON line; structs so that keys keep this order.
#[derive(Debug, Serialize)]
struct Summary {
    bench: &'static str,
    jobs: usize,
    rounds: usize,
    workers: usize,
    ops_per_s: u64,
    baseline: &'static str,
    baseline_ops_per_s: u64,
    ratio: f64,
    pgmq_ops_per_s: u64,
    ratio_to_pgmq: f64,
    /// The lowest per-round ratios: the goals hold in every round.
    min_round_ratio: f64,
    min_round_ratio_to_pgmq: f64,
    raw_batch_ops_per_s: u64,
    ratio_to_raw: f64,
    enqueue_batch_per_s: u64,
    notify_latency_ms: Percentiles,
    claim_ms: ClaimMs,
    config: &'static str,
    batch_size: usize,
    executors_per_worker: usize,
    pgmq_batch_size: i32,
    raw_batch_size: i64,
    goal_ratio: f64,
    goal_ratio_to_pgmq: f64,
}

#[derive(Debug, Serialize)]
struct Percentiles {
    p50: f64,
    p99: f64,
}

#[derive(Debug, Serialize)]
struct ClaimMs {
    #[serde(rename = "10k")]
    k10: f64,
    #[serde(rename = "1m")]
    m1: f64,
    ratio: f64,
}

/// Creates the scratch database, runs the bench in it, and drops it whatever happened.
pub async fn run(opts: &Options) -> Result<(), Box<dyn Error>> {
    let scratch = Scratch::create(&opts.url).await?;
    let outcome = bench(&scratch.options(), opts).await;
    scratch.finish(outcome, opts.keep_database).await
}

async fn bench(db: &PgConnectOptions, opts: &Options) -> Result<(), Box<dyn Error>> {
    let admin = PgPoolOptions::new().max_connections(2).connect_with(db.clone()).await?;
    pgstrata::Backend::all()?.migrate(&admin).await?;
    create_app_role(&admin).await?;
    create_worker_role(&admin).await?;
    sqlx::raw_sql(SETUP_SQL).execute(&admin).await?;
    install_pgmq(&admin).await?;
    // The request path enqueues only for a live tenant (tenancy V3).
    sqlx::query("INSERT INTO tenancy.tenants (id, slug, name) VALUES ($1, 'bench', 'bench')")
        .bind(bench_tenant().tenant_id.0)
        .execute(&admin)
        .await?;
    let app_db = db.clone().username(APP_ROLE).password(APP_ROLE);
    let worker_db = db.clone().username(WORKER_ROLE).password(WORKER_ROLE);
    let jobs = i64::try_from(opts.jobs)?;

    // The subjects drain in turn, in a different order each round, and each reports its median
    // round: on a shared two-core machine, one slow stretch then lands in one subject's round
    // instead of deciding the ratio.
    let mut rounds: Vec<Round> = Vec::with_capacity(opts.rounds);
    for round in 0..opts.rounds {
        eprintln!("Round {} of {}: {} jobs per subject", round + 1, opts.rounds, opts.jobs);
        let mut this = Round::default();
        for subject in Subject::ALL.iter().cycle().skip(round % 4).take(4) {
            // Each subject's table is loaded right before its drain, so that every drain starts
            // from the same state: a fresh, vacuumed table in the cache, after a checkpoint.
            match subject {
                Subject::Pgstrata => {
                    sqlx::query("TRUNCATE queue.jobs").execute(&admin).await?;
                    this.enqueue = Drain::of(opts.jobs, enqueue_drain_jobs(&app_db, opts.jobs).await?);
                    sqlx::query("VACUUM ANALYZE queue.jobs").execute(&admin).await?;
                    sqlx::query("CHECKPOINT").execute(&admin).await?;
                    eprintln!("  draining with {} pgstrata workers...", opts.workers);
                    this.pgstrata = Drain::of(opts.jobs, drain_pgstrata(&admin, &worker_db, opts, jobs).await?);
                }
                Subject::Pgmq => {
                    load_pgmq(&admin, jobs).await?;
                    eprintln!(
                        "  draining with {} pgmq readers (read {PGMQ_BATCH} + delete_batch)...",
                        opts.workers
                    );
                    this.pgmq = Drain::of(opts.jobs, drain_pgmq(&app_db, opts.workers).await?);
                    check_pgmq_done(&admin).await?;
                }
                Subject::Seed => {
                    load_baseline(&admin, "bench.seed_jobs", jobs).await?;
                    eprintln!("  draining with the seed loop on {} connections...", opts.workers);
                    this.seed = Drain::of(opts.jobs, drain_loop(&app_db, opts.workers, Loop::Seed).await?);
                    check_done(&admin, "bench.seed_jobs", jobs).await?;
                }
                Subject::Raw => {
                    load_baseline(&admin, "bench.raw_jobs", jobs).await?;
                    eprintln!("  draining with the raw batch loop on {} connections...", opts.workers);
                    this.raw = Drain::of(opts.jobs, drain_loop(&app_db, opts.workers, Loop::RawBatch).await?);
                    check_done(&admin, "bench.raw_jobs", jobs).await?;
                }
            }
        }
        rounds.push(this);
    }

    eprintln!("Measuring enqueue-to-start latency...");
    let notify = notify_latency(&app_db, &worker_db, opts).await?;

    let mut claims = Vec::new();
    for (label, backlog) in BACKLOGS {
        eprintln!("Measuring claim latency at {backlog} ready jobs...");
        claims.push(claim_latency(&admin, &worker_db, label, backlog).await?);
    }
    admin.close().await;

    report(
        &Results {
            enqueue: median(&rounds, |r| r.enqueue),
            pgstrata: median(&rounds, |r| r.pgstrata),
            pgmq: median(&rounds, |r| r.pgmq),
            seed: median(&rounds, |r| r.seed),
            raw: median(&rounds, |r| r.raw),
            rounds: rounds.clone(),
            notify,
            claims,
        },
        opts,
    )?;
    Ok(())
}

/// A pool of a login role with every connection already open, so that connecting is not
/// counted as working.
async fn app_pool(app_db: &PgConnectOptions, size: usize) -> Result<PgPool, Box<dyn Error>> {
    let pool = PgPoolOptions::new()
        .max_connections(u32::try_from(size)?)
        .connect_with(app_db.clone())
        .await?;
    let mut open = Vec::with_capacity(size);
    for _ in 0..size {
        open.push(pool.acquire().await?);
    }
    drop(open);
    Ok(pool)
}

/// The tenant the application enqueues for.
fn bench_tenant() -> pgstrata::TenantContext {
    pgstrata::TenantContext::tenant(pgstrata::TenantId(uuid::Uuid::from_u128(0x7067_7374_7261_7461)))
}

/// Enqueues the drained jobs as the application would, `ENQUEUE_CHUNK` per statement, each
/// chunk in its own tenant transaction; returns how long it took.
async fn enqueue_drain_jobs(app_db: &PgConnectOptions, jobs: usize) -> Result<Duration, Box<dyn Error>> {
    let pool = app_pool(app_db, 1).await?;
    let started = Instant::now();
    let mut n = 0i64;
    let mut left = jobs;
    while left > 0 {
        let size = left.min(ENQUEUE_CHUNK);
        let mut chunk = Vec::with_capacity(size);
        for _ in 0..size {
            n += 1;
            chunk.push(NewJob::of(&Noop { n })?);
        }
        let mut tx = pgstrata::begin_tenant(&pool, &bench_tenant()).await?;
        let ids = client::enqueue_many(&mut tx, &chunk).await?;
        tx.commit().await?;
        if ids.len() != size {
            return Err(format!("enqueue_many returned {} ids for {size} jobs", ids.len()).into());
        }
        left -= size;
    }
    let took = started.elapsed();
    pool.close().await;
    Ok(took)
}

/// Runs `workers` pgstrata workers, each with its own pool, until every job of the drain queue
/// is completed; returns the wall time from starting them to the last completion seen.
async fn drain_pgstrata(
    admin: &PgPool,
    worker_db: &PgConnectOptions,
    opts: &Options,
    jobs: i64,
) -> Result<Duration, Box<dyn Error>> {
    let ran = Arc::new(AtomicUsize::new(0));
    let mut pools = Vec::with_capacity(opts.workers);
    for _ in 0..opts.workers {
        // Executors, the listener, maintenance and the batches' heartbeats.
        pools.push(app_pool(worker_db, worker_config(DRAIN_QUEUE, opts).concurrency + 3).await?);
    }
    let token = CancellationToken::new();
    let started = Instant::now();
    let mut handles = Vec::with_capacity(opts.workers);
    for pool in &pools {
        let config = worker_config(DRAIN_QUEUE, opts);
        let worker = Worker::new(pool.clone(), config)?.register::<Noop, _>(NoopHandler { ran: ran.clone() });
        handles.push(tokio::spawn(worker.run(token.clone())));
    }
    let outcome = wait_completed(admin, &ran, jobs, started, &handles).await;
    let took = started.elapsed();
    token.cancel();
    for handle in handles {
        handle.await??;
    }
    for pool in pools {
        pool.close().await;
    }
    outcome?;
    Ok(took)
}

/// The default WorkerConfig, unless the command line overrides its executors or batch size.
fn worker_config(queue: &str, opts: &Options) -> WorkerConfig {
    let mut config = WorkerConfig::new(queue);
    if let Some(executors) = opts.executors {
        config.concurrency = executors;
    }
    if let Some(batch_size) = opts.batch_size {
        config.batch_size = batch_size;
    }
    config
}

/// Installs pgmq from the SQL embedded in the pgmq crate, creates the drained queue, and lets
/// the application role use it (as it runs the baselines).
async fn install_pgmq(admin: &PgPool) -> Result<(), Box<dyn Error>> {
    let pgmq = pgmq::PGMQueueExt::new_with_pool(admin.clone()).await;
    pgmq.install_sql_from_embedded().await?;
    pgmq.create(PGMQ_QUEUE).await?;
    sqlx::raw_sql(
        "GRANT USAGE ON SCHEMA pgmq TO pgstrata_app;
         GRANT SELECT, INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA pgmq TO pgstrata_app;
         GRANT USAGE ON ALL SEQUENCES IN SCHEMA pgmq TO pgstrata_app;",
    )
    .execute(admin)
    .await?;
    Ok(())
}

/// Empties the pgmq queue and sends `jobs` messages with pgmq.send_batch (not measured), then
/// vacuums and checkpoints like the other subjects' loads.
async fn load_pgmq(admin: &PgPool, jobs: i64) -> Result<(), Box<dyn Error>> {
    sqlx::query("SELECT pgmq.purge_queue($1)")
        .bind(PGMQ_QUEUE)
        .execute(admin)
        .await?;
    sqlx::query(
        "SELECT count(*) FROM pgmq.send_batch($1, (SELECT array_agg(jsonb_build_object('n', g))          FROM generate_series(1, $2) AS g))",
    )
    .bind(PGMQ_QUEUE)
    .bind(jobs)
    .execute(admin)
    .await?;
    trusted(format!("VACUUM ANALYZE pgmq.q_{PGMQ_QUEUE}"))
        .execute(admin)
        .await?;
    sqlx::query("CHECKPOINT").execute(admin).await?;
    Ok(())
}

/// `workers` connections each reading PGMQ_BATCH messages with pgmq's client and deleting them
/// with one delete_batch, until a read finds nothing; returns the wall time.
async fn drain_pgmq(app_db: &PgConnectOptions, workers: usize) -> Result<Duration, Box<dyn Error>> {
    let pool = app_pool(app_db, workers).await?;
    let pgmq = Arc::new(pgmq::PGMQueueExt::new_with_pool(pool.clone()).await);
    let started = Instant::now();
    let mut tasks = Vec::with_capacity(workers);
    for _ in 0..workers {
        let (pool, pgmq) = (pool.clone(), pgmq.clone());
        tasks.push(tokio::spawn(async move {
            let mut conn = pool.acquire().await?;
            let mut done = 0usize;
            loop {
                let read: Vec<pgmq::types::Message> = pgmq
                    .read_batch_with_cxn(PGMQ_QUEUE, PGMQ_VT_SECS, PGMQ_BATCH, &mut *conn)
                    .await?;
                if read.is_empty() {
                    break;
                }
                let ids: Vec<i64> = read.iter().map(|m| m.msg_id).collect();
                pgmq.delete_batch_with_cxn(PGMQ_QUEUE, &ids, &mut *conn).await?;
                done += ids.len();
            }
            Ok::<usize, pgmq::PgmqError>(done)
        }));
    }
    let mut total = 0;
    for task in tasks {
        total += task.await??;
    }
    let took = started.elapsed();
    pool.close().await;
    eprintln!("  {total} jobs in {:.2} s", took.as_secs_f64());
    Ok(took)
}

/// Fails unless pgmq's queue is empty.
async fn check_pgmq_done(admin: &PgPool) -> Result<(), Box<dyn Error>> {
    let (left,): (i64,) = trusted_as(format!("SELECT count(*) FROM pgmq.q_{PGMQ_QUEUE}"))
        .fetch_one(admin)
        .await?;
    if left != 0 {
        return Err(format!("pgmq: {left} messages left").into());
    }
    Ok(())
}

/// Waits until `jobs` jobs of the drain queue are completed, looking every DRAIN_POLL. The
/// count is only asked of the database once the handlers have run that many times, so that
/// counting does not compete with the workers for the two cores.
async fn wait_completed(
    admin: &PgPool,
    ran: &AtomicUsize,
    jobs: i64,
    started: Instant,
    handles: &[JoinHandle<pgstrata::queue::Result<()>>],
) -> Result<(), Box<dyn Error>> {
    let target = usize::try_from(jobs)?;
    loop {
        tokio::time::sleep(DRAIN_POLL).await;
        if ran.load(Ordering::Relaxed) >= target {
            let done: i64 =
                sqlx::query_scalar("SELECT count(*) FROM queue.jobs WHERE queue = $1 AND state = 'completed'")
                    .bind(DRAIN_QUEUE)
                    .fetch_one(admin)
                    .await?;
            if done >= jobs {
                return Ok(());
            }
        }
        if handles.iter().any(JoinHandle::is_finished) {
            return Err("a worker stopped before the queue was drained".into());
        }
        if started.elapsed() > DRAIN_TIMEOUT {
            return Err(format!("the workers did not drain {jobs} jobs in {} s", DRAIN_TIMEOUT.as_secs()).into());
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Loop {
    /// One job per claim statement, then one completing statement.
    Seed,
    /// RAW_BATCH jobs per claim statement, then one completing statement.
    RawBatch,
}

/// Runs `workers` connections looping over a baseline's claim and complete statements until
/// nothing is left to claim; returns the wall time.
async fn drain_loop(app_db: &PgConnectOptions, workers: usize, kind: Loop) -> Result<Duration, Box<dyn Error>> {
    let pool = app_pool(app_db, workers).await?;
    let started = Instant::now();
    let mut tasks = Vec::with_capacity(workers);
    for _ in 0..workers {
        let pool = pool.clone();
        tasks.push(tokio::spawn(async move {
            let mut conn = pool.acquire().await?;
            let mut done = 0usize;
            loop {
                match kind {
                    Loop::Seed => {
                        let claimed: Option<i64> =
                            sqlx::query_scalar(SEED_CLAIM_SQL).fetch_optional(&mut *conn).await?;
                        let Some(id) = claimed else { break };
                        sqlx::query(SEED_COMPLETE_SQL).bind(id).execute(&mut *conn).await?;
                        done += 1;
                    }
                    Loop::RawBatch => {
                        let ids: Vec<i64> = sqlx::query_scalar(RAW_CLAIM_SQL)
                            .bind(RAW_BATCH)
                            .fetch_all(&mut *conn)
                            .await?;
                        if ids.is_empty() {
                            break;
                        }
                        sqlx::query(RAW_COMPLETE_SQL).bind(&ids).execute(&mut *conn).await?;
                        done += ids.len();
                    }
                }
            }
            Ok::<usize, sqlx::Error>(done)
        }));
    }
    let mut total = 0;
    for task in tasks {
        total += task.await??;
    }
    let took = started.elapsed();
    pool.close().await;
    eprintln!("  {total} jobs in {:.2} s", took.as_secs_f64());
    Ok(took)
}

/// Empties a baseline table and loads `jobs` queued jobs, set-based (not measured); vacuumed
/// but not analyzed (see SETUP_SQL), then a checkpoint.
async fn load_baseline(admin: &PgPool, table: &str, jobs: i64) -> Result<(), Box<dyn Error>> {
    trusted(format!("TRUNCATE {table}")).execute(admin).await?;
    trusted(format!(
        "INSERT INTO {table} (payload) SELECT jsonb_build_object('n', g) FROM generate_series(1, $1) AS g"
    ))
    .bind(jobs)
    .execute(admin)
    .await?;
    trusted(format!("VACUUM {table}")).execute(admin).await?;
    sqlx::query("CHECKPOINT").execute(admin).await?;
    Ok(())
}

/// Fails unless every job of a baseline table is done.
async fn check_done(admin: &PgPool, table: &str, jobs: i64) -> Result<(), Box<dyn Error>> {
    let (done,): (i64,) = trusted_as(format!("SELECT count(*) FROM {table} WHERE status = 'done'"))
        .fetch_one(admin)
        .await?;
    if done != jobs {
        return Err(format!("{table}: {done} of {jobs} jobs done").into());
    }
    Ok(())
}

/// With `workers` idle workers listening (polling only every 5 s), enqueues single jobs one at
/// a time, each in its own committed statement, and records how long each waited from just
/// before its enqueue to its handler starting.
async fn notify_latency(
    app_db: &PgConnectOptions,
    worker_db: &PgConnectOptions,
    opts: &Options,
) -> Result<Vec<Duration>, Box<dyn Error>> {
    let base = Instant::now();
    let latencies = Arc::new(Mutex::new(Vec::with_capacity(NOTIFY_JOBS + NOTIFY_WARMUP)));
    let mut pools = Vec::with_capacity(opts.workers);
    for _ in 0..opts.workers {
        pools.push(app_pool(worker_db, worker_config(NOTIFY_QUEUE, opts).concurrency + 3).await?);
    }
    let token = CancellationToken::new();
    let mut handles = Vec::with_capacity(opts.workers);
    for pool in &pools {
        let mut config = worker_config(NOTIFY_QUEUE, opts);
        config.poll_interval = NOTIFY_POLL_INTERVAL;
        config.listen = true;
        let worker = Worker::new(pool.clone(), config)?.register::<Ping, _>(PingHandler {
            base,
            latencies: latencies.clone(),
        });
        handles.push(tokio::spawn(worker.run(token.clone())));
    }
    let outcome = async {
        // Let every worker connect its listener and every executor find the queue empty.
        tokio::time::sleep(Duration::from_secs(1)).await;
        let producer = app_pool(app_db, 1).await?;
        // Warm-up (statement caches, the listeners), then forget it.
        send_pings(&producer, base, NOTIFY_WARMUP).await?;
        wait_for_pings(&latencies, NOTIFY_WARMUP).await?;
        if let Ok(mut l) = latencies.lock() {
            l.clear();
        }
        send_pings(&producer, base, NOTIFY_JOBS).await?;
        producer.close().await;
        wait_for_pings(&latencies, NOTIFY_JOBS).await
    }
    .await;
    token.cancel();
    for handle in handles {
        handle.await??;
    }
    for pool in pools {
        pool.close().await;
    }
    outcome?;
    let mut samples = latencies.lock().map(|l| l.clone()).map_err(|e| e.to_string())?;
    samples.sort_unstable();
    Ok(samples)
}

/// Enqueues `count` pings one at a time, each in its own tenant transaction, NOTIFY_SPACING
/// apart.
async fn send_pings(producer: &PgPool, base: Instant, count: usize) -> Result<(), Box<dyn Error>> {
    for _ in 0..count {
        let sent_us = u64::try_from(base.elapsed().as_micros())?;
        let mut tx = pgstrata::begin_tenant(producer, &bench_tenant()).await?;
        client::enqueue(&mut tx, &NewJob::of(&Ping { sent_us })?.queue(NOTIFY_QUEUE)).await?;
        tx.commit().await?;
        tokio::time::sleep(NOTIFY_SPACING).await;
    }
    Ok(())
}

/// Waits until `count` pings have started; a missed notification waits up to the poll
/// interval, so stragglers are given that long.
async fn wait_for_pings(latencies: &Mutex<Vec<Duration>>, count: usize) -> Result<(), Box<dyn Error>> {
    let deadline = Instant::now() + NOTIFY_POLL_INTERVAL + Duration::from_secs(5);
    loop {
        let seen = latencies.lock().map(|l| l.len()).unwrap_or(0);
        if seen >= count {
            return Ok(());
        }
        if Instant::now() > deadline {
            return Err(format!("only {seen} of {count} notified jobs started in time").into());
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Grows the claim queue's ready backlog (spread over CLAIM_TENANTS tenants) so that `backlog`
/// jobs are left after the measured claims, then times sequential `queue.claim` calls of
/// CLAIM_LIMIT jobs as the worker role. Claimed jobs stay running.
async fn claim_latency(
    admin: &PgPool,
    worker_db: &PgConnectOptions,
    label: &'static str,
    backlog: i64,
) -> Result<ClaimLatency, Box<dyn Error>> {
    let claimed = i64::try_from((CLAIM_WARMUP + CLAIM_CALLS) * usize::try_from(CLAIM_LIMIT)?)?;
    let available: i64 = sqlx::query_scalar("SELECT count(*) FROM queue.jobs WHERE queue = $1 AND state = 'available'")
        .bind(CLAIM_QUEUE)
        .fetch_one(admin)
        .await?;
    let add = (backlog + claimed - available).max(0);
    let started = Instant::now();
    sqlx::query(
        "INSERT INTO queue.jobs (queue, kind, tenant_id, payload)
         SELECT $1, 'bench_noop', md5('pgstrata-bench-claim-tenant-' || (g % $3))::uuid, jsonb_build_object('n', g)
           FROM generate_series($4 + 1, $4 + $2) AS g",
    )
    .bind(CLAIM_QUEUE)
    .bind(add)
    .bind(CLAIM_TENANTS)
    .bind(available)
    .execute(admin)
    .await?;
    sqlx::query("VACUUM ANALYZE queue.jobs").execute(admin).await?;
    let load_seconds = started.elapsed().as_secs_f64();
    // The load wrote hundreds of MB of WAL: checkpoint now rather than in the middle of the
    // measured claims, as before each drain.
    sqlx::query("CHECKPOINT").execute(admin).await?;

    let pool = app_pool(worker_db, 1).await?;
    let mut conn = pool.acquire().await?;
    let lease = Duration::from_secs(60);
    for _ in 0..CLAIM_WARMUP {
        client::claim(&mut conn, CLAIM_QUEUE, CLAIM_LIMIT, "w", lease).await?;
    }
    let mut samples = Vec::with_capacity(CLAIM_CALLS);
    for _ in 0..CLAIM_CALLS {
        let started = Instant::now();
        let jobs = client::claim(&mut conn, CLAIM_QUEUE, CLAIM_LIMIT, "w", lease).await?;
        samples.push(started.elapsed());
        if jobs.len() != usize::try_from(CLAIM_LIMIT)? {
            return Err(format!("a claim at {label} returned {} jobs", jobs.len()).into());
        }
    }
    drop(conn);
    pool.close().await;
    samples.sort_unstable();
    Ok(ClaimLatency {
        label,
        backlog,
        load_seconds,
        p50_ms: percentile_ms(&samples, 0.50),
        p99_ms: percentile_ms(&samples, 0.99),
    })
}

fn yes_no(ok: bool) -> &'static str {
    if ok { "yes" } else { "no" }
}

fn report(r: &Results, opts: &Options) -> Result<(), serde_json::Error> {
    let config = worker_config(DRAIN_QUEUE, opts);
    let ratio = r.pgstrata.per_s / r.seed.per_s;
    let ratio_to_pgmq = r.pgstrata.per_s / r.pgmq.per_s;
    let min_round = |of: fn(&Round) -> f64| r.rounds.iter().map(of).fold(f64::INFINITY, f64::min);
    let min_round_ratio = min_round(|x| x.pgstrata.per_s / x.seed.per_s);
    let min_round_ratio_to_pgmq = min_round(|x| x.pgstrata.per_s / x.pgmq.per_s);
    let ratio_to_raw = r.pgstrata.per_s / r.raw.per_s;
    let notify_p50 = percentile_ms(&r.notify, 0.50);
    let notify_p99 = percentile_ms(&r.notify, 0.99);
    let claim_p50 = |label: &str| {
        r.claims
            .iter()
            .find(|c| c.label == label)
            .map_or(f64::NAN, |c| c.p50_ms)
    };
    let claim_ratio = claim_p50("1m") / claim_p50("10k");

    println!();
    println!(
        "queue bench: {} no-op jobs per subject, {} workers; jobs enqueued by a pgstrata_app login \
         role in a tenant transaction and run by a pgstrata_worker one (baselines: pgstrata_app)",
        opts.jobs, opts.workers
    );
    println!(
        "pgstrata: {} Workers on {} WorkerConfig ({} executor(s) each, claims of up to {} jobs), a \
         typed no-op handler, claim + handler transaction + complete_many",
        opts.workers,
        if opts.executors.is_none() && opts.batch_size.is_none() {
            "the default"
        } else {
            "a tuned"
        },
        config.concurrency,
        config.batch_size
    );
    println!(
        "pgmq: pgmq crate 0.34.0-alpha.7 client and SQL, read_batch of {PGMQ_BATCH} (vt {PGMQ_VT_SECS} s) then \
         delete_batch, {} connections",
        opts.workers
    );
    println!("seed loop: {SEED_CLAIM_SQL}; then {SEED_COMPLETE_SQL}");
    println!("raw batch: {RAW_CLAIM_SQL} (LIMIT {RAW_BATCH}); then {RAW_COMPLETE_SQL}");
    println!();
    println!(
        "jobs/s per round (pgstrata / pgmq / seed / raw): {}",
        r.rounds
            .iter()
            .map(|x| {
                format!(
                    "{:.0} / {:.0} / {:.0} / {:.0}",
                    x.pgstrata.per_s, x.pgmq.per_s, x.seed.per_s, x.raw.per_s
                )
            })
            .collect::<Vec<_>>()
            .join(", ")
    );
    println!(
        "{:<46} | {:>10} {:>9} {:>8}",
        "drain, median of rounds (same worker count)", "jobs/s", "seconds", "vs seed"
    );
    println!("{}", "-".repeat(78));
    for (label, d) in [
        ("pgstrata Worker", r.pgstrata),
        ("pgmq read 50 + delete_batch", r.pgmq),
        ("seed single-statement SKIP LOCKED loop", r.seed),
        ("raw batch limit (no handler dispatch)", r.raw),
    ] {
        println!(
            "{:<46} | {:>10.0} {:>9.2} {:>7.2}x",
            label,
            d.per_s,
            d.seconds,
            d.per_s / r.seed.per_s
        );
    }
    println!();
    println!(
        "pgstrata / seed loop = {ratio:.2}x, lowest round {min_round_ratio:.2}x (goal: at least {GOAL_RATIO}x in every round): {}",
        yes_no(min_round_ratio >= GOAL_RATIO)
    );
    println!(
        "pgstrata / pgmq = {ratio_to_pgmq:.2}x, lowest round {min_round_ratio_to_pgmq:.2}x (goal: at least \
         {GOAL_RATIO_TO_PGMQ}x in every round): {}",
        yes_no(min_round_ratio_to_pgmq >= GOAL_RATIO_TO_PGMQ)
    );
    println!("pgstrata / raw batch limit = {ratio_to_raw:.2}");
    println!(
        "batch enqueue (enqueue_many, {ENQUEUE_CHUNK} per statement): {:.0} jobs/s ({} jobs in {:.2} s)",
        r.enqueue.per_s, opts.jobs, r.enqueue.seconds
    );
    println!(
        "enqueue-to-start latency (LISTEN/NOTIFY, poll every {} s, {} idle workers, {} single jobs \
         {} ms apart): p50 {notify_p50:.2} ms, p99 {notify_p99:.2} ms, max {:.2} ms",
        NOTIFY_POLL_INTERVAL.as_secs(),
        opts.workers,
        r.notify.len(),
        NOTIFY_SPACING.as_millis(),
        percentile_ms(&r.notify, 1.0)
    );
    println!();
    println!(
        "queue.claim of {CLAIM_LIMIT} ({CLAIM_CALLS} sequential calls after {CLAIM_WARMUP} warm-up, \
         backlog over {CLAIM_TENANTS} tenants):"
    );
    println!(
        "{:>12} | {:>8} {:>8} | {:>12}",
        "ready jobs", "p50 ms", "p99 ms", "load s"
    );
    println!("{}", "-".repeat(48));
    for c in &r.claims {
        println!(
            "{:>12} | {:>8.3} {:>8.3} | {:>12.1}",
            c.backlog, c.p50_ms, c.p99_ms, c.load_seconds
        );
    }
    println!(
        "claim p50 at 1m / at 10k = {claim_ratio:.2}x (goal: within {CLAIM_FLATNESS_GOAL}x): {}",
        yes_no(claim_ratio <= CLAIM_FLATNESS_GOAL)
    );

    let summary = Summary {
        bench: "queue",
        jobs: opts.jobs,
        rounds: opts.rounds,
        workers: opts.workers,
        ops_per_s: r.pgstrata.per_s.round() as u64,
        baseline: BASELINE_LABEL,
        baseline_ops_per_s: r.seed.per_s.round() as u64,
        ratio: round(ratio, 2),
        pgmq_ops_per_s: r.pgmq.per_s.round() as u64,
        ratio_to_pgmq: round(ratio_to_pgmq, 3),
        min_round_ratio: round(min_round_ratio, 2),
        min_round_ratio_to_pgmq: round(min_round_ratio_to_pgmq, 3),
        raw_batch_ops_per_s: r.raw.per_s.round() as u64,
        ratio_to_raw: round(ratio_to_raw, 3),
        enqueue_batch_per_s: r.enqueue.per_s.round() as u64,
        notify_latency_ms: Percentiles {
            p50: round(notify_p50, 3),
            p99: round(notify_p99, 3),
        },
        claim_ms: ClaimMs {
            k10: round(claim_p50("10k"), 4),
            m1: round(claim_p50("1m"), 4),
            ratio: round(claim_ratio, 3),
        },
        config: if opts.executors.is_none() && opts.batch_size.is_none() {
            "default"
        } else {
            "tuned"
        },
        batch_size: config.batch_size,
        executors_per_worker: config.concurrency,
        pgmq_batch_size: PGMQ_BATCH,
        raw_batch_size: RAW_BATCH,
        goal_ratio: GOAL_RATIO,
        goal_ratio_to_pgmq: GOAL_RATIO_TO_PGMQ,
    };
    let line = serde_json::to_string(&summary)?;
    println!();
    println!("{line}");
    Ok(())
}
