//! Queue operations, each joining the caller's transaction: enqueue with the business write,
//! administer jobs, or (the worker) move a claimed job on. Each is one call of the SQL function
//! of the same name, whose statement the pure builder `<operation>_stmt` renders.
//!
//! A tenant's jobs are enqueued in its [`TenantTx`] ([`enqueue`], [`enqueue_many`]); system jobs
//! and everything else take a `&mut PgConnection`, which a `TenantTx` derefs to. The rest read
//! no tenant from the caller: the database's policies decide what each role sees and changes
//! (the request path its context tenant's unheld jobs, a worker every job).

use crate::error::{Error, Result};
use crate::functions::{Builtin, QueueFn, StatsRow};
use crate::generated::{Job, Jobs};
pub use crate::ids::JobId;
use crate::ids::JobState;
use chrono::{DateTime, Utc};
use pgstrata_core::sql::{self, Built};
use pgstrata_core::{TenantId, TenantTx};
use sea_query::{Asterisk, Expr, ExprTrait, Func, Query};
use sqlx::PgConnection;
use std::time::Duration;

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
    /// At most one unfinished job per key, tenant and queue; enqueueing again returns the
    /// existing one. With [`NewJob::unique_period`], the key is held for a period instead.
    pub unique_key: Option<String>,
    /// Hold the unique key for this period (1 s to 366 days): at most one job per key, tenant,
    /// queue and period (periods are aligned on the Unix epoch: an hour is each clock hour in
    /// UTC), whatever its state, until that job is pruned. Needs a key.
    pub unique_period: Option<Duration>,
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
            unique_period: None,
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
    /// At most one job with this key per `period` (see [`NewJob::unique_period`]): "at most
    /// once an hour" even when the first one has completed.
    pub fn unique_for(mut self, key: impl Into<String>, period: Duration) -> Self {
        self.unique_key = Some(key.into());
        self.unique_period = Some(period);
        self
    }
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = Some(timeout);
        self
    }

    fn timeout_ms(&self) -> Option<i32> {
        self.timeout.map(|t| i32::try_from(t.as_millis()).unwrap_or(i32::MAX))
    }

    pub(crate) fn validate(&self) -> Result<()> {
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
        if let Some(p) = self.unique_period {
            if self.unique_key.is_none() {
                return Err(Error::InvalidField {
                    field: "unique_period",
                    reason: "a unique period needs a unique key".into(),
                });
            }
            if p < Duration::from_secs(1) || p > Duration::from_secs(366 * 86_400) {
                return Err(Error::InvalidField {
                    field: "unique_period",
                    reason: format!("{p:?} is not within 1 s to 366 days"),
                });
            }
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

/// A duration as an interval: whole microseconds (PostgreSQL's resolution) as text, cast.
pub(crate) fn interval(d: Duration) -> Expr {
    Expr::val(interval_text(d)).cast_as("interval")
}

/// The text of [`interval`], before its cast.
fn interval_text(d: Duration) -> String {
    format!("{} microseconds", d.as_micros())
}

/// A PostgreSQL array literal (`{"a",NULL,"b\"c"}`): every element quoted with `\` and `"`
/// escaped, so any text survives, and `None` as NULL. sea-query-sqlx binds an array as `Vec<T>`,
/// which cannot hold a NULL element, so a batch's nullable fields travel as one text value each
/// and are cast to their array type in the statement.
fn array_literal<S: AsRef<str>>(items: impl IntoIterator<Item = Option<S>>) -> String {
    let mut out = String::from("{");
    for (i, item) in items.into_iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        match item {
            None => out.push_str("NULL"),
            Some(text) => {
                out.push('"');
                for c in text.as_ref().chars() {
                    if c == '"' || c == '\\' {
                        out.push('\\');
                    }
                    out.push(c);
                }
                out.push('"');
            }
        }
    }
    out.push('}');
    out
}

/// `SELECT queue.<function>(args...)`.
fn call(function: QueueFn, args: impl IntoIterator<Item = Expr>) -> Built {
    sql::build(Query::select().expr(Func::cust(function).args(args)))
}

/// The statement of [`enqueue`] and [`enqueue_system`]: `queue.enqueue` for `tenant` (`None`:
/// the context's tenant, or none).
///
/// ```
/// use pgstrata_queue::client::{NewJob, enqueue_stmt};
/// let (sql, _) = enqueue_stmt(&NewJob::new("mail", serde_json::json!({})), None);
/// assert_eq!(sql, "SELECT queue.enqueue($1, $2, $3, $4, $5, $6, $7, $8, $9, CAST($10 AS interval))");
/// ```
pub fn enqueue_stmt(job: &NewJob, tenant: Option<TenantId>) -> Built {
    call(
        QueueFn::Enqueue,
        [
            Expr::val(job.kind.clone()),
            Expr::val(job.payload.clone()),
            Expr::val(job.queue.clone()),
            Expr::val(job.priority),
            Expr::val(job.run_at),
            Expr::val(job.max_attempts),
            Expr::val(job.unique_key.clone()),
            Expr::val(tenant.map(|t| t.0)),
            Expr::val(job.timeout_ms()),
            Expr::val(job.unique_period.map(interval_text)).cast_as("interval"),
        ],
    )
}

/// Enqueues a job of the transaction's tenant; it becomes visible to workers at commit.
///
/// The job belongs to `tx.tenant_id()`, the tenant the transaction was opened with, and takes
/// its actor and request id (`app.actor_id`, `app.request_id`), which are set again while its
/// handler runs. The database refuses ([`pgstrata_core::DbError::Forbidden`]) a tenant other
/// than the context's, so a statement that changed the context in between cannot enqueue for
/// the other tenant either. Jobs of no tenant: [`enqueue_system`].
pub async fn enqueue(tx: &mut TenantTx<'_>, job: &NewJob) -> Result<JobId> {
    job.validate()?;
    let tenant = tx.tenant_id();
    let (id,) = sql::query_as(enqueue_stmt(job, Some(tenant)))
        .fetch_one(&mut **tx)
        .await?;
    Ok(id)
}

/// Enqueues a job outside a tenant transaction: a system job, which no tenant sees and only a
/// role holding `pgstrata_worker` may enqueue (the request path is refused,
/// [`pgstrata_core::DbError::Forbidden`]). `queue.enqueue`'s rule still holds on a connection
/// whose transaction has a tenant context (a handler's): the job is that tenant's. A worker
/// that enqueues for a tenant opens that tenant's transaction (`begin_tenant(&mut *conn, ..)`,
/// or [`crate::JobMeta::context`] inside a handler) and calls [`enqueue`].
pub async fn enqueue_system(conn: &mut PgConnection, job: &NewJob) -> Result<JobId> {
    job.validate()?;
    let (id,) = sql::query_as(enqueue_stmt(job, None)).fetch_one(conn).await?;
    Ok(id)
}

/// The statement of [`enqueue_many`] and [`enqueue_system_many`]: `queue.enqueue_many` with one
/// array per field, every job for `tenant` (`None`: the context's tenant, or none). Run times,
/// unique keys, time limits and unique periods may be absent per job, so they are array
/// literals cast to their type.
///
/// ```
/// use pgstrata_queue::client::{NewJob, enqueue_many_stmt};
/// let jobs = [NewJob::new("a", serde_json::json!({})), NewJob::new("b", serde_json::json!({})).unique_key("k")];
/// let (sql, _) = enqueue_many_stmt(&jobs, None);
/// assert_eq!(
///     sql,
///     "SELECT queue.enqueue_many($1, $2, $3, $4, CAST($5 AS timestamptz[]), $6, $7, \
///      CAST($8 AS text[]), CAST($9 AS integer[]), CAST($10 AS interval[]))"
/// );
/// ```
pub fn enqueue_many_stmt(jobs: &[NewJob], tenant: Option<TenantId>) -> Built {
    let kinds: Vec<String> = jobs.iter().map(|j| j.kind.clone()).collect();
    let payloads: Vec<serde_json::Value> = jobs.iter().map(|j| j.payload.clone()).collect();
    let queues: Vec<String> = jobs.iter().map(|j| j.queue.clone()).collect();
    let priorities: Vec<i16> = jobs.iter().map(|j| j.priority).collect();
    let run_ats = array_literal(
        jobs.iter()
            .map(|j| j.run_at.map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::AutoSi, true))),
    );
    let max_attempts: Vec<i32> = jobs.iter().map(|j| j.max_attempts).collect();
    let tenants: Option<Vec<uuid::Uuid>> = tenant.map(|t| vec![t.0; jobs.len()]);
    // NULL rather than an array of NULLs when no job has one: the set-based insert.
    let unique_keys = jobs
        .iter()
        .any(|j| j.unique_key.is_some())
        .then(|| array_literal(jobs.iter().map(|j| j.unique_key.as_deref())));
    let timeouts = jobs
        .iter()
        .any(|j| j.timeout.is_some())
        .then(|| array_literal(jobs.iter().map(|j| j.timeout_ms().map(|ms| ms.to_string()))));
    let periods = jobs
        .iter()
        .any(|j| j.unique_period.is_some())
        .then(|| array_literal(jobs.iter().map(|j| j.unique_period.map(interval_text))));
    call(
        QueueFn::EnqueueMany,
        [
            Expr::val(kinds),
            Expr::val(payloads),
            Expr::val(queues),
            Expr::val(priorities),
            Expr::val(run_ats).cast_as("timestamptz[]"),
            Expr::val(max_attempts),
            Expr::val(tenants),
            Expr::val(unique_keys).cast_as("text[]"),
            Expr::val(timeouts).cast_as("integer[]"),
            Expr::val(periods).cast_as("interval[]"),
        ],
    )
}

