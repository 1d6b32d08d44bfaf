//! One test per pitfall peers hit (see DECISIONS.md D-025..D-034), on the lifecycle fixtures,
//! through the webhook path's own role (a member of pgstrata_billing_sync only).

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::*;
use pgstrata_billing::signature::sign;
use pgstrata_billing::{Error, Outcome, Refetch, Verifier, process_webhook, refetch_on_tie};
use serde_json::{Value, json};
use sqlx::PgPool;

/// cashier#1201: `updated` arrives before `created`. The row is created by whichever comes
/// first, and the older `created` (incomplete) does not overwrite the newer state.
#[tokio::test]
async fn updated_before_created_creates_the_row_and_created_is_stale() {
    let db = migrated_db().await;
    let sync = sync_pool(&db, 1).await;
    let mut conn = sync.acquire().await.unwrap();
    let tenant = tenant(&db).await;
    let ev = lifecycle("u1", tenant);
    apply_expect(&mut conn, &event(&ev, "03"), Outcome::Applied).await;
    // Trial ends: active (event 10), delivered before the subscription was ever created.
    apply_expect(&mut conn, &event(&ev, "10"), Outcome::Applied).await;
    let sub = sub_id(&ev);
    assert_eq!(status_of(&db.admin, &sub).await.0, "active");
    // Price and product arrived only embedded in the item: placeholders, filled later.
    let price: (String, Option<i64>, String) = sqlx::query_as(
        "SELECT product_id, unit_amount, last_event_id FROM billing.prices WHERE id LIKE 'price\\_%\\_u1'",
    )
    .fetch_one(&db.admin)
    .await
    .unwrap();
    assert_eq!((price.1, price.2.as_str()), (None, ""));
    apply_expect(&mut conn, &event(&ev, "04"), Outcome::Stale).await;
    apply_expect(&mut conn, &event(&ev, "05"), Outcome::Stale).await;
    apply_expect(&mut conn, &event(&ev, "02"), Outcome::Applied).await;
    assert_eq!(status_of(&db.admin, &sub).await.0, "active");
    let amount: Option<i64> =
        sqlx::query_scalar("SELECT unit_amount FROM billing.prices WHERE id LIKE 'price\\_%\\_u1'")
            .fetch_one(&db.admin)
            .await
            .unwrap();
    assert_eq!(amount, Some(4900));
    drop(conn);
    sync.close().await;
    db.close().await.unwrap();
}

/// An invoice whose subscription has not arrived creates the subscription as a placeholder
/// that grants nothing, then the subscription's events fill it in.
#[tokio::test]
async fn invoice_before_its_subscription_creates_a_placeholder() {
    let db = migrated_db().await;
    let sync = sync_pool(&db, 1).await;
    let mut conn = sync.acquire().await.unwrap();
    let tenant = tenant(&db).await;
    let ev = lifecycle("ip", tenant);
    apply_expect(&mut conn, &event(&ev, "03"), Outcome::Applied).await;
    apply_expect(&mut conn, &event(&ev, "06"), Outcome::Applied).await;
    let sub = sub_id(&ev);
    assert_eq!(status_of(&db.admin, &sub).await, ("incomplete".into(), String::new()));
    let has: bool = sqlx::query_scalar(
        "SELECT billing.tenant_has_feature($1, 'seats', interval '3 days', to_timestamp(1764550900))",
    )
    .bind(tenant.0)
    .fetch_one(&db.admin)
    .await
    .unwrap();
    assert!(!has, "a placeholder grants nothing");
    apply_expect(&mut conn, &event(&ev, "05"), Outcome::Applied).await;
    assert_eq!(status_of(&db.admin, &sub).await.0, "trialing");
    drop(conn);
    sync.close().await;
    db.close().await.unwrap();
}

