//! Periodic (cron) jobs, enqueued exactly once per period however many processes run the
//! scheduler: each period's job is inserted together with a `queue.periodic_runs` row whose
//! primary key is (schedule name, period start), in one call of `queue.enqueue_periodic`.

use crate::client::NewJob;
use crate::error::{Error, Result};
use crate::functions::QueueFn;
use crate::ids::JobId;
use chrono::{DateTime, Utc};
use pgstrata_core::TenantId;
use pgstrata_core::sql::{self, Built};
use sea_query::{Expr, Func, Query};
use sqlx::PgConnection;
use std::str::FromStr;

/// A job to enqueue on a cron schedule, by the worker (across tenants).
#[derive(Debug, Clone)]
pub struct Periodic {
    pub name: String,
    schedule: cron::Schedule,
    pub job: NewJob,
    /// The tenant whose context each period's job runs in; `None`: a system job.
    pub tenant_id: Option<TenantId>,
}

impl Periodic {
    /// `expression` has seconds: `sec min hour day-of-month month day-of-week [year]`, e.g.
    /// `0 */5 * * * *` for every five minutes.
    pub fn new(name: impl Into<String>, expression: &str, job: NewJob) -> Result<Self> {
        let schedule = cron::Schedule::from_str(expression).map_err(|e| Error::InvalidField {
            field: "cron expression",
            reason: format!("{expression:?}: {e}"),
        })?;
        job.validate()?;
        Ok(Self {
            name: name.into(),
            schedule,
            job,
            tenant_id: None,
        })
    }

    /// Each period's job runs in `tenant`'s context (a per-tenant schedule).
    pub fn tenant(mut self, tenant: TenantId) -> Self {
        self.tenant_id = Some(tenant);
        self
    }

    /// The start of the period `now` falls in: the latest fire time at or before `now`.
    pub fn period_start(&self, now: DateTime<Utc>) -> Option<DateTime<Utc>> {
        self.schedule
            .after(&(now + chrono::Duration::milliseconds(1)))
            .next_back()
    }
}

/// The statement of [`enqueue_due`] for one schedule's period.
///
/// ```
/// use pgstrata_queue::{NewJob, Periodic, periodic::enqueue_periodic_stmt};
/// let nightly = Periodic::new("nightly", "0 0 3 * * *", NewJob::new("report", serde_json::json!({}))).unwrap();
/// let (sql, _) = enqueue_periodic_stmt(&nightly, chrono::Utc::now());
/// assert_eq!(sql, "SELECT queue.enqueue_periodic($1, $2, $3, $4, $5, $6, $7, $8)");
/// ```
pub fn enqueue_periodic_stmt(p: &Periodic, period_start: DateTime<Utc>) -> Built {
    sql::build(Query::select().expr(Func::cust(QueueFn::EnqueuePeriodic).args([
        Expr::val(p.name.clone()),
        Expr::val(period_start),
        Expr::val(p.job.kind.clone()),
        Expr::val(p.job.payload.clone()),
        Expr::val(p.job.queue.clone()),
        Expr::val(p.job.priority),
        Expr::val(p.job.max_attempts),
        Expr::val(p.tenant_id.map(|t| t.0)),
    ])))
}

/// Enqueues the current period's job of every schedule whose period has not been enqueued yet;
/// returns the jobs this call created (none when another process was first). Worker role only.
pub async fn enqueue_due(conn: &mut PgConnection, schedules: &[Periodic], now: DateTime<Utc>) -> Result<Vec<JobId>> {
    let mut created = Vec::new();
    for p in schedules {
        let Some(period) = p.period_start(now) else { continue };
        let (id,): (Option<JobId>,) = sql::query_as(enqueue_periodic_stmt(p, period))
            .fetch_one(&mut *conn)
            .await?;
        created.extend(id);
    }
    Ok(created)
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    #[test]
    fn the_period_is_the_latest_fire_time_at_or_before_now() {
        let p = Periodic::new("five", "0 */5 * * * *", NewJob::new("x", serde_json::json!({}))).unwrap();
        let at = |h, m, s| Utc.with_ymd_and_hms(2026, 1, 1, h, m, s).unwrap();
        assert_eq!(p.period_start(at(10, 7, 30)), Some(at(10, 5, 0)));
        assert_eq!(p.period_start(at(10, 5, 0)), Some(at(10, 5, 0)));
        assert!(Periodic::new("bad", "every tuesday", NewJob::new("x", serde_json::json!({}))).is_err());
    }
}