/// Enqueues many jobs of the transaction's tenant in one call of `queue.enqueue_many` (which
/// [`enqueue`] also calls), returning their ids in order. The rules of [`enqueue`] apply to each
/// job; a job whose unique key is held (by an unfinished job, or an earlier one of `jobs`)
/// returns that job's id.
pub async fn enqueue_many(tx: &mut TenantTx<'_>, jobs: &[NewJob]) -> Result<Vec<JobId>> {
    let tenant = tx.tenant_id();
    run_enqueue_many(&mut *tx, jobs, Some(tenant)).await
}

/// [`enqueue_many`] of system jobs, with the rules of [`enqueue_system`].
pub async fn enqueue_system_many(conn: &mut PgConnection, jobs: &[NewJob]) -> Result<Vec<JobId>> {
    run_enqueue_many(conn, jobs, None).await
}

async fn run_enqueue_many(conn: &mut PgConnection, jobs: &[NewJob], tenant: Option<TenantId>) -> Result<Vec<JobId>> {
    for job in jobs {
        job.validate()?;
    }
    if jobs.is_empty() {
        return Ok(Vec::new());
    }
    let ids: Vec<(JobId,)> = sql::query_as(enqueue_many_stmt(jobs, tenant)).fetch_all(conn).await?;
    Ok(ids.into_iter().map(|(id,)| id).collect())
}