/// Events of a customer whose tenant is not known yet are kept and applied when the customer
/// is linked: by the customer's metadata, or explicitly by the sync role.
#[tokio::test]
async fn events_before_the_customer_link_are_deferred_then_applied() {
    let db = migrated_db().await;
    let sync = sync_pool(&db, 1).await;
    let mut conn = sync.acquire().await.unwrap();

    // Linked by metadata: customer.created arrives after the subscription's events.
    let tenant_a = tenant(&db).await;
    let ev = lifecycle("da", tenant_a);
    apply_expect(&mut conn, &event(&ev, "04"), Outcome::Deferred).await;
    apply_expect(&mut conn, &event(&ev, "05"), Outcome::Deferred).await;
    apply_expect(&mut conn, &event(&ev, "03"), Outcome::Applied).await;
    assert_eq!(status_of(&db.admin, &sub_id(&ev)).await.0, "trialing");
    let deferred: i64 = sqlx::query_scalar("SELECT count(*) FROM billing.events WHERE status = 'deferred'")
        .fetch_one(&db.admin)
        .await
        .unwrap();
    assert_eq!(deferred, 0);
    // Redelivery of a replayed event is now a duplicate.
    apply_expect(&mut conn, &event(&ev, "04"), Outcome::Duplicate).await;

    // Linked explicitly: the customer carries no tenant metadata.
    let tenant_b = tenant(&db).await;
    let ev = lifecycle("db", tenant_b);
    let mut customer = event(&ev, "03");
    customer["data"]["object"]["metadata"] = json!({});
    apply_expect(&mut conn, &customer, Outcome::Deferred).await;
    apply_expect(&mut conn, &event(&ev, "05"), Outcome::Deferred).await;
    let cus = customer["data"]["object"]["id"].as_str().unwrap().to_owned();
    // By the server code that created the customer, as the sync role (the app role cannot).
    let replayed = pgstrata_billing::link_customer(&mut conn, &cus, tenant_b)
        .await
        .unwrap();
    assert_eq!(replayed, 2);
    assert_eq!(status_of(&db.admin, &sub_id(&ev)).await.0, "trialing");
    let email: Option<String> = sqlx::query_scalar("SELECT email FROM billing.customers WHERE id = $1")
        .bind(&cus)
        .fetch_one(&db.admin)
        .await
        .unwrap();
    assert_eq!(email.as_deref(), Some("billing@acme.example"));

    // A linked customer never moves to another tenant.
    let err = pgstrata_billing::link_customer(&mut conn, &cus, tenant_a)
        .await
        .unwrap_err();
    assert!(
        matches!(&err, Error::LinkedElsewhere { customer } if *customer == cus),
        "{err}"
    );
    drop(conn);
    sync.close().await;
    db.close().await.unwrap();
}

/// sync-engine#268: two states of one object in the same second. The tie rule: the state
/// further along the lifecycle wins (trialing over incomplete), whatever the order; the event
/// reports the tie.
#[tokio::test]
async fn same_second_tie_is_won_by_the_later_lifecycle_state_in_either_order() {
    let db = migrated_db().await;
    let sync = sync_pool(&db, 1).await;
    let mut conn = sync.acquire().await.unwrap();
    for (tag, order) in [("t1", ["04", "05"]), ("t2", ["05", "04"])] {
        let tenant = tenant(&db).await;
        let ev = lifecycle(tag, tenant);
        apply_expect(&mut conn, &event(&ev, "03"), Outcome::Applied).await;
        let first = apply(&mut conn, &event(&ev, order[0])).await;
        let second = apply(&mut conn, &event(&ev, order[1])).await;
        assert!(
            !first.tie && second.tie,
            "the second of the same second reports the tie"
        );
        assert_eq!(
            status_of(&db.admin, &sub_id(&ev)).await.0,
            "trialing",
            "order {order:?}"
        );
    }

    // Same second and same rank: the greater event id wins, in either order.
    for (tag, flip) in [("t3", false), ("t4", true)] {
        let tenant = tenant(&db).await;
        let ev = lifecycle(tag, tenant);
        apply_expect(&mut conn, &event(&ev, "03"), Outcome::Applied).await;
        let mut a = event(&ev, "05");
        let mut b = a.clone();
        a["id"] = json!(format!("evt_AAA_{tag}"));
        a["data"]["object"]["metadata"] = json!({"plan": "a"});
        b["id"] = json!(format!("evt_BBB_{tag}"));
        b["data"]["object"]["metadata"] = json!({"plan": "b"});
        let (x, y) = if flip { (&b, &a) } else { (&a, &b) };
        apply(&mut conn, x).await;
        apply(&mut conn, y).await;
        let plan: String = sqlx::query_scalar("SELECT metadata ->> 'plan' FROM billing.subscriptions WHERE id = $1")
            .bind(sub_id(&ev))
            .fetch_one(&db.admin)
            .await
            .unwrap();
        assert_eq!(plan, "b");
    }
    drop(conn);
    sync.close().await;
    db.close().await.unwrap();
}

