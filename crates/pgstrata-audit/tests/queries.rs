//! The three questions of queries.md at 1M records over three months, planned as the
//! application role in a tenant's context (so the row-level policy is part of the plan). The
//! test fails when a plan stops using the index queries.md names, scans a month that holds
//! records sequentially, sorts where it should read the months newest first, or reads months
//! the time range excludes.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use pgstrata_core::migrate::Migrator;
use pgstrata_core::testing::TestDb;
use sqlx::{ConnectOptions, Connection};

/// A query block of queries.md: its SQL, the index it must use and its context.
#[derive(Debug)]
struct HotQuery {
    name: String,
    sql: String,
    index: String,
    tenant: String,
    /// Partitions its plan may touch (the time range's months); none means any.
    partitions: Option<usize>,
    /// Must read the months in order instead of sorting (`-- ordered: yes`).
    ordered: bool,
    documented_plan: String,
}

/// Reads the ```sql blocks tagged `-- query:` of the audit module and the plan block after each.
fn hot_queries(doc: &str) -> Vec<HotQuery> {
    let mut out = Vec::new();
    let blocks: Vec<&str> = doc.split("```").collect();
    for (i, block) in blocks.iter().enumerate() {
        let Some(body) = block.strip_prefix("sql\n") else {
            continue;
        };
        let tag = |key: &str| {
            body.lines().find_map(|l| {
                l.trim()
                    .strip_prefix(&format!("-- {key}:"))
                    .map(|v| v.trim().to_owned())
            })
        };
        let Some(name) = tag("query") else { continue };
        if tag("module").as_deref() != Some("audit") {
            continue;
        }
        let sql = body
            .lines()
            .filter(|l| !l.trim_start().starts_with("--"))
            .collect::<Vec<_>>()
            .join("\n");
        out.push(HotQuery {
            name,
            sql: sql.trim().trim_end_matches(';').to_owned(),
            index: tag("index").unwrap_or_default(),
            tenant: tag("tenant").unwrap_or_default(),
            partitions: tag("partitions").and_then(|p| p.parse().ok()),
            ordered: tag("ordered").as_deref() == Some("yes"),
            documented_plan: blocks
                .get(i + 2)
                .map(|p| p.trim_start_matches("text\n").to_owned())
                .unwrap_or_default(),
        });
    }
    out
}

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
    let doc = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../../queries.md")).unwrap();
    let queries = hot_queries(&doc);
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

    let mut failures = Vec::new();
    for q in &queries {
        let mut tx = conn.begin().await.unwrap();
        sqlx::query("SELECT set_config('app.tenant_id', $1, true)")
            .bind(&q.tenant)
            .execute(&mut *tx)
            .await
            .unwrap();
        let plan: Vec<String> = sqlx::query_scalar(sqlx::AssertSqlSafe(format!("EXPLAIN (COSTS OFF) {}", q.sql)))
            .fetch_all(&mut *tx)
            .await
            .unwrap();
        let plan = plan.join("\n");
        let rows = sqlx::query(sqlx::AssertSqlSafe(q.sql.clone()))
            .fetch_all(&mut *tx)
            .await
            .unwrap();
        tx.rollback().await.unwrap();
        if std::env::var_os("PGSTRATA_PRINT_PLANS").is_some() {
            println!("-- {} ({} rows)\n{plan}\n", q.name, rows.len());
        }

        if !plan.contains(&q.index) {
            failures.push(format!("{}: expected {} in the plan:\n{plan}", q.name, q.index));
        }
        for p in &filled {
            if plan.contains(&format!("Seq Scan on {p} ")) {
                failures.push(format!("{}: scans {p} sequentially:\n{plan}", q.name));
            }
        }
        if q.ordered
            && plan
                .lines()
                .any(|l| l.trim_start().trim_start_matches("->  ").starts_with("Sort"))
        {
            failures.push(format!(
                "{}: sorts instead of reading the months in order:\n{plan}",
                q.name
            ));
        }
        if let Some(max) = q.partitions {
            let scanned = plan.matches(" on records_p").count();
            if scanned > max {
                failures.push(format!(
                    "{}: reads {scanned} partitions, the range covers {max}:\n{plan}",
                    q.name
                ));
            }
        }
        if rows.is_empty() {
            failures.push(format!(
                "{}: returned no rows; the query in queries.md does not hit the test data",
                q.name
            ));
        }
        if !q.documented_plan.contains(&q.index) {
            failures.push(format!(
                "{}: the plan in queries.md does not mention {}",
                q.name, q.index
            ));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
    drop(conn);
    db.close().await.unwrap();
}
