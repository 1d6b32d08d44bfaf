//! billing's hot statements at scale (50,000 tenants with a subscription each, 200,000
//! invoices, 1,000,000 ledger events): each reads its index and never scans a table. They are
//! SQL functions, so their inner plans come from auto_explain (nested statements) through psql,
//! as the role that runs them in production.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::migrated_db;
use pgstrata_core::testing::plans::{PlanReport, nested_plans, queries_md, section};

/// Tenant k has id 00000000-0000-7000-8000-<k in hex>, customer cus_k, subscription sub_k with
/// item si_k on one of ten prices, four invoices and two active entitlements; the ledger holds
/// 1,000,000 processed events, 1,000 of them deferred for unlinked customers.
const SCALE_SQL: &str = r#"
CREATE TEMP TABLE k AS
SELECT k, ('00000000-0000-7000-8000-' || lpad(to_hex(k), 12, '0'))::uuid AS tenant_id FROM generate_series(1, 50000) k;
INSERT INTO tenancy.tenants (id, slug, name) SELECT tenant_id, 'scale-' || k, 'Scale ' || k FROM k;
INSERT INTO billing.products (id, name, last_event_id) SELECT 'prod_' || p, 'Plan ' || p, 'evt_p' || p FROM generate_series(0, 9) p;
INSERT INTO billing.prices (id, product_id, unit_amount, last_event_id)
SELECT 'price_' || p, 'prod_' || p, 1000 * p, 'evt_pr' || p FROM generate_series(0, 9) p;
INSERT INTO billing.plan_features (product_id, feature) SELECT 'prod_' || p, 'seats' FROM generate_series(0, 9) p;
INSERT INTO billing.customer_links (customer_id, tenant_id, source, linked_at) SELECT 'cus_' || k, tenant_id, 'metadata', now() FROM k;
INSERT INTO billing.customers (tenant_id, id, email, last_event_id) SELECT tenant_id, 'cus_' || k, 'c' || k || '@example.com', 'evt_c' || k FROM k;
INSERT INTO billing.subscriptions (tenant_id, id, customer_id, status, current_period_start, current_period_end, created, last_event_created, last_event_id)
SELECT tenant_id, 'sub_' || k, 'cus_' || k, (ARRAY['active', 'trialing', 'past_due', 'canceled'])[1 + k % 4],
       now() - interval '10 days', now() + interval '20 days', now() - interval '40 days', now() - interval '1 day', 'evt_s' || k FROM k;
INSERT INTO billing.subscription_items (tenant_id, id, subscription_id, price_id, quantity, last_event_id)
SELECT tenant_id, 'si_' || k, 'sub_' || k, 'price_' || (k % 10), 1 + k % 7, 'evt_s' || k FROM k;
INSERT INTO billing.invoices (tenant_id, id, customer_id, subscription_id, status, amount_due, last_event_id)
SELECT tenant_id, 'in_' || k || '_' || i, 'cus_' || k, 'sub_' || k, 'paid', 1000, 'evt_i' || k || '_' || i FROM k, generate_series(1, 4) i;
INSERT INTO billing.entitlement_summaries (tenant_id, customer_id, last_event_id) SELECT tenant_id, 'cus_' || k, 'evt_e' || k FROM k;
INSERT INTO billing.active_entitlements (tenant_id, id, customer_id, lookup_key)
SELECT tenant_id, 'ent_' || k || '_' || f, 'cus_' || k, f FROM k, unnest(ARRAY['seats', 'sso']) f;
INSERT INTO billing.events (id, type, created, status, object_type, object_id, customer_id, tenant_id, payload, processed_at)
SELECT 'evt_scale_' || n, 'invoice.paid', now() - interval '1 hour', 'processed', 'invoice', 'in_' || (n % 50000 + 1) || '_1',
       'cus_' || (n % 50000 + 1), ('00000000-0000-7000-8000-' || lpad(to_hex(n % 50000 + 1), 12, '0'))::uuid, '{}', now()
  FROM generate_series(1, 999000) n;
