//! Ingest: each event is stored once and counted once, whether a batch is retried, overlaps
//! another, arrives late, or is sent on four connections at once; a bad event fails its batch
//! with a typed error naming it, and nothing of the batch is written.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use chrono::{Duration, Utc};
use common::{count_events, event_id, events, fixture, rollups_and_recount, tx};
use pgstrata_core::TenantId;
use pgstrata_core::testing::WORKER_LOGIN_ROLE;
use pgstrata_events::{BatchId, Error, EventId, IngestOutcome, NewEvent, catalog, ingest};
use sqlx::ConnectOptions;

#[tokio::test]
async fn a_retried_or_overlapping_batch_stores_and_counts_each_event_once() {
    let f = fixture().await;
    let batch = events(1, 1000, 20);
    let id = BatchId::new();

    let mut t = tx(&f.app, f.a).await;
    let first = ingest::ingest(&mut t, id, &batch).await.unwrap();
    t.commit().await.unwrap();
    assert_eq!((first.outcome, first.inserted), (IngestOutcome::Copied, 1000));

    // The same batch again: found by its id, nothing written.
    let mut t = tx(&f.app, f.a).await;
    let again = ingest::ingest(&mut t, id, &batch).await.unwrap();
    t.commit().await.unwrap();
    assert_eq!((again.outcome, again.inserted), (IngestOutcome::Duplicate, 0));

    // The same events re-batched under a new id, half of them with 500 new ones: the primary
    // key refuses the COPY, the row-by-row path stores the new ones only.
    let mut mixed: Vec<NewEvent> = batch[..500].to_vec();
    mixed.extend(events(2, 500, 20));
    let mut t = tx(&f.app, f.a).await;
    let merged = ingest::ingest(&mut t, BatchId::new(), &mixed).await.unwrap();
    t.commit().await.unwrap();
    assert_eq!((merged.outcome, merged.inserted), (IngestOutcome::Merged, 500));

    // A duplicate inside one batch is stored once too.
    let mut doubled = events(3, 10, 1);
    doubled.push(doubled[0].clone());
    let mut t = tx(&f.app, f.a).await;
    let r = ingest::ingest(&mut t, BatchId::new(), &doubled).await.unwrap();
    t.commit().await.unwrap();
    assert_eq!((r.outcome, r.inserted), (IngestOutcome::Merged, 10));

    // track: the same event twice is stored once.
    let one = NewEvent::new("signup", "user-x");
    let mut t = tx(&f.app, f.a).await;
    assert!(ingest::track(&mut t, &one).await.unwrap());
    assert!(!ingest::track(&mut t, &one).await.unwrap());
    t.commit().await.unwrap();

    assert_eq!(count_events(&f.db).await, 1000 + 500 + 10 + 1);
    let (stored, recount) = rollups_and_recount(&f.db).await;
    assert_eq!(stored, recount);
    f.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_same_events_on_four_connections_are_stored_once() {
    let f = fixture().await;
    let batch = std::sync::Arc::new(events(4, 2000, 10));
    // Round 1: the same batch id on four connections (a client retrying before the first
    // answer). Round 2: four different batch ids carrying the same new events.
    for round in 0..2 {
        let same_id = BatchId::new();
        let batch_events: std::sync::Arc<Vec<NewEvent>> = if round == 0 {
            batch.clone()
        } else {
            std::sync::Arc::new(events(5, 2000, 10))
        };
        let mut tasks = Vec::new();
        for _ in 0..4 {
            let (app, a, evs) = (f.app.clone(), f.a, batch_events.clone());
            let id = if round == 0 { same_id } else { BatchId::new() };
            tasks.push(tokio::spawn(async move {
                // A deadlock between overlapping batches is retried, as a client would.
                for _ in 0..5 {
                    let mut t = tx(&app, a).await;
                    match ingest::ingest(&mut t, id, &evs).await {
                        Ok(r) => {
                            t.commit().await.unwrap();
                            return r;
                        }
                        Err(Error::Db(e)) if e.is_retryable() => continue,
                        Err(e) => panic!("{e}"),
                    }
                }
                panic!("retried five times");
            }));
        }
        let mut inserted = 0;
        let mut outcomes = Vec::new();
        for task in tasks {
            let r = task.await.unwrap();
            inserted += r.inserted;
            outcomes.push(r.outcome);
        }
        assert_eq!(inserted, 2000, "round {round}: {outcomes:?}");
        if round == 0 {
            outcomes.sort_by_key(|o| format!("{o:?}"));
            assert_eq!(
                outcomes,
                [
                    IngestOutcome::Copied,
                    IngestOutcome::Duplicate,
                    IngestOutcome::Duplicate,
                    IngestOutcome::Duplicate
                ]
            );
        }
    }
    assert_eq!(count_events(&f.db).await, 4000);
    let (stored, recount) = rollups_and_recount(&f.db).await;
    assert_eq!(stored, recount);
    f.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_collector_ingests_many_tenants_once_as_the_worker() {
    let f = fixture().await;
    let mut worker = f.db.login_options(WORKER_LOGIN_ROLE).connect().await.unwrap();
    let rows: Vec<(TenantId, NewEvent)> = events(6, 3000, 5)
        .into_iter()
        .enumerate()
        .map(|(i, e)| (if i % 3 == 0 { f.a } else { f.b }, e))
        .collect();
    let id = BatchId::new();
    let r = ingest::collect(&mut worker, id, &rows).await.unwrap();
    assert_eq!((r.outcome, r.inserted), (IngestOutcome::Copied, 3000));
    let r = ingest::collect(&mut worker, id, &rows).await.unwrap();
    assert_eq!((r.outcome, r.inserted), (IngestOutcome::Duplicate, 0));
    // The same batch id over another set of tenants is another batch's id: refused.
    let other: Vec<(TenantId, NewEvent)> = rows.iter().filter(|(t, _)| *t == f.a).cloned().collect();
    let mut with_new_tenant = other.clone();
    let c = f.db.tenant("tenant-c").await.unwrap();
    with_new_tenant.push((c, NewEvent::new("signup", "someone")));
    let e = ingest::collect(&mut worker, id, &with_new_tenant).await.unwrap_err();
    assert!(matches!(e, Error::InvalidField { field: "batch_id", .. }), "{e:?}");

    // Each tenant sees its own share through its own transaction.
    for (tenant, expected) in [(f.a, 1000i64), (f.b, 2000)] {
        let mut t = tx(&f.app, tenant).await;
        let n: i64 = sqlx::query_scalar("SELECT count(*) FROM events.events")
            .fetch_one(&mut *t)
            .await
            .unwrap();
        assert_eq!(n, expected);
    }
    let (stored, recount) = rollups_and_recount(&f.db).await;
    assert_eq!(stored, recount);
    f.close().await;
}

#[tokio::test]
async fn late_events_land_on_their_day_and_the_rollups_agree_with_a_recount() {
    let f = fixture().await;
    // Today's events first, then the last 30 days' arriving late, shuffled into batches of
    // varying size, some sent twice, for both tenants.
    let today = events(7, 500, 1);
    let late = events(8, 3000, 30);
    for (tenant, evs) in [(f.a, &today), (f.b, &today), (f.a, &late)] {
        for (i, chunk) in evs.chunks(337).enumerate() {
            let id = BatchId::new();
            for _ in 0..(1 + i % 2) {
                let mut t = tx(&f.app, tenant).await;
                ingest::ingest(&mut t, id, chunk).await.unwrap();
                t.commit().await.unwrap();
            }
        }
    }
    // One more late event on a day whose counts exist, tracked alone.
    let mut t = tx(&f.app, f.a).await;
    ingest::track(
        &mut t,
        &NewEvent::new("event.1", "user-late").at(Utc::now() - Duration::days(29)),
    )
    .await
    .unwrap();
    t.commit().await.unwrap();
    let (stored, recount) = rollups_and_recount(&f.db).await;
    assert!(stored.0.len() > 100, "{}", stored.0.len());
    assert_eq!(stored, recount);
    f.close().await;
}

/// Runs a one-event batch and returns its error.
async fn refused(f: &common::Fixture, batch: &[NewEvent]) -> Error {
    let mut t = tx(&f.app, f.a).await;
    let e = ingest::ingest(&mut t, BatchId::new(), batch).await.unwrap_err();
    t.commit().await.unwrap();
    e
}

#[tokio::test]
async fn bad_input_is_a_typed_error_naming_the_event_and_writes_nothing() {
    let f = fixture().await;
    let good = events(9, 5, 1);
    let cases: Vec<(&str, NewEvent)> = vec![
        ("name", NewEvent::new("", "user-1")),
        ("name", NewEvent::new("x".repeat(201), "user-1")),
        ("name", NewEvent::new("bad\nname", "user-1")),
        ("actor", NewEvent::new("signup", "")),
        ("actor", NewEvent::new("signup", "nul\0actor")),
        (
            "properties",
            NewEvent::new("signup", "u").properties(serde_json::json!({"blob": "x".repeat(40_000)})),
        ),
        (
            "properties",
            NewEvent::new("signup", "u").properties(serde_json::json!([1, 2])),
        ),
        (
            "properties",
            NewEvent::new("signup", "u").properties(serde_json::json!({"nul": "a\u{0}b"})),
        ),
        ("session_id", NewEvent::new("signup", "u").session("")),
        ("source", NewEvent::new("signup", "u").source("s".repeat(101))),
        ("event_id", NewEvent::new("signup", "u").id(EventId(uuid::Uuid::nil()))),
        (
            "occurred_at",
            NewEvent::new("signup", "u").at(Utc::now() - Duration::days(40)),
        ),
        (
            "occurred_at",
            NewEvent::new("signup", "u").at(Utc::now() + Duration::hours(3)),
        ),
    ];
    for (field, bad) in cases {
        // The bad event third in a batch of good ones.
        let mut batch = good.clone();
        batch.insert(2, bad.clone());
        match refused(&f, &batch).await {
            Error::InvalidEvent {
                index,
                event_id,
                field: named,
                ..
            } => {
                assert_eq!((named, index, event_id), (field, Some(2), Some(bad.id)), "{field}");
            }
            other => panic!("{field}: {other:?}"),
        }
        // track refuses it too, with the same field.
        let mut t = tx(&f.app, f.a).await;
        match ingest::track(&mut t, &bad).await.unwrap_err() {
            Error::InvalidEvent { field: named, .. } => assert_eq!(named, field),
            other => panic!("track {field}: {other:?}"),
        }
        drop(t);
    }
    // A malformed id is refused when it is parsed.
    let e: Error = "not-a-uuid".parse::<EventId>().unwrap_err().into();
    assert!(matches!(e, Error::InvalidId(ref i) if i.what == "event id"), "{e:?}");
    // Batches out of bounds.
    let e = refused(&f, &[]).await;
    assert!(matches!(e, Error::InvalidField { field: "events", .. }), "{e:?}");

    // A name outside the tenant's enforced catalog: refused by the database, the event named.
    let mut t = tx(&f.app, f.a).await;
    catalog::add_name(&mut t, "signup", Some("a new account"))
        .await
        .unwrap();
    catalog::enforce(&mut t, true).await.unwrap();
    t.commit().await.unwrap();
    let mut batch = vec![NewEvent::new("signup", "u1"), NewEvent::new("sigunp", "u2")];
    batch.push(NewEvent::new("signup", "u3"));
    match refused(&f, &batch).await {
        Error::InvalidEvent {
            index, event_id, field, ..
        } => assert_eq!((field, index, event_id), ("name", Some(1), Some(batch[1].id))),
        other => panic!("catalog: {other:?}"),
    }
    // Nothing of any refused batch was written, not even its batch record: the same batch id
    // with the bad event fixed goes in whole.
    assert_eq!(count_events(&f.db).await, 0);
    let batches: i64 = sqlx::query_scalar("SELECT count(*) FROM events.batches")
        .fetch_one(&f.db.admin)
        .await
        .unwrap();
    assert_eq!(batches, 0);
    let id = BatchId::new();
    let mut t = tx(&f.app, f.a).await;
    let mut fixed = batch.clone();
    fixed[1].name = "signup".into();
    assert!(ingest::ingest(&mut t, id, &fixed).await.is_ok());
    t.commit().await.unwrap();
    assert_eq!(count_events(&f.db).await, 3);
    let _ = event_id(0);
    f.close().await;
}
