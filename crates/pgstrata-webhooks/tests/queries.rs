//! The hot queries of queries.md's webhooks section at 1M attempts (250,000 messages and
//! deliveries, 4 attempts each, 1,000 endpoints of 200 tenants), planned as the application
//! role in a tenant's context (the policy is part of the plan) or, for the dispatcher's
//! queries across tenants, as the owner. The test fails when a query stops using the index
//! queries.md names, scans a table sequentially, or returns no rows.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use pgstrata_core::migrate::Migrator;
use pgstrata_core::testing::TestDb;
use pgstrata_core::testing::plans::{PlanReport, hot_queries, plan_in_context, queries_md};
use sqlx::ConnectOptions;

/// Tenant k is `00000000-0000-7000-8000-<k in hex>`; endpoint e (of tenant e % 200) is
/// `00000000-0000-7000-8000-<100000 + e in hex>`; message and delivery k go to endpoint
/// k % 1000, sent every 10 s from 2026-08-01: 90% succeeded, 5% failed, 4% pending, 1% running.
pub const SCALE_SQL: &str = r#"
CREATE FUNCTION pg_temp.t(k bigint) RETURNS uuid LANGUAGE sql AS $$ SELECT ('00000000-0000-7000-8000-' || lpad(to_hex(k), 12, '0'))::uuid $$;
INSERT INTO tenancy.tenants (id, slug, name) SELECT pg_temp.t(k), 'scale-' || k, 'Scale ' || k FROM generate_series(0, 199) k;
INSERT INTO webhooks.endpoints (tenant_id, id, url)
SELECT pg_temp.t(e % 200), pg_temp.t(100000 + e), 'https://r' || e || '.example/hook' FROM generate_series(0, 999) e;
ALTER TABLE webhooks.messages DISABLE TRIGGER messages_check;
INSERT INTO webhooks.messages (tenant_id, id, event_type, payload, created_at, expires_at)
SELECT pg_temp.t(k % 200), pg_temp.t(10000000 + k), 'invoice.paid', convert_to('{"k": ' || k || '}', 'UTF8'),
       '2026-08-01'::timestamptz + k * interval '10 seconds', '2026-08-31'::timestamptz + k * interval '10 seconds'
  FROM generate_series(0, 249999) k;
ALTER TABLE webhooks.messages ENABLE TRIGGER messages_check;
INSERT INTO webhooks.deliveries (tenant_id, id, message_id, endpoint_id, state, attempts, next_attempt_at, lease_expires_at, created_at, finished_at)
SELECT pg_temp.t(k % 200), k, pg_temp.t(10000000 + k), pg_temp.t(100000 + k % 1000), s.state, 4,
       '2026-08-01'::timestamptz + k * interval '10 seconds' + interval '1 hour',
       CASE WHEN s.state = 'running' THEN '2026-08-01'::timestamptz + k * interval '10 seconds' + interval '5 minutes' END,
       '2026-08-01'::timestamptz + k * interval '10 seconds',
       CASE WHEN s.state IN ('succeeded', 'failed') THEN '2026-08-01'::timestamptz + k * interval '10 seconds' + interval '1 hour' END
  FROM generate_series(0, 249999) k,
       LATERAL (SELECT CASE WHEN k % 100 < 90 THEN 'succeeded' WHEN k % 100 < 95 THEN 'failed'
                            WHEN k % 100 < 99 THEN 'pending' ELSE 'running' END AS state) s;
INSERT INTO webhooks.attempts (tenant_id, id, delivery_id, message_id, endpoint_id, attempt, trigger, state, url, started_at, finished_at, status_code, duration_ms)
SELECT d.tenant_id, d.id * 4 + n, d.id, d.message_id, d.endpoint_id, n, 'scheduled',
       CASE WHEN n < 4 THEN 'failed' WHEN d.state = 'running' THEN 'running' WHEN d.state = 'succeeded' THEN 'succeeded' ELSE 'failed' END,
       'https://r.example/hook', d.created_at + n * interval '5 minutes', d.created_at + n * interval '5 minutes' + interval '80 ms',
       CASE WHEN n < 4 OR d.state <> 'succeeded' THEN 500 ELSE 200 END, 80
  FROM webhooks.deliveries d, generate_series(1, 4) n;
"#;

#[tokio::test]
async fn the_hot_queries_use_their_index_at_a_million_attempts() {
    let queries = hot_queries(&queries_md(), "webhooks");
    assert!(queries.len() >= 6, "queries.md lists the webhooks queries");
    let migrator = Migrator::new([&pgstrata_tenancy::MODULE, &pgstrata_webhooks::MODULE]).unwrap();
    let db = TestDb::migrated(&migrator).await.unwrap();
    sqlx::raw_sql(SCALE_SQL).execute(&db.admin).await.unwrap();
    let attempts: i64 = sqlx::query_scalar("SELECT count(*) FROM webhooks.attempts")
        .fetch_one(&db.admin)
        .await
        .unwrap();
    assert_eq!(attempts, 1_000_000);
    sqlx::raw_sql("VACUUM ANALYZE webhooks.endpoints, webhooks.messages, webhooks.deliveries, webhooks.attempts")
        .execute(&db.admin)
        .await
        .unwrap();
    let mut app = db.app_options().connect().await.unwrap();
    let mut owner = db.admin_conn().await.unwrap();
    let mut report = PlanReport::new();
    for q in &queries {
        let planned = match q.tag("role") {
            Some("owner") => plan_in_context(&mut owner, None, None, &q.sql).await.unwrap(),
            _ => plan_in_context(&mut app, q.tag("tenant"), None, &q.sql).await.unwrap(),
        };
        let (plan, rows) = (planned.plan, planned.rows);
        report.show(&format!("{} ({rows} rows)", q.name), &plan);
        for index in q.index.split(", ") {
            report.uses_index(&q.name, &plan, index);
            report.expect(q.documented_plan.contains(index), || {
                format!("{}: the plan in queries.md does not mention {index}", q.name)
            });
        }
        report.avoids(
            &q.name,
            &plan,
            &["Seq Scan on attempts", "Seq Scan on deliveries", "Seq Scan on messages"],
        );
        report.expect(rows > 0, || {
            format!("{}: returned no rows; the query does not hit the test data", q.name)
        });
    }
    report.assert_ok();
    drop((app, owner));
    db.close().await.unwrap();
}