/// The statement of [`claim`].
///
/// ```
/// use pgstrata_queue::client::claim_stmt;
/// let (sql, _) = claim_stmt("default", 10, "w1", std::time::Duration::from_secs(60));
/// assert_eq!(sql, r#"SELECT * FROM queue.claim($1, $2, $3, CAST($4 AS interval)) AS "jobs""#);
/// ```
pub fn claim_stmt(queue: &str, limit: i32, worker: &str, lease: Duration) -> Built {
    sql::build(Query::select().column(Asterisk).from_function(
        Func::cust(QueueFn::Claim).args([
            Expr::val(queue.to_owned()),
            Expr::val(limit),
            Expr::val(worker.to_owned()),
            interval(lease),
        ]),
        Jobs::Table,
    ))
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
    Ok(sql::query_as(claim_stmt(queue, limit, worker, lease))
        .fetch_all(conn)
        .await?)
}

/// The statement of [`promote_due`].
///
/// ```
/// assert_eq!(pgstrata_queue::client::promote_due_stmt().0, "SELECT queue.promote_due()");
/// ```
pub fn promote_due_stmt() -> Built {
    call(QueueFn::PromoteDue, [])
}

/// Makes due scheduled and retryable jobs available; returns how many.
pub async fn promote_due(conn: &mut PgConnection) -> Result<i32> {
    let (n,) = sql::query_as(promote_due_stmt()).fetch_one(conn).await?;
    Ok(n)
}

