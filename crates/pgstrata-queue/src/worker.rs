//! The worker runtime: `concurrency` executors each claim a batch of jobs of one queue, run the
//! typed handlers, heartbeat the batch's leases, and complete it; a maintenance task rescues
//! jobs of dead workers and promotes due ones; a listener wakes idle executors.
//!
//! A batch runs in one transaction (each handler in its job's tenant context) that ends with
//! `queue.complete_many`: the handlers' database writes and the completions commit together,
//! one commit per batch. If a handler fails, or a job was rescued or cancelled meanwhile, the
//! whole transaction rolls back and each job of the batch runs again alone in its own
//! transaction, where a failure is recorded with `queue.fail`. So database effects commit
//! exactly once per completed job; effects outside the database may repeat (at-least-once).

use crate::client::{self, JobId};
use crate::error::{Error, Result};
use crate::generated::Job;
use pgstrata_core::TenantContext;
use serde::Serialize;
use serde::de::DeserializeOwned;
use sqlx::pool::PoolConnection;
use sqlx::postgres::PgListener;
use sqlx::{Connection, PgConnection, PgPool, Postgres};
use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{Notify, watch};
use tokio::task::JoinSet;

/// A boxed, sendable future, as handlers return.
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;
/// What a handler may fail with; its text is stored in the job's error history.
pub type HandlerError = Box<dyn std::error::Error + Send + Sync>;

/// A typed job payload.
pub trait JobKind: Serialize + DeserializeOwned + Send + 'static {
    /// The `kind` column value that routes to this payload's handler.
    const KIND: &'static str;
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
    pub tenant_id: Option<pgstrata_core::TenantId>,
}

/// Runs jobs of one kind. `tx` is the job's transaction: write through it so the effects
/// commit with the completion.
pub trait Handler<J: JobKind>: Send + Sync + 'static {
    fn handle<'a>(
        &'a self,
        tx: &'a mut PgConnection,
        job: J,
        meta: &'a JobMeta,
    ) -> BoxFuture<'a, Result<(), HandlerError>>;
}

type Erased = Arc<
    dyn for<'a> Fn(&'a mut PgConnection, serde_json::Value, &'a JobMeta) -> BoxFuture<'a, Result<(), HandlerError>>
        + Send
        + Sync,
>;

/// How a worker behaves.
#[derive(Debug, Clone)]
pub struct WorkerConfig {
    pub queue: String,
    /// Executors running batches at once.
    pub concurrency: usize,
    /// Jobs claimed and committed together by one executor; 1 gives a transaction per job.
    pub batch_size: usize,
    /// How long a claim lasts without a heartbeat; heartbeats run every third of it.
    pub lease: Duration,
    /// How often an idle executor looks for work when no notification arrives.
    pub poll_interval: Duration,
    /// How often to promote due jobs, rescue expired leases and enqueue periodic jobs.
    pub maintenance_interval: Duration,
    /// Listen for enqueue notifications (turn off behind a transaction-mode pooler).
    pub listen: bool,
    /// Name recorded on claimed jobs.
    pub name: String,
    /// Cron schedules this worker enqueues (exactly once per period across all workers).
    pub periodic: Vec<crate::Periodic>,
}

impl WorkerConfig {
    pub fn new(queue: impl Into<String>) -> Self {
        Self {
            queue: queue.into(),
            concurrency: 4,
            batch_size: 10,
            lease: Duration::from_secs(60),
            poll_interval: Duration::from_millis(500),
            maintenance_interval: Duration::from_secs(1),
            listen: true,
            name: format!("worker-{}-{}", std::process::id(), uuid::Uuid::now_v7().simple()),
            periodic: Vec::new(),
        }
    }
}

/// A worker for one queue. Register handlers, then [`Worker::run`] until the shutdown signal.
///
/// Its pool must log in as a role that holds `pgstrata_worker` (claiming, completing, rescuing,
/// promoting and cron are that role's; the application's request path must not hold it), or
/// [`Worker::run`] refuses with [`Error::NotWorker`]. Handlers run on the same connections, in
/// their job's tenant context: a handler that writes tenant tables needs that login role to hold
/// `pgstrata_app` too, whose policies then keep it inside the job's tenant.
///
/// The pool needs `concurrency + 3` connections: one held by each executor, one for LISTEN, one
/// for maintenance and one for the batches' heartbeats.
pub struct Worker {
    pool: PgPool,
    config: WorkerConfig,
    handlers: HashMap<&'static str, Erased>,
}

impl std::fmt::Debug for Worker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Worker")
            .field("config", &self.config)
            .field("kinds", &self.handlers.keys().collect::<Vec<_>>())
            .finish()
    }
}

impl Worker {
    pub fn new(pool: PgPool, config: WorkerConfig) -> Result<Self> {
        client::validate_queue(&config.queue)?;
        Ok(Self {
            pool,
            config,
            handlers: HashMap::new(),
        })
    }

