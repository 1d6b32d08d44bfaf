//! Periodic (cron) jobs, enqueued exactly once per period however many processes run the
//! scheduler: each period's job is inserted together with a `queue.periodic_runs` row whose
//! primary key is (schedule name, period start), in one call of `queue.enqueue_periodic`.

use crate::client::{JobId, NewJob};
use crate::error::{Error, Result};
use chrono::{DateTime, Utc};
use sqlx::PgConnection;
use std::str::FromStr;

/// A job to enqueue on a cron schedule.
#[derive(Debug, Clone)]
pub struct Periodic {
    pub name: String,
    schedule: cron::Schedule,
    pub job: NewJob,
}

impl Periodic {
    /// `expression` has seconds: `sec min hour day-of-month month day-of-week [year]`, e.g.
    /// `0 */5 * * * *` for every five minutes.
    pub fn new(name: impl Into<String>, expression: &str, job: NewJob) -> Result<Self> {
        let schedule = cron::Schedule::from_str(expression).map_err(|e| Error::InvalidField {
            field: "cron expression",
            reason: format!("{expression:?}: {e}"),
        })?;
        Ok(Self {
            name: name.into(),
            schedule,
            job,
        })
    }

    /// The start of the period `now` falls in: the latest fire time at or before `now`.
    pub fn period_start(&self, now: DateTime<Utc>) -> Option<DateTime<Utc>> {
        self.schedule
            .after(&(now + chrono::Duration::milliseconds(1)))
            .next_back()
    }
}

/// Enqueues the current period's job of every schedule whose period has not been enqueued yet;
/// returns the jobs this call created (none when another process was first).
pub async fn enqueue_due(conn: &mut PgConnection, schedules: &[Periodic], now: DateTime<Utc>) -> Result<Vec<JobId>> {
    let mut created = Vec::new();
    for p in schedules {
        let Some(period) = p.period_start(now) else { continue };
        let id: Option<JobId> = sqlx::query_scalar("SELECT queue.enqueue_periodic($1, $2, $3, $4, $5, $6, $7, $8)")
            .bind(&p.name)
            .bind(period)
            .bind(&p.job.kind)
            .bind(&p.job.payload)
            .bind(&p.job.queue)
            .bind(p.job.priority)
            .bind(p.job.max_attempts)
            .bind(p.job.tenant_id.map(|t| t.0))
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
