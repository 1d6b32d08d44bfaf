//! The hot queries of queries.md at 1M messages over 200 tenants: the relay's read of one
//! partition and the health count through `messages_relay_idx`, cleanup through the BRIN index,
//! a tenant's messages through the primary key as the application role (the policy in the
//! plan). Fails when a query stops using its index or sorts where it should read in order.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use pgstrata_core::testing::plans::{PlanReport, Planned, hot_queries, nested_plans, plan_in_context, queries_md};
use pgstrata_core::testing::{TestDb, WORKER_LOGIN_ROLE};
use sqlx::ConnectOptions;

/// 1,000,000 messages: 100,000 transactions of 10 messages, over 200 tenants with 10 aggregates
/// each, one transaction every 26 ms over the last 30 days; one sink whose checkpoints have
/// passed the first half. The transaction ids are written out (3 to 100,002), so the relay's read from txid 10
/// finds rows below any server's horizon.
pub const SCALE_SQL: &str = r#"
INSERT INTO tenancy.tenants (id, slug, name)
SELECT ('00000000-0000-7000-8000-' || lpad(to_hex(k), 12, '0'))::uuid, 'scale-' || k, 'Scale ' || k
  FROM generate_series(0, 199) k;
INSERT INTO outbox.messages (tenant_id, txid, partition, aggregate_type, aggregate_id, event_type, payload, published_at)
SELECT t.tenant_id, (3 + k / 10)::text::xid8, outbox.partition_of(t.tenant_id, 'order', t.aggregate_id),
       'order', t.aggregate_id, 'OrderChanged', jsonb_build_object('k', k),
       now() - interval '30 days' + (k / 10) * interval '26 milliseconds'
  FROM generate_series(0, 999999) k
 CROSS JOIN LATERAL (SELECT ('00000000-0000-7000-8000-' || lpad(to_hex((k / 10) % 200), 12, '0'))::uuid AS tenant_id,
                            'o-' || (k % 10) AS aggregate_id) t;
SELECT outbox.register_sink('search');
UPDATE outbox.checkpoints SET after_txid = '50000';
"#;

#[tokio::test]
async fn the_hot_queries_use_their_index_at_a_million_messages() {
    let queries = hot_queries(&queries_md(), "outbox");
    assert!(queries.len() >= 4, "queries.md lists the outbox queries");
    let db = TestDb::migrated(&common::migrator()).await.unwrap();
    sqlx::raw_sql(SCALE_SQL).execute(&db.admin).await.unwrap();
    sqlx::raw_sql("VACUUM ANALYZE outbox.messages, outbox.checkpoints")
        .execute(&db.admin)
        .await
        .unwrap();
    let mut app = db.app_options().connect().await.unwrap();
    let mut owner = db.admin_conn().await.unwrap();
    let mut report = PlanReport::new();
    for q in &queries {
        let planned = match q.tag("role") {
            Some("owner") => plan_in_context(&mut owner, None, None, &q.sql).await.unwrap(),
            // A function: the plans of the statements it runs, from auto_explain.
            Some("worker") => Planned {
                plan: nested_plans(
                    &db.url().unwrap(),
                    WORKER_LOGIN_ROLE,
                    "SELECT 1",
                    &format!("{};", q.sql),
                )
                .unwrap(),
                rows: 1,
            },
            _ => plan_in_context(&mut app, q.tag("tenant"), None, &q.sql).await.unwrap(),
        };
        report.show(&format!("{} ({} rows)", q.name, planned.rows), &planned.plan);
        report.uses_index(&q.name, &planned.plan, &q.index);
        report.avoids(&q.name, &planned.plan, &["Seq Scan on messages", "Sort"]);
        report.expect(planned.rows > 0, || {
            format!("{}: returned no rows; the query does not hit the test data", q.name)
        });
        report.expect(q.documented_plan.contains(&q.index), || {
            format!("{}: the plan in queries.md does not mention {}", q.name, q.index)
        });
    }
    report.assert_ok();
    drop((app, owner));
    db.close().await.unwrap();
}