/// The statement of [`complete`].
///
/// ```
/// use pgstrata_queue::client::{JobId, complete_stmt};
/// assert_eq!(complete_stmt(JobId(7), 1).0, "SELECT queue.complete($1, $2)");
/// ```
pub fn complete_stmt(id: JobId, attempt: i32) -> Built {
    call(QueueFn::Complete, [Expr::val(id), Expr::val(attempt)])
}

/// Completes a job still running in `attempt`; false when it is not (rescued, cancelled).
pub async fn complete(conn: &mut PgConnection, id: JobId, attempt: i32) -> Result<bool> {
    let (done,) = sql::query_as(complete_stmt(id, attempt)).fetch_one(conn).await?;
    Ok(done)
}

fn ids_and_attempts(jobs: &[(JobId, i32)]) -> [Expr; 2] {
    let ids: Vec<i64> = jobs.iter().map(|(id, _)| id.0).collect();
    let attempts: Vec<i32> = jobs.iter().map(|(_, a)| *a).collect();
    [Expr::val(ids), Expr::val(attempts)]
}

/// The statement of [`complete_many`].
///
/// ```
/// use pgstrata_queue::client::{JobId, complete_many_stmt};
/// assert_eq!(complete_many_stmt(&[(JobId(7), 1)]).0, "SELECT queue.complete_many($1, $2)");
/// ```
pub fn complete_many_stmt(jobs: &[(JobId, i32)]) -> Built {
    call(QueueFn::CompleteMany, ids_and_attempts(jobs))
}

/// Completes a batch of jobs; returns the ids completed (a missing one was rescued or
/// cancelled meanwhile).
pub async fn complete_many(conn: &mut PgConnection, jobs: &[(JobId, i32)]) -> Result<Vec<JobId>> {
    let ids: Vec<(JobId,)> = sql::query_as(complete_many_stmt(jobs)).fetch_all(conn).await?;
    Ok(ids.into_iter().map(|(id,)| id).collect())
}

/// The statement of [`heartbeat_many`].
///
/// ```
/// use pgstrata_queue::client::{JobId, heartbeat_many_stmt};
/// let (sql, _) = heartbeat_many_stmt(&[(JobId(7), 1)], std::time::Duration::from_secs(60));
/// assert_eq!(sql, "SELECT queue.heartbeat_many($1, $2, CAST($3 AS interval))");
/// ```
pub fn heartbeat_many_stmt(jobs: &[(JobId, i32)], lease: Duration) -> Built {
    let [ids, attempts] = ids_and_attempts(jobs);
    call(QueueFn::HeartbeatMany, [ids, attempts, interval(lease)])
}

/// Extends the leases of a batch; returns how many were still ours.
pub async fn heartbeat_many(conn: &mut PgConnection, jobs: &[(JobId, i32)], lease: Duration) -> Result<i32> {
    let (n,) = sql::query_as(heartbeat_many_stmt(jobs, lease)).fetch_one(conn).await?;
    Ok(n)
}

/// The statement of [`fail`] and [`fail_at`] (`retry_at` `None`: the backoff's).
///
/// ```
/// use pgstrata_queue::client::{JobId, fail_stmt};
/// assert_eq!(fail_stmt(JobId(7), 1, "boom", None).0, "SELECT queue.fail($1, $2, $3, $4)");
/// ```
pub fn fail_stmt(id: JobId, attempt: i32, error: &str, retry_at: Option<DateTime<Utc>>) -> Built {
    call(
        QueueFn::Fail,
        [
            Expr::val(id),
            Expr::val(attempt),
            Expr::val(error.to_owned()),
            Expr::val(retry_at),
        ],
    )
}

