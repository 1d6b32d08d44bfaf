//! The questions product teams ask, in the transaction's tenant, each from the rollup when it
//! can and from raw events when it must (queries.md lists each with its plan):
//!
//! - events per day by name: [`daily_counts`], from `events.daily_counts`;
//! - unique actors per day: [`unique_actors`], from `events.daily_uniques`;
//! - events of one name between two instants: [`count`], whole UTC days from the rollup and the
//!   partial days at either end from the name index `(tenant_id, name, occurred_at)`;
//! - a funnel of N steps within a window: [`funnel`] (`events.funnel`, raw events: a funnel
//!   depends on each actor's order of events, which no daily rollup keeps);
//! - a user's recent events: [`recent`], the actor index `(tenant_id, actor, occurred_at)`,
//!   newest first, keyset by [`Cursor`].
//!
//! Every statement names the tenant as well as the policy does, so the planner reads the
//! tenant-led index of only the months in range.

use crate::error::{Error, Result};
use crate::functions::EventsFn;
use crate::generated::{DailyCount, DailyCounts, DailyUnique, DailyUniques, Event, Events};
use crate::ids::EventId;
use chrono::{DateTime, Days, NaiveDate, NaiveTime, Utc};
use pgstrata_core::sql::{self, Built, Rows};
use pgstrata_core::{Page, TenantId, TenantTx};
use sea_query::{Asterisk, Expr, ExprTrait, Func, Order, Query};

/// Most funnel steps.
pub const MAX_FUNNEL_STEPS: usize = 20;

/// A range of UTC days, `from` included, `until` excluded.
fn check_days(from: NaiveDate, until: NaiveDate) -> Result<()> {
    if from >= until {
        return Err(Error::InvalidField {
            field: "day range",
            reason: format!("from ({from}) must be before until ({until})"),
        });
    }
    Ok(())
}

fn check_range(from: DateTime<Utc>, until: DateTime<Utc>) -> Result<()> {
    if from >= until {
        return Err(Error::InvalidField {
            field: "time range",
            reason: format!("from ({from}) must be before until ({until})"),
        });
    }
    Ok(())
}

/// Events per UTC day and name in `[from, until)`, of the names given (all when empty), by day
/// then name.
pub async fn daily_counts(
    tx: &mut TenantTx<'_>,
    from: NaiveDate,
    until: NaiveDate,
    names: &[&str],
) -> Result<Vec<DailyCount>> {
    let built = daily_counts_stmt(tx.tenant_id(), from, until, names)?;
    Ok(sql::query_as(built).fetch_all(&mut **tx).await?)
}

/// The SQL of [`daily_counts`].
///
/// ```
/// use chrono::NaiveDate;
/// let day = |d| NaiveDate::from_ymd_opt(2026, 12, d).unwrap();
/// let (sql, _) = pgstrata_events::query::daily_counts_stmt(pgstrata_core::TenantId::new(), day(1), day(8), &["signup"]).unwrap();
/// assert_eq!(
///     sql,
///     r#"SELECT "tenant_id", "day", "name", "events" FROM "events"."daily_counts" WHERE "tenant_id" = $1 AND "day" >= $2 AND "day" < $3 AND "name" IN ($4) ORDER BY "day" ASC, "name" ASC"#
/// );
/// ```
pub fn daily_counts_stmt(tenant: TenantId, from: NaiveDate, until: NaiveDate, names: &[&str]) -> Result<Built> {
    check_days(from, until)?;
    let mut q = Query::select();
    q.columns([
        DailyCounts::TenantId,
        DailyCounts::Day,
        DailyCounts::Name,
        DailyCounts::Events,
    ])
    .from(DailyCounts::qualified())
    .and_where(Expr::col(DailyCounts::TenantId).eq(tenant))
    .and_where(Expr::col(DailyCounts::Day).gte(from))
    .and_where(Expr::col(DailyCounts::Day).lt(until));
    if !names.is_empty() {
        q.and_where(Expr::col(DailyCounts::Name).is_in(names.iter().copied()));
    }
    q.order_by(DailyCounts::Day, Order::Asc)
        .order_by(DailyCounts::Name, Order::Asc);
    Ok(sql::build(&q))
}

/// Unique actors per UTC day in `[from, until)`, by day (days without events are absent).
pub async fn unique_actors(tx: &mut TenantTx<'_>, from: NaiveDate, until: NaiveDate) -> Result<Vec<DailyUnique>> {
    let built = unique_actors_stmt(tx.tenant_id(), from, until)?;
    Ok(sql::query_as(built).fetch_all(&mut **tx).await?)
}

