//! The outbox attacked as the unprivileged login roles, on a superuser-owned and a
//! non-superuser-owned install: reading, writing, moving and deleting another tenant's messages,
//! forging a transaction id, a partition or a head, no or an empty tenant, the relay's
//! functions and checkpoints from the request path, holding another tenant's aggregate, a
//! `pg_temp` shadow under `outbox.publish`, and the worker's reach.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::{Fixture, fixture_by, tx};
use pgstrata_core::testing::{Owner, outcome};
use pgstrata_outbox::publish;
use serde_json::json;
use std::time::Duration;

/// A's and B's messages, through the API, and the worker's sink registered.
async fn loaded(owner: Owner) -> Fixture {
    let f = fixture_by(owner).await;
    for tenant in [f.a, f.b] {
        let mut t = tx(&f.app, tenant).await;
        for i in 0..5 {
            publish::publish(&mut t, "order", &format!("o-{i}"), "OrderPlaced", &json!({"i": i}))
                .await
                .unwrap();
        }
        t.commit().await.unwrap();
    }
    let mut w = f.worker.acquire().await.unwrap();
    pgstrata_outbox::relay::register_sink(&mut w, "search").await.unwrap();
    f
}

#[tokio::test]
async fn the_application_role_reaches_only_its_tenants_messages() {
    for owner in Owner::BOTH {
        let f = loaded(owner).await;
        let (a, b) = (f.a.0, f.b.0);
        let checks = [
            (format!("SELECT * FROM outbox.messages WHERE tenant_id = '{a}'"), "ok 0"),
            ("SELECT * FROM outbox.messages".to_owned(), "ok 5"),
            // Writing past publish: a message with a forged txid or partition, in A or in B.
            (
                format!(
                    "INSERT INTO outbox.messages (tenant_id, txid, partition, aggregate_type, aggregate_id, event_type, payload)
                     VALUES ('{a}', '1', 0, 'order', 'o-1', 'Forged', '{{}}')"
                ),
                "42501",
            ),
            (
                format!(
                    "INSERT INTO outbox.messages (tenant_id, partition, aggregate_type, aggregate_id, event_type, payload)
                     VALUES ('{b}', 0, 'order', 'o-1', 'Forged', '{{}}')"
                ),
                "42501",
            ),
            // Moving, rewriting or removing messages, its own included.
            (format!("UPDATE outbox.messages SET tenant_id = '{a}'"), "42501"),
            ("UPDATE outbox.messages SET payload = '{}'".to_owned(), "42501"),
            ("DELETE FROM outbox.messages".to_owned(), "42501"),
            ("TRUNCATE outbox.messages".to_owned(), "42501"),
            // The heads that order each aggregate: neither read nor written.
            ("SELECT * FROM outbox.heads".to_owned(), "42501"),
            (
                format!("INSERT INTO outbox.heads (tenant_id, aggregate_type, aggregate_id, last_txid) VALUES ('{a}', 'order', 'o-1', '9999999999')"),
                "42501",
            ),
            ("UPDATE outbox.heads SET last_txid = '9999999999'".to_owned(), "42501"),
            // The relay's tables and functions.
            ("SELECT * FROM outbox.checkpoints".to_owned(), "42501"),
            ("UPDATE outbox.checkpoints SET after_txid = '9999999999'".to_owned(), "42501"),
            ("INSERT INTO outbox.sinks (name) VALUES ('evil')".to_owned(), "42501"),
            ("SELECT * FROM outbox.claim('search', 32, 100)".to_owned(), "42501"),
            (
                "SELECT outbox.ack('search', ARRAY[0]::smallint[], ARRAY[999999999]::bigint[], ARRAY[1]::bigint[], ARRAY[1])".to_owned(),
                "42501",
            ),
            ("SELECT outbox.register_sink('evil')".to_owned(), "42501"),
            ("SELECT outbox.cleanup(interval '0', 1000)".to_owned(), "42501"),
            ("SELECT * FROM outbox.held_back()".to_owned(), "42501"),
            ("SELECT * FROM outbox.sink_stats()".to_owned(), "42501"),
        ];
        for (sql, expected) in &checks {
            let mut t = tx(&f.app, f.b).await;
            assert_eq!(outcome(&mut t, sql).await, *expected, "{owner:?}: {sql}");
        }
        // No tenant, or the empty one an earlier SET LOCAL leaves: nothing read, nothing published.
        let mut conn = f.app.acquire().await.unwrap();
        for setup in ["SELECT 1", "SELECT set_config('app.tenant_id', '', false)"] {
            outcome(&mut conn, setup).await;
            assert_eq!(
                outcome(&mut conn, "SELECT * FROM outbox.messages").await,
                "ok 0",
                "{owner:?}"
            );
            assert_eq!(
                outcome(&mut conn, "SELECT outbox.publish('order', 'o-1', 'Forged', '{}')").await,
                "42501",
                "{owner:?}: {setup}"
            );
        }
        drop(conn);
        // Published in B's context, a message is B's whatever it says.
        let mut t = tx(&f.app, f.b).await;
        assert_eq!(
            outcome(
                &mut t,
                &format!("SELECT outbox.publish('order', 'o-1', 'Claims', '{{\"tenant_id\": \"{a}\"}}')")
            )
            .await,
            "ok 1"
        );
        t.commit().await.unwrap();
        let tenants: Vec<uuid::Uuid> =
            sqlx::query_scalar("SELECT tenant_id FROM outbox.messages WHERE event_type = 'Claims'")
                .fetch_all(&f.db.admin)
                .await
                .unwrap();
        assert_eq!(tenants, [b], "{owner:?}");
        let a_messages: i64 = sqlx::query_scalar("SELECT count(*) FROM outbox.messages WHERE tenant_id = $1")
            .bind(a)
            .fetch_one(&f.db.admin)
            .await
            .unwrap();
        assert_eq!(a_messages, 5, "{owner:?}: A's messages changed");
        f.close().await;
    }
}

