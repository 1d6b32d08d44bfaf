//! The eventstore attacked as the unprivileged login roles, on a superuser-owned and a
//! non-superuser-owned install: reading and writing another tenant's streams, writing events
//! or versions past `eventstore.append` (the unlocked version write that wedges a stream), no or
//! an empty tenant, a suspended tenant, appending at any version, the worker's reach, locking a
//! subscription's row, oversized input, and a `pg_temp` shadow under the definer functions.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::{Fixture, fixture_by, tx};
use pgstrata_core::testing::{Owner, WORKER_LOGIN_ROLE, outcome};
use pgstrata_eventstore::{ExpectedVersion, NewEvent, append, read, subscription};
use sqlx::ConnectOptions;

/// A stream in A and one in B, through the API; a subscription.
async fn loaded(owner: Owner) -> Fixture {
    let f = fixture_by(owner).await;
    for tenant in [f.a, f.b] {
        let mut t = tx(&f.app, tenant).await;
        append::append(
            &mut t,
            "order-1",
            ExpectedVersion::NoStream,
            &[
                NewEvent::new("OrderPlaced", serde_json::json!({})),
                NewEvent::new("Delivered", serde_json::json!({})),
            ],
        )
        .await
        .unwrap();
        t.commit().await.unwrap();
    }
    let mut w = f.worker.acquire().await.unwrap();
    subscription::create(&mut w, "board", None).await.unwrap();
    drop(w);
    f
}

#[tokio::test]
async fn the_application_role_reaches_only_its_tenants_streams_and_only_through_append() {
    for owner in Owner::BOTH {
        let f = loaded(owner).await;
        let (a, b) = (f.a.0, f.b.0);
        let mut t = tx(&f.app, f.b).await;
        let checks = [
            // Reading A's rows from B's context.
            (
                format!("SELECT * FROM eventstore.events WHERE tenant_id = '{a}'"),
                "ok 0",
            ),
            (
                format!("SELECT * FROM eventstore.streams WHERE tenant_id = '{a}'"),
                "ok 0",
            ),
            // Writing events past append: into A, and into B itself (no version check, no lock).
            (
                format!(
                    "INSERT INTO eventstore.events (tenant_id, event_id, stream, version, txid, type)
                     VALUES ('{a}', gen_random_uuid(), 'order-1', 3, pg_current_xact_id(), 'Forged')"
                ),
                "42501",
            ),
            (
                format!(
                    "INSERT INTO eventstore.events (tenant_id, event_id, stream, version, txid, type)
                     VALUES ('{b}', gen_random_uuid(), 'order-1', 3, pg_current_xact_id(), 'Forged')"
                ),
                "42501",
            ),
            // The blind version write that wedges a stream, and creating a stream row.
            (
                format!("UPDATE eventstore.streams SET version = 1000 WHERE tenant_id = '{b}'"),
                "42501",
            ),
            (
                format!(
                    "INSERT INTO eventstore.streams (tenant_id, stream, version, last_txid) VALUES ('{b}', 'x', 5, '1')"
                ),
                "42501",
            ),
            // Rewriting or removing history, its own included.
            (
                format!("UPDATE eventstore.events SET type = 'Forged' WHERE tenant_id = '{b}'"),
                "42501",
            ),
            (
                format!("DELETE FROM eventstore.events WHERE tenant_id = '{b}'"),
                "42501",
            ),
            (
                format!("DELETE FROM eventstore.streams WHERE tenant_id = '{b}'"),
                "42501",
            ),
            ("TRUNCATE eventstore.events".to_owned(), "42501"),
            // Appending at any version, and the body behind both appends.
            (
                r#"SELECT * FROM eventstore.append_any('order-1', '[{"type": "X"}]')"#.to_owned(),
                "42501",
            ),
            (
                r#"SELECT * FROM eventstore.append_checked('order-1', NULL, '[{"type": "X"}]')"#.to_owned(),
                "42501",
            ),
            // The worker's reads and checkpoints.
            (
                "SELECT * FROM eventstore.read_after('0', 0, NULL, 10)".to_owned(),
                "42501",
            ),
            ("UPDATE eventstore.subscriptions SET position = 0".to_owned(), "42501"),
            ("DELETE FROM eventstore.subscriptions".to_owned(), "42501"),
            (
                "INSERT INTO eventstore.subscriptions (name) VALUES ('forged')".to_owned(),
                "42501",
            ),
            // Holding a subscription's row to stall its projection.
            ("SELECT * FROM eventstore.subscriptions FOR UPDATE".to_owned(), "42501"),
            ("SELECT * FROM eventstore.subscriptions FOR SHARE".to_owned(), "42501"),
            (
                "LOCK TABLE eventstore.streams IN ACCESS EXCLUSIVE MODE".to_owned(),
                "42501",
            ),
            // Holding another tenant's stream row: invisible, so nothing is locked.
            (
                format!("SELECT * FROM eventstore.streams WHERE tenant_id = '{a}' FOR UPDATE"),
                "42501",
            ),
        ];
        for (sql, expected) in &checks {
            let mut sp = sqlx::Connection::begin(&mut *t).await.unwrap();
            assert_eq!(&outcome(&mut sp, sql).await, expected, "{owner:?}: {sql}");
            sp.rollback().await.unwrap();
        }
        drop(t);

        // A's stream is untouched and still takes its next version.
        let mut t = tx(&f.app, f.a).await;
        assert_eq!(read::stream_version(&mut t, "order-1").await.unwrap(), 2);
        append::append(
            &mut t,
            "order-1",
            ExpectedVersion::Exact(2),
            &[NewEvent::new("Refunded", serde_json::json!({}))],
        )
        .await
        .unwrap();
        t.commit().await.unwrap();

        // No tenant, or an empty one: nothing read, nothing appended.
        for setting in [None, Some("")] {
            let mut conn = f.db.app_options().connect().await.unwrap();
            let mut tx = sqlx::Connection::begin(&mut conn).await.unwrap();
            if let Some(s) = setting {
                sqlx::query("SELECT set_config('app.tenant_id', $1, true)")
                    .bind(s)
                    .execute(&mut *tx)
                    .await
                    .unwrap();
            }
            for sql in ["SELECT * FROM eventstore.events", "SELECT * FROM eventstore.streams"] {
                assert_eq!(outcome(&mut tx, sql).await, "ok 0", "{owner:?} {setting:?}: {sql}");
            }
            let sql = r#"SELECT * FROM eventstore.append('order-9', 0, '[{"type": "X"}]')"#;
            assert_eq!(outcome(&mut tx, sql).await, "42501", "{owner:?} {setting:?}");
        }

        // A suspended tenant reads its streams and appends nothing.
        sqlx::query("UPDATE tenancy.tenants SET status = 'suspended' WHERE id = $1")
            .bind(b)
            .execute(&f.db.admin)
            .await
            .unwrap();
        let mut t = tx(&f.app, f.b).await;
        assert_eq!(read::stream_version(&mut t, "order-1").await.unwrap(), 2);
        let sql = r#"SELECT * FROM eventstore.append('order-1', 2, '[{"type": "X"}]')"#;
        assert_eq!(outcome(&mut t, sql).await, "42501", "{owner:?}: suspended");
        drop(t);
        f.close().await;
    }
}