/// The SQL of [`unique_actors`].
///
/// ```
/// use chrono::NaiveDate;
/// let day = |d| NaiveDate::from_ymd_opt(2026, 12, d).unwrap();
/// let (sql, _) = pgstrata_events::query::unique_actors_stmt(pgstrata_core::TenantId::new(), day(1), day(8)).unwrap();
/// assert_eq!(
///     sql,
///     r#"SELECT "tenant_id", "day", "actors" FROM "events"."daily_uniques" WHERE "tenant_id" = $1 AND "day" >= $2 AND "day" < $3 ORDER BY "day" ASC"#
/// );
/// ```
pub fn unique_actors_stmt(tenant: TenantId, from: NaiveDate, until: NaiveDate) -> Result<Built> {
    check_days(from, until)?;
    Ok(sql::build(
        Query::select()
            .columns([DailyUniques::TenantId, DailyUniques::Day, DailyUniques::Actors])
            .from(DailyUniques::qualified())
            .and_where(Expr::col(DailyUniques::TenantId).eq(tenant))
            .and_where(Expr::col(DailyUniques::Day).gte(from))
            .and_where(Expr::col(DailyUniques::Day).lt(until))
            .order_by(DailyUniques::Day, Order::Asc),
    ))
}

/// How [`count`] splits a range: whole UTC days from the rollup, the rest from raw events.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CountPlan {
    /// Whole days `[from, until)` read from `events.daily_counts`, if any.
    pub days: Option<(NaiveDate, NaiveDate)>,
    /// Instants `[from, until)` read from `events.events` (at most two: the partial first and
    /// last days).
    pub raw: [Option<(DateTime<Utc>, DateTime<Utc>)>; 2],
}

impl CountPlan {
    /// The split of `[from, until)`.
    pub fn of(from: DateTime<Utc>, until: DateTime<Utc>) -> Self {
        let midnight = |d: NaiveDate| d.and_time(NaiveTime::MIN).and_utc();
        let first_whole = {
            let d = from.date_naive();
            if midnight(d) == from {
                d
            } else {
                d.checked_add_days(Days::new(1)).unwrap_or(d)
            }
        };
        let end_whole = until.date_naive();
        if first_whole >= end_whole {
            return Self {
                days: None,
                raw: [Some((from, until)), None],
            };
        }
        let head = (from < midnight(first_whole)).then(|| (from, midnight(first_whole)));
        let tail = (midnight(end_whole) < until).then(|| (midnight(end_whole), until));
        Self {
            days: Some((first_whole, end_whole)),
            raw: [head, tail],
        }
    }
}

/// Events named `name` in `[from, until)`: the whole UTC days from the rollup, the partial days
/// at either end from raw events ([`CountPlan`]).
pub async fn count(tx: &mut TenantTx<'_>, name: &str, from: DateTime<Utc>, until: DateTime<Utc>) -> Result<i64> {
    check_range(from, until)?;
    let tenant = tx.tenant_id();
    let plan = CountPlan::of(from, until);
    let mut total = 0;
    if let Some((d0, d1)) = plan.days {
        let (n,): (i64,) = sql::query_as(rollup_count_stmt(tenant, name, d0, d1)?)
            .fetch_one(&mut **tx)
            .await?;
        total += n;
    }
    for (t0, t1) in plan.raw.into_iter().flatten() {
        let (n,): (i64,) = sql::query_as(raw_count_stmt(tenant, name, t0, t1)?)
            .fetch_one(&mut **tx)
            .await?;
        total += n;
    }
    Ok(total)
}

/// Whole days of [`count`], from the rollup.
///
/// ```
/// use chrono::NaiveDate;
/// let day = |d| NaiveDate::from_ymd_opt(2026, 12, d).unwrap();
/// let (sql, _) = pgstrata_events::query::rollup_count_stmt(pgstrata_core::TenantId::new(), "signup", day(1), day(8)).unwrap();
/// assert_eq!(
///     sql,
///     r#"SELECT CAST(COALESCE(SUM("events"), $1) AS bigint) FROM "events"."daily_counts" WHERE "tenant_id" = $2 AND "name" = $3 AND "day" >= $4 AND "day" < $5"#
/// );
/// ```
pub fn rollup_count_stmt(tenant: TenantId, name: &str, from: NaiveDate, until: NaiveDate) -> Result<Built> {
    check_days(from, until)?;
    Ok(sql::build(
        Query::select()
            .expr(Func::coalesce([Func::sum(Expr::col(DailyCounts::Events)).into(), Expr::val(0)]).cast_as("bigint"))
            .from(DailyCounts::qualified())
            .and_where(Expr::col(DailyCounts::TenantId).eq(tenant))
            .and_where(Expr::col(DailyCounts::Name).eq(name))
            .and_where(Expr::col(DailyCounts::Day).gte(from))
            .and_where(Expr::col(DailyCounts::Day).lt(until)),
    ))
}

