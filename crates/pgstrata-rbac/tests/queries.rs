//! The check's own plan at scale: 1,000 tenants, 100,000 grants in one of them. The check is a
//! PL/pgSQL function, so its inner statement is planned where EXPLAIN cannot see it;
//! auto_explain (nested statements, NOTICE level) prints it through psql
//! (`testing::plans::nested_plans`). Every tenant table must be read through an index; the
//! global system-role tables (a handful of rows) may be scanned.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use pgstrata_core::testing::APP_LOGIN_ROLE;
use pgstrata_core::testing::plans::{PlanReport, hot_queries, nested_plans, plan_in_context, queries_md, section};
use sqlx::ConnectOptions;

/// Scale data; ids follow `00000000-0000-7000-8000-<k in hex>` (tenants) and
/// `00000002-0000-7000-8000-<k in hex>` (users), as queries.md uses them.
const SCALE_SQL: &str = r#"
INSERT INTO rbac.permissions (key)
SELECT 'res' || r || ':' || a FROM generate_series(0, 9) r, unnest(ARRAY['read', 'create', 'update', 'delete', 'export']) a;
INSERT INTO tenancy.tenants (id, slug, name)
SELECT ('00000000-0000-7000-8000-' || lpad(to_hex(k), 12, '0'))::uuid, 'tenant-' || k, 'Tenant ' || k
  FROM generate_series(1, 1000) k;
INSERT INTO tenancy.users (id, email)
SELECT ('00000002-0000-7000-8000-' || lpad(to_hex(k), 12, '0'))::uuid, 'user' || k || '@example.com'
  FROM generate_series(1, 10000) k;
-- Tenant 1 is the big one: 10,000 members with 10 grants each.
INSERT INTO tenancy.memberships (tenant_id, user_id, role)
SELECT '00000000-0000-7000-8000-000000000001'::uuid, ('00000002-0000-7000-8000-' || lpad(to_hex(k), 12, '0'))::uuid,
       CASE WHEN k % 5 = 0 THEN 'viewer' ELSE 'member' END
  FROM generate_series(1, 10000) k;
INSERT INTO rbac.roles (tenant_id, key)
SELECT '00000000-0000-7000-8000-000000000001'::uuid, 'r' || i FROM generate_series(1, 3) i;
INSERT INTO rbac.role_parents (tenant_id, role_key, parent_key) VALUES
    ('00000000-0000-7000-8000-000000000001', 'r1', 'r2'),
    ('00000000-0000-7000-8000-000000000001', 'r2', 'r3'),
    ('00000000-0000-7000-8000-000000000001', 'r3', 'viewer');
INSERT INTO rbac.role_permissions (tenant_id, role_key, permission, effect)
SELECT '00000000-0000-7000-8000-000000000001'::uuid, 'r' || i, 'res' || i || ':*', 'allow' FROM generate_series(1, 3) i
UNION ALL SELECT '00000000-0000-7000-8000-000000000001'::uuid, 'r2', 'res2:delete', 'deny';
INSERT INTO rbac.grants (tenant_id, principal_type, principal_id, role_key, permission, effect, resource_type, resource_id, expires_at)
SELECT '00000000-0000-7000-8000-000000000001'::uuid, 'user', ('00000002-0000-7000-8000-' || lpad(to_hex(k), 12, '0'))::uuid,
       CASE WHEN n = 0 THEN 'r1' END,
       CASE WHEN n > 0 THEN 'res' || n || CASE WHEN n % 2 = 0 THEN ':*' ELSE ':export' END END,
       CASE WHEN n = 7 THEN 'deny' ELSE 'allow' END,
       CASE WHEN n IN (3, 4) THEN 'res' || n END,
       CASE WHEN n IN (3, 4) THEN (k % 100)::text END,
       CASE WHEN n = 5 THEN now() - interval '1 day' END
  FROM generate_series(1, 10000) k, generate_series(0, 9) n;
