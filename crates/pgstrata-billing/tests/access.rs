//! The status-to-access rule, has_feature and current_plan along the lifecycle, and tenant
//! isolation of the mirror as the unprivileged application role.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use chrono::{DateTime, Utc};
use common::*;
use pgstrata_billing::{AccessRules, Outcome, current_plan, has_feature};
use pgstrata_core::{DbError, TenantId};
use sqlx::PgPool;
use std::time::Duration;

const DAY: i64 = 86_400;
/// Fixture instants: subscription created, trial end (first paid period starts), period end.
const S: i64 = 1_764_550_800;
const TRIAL_END: i64 = 1_765_760_400;
const P1_END: i64 = 1_768_438_800;

fn at(t: i64, grace_days: u64) -> AccessRules {
    AccessRules {
        past_due_grace: Duration::from_secs(grace_days * DAY as u64),
        at: DateTime::<Utc>::from_timestamp(t, 0),
    }
}

async fn has(app: &PgPool, tenant: TenantId, feature: &str, rules: AccessRules) -> bool {
    let mut tx = app_tx(app, tenant).await;
    let answer = has_feature(&mut tx, feature, &rules).await.unwrap();
    tx.commit().await.unwrap();
    answer
}

#[tokio::test]
async fn the_status_to_access_rule() {
    let db = migrated_db().await;
    let app = db.app_pool(1).await.unwrap();
    // (status, now relative to period start, expected) with a 3-day grace, a 30-day period.
    let cases = [
        ("trialing", 1, true),
        ("active", 1, true),
        ("past_due", 2, true),
        ("past_due", 4, false),
        ("canceled", 29, true),
        ("canceled", 31, false),
        ("incomplete", 1, false),
        ("incomplete_expired", 1, false),
        ("unpaid", 1, false),
        ("paused", 1, false),
    ];
    for (status, day, expected) in cases {
        let got: bool = sqlx::query_scalar(
            "SELECT billing.grants_access($1, to_timestamp(0), to_timestamp(30 * 86400), interval '3 days', \
                    to_timestamp($2 * 86400))",
        )
        .bind(status)
        .bind(day as f64)
        .fetch_one(&app)
        .await
        .unwrap();
        assert_eq!(got, expected, "{status} on day {day}");
    }
    app.close().await;
    db.close().await.unwrap();
}

#[tokio::test]
async fn has_feature_and_current_plan_follow_the_lifecycle() {
    let db = migrated_db().await;
    let sync = sync_pool(&db, 1).await;
    let app = db.app_pool(2).await.unwrap();
    let mut conn = sync.acquire().await.unwrap();
    let tenant = tenant(&db).await;
    let events = lifecycle("lc", tenant);
    let apply_through = async |conn: &mut sqlx::PgConnection, last: &str| {
        for (name, e) in &events {
            if &name[..2] > last {
                break;
            }
            let p = apply(conn, e).await;
            assert!(
                matches!(p.outcome, Outcome::Applied | Outcome::Duplicate),
                "{name}: {p:?}"
            );
        }
    };

    // Trialing, Stripe's entitlements: seats and sso.
    apply_through(&mut conn, "07").await;
    assert!(has(&app, tenant, "seats", at(S + DAY, 3)).await);
    assert!(has(&app, tenant, "sso", at(S + DAY, 3)).await);
    assert!(!has(&app, tenant, "audit_log", at(S + DAY, 3)).await);
    let mut tx = app_tx(&app, tenant).await;
    let plan = current_plan(&mut tx, &at(S + DAY, 3)).await.unwrap().unwrap();
    tx.commit().await.unwrap();
    assert_eq!((plan.status.as_str(), plan.has_access), ("trialing", true));
    assert_eq!(plan.items.len(), 1);
    assert_eq!(plan.items[0].product_name.as_deref(), Some("Pro"));
    assert_eq!(plan.items[0].quantity, Some(5));
    assert_eq!(plan.current_period_end.map(|t| t.timestamp()), Some(TRIAL_END));

    // Payment failed: past_due keeps access for the grace period after the period began.
    apply_through(&mut conn, "14").await;
    assert!(has(&app, tenant, "seats", at(TRIAL_END + DAY, 3)).await);
    assert!(!has(&app, tenant, "seats", at(TRIAL_END + 4 * DAY, 3)).await);
    assert!(has(&app, tenant, "seats", at(TRIAL_END + 4 * DAY, 7)).await);
    let mut tx = app_tx(&app, tenant).await;
    let plan = current_plan(&mut tx, &at(TRIAL_END + 4 * DAY, 3))
        .await
        .unwrap()
        .unwrap();
    tx.commit().await.unwrap();
    assert_eq!((plan.status.as_str(), plan.has_access), ("past_due", false));

    // Recovered.
    apply_through(&mut conn, "16").await;
    assert!(has(&app, tenant, "seats", at(TRIAL_END + 4 * DAY, 3)).await);

    // Canceled at period end, Stripe's entitlements emptied: access stays until the paid
    // period ends, for the features the plan grants (billing.plan_features).
    apply_through(&mut conn, "19").await;
    let product: String = sqlx::query_scalar("SELECT id FROM billing.products WHERE id LIKE '%\\_lc'")
        .fetch_one(&db.admin)
        .await
        .unwrap();
    sqlx::query("INSERT INTO billing.plan_features (product_id, feature) VALUES ($1, 'seats')")
        .bind(&product)
        .execute(&db.admin)
        .await
        .unwrap();
    assert!(has(&app, tenant, "seats", at(P1_END - DAY, 3)).await);
    assert!(!has(&app, tenant, "sso", at(P1_END - DAY, 3)).await);
    assert!(!has(&app, tenant, "seats", at(P1_END + 1, 3)).await);
    drop(conn);
    sync.close().await;
    app.close().await;
    db.close().await.unwrap();
}