    /// Routes jobs of `J::KIND` to `handler`.
    pub fn register<J: JobKind, H: Handler<J>>(mut self, handler: H) -> Self {
        let handler = Arc::new(handler);
        let erased: Erased = Arc::new(move |tx, payload, meta| {
            let handler = handler.clone();
            Box::pin(async move {
                let job: J =
                    serde_json::from_value(payload).map_err(|e| format!("payload is not a valid {}: {e}", J::KIND))?;
                handler.handle(tx, job, meta).await
            })
        });
        self.handlers.insert(J::KIND, erased);
        self
    }

    /// Runs until `shutdown` turns true: then stops claiming, lets started jobs finish and
    /// returns. Jobs claimed but not yet started are released back to the queue.
    pub async fn run(self, shutdown: watch::Receiver<bool>) -> Result<()> {
        let (role, is_worker): (String, bool) =
            sqlx::query_as("SELECT current_user::text, pg_catalog.pg_has_role('pgstrata_worker', 'USAGE')")
                .fetch_one(&self.pool)
                .await?;
        if !is_worker {
            return Err(Error::NotWorker { role });
        }
        let worker = Arc::new(self);
        let wake = Arc::new(Notify::new());
        let mut tasks = JoinSet::new();
        tasks.spawn(worker.clone().maintain(wake.clone(), shutdown.clone()));
        if worker.config.listen {
            let mut listener = PgListener::connect_with(&worker.pool).await?;
            listener.listen("pgstrata_queue").await?;
            tasks.spawn(listen(listener, wake.clone(), shutdown.clone()));
        }
        for _ in 0..worker.config.concurrency.max(1) {
            tasks.spawn(worker.clone().execute(wake.clone(), shutdown.clone()));
        }
        let mut first_error = None;
        while let Some(done) = tasks.join_next().await {
            if let Ok(Err(e)) = done {
                first_error.get_or_insert(e);
            }
        }
        first_error.map_or(Ok(()), Err)
    }

    /// Rescues expired leases and promotes due jobs, waking executors when it found some.
    async fn maintain(self: Arc<Self>, wake: Arc<Notify>, mut shutdown: watch::Receiver<bool>) -> Result<()> {
        while !*shutdown.borrow() {
            let mut conn = self.pool.acquire().await?;
            crate::periodic::enqueue_due(&mut conn, &self.config.periodic, chrono::Utc::now()).await?;
            let found = client::rescue(&mut conn).await? + client::promote_due(&mut conn).await?;
            drop(conn);
            if found > 0 {
                wake.notify_waiters();
            }
            tokio::select! {
                _ = tokio::time::sleep(self.config.maintenance_interval) => {}
                _ = shutdown.changed() => {}
            }
        }
        Ok(())
    }

    /// One executor: claim a batch, run it, repeat; wait for a wake-up when the queue is empty.
    async fn execute(self: Arc<Self>, wake: Arc<Notify>, mut shutdown: watch::Receiver<bool>) -> Result<()> {
        let batch_size = self.config.batch_size.clamp(1, 1000) as i32;
        let mut conn = Held::new(self.pool.clone());
        while !*shutdown.borrow() {
            // Registered before claiming, so a job enqueued meanwhile still wakes this executor.
            let woken = wake.notified();
            tokio::pin!(woken);
            woken.as_mut().enable();
            let claimed = client::claim(
                conn.get().await?,
                &self.config.queue,
                batch_size,
                &self.config.name,
                self.config.lease,
            )
            .await;
            let jobs = match claimed {
                Ok(jobs) => jobs,
                Err(e) => {
                    conn.check().await;
                    return Err(e);
                }
            };
            if jobs.is_empty() {
                tokio::select! {
                    _ = woken => {}
                    _ = tokio::time::sleep(self.config.poll_interval) => {}
                    _ = shutdown.changed() => {}
                }
                continue;
            }
            self.run_batch(&mut conn, jobs, &shutdown).await?;
        }
        Ok(())
    }

    async fn run_batch(&self, conn: &mut Held, jobs: Vec<Job>, shutdown: &watch::Receiver<bool>) -> Result<()> {
        let metas: Vec<JobMeta> = jobs
            .iter()
            .map(|j| JobMeta {
                id: JobId(j.id),
                attempt: j.attempt,
                max_attempts: j.max_attempts,
                queue: j.queue.clone(),
                tenant_id: j.tenant_id,
            })
            .collect();
        let (stop_beat, beat) = watch::channel(false);
        let held: Vec<(JobId, i32)> = metas.iter().map(|m| (m.id, m.attempt)).collect();
        let heartbeat = tokio::spawn(heartbeat(self.pool.clone(), held, self.config.lease, beat));

        let mut payloads: Vec<(Job, JobMeta)> = jobs.into_iter().zip(metas).collect();
        // Jobs not started when the stop arrives go back to the queue.
        if *shutdown.borrow() {
            let released = conn.get().await?;
            for (_, meta) in &payloads {
                client::release(released, meta.id, meta.attempt).await?;
            }
            payloads.clear();
        }
        if !payloads.is_empty() && !self.try_batch(conn, &payloads).await {
            // Something in the batch failed: run each job alone so one failure costs one job.
            conn.check().await;
            for (job, meta) in &payloads {
                self.run_alone(conn, job, meta).await;
            }
        }
        let _ = stop_beat.send(true);
        let _ = heartbeat.await;
        Ok(())
    }