#[tokio::test]
async fn the_worker_reads_across_tenants_and_writes_no_event() {
    for owner in Owner::BOTH {
        let f = loaded(owner).await;
        let mut worker = f.db.login_options(WORKER_LOGIN_ROLE).connect().await.unwrap();
        // Every tenant's events; through the reader only those below the horizon, which
        // other tests' open transactions on this server may hold back.
        assert_eq!(outcome(&mut worker, "SELECT * FROM eventstore.events").await, "ok 4");
        assert!(
            outcome(&mut worker, "SELECT * FROM eventstore.read_after('0', 0, NULL, 10)")
                .await
                .starts_with("ok")
        );
        for sql in [
            r#"SELECT * FROM eventstore.append('order-1', 2, '[{"type": "X"}]')"#,
            r#"SELECT * FROM eventstore.append_any('order-1', '[{"type": "X"}]')"#,
            "UPDATE eventstore.streams SET version = 1",
            "DELETE FROM eventstore.events",
            "SELECT * FROM eventstore.streams",
        ] {
            assert_eq!(outcome(&mut worker, sql).await, "42501", "{owner:?}: {sql}");
        }
        // Oversized reads are refused, not served.
        assert_eq!(
            outcome(&mut worker, "SELECT * FROM eventstore.read_after('0', 0, NULL, 100000)").await,
            "22023"
        );
        drop(worker);
        f.close().await;
    }
}

#[tokio::test]
async fn oversized_input_and_a_pg_temp_shadow_change_nothing() {
    for owner in Owner::BOTH {
        let f = loaded(owner).await;
        let b = f.b.0;
        let mut conn = f.db.app_options().connect().await.unwrap();
        // Objects in pg_temp named like what the definer functions use; functions and operators
        // are never looked up in pg_temp, tables would be if the search_path were not pinned.
        for sql in [
            "CREATE TEMP TABLE streams (tenant_id uuid, stream text, version bigint, last_txid xid8)",
            "CREATE TEMP TABLE events (x int)",
            "CREATE TEMP TABLE tenants (id uuid, deleted_at timestamptz, status text)",
        ] {
            assert!(outcome(&mut conn, sql).await.starts_with("ok"), "{owner:?}: {sql}");
        }
        let mut t = pgstrata_core::begin_tenant(&mut conn, &pgstrata_core::TenantContext::tenant(f.b))
            .await
            .unwrap();
        // One statement may not hold a stream with unbounded work.
        let many = "SELECT * FROM eventstore.append('order-2', 0,
                      (SELECT jsonb_agg(jsonb_build_object('type', 'X')) FROM generate_series(1, 1001)))";
        let mut sp = sqlx::Connection::begin(&mut *t).await.unwrap();
        assert_eq!(outcome(&mut sp, many).await, "22023", "{owner:?}");
        sp.rollback().await.unwrap();
        let big =
            "SELECT * FROM eventstore.append('order-2', 0, jsonb_build_array(jsonb_build_object('type', 'X', 'data',
                     (SELECT jsonb_object_agg(i::text, md5(i::text)) FROM generate_series(1, 20000) i))))";
        let mut sp = sqlx::Connection::begin(&mut *t).await.unwrap();
        assert_eq!(outcome(&mut sp, big).await, "23514", "{owner:?}");
        sp.rollback().await.unwrap();
        // With the shadows in place the append writes the real tables.
        append::append(
            &mut t,
            "order-1",
            ExpectedVersion::Exact(2),
            &[NewEvent::new("Shadowed", serde_json::json!({}))],
        )
        .await
        .unwrap();
        t.commit().await.unwrap();
        let real: i64 =
            sqlx::query_scalar("SELECT version FROM eventstore.streams WHERE tenant_id = $1 AND stream = 'order-1'")
                .bind(b)
                .fetch_one(&f.db.admin)
                .await
                .unwrap();
        assert_eq!(real, 3, "{owner:?}");
        let shadow: i64 = sqlx::query_scalar("SELECT count(*) FROM pg_temp.streams")
            .fetch_one(&mut conn)
            .await
            .unwrap();
        assert_eq!(shadow, 0, "{owner:?}");
        drop(conn);
        f.close().await;
    }
}
