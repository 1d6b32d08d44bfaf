//! The events module attacked as the unprivileged login roles, on a superuser-owned and a
//! non-superuser-owned install: reading, writing, moving and erasing another tenant's events,
//! forging rollups and batch records, no or an empty tenant, COPY past the API, the worker's
//! reach, maintenance from the request path, oversized input, and a `pg_temp` shadow under the
//! definer functions.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::{Fixture, events, fixture_by, rollups_and_recount, tx};
use pgstrata_core::testing::{Owner, WORKER_LOGIN_ROLE, outcome};
use pgstrata_events::{BatchId, NewEvent, ingest, query, retention};
use sqlx::ConnectOptions;

/// A's events, and B's, through the API.
async fn loaded(owner: Owner) -> Fixture {
    let f = fixture_by(owner).await;
    for (tenant, seed) in [(f.a, 1), (f.b, 2)] {
        let mut t = tx(&f.app, tenant).await;
        ingest::ingest(&mut t, BatchId::new(), &events(seed, 200, 5))
            .await
            .unwrap();
        t.commit().await.unwrap();
    }
    f
}

#[tokio::test]
async fn the_application_role_reaches_only_its_tenants_events() {
    for owner in Owner::BOTH {
        let f = loaded(owner).await;
        let (a, b) = (f.a.0, f.b.0);
        let mut t = tx(&f.app, f.b).await;
        let checks = [
            // Reading A's rows from B's context, by every table.
            (format!("SELECT * FROM events.events WHERE tenant_id = '{a}'"), "ok 0"),
            (
                format!("SELECT * FROM events.daily_counts WHERE tenant_id = '{a}'"),
                "ok 0",
            ),
            (
                format!("SELECT * FROM events.daily_actors WHERE tenant_id = '{a}'"),
                "ok 0",
            ),
            (
                format!("SELECT * FROM events.daily_uniques WHERE tenant_id = '{a}'"),
                "ok 0",
            ),
            (format!("SELECT * FROM events.batches WHERE tenant_id = '{a}'"), "ok 0"),
            // Writing into A: an event, a batch record (to make A's next batch a "retry").
            (
                format!(
                    "INSERT INTO events.events (tenant_id, event_id, occurred_at, name, actor)
                     VALUES ('{a}', gen_random_uuid(), now(), 'forged', 'x')"
                ),
                "42501",
            ),
            (
                format!("SELECT events.begin_batch(gen_random_uuid(), ARRAY['{a}']::uuid[], ARRAY[1])"),
                "42501",
            ),
            // Changing or removing events: never, not even its own.
            (format!("UPDATE events.events SET tenant_id = '{a}'"), "42501"),
            (format!("DELETE FROM events.events WHERE tenant_id = '{b}'"), "42501"),
            ("TRUNCATE events.events".to_owned(), "42501"),
            (
                "TRUNCATE events.events_p".to_owned() + &chrono::Utc::now().format("%Y%m").to_string(),
                "42501",
            ),
            // Forging its own rollups.
            (
                format!("UPDATE events.daily_counts SET events = 1000000 WHERE tenant_id = '{b}'"),
                "42501",
            ),
            (
                format!("INSERT INTO events.daily_uniques (tenant_id, day, actors) VALUES ('{b}', current_date, 1)"),
                "42501",
            ),
            // The operator's field and the global catalog.
            (
                format!("UPDATE events.tenant_settings SET retention_days = 1 WHERE tenant_id = '{b}'"),
                "42501",
            ),
            (
                "INSERT INTO events.global_names (name) VALUES ('forged')".to_owned(),
                "42501",
            ),
            ("UPDATE events.settings SET accept_late_days = 366".to_owned(), "42501"),
            // Maintenance and retention belong to the worker.
            ("SELECT * FROM events.maintain(1, 1)".to_owned(), "42501"),
            ("SELECT events.purge(10)".to_owned(), "42501"),
            ("SELECT events.create_partition('2031-01-01')".to_owned(), "42501"),
        ];
        for (sql, expected) in &checks {
            let mut sp = sqlx::Connection::begin(&mut *t).await.unwrap();
            assert_eq!(&outcome(&mut sp, sql).await, expected, "{owner:?}: {sql}");
            sp.rollback().await.unwrap();
        }
        // Erasing an actor named in both tenants erases B's only.
        let erased = retention::erase_actor(&mut t, "user-3").await.unwrap();
        assert!(erased > 0);
        t.commit().await.unwrap();
        let mut t = tx(&f.app, f.a).await;
        assert!(
            !query::recent(&mut t, "user-3", &pgstrata_core::Page::first(10))
                .await
                .unwrap()
                .is_empty()
        );
        t.commit().await.unwrap();

        // No tenant, or an empty one: nothing read, nothing written.
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
            for sql in [
                "SELECT * FROM events.events",
                "SELECT * FROM events.daily_counts",
                "SELECT * FROM events.funnel(ARRAY['event.1', 'event.2'], now() - interval '9 days', now(), interval '9 days') WHERE actors > 0",
            ] {
                assert_eq!(outcome(&mut tx, sql).await, "ok 0", "{owner:?} {setting:?}: {sql}");
            }
            let sql = format!(
                "INSERT INTO events.events (tenant_id, event_id, occurred_at, name, actor) VALUES ('{a}', gen_random_uuid(), now(), 'x', 'x')"
            );
            assert_eq!(outcome(&mut tx, &sql).await, "42501", "{owner:?} {setting:?}");
        }
        let (stored, recount) = rollups_and_recount(&f.db).await;
        assert_eq!(stored, recount, "{owner:?}");
        f.close().await;
    }
}

