//! Shapes of today's Stripe API (2025-03-31 and later) beside the older ones: accounts billed
//! instead of customers, invoices for other things than subscriptions, lists cut short, and
//! states Stripe does not produce, which are recorded and not retried.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::*;
use pgstrata_billing::{Outcome, Refetch, refetch_on_tie};
use serde_json::{Value, json};

/// An invoice billed to a customer account (`customer: null`, `customer_account: "acct_..."`)
/// is deferred until the account is linked to a tenant, then mirrored under it, like a
/// customer's. Before this it failed on every delivery.
#[tokio::test]
async fn an_invoice_billed_to_a_customer_account_is_mirrored_once_the_account_is_linked() {
    let db = migrated_db().await;
    let sync = sync_pool(&db, 1).await;
    let mut conn = sync.acquire().await.unwrap();
    let tenant = tenant(&db).await;
    let ev = lifecycle("ca", tenant);
    let mut invoice = event(&ev, "06");
    let object = &mut invoice["data"]["object"];
    object["customer"] = Value::Null;
    object["customer_account"] = json!("acct_billed_ca");
    object["parent"] = Value::Null;
    apply_expect(&mut conn, &invoice, Outcome::Deferred).await;

    let applied = pgstrata_billing::link_customer(&mut conn, "acct_billed_ca", tenant)
        .await
        .unwrap();
    assert_eq!(applied, 1, "the deferred invoice is applied by the link");
    let (customer, status): (String, Option<String>) =
        sqlx::query_as("SELECT customer_id, status FROM billing.invoices WHERE tenant_id = $1")
            .bind(tenant.0)
            .fetch_one(&db.admin)
            .await
            .unwrap();
    assert_eq!((customer.as_str(), status.as_deref()), ("acct_billed_ca", Some("paid")));
    drop(conn);
    sync.close().await;
    db.close().await.unwrap();
}

/// `parent.type` decides: a quote's invoice names no subscription, and no placeholder
/// subscription is made up from it; a subscription's invoice still names its subscription.
#[tokio::test]
async fn parent_type_decides_whether_an_invoice_names_a_subscription() {
    let db = migrated_db().await;
    let sync = sync_pool(&db, 1).await;
    let mut conn = sync.acquire().await.unwrap();
    let tenant = tenant(&db).await;
    let ev = lifecycle("pt", tenant);
    apply_expect(&mut conn, &event(&ev, "03"), Outcome::Applied).await;
    let mut quote = event(&ev, "06");
    quote["id"] = json!("evt_quote_invoice_pt");
    let object = &mut quote["data"]["object"];
    object["id"] = json!("in_quote_pt");
    object["parent"] = json!({
        "type": "quote_details",
        "quote_details": {"quote": "qt_1_pt"},
        // Left over in the shape: read only for parent.type subscription_details.
        "subscription_details": {"subscription": "sub_bogus_pt"}
    });
    apply_expect(&mut conn, &quote, Outcome::Applied).await;
    apply_expect(&mut conn, &event(&ev, "06"), Outcome::Applied).await;

    let invoices: Vec<(String, Option<String>)> =
        sqlx::query_as("SELECT id, subscription_id FROM billing.invoices WHERE tenant_id = $1 ORDER BY id DESC")
            .bind(tenant.0)
            .fetch_all(&db.admin)
            .await
            .unwrap();
    assert_eq!(invoices.len(), 2);
    assert_eq!(invoices[0], ("in_quote_pt".to_owned(), None));
    assert!(
        invoices[1].1.as_deref().is_some_and(|s| s.starts_with("sub_")),
        "{invoices:?}"
    );
    let bogus: i64 = sqlx::query_scalar("SELECT count(*) FROM billing.subscriptions WHERE id LIKE 'sub_bogus%'")
        .fetch_one(&db.admin)
        .await
        .unwrap();
    assert_eq!(bogus, 0);
    drop(conn);
    sync.close().await;
    db.close().await.unwrap();
}

/// Answers the refetch with the customer's whole entitlement list.
struct WholeList(Value);

impl Refetch for WholeList {
    async fn refetch(&self, kind: &str, id: &str) -> Result<Option<Value>, String> {
        assert_eq!(kind, "entitlement_summary");
        assert_eq!(Some(id), self.0["customer"].as_str());
        Ok(Some(self.0.clone()))
    }
}