-- Every tenant has its own custom roles (20, chained in pairs) and groups.
INSERT INTO rbac.roles (tenant_id, key)
SELECT t.id, 'custom' || i FROM tenancy.tenants t, generate_series(1, 20) i;
INSERT INTO rbac.role_permissions (tenant_id, role_key, permission, effect)
SELECT t.id, 'custom' || i, 'res' || (i % 10) || ':' || a, 'allow'
  FROM tenancy.tenants t, generate_series(1, 20) i, unnest(ARRAY['read', 'update']) a;
INSERT INTO rbac.role_parents (tenant_id, role_key, parent_key)
SELECT t.id, 'custom' || i, 'custom' || (i + 1) FROM tenancy.tenants t, generate_series(1, 19, 2) i;
INSERT INTO rbac.group_members (tenant_id, group_id, principal_type, principal_id)
SELECT '00000000-0000-7000-8000-000000000001'::uuid, ('00000003-0000-7000-8000-' || lpad(to_hex(k % 100), 12, '0'))::uuid,
       'user', ('00000002-0000-7000-8000-' || lpad(to_hex(k), 12, '0'))::uuid
  FROM generate_series(1, 10000) k;
INSERT INTO rbac.grants (tenant_id, principal_type, principal_id, role_key)
SELECT '00000000-0000-7000-8000-000000000001'::uuid, 'group',
       ('00000003-0000-7000-8000-' || lpad(to_hex(g), 12, '0'))::uuid, 'custom' || (g % 20 + 1)
  FROM generate_series(0, 99) g;
ANALYZE;
"#;

#[tokio::test]
async fn the_check_reads_tenant_tables_through_indexes_at_100k_grants() {
    let db = common::migrated_db().await;
    sqlx::raw_sql(SCALE_SQL).execute(&db.admin).await.unwrap();
    let grants: i64 = sqlx::query_scalar("SELECT count(*) FROM rbac.grants")
        .fetch_one(&db.admin)
        .await
        .unwrap();
    assert_eq!(grants, 100_100);

    let doc = queries_md();
    let queries = hot_queries(&doc, "rbac");
    let check = queries
        .iter()
        .find(|q| q.name == "check")
        .expect("queries.md shows the check");
    let tenant = check.tag("tenant").expect("the check names its tenant");

    // It runs as the application role in the tenant's context and answers.
    let mut conn = db.app_options().connect().await.unwrap();
    let ran = plan_in_context(&mut conn, Some(tenant), None, &check.sql)
        .await
        .unwrap();
    assert_eq!(ran.rows, 1, "the check ran: {}", ran.plan);
    drop(conn);

    // Run it 8 times so PL/pgSQL's plan cache settles, as the application's sessions would.
    let notices = nested_plans(
        &db.url().unwrap(),
        APP_LOGIN_ROLE,
        &format!("SELECT set_config('app.tenant_id', '{tenant}', true)"),
        &std::iter::repeat_n(check.sql.as_str(), 8)
            .collect::<Vec<_>>()
            .join(";\n"),
    )
    .unwrap();
    assert!(
        notices.contains("Query Text: WITH RECURSIVE"),
        "auto_explain printed the statement's plan: {notices}"
    );
    let last_plan = notices
        .rsplit("Query Text: WITH RECURSIVE")
        .next()
        .expect("auto_explain printed the statements plan");
    let mut report = PlanReport::new();
    report
        .show("check: rbac.resolve", last_plan)
        .avoids(
            "check",
            last_plan,
            &[
                "Seq Scan on grants",
                "Seq Scan on group_members",
                "Seq Scan on memberships",
                "Seq Scan on role_parents",
                "Seq Scan on role_permissions",
            ],
        )
        .uses_index("check", last_plan, "grants_principal_idx")
        .uses_index("check", last_plan, &check.index)
        .expect(section(&doc, "rbac").contains("grants_principal_idx"), || {
            "queries.md shows the plan".into()
        })
        .expect(check.documented_plan.contains(&check.index), || {
            format!("the plan shown in queries.md does not mention {}", check.index)
        });
    report.assert_ok();
    db.close().await.unwrap();
}
