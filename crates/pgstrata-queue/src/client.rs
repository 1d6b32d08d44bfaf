//! Queue operations on a connection, so they join the caller's transaction: enqueue with the
//! business write, or administer jobs. Each is one call of the SQL function of the same name.

use crate::error::{Error, Result};
use crate::generated::Job;
use chrono::{DateTime, Utc};
use pgstrata_core::TenantId;
use serde::{Deserialize, Serialize};
use sqlx::PgConnection;
use std::time::Duration;

/// The id of a job.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize, sqlx::Type)]
#[sqlx(transparent)]
#[serde(transparent)]
pub struct JobId(pub i64);

/// A job to enqueue.
#[derive(Debug, Clone, PartialEq)]
pub struct NewJob {
    pub kind: String,
    pub payload: serde_json::Value,
    pub queue: String,
    /// Lower runs first.
    pub priority: i16,
    /// `None`: now.
    pub run_at: Option<DateTime<Utc>>,
    pub max_attempts: i32,
    /// At most one unfinished job per key and queue; enqueueing again returns the existing one.
    pub unique_key: Option<String>,
    /// The handler runs in this tenant's context. `None`: the tenant of the enqueueing
    /// transaction's context (none: a system job, which only a worker may enqueue).
    pub tenant_id: Option<TenantId>,
    /// How long one attempt may run, overriding the kind's [`crate::JobKind::TIMEOUT`]
    /// (1 ms to 1 day). `None`: the kind's.
    pub timeout: Option<Duration>,
}

impl NewJob {
    /// A job of `kind` with a JSON payload, on the `default` queue.
    pub fn new(kind: impl Into<String>, payload: serde_json::Value) -> Self {
        Self {
            kind: kind.into(),
            payload,
            queue: "default".into(),
            priority: 0,
            run_at: None,
            max_attempts: 20,
            unique_key: None,
            tenant_id: None,
            timeout: None,
        }
    }

    /// A job for a typed payload (see [`crate::JobKind`]), with the kind's
    /// [`MAX_ATTEMPTS`](crate::JobKind::MAX_ATTEMPTS).
    pub fn of<J: crate::JobKind>(job: &J) -> Result<Self> {
        let payload = serde_json::to_value(job).map_err(|source| Error::Payload {
            kind: J::KIND.to_owned(),
            source,
        })?;
        Ok(Self::new(J::KIND, payload).max_attempts(J::MAX_ATTEMPTS))
    }

    pub fn queue(mut self, queue: impl Into<String>) -> Self {
        self.queue = queue.into();
        self
    }
    pub fn priority(mut self, priority: i16) -> Self {
        self.priority = priority;
        self
    }
    pub fn run_at(mut self, at: DateTime<Utc>) -> Self {
        self.run_at = Some(at);
        self
    }
    pub fn max_attempts(mut self, n: i32) -> Self {
        self.max_attempts = n;
        self
    }
    pub fn unique_key(mut self, key: impl Into<String>) -> Self {
        self.unique_key = Some(key.into());
        self
    }
    pub fn tenant(mut self, tenant: TenantId) -> Self {
        self.tenant_id = Some(tenant);
        self
    }
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = Some(timeout);
        self
    }

    fn timeout_ms(&self) -> Option<i32> {
        self.timeout.map(|t| i32::try_from(t.as_millis()).unwrap_or(i32::MAX))
    }

    fn validate(&self) -> Result<()> {
        validate_queue(&self.queue)?;
        if self.kind.is_empty() || self.kind.chars().count() > 200 {
            return Err(Error::InvalidKind(self.kind.chars().take(80).collect()));
        }
        if self.max_attempts < 1 {
            return Err(Error::InvalidField {
                field: "max_attempts",
                reason: "must be at least 1".into(),
            });
        }
        if let Some(t) = self.timeout
            && (t < Duration::from_millis(1) || t > Duration::from_secs(86_400))
        {
            return Err(Error::InvalidField {
                field: "timeout",
                reason: format!("{t:?} is not within 1 ms to 1 day"),
            });
        }
        Ok(())
    }
}