/// Records a failed attempt; returns the new state ([`JobState::Retryable`] or
/// [`JobState::Discarded`]), or `None` when the job is no longer running in `attempt`.
pub async fn fail(conn: &mut PgConnection, id: JobId, attempt: i32, error: &str) -> Result<Option<JobState>> {
    fail_at(conn, id, attempt, error, None).await
}

/// Records a failed attempt that is to be retried at `retry_at` (`None`: the queue's
/// exponential backoff), unless out of attempts; as [`fail`].
pub async fn fail_at(
    conn: &mut PgConnection,
    id: JobId,
    attempt: i32,
    error: &str,
    retry_at: Option<DateTime<Utc>>,
) -> Result<Option<JobState>> {
    let (state,) = sql::query_as(fail_stmt(id, attempt, error, retry_at))
        .fetch_one(conn)
        .await?;
    Ok(state)
}

/// The statement of [`snooze`].
///
/// ```
/// use pgstrata_queue::client::{JobId, snooze_stmt};
/// assert_eq!(snooze_stmt(JobId(7), 1, chrono::Utc::now()).0, "SELECT queue.snooze($1, $2, $3)");
/// ```
pub fn snooze_stmt(id: JobId, attempt: i32, run_at: DateTime<Utc>) -> Built {
    call(QueueFn::Snooze, [Expr::val(id), Expr::val(attempt), Expr::val(run_at)])
}

/// Puts a job still running in `attempt` back to wait until `run_at`, giving the attempt back;
/// false when it is no longer running in `attempt`.
pub async fn snooze(conn: &mut PgConnection, id: JobId, attempt: i32, run_at: DateTime<Utc>) -> Result<bool> {
    let (done,) = sql::query_as(snooze_stmt(id, attempt, run_at)).fetch_one(conn).await?;
    Ok(done)
}

/// The statement of [`cancel_attempt`].
///
/// ```
/// use pgstrata_queue::client::{JobId, cancel_attempt_stmt};
/// assert_eq!(cancel_attempt_stmt(JobId(7), 1, "why").0, "SELECT queue.cancel_attempt($1, $2, $3)");
/// ```
pub fn cancel_attempt_stmt(id: JobId, attempt: i32, reason: &str) -> Built {
    call(
        QueueFn::CancelAttempt,
        [Expr::val(id), Expr::val(attempt), Expr::val(reason.to_owned())],
    )
}

/// Cancels a job still running in `attempt`, recording `reason`; false when it is no longer
/// running in `attempt`.
pub async fn cancel_attempt(conn: &mut PgConnection, id: JobId, attempt: i32, reason: &str) -> Result<bool> {
    let (done,) = sql::query_as(cancel_attempt_stmt(id, attempt, reason))
        .fetch_one(conn)
        .await?;
    Ok(done)
}

/// The statement of [`heartbeat`].
///
/// ```
/// use pgstrata_queue::client::{JobId, heartbeat_stmt};
/// let (sql, _) = heartbeat_stmt(JobId(7), 1, std::time::Duration::from_secs(60));
/// assert_eq!(sql, "SELECT queue.heartbeat($1, $2, CAST($3 AS interval))");
/// ```
pub fn heartbeat_stmt(id: JobId, attempt: i32, lease: Duration) -> Built {
    call(QueueFn::Heartbeat, [Expr::val(id), Expr::val(attempt), interval(lease)])
}

/// Extends the lease of a job still running in `attempt` (lease bounds as [`claim`]'s).
pub async fn heartbeat(conn: &mut PgConnection, id: JobId, attempt: i32, lease: Duration) -> Result<bool> {
    let (done,) = sql::query_as(heartbeat_stmt(id, attempt, lease))
        .fetch_one(conn)
        .await?;
    Ok(done)
}

/// The statement of [`release`].
///
/// ```
/// use pgstrata_queue::client::{JobId, release_stmt};
/// assert_eq!(release_stmt(JobId(7), 1).0, "SELECT queue.release($1, $2)");
/// ```
pub fn release_stmt(id: JobId, attempt: i32) -> Built {
    call(QueueFn::Release, [Expr::val(id), Expr::val(attempt)])
}

