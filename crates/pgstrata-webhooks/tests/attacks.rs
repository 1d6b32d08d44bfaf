//! The webhooks module attacked as the unprivileged login roles, on a superuser-owned and a
//! non-superuser-owned install: every table read, written and moved across tenants, with no or
//! an empty tenant; the dispatcher's guarded state (claims, attempts, leases) from the request
//! path; the worker's functions and the operator's settings; the limits a tenant could use to
//! exhaust the shared dispatcher; and `pg_temp` shadows under the functions.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::{Fixture, fixture_by, tx};
use pgstrata_core::testing::{Owner, WORKER_LOGIN_ROLE, outcome};
use pgstrata_webhooks::{NewEndpoint, endpoints, send};
use sqlx::ConnectOptions;

/// An endpoint and a delivered-looking message in each tenant.
async fn loaded(owner: Owner) -> Fixture {
    let f = fixture_by(owner).await;
    for tenant in [f.a, f.b] {
        let mut t = tx(&f.app, tenant).await;
        endpoints::create(&mut t, &NewEndpoint::new("https://receiver.example/hook"))
            .await
            .unwrap();
        send(&mut t, "invoice.paid", br#"{"amount": 1}"#).await.unwrap();
        t.commit().await.unwrap();
    }
    f
}

#[tokio::test]
async fn the_application_role_reaches_only_its_tenants_rows_and_never_the_dispatchers_state() {
    for owner in Owner::BOTH {
        let f = loaded(owner).await;
        let (a, b) = (f.a.0, f.b.0);
        let mut t = tx(&f.app, f.b).await;
        let mut checks: Vec<(String, &str)> = Vec::new();
        for table in [
            "endpoints",
            "secrets",
            "messages",
            "deliveries",
            "attempts",
            "notices",
            "tenant_settings",
            "lanes",
        ] {
            checks.push((
                format!("SELECT * FROM webhooks.{table} WHERE tenant_id = '{a}'"),
                "ok 0",
            ));
        }
        checks.extend([
            // Writing into A, or moving B's rows into A.
            (format!("INSERT INTO webhooks.endpoints (tenant_id, url) VALUES ('{a}', 'https://evil.example/')"), "42501"),
            (format!("INSERT INTO webhooks.messages (tenant_id, event_type, payload) VALUES ('{a}', 'x', '{{}}')"), "42501"),
            (format!("UPDATE webhooks.endpoints SET url = 'https://evil.example/' WHERE tenant_id = '{a}'"), "ok 0"),
            (format!("DELETE FROM webhooks.messages WHERE tenant_id = '{a}'"), "ok 0"),
            (format!("UPDATE webhooks.secrets SET tenant_id = '{a}'"), "42501"),
            (format!("UPDATE webhooks.deliveries SET tenant_id = '{a}'"), "42501"),
            // Reading A's secrets or payloads through B's own endpoint: the keys are composite.
            (
                format!("INSERT INTO webhooks.secrets (tenant_id, endpoint_id) SELECT '{b}', id FROM webhooks.endpoints WHERE tenant_id = '{a}'"),
                "ok 0",
            ),
            // The dispatcher's state: claims, leases, attempt counts, attempts, failure runs.
            (format!("UPDATE webhooks.deliveries SET state = 'running', lease_expires_at = now() WHERE tenant_id = '{b}'"), "42501"),
            (format!("UPDATE webhooks.deliveries SET attempts = 0 WHERE tenant_id = '{b}'"), "42501"),
            (format!("UPDATE webhooks.deliveries SET state = 'succeeded' WHERE tenant_id = '{b}'"), "ok 0"),
            (format!("INSERT INTO webhooks.deliveries (tenant_id, message_id, endpoint_id, state) SELECT '{b}', m.id, e.id, 'running' FROM webhooks.messages m, webhooks.endpoints e"), "42501"),
            ("INSERT INTO webhooks.attempts (tenant_id, delivery_id, message_id, endpoint_id, attempt, trigger, url) SELECT tenant_id, id, message_id, endpoint_id, 9, 'manual', 'x' FROM webhooks.deliveries".to_owned(), "42501"),
            ("UPDATE webhooks.attempts SET state = 'succeeded'".to_owned(), "42501"),
            ("DELETE FROM webhooks.attempts".to_owned(), "42501"),
            ("UPDATE webhooks.endpoints SET first_failure_at = NULL, disabled_reason = 'x'".to_owned(), "42501"),
            (format!("INSERT INTO webhooks.notices (tenant_id, kind, endpoint_id, reason) SELECT '{b}', 'endpoint_disabled', id, 'forged' FROM webhooks.endpoints"), "42501"),
            // Expiry is the retention's, set by the database.
            ("UPDATE webhooks.messages SET expires_at = 'infinity'".to_owned(), "42501"),
            (format!("INSERT INTO webhooks.messages (tenant_id, event_type, payload, expires_at) VALUES ('{b}', 'x', '{{}}', 'infinity')"), "42501"),
            // The operator's fields, the worker's functions.
            (format!("INSERT INTO webhooks.tenant_settings (tenant_id, retention_days) VALUES ('{b}', 3660)"), "42501"),
            ("UPDATE webhooks.settings SET max_endpoints = 100000".to_owned(), "42501"),
            ("SELECT * FROM webhooks.claim(10, 'x')".to_owned(), "42501"),
            (format!("SELECT webhooks.complete('{b}', 1, 1, 200, '', 1, NULL)"), "42501"),
            (
                format!("SELECT * FROM webhooks.complete_many('{{{b}}}', '{{1}}', '{{1}}', '{{200}}', '{{\"\"}}', '{{1}}', '{{NULL}}', '{{NULL}}')"),
                "42501",
            ),
            ("SELECT webhooks.prune(10)".to_owned(), "42501"),
            // Locks: the dispatcher's claim locks endpoints; the app role may only lock its own.
            (format!("SELECT * FROM webhooks.endpoints WHERE tenant_id = '{a}' FOR UPDATE"), "ok 0"),
            ("LOCK TABLE webhooks.deliveries IN ACCESS EXCLUSIVE MODE".to_owned(), "42501"),
            // The claim locks lanes (V3): the app role cannot lock, change or remove even its
            // own, so it cannot hold back the dispatcher; adding lanes adds nothing.
            ("SELECT * FROM webhooks.lanes FOR KEY SHARE".to_owned(), "42501"),
            ("SELECT * FROM webhooks.lanes FOR NO KEY UPDATE SKIP LOCKED".to_owned(), "42501"),
            ("UPDATE webhooks.lanes SET lane = 7".to_owned(), "42501"),
            ("DELETE FROM webhooks.lanes".to_owned(), "42501"),
            (format!("INSERT INTO webhooks.lanes (tenant_id, endpoint_id, lane) SELECT '{a}', endpoint_id, 0 FROM webhooks.lanes"), "42501"),
            ("INSERT INTO webhooks.lanes (tenant_id, endpoint_id, lane) SELECT tenant_id, endpoint_id, lane FROM webhooks.lanes".to_owned(), "23505"),
            ("INSERT INTO webhooks.lanes (tenant_id, endpoint_id, lane) SELECT tenant_id, endpoint_id, 8 FROM webhooks.lanes LIMIT 1".to_owned(), "23514"),
            (format!("UPDATE webhooks.deliveries SET lane = 3 WHERE tenant_id = '{b}'"), "42501"),
            ("TRUNCATE webhooks.messages".to_owned(), "42501"),
        ]);
        for (sql, expected) in &checks {
            let mut sp = sqlx::Connection::begin(&mut *t).await.unwrap();
            assert_eq!(&outcome(&mut sp, sql).await, expected, "{owner:?}: {sql}");
            sp.rollback().await.unwrap();
        }
        // Replaying A's message from B's context: not found.
        let a_message: uuid::Uuid = sqlx::query_scalar("SELECT id FROM webhooks.messages WHERE tenant_id = $1")
            .bind(a)
            .fetch_one(&f.db.admin)
            .await
            .unwrap();
        let mut sp = sqlx::Connection::begin(&mut *t).await.unwrap();
        assert_eq!(
            outcome(&mut sp, &format!("SELECT webhooks.replay('{a_message}')")).await,
            "PS404"
        );
        sp.rollback().await.unwrap();
        t.commit().await.unwrap();

        // No tenant, or an empty one: nothing read, nothing written, no function runs.
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
            for table in [
                "endpoints",
                "secrets",
                "messages",
                "deliveries",
                "attempts",
                "notices",
                "lanes",
            ] {
                let sql = format!("SELECT * FROM webhooks.{table}");
                assert_eq!(outcome(&mut tx, &sql).await, "ok 0", "{owner:?} {setting:?}: {sql}");
            }
            for sql in [
                "SELECT webhooks.send('a', '{}')",
                "SELECT webhooks.erase()",
                "SELECT webhooks.replay_failed('-infinity')",
            ] {
                let mut sp = sqlx::Connection::begin(&mut *tx).await.unwrap();
                assert_eq!(outcome(&mut sp, sql).await, "42501", "{owner:?} {setting:?}: {sql}");
                sp.rollback().await.unwrap();
            }
            let sql = format!("INSERT INTO webhooks.endpoints (tenant_id, url) VALUES ('{a}', 'https://x.example/')");
            assert_eq!(outcome(&mut tx, &sql).await, "42501", "{owner:?} {setting:?}");
        }
        let total: i64 = sqlx::query_scalar("SELECT count(*) FROM webhooks.endpoints")
            .fetch_one(&f.db.admin)
            .await
            .unwrap();
        assert_eq!(total, 2, "{owner:?}: nothing was written");
        f.close().await;
    }
}

