//! Looking at jobs: [`list`] a tenant's jobs in its [`TenantTx`], [`list_all`] across tenants
//! for operators and workers, by state, kind, queue and tenant, newest first, one keyset
//! [`Page<JobId>`] at a time.
//!
//! A page continues below the previous page's last id. Several states are one branch per state,
//! each read from an index on its state and merged in id order (`UNION ALL` under one
//! `ORDER BY id DESC LIMIT n`), so the cost follows the selected jobs, not the table. One tenant's jobs (the request path's, or an
//! operator's with [`JobFilter::tenant`]) are read from `jobs_tenant_list_idx (fair_key,
//! state, id)`, and its running jobs from `jobs_lease_idx`; across tenants, every job from the
//! primary key, and the discarded and cancelled ones from `jobs_stopped_idx (state, id)`. Other
//! states across tenants (an operator's question) are filtered from the primary key.

use crate::error::{Error, Result};
use crate::functions::{Builtin, MetricsRow, QueueFn};
use crate::generated::{Job, Jobs};
use crate::ids::{JobId, JobState};
use pgstrata_core::sql::{self, Built};
use pgstrata_core::{Page, TenantId, TenantTx};
use sea_query::{Asterisk, Expr, ExprTrait, Func, Order, Query, SelectStatement, UnionType};
use sqlx::PgConnection;
use std::time::Duration;

/// The fair key of jobs without a tenant (`queue.jobs.fair_key`).
const SYSTEM_KEY: uuid::Uuid = uuid::Uuid::nil();

/// Every state, in the order the branches of a listing are written.
const ALL_STATES: [JobState; 7] = [
    JobState::Available,
    JobState::Scheduled,
    JobState::Running,
    JobState::Retryable,
    JobState::Completed,
    JobState::Discarded,
    JobState::Cancelled,
];

/// Which jobs to list. Filters combine with AND; the default selects every job the caller sees.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct JobFilter {
    states: Vec<JobState>,
    kind: Option<String>,
    queue: Option<String>,
    /// `Some(None)`: system jobs (no tenant).
    tenant: Option<Option<TenantId>>,
}

impl JobFilter {
    /// Every job.
    pub fn new() -> Self {
        Self::default()
    }

    /// Jobs in `state` (call again, or use [`JobFilter::states`], for several).
    pub fn state(mut self, state: JobState) -> Self {
        if !self.states.contains(&state) {
            self.states.push(state);
        }
        self
    }

    /// Jobs in any of `states` (empty: every state).
    pub fn states(mut self, states: impl IntoIterator<Item = JobState>) -> Self {
        for s in states {
            self = self.state(s);
        }
        self
    }

    /// Jobs of one kind.
    pub fn kind(mut self, kind: impl Into<String>) -> Self {
        self.kind = Some(kind.into());
        self
    }

    /// Jobs of one queue.
    pub fn queue(mut self, queue: impl Into<String>) -> Self {
        self.queue = Some(queue.into());
        self
    }

    /// Jobs of one tenant ([`list_all`] only: [`list`] takes the transaction's).
    pub fn tenant(mut self, tenant: TenantId) -> Self {
        self.tenant = Some(Some(tenant));
        self
    }

    /// System jobs, which have no tenant ([`list_all`] only).
    pub fn system(mut self) -> Self {
        self.tenant = Some(None);
        self
    }
}

