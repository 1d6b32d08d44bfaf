//! Appending and reading: expected versions (exact, no stream, any), gapless versions under 8
//! concurrent appenders, metadata from the context, reads of a stream, a category and the log,
//! and bad input refused with a typed error that writes nothing.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::{fixture, tx};
use pgstrata_core::testing::OPERATOR_LOGIN_ROLE;
use pgstrata_core::{DbError, Page, TenantContext, UserId, begin_tenant};
use pgstrata_eventstore::{Error, EventId, ExpectedVersion, NewEvent, append, read};
use serde_json::json;
use std::collections::BTreeMap;
use std::sync::Arc;

fn ev(t: &str) -> NewEvent {
    NewEvent::new(t, json!({"n": 1}))
}

#[tokio::test]
async fn appends_at_the_expected_version_and_reads_back_in_order() {
    let f = fixture().await;
    let actor = UserId::new();
    let ctx = TenantContext::tenant(f.a).with_actor(actor).with_request_id("req-1");
    let cause = uuid::Uuid::now_v7();
    let mut t = begin_tenant(&f.app, &ctx).await.unwrap();
    let placed = append::append(
        &mut t,
        "order-1",
        ExpectedVersion::NoStream,
        &[
            ev("OrderPlaced").correlated(cause).caused_by(cause),
            ev("ItemPrepared").metadata(json!({"schema": 2})),
        ],
    )
    .await
    .unwrap();
    assert_eq!(placed.iter().map(|a| a.version).collect::<Vec<_>>(), [1, 2]);
    assert!(placed[0].position < placed[1].position);
    append::append(&mut t, "order-1", ExpectedVersion::Exact(2), &[ev("Delivered")])
        .await
        .unwrap();
    append::append(&mut t, "courier-9", ExpectedVersion::NoStream, &[ev("Registered")])
        .await
        .unwrap();
    t.commit().await.unwrap();

    let mut t = tx(&f.app, f.a).await;
    let events = read::read_stream(&mut t, "order-1", &Page::first(100)).await.unwrap();
    assert_eq!(
        events
            .iter()
            .map(|e| (e.version, e.r#type.as_str()))
            .collect::<Vec<_>>(),
        [(1, "OrderPlaced"), (2, "ItemPrepared"), (3, "Delivered")]
    );
    assert_eq!(events[0].category, "order");
    assert_eq!(events[0].actor_id, Some(actor), "the actor comes from the context");
    assert_eq!(events[0].request_id.as_deref(), Some("req-1"));
    assert_eq!(
        (events[0].causation_id, events[0].correlation_id),
        (Some(cause), Some(cause))
    );
    assert_eq!(events[1].metadata, json!({"schema": 2}));
    assert_eq!(events[0].data, json!({"n": 1}));
    // A page after version 1.
    let rest = read::read_stream(&mut t, "order-1", &Page::after(1, 1)).await.unwrap();
    assert_eq!(rest.iter().map(|e| e.version).collect::<Vec<_>>(), [2]);
    assert_eq!(read::stream_version(&mut t, "order-1").await.unwrap(), 3);
    assert_eq!(read::stream_version(&mut t, "order-404").await.unwrap(), 0);
    let orders = read::read_category(&mut t, "order", &Page::first(100)).await.unwrap();
    assert_eq!(orders.len(), 3);
    let all = read::read_all(&mut t, &Page::first(100)).await.unwrap();
    assert_eq!(all.len(), 4);
    assert!(all.windows(2).all(|w| w[0].position < w[1].position));
    drop(t);

    // B sees none of it, and its own stream of the same name starts at 1.
    let mut t = tx(&f.app, f.b).await;
    assert!(read::read_all(&mut t, &Page::first(100)).await.unwrap().is_empty());
    let b = append::append(&mut t, "order-1", ExpectedVersion::NoStream, &[ev("OrderPlaced")])
        .await
        .unwrap();
    assert_eq!(b[0].version, 1);
    t.commit().await.unwrap();
    f.close().await;
}

#[tokio::test]
async fn a_stale_writer_is_refused_with_the_current_version_and_writes_nothing() {
    let f = fixture().await;
    let mut t = tx(&f.app, f.a).await;
    append::append(&mut t, "order-7", ExpectedVersion::NoStream, &[ev("A"), ev("B")])
        .await
        .unwrap();
    t.commit().await.unwrap();
    for (expected, current) in [
        (ExpectedVersion::Exact(1), 2),
        (ExpectedVersion::Exact(3), 2),
        (ExpectedVersion::NoStream, 2),
    ] {
        let mut t = tx(&f.app, f.a).await;
        let err = append::append(&mut t, "order-7", expected, &[ev("C")])
            .await
            .unwrap_err();
        match err {
            Error::WrongExpectedVersion {
                stream,
                expected: e,
                current: c,
            } => assert_eq!((stream.as_str(), e, c), ("order-7", expected, current)),
            other => panic!("{expected}: {other:?}"),
        }
    }
    // A new stream expected at a version: refused with current 0, and the stream is not created.
    let mut t = tx(&f.app, f.a).await;
    let err = append::append(&mut t, "order-8", ExpectedVersion::Exact(4), &[ev("C")])
        .await
        .unwrap_err();
    assert!(matches!(err, Error::WrongExpectedVersion { current: 0, .. }), "{err:?}");
    drop(t);
    let mut t = tx(&f.app, f.a).await;
    assert_eq!(read::stream_version(&mut t, "order-8").await.unwrap(), 0);
    assert_eq!(read::stream_version(&mut t, "order-7").await.unwrap(), 2);
    drop(t);
    f.close().await;
}

#[tokio::test]
async fn any_version_is_the_operators_alone() {
    let f = fixture().await;
    let mut t = tx(&f.app, f.a).await;
    let err = append::append(&mut t, "order-1", ExpectedVersion::Any, &[ev("Imported")])
        .await
        .unwrap_err();
    assert!(matches!(err, Error::Db(DbError::Forbidden { .. })), "{err:?}");
    drop(t);
    // A NULL expected version through eventstore.append is refused too.
    let mut t = tx(&f.app, f.a).await;
    let err = sqlx::query("SELECT * FROM eventstore.append('order-1', NULL, '[{\"type\": \"X\"}]')")
        .execute(&mut *t)
        .await
        .unwrap_err();
    assert_eq!(err.as_database_error().and_then(|d| d.code()).as_deref(), Some("22023"));
    drop(t);

    let operator = f.db.pool_as(OPERATOR_LOGIN_ROLE, 2).await.unwrap();
    for round in 1..=2i64 {
        let mut t = tx(&operator, f.a).await;
        let done = append::append(&mut t, "order-1", ExpectedVersion::Any, &[ev("Imported")])
            .await
            .unwrap();
        assert_eq!(done[0].version, round);
        t.commit().await.unwrap();
    }
    operator.close().await;
    f.close().await;
}

/// 8 appenders race for each version of one stream with the same expected version: exactly one
/// wins each round, the others are told the version the winner made, and the stream is gapless.
#[tokio::test]
async fn eight_concurrent_appenders_one_winner_per_version_gapless() {
    let f = fixture().await;
    const WRITERS: usize = 8;
    const ROUNDS: i64 = 25;
    let barrier = Arc::new(tokio::sync::Barrier::new(WRITERS));
    let mut tasks = Vec::new();
    for w in 0..WRITERS {
        let (app, tenant, barrier) = (f.app.clone(), f.a, barrier.clone());
        tasks.push(tokio::spawn(async move {
            let mut won = Vec::new();
            for round in 0..ROUNDS {
                barrier.wait().await;
                let mut t = tx(&app, tenant).await;
                let expected = if round == 0 {
                    ExpectedVersion::NoStream
                } else {
                    ExpectedVersion::Exact(round)
                };
                let event = NewEvent::new("Bid", json!({"writer": w, "round": round}));
                match append::append(&mut t, "auction-1", expected, &[event]).await {
                    Ok(a) => {
                        t.commit().await.unwrap();
                        won.push((a[0].version, w));
                    }
                    Err(Error::WrongExpectedVersion { current, .. }) => {
                        assert_eq!(current, round + 1, "a loser sees the winner's version");
                    }
                    Err(e) => panic!("writer {w} round {round}: {e:?}"),
                }
                // Every writer finishes the round before the next starts.
                barrier.wait().await;
            }
            won
        }));
    }
    let mut winners: BTreeMap<i64, Vec<usize>> = BTreeMap::new();
    for t in tasks {
        for (version, w) in t.await.unwrap() {
            winners.entry(version).or_default().push(w);
        }
    }
    assert_eq!(winners.len() as i64, ROUNDS);
    for (version, who) in &winners {
        assert_eq!(who.len(), 1, "version {version} won by {who:?}");
    }
    let versions: Vec<i64> =
        sqlx::query_scalar("SELECT version FROM eventstore.events WHERE stream = 'auction-1' ORDER BY version")
            .fetch_all(&f.db.admin)
            .await
            .unwrap();
    assert_eq!(versions, (1..=ROUNDS).collect::<Vec<_>>(), "gapless");
    let stream_version: i64 = sqlx::query_scalar("SELECT version FROM eventstore.streams WHERE stream = 'auction-1'")
        .fetch_one(&f.db.admin)
        .await
        .unwrap();
    assert_eq!(stream_version, ROUNDS);

    // The usual loop (read, decide, append, retry on conflict) with 8 writers: every append
    // lands once, in a gapless stream.
    let mut tasks = Vec::new();
    for w in 0..WRITERS {
        let (app, tenant) = (f.app.clone(), f.a);
        tasks.push(tokio::spawn(async move {
            let mut conflicts = 0;
            for i in 0..20 {
                loop {
                    let mut t = tx(&app, tenant).await;
                    let v = read::stream_version(&mut t, "counter-1").await.unwrap();
                    let event = NewEvent::new("Incremented", json!({"writer": w, "i": i}));
                    match append::append(&mut t, "counter-1", ExpectedVersion::Exact(v), &[event]).await {
                        Ok(_) => {
                            t.commit().await.unwrap();
                            break;
                        }
                        Err(Error::WrongExpectedVersion { .. }) => conflicts += 1,
                        Err(e) => panic!("{e:?}"),
                    }
                }
            }
            conflicts
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    let versions: Vec<i64> =
        sqlx::query_scalar("SELECT version FROM eventstore.events WHERE stream = 'counter-1' ORDER BY version")
            .fetch_all(&f.db.admin)
            .await
            .unwrap();
    assert_eq!(versions, (1..=(WRITERS as i64 * 20)).collect::<Vec<_>>());
    f.close().await;
}

#[tokio::test]
async fn bad_input_is_a_typed_error_and_writes_nothing() {
    let f = fixture().await;
    let cases: Vec<(&str, Vec<NewEvent>, ExpectedVersion, &str)> = vec![
        ("order 1", vec![ev("A")], ExpectedVersion::NoStream, "stream"),
        ("", vec![ev("A")], ExpectedVersion::NoStream, "stream"),
        ("order-1", vec![], ExpectedVersion::NoStream, "events"),
        (
            "order-1",
            (0..1001).map(|_| ev("A")).collect(),
            ExpectedVersion::NoStream,
            "events",
        ),
        ("order-1", vec![ev("A")], ExpectedVersion::Exact(-1), "expected_version"),
    ];
    for (stream, events, expected, field) in cases {
        let mut t = tx(&f.app, f.a).await;
        match append::append(&mut t, stream, expected, &events).await {
            Err(Error::InvalidField { field: got, .. }) => assert_eq!(got, field, "{stream:?}"),
            other => panic!("{stream:?} {field}: {other:?}"),
        }
    }
    let bad_events: Vec<(NewEvent, &str)> = vec![
        (NewEvent::new("", json!({})), "type"),
        (NewEvent::new("A\nB", json!({})), "type"),
        (NewEvent::new("A", json!([1, 2])), "data"),
        (NewEvent::new("A", json!({"x": "y".repeat(200_000)})), "data"),
        (NewEvent::new("A", json!({})).metadata(json!("text")), "metadata"),
    ];
    for (bad, field) in bad_events {
        let mut t = tx(&f.app, f.a).await;
        match append::append(&mut t, "order-1", ExpectedVersion::NoStream, &[ev("Good"), bad]).await {
            Err(Error::InvalidEvent {
                index: Some(1),
                field: got,
                ..
            }) => assert_eq!(got, field),
            other => panic!("{field}: {other:?}"),
        }
    }
    // Past the Rust checks, the database refuses the same events by name.
    for (sql, field) in [
        (
            r#"SELECT * FROM eventstore.append('order-1', 0, '[{"type": ""}]')"#,
            "type",
        ),
        (
            r#"SELECT * FROM eventstore.append('order-1', 0, '[{"type": "A", "data": [1]}]')"#,
            "data",
        ),
        (
            r#"SELECT * FROM eventstore.append('order-1', 0, '[{"data": {}}]')"#,
            "type",
        ),
        (
            r#"SELECT * FROM eventstore.append('order 1', 0, '[{"type": "A"}]')"#,
            "stream",
        ),
    ] {
        let mut t = tx(&f.app, f.a).await;
        let err: Error = sqlx::query(sql).execute(&mut *t).await.unwrap_err().into();
        let got = match &err {
            Error::InvalidEvent { field, .. } | Error::InvalidField { field, .. } => *field,
            other => panic!("{sql}: {other:?}"),
        };
        assert_eq!(got, field, "{sql}");
    }
    // A duplicate event id: the retry of an append that committed.
    let id = EventId::new();
    let mut t = tx(&f.app, f.a).await;
    append::append(&mut t, "order-1", ExpectedVersion::NoStream, &[ev("A").id(id)])
        .await
        .unwrap();
    t.commit().await.unwrap();
    let mut t = tx(&f.app, f.a).await;
    let err = append::append(&mut t, "order-1", ExpectedVersion::Exact(1), &[ev("A").id(id)])
        .await
        .unwrap_err();
    assert!(matches!(err, Error::DuplicateEvent { .. }), "{err:?}");
    drop(t);
    let mut t = tx(&f.app, f.a).await;
    let page = Page::first(100);
    assert!(read::read_stream(&mut t, "order 1", &page).await.is_err());
    assert!(matches!(
        read::read_stream(&mut t, "order-1", &Page::first(0)).await,
        Err(Error::InvalidPage(_))
    ));
    assert_eq!(
        read::read_all(&mut t, &page).await.unwrap().len(),
        1,
        "only the first append stored"
    );
    drop(t);
    f.close().await;
}