/// The optional hook: on a tie, the application fetches the object from Stripe and the
/// fetched state (stamped now) replaces whatever the tie rule chose.
#[tokio::test]
async fn refetch_hook_replaces_the_tie_rules_choice() {
    struct Stripe(Value);
    impl Refetch for Stripe {
        async fn refetch(&self, kind: &str, id: &str) -> Result<Option<Value>, String> {
            assert_eq!(kind, "subscription");
            assert_eq!(self.0["id"], id);
            Ok(Some(self.0.clone()))
        }
    }
    let db = migrated_db().await;
    let sync = sync_pool(&db, 1).await;
    let mut conn = sync.acquire().await.unwrap();
    let tenant = tenant(&db).await;
    let ev = lifecycle("rf", tenant);
    apply_expect(&mut conn, &event(&ev, "03"), Outcome::Applied).await;
    apply(&mut conn, &event(&ev, "05")).await;
    let tied = apply(&mut conn, &event(&ev, "04")).await;
    assert!(tied.tie);
    let mut current = event(&ev, "05")["data"]["object"].clone();
    current["metadata"] = json!({"plan": "from-api"});
    let outcome = refetch_on_tie(&mut conn, &tied, &Stripe(current)).await.unwrap();
    assert_eq!(outcome, Some(Outcome::Applied));
    let (plan, last): (String, String) =
        sqlx::query_as("SELECT metadata ->> 'plan', last_event_id FROM billing.subscriptions WHERE id = $1")
            .bind(sub_id(&ev))
            .fetch_one(&db.admin)
            .await
            .unwrap();
    assert_eq!((plan.as_str(), last.as_str()), ("from-api", "refetch"));
    // Without a tie the hook is not called.
    let plain = apply(&mut conn, &event(&ev, "09")).await;
    assert_eq!(
        refetch_on_tie(&mut conn, &plain, &Stripe(json!({}))).await.unwrap(),
        None
    );
    drop(conn);
    sync.close().await;
    db.close().await.unwrap();
}

