//! Retention: months are created ahead and dropped whole when expired, and only those; a
//! tenant's shorter retention deletes its old events only; erasing an actor takes its events
//! out of the rollups; the doctor warns when months ahead run out.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use chrono::{Duration, Utc};
use common::{events, fixture, rollups_and_recount, tx};
use pgstrata_core::testing::{OPERATOR_LOGIN_ROLE, WORKER_LOGIN_ROLE};
use pgstrata_events::{BatchId, Error, MaintainAction, NewEvent, ingest, query, retention};
use sqlx::ConnectOptions;

#[tokio::test]
async fn maintain_creates_the_months_ahead_and_drops_only_expired_months() {
    let f = fixture().await;
    let mut worker = f.db.login_options(WORKER_LOGIN_ROLE).connect().await.unwrap();
    // Migrating created them; another run has nothing to do.
    assert_eq!(retention::maintain(&mut worker, None, None).await.unwrap(), vec![]);
    let before = retention::partitions(&mut worker).await.unwrap();
    let now = Utc::now();
    assert!(before.iter().filter(|p| p.lower_bound > now).count() >= 3, "{before:?}");
    assert!(before[0].lower_bound <= now - Duration::days(31));

    // Events in this month.
    let mut t = tx(&f.app, f.a).await;
    ingest::ingest(&mut t, BatchId::new(), &events(1, 100, 1))
        .await
        .unwrap();
    t.commit().await.unwrap();

    // Fourteen months on, with 13 months kept: the months whose end is over 13 months back go,
    // the others stay, and months ahead of that day are created. The clock is the SQL
    // function's argument (the Rust call uses the server's).
    let later: Vec<(String, String)> =
        sqlx::query_as("SELECT action, partition FROM events.maintain(3, 13, now() + interval '14 months')")
            .fetch_all(&mut worker)
            .await
            .unwrap();
    let cutoff: chrono::DateTime<Utc> =
        sqlx::query_scalar("SELECT (now() + interval '14 months') - make_interval(months => 13)")
            .fetch_one(&mut worker)
            .await
            .unwrap();
    let mut dropped: Vec<&str> = later
        .iter()
        .filter(|(a, _)| a == "dropped")
        .map(|(_, p)| p.as_str())
        .collect();
    dropped.sort();
    let expected: Vec<&str> = before
        .iter()
        .filter(|p| p.upper_bound <= cutoff)
        .map(|p| p.name.as_str())
        .collect();
    assert!(!expected.is_empty());
    assert_eq!(dropped, expected, "{later:?}");
    let after = retention::partitions(&mut worker).await.unwrap();
    for p in &before {
        let kept = after.iter().any(|q| q.name == p.name);
        assert_eq!(kept, !dropped.contains(&p.name.as_str()), "{}", p.name);
    }
    assert!(later.iter().any(|(a, _)| a == "created"));
    assert_eq!(MaintainAction::Created.to_string(), "created");

    // A retention that would drop months still taking late events is refused.
    let e = retention::maintain(&mut worker, None, Some(2)).await;
    assert!(e.is_ok(), "two months are longer than 31 days of lateness: {e:?}");
    sqlx::query("UPDATE events.settings SET accept_late_days = 60")
        .execute(&f.db.admin)
        .await
        .unwrap();
    let e = retention::maintain(&mut worker, None, Some(2)).await.unwrap_err();
    assert!(
        matches!(
            e,
            Error::InvalidField {
                field: "retention_months",
                ..
            }
        ),
        "{e:?}"
    );
    f.close().await;
}

#[tokio::test]
async fn a_tenants_shorter_retention_deletes_its_old_events_only() {
    let f = fixture().await;
    for tenant in [f.a, f.b] {
        let mut t = tx(&f.app, tenant).await;
        ingest::ingest(&mut t, BatchId::new(), &events(2, 2000, 30))
            .await
            .unwrap();
        t.commit().await.unwrap();
    }
    let counts_before: i64 = sqlx::query_scalar("SELECT sum(events)::bigint FROM events.daily_counts")
        .fetch_one(&f.db.admin)
        .await
        .unwrap();
    // A's plan keeps 10 days: the operator's field, set by the operator across tenants.
    let mut operator = f.db.login_options(OPERATOR_LOGIN_ROLE).connect().await.unwrap();
    sqlx::query("INSERT INTO events.tenant_settings (tenant_id, retention_days) VALUES ($1, 10)")
        .bind(f.a.0)
        .execute(&mut operator)
        .await
        .unwrap();
    let e = sqlx::query("UPDATE events.tenant_settings SET enforce_catalog = true")
        .execute(&mut operator)
        .await
        .unwrap_err();
    assert_eq!(e.as_database_error().and_then(|d| d.code()).as_deref(), Some("42501"));
    let mut worker = f.db.login_options(WORKER_LOGIN_ROLE).connect().await.unwrap();
    let mut purged = 0;
    loop {
        let n = retention::purge(&mut worker, 500).await.unwrap();
        purged += n;
        if n < 500 {
            break;
        }
    }
    let left: Vec<(uuid::Uuid, i64, Option<chrono::DateTime<Utc>>)> =
        sqlx::query_as("SELECT tenant_id, count(*), min(occurred_at) FROM events.events GROUP BY 1 ORDER BY 1")
            .fetch_all(&f.db.admin)
            .await
            .unwrap();
    let a = left.iter().find(|r| r.0 == f.a.0).unwrap();
    let b = left.iter().find(|r| r.0 == f.b.0).unwrap();
    assert_eq!(b.1, 2000, "B keeps everything");
    assert_eq!(a.1 + purged, 2000);
    assert!(purged > 1000, "{purged}");
    assert!(a.2.unwrap() >= Utc::now() - Duration::days(10));
    // The counts outlive the events (they name no one); the actors of purged days are gone.
    let counts_after: i64 = sqlx::query_scalar("SELECT sum(events)::bigint FROM events.daily_counts")
        .fetch_one(&f.db.admin)
        .await
        .unwrap();
    assert_eq!(counts_after, counts_before);
    let old_actors: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM events.daily_actors WHERE tenant_id = $1 AND day < (now() - interval '10 days')::date",
    )
    .bind(f.a.0)
    .fetch_one(&f.db.admin)
    .await
    .unwrap();
    assert_eq!(old_actors, 0);
    // The application role cannot purge.
    let mut t = tx(&f.app, f.a).await;
    let e = retention::purge(&mut t, 10).await.unwrap_err();
    assert!(
        matches!(e, Error::Db(pgstrata_core::DbError::Forbidden { .. })),
        "{e:?}"
    );
    drop(t);
    f.close().await;
}