/// One state's branch of a listing (`None`: every state).
fn branch(
    state: Option<JobState>,
    filter: &JobFilter,
    fair_key: Option<uuid::Uuid>,
    after: Option<JobId>,
) -> SelectStatement {
    let mut q = Query::select();
    q.column(Asterisk).from(Jobs::qualified());
    if let Some(key) = fair_key {
        q.and_where(Expr::col(Jobs::FairKey).eq(key));
    }
    if let Some(state) = state {
        q.and_where(Expr::col(Jobs::State).eq(state.as_str()));
        // Implied by the jobs_running_has_lease constraint; said, so that the planner reads the
        // running jobs from jobs_lease_idx (jobs_tenant_list_idx leaves them out).
        if state == JobState::Running {
            q.and_where(Expr::col(Jobs::LeaseExpiresAt).is_not_null());
        }
    }
    if let Some(kind) = &filter.kind {
        q.and_where(Expr::col(Jobs::Kind).eq(kind.clone()));
    }
    if let Some(queue) = &filter.queue {
        q.and_where(Expr::col(Jobs::Queue).eq(queue.clone()));
    }
    if let Some(after) = after {
        q.and_where(Expr::col(Jobs::Id).lt(after));
    }
    q
}

/// The statement of [`list`] (`tenant` `Some`) and [`list_all`]: the jobs `filter` selects,
/// newest (highest id) first, one page. The tenant is written out as `fair_key = $n`, which
/// leads `jobs_tenant_list_idx`; on the request path the row-level policy restricts the rows to
/// the same tenant. A page size outside 1..=1000 is [`Error::InvalidPage`].
///
/// ```
/// use pgstrata_core::{Page, TenantId};
/// use pgstrata_queue::{JobId, JobState, inspect::{JobFilter, list_stmt}};
/// let filter = JobFilter::new().state(JobState::Discarded).kind("mail");
/// let (sql, _) = list_stmt(&filter, &Page::first(20)).unwrap();
/// assert_eq!(
///     sql,
///     r#"SELECT * FROM "queue"."jobs" WHERE "state" = $1 AND "kind" = $2 ORDER BY "id" DESC LIMIT $3"#
/// );
///
/// // Two states of one tenant, after the previous page's last job: one branch per state.
/// let t: TenantId = "0190b6a0-0000-7000-8000-000000000001".parse().unwrap();
/// let filter = JobFilter::new().tenant(t).states([JobState::Completed, JobState::Cancelled]);
/// let (sql, _) = list_stmt(&filter, &Page::after(JobId(900), 50)).unwrap();
/// assert_eq!(
///     sql,
///     r#"SELECT * FROM "queue"."jobs" WHERE "fair_key" = $1 AND "state" = $2 AND "id" < $3 UNION ALL (SELECT * FROM "queue"."jobs" WHERE "fair_key" = $4 AND "state" = $5 AND "id" < $6) ORDER BY "id" DESC LIMIT $7"#
/// );
/// assert!(list_stmt(&filter, &Page::first(0)).is_err());
/// ```
pub fn list_stmt(filter: &JobFilter, page: &Page<JobId>) -> Result<Built> {
    page.validate()?;
    if let Some(queue) = &filter.queue {
        crate::client::validate_queue(queue)?;
    }
    let fair_key = filter.tenant.map(|t| t.map_or(SYSTEM_KEY, |t| t.0));
    let mut q = if filter.states.is_empty() && fair_key.is_none() {
        // Every job across tenants: the primary key, newest first.
        branch(None, filter, None, page.after)
    } else {
        let states = if filter.states.is_empty() {
            &ALL_STATES[..]
        } else {
            &filter.states[..]
        };
        let mut branches = states.iter().map(|s| branch(Some(*s), filter, fair_key, page.after));
        let mut q = branches
            .next()
            .unwrap_or_else(|| branch(None, filter, fair_key, page.after));
        for b in branches {
            q.union(UnionType::All, b);
        }
        q
    };
    q.order_by(Jobs::Id, Order::Desc).limit(page.limit);
    Ok(sql::build(&q))
}

