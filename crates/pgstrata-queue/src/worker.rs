//! The worker runtime: `concurrency` executors each claim a batch of jobs of one queue, run the
//! typed handlers, heartbeat the batch's leases, and complete it; a maintenance task rescues
//! jobs of dead workers and promotes due ones; a listener wakes idle executors.
//!
//! A batch runs in one transaction (each handler in its job's tenant context) that ends with
//! `queue.complete_many`: the handlers' database writes and the completions commit together,
//! one commit per batch. If a handler fails, panics or times out, or a job was rescued or
//! cancelled meanwhile, the whole transaction rolls back and each job of the batch runs again
//! alone in its own transaction, where a failure is recorded with `queue.fail`. So database
//! effects commit exactly once per completed job; effects outside the database may repeat
//! (at-least-once), and a failing job costs its batch-mates one replay.
//!
//! Nothing ends a worker but its cancellation token: database errors are logged and retried
//! with backoff (a lost connection is replaced), a panicking handler fails its job, and a task
//! that panics anyway is started again.

use crate::client;
use crate::error::{Error, Result};
use crate::generated::Job;
use crate::ids::JobId;
use chrono::{DateTime, Utc};
use pgstrata_core::{CancellationToken, TenantContext, TenantId, UserId};
use serde::Serialize;
use serde::de::DeserializeOwned;
use sqlx::pool::PoolConnection;
use sqlx::postgres::PgListener;
use sqlx::{Connection, PgConnection, PgPool, Postgres};
use std::collections::HashMap;
use std::future::Future;
use std::hash::BuildHasher;
use std::panic::AssertUnwindSafe;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::sync::Notify;

/// Runs `$body` with `$c` bound to the connection, inside a transaction of its own when
/// `$pooled` (a transaction pooler keeps one server session only for a transaction). `$body`
/// uses `?` on the crate's `Result`.
macro_rules! autocommit {
    ($pooled:expr, $conn:expr, |$c:ident| $body:expr) => {{
        let conn: &mut PgConnection = $conn;
        if $pooled {
            let mut tx = Connection::begin(conn).await?;
            let out = {
                let $c: &mut PgConnection = &mut *tx;
                $body
            };
            tx.commit().await?;
            out
        } else {
            let $c: &mut PgConnection = conn;
            $body
        }
    }};
}
use tokio::task::JoinSet;
use tracing::Instrument;

/// A boxed, sendable future (what handlers returned before they could be `async fn`s).
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;
/// What a handler may fail with; its text is stored in the job's error history. A [`Control`]
/// returned as the error asks for another outcome than a failure.
pub type HandlerError = Box<dyn std::error::Error + Send + Sync>;

/// A typed job payload, and how jobs of its kind are run.
pub trait JobKind: Serialize + DeserializeOwned + Send + 'static {
    /// The `kind` column value that routes to this payload's handler.
    const KIND: &'static str;
    /// Attempts before a failing job is discarded ([`crate::NewJob::of`] sets it).
    const MAX_ATTEMPTS: i32 = 20;
    /// How long one attempt may run before it fails as timed out; `None`: no limit. A job's
    /// own [`crate::NewJob::timeout`] overrides it.
    const TIMEOUT: Option<Duration> = None;
    /// How long to wait before the next attempt after failed attempt `attempt` (1 for the
    /// first); `None`: the queue's exponential backoff (about 2^attempt s, at most an hour).
    fn backoff(attempt: i32) -> Option<Duration> {
        let _ = attempt;
        None
    }
}

/// What a handler knows about the job it runs.
#[derive(Debug, Clone, PartialEq)]
pub struct JobMeta {
    pub id: JobId,
    pub attempt: i32,
    pub max_attempts: i32,
    pub queue: String,
    /// The tenant whose context the handler runs in. `Some`: the job may have been enqueued
    /// by that tenant's request path, with any kind, queue and payload, so treat its payload as
    /// that tenant's input. `None`: a system job, which only a `pgstrata_worker` role can
    /// enqueue; a handler meant for system work checks for it.
    pub tenant_id: Option<TenantId>,
    /// The acting user of the transaction that enqueued the job, set as `app.actor_id` while
    /// the handler runs (so audit records name who caused them).
    pub actor_id: Option<UserId>,
    /// The request id of that transaction, set as `app.request_id` while the handler runs.
    pub request_id: Option<String>,
}

impl JobMeta {
    /// The tenant context the handler runs in (`None` for a system job). A handler that
    /// enqueues a follow-up job for its tenant opens it as a savepoint of the job's transaction,
    /// `begin_tenant(&mut *tx, &ctx)`, and calls [`crate::client::enqueue`] with it, so the
    /// follow-up commits with the job.
    pub fn context(&self) -> Option<TenantContext> {
        self.tenant_id.map(|tenant_id| TenantContext {
            tenant_id,
            actor_id: self.actor_id,
            request_id: self.request_id.clone(),
        })
    }
}

