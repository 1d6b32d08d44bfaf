//! The queue's hot statements at 1M jobs: claim, complete_many, promote_due, rescue and prune each
//! read their index and never scan the table. They are SQL and PL/pgSQL functions, so their inner plans come
//! from auto_explain (nested statements) through psql, as the worker role. The listings of
//! queries.md (`-- query:` blocks) are planned as the application role in a tenant's context, or
//! as the worker role across tenants.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use pgstrata_core::migrate::Migrator;
use pgstrata_core::testing::plans::{PlanReport, hot_queries, nested_plans, plan_in_context, queries_md, section};
use pgstrata_core::testing::{TestDb, WORKER_LOGIN_ROLE};
use sqlx::ConnectOptions;

/// 1,000,000 ready jobs over 100 tenants and untenanted ones, 100,000 finished (over the same
/// tenants), 1,000 of them discarded, 10,000 running with expired leases, 10,000 retryable and due.
const SCALE_SQL: &str = r#"
-- The tenants exist: a context naming a tenant that does not is no tenant at all.
INSERT INTO tenancy.tenants (id, slug, name)
SELECT ('00000000-0000-7000-8000-' || lpad(to_hex(k), 12, '0'))::uuid, 'scale-' || k, 'Scale ' || k
  FROM generate_series(0, 99) k;
INSERT INTO queue.jobs (kind, tenant_id, payload)
SELECT 'work', CASE WHEN k % 101 = 0 THEN NULL ELSE ('00000000-0000-7000-8000-' || lpad(to_hex(k % 100), 12, '0'))::uuid END,
       jsonb_build_object('n', k)
  FROM generate_series(1, 1000000) k;
INSERT INTO queue.jobs (kind, tenant_id, state, attempt, finalized_at)
SELECT 'done', CASE WHEN k % 101 = 0 THEN NULL ELSE ('00000000-0000-7000-8000-' || lpad(to_hex(k % 100), 12, '0'))::uuid END,
       CASE WHEN k % 100 = 7 THEN 'discarded' ELSE 'completed' END, 1, now() - interval '3 days'
  FROM generate_series(1, 100000) k;
INSERT INTO queue.jobs (kind, state, attempt, lease_expires_at, worker)
SELECT 'stuck', 'running', 1, now() - interval '1 minute', 'gone' FROM generate_series(1, 10000);
INSERT INTO queue.jobs (kind, state, attempt, run_at)
SELECT 'again', 'retryable', 1, now() - interval '1 second' FROM generate_series(1, 10000);
"#;

/// (statement, the index its plan must use)
const HOT: [(&str, &str); 5] = [
    (
        "SELECT count(*) FROM queue.claim('default', 50, 'w', interval '1 minute')",
        "jobs_fetch_idx",
    ),
    (
        "SELECT count(*) FROM queue.complete_many(ARRAY[1, 2]::bigint[], ARRAY[1, 1])",
        "jobs_pkey",
    ),
    ("SELECT queue.promote_due(1000)", "jobs_due_idx"),
    ("SELECT queue.rescue(1000)", "jobs_lease_idx"),
    ("SELECT queue.prune(interval '1 day', 10000)", "jobs_finalized_idx"),
];

/// The history becomes the bulk of the table: 900,000 of the ready jobs completed three days ago
/// (100,000 stay ready), so a statement that reads the history shows it in its plan.
const HISTORY_SQL: &str = r#"
UPDATE queue.jobs SET state = 'completed', attempt = 1, finalized_at = now() - interval '3 days'
 WHERE state = 'available' AND id % 10 <> 0;
"#;

/// The metrics snapshot reads each state's partial index, never the history.
const METRICS: &str = "SELECT count(*) FROM queue.metrics()";
const METRICS_INDEXES: [&str; 4] = ["jobs_fetch_idx", "jobs_due_idx", "jobs_lease_idx", "jobs_finalized_idx"];
/// So do the counts by queue and state (queue V6): finished jobs only within their window.
const STATS: &str = "SELECT count(*) FROM queue.stats()";

