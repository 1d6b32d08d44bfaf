//! The questions of queries.md at 1M events over three months and 200 tenants, planned as the
//! application role in a tenant's context (so the row-level policy is part of the plan), the
//! funnel through auto_explain (its statements are planned inside `events.funnel`), and the
//! scan across tenants as the owner. The test fails when a per-tenant question stops using the
//! tenant-led index queries.md names, reads a month holding events sequentially, reads months
//! its range excludes, sorts where it should read in order, or when the time-range scan across
//! tenants stops using the BRIN index.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use pgstrata_core::migrate::Migrator;
use pgstrata_core::testing::TestDb;
use pgstrata_core::testing::plans::{PlanReport, hot_queries, nested_plans, plan_in_context, queries_md};
use sqlx::ConnectOptions;

/// 1,000,000 events from 2026-08-01, one every 7 seconds (81 days: August, September and most
/// of October), over 200 tenants; each tenant has 50 actors and 10 event names. Fixed dates, so
/// the queries in queries.md hit the same months whenever the test runs (late events are
/// accepted for a year here; the insert trigger keeps the rollups, as for any insert).
pub const SCALE_SQL: &str = r#"
INSERT INTO tenancy.tenants (id, slug, name)
SELECT ('00000000-0000-7000-8000-' || lpad(to_hex(k), 12, '0'))::uuid, 'scale-' || k, 'Scale ' || k
  FROM generate_series(0, 199) k;
UPDATE events.settings SET accept_late_days = 366, retention_months = NULL;
SELECT events.create_partition(m::date) FROM generate_series('2026-08-01'::date, '2026-11-01', interval '1 month') m;
INSERT INTO events.events (tenant_id, event_id, occurred_at, received_at, name, actor, properties, session_id, source)
SELECT ('00000000-0000-7000-8000-' || lpad(to_hex(k % 200), 12, '0'))::uuid,
       ('01900000-0000-7000-8000-' || lpad(to_hex(k), 12, '0'))::uuid,
       '2026-08-01 00:00+00'::timestamptz + k * interval '7 seconds',
       '2026-08-01 00:00+00'::timestamptz + k * interval '7 seconds' + interval '2 seconds',
       (ARRAY['page.viewed', 'signup', 'project.created', 'invite.sent', 'purchase',
              'page.viewed', 'search', 'page.viewed', 'export', 'logout'])[(k / 200) % 10 + 1],
       'user-' || (k / 2000) % 50,
       jsonb_build_object('path', '/p/' || k % 37, 'plan', (ARRAY['free', 'pro'])[k % 2 + 1], 'ms', k % 900),
       's-' || k / 20000, 'web'
  FROM generate_series(1, 1000000) k;
"#;

#[tokio::test]
async fn the_questions_use_their_index_at_a_million_events() {
    let queries = hot_queries(&queries_md(), "events");
    assert!(queries.len() >= 6, "queries.md lists the events queries");

    let migrator = Migrator::new([&pgstrata_tenancy::MODULE, &pgstrata_events::MODULE]).unwrap();
    let db = TestDb::migrated(&migrator).await.unwrap();
    // received_at is the server's on the request path; the owner back-dates it here.
    sqlx::raw_sql(SCALE_SQL).execute(&db.admin).await.unwrap();
    sqlx::raw_sql("VACUUM ANALYZE events.events, events.daily_counts, events.daily_uniques")
        .execute(&db.admin)
        .await
        .unwrap();
    let filled: Vec<String> = sqlx::query_scalar(
        "SELECT name FROM events.partitions() p
          WHERE EXISTS (SELECT 1 FROM events.events e WHERE e.occurred_at >= p.lower_bound AND e.occurred_at < p.upper_bound)",
    )
    .fetch_all(&db.admin)
    .await
    .unwrap();
    assert!(filled.len() >= 3, "{filled:?}");
    let mut app = db.app_options().connect().await.unwrap();
    let mut owner = db.admin_conn().await.unwrap();
    let url = db.url().unwrap();

    let mut report = PlanReport::new();
    for q in &queries {
        let (plan, rows) = match (q.tag("role"), q.tag("nested")) {
            (_, Some("yes")) => {
                let setup = format!(
                    "SELECT set_config('app.tenant_id', '{}', true)",
                    q.tag("tenant").unwrap_or_default()
                );
                let plans = nested_plans(
                    &url,
                    pgstrata_core::testing::APP_LOGIN_ROLE,
                    &setup,
                    &format!("{};", q.sql),
                )
                .unwrap();
                (plans, 1)
            }
            (Some("owner"), _) => {
                let planned = plan_in_context(&mut owner, None, None, &q.sql).await.unwrap();
                (planned.plan, planned.rows)
            }
            _ => {
                let planned = plan_in_context(&mut app, q.tag("tenant"), None, &q.sql).await.unwrap();
                (planned.plan, planned.rows)
            }
        };
        report.show(&format!("{} ({rows} rows)", q.name), &plan);
        for index in q.index.split(", ") {
            report.uses_index(&q.name, &plan, index);
        }
        let filled_scans: Vec<String> = filled.iter().map(|p| format!("Seq Scan on {p} ")).collect();
        let filled_scans: Vec<&str> = filled_scans.iter().map(String::as_str).collect();
        report.avoids(&q.name, &plan, &filled_scans);
        if q.tag("ordered") == Some("yes") {
            report.expect(
                !plan
                    .lines()
                    .any(|l| l.trim_start().trim_start_matches("->  ").starts_with("Sort")),
                || format!("{}: sorts instead of reading the months in order:\n{plan}", q.name),
            );
        }
        if let Some(max) = q.tag("partitions").and_then(|p| p.parse::<usize>().ok()) {
            // Partitions read: `on events_pYYYYMM` followed by no index-name suffix.
            let scanned = plan
                .match_indices(" on events_p")
                .filter(|(i, m)| plan[i + m.len()..].chars().nth(6).is_none_or(|c| c != '_'))
                .count();
            report.expect(scanned <= max, || {
                format!(
                    "{}: reads {scanned} partitions, the range covers {max}:\n{plan}",
                    q.name
                )
            });
        }
        report.expect(rows > 0, || {
            format!(
                "{}: returned no rows; the query in queries.md does not hit the test data",
                q.name
            )
        });
        for index in q.index.split(", ") {
            report.expect(q.documented_plan.contains(index), || {
                format!("{}: the plan in queries.md does not mention {index}", q.name)
            });
        }
    }
    report.assert_ok();
    drop((app, owner));
    db.close().await.unwrap();
}
