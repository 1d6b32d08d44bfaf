//! Every hot query in queries.md, planned at 100k rows as the application role in a tenant's
//! context (so the row-level policy is part of the plan): the test fails when a plan stops
//! using the index queries.md promises, or falls back to a sequential scan.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::migrated_db;
use pgstrata_core::testing::plans::{PlanReport, hot_queries, plan_in_context, queries_md};
use sqlx::ConnectOptions;

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
    let queries = hot_queries(&queries_md(), "tenancy");
    assert!(queries.len() >= 5, "queries.md lists the tenancy hot queries");

    let db = migrated_db().await;
    sqlx::raw_sql(SCALE_SQL).execute(&db.admin).await.unwrap();
    let mut conn = db.app_options().connect().await.unwrap();

    let mut report = PlanReport::new();
    for q in &queries {
        let planned = plan_in_context(&mut conn, q.tag("tenant"), q.tag("actor"), &q.sql)
            .await
            .unwrap();
        report.hot_query(q, &planned);
    }
    report.assert_ok();
    drop(conn);
    db.close().await.unwrap();
}
