//! Every hot query in queries.md, planned at 100k rows as the application role in a tenant's
//! context (so the row-level policy is part of the plan): the test fails when a plan stops
//! using the index queries.md promises, or falls back to a sequential scan.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::migrated_db;
use sqlx::{ConnectOptions, Connection};

/// A query block of queries.md: its SQL, expected index and context.
#[derive(Debug)]
struct HotQuery {
    name: String,
    sql: String,
    index: String,
    tenant: Option<String>,
    actor: Option<String>,
    /// The plan queries.md shows for it.
    documented_plan: String,
}

/// Reads the ```sql blocks tagged `-- query:` and the plan block that follows each.
fn hot_queries(doc: &str, module: &str) -> Vec<HotQuery> {
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
        if tag("module").as_deref() != Some(module) {
            continue;
        }
        let sql = body
            .lines()
            .filter(|l| !l.trim_start().starts_with("--"))
            .collect::<Vec<_>>()
            .join("\n");
        let documented_plan = blocks
            .get(i + 2)
            .map(|p| p.trim_start_matches("text\n").to_owned())
            .unwrap_or_default();
        out.push(HotQuery {
            name,
            sql: sql.trim().trim_end_matches(';').to_owned(),
            index: tag("index").unwrap_or_default(),
            tenant: tag("tenant"),
            actor: tag("actor"),
            documented_plan,
        });
    }
    out
}

/// 1,000 tenants of 100 members and one of 100,000: 200k users, 200k memberships, 100k
/// invitations, with the ids queries.md uses.
const SCALE_SQL: &str = r#"
INSERT INTO tenancy.tenants (id, slug, name)
SELECT ('00000000-0000-7000-8000-' || lpad(to_hex(k), 12, '0'))::uuid, 'tenant-' || k, 'Tenant ' || k
  FROM generate_series(1, 1000) k;
INSERT INTO tenancy.users (id, email, display_name)
SELECT ('00000001-0000-7000-8000-' || lpad(to_hex(k), 12, '0'))::uuid, 'user' || k || '@example.com', 'User ' || k
  FROM generate_series(1, 100000) k;
INSERT INTO tenancy.memberships (tenant_id, user_id, role)
SELECT ('00000000-0000-7000-8000-' || lpad(to_hex(k % 1000 + 1), 12, '0'))::uuid,
       ('00000001-0000-7000-8000-' || lpad(to_hex(k), 12, '0'))::uuid,
       CASE WHEN k % 10 = 0 THEN 'admin' ELSE 'member' END
  FROM generate_series(1, 100000) k;
INSERT INTO tenancy.invitations (tenant_id, email, token_hash, expires_at, status, accepted_by, accepted_at)
SELECT ('00000000-0000-7000-8000-' || lpad(to_hex(k % 1000 + 1), 12, '0'))::uuid,
       'invitee' || k || '@example.com', sha256(convert_to('token-' || k, 'UTF8')),
       now() + interval '7 days', CASE WHEN k % 4 = 0 THEN 'accepted' ELSE 'pending' END,
       CASE WHEN k % 4 = 0 THEN ('00000001-0000-7000-8000-' || lpad(to_hex(k), 12, '0'))::uuid END,
       CASE WHEN k % 4 = 0 THEN now() END
  FROM generate_series(1, 100000) k;
-- Tenant 1001 has 100,000 members of its own: the largest size the member directory is planned at.
INSERT INTO tenancy.tenants (id, slug, name)
VALUES ('00000000-0000-7000-8000-0000000003e9', 'tenant-1001', 'Tenant 1001');
INSERT INTO tenancy.users (id, email, display_name)
SELECT ('00000002-0000-7000-8000-' || lpad(to_hex(k), 12, '0'))::uuid, 'member' || k || '@example.com', 'Member ' || k
  FROM generate_series(1, 100000) k;
INSERT INTO tenancy.memberships (tenant_id, user_id, role)
SELECT '00000000-0000-7000-8000-0000000003e9', ('00000002-0000-7000-8000-' || lpad(to_hex(k), 12, '0'))::uuid, 'member'
  FROM generate_series(1, 100000) k;
ANALYZE tenancy.tenants, tenancy.users, tenancy.memberships, tenancy.invitations;
"#;

#[tokio::test]
async fn hot_queries_use_their_index_at_100k_rows_and_a_100k_member_tenant() {
    let doc = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../../queries.md")).unwrap();
    let queries = hot_queries(&doc, "tenancy");
    assert!(queries.len() >= 5, "queries.md lists the tenancy hot queries");

    let db = migrated_db().await;
    sqlx::raw_sql(SCALE_SQL).execute(&db.admin).await.unwrap();
    let mut conn = db.app_options().connect().await.unwrap();

    let mut failures = Vec::new();
    for q in &queries {
        let mut tx = conn.begin().await.unwrap();
        sqlx::query("SELECT set_config('app.tenant_id', $1, true), set_config('app.actor_id', $2, true)")
            .bind(q.tenant.clone().unwrap_or_default())
            .bind(q.actor.clone().unwrap_or_default())
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
        let uses_index = plan.contains(&format!("using {}", q.index)) || plan.contains(&format!("on {}", q.index));
        if !uses_index || plan.contains("Seq Scan") {
            failures.push(format!(
                "{}: expected an index scan of {}, got:\n{plan}",
                q.name, q.index
            ));
        }
        if rows.is_empty() {
            failures.push(format!(
                "{}: returned no rows; the query in queries.md does not hit the test data",
                q.name
            ));
        }
        if !q.documented_plan.contains(&q.index) {
            failures.push(format!(
                "{}: the plan shown in queries.md does not mention {}",
                q.name, q.index
            ));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
    drop(conn);
    db.close().await.unwrap();
}