/// A summary whose list Stripe cut short (`has_more: true`) adds what it lists and removes
/// nothing; the event says so, and the refetch hook then completes the set.
#[tokio::test]
async fn a_list_cut_short_never_replaces_the_whole_set() {
    let db = migrated_db().await;
    let sync = sync_pool(&db, 1).await;
    let mut conn = sync.acquire().await.unwrap();
    let tenant = tenant(&db).await;
    let ev = lifecycle("hm", tenant);
    apply_expect(&mut conn, &event(&ev, "03"), Outcome::Applied).await;
    let full = event(&ev, "07");
    let complete = apply_expect(&mut conn, &full, Outcome::Applied).await;
    assert!(!complete.incomplete);
    let keys = |db: &pgstrata_core::testing::TestDb| {
        let admin = db.admin.clone();
        async move {
            sqlx::query_scalar::<_, String>(
                "SELECT lookup_key FROM billing.active_entitlements WHERE tenant_id = $1 ORDER BY 1",
            )
            .bind(tenant.0)
            .fetch_all(&admin)
            .await
            .unwrap()
        }
    };
    assert_eq!(keys(&db).await, ["seats", "sso"]);

    // A later summary: a new entitlement on its first page, the rest on pages not sent.
    let mut page = full.clone();
    page["id"] = json!("evt_summary_page_hm");
    page["created"] = json!(full["created"].as_i64().unwrap() + 60);
    page["data"]["object"]["entitlements"]["data"] = json!([
        {"id": "ent_audit_hm", "object": "entitlements.active_entitlement", "feature": "feat_audit_hm", "lookup_key": "audit_log"}
    ]);
    page["data"]["object"]["entitlements"]["has_more"] = json!(true);
    let cut = apply_expect(&mut conn, &page, Outcome::Applied).await;
    assert!(cut.incomplete);
    assert_eq!(keys(&db).await, ["audit_log", "seats", "sso"], "nothing removed");
    let marked: bool = sqlx::query_scalar("SELECT incomplete FROM billing.entitlement_summaries WHERE tenant_id = $1")
        .bind(tenant.0)
        .fetch_one(&db.admin)
        .await
        .unwrap();
    assert!(marked);

    // The hook fetches every page: SSO is gone in Stripe, and the set follows.
    let mut whole = page["data"]["object"].clone();
    whole["entitlements"]["data"] = json!([
        {"id": "ent_audit_hm", "object": "entitlements.active_entitlement", "feature": "feat_audit_hm", "lookup_key": "audit_log"},
        full["data"]["object"]["entitlements"]["data"][0].clone()
    ]);
    whole["entitlements"]["has_more"] = json!(false);
    let refetched = refetch_on_tie(&mut conn, &cut, &WholeList(whole)).await.unwrap();
    assert_eq!(refetched, Some(Outcome::Applied));
    assert_eq!(keys(&db).await, ["audit_log", "seats"]);
    let marked: bool = sqlx::query_scalar("SELECT incomplete FROM billing.entitlement_summaries WHERE tenant_id = $1")
        .bind(tenant.0)
        .fetch_one(&db.admin)
        .await
        .unwrap();
    assert!(!marked);
    drop(conn);
    sync.close().await;
    db.close().await.unwrap();
}

/// States Stripe does not produce are rejected with the reason and not retried: delivering the
/// event again is a duplicate, and the mirror keeps its state.
#[tokio::test]
async fn impossible_states_are_rejected_once_with_a_reason() {
    let db = migrated_db().await;
    let sync = sync_pool(&db, 1).await;
    let mut conn = sync.acquire().await.unwrap();
    let tenant = tenant(&db).await;
    let ev = lifecycle("ri", tenant);
    for prefix in ["01", "02", "03", "04", "05"] {
        apply(&mut conn, &event(&ev, prefix)).await;
    }
    let mut ended = event(&ev, "10");
    ended["data"]["object"]["ended_at"] = ended["created"].clone();
    let rejected = apply_expect(&mut conn, &ended, Outcome::Rejected).await;
    assert!(!rejected.outcome.should_retry());
    assert!(
        rejected
            .error
            .as_deref()
            .is_some_and(|e| e.contains("is active but has ended_at")),
        "{rejected:?}"
    );
    apply_expect(&mut conn, &ended, Outcome::Duplicate).await;

    let mut backwards = event(&ev, "14");
    let item = &mut backwards["data"]["object"]["items"]["data"][0];
    item["current_period_end"] = json!(item["current_period_start"].as_i64().unwrap() - 1);
    let rejected = apply_expect(&mut conn, &backwards, Outcome::Rejected).await;
    assert!(rejected.error.as_deref().unwrap().contains("ends before it starts"));

    let (status, last) = status_of(&db.admin, &sub_id(&ev)).await;
    assert_eq!(
        (status.as_str(), last.as_str()),
        ("trialing", event(&ev, "05")["id"].as_str().unwrap())
    );
    let ledger: Vec<(String, bool)> =
        sqlx::query_as("SELECT status, processed_at IS NOT NULL FROM billing.events WHERE id IN ($1, $2) ORDER BY id")
            .bind(ended["id"].as_str())
            .bind(backwards["id"].as_str())
            .fetch_all(&db.admin)
            .await
            .unwrap();
    assert_eq!(ledger, vec![("rejected".to_owned(), true); 2]);
    drop(conn);
    sync.close().await;
    db.close().await.unwrap();
}

