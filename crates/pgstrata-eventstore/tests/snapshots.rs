//! Snapshots: a load reads the snapshot and only the events after it; a snapshot of a version
//! the stream has not reached is refused, an older one never replaces a newer one; and the
//! table attacked as the unprivileged roles on both kinds of install (other tenants, writes
//! past save_snapshot, no tenant, a suspended tenant, the worker).

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::{fixture, fixture_by, tx};
use pgstrata_core::testing::{Owner, outcome};
use pgstrata_eventstore::{Error, ExpectedVersion, NewEvent, append, snapshot};
use serde_json::json;

/// `n` events `Added {amount: i}` (i from 1) appended to `stream`, 100 at a time.
async fn added(pool: &sqlx::PgPool, tenant: pgstrata_core::TenantId, stream: &str, n: i64) {
    let mut version = 0;
    while version < n {
        let chunk: Vec<NewEvent> = (version + 1..=(version + 100).min(n))
            .map(|i| NewEvent::new("Added", json!({ "amount": i })))
            .collect();
        let mut t = tx(pool, tenant).await;
        let expected = if version == 0 {
            ExpectedVersion::NoStream
        } else {
            ExpectedVersion::Exact(version)
        };
        version = append::append(&mut t, stream, expected, &chunk)
            .await
            .unwrap()
            .last()
            .unwrap()
            .version;
        t.commit().await.unwrap();
    }
}

fn total(snapshot: &Option<pgstrata_eventstore::Snapshot>, events: &[pgstrata_eventstore::Event]) -> i64 {
    snapshot.as_ref().map_or(0, |s| s.state["total"].as_i64().unwrap())
        + events.iter().map(|e| e.data["amount"].as_i64().unwrap()).sum::<i64>()
}

#[tokio::test]
async fn a_load_reads_the_snapshot_and_the_events_after_it() {
    let f = fixture().await;
    added(&f.app, f.a, "cart-1", 2500).await;
    let mut t = tx(&f.app, f.a).await;
    // No snapshot: every event, over several pages.
    let (none, events) = snapshot::load(&mut t, "cart-1", "cart.v1").await.unwrap();
    assert!(none.is_none());
    assert_eq!(events.len(), 2500);
    let full = total(&none, &events);
    assert_eq!(full, 2500 * 2501 / 2);
    // A snapshot at 2000: the load reads 500 events and folds to the same total.
    let at_2000: i64 = (1..=2000).sum();
    assert!(
        snapshot::save(&mut t, "cart-1", "cart.v1", 2000, &json!({ "total": at_2000 }))
            .await
            .unwrap()
    );
    let (snap, events) = snapshot::load(&mut t, "cart-1", "cart.v1").await.unwrap();
    assert_eq!(snap.as_ref().unwrap().version, 2000);
    assert_eq!(events.len(), 500);
    assert_eq!(events[0].version, 2001);
    assert_eq!(total(&snap, &events), full);
    // An older snapshot is kept out; a newer one replaces it; another fold has its own.
    assert!(
        !snapshot::save(&mut t, "cart-1", "cart.v1", 1000, &json!({ "total": 0 }))
            .await
            .unwrap()
    );
    assert!(
        !snapshot::save(&mut t, "cart-1", "cart.v1", 2000, &json!({ "total": 0 }))
            .await
            .unwrap()
    );
    assert_eq!(
        snapshot::get(&mut t, "cart-1", "cart.v1").await.unwrap().unwrap().state,
        json!({ "total": at_2000 })
    );
    assert!(
        snapshot::save(&mut t, "cart-1", "cart.v1", 2500, &json!({ "total": full }))
            .await
            .unwrap()
    );
    let (snap, events) = snapshot::load(&mut t, "cart-1", "cart.v1").await.unwrap();
    assert!(events.is_empty());
    assert_eq!(total(&snap, &events), full);
    assert!(snapshot::get(&mut t, "cart-1", "cart.v2").await.unwrap().is_none());
    // Dropping a fold's snapshots loses nothing: the load reads every event again.
    assert_eq!(snapshot::delete(&mut t, "cart.v1").await.unwrap(), 1);
    let (snap, events) = snapshot::load(&mut t, "cart-1", "cart.v1").await.unwrap();
    assert_eq!((snap.is_none(), events.len()), (true, 2500));
    t.commit().await.unwrap();
    f.close().await;
}

