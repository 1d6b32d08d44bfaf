//! The ledger for operators: listing by status with the reasons, page by page, retrying
//! failures, pruning what is done with, and who may do which.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::*;
use pgstrata_billing::{Error, EventStatus, Outcome, ledger};
use pgstrata_core::Page;
use pgstrata_core::testing::{APP_LOGIN_ROLE, OPERATOR_LOGIN_ROLE};
use serde_json::json;
use std::time::Duration;

#[tokio::test]
async fn operators_read_the_ledger_and_the_sync_role_prunes_what_is_done_with() {
    let db = migrated_db().await;
    let sync = sync_pool(&db, 1).await;
    let mut conn = sync.acquire().await.unwrap();
    let tenant = tenant(&db).await;
    let ev = lifecycle("lg", tenant);
    // Processed, deferred (its customer is not linked yet), rejected.
    apply_expect(&mut conn, &event(&ev, "01"), Outcome::Applied).await;
    apply_expect(&mut conn, &event(&ev, "04"), Outcome::Deferred).await;
    let mut impossible = event(&ev, "02");
    impossible["id"] = json!("evt_no_customer_lg");
    impossible["type"] = json!("invoice.paid");
    impossible["data"]["object"] =
        json!({"id": "in_orphan_lg", "object": "invoice", "customer": null, "status": "paid"});
    apply_expect(&mut conn, &impossible, Outcome::Rejected).await;

    let mut operator = <sqlx::PgConnection as sqlx::Connection>::connect_with(&db.login_options(OPERATOR_LOGIN_ROLE))
        .await
        .unwrap();
    let rejected = ledger::events(&mut operator, Some(EventStatus::Rejected), &Page::first(10))
        .await
        .unwrap();
    assert_eq!(rejected.len(), 1);
    assert_eq!(rejected[0].id, "evt_no_customer_lg");
    assert!(
        rejected[0].error.as_deref().unwrap().contains("names no customer"),
        "{rejected:?}"
    );
    let all = ledger::events(&mut operator, None, &Page::first(10)).await.unwrap();
    let mut statuses: Vec<&str> = all.iter().map(|e| e.status.as_str()).collect();
    statuses.sort();
    assert_eq!(statuses, ["deferred", "processed", "rejected"]);
    // A status that is none of the ledger's is refused by its type, and by the function.
    let bad = "done".parse::<EventStatus>().unwrap_err();
    assert_eq!(bad.what, "ledger event status");
    let bad: Error = sqlx::query("SELECT * FROM billing.ledger('done')")
        .execute(&mut operator)
        .await
        .unwrap_err()
        .into();
    assert!(
        matches!(&bad, Error::Db(pgstrata_core::DbError::InvalidInput { .. })),
        "{bad:?}"
    );

    // Page by page, newest first: each event once, then no next page.
    let mut page = Page::first(1);
    let mut seen = Vec::new();
    loop {
        let rows = ledger::events(&mut operator, None, &page).await.unwrap();
        assert!(rows.len() <= 1, "{rows:?}");
        seen.extend(rows.iter().map(|e| (e.received_at, e.id.clone())));
        match page.next(&rows, ledger::LedgerEvent::key) {
            Some(next) => page = next,
            None => break,
        }
    }
    let newest_first: Vec<_> = all.iter().map(ledger::LedgerEvent::key).collect();
    assert_eq!(seen, newest_first);
    assert!(seen.windows(2).all(|w| w[0] > w[1]), "{seen:?}");
    let r = ledger::events(&mut operator, None, &Page::first(1001)).await;
    assert!(matches!(&r, Err(Error::InvalidPage(p)) if p.limit == 1001), "{r:?}");
    // The function refuses half a position.
    let half: Error = sqlx::query("SELECT * FROM billing.ledger(NULL, 10, now(), NULL)")
        .execute(&mut operator)
        .await
        .unwrap_err()
        .into();
    assert!(
        matches!(&half, Error::Db(pgstrata_core::DbError::InvalidInput { .. })),
        "{half:?}"
    );

    // The operator reads; it does not prune. The application role does neither.
    let r = ledger::prune(&mut operator, Duration::from_secs(30 * 86_400)).await;
    assert!(
        matches!(&r, Err(Error::Db(pgstrata_core::DbError::Forbidden { .. }))),
        "{r:?}"
    );
    let mut app = <sqlx::PgConnection as sqlx::Connection>::connect_with(&db.login_options(APP_LOGIN_ROLE))
        .await
        .unwrap();
    let r = ledger::events(&mut app, None, &Page::first(10)).await;
    assert!(
        matches!(&r, Err(Error::Db(pgstrata_core::DbError::Forbidden { .. }))),
        "{r:?}"
    );

    // Pruning keeps at least a week (refused before any SQL runs, and by the function), and
    // never what still has work to do.
    let r = ledger::prune(&mut conn, Duration::from_secs(86_400)).await;
    assert!(
        matches!(
            &r,
            Err(Error::InvalidField {
                field: "older_than",
                ..
            })
        ),
        "{r:?}"
    );
    let r: Error = sqlx::query("SELECT billing.prune_events(interval '1 day')")
        .execute(&mut *conn)
        .await
        .unwrap_err()
        .into();
    assert!(
        matches!(&r, Error::Db(pgstrata_core::DbError::InvalidInput { .. })),
        "{r:?}"
    );
    let r = ledger::retry_failed(&mut conn, 0).await;
    assert!(matches!(&r, Err(Error::InvalidField { field: "limit", .. })), "{r:?}");
    sqlx::query("UPDATE billing.events SET received_at = now() - interval '40 days'")
        .execute(&db.admin)
        .await
        .unwrap();
    assert_eq!(
        ledger::prune(&mut conn, Duration::from_secs(30 * 86_400))
            .await
            .unwrap(),
        2
    );
    let left = ledger::events(&mut conn, None, &Page::first(10)).await.unwrap();
    assert_eq!(left.len(), 1);
    assert_eq!(left[0].status, EventStatus::Deferred);
    drop((conn, operator, app));
    sync.close().await;
    db.close().await.unwrap();
}