INSERT INTO billing.events (id, type, created, status, object_type, object_id, customer_id, payload)
SELECT 'evt_deferred_' || n, 'customer.subscription.updated', now(), 'deferred', 'subscription', 'sub_u' || n, 'cus_unlinked_' || n, '{}'
  FROM generate_series(1, 1000) n;
DROP TABLE k;
"#;

/// A Stripe event for tenant 4242's subscription, newer than the mirrored state.
const EVENT: &str = r#"{"id": "evt_hot_1", "object": "event", "type": "customer.subscription.updated", "created": 1900000000, "api_version": "2025-03-31.basil", "data": {"object": {"id": "sub_4242", "object": "subscription", "customer": "cus_4242", "status": "active", "items": {"object": "list", "data": [{"id": "si_4242", "quantity": 3, "current_period_start": 1899990000, "current_period_end": 1902582000, "price": {"id": "price_2", "product": "prod_2"}}]}}}}"#;

const TENANT: &str = "00000000-0000-7000-8000-000000001092"; // k = 4242

/// The tenant context of the application role's reads.
fn in_tenant() -> String {
    format!("SELECT set_config('app.tenant_id', '{TENANT}', true)")
}

/// (name, role, setup, SQL, the indexes its inner plans must use)
fn hot() -> Vec<(&'static str, &'static str, String, String, Vec<&'static str>)> {
    vec![
        (
            "process-event",
            "pgstrata_billing_sync",
            String::new(),
            format!("SELECT * FROM billing.process_event('{EVENT}')"),
            vec!["events_pkey", "customer_links_pkey", "subscriptions_pkey", "subscription_items_pkey"],
        ),
        (
            "duplicate-event",
            "pgstrata_billing_sync",
            String::new(),
            "SELECT * FROM billing.process_event('{\"id\": \"evt_scale_77\", \"type\": \"invoice.paid\", \"created\": 1, \"data\": {\"object\": {\"id\": \"in_78_1\", \"customer\": \"cus_78\"}}}')".into(),
            vec!["events_pkey"],
        ),
        (
            "link-customer",
            "pgstrata_billing_sync",
            String::new(),
            format!("SELECT billing.link_customer('cus_unlinked_17', '{TENANT}')"),
            vec!["tenants_pkey", "customer_links_pkey", "events_deferred_idx"],
        ),
        (
            "has-feature",
            "pgstrata_test_app",
            in_tenant(),
            format!("SELECT billing.tenant_has_feature('{TENANT}', 'seats')"),
            vec!["subscriptions_customer_idx", "active_entitlements_lookup_key"],
        ),
        (
            "current-plan",
            "pgstrata_test_app",
            in_tenant(),
            format!("SELECT * FROM billing.tenant_current_plan('{TENANT}')"),
            vec!["subscriptions_customer_idx", "subscription_items_pkey"],
        ),
    ]
}

const BIG_TABLES: [&str; 7] = [
    "Seq Scan on events",
    "Seq Scan on customer_links",
    "Seq Scan on customers",
    "Seq Scan on subscriptions",
    "Seq Scan on subscription_items",
    "Seq Scan on invoices",
    "Seq Scan on active_entitlements",
];

#[tokio::test]
async fn hot_statements_use_their_indexes_at_scale() {
    let db = migrated_db().await;
    sqlx::raw_sql(SCALE_SQL).execute(&db.admin).await.unwrap();
    sqlx::raw_sql("VACUUM ANALYZE").execute(&db.admin).await.unwrap();
    let doc = queries_md();
    let section = section(&doc, "billing");
    let url = db.url().unwrap();

    let mut report = PlanReport::new();
    for (name, role, setup, statement, indexes) in hot() {
        let plans = nested_plans(&url, role, &setup, &statement).unwrap();
        report.show(name, &plans);
        for index in &indexes {
            report.uses_index(name, &plans, index);
            report.expect(section.contains(index), || format!("queries.md does not show {index}"));
        }
        report.avoids(name, &plans, &BIG_TABLES);
        report.expect(section.contains(&format!("### {name}")), || {
            format!("queries.md has no `### {name}`")
        });
    }
    report.assert_ok();
    db.close().await.unwrap();
}