#[tokio::test]
async fn a_tenant_cannot_hold_another_tenants_aggregate() {
    for owner in Owner::BOTH {
        let f = fixture_by(owner).await;
        // A holds its aggregate o-1 in an open transaction.
        let mut held = tx(&f.app, f.a).await;
        publish::publish(&mut held, "order", "o-1", "A", &json!({}))
            .await
            .unwrap();
        // B's o-1 is another aggregate: B publishes at once.
        let app = f.app.clone();
        let b = f.b;
        let other = tokio::spawn(async move {
            let mut t = tx(&app, b).await;
            publish::publish(&mut t, "order", "o-1", "B", &json!({})).await.unwrap();
            t.commit().await.unwrap();
        });
        tokio::time::timeout(Duration::from_secs(5), other)
            .await
            .expect("B waited for A's aggregate")
            .unwrap();
        held.commit().await.unwrap();
        f.close().await;
    }
}

#[tokio::test]
async fn a_pg_temp_shadow_does_not_reach_publish() {
    for owner in Owner::BOTH {
        let f = fixture_by(owner).await;
        let mut conn = f.app.acquire().await.unwrap();
        for sql in [
            "CREATE TEMP TABLE messages (tenant_id uuid, txid xid8, partition smallint, aggregate_type text,
                                         aggregate_id text, event_type text, payload jsonb, id bigint)",
            "CREATE TEMP TABLE heads (tenant_id uuid, aggregate_type text, aggregate_id text, last_txid xid8, published_at timestamptz)",
            "CREATE FUNCTION pg_temp.pg_current_xact_id() RETURNS xid8 LANGUAGE sql AS $$ SELECT '1'::xid8 $$",
            "CREATE FUNCTION pg_temp.hashtextextended(text, bigint) RETURNS bigint LANGUAGE sql AS $$ SELECT 0::bigint $$",
        ] {
            assert_eq!(outcome(&mut conn, sql).await, "ok 0", "{owner:?}: {sql}");
        }
        let mut t = pgstrata_core::begin_tenant(&mut *conn, &pgstrata_core::TenantContext::tenant(f.a))
            .await
            .unwrap();
        publish::publish(&mut t, "order", "o-shadow", "Placed", &json!({}))
            .await
            .unwrap();
        t.commit().await.unwrap();
        let shadowed: i64 =
            sqlx::query_scalar("SELECT (SELECT count(*) FROM pg_temp.messages) + (SELECT count(*) FROM pg_temp.heads)")
                .fetch_one(&mut *conn)
                .await
                .unwrap();
        assert_eq!(
            shadowed, 0,
            "{owner:?}: publish wrote into the caller's temporary tables"
        );
        let (txid_ok, partition_ok): (bool, bool) = sqlx::query_as(
            "SELECT txid > '1'::xid8, partition = outbox.partition_of(tenant_id, aggregate_type, aggregate_id)
               FROM outbox.messages WHERE aggregate_id = 'o-shadow'",
        )
        .fetch_one(&f.db.admin)
        .await
        .unwrap();
        assert!(txid_ok && partition_ok, "{owner:?}: a pg_temp function reached publish");
        drop(conn);
        f.close().await;
    }
}

#[tokio::test]
async fn the_worker_relays_and_cleans_but_never_writes_messages() {
    for owner in Owner::BOTH {
        let f = loaded(owner).await;
        let mut w = f.worker.acquire().await.unwrap();
        for (sql, expected) in [
            ("SELECT * FROM outbox.messages", "ok 10"),
            (
                "INSERT INTO outbox.messages (tenant_id, partition, aggregate_type, aggregate_id, event_type, payload)
                 VALUES (gen_random_uuid(), 0, 'order', 'o-1', 'Forged', '{}')",
                "42501",
            ),
            ("UPDATE outbox.messages SET payload = '{}'", "42501"),
            ("TRUNCATE outbox.messages", "42501"),
            ("UPDATE outbox.heads SET last_txid = '1'", "42501"),
            // Without a tenant in context the worker publishes nothing either.
            ("SELECT outbox.publish('order', 'o-1', 'Forged', '{}')", "42501"),
        ] {
            assert_eq!(outcome(&mut w, sql).await, expected, "{owner:?}: {sql}");
        }
        drop(w);
        f.close().await;
    }
}