#[tokio::test]
async fn bad_snapshots_are_typed_errors_and_write_nothing() {
    let f = fixture().await;
    added(&f.app, f.a, "cart-1", 10).await;
    let field = |r: pgstrata_eventstore::Result<bool>| match r {
        Err(Error::InvalidField { field, .. }) => field,
        other => panic!("{other:?}"),
    };
    // Beyond the stream's version, or a stream without events: refused by the database.
    for (stream, version) in [("cart-1", 11), ("cart-9", 1)] {
        let mut t = tx(&f.app, f.a).await;
        assert_eq!(
            field(snapshot::save(&mut t, stream, "cart.v1", version, &json!({})).await),
            "version"
        );
    }
    let mut t = tx(&f.app, f.a).await;
    assert_eq!(
        field(snapshot::save(&mut t, "cart-1", "cart.v1", 0, &json!({})).await),
        "version"
    );
    assert_eq!(field(snapshot::save(&mut t, "cart-1", "", 1, &json!({})).await), "name");
    let big = json!({ "blob": "x".repeat(600 * 1024) });
    assert_eq!(
        field(snapshot::save(&mut t, "cart-1", "cart.v1", 1, &big).await),
        "state"
    );
    drop(t);
    // The database's own checks, past the client's.
    let mut t = tx(&f.app, f.a).await;
    assert_eq!(
        outcome(
            &mut t,
            "SELECT eventstore.save_snapshot('cart-1', E'bad\\nname', 1, '{}')"
        )
        .await,
        "23514"
    );
    drop(t);
    let mut t = tx(&f.app, f.a).await;
    assert_eq!(
        outcome(&mut t, "SELECT eventstore.save_snapshot('cart-1', 'cart.v1', 1, NULL)").await,
        "22023"
    );
    drop(t);
    let n: i64 = sqlx::query_scalar("SELECT count(*) FROM eventstore.snapshots")
        .fetch_one(&f.db.admin)
        .await
        .unwrap();
    assert_eq!(n, 0, "nothing was written");
    f.close().await;
}

#[tokio::test]
async fn the_snapshots_attacked_as_the_application_and_the_worker() {
    for owner in Owner::BOTH {
        let f = fixture_by(owner).await;
        added(&f.app, f.a, "cart-1", 5).await;
        added(&f.app, f.b, "cart-1", 5).await;
        for tenant in [f.a, f.b] {
            let mut t = tx(&f.app, tenant).await;
            snapshot::save(&mut t, "cart-1", "cart.v1", 5, &json!({ "total": 15 }))
                .await
                .unwrap();
            t.commit().await.unwrap();
        }
        let (a, b) = (f.a.0, f.b.0);
        let checks = [
            (
                format!("SELECT * FROM eventstore.snapshots WHERE tenant_id = '{a}'"),
                "ok 0",
            ),
            ("SELECT * FROM eventstore.snapshots".to_owned(), "ok 1"),
            // Writing past save_snapshot: a version the stream has not reached, in A or in B.
            (
                format!(
                    "INSERT INTO eventstore.snapshots (tenant_id, stream, name, version, state) VALUES ('{b}', 'cart-1', 'x', 99, '{{}}')"
                ),
                "42501",
            ),
            (
                format!(
                    "INSERT INTO eventstore.snapshots (tenant_id, stream, name, version, state) VALUES ('{a}', 'cart-1', 'x', 1, '{{}}')"
                ),
                "42501",
            ),
            ("UPDATE eventstore.snapshots SET version = 99".to_owned(), "42501"),
            (format!("UPDATE eventstore.snapshots SET tenant_id = '{a}'"), "42501"),
            ("TRUNCATE eventstore.snapshots".to_owned(), "42501"),
            // Deleting: its own (a cache), never A's.
            (
                format!("DELETE FROM eventstore.snapshots WHERE tenant_id = '{a}'"),
                "ok 0",
            ),
        ];
        // Each in a transaction of its own, as the application in B.
        for (sql, expected) in &checks {
            let mut t = tx(&f.app, f.b).await;
            assert_eq!(&outcome(&mut t, sql).await, expected, "{owner:?}: {sql}");
        }
        // No tenant, or an empty one: save_snapshot refuses, and nothing is visible.
        let mut conn = f.app.acquire().await.unwrap();
        assert_eq!(
            outcome(
                &mut conn,
                "SELECT eventstore.save_snapshot('cart-1', 'cart.v1', 5, '{}')"
            )
            .await,
            "42501"
        );
        assert_eq!(outcome(&mut conn, "SELECT * FROM eventstore.snapshots").await, "ok 0");
        assert_eq!(outcome(&mut conn, "BEGIN").await, "ok 0");
        assert_eq!(
            outcome(&mut conn, "SELECT set_config('app.tenant_id', '', true)").await,
            "ok 1"
        );
        assert_eq!(
            outcome(
                &mut conn,
                "SELECT eventstore.save_snapshot('cart-1', 'cart.v1', 5, '{}')"
            )
            .await,
            "42501"
        );
        let _ = outcome(&mut conn, "ROLLBACK").await;
        drop(conn);
        // A suspended tenant reads its snapshot and writes none.
        sqlx::query("UPDATE tenancy.tenants SET status = 'suspended' WHERE id = $1")
            .bind(a)
            .execute(&f.db.admin)
            .await
            .unwrap();
        let mut t = tx(&f.app, f.a).await;
        assert_eq!(outcome(&mut t, "SELECT * FROM eventstore.snapshots").await, "ok 1");
        assert_eq!(
            outcome(&mut t, "SELECT eventstore.save_snapshot('cart-1', 'cart.v1', 5, '{}')").await,
            "42501"
        );
        drop(t);
        // The worker reads every tenant's snapshots and writes none.
        let mut w = f.worker.acquire().await.unwrap();
        assert_eq!(outcome(&mut w, "SELECT * FROM eventstore.snapshots").await, "ok 2");
        assert_eq!(
            outcome(&mut w, "SELECT eventstore.save_snapshot('cart-1', 'cart.v1', 5, '{}')").await,
            "42501"
        );
        assert_eq!(outcome(&mut w, "DELETE FROM eventstore.snapshots").await, "42501");
        drop(w);
        f.close().await;
    }
}