/// Runs jobs of one kind. `tx` is the job's transaction: write through it so the effects
/// commit with the completion. Implement it with an `async fn`:
///
/// ```
/// use pgstrata_queue::worker::HandlerError;
/// use pgstrata_queue::{Handler, JobKind, JobMeta};
///
/// #[derive(serde::Serialize, serde::Deserialize)]
/// struct Welcome { email: String }
/// impl JobKind for Welcome { const KIND: &'static str = "welcome"; }
///
/// struct Mailer;
/// impl Handler<Welcome> for Mailer {
///     async fn handle(&self, tx: &mut sqlx::PgConnection, job: Welcome, meta: &JobMeta) -> Result<(), HandlerError> {
///         sqlx::query("SELECT $1::text, $2::bigint").bind(&job.email).bind(meta.id.0).execute(tx).await?;
///         Ok(())
///     }
/// }
/// ```
///
/// Handlers written before as `fn handle<'a>(..) -> BoxFuture<'a, ..>` (a boxed future) still
/// compile; the compiler suggests `#[allow(refining_impl_trait)]` or the `async fn` form.
pub trait Handler<J: JobKind>: Send + Sync + 'static {
    fn handle<'a>(
        &'a self,
        tx: &'a mut PgConnection,
        job: J,
        meta: &'a JobMeta,
    ) -> impl Future<Output = Result<(), HandlerError>> + Send + 'a;
}

/// Outcomes of an attempt besides success and failure, returned as a handler's error
/// (`Err(Control::Snooze(..).into())`). Like a failure, each rolls back the handler's writes.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Control {
    /// Run again after this long, without spending an attempt.
    Snooze(Duration),
    /// Never run again: the job is cancelled, with this reason in its error history.
    Cancel(String),
    /// A failed attempt whose retry is at this time rather than after the backoff (discarded
    /// when out of attempts, like any failure).
    RetryAt(DateTime<Utc>, String),
}

impl std::fmt::Display for Control {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Control::Snooze(d) => write!(f, "snoozed for {d:?}"),
            Control::Cancel(reason) => write!(f, "cancelled: {reason}"),
            Control::RetryAt(at, error) => write!(f, "{error} (retry at {at})"),
        }
    }
}

impl std::error::Error for Control {}

type Erased = Arc<
    dyn for<'a> Fn(&'a mut PgConnection, &serde_json::Value, &'a JobMeta) -> BoxFuture<'a, Result<(), HandlerError>>
        + Send
        + Sync,
>;

/// A registered kind: its handler and the settings its [`JobKind`] declares.
struct Kind {
    run: Erased,
    timeout: Option<Duration>,
    backoff: fn(i32) -> Option<Duration>,
}

/// How a worker behaves. [`WorkerConfig::new`] is tuned for throughput and latency alike: keep
/// its values unless a measurement says otherwise.
#[derive(Debug, Clone)]
pub struct WorkerConfig {
    pub queue: String,
    /// Executors running batches at once.
    pub concurrency: usize,
    /// The most jobs one executor claims and commits together (1 to 1000; 1 gives a
    /// transaction per job). Each claim asks for twice what the last one found, up to this, so
    /// a backlog is drained in large batches and a trickle in small ones.
    pub batch_size: usize,
    /// How long a claim lasts without a heartbeat; heartbeats run every third of it.
    pub lease: Duration,
    /// How often an idle executor looks for work when no notification arrives.
    pub poll_interval: Duration,
    /// How often to promote due jobs, rescue expired leases and enqueue periodic jobs.
    pub maintenance_interval: Duration,
    /// After the cancellation token fires, how long running batches may take to finish; then
    /// they are abandoned (rolled back) and their jobs return through the rescuer when their
    /// leases expire.
    pub shutdown_timeout: Duration,
    /// Listen for enqueue notifications (off behind a transaction-mode pooler: see
    /// [`WorkerConfig::behind_pooler`]).
    pub listen: bool,
    /// Connected through a transaction-mode pooler (PgBouncer): every statement runs in a
    /// transaction of its own, since the pooler may give each round trip outside a
    /// transaction another server session, and sqlx parses a statement and executes it in two.
    pub pooled: bool,
    /// Name recorded on claimed jobs.
    pub name: String,
    /// Cron schedules this worker enqueues (exactly once per period across all workers).
    pub periodic: Vec<crate::Periodic>,
    /// More queues this worker serves, each with its own executors (queue, concurrency):
    /// [`WorkerConfig::with_queue`].
    pub more_queues: Vec<(String, usize)>,
}

impl WorkerConfig {
    pub fn new(queue: impl Into<String>) -> Self {
        Self {
            queue: queue.into(),
            concurrency: 1,
            batch_size: 500,
            lease: Duration::from_secs(60),
            poll_interval: Duration::from_millis(500),
            maintenance_interval: Duration::from_secs(1),
            shutdown_timeout: Duration::from_secs(30),
            listen: true,
            pooled: false,
            name: format!("worker-{}-{}", std::process::id(), uuid::Uuid::now_v7().simple()),
            periodic: Vec::new(),
            more_queues: Vec::new(),
        }
    }

    /// Serves `queue` too, with `concurrency` executors of its own, so that a slow queue and a
    /// fast one run side by side without one taking the other's executors. Batch size, lease
    /// and polling are shared.
    ///
    /// ```
    /// let config = pgstrata_queue::WorkerConfig::new("default").with_queue("reports", 2);
    /// assert_eq!(config.queues(), [("default", 1), ("reports", 2)]);
    /// ```
    pub fn with_queue(mut self, queue: impl Into<String>, concurrency: usize) -> Self {
        self.more_queues.push((queue.into(), concurrency));
        self
    }

