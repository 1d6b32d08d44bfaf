//! The hot queries of queries.md at 1M events, 200 tenants and 100,000 streams of 10 events:
//! the request path's reads planned as the application role in a tenant's context (so the
//! row-level policy is part of the plan), the append's stream lock as the owner (it runs inside
//! `eventstore.append`), and the subscriptions' reader through auto_explain as the worker (its
//! statements are planned inside `eventstore.read_after`). The test fails when a query stops
//! using the index queries.md names, scans the events sequentially, or sorts where it should
//! read an index in order.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use pgstrata_core::migrate::Migrator;
use pgstrata_core::testing::plans::{PlanReport, hot_queries, nested_plans, plan_in_context, queries_md};
use pgstrata_core::testing::{TestDb, WORKER_LOGIN_ROLE};
use sqlx::ConnectOptions;

/// 1,000,000 events: event k belongs to tenant k % 200, which numbers its own events j = k / 200;
/// stream j / 10 of the tenant (500 streams a tenant; categories courier and order in turn, and
/// every 100th stream a menu, the rare category) at version j % 10 + 1. Positions follow k, so the tenants' events interleave in the
/// log as they would. One loading transaction: every txid is the same, below the horizon once
/// it commits.
pub const SCALE_SQL: &str = r#"
INSERT INTO tenancy.tenants (id, slug, name)
SELECT ('00000000-0000-7000-8000-' || lpad(to_hex(t), 12, '0'))::uuid, 'scale-' || t, 'Scale ' || t
  FROM generate_series(0, 199) t;
INSERT INTO eventstore.events (tenant_id, event_id, stream, version, txid, type, data)
SELECT ('00000000-0000-7000-8000-' || lpad(to_hex(k % 200), 12, '0'))::uuid,
       ('01900000-0000-7000-8000-' || lpad(to_hex(k), 12, '0'))::uuid,
       CASE WHEN (k / 2000) % 100 = 0 THEN 'menu' WHEN (k / 2000) % 2 = 0 THEN 'order' ELSE 'courier' END
           || '-' || (k / 2000),
       (k / 200) % 10 + 1,
       pg_current_xact_id(),
       (ARRAY['Placed', 'Prepared', 'Assigned', 'Delivered'])[k % 4 + 1],
       jsonb_build_object('k', k, 'note', md5(k::text))
  FROM generate_series(0, 999999) k
 ORDER BY k;
INSERT INTO eventstore.streams (tenant_id, stream, version, last_txid)
SELECT tenant_id, stream, max(version), max(txid) FROM eventstore.events GROUP BY tenant_id, stream;
"#;

#[tokio::test]
async fn the_hot_queries_use_their_index_at_a_million_events() {
    let queries = hot_queries(&queries_md(), "eventstore");
    assert!(queries.len() >= 6, "queries.md lists the eventstore queries");

    let migrator = Migrator::new([&pgstrata_tenancy::MODULE, &pgstrata_eventstore::MODULE]).unwrap();
    let db = TestDb::migrated(&migrator).await.unwrap();
    sqlx::raw_sql(SCALE_SQL).execute(&db.admin).await.unwrap();
    sqlx::raw_sql("VACUUM ANALYZE eventstore.events, eventstore.streams")
        .execute(&db.admin)
        .await
        .unwrap();
    let mut app = db.app_options().connect().await.unwrap();
    let mut owner = db.admin_conn().await.unwrap();
    let url = db.url().unwrap();

    let mut report = PlanReport::new();
    for q in &queries {
        let (plan, rows) = match (q.tag("role"), q.tag("nested")) {
            (_, Some("yes")) => {
                // Twice: the second run shows the plan PL/pgSQL keeps.
                let plans = nested_plans(&url, WORKER_LOGIN_ROLE, "SELECT 1", &format!("{0}; {0};", q.sql)).unwrap();
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
        report.uses_index(&q.name, &plan, &q.index);
        report.avoids(&q.name, &plan, &["Seq Scan on events", "Seq Scan on streams"]);
        report.expect(
            !plan
                .lines()
                .any(|l| l.trim_start().trim_start_matches("->  ").starts_with("Sort")),
            || format!("{}: sorts instead of reading the index in order:\n{plan}", q.name),
        );
        report.expect(rows > 0, || {
            format!(
                "{}: returned no rows; the query in queries.md does not hit the test data",
                q.name
            )
        });
        report.expect(q.documented_plan.contains(&q.index), || {
            format!("{}: the plan in queries.md does not mention {}", q.name, q.index)
        });
    }
    report.assert_ok();
    drop((app, owner));
    db.close().await.unwrap();
}
