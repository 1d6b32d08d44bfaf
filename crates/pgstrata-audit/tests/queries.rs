//! The three questions of queries.md at 1M records over three months, planned as the
//! application role in a tenant's context (so the row-level policy is part of the plan). The
//! test fails when a plan stops using the index queries.md names, scans a month that holds
//! records sequentially, sorts where it should read the months newest first, or reads months
//! the time range excludes.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use pgstrata_core::migrate::Migrator;
use pgstrata_core::testing::TestDb;
use pgstrata_core::testing::plans::{PlanReport, hot_queries, plan_in_context, queries_md};
use sqlx::ConnectOptions;

/// 1,000,000 records from 2026-08-01 on, one every 8 seconds (about 3 months), over 100
/// tenants; each tenant has 10 actors and 500 resources of its own. Fixed dates, so the
/// queries in queries.md hit the same months whenever the test runs.
const SCALE_SQL: &str = r#"
-- The tenants exist: a context naming a tenant that does not is no tenant at all.
INSERT INTO tenancy.tenants (id, slug, name)
SELECT ('00000000-0000-7000-8000-' || lpad(to_hex(k), 12, '0'))::uuid, 'scale-' || k, 'Scale ' || k
  FROM generate_series(0, 99) k;
SELECT audit.create_partition(m::date) FROM generate_series('2026-08-01'::date, '2026-11-01', interval '1 month') m;
INSERT INTO audit.records (tenant_id, occurred_at, actor_id, request_id, action, resource_type, resource_id, new_values)
SELECT ('00000000-0000-7000-8000-' || lpad(to_hex(k % 100), 12, '0'))::uuid,
       '2026-08-01 00:00+00'::timestamptz + k * interval '8 seconds',
       ('00000001-0000-7000-8000-' || lpad(to_hex((k % 100) * 10 + (k / 100) % 10), 12, '0'))::uuid,
       'req-' || k,
       (ARRAY['insert', 'update', 'update', 'delete', 'user.login'])[k % 5 + 1],
       'billing.invoices', (k % 50000)::text,
       jsonb_build_object('amount', k)
  FROM generate_series(1, 1000000) k;
"#;

#[tokio::test]
async fn the_three_questions_use_their_index_at_a_million_records() {
    let queries = hot_queries(&queries_md(), "audit");
    assert!(queries.len() >= 4, "queries.md lists the audit queries");

    let migrator = Migrator::new([&pgstrata_tenancy::MODULE, &pgstrata_audit::MODULE]).unwrap();
    let db = TestDb::migrated(&migrator).await.unwrap();
    sqlx::raw_sql(SCALE_SQL).execute(&db.admin).await.unwrap();
    sqlx::raw_sql("VACUUM ANALYZE audit.records")
        .execute(&db.admin)
        .await
        .unwrap();
    let filled: Vec<String> = sqlx::query_scalar(
        "SELECT name FROM audit.partitions() p
          WHERE EXISTS (SELECT 1 FROM audit.records r WHERE r.occurred_at >= p.lower_bound AND r.occurred_at < p.upper_bound)",
    )
    .fetch_all(&db.admin)
    .await
    .unwrap();
    assert!(filled.len() >= 3, "{filled:?}");
    let mut conn = db.app_options().connect().await.unwrap();

    let mut report = PlanReport::new();
    for q in &queries {
        let planned = plan_in_context(&mut conn, q.tag("tenant"), q.tag("actor"), &q.sql)
            .await
            .unwrap();
        let plan = &planned.plan;
        report.show(&format!("{} ({} rows)", q.name, planned.rows), plan);
        report.uses_index(&q.name, plan, &q.index);
        // The empty months ahead may be read sequentially (at no cost); a month holding
        // records may not.
        let filled_scans: Vec<String> = filled.iter().map(|p| format!("Seq Scan on {p} ")).collect();
        let filled_scans: Vec<&str> = filled_scans.iter().map(String::as_str).collect();
        report.avoids(&q.name, plan, &filled_scans);
        if q.tag("ordered") == Some("yes") {
            report.expect(
                !plan
                    .lines()
                    .any(|l| l.trim_start().trim_start_matches("->  ").starts_with("Sort")),
                || format!("{}: sorts instead of reading the months in order:\n{plan}", q.name),
            );
        }
        // `-- partitions: n`: the time range's months; its plan reads no more.
        if let Some(max) = q.tag("partitions").and_then(|p| p.parse::<usize>().ok()) {
            let scanned = plan.matches(" on records_p").count();
            report.expect(scanned <= max, || {
                format!(
                    "{}: reads {scanned} partitions, the range covers {max}:\n{plan}",
                    q.name
                )
            });
        }
        report.expect(planned.rows > 0, || {
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
    drop(conn);
    db.close().await.unwrap();
}