    /// For a pool connected through a transaction-mode pooler: no LISTEN (a notification needs
    /// a session of its own), polling instead, and each statement in its own transaction.
    pub fn behind_pooler(mut self) -> Self {
        self.listen = false;
        self.pooled = true;
        self
    }

    /// Every queue this worker serves, with its executors: [`WorkerConfig::queue`] with
    /// [`WorkerConfig::concurrency`] first.
    pub fn queues(&self) -> Vec<(&str, usize)> {
        std::iter::once((self.queue.as_str(), self.concurrency.max(1)))
            .chain(self.more_queues.iter().map(|(q, c)| (q.as_str(), (*c).max(1))))
            .collect()
    }
}

/// A worker for one queue. Register handlers, then [`Worker::run`] until its token is cancelled.
///
/// Its pool must log in as a role that holds `pgstrata_worker` (claiming, completing, rescuing,
/// promoting and cron are that role's; the application's request path must not hold it), or
/// [`Worker::run`] refuses with [`Error::NotWorker`]. Handlers run on the same connections, in
/// their job's tenant context: a handler that writes tenant tables needs that login role to hold
/// `pgstrata_app` too, whose policies then keep it inside the job's tenant.
///
/// The pool needs one connection per executor (`concurrency`, plus those of
/// [`WorkerConfig::with_queue`]'s queues) and 3 more: one for LISTEN, one for maintenance and one
/// for the batches' heartbeats.
pub struct Worker {
    pool: PgPool,
    config: WorkerConfig,
    handlers: HashMap<&'static str, Kind>,
    /// Stop once nothing is left to do now ([`Worker::run_until_drained`]).
    drain: bool,
}

impl std::fmt::Debug for Worker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Worker")
            .field("config", &self.config)
            .field("kinds", &self.handlers.keys().collect::<Vec<_>>())
            .finish()
    }
}

/// The worker's long-running tasks, restarted if one panics.
#[derive(Debug, Clone, Copy)]
enum Task {
    Maintain,
    Listen,
    /// An executor of the queue at this index of [`WorkerConfig::queues`].
    Execute(usize),
}

impl Worker {
    pub fn new(pool: PgPool, config: WorkerConfig) -> Result<Self> {
        for (queue, _) in config.queues() {
            client::validate_queue(queue)?;
        }
        Ok(Self {
            pool,
            config,
            handlers: HashMap::new(),
            drain: false,
        })
    }

    /// Routes jobs of `J::KIND` to `handler`.
    pub fn register<J: JobKind, H: Handler<J>>(mut self, handler: H) -> Self {
        let handler = Arc::new(handler);
        let run: Erased = Arc::new(move |tx, payload, meta| {
            let job = <J as serde::Deserialize>::deserialize(payload);
            let handler = handler.clone();
            Box::pin(async move {
                let job = job.map_err(|e| format!("payload is not a valid {}: {e}", J::KIND))?;
                handler.handle(tx, job, meta).await
            })
        });
        self.handlers.insert(
            J::KIND,
            Kind {
                run,
                timeout: J::TIMEOUT,
                backoff: J::backoff,
            },
        );
        self
    }

    /// Runs until `token` is cancelled: then stops claiming, lets started batches finish within
    /// [`WorkerConfig::shutdown_timeout`] and returns. Jobs claimed but not yet started are
    /// released back to the queue. Database errors do not end it: it waits for the server
    /// (logging) and carries on. The only error is a pool whose role does not hold
    /// `pgstrata_worker`.
    ///
    /// ```no_run
    /// # async fn start(pool: sqlx::PgPool) -> Result<(), pgstrata_queue::Error> {
    /// use pgstrata_core::CancellationToken;
    /// use pgstrata_queue::{Worker, WorkerConfig};
    /// let token = CancellationToken::new();
    /// let worker = Worker::new(pool, WorkerConfig::new("default"))?;
    /// let running = tokio::spawn(worker.run(token.clone()));
    /// // ... on shutdown:
    /// token.cancel();
    /// running.await.ok();
    /// # Ok(()) }
    /// ```
    pub async fn run(self, token: CancellationToken) -> Result<()> {
        self.run_inner(token).await
    }

    /// Runs as [`Worker::run`] and returns once its queue is drained: no job of it is available,
    /// running (here or on another worker) or due. Jobs scheduled, or waiting for a retry, at a
    /// later time are left for a later run. Follow-up jobs that handlers enqueue are part of the
    /// work, since they commit with the job that enqueued them. The check runs every
    /// [`WorkerConfig::maintenance_interval`]; `token` still stops it earlier, as it stops `run`.
    /// For a test, a one-off backfill, or a job runner that exits when its work is done:
    ///
    /// ```no_run
    /// # async fn backfill(pool: sqlx::PgPool) -> Result<(), pgstrata_queue::Error> {
    /// use pgstrata_core::CancellationToken;
    /// use pgstrata_queue::{Worker, WorkerConfig};
    /// Worker::new(pool, WorkerConfig::new("backfill"))?
    ///     .run_until_drained(CancellationToken::new())
    ///     .await?;
    /// // Every job of "backfill" that was due has run.
    /// # Ok(()) }
    /// ```
    pub async fn run_until_drained(mut self, token: CancellationToken) -> Result<()> {
        self.drain = true;
        self.run_inner(token).await
    }