/// Partial days of [`count`], from raw events through the name index.
///
/// ```
/// use chrono::{TimeZone, Utc};
/// let t0 = Utc.with_ymd_and_hms(2026, 12, 1, 9, 0, 0).unwrap();
/// let t1 = Utc.with_ymd_and_hms(2026, 12, 1, 17, 0, 0).unwrap();
/// let (sql, _) = pgstrata_events::query::raw_count_stmt(pgstrata_core::TenantId::new(), "signup", t0, t1).unwrap();
/// assert_eq!(
///     sql,
///     r#"SELECT COUNT(*) FROM "events"."events" WHERE "tenant_id" = $1 AND "name" = $2 AND "occurred_at" >= $3 AND "occurred_at" < $4"#
/// );
/// ```
pub fn raw_count_stmt(tenant: TenantId, name: &str, from: DateTime<Utc>, until: DateTime<Utc>) -> Result<Built> {
    check_range(from, until)?;
    Ok(sql::build(
        Query::select()
            .expr(Func::count(Expr::col(Asterisk)))
            .from(Events::qualified())
            .and_where(Expr::col(Events::TenantId).eq(tenant))
            .and_where(Expr::col(Events::Name).eq(name))
            .and_where(Expr::col(Events::OccurredAt).gte(from))
            .and_where(Expr::col(Events::OccurredAt).lt(until)),
    ))
}

/// One step of a funnel: how many actors reached it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, sqlx::FromRow)]
pub struct FunnelStep {
    /// 1 for the first step.
    pub step: i32,
    pub actors: i64,
}

/// A funnel: of the actors who did `steps[0]` in `[from, until)`, how many then did each next
/// step in order, each at or after the previous one and within `window` of their first step.
/// One row per step, the first step's actors first.
pub async fn funnel(
    tx: &mut TenantTx<'_>,
    steps: &[&str],
    from: DateTime<Utc>,
    until: DateTime<Utc>,
    window: std::time::Duration,
) -> Result<Vec<FunnelStep>> {
    Ok(sql::query_as(funnel_stmt(steps, from, until, window)?)
        .fetch_all(&mut **tx)
        .await?)
}

/// The SQL of [`funnel`]: 2 to [`MAX_FUNNEL_STEPS`] steps, a window of at least a second.
///
/// ```
/// use chrono::{TimeZone, Utc};
/// let t0 = Utc.with_ymd_and_hms(2026, 12, 1, 0, 0, 0).unwrap();
/// let t1 = Utc.with_ymd_and_hms(2026, 12, 8, 0, 0, 0).unwrap();
/// let day = std::time::Duration::from_secs(86_400);
/// let (sql, _) = pgstrata_events::query::funnel_stmt(&["signup", "purchase"], t0, t1, day).unwrap();
/// assert_eq!(
///     sql,
///     r#"SELECT * FROM events.funnel(CAST($1 AS text[]), $2, $3, CAST($4 AS interval)) AS "r""#
/// );
/// ```
pub fn funnel_stmt(
    steps: &[&str],
    from: DateTime<Utc>,
    until: DateTime<Utc>,
    window: std::time::Duration,
) -> Result<Built> {
    check_range(from, until)?;
    if steps.len() < 2 || steps.len() > MAX_FUNNEL_STEPS {
        return Err(Error::InvalidField {
            field: "steps",
            reason: format!("a funnel has 2 to {MAX_FUNNEL_STEPS} steps, got {}", steps.len()),
        });
    }
    if window.as_secs() < 1 {
        return Err(Error::InvalidField {
            field: "window",
            reason: "a funnel's window is at least one second".into(),
        });
    }
    // Bound as one JSON-free array literal: each name quoted and escaped as PostgreSQL reads it.
    let literal = format!(
        "{{{}}}",
        steps
            .iter()
            .map(|s| format!("\"{}\"", s.replace('\\', "\\\\").replace('"', "\\\"")))
            .collect::<Vec<_>>()
            .join(",")
    );
    let f = Func::cust(EventsFn::Funnel).args([
        Expr::val(literal).cast_as("text[]"),
        Expr::val(from),
        Expr::val(until),
        Expr::val(format!("{} seconds", window.as_secs())).cast_as("interval"),
    ]);
    Ok(sql::build(Query::select().column(Asterisk).from_function(f, Rows)))
}

