//! Subscriptions never skip a late commit, and projections rebuild to what the live one built.
//! Each test runs on a throwaway server of its own (`rerun_on_own_server`): the xmin horizon is
//! cluster-wide, and another test's open transaction would hold it back.
//!
//! - A writer that took its position first and commits last: nothing after it is delivered
//!   while it is open, then it and what followed are, in order; an aborted one is never seen.
//! - 8 writers with random delays and aborts, appending to shared and own streams while a
//!   projection follows the log: every committed event applied exactly once, in each stream's
//!   version order, no aborted event seen.
//! - A rebuild from position 0, while writers keep appending, equals the live projection, and
//!   the swap leaves readers a complete generation.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::{Seen, committed, create_seen_tables, fixture, rerun_on_own_server, seen, tx};
use pgstrata_core::CancellationToken;
use pgstrata_eventstore::subscription::{self, Checkpoint, RunConfig};
use pgstrata_eventstore::{Error, ExpectedVersion, NewEvent, append, read};
use serde_json::json;
use std::time::Duration;

fn ev(t: &str) -> NewEvent {
    NewEvent::new(t, json!({}))
}

#[tokio::test]
async fn a_late_commit_is_delivered_after_it_commits_and_never_skipped() {
    if rerun_on_own_server("a_late_commit_is_delivered_after_it_commits_and_never_skipped") {
        return;
    }
    let f = fixture().await;
    let mut worker = f.worker.acquire().await.unwrap();
    for outcome in ["commit", "abort"] {
        let start: Option<(i64, i64)> =
            sqlx::query_as("SELECT max(txid)::text::bigint, max(position) FROM eventstore.events")
                .fetch_one(&f.db.admin)
                .await
                .map(|(t, p): (Option<i64>, Option<i64>)| t.zip(p))
                .unwrap();
        let after = start.map_or(Checkpoint::START, |(txid, position)| Checkpoint { txid, position });

        // A appends first (smaller txid and position) and stays open.
        let mut a = tx(&f.app, f.a).await;
        let a_events = append::append(
            &mut a,
            &format!("slow-{outcome}"),
            ExpectedVersion::NoStream,
            &[ev("A")],
        )
        .await
        .unwrap();
        // B appends after A and commits first.
        let mut b = tx(&f.app, f.b).await;
        let b_events = append::append(
            &mut b,
            &format!("fast-{outcome}"),
            ExpectedVersion::NoStream,
            &[ev("B")],
        )
        .await
        .unwrap();
        b.commit().await.unwrap();
        assert!(a_events[0].position < b_events[0].position);

        // B is committed, but a reader that delivered it now would have to skip A later.
        let read = subscription::read_after(&mut worker, after, None, 100).await.unwrap();
        assert!(read.is_empty(), "{outcome}: delivered while A is open: {read:?}");

        if outcome == "commit" {
            a.commit().await.unwrap();
        } else {
            a.rollback().await.unwrap();
        }
        let read = subscription::read_after(&mut worker, after, None, 100).await.unwrap();
        let ids: Vec<_> = read.iter().map(|e| e.event_id).collect();
        if outcome == "commit" {
            assert_eq!(ids, [a_events[0].event_id, b_events[0].event_id], "A, then B");
        } else {
            assert_eq!(ids, [b_events[0].event_id], "B alone; the aborted A is never seen");
        }
    }
    drop(worker);
    f.close().await;
}