    async fn run_inner(self, token: CancellationToken) -> Result<()> {
        let mut errors = Backoff::default();
        loop {
            let checked: Result<(String, bool)> = async {
                let mut conn = self.pool.acquire().await?;
                Ok(autocommit!(self.config.pooled, &mut *conn, |c| sqlx::query_as(
                    "SELECT current_user::text, pg_catalog.pg_has_role('pgstrata_worker', 'USAGE')"
                )
                .fetch_one(c)
                .await?))
            }
            .await;
            match checked {
                Ok((_, true)) => break,
                Ok((role, false)) => return Err(Error::NotWorker { role }),
                Err(e) => {
                    let wait = errors.next();
                    tracing::warn!(queue = %self.config.queue, error = %e, retry_in_ms = wait.as_millis() as u64,
                        "queue worker cannot reach the database; retrying");
                    if !pause(wait, &token).await {
                        return Ok(());
                    }
                }
            }
        }
        let worker = Arc::new(self);
        let wake = Arc::new(Notify::new());
        let mut tasks = JoinSet::new();
        let mut roles = HashMap::new();
        // The tasks stop on a child of the caller's token: cancelled with it, or by the drain
        // check when the queue is drained.
        let token = token.child_token();
        let signal = token.clone();
        let spawn = |tasks: &mut JoinSet<()>, roles: &mut HashMap<tokio::task::Id, Task>, task: Task| {
            let (w, wake, stop) = (worker.clone(), wake.clone(), signal.clone());
            let handle = match task {
                Task::Maintain => tasks.spawn(w.maintain(wake, stop)),
                Task::Listen => tasks.spawn(w.listen(wake, stop)),
                Task::Execute(i) => tasks.spawn(w.execute(i, wake, stop)),
            };
            roles.insert(handle.id(), task);
        };
        spawn(&mut tasks, &mut roles, Task::Maintain);
        if worker.config.listen {
            spawn(&mut tasks, &mut roles, Task::Listen);
        }
        for (i, (_, concurrency)) in worker.config.queues().into_iter().enumerate() {
            for _ in 0..concurrency {
                spawn(&mut tasks, &mut roles, Task::Execute(i));
            }
        }
        let mut deadline: Option<tokio::time::Instant> = None;
        loop {
            tokio::select! {
                done = tasks.join_next_with_id() => match done {
                    None => break,
                    Some(Ok((id, ()))) => { roles.remove(&id); }
                    Some(Err(e)) => {
                        let task = roles.remove(&e.id());
                        if e.is_panic() && deadline.is_none() && let Some(task) = task {
                            tracing::error!(queue = %worker.config.queue, ?task, error = %e,
                                "queue worker task panicked; starting it again");
                            spawn(&mut tasks, &mut roles, task);
                        }
                    }
                },
                _ = token.cancelled(), if deadline.is_none() => {
                    deadline = Some(tokio::time::Instant::now() + worker.config.shutdown_timeout);
                }
                _ = tokio::time::sleep_until(deadline.unwrap_or_else(tokio::time::Instant::now)), if deadline.is_some() => {
                    tracing::warn!(queue = %worker.config.queue, tasks = tasks.len(),
                        "queue worker shutdown deadline passed: abandoning running batches to the rescuer");
                    tasks.abort_all();
                    while tasks.join_next().await.is_some() {}
                    break;
                }
            }
        }
        Ok(())
    }

    /// Rescues expired leases, promotes due jobs and enqueues periodic ones, waking executors
    /// when it found some. Errors are logged and retried with backoff.
    async fn maintain(self: Arc<Self>, wake: Arc<Notify>, shutdown: CancellationToken) {
        let mut errors = Backoff::default();
        while !stopped(&shutdown) {
            let round = async {
                let mut conn = self.pool.acquire().await?;
                Ok::<_, Error>(autocommit!(self.config.pooled, &mut *conn, |c| {
                    crate::periodic::enqueue_due(&mut *c, &self.config.periodic, Utc::now()).await?;
                    let rescued = client::rescue(&mut *c).await?;
                    let promoted = client::promote_due(&mut *c).await?;
                    (rescued, promoted)
                }))
            }
            .await;
            let wait = match round {
                Ok((rescued, promoted)) => {
                    errors.reset();
                    if rescued > 0 {
                        tracing::info!(queue = %self.config.queue, rescued, "rescued jobs whose lease expired");
                    }
                    if rescued + promoted > 0 {
                        wake.notify_waiters();
                    }
                    if self.drain && rescued + promoted == 0 {
                        match self.drained().await {
                            Ok(true) => {
                                tracing::info!(queue = %self.config.queue, "queue drained; the worker stops");
                                shutdown.cancel();
                                return;
                            }
                            Ok(false) => {}
                            Err(e) => tracing::warn!(queue = %self.config.queue, error = %e,
                                "could not check whether the queue is drained; checking again"),
                        }
                    }
                    self.config.maintenance_interval
                }
                Err(e) => {
                    let wait = errors.next();
                    tracing::warn!(queue = %self.config.queue, error = %e, retry_in_ms = wait.as_millis() as u64,
                        "queue maintenance failed; retrying");
                    wait
                }
            };
            pause(wait, &shutdown).await;
        }
    }