/// V6 dropped the ledger's CHECK constraints (D-203): its writers keep their rules. Every
/// outcome, on the first delivery (one insert), on a redelivery (the row updated) and on a
/// replay after the link (updated by `apply_ledger_event`), leaves rows that satisfy them.
#[tokio::test]
async fn every_outcome_is_recorded_by_the_rules_the_dropped_checks_stated() {
    let db = migrated_db().await;
    let sync = sync_pool(&db, 1).await;
    let mut conn = sync.acquire().await.unwrap();
    let tenant = tenant(&db).await;
    let ev = lifecycle("rules", tenant);
    apply_expect(&mut conn, &event(&ev, "01"), Outcome::Applied).await;
    apply_expect(&mut conn, &event(&ev, "01"), Outcome::Duplicate).await;
    // Deferred (the customer is not linked yet), twice: the redelivery updates the row.
    apply_expect(&mut conn, &event(&ev, "04"), Outcome::Deferred).await;
    apply_expect(&mut conn, &event(&ev, "05"), Outcome::Deferred).await;
    apply_expect(&mut conn, &event(&ev, "04"), Outcome::Deferred).await;
    let mut ignored = event(&ev, "01");
    ignored["id"] = json!("evt_charge_rules");
    ignored["type"] = json!("charge.succeeded");
    apply_expect(&mut conn, &ignored, Outcome::Ignored).await;
    apply_expect(&mut conn, &ignored, Outcome::Duplicate).await;
    let mut failing = event(&ev, "02");
    failing["id"] = json!("evt_price_rules");
    failing["data"]["object"] = json!({"id": "price_rules", "object": "price"});
    let failed = apply_expect(&mut conn, &failing, Outcome::Failed).await;
    assert!(
        failed.error.as_deref().unwrap().contains("names no product"),
        "{failed:?}"
    );
    apply_expect(&mut conn, &failing, Outcome::Failed).await;
    let mut impossible = event(&ev, "02");
    impossible["id"] = json!("evt_no_customer_rules");
    impossible["type"] = json!("invoice.paid");
    impossible["data"]["object"] =
        json!({"id": "in_orphan_rules", "object": "invoice", "customer": null, "status": "paid"});
    apply_expect(&mut conn, &impossible, Outcome::Rejected).await;
    apply_expect(&mut conn, &impossible, Outcome::Duplicate).await;
    // The customer links itself (metadata.tenant_id) and replays the two deferred events; a
    // stale state after that is processed too.
    apply_expect(&mut conn, &event(&ev, "03"), Outcome::Applied).await;
    apply_expect(&mut conn, &event(&ev, "10"), Outcome::Applied).await;
    let mut stale = event(&ev, "05");
    stale["id"] = json!("evt_stale_rules");
    apply_expect(&mut conn, &stale, Outcome::Stale).await;

    let rows: Vec<(String, String, i32, bool, bool)> = sqlx::query_as(
        "SELECT id, status, attempts, error IS NOT NULL, processed_at IS NOT NULL FROM billing.events ORDER BY id",
    )
    .fetch_all(&db.admin)
    .await
    .unwrap();
    for (id, status, _, error, processed_at) in &rows {
        let status: EventStatus = status.parse().unwrap();
        assert_eq!(
            *error,
            matches!(status, EventStatus::Failed | EventStatus::Rejected),
            "{id}: error iff failed or rejected"
        );
        assert_eq!(
            *processed_at,
            matches!(
                status,
                EventStatus::Processed | EventStatus::Ignored | EventStatus::Rejected
            ),
            "{id}: processed_at iff processed, ignored or rejected"
        );
    }
    let status_of = |id: &str| rows.iter().find(|r| r.0 == id).map(|r| (r.1.as_str(), r.2)).unwrap();
    assert_eq!(status_of("evt_price_rules"), ("failed", 2));
    assert_eq!(status_of("evt_charge_rules"), ("ignored", 1));
    assert_eq!(status_of("evt_no_customer_rules"), ("rejected", 1));
    assert_eq!(status_of("evt_stale_rules"), ("processed", 1));
    assert_eq!(status_of(event(&ev, "04")["id"].as_str().unwrap()), ("processed", 2));
    assert_eq!(status_of(event(&ev, "05")["id"].as_str().unwrap()), ("processed", 1));
    drop(conn);
    sync.close().await;
    db.close().await.unwrap();
}