/// soleur#2190 / onetimesecret#3692: a stale `updated(active)` after `deleted` must not bring
/// the canceled subscription back, and a stale `past_due` must not lock out a paying customer.
#[tokio::test]
async fn stale_events_never_resurrect_a_canceled_subscription_or_lock_out_a_payer() {
    let db = migrated_db().await;
    let sync = sync_pool(&db, 1).await;
    let mut conn = sync.acquire().await.unwrap();
    let tenant = tenant(&db).await;
    let ev = lifecycle("rs", tenant);
    apply_expect(&mut conn, &event(&ev, "03"), Outcome::Applied).await;
    apply_expect(&mut conn, &event(&ev, "07"), Outcome::Applied).await; // entitlements: seats, sso
    apply_expect(&mut conn, &event(&ev, "16"), Outcome::Applied).await; // recovered: active
    apply_expect(&mut conn, &event(&ev, "14"), Outcome::Stale).await; // late past_due
    assert_eq!(status_of(&db.admin, &sub_id(&ev)).await.0, "active");
    let rules = pgstrata_billing::AccessRules {
        at: Some(chrono::DateTime::from_timestamp(1765760400 + 4 * 86400, 0).unwrap()),
        ..Default::default()
    };
    let app = db.app_pool(1).await.unwrap();
    let mut tx = app_tx(&app, tenant).await;
    assert!(pgstrata_billing::has_feature(&mut tx, "seats", &rules).await.unwrap());
    tx.commit().await.unwrap();

    apply_expect(&mut conn, &event(&ev, "18"), Outcome::Applied).await; // deleted: canceled
    for late in ["17", "10", "09", "05"] {
        apply_expect(&mut conn, &event(&ev, late), Outcome::Stale).await;
    }
    assert_eq!(status_of(&db.admin, &sub_id(&ev)).await.0, "canceled");

    // Terminal states outrank live ones even at a later second (Stripe never revives a
    // canceled subscription; an event claiming so is refused rather than trusted).
    let mut revived = event(&ev, "16");
    revived["id"] = json!("evt_revive_rs");
    revived["created"] = json!(1768438800 + 60);
    apply_expect(&mut conn, &revived, Outcome::Stale).await;
    assert_eq!(status_of(&db.admin, &sub_id(&ev)).await.0, "canceled");

    // The database refuses the same regression from any other writer.
    let err = sqlx::query(
        "UPDATE billing.subscriptions SET status = 'active', terminal = false, last_event_id = 'evt_x' WHERE id = $1",
    )
    .bind(sub_id(&ev))
    .execute(&db.admin)
    .await
    .unwrap_err();
    assert_eq!(err.as_database_error().unwrap().code().as_deref(), Some("PS409"));
    drop(conn);
    sync.close().await;
    app.close().await;
    db.close().await.unwrap();
}

/// dj-stripe#1239: a duplicate delivery is a reported no-op, not a unique violation.
/// fxa#10934: events that share a request id are distinct events, all applied.
#[tokio::test]
async fn duplicates_are_reported_noops_and_request_ids_are_not_dedup_keys() {
    let db = migrated_db().await;
    let sync = sync_pool(&db, 1).await;
    let mut conn = sync.acquire().await.unwrap();
    let tenant = tenant(&db).await;
    let ev = lifecycle("dp", tenant);
    apply_expect(&mut conn, &event(&ev, "03"), Outcome::Applied).await;
    let created = event(&ev, "04");
    let updated = event(&ev, "05");
    assert_eq!(created["request"]["id"], updated["request"]["id"]);
    apply_expect(&mut conn, &created, Outcome::Applied).await;
    apply_expect(&mut conn, &updated, Outcome::Applied).await;
    for _ in 0..3 {
        apply_expect(&mut conn, &updated, Outcome::Duplicate).await;
    }
    let (events, attempts): (i64, i64) =
        sqlx::query_as("SELECT count(*), sum(attempts) FROM billing.events WHERE status = 'processed'")
            .fetch_one(&db.admin)
            .await
            .unwrap();
    assert_eq!((events, attempts), (3, 3));
    drop(conn);
    sync.close().await;
    db.close().await.unwrap();
}

