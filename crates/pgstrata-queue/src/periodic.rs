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

/// A time zone of the IANA database (`chrono_tz::Tz`, e.g. `Europe/Paris`), which a schedule's
/// fields are read in.
pub use chrono_tz::Tz;

/// A job to enqueue on a cron schedule, by the worker (across tenants).
#[derive(Debug, Clone)]
pub struct Periodic {
    pub name: String,
    schedule: croner::Cron,
    time_zone: Tz,
    pub job: NewJob,
    /// The tenant whose context each period's job runs in; `None`: a system job.
    pub tenant_id: Option<TenantId>,
}

impl Periodic {
    /// A schedule in UTC. `expression` is a standard cron expression,
    /// `minute hour day-of-month month day-of-week` (e.g. `*/5 * * * *`, every five minutes;
    /// `30 3 * * MON-FRI`, 03:30 on weekdays), or the same with seconds first (6 fields, e.g.
    /// `0 */5 * * * *`) and optionally a year last (7 fields). Days of the week are 0 to 7
    /// (Sunday is 0 and 7) or `SUN` to `SAT`; a day of the month and a day of the week both
    /// restricted match either (as Vixie cron), `L`, `W`, `#` and `+` as croner reads them.
    pub fn new(name: impl Into<String>, expression: &str, job: NewJob) -> Result<Self> {
        let schedule = croner::parser::CronParser::builder()
            .seconds(croner::parser::Seconds::Optional)
            .year(croner::parser::Year::Optional)
            .build()
            .parse(expression)
            .map_err(|e| Error::InvalidField {
                field: "cron expression",
                reason: format!("{expression:?}: {e}"),
            })?;
        job.validate()?;
        Ok(Self {
            name: name.into(),
            schedule,
            time_zone: Tz::UTC,
            job,
            tenant_id: None,
        })
    }

    /// Reads the expression's fields in `zone`'s wall-clock time (`"Europe/Paris".parse()`):
    /// `0 3 * * *` is 03:00 there, summer and winter. Across a daylight saving change a time
    /// that the change skips runs at the first instant after the gap, and a time that happens
    /// twice runs once, at the first.
    pub fn time_zone(mut self, zone: Tz) -> Self {
        self.time_zone = zone;
        self
    }

    /// Each period's job runs in `tenant`'s context (a per-tenant schedule).
    pub fn tenant(mut self, tenant: TenantId) -> Self {
        self.tenant_id = Some(tenant);
        self
    }

    /// The start of the period `now` falls in: the latest fire time at or before `now`.
    pub fn period_start(&self, now: DateTime<Utc>) -> Option<DateTime<Utc>> {
        let local = now.with_timezone(&self.time_zone);
        self.schedule
            .find_previous_occurrence(&local, true)
            .ok()
            .map(|t| t.with_timezone(&Utc))
    }
}

/// The statement of [`enqueue_due`] for one schedule's period.
///
/// ```
/// use pgstrata_queue::{NewJob, Periodic, periodic::enqueue_periodic_stmt};
/// let nightly = Periodic::new("nightly", "0 3 * * *", NewJob::new("report", serde_json::json!({}))).unwrap();
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

    fn job() -> NewJob {
        NewJob::new("x", serde_json::json!({}))
    }

    #[test]
    fn the_period_is_the_latest_fire_time_at_or_before_now() {
        let at = |h, m, s| Utc.with_ymd_and_hms(2026, 1, 1, h, m, s).unwrap();
        // Standard five fields, and the six-field form with seconds of earlier releases.
        for expression in ["*/5 * * * *", "0 */5 * * * *"] {
            let p = Periodic::new("five", expression, job()).unwrap();
            assert_eq!(p.period_start(at(10, 7, 30)), Some(at(10, 5, 0)), "{expression}");
            assert_eq!(p.period_start(at(10, 5, 0)), Some(at(10, 5, 0)), "{expression}");
        }
        let seconds = Periodic::new("two", "*/2 * * * * *", job()).unwrap();
        assert_eq!(seconds.period_start(at(10, 7, 31)), Some(at(10, 7, 30)));
        for bad in ["every tuesday", "* * *", "61 * * * *"] {
            assert!(Periodic::new("bad", bad, job()).is_err(), "{bad}");
        }
        // Weekdays are POSIX: 1 is Monday (2026-01-01 is a Thursday).
        let monday = Periodic::new("monday", "0 9 * * 1", job()).unwrap();
        assert_eq!(
            monday.period_start(at(10, 0, 0)),
            Some(Utc.with_ymd_and_hms(2025, 12, 29, 9, 0, 0).unwrap())
        );
    }

    #[test]
    fn a_time_zone_keeps_the_wall_clock_time_across_daylight_saving_changes() {
        let paris: Tz = "Europe/Paris".parse().unwrap();
        let utc = |y, mo, d, h, mi| Utc.with_ymd_and_hms(y, mo, d, h, mi, 0).unwrap();
        // 03:00 in Paris is 02:00 UTC in winter and 01:00 UTC in summer.
        let nightly = Periodic::new("nightly", "0 3 * * *", job()).unwrap().time_zone(paris);
        assert_eq!(
            nightly.period_start(utc(2026, 3, 28, 12, 0)),
            Some(utc(2026, 3, 28, 2, 0))
        );
        assert_eq!(
            nightly.period_start(utc(2026, 3, 29, 12, 0)),
            Some(utc(2026, 3, 29, 1, 0))
        );
        assert_eq!(
            nightly.period_start(utc(2026, 10, 25, 12, 0)),
            Some(utc(2026, 10, 25, 2, 0))
        );
        // 02:30 does not exist on 2026-03-29 in Paris (02:00 -> 03:00): that day's run is at
        // 03:00 local (01:00 UTC), the first instant after the gap, and there is one run.
        let half_past_two = Periodic::new("gap", "30 2 * * *", job()).unwrap().time_zone(paris);
        assert_eq!(
            half_past_two.period_start(utc(2026, 3, 29, 12, 0)),
            Some(utc(2026, 3, 29, 1, 0))
        );
        assert_eq!(
            half_past_two.period_start(utc(2026, 3, 30, 12, 0)),
            Some(utc(2026, 3, 30, 0, 30))
        );
        // 02:30 happens twice on 2026-10-25 (03:00 -> 02:00): one period, from the first.
        let first = utc(2026, 10, 25, 0, 30);
        assert_eq!(half_past_two.period_start(utc(2026, 10, 25, 0, 45)), Some(first));
        assert_eq!(half_past_two.period_start(utc(2026, 10, 25, 1, 45)), Some(first));
        // In UTC, no change at all.
        let utc_nightly = Periodic::new("utc", "0 3 * * *", job()).unwrap();
        assert_eq!(
            utc_nightly.period_start(utc(2026, 3, 29, 12, 0)),
            Some(utc(2026, 3, 29, 3, 0))
        );
    }
}