    /// The fast path: every handler and the completions in one transaction. False when it was
    /// rolled back (a handler failed, or a job stopped being ours).
    async fn try_batch(&self, conn: &mut Held, jobs: &[(Job, JobMeta)]) -> bool {
        let attempt = async {
            let mut tx = conn.get().await?.begin().await?;
            let mut tenant = None;
            for (job, meta) in jobs {
                if meta.tenant_id != tenant {
                    set_tenant(&mut tx, meta.tenant_id).await?;
                    tenant = meta.tenant_id;
                }
                self.handle(&mut tx, job, meta).await?;
            }
            let held: Vec<(JobId, i32)> = jobs.iter().map(|(_, m)| (m.id, m.attempt)).collect();
            let completed = client::complete_many(&mut tx, &held).await?;
            if completed.len() != held.len() {
                return Err::<bool, HandlerError>("a job of the batch is no longer ours".into());
            }
            tx.commit().await?;
            Ok(true)
        };
        attempt.await.unwrap_or(false)
    }

    /// The slow path: one job in its own transaction; a failure is recorded with its error.
    async fn run_alone(&self, conn: &mut Held, job: &Job, meta: &JobMeta) {
        let outcome = async {
            let mut tx = conn.get().await?.begin().await?;
            set_tenant(&mut tx, meta.tenant_id).await?;
            self.handle(&mut tx, job, meta).await?;
            if client::complete(&mut tx, meta.id, meta.attempt).await? {
                tx.commit().await?;
            }
            // Not ours any more (rescued or cancelled): the rollback undoes the effects.
            Ok::<(), HandlerError>(())
        }
        .await;
        if let Err(error) = outcome {
            conn.check().await;
            if let Ok(failed) = conn.get().await {
                let _ = client::fail(failed, meta.id, meta.attempt, &error.to_string()).await;
            }
        }
    }

    async fn handle(&self, tx: &mut PgConnection, job: &Job, meta: &JobMeta) -> Result<(), HandlerError> {
        match self.handlers.get(job.kind.as_str()) {
            None => Err(format!("no handler registered for kind {:?} on this worker", job.kind).into()),
            Some(handler) => handler(tx, job.payload.clone(), meta).await,
        }
    }
}

/// An executor's connection, held across batches so that claiming and running a batch cost no
/// pool round trips (the pool pings a connection when it is handed out and when it comes back).
/// A connection that stops answering is closed and replaced on the next use.
struct Held {
    pool: PgPool,
    conn: Option<PoolConnection<Postgres>>,
}

impl Held {
    fn new(pool: PgPool) -> Self {
        Self { pool, conn: None }
    }

    async fn get(&mut self) -> Result<&mut PgConnection> {
        let conn = match self.conn.take() {
            Some(conn) => conn,
            None => self.pool.acquire().await?,
        };
        Ok(&mut **self.conn.insert(conn))
    }

    /// After a failure: keeps the connection only if it still answers.
    async fn check(&mut self) {
        if let Some(mut conn) = self.conn.take() {
            if conn.ping().await.is_ok() {
                self.conn = Some(conn);
            } else {
                conn.close_on_drop();
            }
        }
    }
}

/// Opens the job's tenant context for the statements that follow, or clears it.
async fn set_tenant(tx: &mut PgConnection, tenant: Option<pgstrata_core::TenantId>) -> Result<(), HandlerError> {
    match tenant {
        Some(t) => pgstrata_core::set_tenant_context(tx, &TenantContext::tenant(t)).await?,
        None => pgstrata_core::context::clear_context(tx).await?,
    }
    Ok(())
}

/// Wakes idle executors when a job is enqueued (the trigger notifies `pgstrata_queue`).
async fn listen(mut listener: PgListener, wake: Arc<Notify>, mut shutdown: watch::Receiver<bool>) -> Result<()> {
    while !*shutdown.borrow() {
        tokio::select! {
            got = listener.recv() => match got {
                Ok(_) => wake.notify_waiters(),
                // The listener reconnects on the next recv; executors keep polling meanwhile.
                Err(_) => tokio::time::sleep(Duration::from_millis(500)).await,
            },
            _ = shutdown.changed() => {}
        }
    }
    Ok(())
}

/// Extends the batch's leases every third of the lease until told to stop.
async fn heartbeat(pool: PgPool, held: Vec<(JobId, i32)>, lease: Duration, mut stop: watch::Receiver<bool>) {
    loop {
        tokio::select! {
            _ = tokio::time::sleep(lease / 3) => {}
            _ = stop.changed() => return,
        }
        if let Ok(mut conn) = pool.acquire().await {
            let _ = client::heartbeat_many(&mut conn, &held, lease).await;
        }
    }
}