    /// Whether no job of the worker's queues is available, running or due (each read from its partial
    /// index: `jobs_fetch_idx`, `jobs_lease_idx`, `jobs_due_idx`).
    async fn drained(&self) -> Result<bool> {
        let mut conn = self.pool.acquire().await?;
        let busy: bool = autocommit!(self.config.pooled, &mut *conn, |c| {
            sqlx::query_scalar(
            "SELECT EXISTS (SELECT 1 FROM queue.jobs j WHERE j.state = 'available' AND j.queue = ANY ($1)) \
                 OR EXISTS (SELECT 1 FROM queue.jobs j \
                             WHERE j.lease_expires_at IS NOT NULL AND j.state = 'running' AND j.queue = ANY ($1)) \
                 OR EXISTS (SELECT 1 FROM queue.jobs j \
                             WHERE j.state IN ('scheduled', 'retryable') AND j.run_at <= pg_catalog.now() AND j.queue = ANY ($1))",
        )
        .bind(self.config.queues().into_iter().map(|(q, _)| q.to_owned()).collect::<Vec<_>>())
        .fetch_one(c)
        .await?
        });
        Ok(!busy)
    }

    /// Wakes idle executors when a job is enqueued (the trigger notifies `pgstrata_queue`).
    /// Reconnects with backoff; executors keep polling meanwhile.
    async fn listen(self: Arc<Self>, wake: Arc<Notify>, shutdown: CancellationToken) {
        let mut errors = Backoff::default();
        while !stopped(&shutdown) {
            let connected = async {
                let mut listener = PgListener::connect_with(&self.pool).await?;
                listener.listen("pgstrata_queue").await?;
                Ok::<_, sqlx::Error>(listener)
            }
            .await;
            let mut listener = match connected {
                Ok(listener) => listener,
                Err(e) => {
                    let wait = errors.next();
                    tracing::warn!(queue = %self.config.queue, error = %e, retry_in_ms = wait.as_millis() as u64,
                        "queue listener cannot connect; polling meanwhile");
                    pause(wait, &shutdown).await;
                    continue;
                }
            };
            errors.reset();
            while !stopped(&shutdown) {
                tokio::select! {
                    got = listener.recv() => match got {
                        Ok(_) => wake.notify_waiters(),
                        Err(e) => {
                            tracing::warn!(queue = %self.config.queue, error = %e, "queue listener lost its connection");
                            break;
                        }
                    },
                    _ = shutdown.cancelled() => {}
                }
            }
        }
    }

    /// One executor: claim a batch, run it, repeat; wait for a wake-up when the queue is empty.
    /// A failed claim is logged and retried with backoff on a fresh connection.
    async fn execute(self: Arc<Self>, queue: usize, wake: Arc<Notify>, shutdown: CancellationToken) {
        let queues = self.config.queues();
        let Some(&(queue, _)) = queues.get(queue) else { return };
        let max = self.config.batch_size.clamp(1, 1000);
        let mut limit = max;
        let mut conn = Held::new(self.pool.clone(), self.config.pooled);
        let mut errors = Backoff::default();
        while !stopped(&shutdown) {
            // Registered before claiming, so a job enqueued meanwhile still wakes this executor.
            let woken = wake.notified();
            tokio::pin!(woken);
            woken.as_mut().enable();
            let claimed = async {
                let c = conn.get().await?;
                let jobs = autocommit!(self.config.pooled, c, |c| client::claim(
                    c,
                    queue,
                    limit as i32,
                    &self.config.name,
                    self.config.lease
                )
                .await?);
                tracing::trace!(claimed = jobs.len(), "claimed");
                Ok::<_, Error>(jobs)
            }
            .instrument(tracing::debug_span!("queue.claim", queue = %queue, limit))
            .await;
            let jobs = match claimed {
                Ok(jobs) => {
                    errors.reset();
                    jobs
                }
                Err(e) => {
                    conn.check().await;
                    let wait = errors.next();
                    tracing::warn!(queue = %queue, error = %e, retry_in_ms = wait.as_millis() as u64,
                        "queue claim failed; retrying");
                    pause(wait, &shutdown).await;
                    continue;
                }
            };
            // Fetch what the backlog showed: twice the last find, up to the batch size.
            limit = (jobs.len() * 2).clamp(1, max);
            if jobs.is_empty() {
                tokio::select! {
                    _ = woken => {}
                    _ = tokio::time::sleep(self.config.poll_interval) => {}
                    _ = shutdown.cancelled() => {}
                }
                continue;
            }
            self.run_batch(&mut conn, jobs, &shutdown).await;
        }
    }