/// Gives back a claimed job that was not started; false when it is no longer running in
/// `attempt`.
pub async fn release(conn: &mut PgConnection, id: JobId, attempt: i32) -> Result<bool> {
    let (done,) = sql::query_as(release_stmt(id, attempt)).fetch_one(conn).await?;
    Ok(done)
}

/// The statement of [`rescue`].
///
/// ```
/// assert_eq!(pgstrata_queue::client::rescue_stmt().0, "SELECT queue.rescue()");
/// ```
pub fn rescue_stmt() -> Built {
    call(QueueFn::Rescue, [])
}

/// Brings back jobs whose lease expired; returns how many.
pub async fn rescue(conn: &mut PgConnection) -> Result<i32> {
    let (n,) = sql::query_as(rescue_stmt()).fetch_one(conn).await?;
    Ok(n)
}

/// The statement of [`cancel`].
///
/// ```
/// use pgstrata_queue::client::{JobId, cancel_stmt};
/// assert_eq!(cancel_stmt(JobId(7)).0, "SELECT queue.cancel($1)");
/// ```
pub fn cancel_stmt(id: JobId) -> Built {
    call(QueueFn::Cancel, [Expr::val(id)])
}

/// Cancels an unfinished job. The application role cancels only its context tenant's jobs
/// that no worker holds; a worker cancels any unfinished job (its worker then fails to complete
/// it).
///
/// [`Error::NotFound`] when the caller sees no such job (another tenant's, a system job for the
/// request path); [`Error::Gone`] with the job's state when it is finished, or running and the
/// caller is the request path.
pub async fn cancel(conn: &mut PgConnection, id: JobId) -> Result<()> {
    let (done,) = sql::query_as(cancel_stmt(id)).fetch_one(&mut *conn).await?;
    if done {
        return Ok(());
    }
    Err(refusal(
        conn,
        id,
        "cancel",
        "available, scheduled or retryable (or running, for a worker)",
    )
    .await)
}

/// The statement of [`retry`].
///
/// ```
/// use pgstrata_queue::client::{JobId, retry_stmt};
/// assert_eq!(retry_stmt(JobId(7)).0, "SELECT queue.retry($1)");
/// ```
pub fn retry_stmt(id: JobId) -> Built {
    call(QueueFn::Retry, [Expr::val(id)])
}

/// Puts a discarded or cancelled job back in line, with one more attempt allowed (the
/// application role: its own tenant's). [`Error::NotFound`] and [`Error::Gone`] as for
/// [`cancel`].
pub async fn retry(conn: &mut PgConnection, id: JobId) -> Result<()> {
    let (done,) = sql::query_as(retry_stmt(id)).fetch_one(&mut *conn).await?;
    if done {
        return Ok(());
    }
    Err(refusal(conn, id, "retry", "discarded or cancelled").await)
}

/// Why a change of job `id` by an operator changed nothing: the job is not visible, or its
/// state (read after the refusal) does not allow it.
async fn refusal(conn: &mut PgConnection, id: JobId, operation: &'static str, allowed: &'static str) -> Error {
    match get(conn, id).await {
        Ok(None) => Error::NotFound { id },
        Ok(Some(job)) => Error::Gone {
            id,
            state: job.state,
            operation,
            allowed,
        },
        Err(e) => e,
    }
}

/// The statement of [`prune`].
///
/// ```
/// use pgstrata_queue::client::prune_stmt;
/// let (sql, _) = prune_stmt(std::time::Duration::from_secs(86_400));
/// assert_eq!(sql, "SELECT queue.prune(CAST($1 AS interval))");
/// ```
pub fn prune_stmt(older_than: Duration) -> Built {
    call(QueueFn::Prune, [interval(older_than)])
}

/// Deletes finished jobs older than `older_than` (at least a minute; shorter:
/// [`pgstrata_core::DbError::InvalidInput`], 22023), up to 10,000 per call; returns how many.
pub async fn prune(conn: &mut PgConnection, older_than: Duration) -> Result<i32> {
    let (n,) = sql::query_as(prune_stmt(older_than)).fetch_one(conn).await?;
    Ok(n)
}