/// API 2025-03-31 moved the period onto subscription items and the invoice's subscription
/// under `parent`; older versions keep them on the subscription and the invoice.
#[tokio::test]
async fn periods_and_invoice_subscription_are_read_on_both_api_versions() {
    let db = migrated_db().await;
    let sync = sync_pool(&db, 1).await;
    let mut conn = sync.acquire().await.unwrap();
    let tenant = tenant(&db).await;
    let ev = lifecycle("av", tenant);
    apply_expect(&mut conn, &event(&ev, "03"), Outcome::Applied).await;
    apply_expect(&mut conn, &event(&ev, "10"), Outcome::Applied).await;
    let (end, item_end, version): (i64, i64, String) = sqlx::query_as(
        "SELECT extract(epoch FROM s.current_period_end)::bigint, extract(epoch FROM i.current_period_end)::bigint, \
                e.api_version \
           FROM billing.subscriptions s JOIN billing.subscription_items i ON i.subscription_id = s.id \
           JOIN billing.events e ON e.id = s.last_event_id WHERE s.id = $1",
    )
    .bind(sub_id(&ev))
    .fetch_one(&db.admin)
    .await
    .unwrap();
    assert_eq!(
        (end, item_end, version.as_str()),
        (1768438800, 1768438800, "2025-03-31.basil")
    );

    // The same subscription as an older API version sends it.
    let mut legacy = event(&ev, "14");
    legacy["api_version"] = json!("2024-06-20");
    let obj = &mut legacy["data"]["object"];
    obj["current_period_start"] = json!(1765760400);
    obj["current_period_end"] = json!(1768000000);
    for item in obj["items"]["data"].as_array_mut().unwrap() {
        let item = item.as_object_mut().unwrap();
        item.remove("current_period_start");
        item.remove("current_period_end");
    }
    apply_expect(&mut conn, &legacy, Outcome::Applied).await;
    let end: i64 = sqlx::query_scalar(
        "SELECT extract(epoch FROM current_period_end)::bigint FROM billing.subscriptions WHERE id = $1",
    )
    .bind(sub_id(&ev))
    .fetch_one(&db.admin)
    .await
    .unwrap();
    assert_eq!(end, 1768000000);

    let mut old_invoice = event(&ev, "11");
    old_invoice["api_version"] = json!("2024-06-20");
    let sub = sub_id(&ev);
    let obj = old_invoice["data"]["object"].as_object_mut().unwrap();
    obj.remove("parent");
    obj.insert("subscription".into(), json!(sub));
    apply_expect(&mut conn, &old_invoice, Outcome::Applied).await;
    apply_expect(&mut conn, &event(&ev, "12"), Outcome::Applied).await;
    let linked: i64 = sqlx::query_scalar("SELECT count(*) FROM billing.invoices WHERE subscription_id = $1")
        .bind(&sub)
        .fetch_one(&db.admin)
        .await
        .unwrap();
    assert_eq!(linked, 1);
    drop(conn);
    sync.close().await;
    db.close().await.unwrap();
}

/// A type the mirror does not handle is recorded as ignored; a bad signature or a malformed
/// body is a typed error and writes nothing.
#[tokio::test]
async fn ignored_types_are_recorded_and_bad_deliveries_write_nothing() {
    let db = migrated_db().await;
    let sync = sync_pool(&db, 1).await;
    let mut conn = sync.acquire().await.unwrap();
    let verifier = Verifier::new(["whsec_test_secret"]).unwrap();
    let now = chrono::Utc::now().timestamp();
    let count = async |admin: &PgPool| -> i64 {
        sqlx::query_scalar("SELECT count(*) FROM billing.events")
            .fetch_one(admin)
            .await
            .unwrap()
    };

    let body = br#"{"id":"evt_1QxCharge","object":"event","type":"charge.succeeded","created":1768438900,"api_version":"2025-03-31.basil","data":{"object":{"id":"ch_1","object":"charge"}}}"#;
    let header = sign("whsec_test_secret", now, body);
    let p = process_webhook(&mut conn, &verifier, body, &header).await.unwrap();
    assert_eq!((p.outcome, p.object_kind), (Outcome::Ignored, None));
    let status: String = sqlx::query_scalar("SELECT status FROM billing.events WHERE id = 'evt_1QxCharge'")
        .fetch_one(&db.admin)
        .await
        .unwrap();
    assert_eq!(status, "ignored");
    assert_eq!(
        process_webhook(&mut conn, &verifier, body, &header)
            .await
            .unwrap()
            .outcome,
        Outcome::Duplicate
    );

    let tenant = tenant(&db).await;
    let customer = serde_json::to_vec(&event(&lifecycle("bd", tenant), "03")).unwrap();
    let bad = [
        sign("whsec_wrong", now, &customer),
        sign("whsec_test_secret", now - 3600, &customer),
        sign("whsec_test_secret", now, b"{}"),
    ];
    for header in bad {
        let err = process_webhook(&mut conn, &verifier, &customer, &header)
            .await
            .unwrap_err();
        assert!(matches!(err, Error::Signature(_)), "{err}");
    }
    for body in [
        &b"{not json"[..],
        br#"{"id":"evt_x","type":"customer.created","created":1}"#,
    ] {
        let header = sign("whsec_test_secret", now, body);
        let err = process_webhook(&mut conn, &verifier, body, &header).await.unwrap_err();
        assert!(matches!(err, Error::Malformed(_)), "{err}");
    }
    assert_eq!(count(&db.admin).await, 1, "only the ignored event is recorded");
    let customers: i64 = sqlx::query_scalar("SELECT count(*) FROM billing.customer_links")
        .fetch_one(&db.admin)
        .await
        .unwrap();
    assert_eq!(customers, 0);
    drop(conn);
    sync.close().await;
    db.close().await.unwrap();
}