    async fn run_batch(&self, conn: &mut Held, jobs: Vec<Job>, shutdown: &CancellationToken) {
        // A batch is claimed from one queue.
        let queue = jobs.first().map(|j| j.queue.clone()).unwrap_or_default();
        let batch: Vec<(Job, JobMeta)> = jobs
            .into_iter()
            .map(|j| {
                let meta = JobMeta {
                    id: j.id,
                    attempt: j.attempt,
                    max_attempts: j.max_attempts,
                    queue: j.queue.clone(),
                    tenant_id: j.tenant_id,
                    actor_id: j.actor_id,
                    request_id: j.request_id.clone(),
                };
                (j, meta)
            })
            .collect();
        // Jobs not started when the stop arrives go back to the queue.
        if stopped(shutdown) {
            let released = async {
                let c = conn.get().await?;
                autocommit!(self.config.pooled, c, |c| for (_, meta) in &batch {
                    client::release(&mut *c, meta.id, meta.attempt).await?;
                });
                Ok::<(), Error>(())
            }
            .await;
            if let Err(e) = released {
                tracing::warn!(queue = %queue, error = %e,
                    "could not release claimed jobs; they return when their leases expire");
            }
            return;
        }
        // The heartbeat stops when the batch ends, or when this future is dropped (aborted at the
        // shutdown deadline).
        let beat = CancellationToken::new();
        let stop_beat = beat.clone().drop_guard();
        let held: Vec<(JobId, i32)> = batch.iter().map(|(_, m)| (m.id, m.attempt)).collect();
        let heartbeat = tokio::spawn(heartbeat(
            self.pool.clone(),
            held,
            self.config.lease,
            self.config.pooled,
            beat,
        ));
        let mut outcome = self.try_batch(conn, &batch).await;
        if let Err(fault) = &outcome
            && !conn.recover(fault).await
        {
            // The connection died under the batch: once more, whole, on a fresh one.
            tracing::warn!(queue = %queue, jobs = batch.len(), %fault, "batch lost its connection; running it again");
            outcome = self.try_batch(conn, &batch).await;
            if let Err(fault) = &outcome {
                conn.recover(fault).await;
            }
        }
        if let Err(fault) = outcome {
            // Something in the batch failed: run each job alone so one failure costs one job.
            tracing::debug!(queue = %queue, jobs = batch.len(), %fault, "batch rolled back; running its jobs one by one");
            for (job, meta) in &batch {
                self.run_alone(conn, job, meta, shutdown).await;
            }
        }
        drop(stop_beat);
        let _ = heartbeat.await;
    }

    /// The fast path: every handler and the completions in one transaction. An error when it
    /// was rolled back (a handler failed, or a job stopped being ours).
    async fn try_batch(&self, conn: &mut Held, jobs: &[(Job, JobMeta)]) -> Result<(), Fault> {
        let c = conn.get().await.map_err(Fault::db)?;
        let mut tx = c.begin().await.map_err(Fault::db)?;
        let mut context = None;
        for (job, meta) in jobs {
            let this = (meta.tenant_id, meta.actor_id, meta.request_id.as_deref());
            if context != Some(this) {
                set_context(&mut tx, meta).await.map_err(Fault::db)?;
                context = Some(this);
            }
            self.run_handler(&mut tx, job, meta).await?;
        }
        let held: Vec<(JobId, i32)> = jobs.iter().map(|(_, m)| (m.id, m.attempt)).collect();
        async {
            let completed = client::complete_many(&mut tx, &held).await.map_err(Fault::db)?;
            if completed.len() != held.len() {
                return Err(Fault::Db("a job of the batch is no longer ours".into()));
            }
            tx.commit().await.map_err(Fault::db)
        }
        .instrument(tracing::debug_span!("queue.complete", queue = %jobs[0].1.queue, jobs = held.len()))
        .await
    }

    /// The slow path: one job in its own transaction. A failure of the job is recorded with its
    /// error; a failure of the database is retried on a fresh connection a few times, then left
    /// to the rescuer (the job's lease expires).
    async fn run_alone(&self, conn: &mut Held, job: &Job, meta: &JobMeta, shutdown: &CancellationToken) {
        let mut errors = Backoff::default();
        for _ in 0..ALONE_TRIES {
            let fault = match self.attempt_alone(conn, job, meta).await {
                Ok(()) => return,
                Err(fault) => fault,
            };
            // A handler error on a connection that died is the database's failure, not the job's.
            let alive = conn.recover(&fault).await;
            if alive && !matches!(fault, Fault::Db(_)) {
                self.record(conn, job, meta, fault).await;
                return;
            }
            if stopped(shutdown) {
                break;
            }
            let wait = errors.next();
            tracing::warn!(queue = %job.queue, job = job.id.0, %fault, retry_in_ms = wait.as_millis() as u64,
                "running a job failed on the database; retrying");
            tokio::time::sleep(wait).await;
        }
        tracing::warn!(queue = %job.queue, job = job.id.0,
            "giving up on a job for now; it returns when its lease expires");
    }

    async fn attempt_alone(&self, conn: &mut Held, job: &Job, meta: &JobMeta) -> Result<(), Fault> {
        let c = conn.get().await.map_err(Fault::db)?;
        let mut tx = c.begin().await.map_err(Fault::db)?;
        set_context(&mut tx, meta).await.map_err(Fault::db)?;
        self.run_handler(&mut tx, job, meta).await?;
        if client::complete(&mut tx, meta.id, meta.attempt)
            .await
            .map_err(Fault::db)?
        {
            tx.commit().await.map_err(Fault::db)?;
        }
        // Not ours any more (rescued or cancelled): the rollback undoes the effects.
        Ok(())
    }