#[tokio::test]
async fn copy_past_the_api_is_held_to_the_same_rules() {
    for owner in Owner::BOTH {
        let f = loaded(owner).await;
        let (a, b) = (f.a.0, f.b.0);
        // COPY straight into the table, past the inbox and its policies: PostgreSQL refuses
        // COPY FROM where row-level security applies (0A000), for the app and the worker.
        let mut t = tx(&f.app, f.b).await;
        let Err(e) = t
            .copy_in_raw("COPY events.events (tenant_id, event_id, occurred_at, name, actor) FROM STDIN")
            .await
        else {
            panic!("{owner:?}: COPY into events.events was accepted");
        };
        assert_eq!(
            e.as_database_error().and_then(|d| d.code()).as_deref(),
            Some("0A000"),
            "{owner:?}"
        );
        drop(t);
        // The inbox filled with a row of A, in B's context: the move is refused by the policy.
        let mut t = tx(&f.app, f.b).await;
        sqlx::raw_sql(ingest::INBOX_SQL).execute(&mut *t).await.unwrap();
        let row = format!(
            "{a}\t{}\t{}\tforged\tx\t{{}}\t\\N\t\\N\n",
            uuid::Uuid::now_v7(),
            chrono::Utc::now()
        );
        let mut copy = t.copy_in_raw(ingest::COPY_SQL).await.unwrap();
        copy.send(row.as_bytes()).await.unwrap();
        copy.finish().await.unwrap();
        let (sql, _) = ingest::merge_stmt(true);
        assert_eq!(outcome(&mut t, &sql).await, "42501", "{owner:?}");
        drop(t);
        // Writing received_at (to back-date the server's clock): no privilege.
        let mut t = tx(&f.app, f.b).await;
        let sql = format!(
            "INSERT INTO events.events (tenant_id, event_id, occurred_at, received_at, name, actor)
             VALUES ('{b}', gen_random_uuid(), now(), now() - interval '1 year', 'x', 'x')"
        );
        assert_eq!(outcome(&mut t, &sql).await, "42501", "{owner:?}");
        drop(t);
        // Oversized properties past the Rust cap are refused by the table's CHECK.
        let mut t = tx(&f.app, f.b).await;
        let sql = format!(
            "INSERT INTO events.events (tenant_id, event_id, occurred_at, name, actor, properties)
             SELECT '{b}', gen_random_uuid(), now(), 'big', 'x', jsonb_build_object('x', string_agg(md5(i::text), ''))
               FROM generate_series(1, 5000) i"
        );
        assert_eq!(outcome(&mut t, &sql).await, "23514", "{owner:?}");
        drop(t);

        // The worker inserts (the collector) but reads no tenant's events and erases nothing.
        let mut worker = f.db.login_options(WORKER_LOGIN_ROLE).connect().await.unwrap();
        assert_eq!(outcome(&mut worker, "SELECT * FROM events.events").await, "42501");
        assert_eq!(outcome(&mut worker, "SELECT * FROM events.daily_counts").await, "42501");
        assert_eq!(
            outcome(&mut worker, "SELECT events.erase_actor('user-1')").await,
            "42501"
        );
        assert_eq!(outcome(&mut worker, "DELETE FROM events.events").await, "42501");
        f.close().await;
    }
}

#[tokio::test]
async fn a_pg_temp_shadow_does_not_reach_the_definer_functions() {
    for owner in Owner::BOTH {
        let f = loaded(owner).await;
        // The application role plants temporary objects named like what the trigger and
        // erase_actor use; they still read and write the real tables as the owner.
        let mut conn = f.db.app_options().connect().await.unwrap();
        for sql in [
            "CREATE TEMP TABLE settings (singleton boolean, accept_late_days integer, accept_early_minutes integer, enforce_catalog boolean)",
            "CREATE TEMP TABLE daily_counts (tenant_id uuid, day date, name text, events bigint)",
            "CREATE TEMP TABLE new_rows (x int)",
            "CREATE FUNCTION pg_temp.make_interval(days integer) RETURNS interval LANGUAGE sql AS $$ SELECT interval '100 years' $$",
        ] {
            assert!(outcome(&mut conn, sql).await.starts_with("ok"), "{owner:?}: {sql}");
        }
        let mut t = pgstrata_core::begin_tenant(&mut conn, &pgstrata_core::TenantContext::tenant(f.a))
            .await
            .unwrap();
        let old = NewEvent::new("late", "x").at(chrono::Utc::now() - chrono::Duration::days(40));
        assert!(
            ingest::track(&mut t, &old).await.is_err(),
            "{owner:?}: the window still holds"
        );
        drop(t);
        let mut t = pgstrata_core::begin_tenant(&mut conn, &pgstrata_core::TenantContext::tenant(f.a))
            .await
            .unwrap();
        assert!(ingest::track(&mut t, &NewEvent::new("shadowed", "x")).await.unwrap());
        retention::erase_actor(&mut t, "user-1").await.unwrap();
        t.commit().await.unwrap();
        let (stored, recount) = rollups_and_recount(&f.db).await;
        assert_eq!(stored, recount, "{owner:?}: the real rollups were kept");
        drop(conn);
        f.close().await;
    }
}