/// An event whose apply fails is recorded with its error and writes nothing else; the next
/// delivery of the same event retries it.
#[tokio::test]
async fn failed_apply_is_recorded_and_a_redelivery_retries_it() {
    let db = migrated_db().await;
    let sync = sync_pool(&db, 1).await;
    let mut conn = sync.acquire().await.unwrap();
    // The metadata names a tenant that does not exist (yet).
    let missing = pgstrata_core::TenantId(uuid::Uuid::now_v7());
    let ev = lifecycle("fl", missing);
    let customer = event(&ev, "03");
    let failed = apply_expect(&mut conn, &customer, Outcome::Failed).await;
    assert!(failed.error.as_deref().unwrap().contains("23503"), "{:?}", failed.error);
    let (status, error, links): (String, Option<String>, i64) = sqlx::query_as(
        "SELECT status, error, (SELECT count(*) FROM billing.customer_links) FROM billing.events WHERE id = $1",
    )
    .bind(&failed.event_id)
    .fetch_one(&db.admin)
    .await
    .unwrap();
    assert_eq!((status.as_str(), error.is_some(), links), ("failed", true, 0));

    sqlx::query("INSERT INTO tenancy.tenants (id, slug, name) VALUES ($1, 'late-tenant', 'Late')")
        .bind(missing.0)
        .execute(&db.admin)
        .await
        .unwrap();
    apply_expect(&mut conn, &customer, Outcome::Applied).await;
    let (status, attempts): (String, i32) = sqlx::query_as("SELECT status, attempts FROM billing.events WHERE id = $1")
        .bind(&failed.event_id)
        .fetch_one(&db.admin)
        .await
        .unwrap();
    assert_eq!((status.as_str(), attempts), ("processed", 2));

    // Or an operator retries every failed event at once.
    let other = pgstrata_core::TenantId(uuid::Uuid::now_v7());
    let customer = event(&lifecycle("f2", other), "03");
    apply_expect(&mut conn, &customer, Outcome::Failed).await;
    sqlx::query("INSERT INTO tenancy.tenants (id, slug, name) VALUES ($1, 'later-tenant', 'Later')")
        .bind(other.0)
        .execute(&db.admin)
        .await
        .unwrap();
    let retried: i32 = sqlx::query_scalar("SELECT billing.retry_failed()")
        .fetch_one(&mut *conn)
        .await
        .unwrap();
    assert_eq!(retried, 1);
    let failed: i64 = sqlx::query_scalar("SELECT count(*) FROM billing.events WHERE status = 'failed'")
        .fetch_one(&db.admin)
        .await
        .unwrap();
    assert_eq!(failed, 0);
    drop(conn);
    sync.close().await;
    db.close().await.unwrap();
}