#[tokio::test]
async fn hot_statements_use_their_partial_indexes_at_a_million_jobs() {
    let migrator = Migrator::new([&pgstrata_tenancy::MODULE, &pgstrata_queue::MODULE]).unwrap();
    let db = TestDb::migrated(&migrator).await.unwrap();
    sqlx::raw_sql(SCALE_SQL).execute(&db.admin).await.unwrap();
    sqlx::raw_sql("VACUUM ANALYZE queue.jobs")
        .execute(&db.admin)
        .await
        .unwrap();
    let doc = queries_md();
    let documented = section(&doc, "queue");
    let url = db.url().unwrap();

    let mut report = PlanReport::new();
    for (statement, index) in HOT {
        // The worker's statements run with no tenant in context.
        let plans = nested_plans(
            &url,
            WORKER_LOGIN_ROLE,
            "SELECT set_config('app.tenant_id', '', true)",
            statement,
        )
        .unwrap();
        // The plans of the function's own statement(s), not of the outer SELECT.
        let inner: String = plans
            .split("Query Text:")
            .filter(|plan| plan.contains("queue.jobs") && !plan.contains(statement))
            .collect();
        report
            .show(statement, &inner)
            .uses_index(statement, &inner, index)
            .avoids(statement, &inner, &["Seq Scan on jobs"]);
        // The skip scan must seek to the random pivot, not filter its way to it.
        if index == "jobs_fetch_idx" {
            report.expect(inner.contains("(fair_key >= $"), || {
                format!("{statement}: the pivot is not an index condition:\n{inner}")
            });
        }
        report.expect(documented.contains(index), || {
            format!("queries.md does not show {index}")
        });
    }

    // The listings: a tenant's as the application role (the policy is part of the plan), the
    // stopped jobs of every tenant as the worker role. Each reads its index in id order.
    let listings = hot_queries(&doc, "queue");
    assert!(listings.len() >= 3, "queries.md lists the queue's listings");
    let mut app = db.app_options().connect().await.unwrap();
    let mut worker = db.login_options(WORKER_LOGIN_ROLE).connect().await.unwrap();
    for q in &listings {
        let conn = if q.tag("role") == Some("worker") {
            &mut worker
        } else {
            &mut app
        };
        let planned = plan_in_context(conn, q.tag("tenant"), None, &q.sql).await.unwrap();
        let plan = &planned.plan;
        report
            .show(&format!("{} ({} rows)", q.name, planned.rows), plan)
            .uses_index(&q.name, plan, &q.index)
            .avoids(&q.name, plan, &["Seq Scan on jobs"]);
        report.expect(planned.rows > 0, || format!("{}: the listing found nothing", q.name));
        if q.tag("ordered") == Some("yes") {
            report.expect(
                !plan
                    .lines()
                    .any(|l| l.trim_start().trim_start_matches("->  ").starts_with("Sort")),
                || format!("{}: sorts instead of reading the index in order:\n{plan}", q.name),
            );
        }
    }

    sqlx::raw_sql(HISTORY_SQL).execute(&db.admin).await.unwrap();
    sqlx::raw_sql("VACUUM ANALYZE queue.jobs")
        .execute(&db.admin)
        .await
        .unwrap();
    for statement in [METRICS, STATS] {
        let plans = nested_plans(
            &url,
            WORKER_LOGIN_ROLE,
            "SELECT set_config('app.tenant_id', '', true)",
            statement,
        )
        .unwrap();
        let inner: String = plans
            .split("Query Text:")
            .filter(|plan| plan.contains("queue.jobs") && !plan.contains(statement))
            .collect();
        report.show(statement, &inner);
        for index in METRICS_INDEXES {
            report.uses_index(statement, &inner, index);
        }
        report.avoids(statement, &inner, &["Seq Scan on jobs"]);
    }
    report.assert_ok();
    drop((app, worker));
    db.close().await.unwrap();
}