pub(crate) fn validate_queue(queue: &str) -> Result<()> {
    let valid = (1..=63).contains(&queue.len())
        && queue
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || matches!(b, b'_' | b'.' | b'-'));
    if valid {
        Ok(())
    } else {
        Err(Error::InvalidQueue(queue.chars().take(80).collect()))
    }
}

fn interval(d: Duration) -> f64 {
    d.as_secs_f64()
}

/// Enqueues a job in the caller's transaction; it becomes visible to workers at commit.
///
/// The job belongs to the tenant of the transaction's context unless [`NewJob::tenant`] names
/// one; naming another tenant than the context's is refused ([`pgstrata_core::DbError::Forbidden`]).
/// The application role (`pgstrata_app`) always enqueues in a `begin_tenant` transaction, for
/// that tenant; a worker (`pgstrata_worker`) may enqueue for a tenant it names, or with no
/// tenant in context and none named, a system job no tenant sees. The job takes the actor and
/// request id of the transaction's context (`app.actor_id`, `app.request_id`), and its handler
/// runs with them set.
pub async fn enqueue(conn: &mut PgConnection, job: &NewJob) -> Result<JobId> {
    job.validate()?;
    Ok(
        sqlx::query_scalar("SELECT queue.enqueue($1, $2, $3, $4, $5, $6, $7, $8, $9)")
            .bind(&job.kind)
            .bind(&job.payload)
            .bind(&job.queue)
            .bind(job.priority)
            .bind(job.run_at)
            .bind(job.max_attempts)
            .bind(&job.unique_key)
            .bind(job.tenant_id.map(|t| t.0))
            .bind(job.timeout_ms())
            .fetch_one(conn)
            .await?,
    )
}

/// Enqueues many jobs in one call of `queue.enqueue_many` (which [`enqueue`] also calls),
/// returning their ids in order. The rules of [`enqueue`] apply to each job; a job whose unique
/// key is held (by an unfinished job, or an earlier one of `jobs`) returns that job's id.
pub async fn enqueue_many(conn: &mut PgConnection, jobs: &[NewJob]) -> Result<Vec<JobId>> {
    for job in jobs {
        job.validate()?;
    }
    let unique_keys: Option<Vec<Option<&str>>> = jobs
        .iter()
        .any(|j| j.unique_key.is_some())
        .then(|| jobs.iter().map(|j| j.unique_key.as_deref()).collect());
    let timeouts: Option<Vec<Option<i32>>> = jobs
        .iter()
        .any(|j| j.timeout.is_some())
        .then(|| jobs.iter().map(NewJob::timeout_ms).collect());
    let kinds: Vec<&str> = jobs.iter().map(|j| j.kind.as_str()).collect();
    let payloads: Vec<&serde_json::Value> = jobs.iter().map(|j| &j.payload).collect();
    let queues: Vec<&str> = jobs.iter().map(|j| j.queue.as_str()).collect();
    let priorities: Vec<i16> = jobs.iter().map(|j| j.priority).collect();
    let run_ats: Vec<Option<DateTime<Utc>>> = jobs.iter().map(|j| j.run_at).collect();
    let max_attempts: Vec<i32> = jobs.iter().map(|j| j.max_attempts).collect();
    let tenants: Vec<Option<uuid::Uuid>> = jobs.iter().map(|j| j.tenant_id.map(|t| t.0)).collect();
    Ok(
        sqlx::query_scalar("SELECT queue.enqueue_many($1, $2, $3, $4, $5, $6, $7, $8, $9)")
            .bind(kinds)
            .bind(payloads)
            .bind(queues)
            .bind(priorities)
            .bind(run_ats)
            .bind(max_attempts)
            .bind(tenants)
            .bind(unique_keys)
            .bind(timeouts)
            .fetch_all(conn)
            .await?,
    )
}