/// A page of the transaction's tenant's jobs that `filter` selects, newest first:
/// `Page::first(n)`, then `page.next(&jobs, |j| j.id)`. The tenant is the transaction's; a
/// filter that names one (or asks for system jobs) is [`Error::InvalidField`].
pub async fn list(tx: &mut TenantTx<'_>, filter: &JobFilter, page: &Page<JobId>) -> Result<Vec<Job>> {
    if filter.tenant.is_some() {
        return Err(Error::InvalidField {
            field: "tenant",
            reason: "the tenant is the transaction's: leave it out of the filter (list_all names one)".into(),
        });
    }
    let filter = filter.clone().tenant(tx.tenant_id());
    Ok(sql::query_as(list_stmt(&filter, page)?).fetch_all(&mut **tx).await?)
}

/// A page of the jobs `filter` selects across tenants, newest first, for operators and workers
/// (the caller's role decides what it sees: every job for `pgstrata_worker` or the owner; the
/// request path sees only its context tenant's, and should use [`list`]).
pub async fn list_all(conn: &mut PgConnection, filter: &JobFilter, page: &Page<JobId>) -> Result<Vec<Job>> {
    Ok(sql::query_as(list_stmt(filter, page)?).fetch_all(conn).await?)
}

/// One queue's row of [`metrics`]: its backlog by state and its recent throughput.
#[derive(Debug, Clone, PartialEq, sqlx::FromRow, serde::Serialize)]
pub struct QueueMetrics {
    pub queue: String,
    /// Jobs ready to run now.
    pub available: i64,
    /// Jobs waiting for their run time.
    pub scheduled: i64,
    /// Jobs held by workers.
    pub running: i64,
    /// Failed jobs waiting for their next attempt.
    pub retryable: i64,
    /// Seconds the oldest ready job has waited (`None` when none is ready).
    pub oldest_available_secs: Option<f64>,
    /// Jobs completed, discarded and cancelled within the window.
    pub completed: i64,
    pub discarded: i64,
    pub cancelled: i64,
}

/// The statement of [`metrics`].
///
/// ```
/// use pgstrata_queue::inspect::metrics_stmt;
/// let (sql, _) = metrics_stmt(std::time::Duration::from_secs(60)).unwrap();
/// assert_eq!(
///     sql,
///     r#"SELECT "queue", "available", "scheduled", "running", "retryable", pg_catalog.date_part($1, "oldest_available_age") AS "oldest_available_secs", "completed", "discarded", "cancelled" FROM queue.metrics(CAST($2 AS interval)) AS "metrics""#
/// );
/// assert!(metrics_stmt(std::time::Duration::ZERO).is_err());
/// ```
pub fn metrics_stmt(window: Duration) -> Result<Built> {
    if window.is_zero() || window > Duration::from_secs(3600) {
        return Err(Error::InvalidField {
            field: "window",
            reason: format!("{window:?} is not within (0, 1 hour]"),
        });
    }
    Ok(sql::build(
        Query::select()
            .columns([
                MetricsRow::Queue,
                MetricsRow::Available,
                MetricsRow::Scheduled,
                MetricsRow::Running,
                MetricsRow::Retryable,
            ])
            .expr_as(
                Func::cust(Builtin::DatePart).args([Expr::val("epoch"), Expr::col(MetricsRow::OldestAvailableAge)]),
                MetricsRow::OldestAvailableSecs,
            )
            .columns([MetricsRow::Completed, MetricsRow::Discarded, MetricsRow::Cancelled])
            .from_function(
                Func::cust(QueueFn::Metrics).arg(crate::client::interval(window)),
                MetricsRow::Table,
            ),
    ))
}

/// A snapshot for an exporter, one row per queue with work or recent throughput: jobs by
/// unfinished state, the oldest ready job's wait, and the jobs finished within `window` (more
/// than zero, at most an hour; divide by it for a rate). Its cost follows the backlog and the
/// jobs finished within the window, not the history ([`crate::client::stats`] counts the
/// history). Worker role (`queue.metrics` is `pgstrata_worker`'s).
pub async fn metrics(conn: &mut PgConnection, window: Duration) -> Result<Vec<QueueMetrics>> {
    Ok(sql::query_as(metrics_stmt(window)?).fetch_all(conn).await?)
}