#[tokio::test]
async fn erasing_an_actor_removes_its_events_and_corrects_the_rollups() {
    let f = fixture().await;
    for tenant in [f.a, f.b] {
        let mut t = tx(&f.app, tenant).await;
        ingest::ingest(&mut t, BatchId::new(), &events(3, 3000, 20))
            .await
            .unwrap();
        t.commit().await.unwrap();
    }
    let mut t = tx(&f.app, f.a).await;
    let mine = query::recent(&mut t, "user-7", &pgstrata_core::Page::first(1000))
        .await
        .unwrap();
    assert!(!mine.is_empty());
    let erased = retention::erase_actor(&mut t, "user-7").await.unwrap();
    assert_eq!(erased, mine.len() as i64);
    assert!(
        query::recent(&mut t, "user-7", &pgstrata_core::Page::first(10))
            .await
            .unwrap()
            .is_empty()
    );
    t.commit().await.unwrap();
    // B's user-7 is another tenant's: untouched.
    let mut t = tx(&f.app, f.b).await;
    assert_eq!(
        query::recent(&mut t, "user-7", &pgstrata_core::Page::first(1000))
            .await
            .unwrap()
            .len(),
        mine.len()
    );
    t.commit().await.unwrap();
    let (stored, recount) = rollups_and_recount(&f.db).await;
    assert_eq!(stored, recount);
    // Without a tenant in context it erases nothing.
    let mut conn = f.db.app_options().connect().await.unwrap();
    let e = sqlx::query("SELECT events.erase_actor('user-8')")
        .execute(&mut conn)
        .await
        .unwrap_err();
    assert_eq!(e.as_database_error().and_then(|d| d.code()).as_deref(), Some("42501"));
    f.close().await;
}

#[tokio::test]
async fn the_doctor_warns_when_months_ahead_run_out_and_maintain_fixes_it() {
    let f = fixture().await;
    let mut admin = f.db.admin_conn().await.unwrap();
    assert_eq!(
        pgstrata_core::doctor::partition_warnings(&mut admin, &["events"])
            .await
            .unwrap(),
        Vec::<String>::new()
    );
    let ahead: Vec<String> = sqlx::query_scalar("SELECT name FROM events.partitions() WHERE lower_bound > now()")
        .fetch_all(&mut admin)
        .await
        .unwrap();
    for p in &ahead {
        pgstrata_core::sql::trusted(format!("DROP TABLE events.{p}"))
            .execute(&mut admin)
            .await
            .unwrap();
    }
    let warnings = pgstrata_core::doctor::partition_warnings(&mut admin, &["events"])
        .await
        .unwrap();
    assert_eq!(warnings.len(), 1, "{warnings:?}");
    assert!(
        warnings[0].starts_with("events.events has 0 partition(s)"),
        "{warnings:?}"
    );
    assert!(
        warnings[0].contains("`pgstrata events maintain`"),
        "the hint names the module's own command: {warnings:?}"
    );
    // An event next month now fails with the typed error; maintain brings the months back.
    let mut worker = f.db.login_options(WORKER_LOGIN_ROLE).connect().await.unwrap();
    let created = retention::maintain(&mut worker, None, None).await.unwrap();
    assert_eq!(created.len(), ahead.len());
    assert!(
        pgstrata_core::doctor::partition_warnings(&mut admin, &["events"])
            .await
            .unwrap()
            .is_empty()
    );
    let mut t = tx(&f.app, f.a).await;
    assert!(ingest::track(&mut t, &NewEvent::new("signup", "u")).await.unwrap());
    t.commit().await.unwrap();
    drop((admin, worker));
    f.close().await;
}