/// An empty feature key is refused before any SQL runs, naming the argument: the transaction
/// is not aborted and answers the next question.
#[tokio::test]
async fn an_empty_feature_is_a_typed_error_and_leaves_the_transaction_usable() {
    let db = migrated_db().await;
    let app = db.app_pool(1).await.unwrap();
    let tenant = tenant(&db).await;
    let mut tx = app_tx(&app, tenant).await;
    let err = has_feature(&mut tx, "", &AccessRules::default()).await.unwrap_err();
    assert!(
        matches!(err, pgstrata_billing::Error::InvalidField { field: "feature", .. }),
        "{err}"
    );
    assert!(!has_feature(&mut tx, "seats", &AccessRules::default()).await.unwrap());
    assert_eq!(current_plan(&mut tx, &AccessRules::default()).await.unwrap(), None);
    tx.commit().await.unwrap();
    app.close().await;
    db.close().await.unwrap();
}

#[tokio::test]
async fn tenants_see_only_their_own_mirror_and_cannot_write_it() {
    let db = migrated_db().await;
    let sync = sync_pool(&db, 1).await;
    let app = db.app_pool(1).await.unwrap();
    let mut conn = sync.acquire().await.unwrap();
    let a = tenant(&db).await;
    let b = tenant(&db).await;
    for (tag, t) in [("ia", a), ("ib", b)] {
        for (name, e) in lifecycle(tag, t) {
            if &name[..2] <= "07" {
                apply(&mut conn, &e).await;
            }
        }
    }
    let day = at(S + DAY, 3);
    // In b's context, a's subscription is invisible: the SQL functions asked about a (the Rust
    // API asks only about the transaction's tenant) answer no and list nothing.
    let mut tx = app_tx(&app, b).await;
    assert!(has_feature(&mut tx, "seats", &day).await.unwrap());
    let about_a: (bool, i64) = sqlx::query_as(
        "SELECT billing.tenant_has_feature($1, 'seats', interval '3 days', $2), \
                (SELECT count(*) FROM billing.tenant_current_plan($1, interval '3 days', $2))",
    )
    .bind(a.0)
    .bind(day.at)
    .fetch_one(&mut *tx)
    .await
    .unwrap();
    assert_eq!(about_a, (false, 0));
    let visible: Vec<String> = sqlx::query_scalar("SELECT id FROM billing.subscriptions")
        .fetch_all(&mut *tx)
        .await
        .unwrap();
    assert_eq!(visible.len(), 1);
    assert!(visible[0].ends_with("_ib"));
    tx.commit().await.unwrap();

    // Without a tenant in context: nothing.
    let none: i64 = sqlx::query_scalar("SELECT count(*) FROM billing.customers")
        .fetch_one(&app)
        .await
        .unwrap();
    assert_eq!(none, 0);

    // The application role writes no mirror row, reads no ledger, runs no webhook function.
    let forbidden = [
        "UPDATE billing.subscriptions SET status = 'active'",
        "SELECT count(*) FROM billing.events",
        "SELECT count(*) FROM billing.customer_links",
        "SELECT billing.process_event('{}')",
        "SELECT billing.retry_failed()",
    ];
    for sql in forbidden {
        let mut tx = app_tx(&app, b).await;
        let err = sqlx::query(sql).execute(&mut *tx).await.unwrap_err();
        assert!(matches!(DbError::from(err), DbError::Forbidden { .. }), "{sql}");
    }
    drop(conn);
    sync.close().await;
    app.close().await;
    db.close().await.unwrap();
}