/// 8 writers, each transaction: take a transaction id, wait, append (to one of 3 shared
/// streams or its own), wait, then commit, or abort one time in five. A projection follows
/// the log all along, refusing any event out of its stream's order; at the end it has
/// exactly the committed events, each once.
#[tokio::test]
async fn eight_writers_with_random_delays_and_aborts_lose_nothing() {
    if rerun_on_own_server("eight_writers_with_random_delays_and_aborts_lose_nothing") {
        return;
    }
    let f = fixture().await;
    create_seen_tables(&f.db).await;
    let mut w = f.worker.acquire().await.unwrap();
    subscription::create(&mut w, "seen", None).await.unwrap();
    drop(w);
    let projection = Seen { name: "seen".into() };
    let token = CancellationToken::new();
    let runner = {
        let (pool, p, token) = (f.worker.clone(), projection.clone(), token.clone());
        let config = RunConfig {
            batch: 7,
            poll_interval: Duration::from_millis(5),
        };
        tokio::spawn(async move { subscription::run(&pool, &p, &config, token).await })
    };

    let mut writers = Vec::new();
    for w in 0..8u64 {
        let (app, tenants) = (f.app.clone(), [f.a, f.b]);
        writers.push(tokio::spawn(async move {
            let mut rng = w.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
            let mut next = move |n: u64| {
                // xorshift: reproducible per writer, no dependency.
                rng ^= rng << 13;
                rng ^= rng >> 7;
                rng ^= rng << 17;
                rng % n
            };
            let (mut committed, mut aborted) = (0, 0);
            for i in 0..40 {
                let tenant = tenants[(next(2)) as usize];
                let stream = if next(2) == 0 {
                    format!("shared-{}", next(3))
                } else {
                    format!("own{w}-{}", i % 4)
                };
                let mut t = tx(&app, tenant).await;
                // Take a transaction id now, so transactions that append later may hold a smaller
                // one than the stream's previous appender (D-188).
                sqlx::query("SELECT pg_current_xact_id()")
                    .execute(&mut *t)
                    .await
                    .unwrap();
                tokio::time::sleep(Duration::from_millis(next(15))).await;
                let version = read::stream_version(&mut t, &stream).await.unwrap();
                let expected = if version == 0 {
                    ExpectedVersion::NoStream
                } else {
                    ExpectedVersion::Exact(version)
                };
                let events: Vec<NewEvent> = (0..=next(3))
                    .map(|k| NewEvent::new("Step", json!({"writer": w, "i": i, "k": k})))
                    .collect();
                match append::append(&mut t, &stream, expected, &events).await {
                    Ok(_) => {}
                    Err(Error::WrongExpectedVersion { .. }) => continue,
                    Err(e) => panic!("{e:?}"),
                }
                tokio::time::sleep(Duration::from_millis(next(25))).await;
                if next(5) == 0 {
                    t.rollback().await.unwrap();
                    aborted += 1;
                } else {
                    t.commit().await.unwrap();
                    committed += 1;
                }
            }
            (committed, aborted)
        }));
    }
    let (mut committed_tx, mut aborted_tx) = (0, 0);
    for w in writers {
        let (c, a) = w.await.unwrap();
        committed_tx += c;
        aborted_tx += a;
    }
    assert!(
        committed_tx > 100 && aborted_tx > 10,
        "{committed_tx} committed, {aborted_tx} aborted"
    );

    // Let the runner drain, then stop it; it must not have failed (an out-of-order event or a
    // duplicate would have).
    let all = committed(&f.db).await;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    while seen(&f.db, 1).await.len() < all.len() && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    token.cancel();
    runner.await.unwrap().unwrap();
    assert_eq!(seen(&f.db, 1).await, all, "every committed event, once");
    // Nothing aborted reached the projection: every event it saw exists.
    let ghosts: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM public.seen s WHERE NOT EXISTS
           (SELECT 1 FROM eventstore.events e WHERE e.tenant_id = s.tenant_id AND e.event_id = s.event_id)",
    )
    .fetch_one(&f.db.admin)
    .await
    .unwrap();
    assert_eq!(ghosts, 0);
    // The checkpoint counted each event once.
    let counted: i64 = sqlx::query_scalar("SELECT events FROM eventstore.subscriptions WHERE name = 'seen'")
        .fetch_one(&f.db.admin)
        .await
        .unwrap();
    assert_eq!(counted as usize, all.len());
    f.close().await;
}