/// The keyset position of [`recent`]: the last event of the previous page.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, serde::Serialize, serde::Deserialize)]
pub struct Cursor {
    pub occurred_at: DateTime<Utc>,
    pub event_id: EventId,
}

impl Cursor {
    /// The cursor after `event`.
    pub fn of(event: &Event) -> Self {
        Self {
            occurred_at: event.occurred_at,
            event_id: event.event_id,
        }
    }
}

/// An actor's events, newest first, one page; the next page is `page.next(&rows, Cursor::of)`.
pub async fn recent(tx: &mut TenantTx<'_>, actor: &str, page: &Page<Cursor>) -> Result<Vec<Event>> {
    let built = recent_stmt(tx.tenant_id(), actor, page)?;
    Ok(sql::query_as(built).fetch_all(&mut **tx).await?)
}

/// The SQL of [`recent`].
///
/// ```
/// use pgstrata_core::Page;
/// let page = Page::<pgstrata_events::Cursor>::first(50);
/// let (sql, _) = pgstrata_events::query::recent_stmt(pgstrata_core::TenantId::new(), "user-1", &page).unwrap();
/// assert_eq!(
///     sql,
///     r#"SELECT "tenant_id", "event_id", "occurred_at", "received_at", "name", "actor", "properties", "session_id", "source" FROM "events"."events" WHERE "tenant_id" = $1 AND "actor" = $2 ORDER BY "occurred_at" DESC, "event_id" DESC LIMIT $3"#
/// );
/// ```
pub fn recent_stmt(tenant: TenantId, actor: &str, page: &Page<Cursor>) -> Result<Built> {
    page.validate()?;
    let mut q = Query::select();
    q.columns([
        Events::TenantId,
        Events::EventId,
        Events::OccurredAt,
        Events::ReceivedAt,
        Events::Name,
        Events::Actor,
        Events::Properties,
        Events::SessionId,
        Events::Source,
    ])
    .from(Events::qualified())
    .and_where(Expr::col(Events::TenantId).eq(tenant))
    .and_where(Expr::col(Events::Actor).eq(actor));
    if let Some(c) = page.after {
        // Row comparison: the index walks on from the cursor instead of filtering.
        q.and_where(
            Expr::tuple([Expr::col(Events::OccurredAt), Expr::col(Events::EventId)])
                .lt(Expr::tuple([Expr::val(c.occurred_at), Expr::val(c.event_id)])),
        );
    }
    q.order_by(Events::OccurredAt, Order::Desc)
        .order_by(Events::EventId, Order::Desc)
        .limit(page.limit);
    Ok(sql::build(&q))
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    fn at(d: u32, h: u32) -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2026, 12, d, h, 0, 0).single().unwrap_or_default()
    }

    fn day(d: u32) -> NaiveDate {
        NaiveDate::from_ymd_opt(2026, 12, d).unwrap_or_default()
    }

    #[test]
    fn a_count_reads_whole_days_from_the_rollup_and_the_ends_from_raw_events() {
        assert_eq!(
            CountPlan::of(at(1, 0), at(8, 0)),
            CountPlan {
                days: Some((day(1), day(8))),
                raw: [None, None]
            }
        );
        assert_eq!(
            CountPlan::of(at(1, 9), at(8, 17)),
            CountPlan {
                days: Some((day(2), day(8))),
                raw: [Some((at(1, 9), at(2, 0))), Some((at(8, 0), at(8, 17)))]
            }
        );
        assert_eq!(
            CountPlan::of(at(1, 9), at(1, 17)),
            CountPlan {
                days: None,
                raw: [Some((at(1, 9), at(1, 17))), None]
            }
        );
        assert_eq!(
            CountPlan::of(at(1, 9), at(2, 17)),
            CountPlan {
                days: None,
                raw: [Some((at(1, 9), at(2, 17))), None]
            }
        );
    }
}
