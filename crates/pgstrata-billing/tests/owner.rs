//! The webhook path when the schema owner is not a superuser: forced RLS applies to the owner,
//! so the SECURITY DEFINER entry points only write because they enter the resolved tenant's
//! context first (D-026).

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::*;
use pgstrata_billing::Outcome;
use pgstrata_core::testing::Owner;
use sqlx::{ConnectOptions, Connection};

#[tokio::test]
async fn the_webhook_path_writes_under_rls_when_the_owner_is_not_a_superuser() {
    let db = migrated_db_by(Owner::NonSuperuser).await;
    let mut owner_conn = db.owner_options().connect().await.unwrap();
    let is_super: bool =
        sqlx::query_scalar("SELECT rolsuper OR rolbypassrls FROM pg_roles WHERE rolname = current_user")
            .fetch_one(&mut owner_conn)
            .await
            .unwrap();
    assert!(!is_super);

    let tenant = tenant(&db).await;
    let sync = sync_pool(&db, 1).await;
    let mut conn = sync.acquire().await.unwrap();
    let events = lifecycle("ow", tenant);
    // Subscription first (deferred, then replayed by the customer's link), then the rest.
    apply_expect(&mut conn, &common::event(&events, "05"), Outcome::Deferred).await;
    for (name, e) in &events {
        let p = apply(&mut conn, e).await;
        assert!(
            matches!(p.outcome, Outcome::Applied | Outcome::Stale | Outcome::Duplicate),
            "{name}: {:?} {:?}",
            p.outcome,
            p.error
        );
    }
    let (status, items): (String, i64) = sqlx::query_as(
        "SELECT s.status, (SELECT count(*) FROM billing.subscription_items i WHERE i.tenant_id = s.tenant_id) \
           FROM billing.subscriptions s WHERE s.tenant_id = $1",
    )
    .bind(tenant.0)
    .fetch_one(&db.admin)
    .await
    .unwrap();
    assert_eq!((status.as_str(), items), ("canceled", 1));

    // The owner itself sees no tenant row without a context: the policies bound the definer too.
    let seen: i64 = sqlx::query_scalar("SELECT count(*) FROM billing.subscriptions")
        .fetch_one(&mut owner_conn)
        .await
        .unwrap();
    assert_eq!(seen, 0);
    owner_conn.close().await.unwrap();
    drop(conn);
    sync.close().await;
    db.close().await.unwrap();
}