/// total, finalized_at, paid_at.
type PaidInvoice = (Option<i64>, Option<Timestamp>, Option<Timestamp>);
type Timestamp = chrono::DateTime<chrono::Utc>;

/// The columns a billing page needs are typed, from every event that wins.
#[tokio::test]
async fn a_billing_page_reads_typed_columns() {
    let db = migrated_db().await;
    let sync = sync_pool(&db, 1).await;
    let mut conn = sync.acquire().await.unwrap();
    let tenant = tenant(&db).await;
    let ev = lifecycle("tc", tenant);
    for (_, e) in &ev {
        apply(&mut conn, e).await;
    }
    let paid: Vec<PaidInvoice> = sqlx::query_as(
        "SELECT total, finalized_at, paid_at FROM billing.invoices
              WHERE tenant_id = $1 AND status = 'paid' ORDER BY created",
    )
    .bind(tenant.0)
    .fetch_all(&db.admin)
    .await
    .unwrap();
    let expected: Vec<_> = ["06", "15"]
        .iter()
        .map(|p| {
            let o = &event(&ev, p)["data"]["object"];
            let at = |v: &Value| v.as_i64().map(|s| chrono::DateTime::from_timestamp(s, 0).unwrap());
            (
                o["total"].as_i64(),
                at(&o["status_transitions"]["finalized_at"]),
                at(&o["status_transitions"]["paid_at"]),
            )
        })
        .collect();
    assert_eq!(paid, expected);
    assert!(paid.iter().all(|p| p.2.is_some()));
    let latest: Option<String> =
        sqlx::query_scalar("SELECT latest_invoice_id FROM billing.subscriptions WHERE tenant_id = $1")
            .bind(tenant.0)
            .fetch_one(&db.admin)
            .await
            .unwrap();
    let last_sub_state = &event(&ev, "18")["data"]["object"];
    assert_eq!(latest.as_deref(), last_sub_state["latest_invoice"].as_str());
    drop(conn);
    sync.close().await;
    db.close().await.unwrap();
}

/// The lifecycle as an account on an API version before 2025-03-31 receives it: the billing
/// period on the subscription rather than its items, and `invoice.subscription` rather than
/// `invoice.parent`.
fn before_2025_03_31(event: &Value) -> Value {
    let mut event = event.clone();
    event["api_version"] = json!("2024-06-20");
    let object = &mut event["data"]["object"];
    if object["object"] == "subscription" {
        let items = object["items"]["data"].as_array_mut().unwrap();
        let (start, end) = (
            items[0]["current_period_start"].clone(),
            items[0]["current_period_end"].clone(),
        );
        for item in items.iter_mut() {
            let item = item.as_object_mut().unwrap();
            item.remove("current_period_start");
            item.remove("current_period_end");
        }
        object["current_period_start"] = start;
        object["current_period_end"] = end;
    }
    if object["object"] == "invoice" {
        let sub = object["parent"]["subscription_details"]["subscription"].clone();
        object.as_object_mut().unwrap().remove("parent");
        object["subscription"] = sub;
    }
    event
}

/// Both supported API versions, the oldest (2024-06-20 shapes) and the current one, end in the
/// same mirror for the same lifecycle.
#[tokio::test]
async fn the_oldest_and_the_current_api_version_mirror_the_same() {
    let db = migrated_db().await;
    let sync = sync_pool(&db, 1).await;
    let mut conn = sync.acquire().await.unwrap();
    let (current, oldest) = (tenant(&db).await, tenant(&db).await);
    for (_, e) in lifecycle("vn", current) {
        let p = apply(&mut conn, &e).await;
        assert!(!matches!(p.outcome, Outcome::Failed | Outcome::Rejected), "{p:?}");
    }
    for (_, e) in lifecycle("vo", oldest) {
        let p = apply(&mut conn, &before_2025_03_31(&e)).await;
        assert!(!matches!(p.outcome, Outcome::Failed | Outcome::Rejected), "{p:?}");
    }
    // The raw objects differ in shape, and items carried no period before 2025-03-31: the
    // rest is compared whole, the subscription's period on its own.
    let compared = ["object", "last_event_id", "current_period_start", "current_period_end"];
    let new = mirror_except(&db.admin, "vn", current, &compared).await;
    let old = mirror_except(&db.admin, "vo", oldest, &compared).await;
    assert_eq!(old, new);
    let periods: Vec<(Option<Timestamp>, Option<Timestamp>)> = sqlx::query_as(
        "SELECT current_period_start, current_period_end FROM billing.subscriptions
          WHERE tenant_id IN ($1, $2) ORDER BY tenant_id = $1",
    )
    .bind(current.0)
    .bind(oldest.0)
    .fetch_all(&db.admin)
    .await
    .unwrap();
    assert_eq!(periods.len(), 2);
    assert_eq!(periods[0], periods[1]);
    assert!(periods[0].1.is_some());
    drop(conn);
    sync.close().await;
    db.close().await.unwrap();
}