/// A rebuild replays the log into generation 2 while writers append and the live runner keeps
/// going; after the swap generation 2 is live, equals what generation 1 had built plus what
/// came since, and generation 1 is retired.
#[tokio::test]
async fn a_rebuild_equals_the_live_projection_and_swaps_without_downtime() {
    if rerun_on_own_server("a_rebuild_equals_the_live_projection_and_swaps_without_downtime") {
        return;
    }
    let f = fixture().await;
    create_seen_tables(&f.db).await;
    let mut w = f.worker.acquire().await.unwrap();
    subscription::create(&mut w, "seen", None).await.unwrap();
    let projection = Seen { name: "seen".into() };
    // A history, projected live.
    for i in 0..300 {
        let mut t = tx(&f.app, if i % 2 == 0 { f.a } else { f.b }).await;
        let stream = format!("order-{}", i % 37);
        let v = read::stream_version(&mut t, &stream).await.unwrap();
        let expected = if v == 0 {
            ExpectedVersion::NoStream
        } else {
            ExpectedVersion::Exact(v)
        };
        append::append(&mut t, &stream, expected, &[ev("Step"), ev("Step")])
            .await
            .unwrap();
        t.commit().await.unwrap();
    }
    assert_eq!(subscription::catch_up(&mut w, &projection, 100).await.unwrap(), 600);
    assert_eq!(subscription::live_generation(&mut w, "seen").await.unwrap(), Some(1));

    // Writers and the live runner keep going during the rebuild; a reader keeps reading the
    // live generation and must always find a complete one (at least the 600 events).
    let token = CancellationToken::new();
    let runner = {
        let (pool, p, token) = (f.worker.clone(), projection.clone(), token.clone());
        let config = RunConfig {
            batch: 50,
            poll_interval: Duration::from_millis(5),
        };
        tokio::spawn(async move { subscription::run(&pool, &p, &config, token).await })
    };
    let writer = {
        let (app, tenant, token) = (f.app.clone(), f.a, token.clone());
        tokio::spawn(async move {
            let mut i = 0;
            while !token.is_cancelled() {
                let mut t = tx(&app, tenant).await;
                let stream = format!("late-{}", i % 5);
                let v = read::stream_version(&mut t, &stream).await.unwrap();
                let expected = if v == 0 {
                    ExpectedVersion::NoStream
                } else {
                    ExpectedVersion::Exact(v)
                };
                append::append(&mut t, &stream, expected, &[ev("Late")]).await.unwrap();
                t.commit().await.unwrap();
                i += 1;
                tokio::time::sleep(Duration::from_millis(2)).await;
            }
        })
    };
    let reader = {
        let (admin, token) = (f.db.admin.clone(), token.clone());
        tokio::spawn(async move {
            let mut smallest = i64::MAX;
            while !token.is_cancelled() {
                let n: i64 = sqlx::query_scalar(
                    "SELECT count(*) FROM public.seen WHERE generation = eventstore.live_generation('seen')",
                )
                .fetch_one(&admin)
                .await
                .unwrap();
                smallest = smallest.min(n);
                tokio::time::sleep(Duration::from_millis(3)).await;
            }
            smallest
        })
    };
    tokio::time::sleep(Duration::from_millis(100)).await;
    let generation = subscription::rebuild(&f.worker, &projection, 64).await.unwrap();
    assert_eq!(generation, 2);
    tokio::time::sleep(Duration::from_millis(100)).await;
    token.cancel();
    writer.await.unwrap();
    runner.await.unwrap().unwrap();
    let smallest = reader.await.unwrap();
    assert!(smallest >= 600, "a reader saw a live generation with {smallest} events");

    // Generation 2 is live; catch it up and it holds exactly the log, as generation 1 did.
    assert_eq!(subscription::live_generation(&mut w, "seen").await.unwrap(), Some(2));
    subscription::catch_up(&mut w, &projection, 100).await.unwrap();
    assert_eq!(seen(&f.db, 2).await, committed(&f.db).await);
    assert!(seen(&f.db, 1).await.is_empty(), "generation 1 was retired");
    let rows: Vec<(i32, bool)> =
        sqlx::query_as("SELECT generation, live FROM eventstore.subscriptions WHERE name = 'seen'")
            .fetch_all(&f.db.admin)
            .await
            .unwrap();
    assert_eq!(rows, [(2, true)]);

    // Rebuilt again with no writer, the two generations are equal row for row before the old
    // one is retired: compare generation 3 with what generation 2 held.
    let before = seen(&f.db, 2).await;
    let streams_before: Vec<String> = sqlx::query_scalar(
        "SELECT format('%s %s %s %s', tenant_id, stream, version, events) FROM public.seen_streams WHERE generation = 2 ORDER BY 1",
    )
    .fetch_all(&f.db.admin)
    .await
    .unwrap();
    assert_eq!(subscription::rebuild(&f.worker, &projection, 1000).await.unwrap(), 3);
    assert_eq!(seen(&f.db, 3).await, before);
    let streams_after: Vec<String> = sqlx::query_scalar(
        "SELECT format('%s %s %s %s', tenant_id, stream, version, events) FROM public.seen_streams WHERE generation = 3 ORDER BY 1",
    )
    .fetch_all(&f.db.admin)
    .await
    .unwrap();
    assert_eq!(streams_after, streams_before);
    drop(w);
    f.close().await;
}