    /// Records the outcome of a failed attempt: a [`Control`], or a failure with its message.
    async fn record(&self, conn: &mut Held, job: &Job, meta: &JobMeta, fault: Fault) {
        let kind = self.handlers.get(job.kind.as_str());
        let recorded = async {
            let c = conn.get().await?;
            let control = match &fault {
                Fault::Handler(e) => e.downcast_ref::<Control>(),
                _ => None,
            };
            match control {
                Some(Control::Snooze(d)) => {
                    client::snooze(c, meta.id, meta.attempt, Utc::now() + to_chrono(*d)).await?;
                }
                Some(Control::Cancel(reason)) => {
                    client::cancel_attempt(c, meta.id, meta.attempt, reason).await?;
                }
                Some(Control::RetryAt(at, error)) => {
                    client::fail_at(c, meta.id, meta.attempt, error, Some(*at)).await?;
                }
                None => {
                    let retry_at = kind
                        .and_then(|k| (k.backoff)(meta.attempt))
                        .map(|d| Utc::now() + to_chrono(d));
                    let state = client::fail_at(c, meta.id, meta.attempt, &fault.to_string(), retry_at).await?;
                    if state == Some(crate::JobState::Discarded) {
                        tracing::warn!(queue = %job.queue, job = job.id.0, kind = %job.kind,
                            tenant = ?meta.tenant_id.map(|t| t.0), attempt = meta.attempt, error = %fault,
                            "job discarded: out of attempts");
                    } else {
                        tracing::info!(queue = %job.queue, job = job.id.0, kind = %job.kind,
                            tenant = ?meta.tenant_id.map(|t| t.0), attempt = meta.attempt,
                            state = state.map_or("not ours", |s| s.as_str()), error = %fault, "job attempt failed");
                    }
                }
            }
            Ok::<(), Error>(())
        }
        .await;
        if let Err(e) = recorded {
            conn.check().await;
            tracing::warn!(queue = %job.queue, job = job.id.0, error = %e,
                "could not record a job's outcome; it returns when its lease expires");
        }
    }

    /// Runs a job's handler, turning a panic or an overrun of its time limit into a fault.
    async fn run_handler(&self, tx: &mut PgConnection, job: &Job, meta: &JobMeta) -> Result<(), Fault> {
        let Some(kind) = self.handlers.get(job.kind.as_str()) else {
            return Err(Fault::Handler(
                format!("no handler registered for kind {:?} on this worker", job.kind).into(),
            ));
        };
        let limit = job
            .timeout_ms
            .map(|ms| Duration::from_millis(u64::try_from(ms).unwrap_or(1)))
            .or(kind.timeout);
        let span = tracing::debug_span!("queue.handler", job = job.id.0, kind = %job.kind,
            tenant = ?meta.tenant_id.map(|t| t.0), attempt = meta.attempt);
        let run = &kind.run;
        let started =
            span.in_scope(|| std::panic::catch_unwind(AssertUnwindSafe(once(move || run(tx, &job.payload, meta)))));
        let future = match started {
            Ok(future) => CatchUnwind(future).instrument(span),
            Err(panic) => return Err(Fault::Panicked(panic_message(&*panic))),
        };
        let finished = match limit {
            Some(limit) => match tokio::time::timeout(limit, future).await {
                Ok(finished) => finished,
                Err(_) => return Err(Fault::TimedOut(limit)),
            },
            None => future.await,
        };
        match finished {
            Ok(Ok(())) => Ok(()),
            Ok(Err(e)) => Err(Fault::Handler(e)),
            Err(panic) => Err(Fault::Panicked(panic)),
        }
    }
}

/// Jobs that fail on the database are run alone this many times before the rescuer takes over.
const ALONE_TRIES: usize = 3;

/// Why an attempt did not complete.
#[derive(Debug)]
enum Fault {
    /// The handler returned an error (or a [`Control`]).
    Handler(HandlerError),
    /// The handler panicked, with this message.
    Panicked(String),
    /// The handler overran its time limit.
    TimedOut(Duration),
    /// The database or the connection failed, or the job stopped being ours.
    Db(HandlerError),
}

impl Fault {
    fn db(e: impl Into<HandlerError>) -> Self {
        Fault::Db(e.into())
    }
}

impl std::fmt::Display for Fault {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Fault::Handler(e) => write!(f, "{e}"),
            Fault::Panicked(message) => write!(f, "handler panicked: {message}"),
            Fault::TimedOut(limit) => write!(f, "handler timed out after {limit:?}"),
            Fault::Db(e) => write!(f, "database: {e}"),
        }
    }
}

/// Turns a panic while polling the handler's future into an error.
struct CatchUnwind<F>(F);

impl<F: Future + Unpin> Future for CatchUnwind<F> {
    type Output = std::result::Result<F::Output, String>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let inner = &mut self.0;
        match std::panic::catch_unwind(AssertUnwindSafe(|| Pin::new(inner).poll(cx))) {
            Ok(Poll::Ready(out)) => Poll::Ready(Ok(out)),
            Ok(Poll::Pending) => Poll::Pending,
            Err(panic) => Poll::Ready(Err(panic_message(&*panic))),
        }
    }
}

/// Makes a closure `FnOnce`, so that it may hand out what it captured by mutable reference.
fn once<R>(f: impl FnOnce() -> R) -> impl FnOnce() -> R {
    f
}

