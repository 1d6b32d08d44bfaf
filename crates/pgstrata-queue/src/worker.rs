//! The worker runtime: claims jobs of one queue, runs typed handlers with a concurrency limit,
//! heartbeats their leases, rescues jobs of dead workers, and shuts down gracefully.
//!
//! Each handler runs inside a transaction (in the job's tenant context when it has one) that
//! also calls `queue.complete`; the handler's database writes and the completion commit
//! together, and if the job was rescued or cancelled meanwhile the completion fails and the
//! transaction rolls back, so a job's effects are committed once.

use crate::client::{self, JobId};
use crate::error::Result;
use crate::generated::Job;
use pgstrata_core::TenantContext;
use serde::Serialize;
use serde::de::DeserializeOwned;
use sqlx::postgres::PgListener;
use sqlx::{PgConnection, PgPool};
use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{Semaphore, watch};
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
    /// Jobs running at once.
    pub concurrency: usize,
    /// How long a claim lasts without a heartbeat; heartbeats run every third of it.
    pub lease: Duration,
    /// How often to look for work when no notification arrives.
    pub poll_interval: Duration,
    /// How often to promote due jobs and rescue expired leases.
    pub maintenance_interval: Duration,
    /// Listen for enqueue notifications (turn off behind a transaction-mode pooler).
    pub listen: bool,
    /// Name recorded on claimed jobs.
    pub name: String,
}

impl WorkerConfig {
    pub fn new(queue: impl Into<String>) -> Self {
        Self {
            queue: queue.into(),
            concurrency: 10,
            lease: Duration::from_secs(60),
            poll_interval: Duration::from_millis(500),
            maintenance_interval: Duration::from_secs(1),
            listen: true,
            name: format!("worker-{}-{}", std::process::id(), uuid::Uuid::now_v7().simple()),
        }
    }
}

/// A worker for one queue. Register handlers, then [`Worker::run`] until the shutdown signal.
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

    /// Runs until `shutdown` turns true: then stops claiming, lets running jobs finish and
    /// returns. Jobs claimed but not yet started are released back to the queue.
    pub async fn run(self, mut shutdown: watch::Receiver<bool>) -> Result<()> {
        let worker = Arc::new(self);
        let slots = Arc::new(Semaphore::new(worker.config.concurrency.max(1)));
        let mut running = JoinSet::new();
        let mut listener = match worker.config.listen {
            true => {
                let mut l = PgListener::connect_with(&worker.pool).await?;
                l.listen("pgstrata_queue").await?;
                Some(l)
            }
            false => None,
        };
        let mut last_maintenance = tokio::time::Instant::now() - worker.config.maintenance_interval;

        while !*shutdown.borrow() {
            if last_maintenance.elapsed() >= worker.config.maintenance_interval {
                let mut conn = worker.pool.acquire().await?;
                client::rescue(&mut conn).await?;
                client::promote_due(&mut conn).await?;
                last_maintenance = tokio::time::Instant::now();
            }
            while running.try_join_next().is_some() {}

            let free = slots.available_permits();
            let claimed = if free > 0 {
                let mut conn = worker.pool.acquire().await?;
                client::claim(
                    &mut conn,
                    &worker.config.queue,
                    free as i32,
                    &worker.config.name,
                    worker.config.lease,
                )
                .await?
            } else {
                Vec::new()
            };
            let got_full_batch = free > 0 && claimed.len() == free;
            for job in claimed {
                if *shutdown.borrow() {
                    // Claimed after the stop was asked: not started, so give it back.
                    let mut conn = worker.pool.acquire().await?;
                    client::release(&mut conn, JobId(job.id), job.attempt).await?;
                    continue;
                }
                let Ok(permit) = slots.clone().acquire_owned().await else {
                    break;
                };
                let worker = worker.clone();
                running.spawn(async move {
                    worker.run_job(job).await;
                    drop(permit);
                });
            }
            if got_full_batch {
                continue;
            }
            // Idle or full: wait for a notification, a finished job, the poll interval or the stop.
            let wait = tokio::time::sleep(worker.config.poll_interval);
            tokio::select! {
                _ = wait => {}
                _ = shutdown.changed() => {}
                Some(_) = running.join_next(), if !running.is_empty() => {}
                _ = async {
                    match listener.as_mut() {
                        Some(l) => { let _ = l.recv().await; }
                        None => std::future::pending::<()>().await,
                    }
                } => {}
            }
        }
        while running.join_next().await.is_some() {}
        Ok(())
    }

    /// Runs one claimed job to completion or failure. Errors of the database itself are left
    /// to the lease: the job comes back through the rescuer.
    async fn run_job(&self, job: Job) {
        let meta = JobMeta {
            id: JobId(job.id),
            attempt: job.attempt,
            max_attempts: job.max_attempts,
            queue: job.queue.clone(),
            tenant_id: job.tenant_id,
        };
        let (stop_beat, beat) = watch::channel(false);
        let heartbeat = tokio::spawn(heartbeat(self.pool.clone(), meta.clone(), self.config.lease, beat));
        let outcome = match self.handlers.get(job.kind.as_str()) {
            None => Err(format!("no handler registered for kind {:?} on this worker", job.kind).into()),
            Some(handler) => self.run_in_transaction(handler, job.payload, &meta).await,
        };
        let _ = stop_beat.send(true);
        let _ = heartbeat.await;
        if let Err(error) = outcome
            && let Ok(mut conn) = self.pool.acquire().await
        {
            let _ = client::fail(&mut conn, meta.id, meta.attempt, &error.to_string()).await;
        }
    }

    async fn run_in_transaction(
        &self,
        handler: &Erased,
        payload: serde_json::Value,
        meta: &JobMeta,
    ) -> Result<(), HandlerError> {
        let mut tx = self.pool.begin().await?;
        if let Some(tenant) = meta.tenant_id {
            pgstrata_core::set_tenant_context(&mut tx, &TenantContext::tenant(tenant)).await?;
        }
        handler(&mut tx, payload, meta).await?;
        if client::complete(&mut tx, meta.id, meta.attempt).await? {
            tx.commit().await?;
        }
        // Not running in this attempt any more (rescued or cancelled): roll the effects back.
        Ok(())
    }
}

/// Extends the lease every third of it until told to stop.
async fn heartbeat(pool: PgPool, meta: JobMeta, lease: Duration, mut stop: watch::Receiver<bool>) {
    loop {
        tokio::select! {
            _ = tokio::time::sleep(lease / 3) => {}
            _ = stop.changed() => return,
        }
        let Ok(mut conn) = pool.acquire().await else { continue };
        match client::heartbeat(&mut conn, meta.id, meta.attempt, lease).await {
            Ok(true) => {}
            // The job is no longer ours; the completion will notice too.
            Ok(false) => return,
            Err(_) => {}
        }
    }
}