/// Claims up to `limit` (1 to 1000) ready jobs of `queue` for `worker`, under a lease of more
/// than zero and at most a day (out of range: [`pgstrata_core::DbError::InvalidInput`], 22023).
/// Worker role only, as are the other transitions below except [`cancel`] and [`retry`].
pub async fn claim(
    conn: &mut PgConnection,
    queue: &str,
    limit: i32,
    worker: &str,
    lease: Duration,
) -> Result<Vec<Job>> {
    validate_queue(queue)?;
    Ok(
        sqlx::query_as("SELECT * FROM queue.claim($1, $2, $3, make_interval(secs => $4))")
            .bind(queue)
            .bind(limit)
            .bind(worker)
            .bind(interval(lease))
            .fetch_all(conn)
            .await?,
    )
}

/// Makes due scheduled and retryable jobs available; returns how many.
pub async fn promote_due(conn: &mut PgConnection) -> Result<i32> {
    Ok(sqlx::query_scalar("SELECT queue.promote_due()").fetch_one(conn).await?)
}

/// Completes a job still running in `attempt`; false when it is not (rescued, cancelled).
pub async fn complete(conn: &mut PgConnection, id: JobId, attempt: i32) -> Result<bool> {
    Ok(sqlx::query_scalar("SELECT queue.complete($1, $2)")
        .bind(id.0)
        .bind(attempt)
        .fetch_one(conn)
        .await?)
}

/// Completes a batch of jobs; returns the ids completed (a missing one was rescued or
/// cancelled meanwhile).
pub async fn complete_many(conn: &mut PgConnection, jobs: &[(JobId, i32)]) -> Result<Vec<JobId>> {
    let ids: Vec<i64> = jobs.iter().map(|(id, _)| id.0).collect();
    let attempts: Vec<i32> = jobs.iter().map(|(_, a)| *a).collect();
    Ok(sqlx::query_scalar("SELECT queue.complete_many($1, $2)")
        .bind(ids)
        .bind(attempts)
        .fetch_all(conn)
        .await?)
}

/// Extends the leases of a batch; returns how many were still ours.
pub async fn heartbeat_many(conn: &mut PgConnection, jobs: &[(JobId, i32)], lease: Duration) -> Result<i32> {
    let ids: Vec<i64> = jobs.iter().map(|(id, _)| id.0).collect();
    let attempts: Vec<i32> = jobs.iter().map(|(_, a)| *a).collect();
    Ok(
        sqlx::query_scalar("SELECT queue.heartbeat_many($1, $2, make_interval(secs => $3))")
            .bind(ids)
            .bind(attempts)
            .bind(interval(lease))
            .fetch_one(conn)
            .await?,
    )
}

/// Records a failed attempt; returns the new state (`retryable` or `discarded`), or `None`
/// when the job is no longer running in `attempt`.
pub async fn fail(conn: &mut PgConnection, id: JobId, attempt: i32, error: &str) -> Result<Option<String>> {
    Ok(sqlx::query_scalar("SELECT queue.fail($1, $2, $3)")
        .bind(id.0)
        .bind(attempt)
        .bind(error)
        .fetch_one(conn)
        .await?)
}

/// Records a failed attempt that is to be retried at `retry_at` (`None`: the queue's
/// exponential backoff), unless out of attempts; as [`fail`].
pub async fn fail_at(
    conn: &mut PgConnection,
    id: JobId,
    attempt: i32,
    error: &str,
    retry_at: Option<DateTime<Utc>>,
) -> Result<Option<String>> {
    Ok(sqlx::query_scalar("SELECT queue.fail($1, $2, $3, $4)")
        .bind(id.0)
        .bind(attempt)
        .bind(error)
        .bind(retry_at)
        .fetch_one(conn)
        .await?)
}

/// Puts a job still running in `attempt` back to wait until `run_at`, giving the attempt back;
/// false when it is no longer running in `attempt`.
pub async fn snooze(conn: &mut PgConnection, id: JobId, attempt: i32, run_at: DateTime<Utc>) -> Result<bool> {
    Ok(sqlx::query_scalar("SELECT queue.snooze($1, $2, $3)")
        .bind(id.0)
        .bind(attempt)
        .bind(run_at)
        .fetch_one(conn)
        .await?)
}

