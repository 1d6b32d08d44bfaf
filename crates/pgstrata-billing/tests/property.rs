//! Property: whatever the order in which Stripe delivers a subscription lifecycle, and however
//! many times it delivers each event, the mirror ends exactly as when the events are applied
//! once in Stripe's order.
//!
//! Each case is a random permutation of the 19 lifecycle events with random duplicates, in its
//! own tenant with its own Stripe ids, applied through the webhook role; its mirror is compared
//! with the in-order reference after the ids are normalised. Cases run on four connections of
//! one database. `PGSTRATA_BILLING_CASES` (default 1,000) and `PGSTRATA_BILLING_SEED` (default:
//! random, printed on failure) control the run.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::*;
use pgstrata_billing::Outcome;
use serde_json::Value;
use sqlx::PgPool;

fn env_u64(name: &str) -> Option<u64> {
    std::env::var(name).ok().and_then(|v| v.parse().ok())
}

async fn processed_events(admin: &PgPool, tag: &str) -> (i64, i64) {
    sqlx::query_as(
        "SELECT count(*) FILTER (WHERE status = 'processed'), count(*) FILTER (WHERE status <> 'processed') \
           FROM billing.events WHERE id LIKE '%\\_' || $1",
    )
    .bind(tag)
    .fetch_one(admin)
    .await
    .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn any_delivery_order_with_duplicates_ends_in_the_in_order_mirror() {
    let cases = env_u64("PGSTRATA_BILLING_CASES").unwrap_or(1000) as usize;
    let seed = env_u64("PGSTRATA_BILLING_SEED").unwrap_or_else(|| {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or(1)
    });
    let db = migrated_db().await;
    let sync = sync_pool(&db, 4).await;

    // The reference: each event once, in Stripe's order.
    let reference_tenant = tenant(&db).await;
    let reference_events = lifecycle("ref", reference_tenant);
    let n = reference_events.len();
    {
        let mut conn = sync.acquire().await.unwrap();
        for (name, event) in &reference_events {
            let p = apply(&mut conn, event).await;
            assert!(
                matches!(p.outcome, Outcome::Applied | Outcome::Stale),
                "{name}: {:?} {:?}",
                p.outcome,
                p.error
            );
        }
    }
    let reference = mirror(&db.admin, "ref", reference_tenant).await;
    // The reference is the lifecycle's end, not an empty or stuck mirror.
    for expected in [
        "\"status\": \"canceled\"",
        "\"status\": \"paid\"",
        "\"email\": \"finance@acme.example\"",
        "\"unit_amount\": 4900",
    ] {
        assert!(reference.contains(expected), "reference lacks {expected}:\n{reference}");
    }
    assert!(reference.contains("active_entitlements: []"), "{reference}");
    // And in-order application through the guard keeps, for every object, the state of the
    // last event Stripe sent about it (the same-second tie included).
    let mut last_event = std::collections::BTreeMap::new();
    for (_, event) in &reference_events {
        let object = &event["data"]["object"];
        let key = match object["id"].as_str() {
            Some(id) => id.to_owned(),
            None => format!("{}#summary", object["customer"].as_str().unwrap()),
        };
        last_event.insert(key, event["id"].as_str().unwrap().to_owned());
    }
    let stored: Vec<(String, String)> = sqlx::query_as(
        "SELECT id, last_event_id FROM billing.products UNION ALL SELECT id, last_event_id FROM billing.prices \
         UNION ALL SELECT id, last_event_id FROM billing.customers UNION ALL SELECT id, last_event_id FROM billing.subscriptions \
         UNION ALL SELECT id, last_event_id FROM billing.invoices \
         UNION ALL SELECT customer_id || '#summary', last_event_id FROM billing.entitlement_summaries",
    )
    .fetch_all(&db.admin)
    .await
    .unwrap();
    assert_eq!(stored.len(), 7, "{stored:?}");
    for (id, last) in stored {
        assert_eq!(
            last, last_event[&id],
            "{id}: the mirror keeps another state than Stripe's last"
        );
    }

    // Cases on four connections at once, each with its own tenant and ids.
    let mut tasks = Vec::new();
    for worker in 0..4usize {
        let sync = sync.clone();
        let admin = db.admin.clone();
        let reference = reference.clone();
        let events: Vec<Value> = lifecycle_files().into_iter().map(|(_, e)| e).collect();
        let tenants: Vec<_> = {
            let mut t = Vec::new();
            for _ in (worker..cases).step_by(4) {
                t.push(tenant_id_for(&admin).await);
            }
            t
        };
        tasks.push(tokio::spawn(async move {
            let mut conn = sync.acquire().await.unwrap();
            for (k, case) in (worker..cases).step_by(4).enumerate() {
                let mut rng = Rng(seed ^ (case as u64).wrapping_mul(0xA24B_AED4_963E_E407));
                let order = delivery_order(&mut rng, events.len());
                let tag = format!("c{case}");
                let tenant = tenants[k];
                let retagged: Vec<Value> = events
                    .iter()
                    .map(|e| retag(e, &tag, tenant))
                    .collect();
                for &i in &order {
                    let p = apply(&mut conn, &retagged[i]).await;
                    assert_ne!(p.outcome, Outcome::Failed, "seed {seed} case {case}: {:?}", p.error);
                }
                let got = mirror(&admin, &tag, tenant).await;
                let names: Vec<usize> = order.iter().map(|i| i + 1).collect();
                if got != reference {
                    let diff = got
                        .lines()
                        .zip(reference.lines())
                        .find(|(a, b)| a != b)
                        .map(|(a, b)| format!("got:      {a}\nexpected: {b}"))
                        .unwrap_or_default();
                    panic!(
                        "seed {seed} case {case}: delivery order {names:?} (fixture numbers) ends in another mirror\n{diff}"
                    );
                }
                let (processed, other) = processed_events(&admin, &tag).await;
                assert_eq!(
                    (processed, other),
                    (n as i64, 0),
                    "seed {seed} case {case}: order {names:?}: every event processed once"
                );
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    sync.close().await;
    db.close().await.unwrap();
}

async fn tenant_id_for(admin: &PgPool) -> pgstrata_core::TenantId {
    let id = uuid::Uuid::now_v7();
    sqlx::query("INSERT INTO tenancy.tenants (id, slug, name) VALUES ($1, 't-' || replace($1::text, '-', ''), 'T')")
        .bind(id)
        .execute(admin)
        .await
        .unwrap();
    pgstrata_core::TenantId(id)
}