fn panic_message(panic: &(dyn std::any::Any + Send)) -> String {
    panic
        .downcast_ref::<&str>()
        .map(|s| (*s).to_owned())
        .or_else(|| panic.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "a non-text panic payload".to_owned())
}

fn to_chrono(d: Duration) -> chrono::Duration {
    chrono::Duration::from_std(d).unwrap_or(chrono::Duration::MAX)
}

/// True once the worker's token is cancelled.
fn stopped(shutdown: &CancellationToken) -> bool {
    shutdown.is_cancelled()
}

/// Sleeps `wait` unless the token is cancelled first; false when it was.
async fn pause(wait: Duration, shutdown: &CancellationToken) -> bool {
    tokio::select! {
        _ = tokio::time::sleep(wait) => {}
        _ = shutdown.cancelled() => {}
    }
    !stopped(shutdown)
}

/// Exponential backoff with jitter for retrying database errors: 100 ms doubling to 10 s.
#[derive(Debug, Default)]
struct Backoff {
    failures: u32,
}

impl Backoff {
    fn next(&mut self) -> Duration {
        let base = Duration::from_millis(100) * 2u32.pow(self.failures.min(7));
        self.failures = self.failures.saturating_add(1);
        // Half to the whole of the step, so that workers that lost the server together do not
        // come back in step.
        let jitter = std::collections::hash_map::RandomState::new().hash_one(self.failures) % 1000;
        base.min(Duration::from_secs(10)).mul_f64(0.5 + jitter as f64 / 2000.0)
    }

    fn reset(&mut self) {
        self.failures = 0;
    }
}

/// An executor's connection, held across batches so that claiming and running a batch cost no
/// pool round trips (the pool pings a connection when it is handed out and when it comes back).
/// A connection that stops answering is closed and replaced on the next use.
struct Held {
    pool: PgPool,
    conn: Option<PoolConnection<Postgres>>,
    /// The backend of `conn`, to cancel an overrunning statement; 0 behind a pooler, where
    /// the next transaction may run on another backend.
    pid: i32,
    pooled: bool,
}

impl Held {
    fn new(pool: PgPool, pooled: bool) -> Self {
        Self {
            pool,
            conn: None,
            pid: 0,
            pooled,
        }
    }

    async fn get(&mut self) -> Result<&mut PgConnection> {
        let conn = match self.conn.take() {
            Some(conn) => conn,
            None => {
                let mut conn = self.pool.acquire().await?;
                if !self.pooled {
                    self.pid = sqlx::query_scalar("SELECT pg_catalog.pg_backend_pid()")
                        .fetch_one(&mut *conn)
                        .await?;
                }
                conn
            }
        };
        Ok(&mut **self.conn.insert(conn))
    }

    /// After a failure: keeps the connection only if it still answers; true when it does.
    async fn check(&mut self) -> bool {
        if let Some(mut conn) = self.conn.take() {
            if conn.ping().await.is_ok() {
                self.conn = Some(conn);
                return true;
            }
            conn.close_on_drop();
        }
        false
    }

    /// After a fault: a handler that overran its limit may still be running a statement, so
    /// its backend is cancelled (from another connection) and the connection closed; otherwise
    /// as [`Held::check`]. True unless the connection failed.
    async fn recover(&mut self, fault: &Fault) -> bool {
        if !matches!(fault, Fault::TimedOut(_)) {
            return self.check().await;
        }
        if let Some(mut conn) = self.conn.take() {
            conn.close_on_drop();
            if self.pid == 0 {
                return true;
            }
            if let Ok(mut other) = self.pool.acquire().await {
                let _ = sqlx::query("SELECT pg_catalog.pg_cancel_backend($1)")
                    .bind(self.pid)
                    .execute(&mut *other)
                    .await;
            }
        }
        true
    }
}

/// Opens the job's context (tenant, actor, request id; empty where the job has none) for the
/// statements that follow: one round trip.
async fn set_context(tx: &mut PgConnection, meta: &JobMeta) -> Result<(), sqlx::Error> {
    sqlx::query(
        "SELECT set_config('app.tenant_id', $1, true), set_config('app.actor_id', $2, true), \
                set_config('app.request_id', $3, true)",
    )
    .bind(meta.tenant_id.map(|t| t.0.to_string()).unwrap_or_default())
    .bind(meta.actor_id.map(|a| a.0.to_string()).unwrap_or_default())
    .bind(meta.request_id.as_deref().unwrap_or_default())
    .execute(tx)
    .await?;
    Ok(())
}

/// Extends the batch's leases every third of the lease until `stop` is cancelled.
async fn heartbeat(pool: PgPool, held: Vec<(JobId, i32)>, lease: Duration, pooled: bool, stop: CancellationToken) {
    loop {
        tokio::select! {
            _ = tokio::time::sleep(lease / 3) => {}
            _ = stop.cancelled() => return,
        }
        let beat = async {
            let mut conn = pool.acquire().await?;
            Ok::<_, Error>(autocommit!(pooled, &mut *conn, |c| client::heartbeat_many(
                c, &held, lease
            )
            .await?))
        }
        .await;
        if let Err(e) = beat {
            tracing::warn!(error = %e, jobs = held.len(), "queue heartbeat failed; retrying at the next beat");
        }
    }
}