/// Cancels a job still running in `attempt`, recording `reason`; false when it is no longer
/// running in `attempt`.
pub async fn cancel_attempt(conn: &mut PgConnection, id: JobId, attempt: i32, reason: &str) -> Result<bool> {
    Ok(sqlx::query_scalar("SELECT queue.cancel_attempt($1, $2, $3)")
        .bind(id.0)
        .bind(attempt)
        .bind(reason)
        .fetch_one(conn)
        .await?)
}

/// Extends the lease of a job still running in `attempt` (lease bounds as [`claim`]'s).
pub async fn heartbeat(conn: &mut PgConnection, id: JobId, attempt: i32, lease: Duration) -> Result<bool> {
    Ok(
        sqlx::query_scalar("SELECT queue.heartbeat($1, $2, make_interval(secs => $3))")
            .bind(id.0)
            .bind(attempt)
            .bind(interval(lease))
            .fetch_one(conn)
            .await?,
    )
}

/// Gives back a claimed job that was not started.
pub async fn release(conn: &mut PgConnection, id: JobId, attempt: i32) -> Result<bool> {
    Ok(sqlx::query_scalar("SELECT queue.release($1, $2)")
        .bind(id.0)
        .bind(attempt)
        .fetch_one(conn)
        .await?)
}

/// Brings back jobs whose lease expired; returns how many.
pub async fn rescue(conn: &mut PgConnection) -> Result<i32> {
    Ok(sqlx::query_scalar("SELECT queue.rescue()").fetch_one(conn).await?)
}

/// Cancels an unfinished job. The application role cancels only its context tenant's jobs
/// that no worker holds (false for a running one); a worker cancels any unfinished job.
pub async fn cancel(conn: &mut PgConnection, id: JobId) -> Result<bool> {
    Ok(sqlx::query_scalar("SELECT queue.cancel($1)")
        .bind(id.0)
        .fetch_one(conn)
        .await?)
}

/// Puts a discarded or cancelled job back in line (the application role: its own tenant's).
pub async fn retry(conn: &mut PgConnection, id: JobId) -> Result<bool> {
    Ok(sqlx::query_scalar("SELECT queue.retry($1)")
        .bind(id.0)
        .fetch_one(conn)
        .await?)
}

/// Deletes finished jobs older than `older_than` (at least a minute; shorter:
/// [`pgstrata_core::DbError::InvalidInput`], 22023), up to 10,000 per call; returns how many.
pub async fn prune(conn: &mut PgConnection, older_than: Duration) -> Result<i32> {
    Ok(sqlx::query_scalar("SELECT queue.prune(make_interval(secs => $1))")
        .bind(interval(older_than))
        .fetch_one(conn)
        .await?)
}

/// One row of [`stats`].
#[derive(Debug, Clone, PartialEq, sqlx::FromRow)]
pub struct QueueStats {
    pub queue: String,
    pub state: String,
    pub jobs: i64,
    /// Seconds the oldest ready job has waited (available rows only).
    pub oldest_available_secs: Option<f64>,
}

/// Jobs by queue and state, and the wait of the oldest ready job: every job for a worker, the
/// context tenant's for the application role.
pub async fn stats(conn: &mut PgConnection) -> Result<Vec<QueueStats>> {
    Ok(sqlx::query_as(
        "SELECT queue, state, jobs, extract(epoch FROM oldest_available_age)::float8 AS oldest_available_secs
           FROM queue.stats()",
    )
    .fetch_all(conn)
    .await?)
}

/// A job by id (`None` when it does not exist or the caller may not see it).
pub async fn get(conn: &mut PgConnection, id: JobId) -> Result<Option<Job>> {
    Ok(sqlx::query_as("SELECT * FROM queue.jobs WHERE id = $1")
        .bind(id.0)
        .fetch_optional(conn)
        .await?)
}