/// One row of [`stats`].
#[derive(Debug, Clone, PartialEq, sqlx::FromRow)]
pub struct QueueStats {
    pub queue: String,
    pub state: JobState,
    pub jobs: i64,
    /// Seconds the oldest ready job has waited (available rows only).
    pub oldest_available_secs: Option<f64>,
}

/// The statement of [`stats`]: finished jobs over the function's default window (one day).
///
/// ```
/// assert_eq!(
///     pgstrata_queue::client::stats_stmt().0,
///     r#"SELECT "queue", "state", "jobs", pg_catalog.date_part($1, "oldest_available_age") AS "oldest_available_secs" FROM queue.stats() AS "stats""#
/// );
/// ```
pub fn stats_stmt() -> Built {
    stats_select(Func::cust(QueueFn::Stats))
}

/// The statement of [`stats_within`].
///
/// ```
/// let (sql, _) = pgstrata_queue::client::stats_within_stmt(std::time::Duration::from_secs(3600));
/// assert_eq!(
///     sql,
///     r#"SELECT "queue", "state", "jobs", pg_catalog.date_part($1, "oldest_available_age") AS "oldest_available_secs" FROM queue.stats(CAST($2 AS interval)) AS "stats""#
/// );
/// ```
pub fn stats_within_stmt(finished_within: Duration) -> Built {
    stats_select(Func::cust(QueueFn::Stats).arg(interval(finished_within)))
}

fn stats_select(call: sea_query::FunctionCall) -> Built {
    sql::build(
        Query::select()
            .columns([StatsRow::Queue, StatsRow::State, StatsRow::Jobs])
            .expr_as(
                Func::cust(Builtin::DatePart).args([Expr::val("epoch"), Expr::col(StatsRow::OldestAvailableAge)]),
                StatsRow::OldestAvailableSecs,
            )
            .from_function(call, StatsRow::Table),
    )
}

/// Jobs by queue and state, and the wait of the oldest ready job: every job for a worker, the
/// context tenant's for the application role. Unfinished jobs are all counted; finished ones
/// (completed, discarded, cancelled) over the last day, so the cost follows the backlog, not the
/// history (queue V6). [`stats_within`] takes another window.
pub async fn stats(conn: &mut PgConnection) -> Result<Vec<QueueStats>> {
    Ok(sql::query_as(stats_stmt()).fetch_all(conn).await?)
}

/// [`stats`], counting the jobs finished within `finished_within` (its cost follows the jobs
/// finished in that window).
pub async fn stats_within(conn: &mut PgConnection, finished_within: Duration) -> Result<Vec<QueueStats>> {
    Ok(sql::query_as(stats_within_stmt(finished_within))
        .fetch_all(conn)
        .await?)
}

/// The statement of [`get`].
///
/// ```
/// use pgstrata_queue::client::{JobId, get_stmt};
/// assert_eq!(get_stmt(JobId(7)).0, r#"SELECT * FROM "queue"."jobs" WHERE "id" = $1"#);
/// ```
pub fn get_stmt(id: JobId) -> Built {
    sql::build(
        Query::select()
            .column(Asterisk)
            .from(Jobs::qualified())
            .and_where(Expr::col(Jobs::Id).eq(id)),
    )
}

/// A job by id (`None` when it does not exist or the caller may not see it: the request path
/// sees its context tenant's jobs, a worker every job).
pub async fn get(conn: &mut PgConnection, id: JobId) -> Result<Option<Job>> {
    Ok(sql::query_as(get_stmt(id)).fetch_optional(conn).await?)
}

#[cfg(test)]
mod tests {
    use super::array_literal;

    #[test]
    fn array_literals_quote_every_element_and_keep_nulls() {
        assert_eq!(array_literal::<&str>([]), "{}");
        assert_eq!(array_literal([Some("a"), None, Some("")]), r#"{"a",NULL,""}"#);
        assert_eq!(
            array_literal([Some(r#"say "hi"\now"#), Some("NULL"), Some("{x,y}")]),
            r#"{"say \"hi\"\\now","NULL","{x,y}"}"#
        );
    }
}