#[tokio::test]
async fn the_worker_dispatches_but_manages_no_endpoint_and_sends_nothing() {
    for owner in Owner::BOTH {
        let f = loaded(owner).await;
        let a = f.a.0;
        let mut w = f.db.login_options(WORKER_LOGIN_ROLE).connect().await.unwrap();
        let checks = [
            ("SELECT count(*) FROM webhooks.deliveries", "ok 1"),
            (
                "INSERT INTO webhooks.endpoints (tenant_id, url) SELECT tenant_id, 'https://evil.example/' FROM webhooks.endpoints",
                "42501",
            ),
            ("UPDATE webhooks.endpoints SET url = 'https://evil.example/'", "42501"),
            ("UPDATE webhooks.endpoints SET headers = '{}'", "42501"),
            (
                "INSERT INTO webhooks.messages (tenant_id, event_type, payload) SELECT tenant_id, 'x', '{}' FROM webhooks.endpoints",
                "42501",
            ),
            ("SELECT webhooks.send('a', '{}')", "42501"),
            ("UPDATE webhooks.secrets SET key = 'x'", "42501"),
            ("DELETE FROM webhooks.endpoints", "42501"),
            ("UPDATE webhooks.settings SET retention_days = 1", "42501"),
            // It locks lanes to claim; it adds or removes none.
            (
                "INSERT INTO webhooks.lanes (tenant_id, endpoint_id, lane) SELECT tenant_id, endpoint_id, 0 FROM webhooks.lanes",
                "42501",
            ),
            ("DELETE FROM webhooks.lanes", "42501"),
        ];
        for (sql, expected) in checks {
            let mut sp = sqlx::Connection::begin(&mut w).await.unwrap();
            let got = outcome(&mut sp, sql).await;
            // Reads count rows; the first check's "ok 1" is the row count of a SELECT count(*).
            assert_eq!(got, expected, "{owner:?}: {sql}");
            sp.rollback().await.unwrap();
        }
        // And it cannot set a tenant's context to act as the request path: sending needs the
        // app role's grants, whatever the context.
        let mut sp = sqlx::Connection::begin(&mut w).await.unwrap();
        sqlx::query("SELECT set_config('app.tenant_id', $1, true)")
            .bind(a.to_string())
            .execute(&mut *sp)
            .await
            .unwrap();
        assert_eq!(outcome(&mut sp, "SELECT webhooks.send('a', '{}')").await, "42501");
        sp.rollback().await.unwrap();
        f.close().await;
    }
}

