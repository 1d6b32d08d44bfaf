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