#[tokio::test]
async fn pg_temp_shadows_do_not_reach_the_functions() {
    for owner in Owner::BOTH {
        let f = loaded(owner).await;
        let mut t = tx(&f.app, f.a).await;
        // Temporary objects named like what the functions use: relations, and functions of
        // pg_catalog that a missing qualification would resolve to pg_temp first.
        for sql in [
            "CREATE TEMP TABLE messages (tenant_id uuid, id uuid, event_type text, payload bytea, idempotency_key text)",
            "CREATE TEMP TABLE deliveries (tenant_id uuid, message_id uuid, endpoint_id uuid)",
            "CREATE TEMP TABLE endpoints (tenant_id uuid, id uuid, enabled boolean, event_regex text, payload_filter jsonb)",
            "CREATE FUNCTION pg_temp.pg_notify(text, text) RETURNS void LANGUAGE sql AS $$ SELECT 1/0 $$",
            "CREATE FUNCTION pg_temp.now() RETURNS timestamptz LANGUAGE sql AS $$ SELECT 'infinity'::timestamptz $$",
        ] {
            pgstrata_core::sql::trusted(sql.to_owned())
                .execute(&mut *t)
                .await
                .unwrap();
        }
        let id = send(&mut t, "invoice.paid", b"{}").await.unwrap();
        let deliveries = pgstrata_webhooks::history::deliveries(&mut t, id).await.unwrap();
        assert_eq!(deliveries.len(), 1, "{owner:?}: the real tables were used");
        let m = pgstrata_webhooks::history::message(&mut t, id).await.unwrap().unwrap();
        assert!(
            m.expires_at < chrono::Utc::now() + chrono::Duration::days(365),
            "{owner:?}"
        );
        t.commit().await.unwrap();
        f.close().await;
    }
}
