//! Real concurrency: many connections delivering at once (dj-stripe#1267's duplicate
//! deliveries racing each other).

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::*;
use pgstrata_billing::{Error, Outcome, Processed};
use serde_json::Value;
use sqlx::PgPool;
use std::sync::Arc;
use tokio::sync::Barrier;

const CONNECTIONS: usize = 8;

/// Applies an event, running the whole statement again on a serialization failure or a
/// deadlock, as a webhook endpoint answering 5xx to Stripe would get it delivered again.
async fn deliver(pool: &PgPool, event: &Value) -> Processed {
    loop {
        let mut conn = pool.acquire().await.unwrap();
        match pgstrata_billing::apply_event(&mut conn, event).await {
            Err(Error::Db(e)) if e.is_retryable() => continue,
            other => return other.unwrap(),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_same_event_on_eight_connections_applies_once() {
    let db = migrated_db().await;
    let sync = sync_pool(&db, CONNECTIONS as u32).await;
    for round in 0..20 {
        let tenant = tenant(&db).await;
        let tag = format!("r{round}");
        let events = lifecycle(&tag, tenant);
        deliver(&sync, &event(&events, "03")).await;
        // Alternate between a subscription state (with items and placeholders) and an invoice.
        let event = Arc::new(event(&events, if round % 2 == 0 { "10" } else { "15" }));
        let barrier = Arc::new(Barrier::new(CONNECTIONS));
        let mut tasks = Vec::new();
        for _ in 0..CONNECTIONS {
            let (sync, event, barrier) = (sync.clone(), event.clone(), barrier.clone());
            tasks.push(tokio::spawn(async move {
                let mut conn = sync.acquire().await.unwrap();
                barrier.wait().await;
                pgstrata_billing::apply_event(&mut conn, &event).await.unwrap().outcome
            }));
        }
        let mut outcomes = Vec::new();
        for t in tasks {
            outcomes.push(t.await.unwrap());
        }
        let applied = outcomes.iter().filter(|o| **o == Outcome::Applied).count();
        let duplicates = outcomes.iter().filter(|o| **o == Outcome::Duplicate).count();
        assert_eq!(
            (applied, duplicates),
            (1, CONNECTIONS - 1),
            "round {round}: {outcomes:?}"
        );
        let (rows, attempts): (i64, i32) =
            sqlx::query_as("SELECT count(*), max(attempts) FROM billing.events WHERE id = $1")
                .bind(event["id"].as_str().unwrap())
                .fetch_one(&db.admin)
                .await
                .unwrap();
        assert_eq!((rows, attempts), (1, 1));
    }
    sync.close().await;
    db.close().await.unwrap();
}

/// The whole lifecycle delivered at once over eight connections, three times over, ends in
/// the same mirror as in-order delivery: the guards hold under concurrency too.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_lifecycle_delivered_concurrently_ends_in_the_in_order_mirror() {
    let db = migrated_db().await;
    let sync = sync_pool(&db, CONNECTIONS as u32).await;
    let reference_tenant = tenant(&db).await;
    for (_, e) in lifecycle("ref", reference_tenant) {
        deliver(&sync, &e).await;
    }
    let reference = mirror(&db.admin, "ref", reference_tenant).await;
    for round in 0..5 {
        let tenant = tenant(&db).await;
        let tag = format!("k{round}");
        let events: Vec<Value> = lifecycle(&tag, tenant).into_iter().map(|(_, e)| e).collect();
        let mut all: Vec<Value> = events.iter().chain(&events).chain(&events).cloned().collect();
        // A different interleaving per round: rotate and reverse.
        let shift = round * 7 % all.len();
        all.rotate_left(shift);
        if round % 2 == 1 {
            all.reverse();
        }
        let barrier = Arc::new(Barrier::new(CONNECTIONS));
        let mut tasks = Vec::new();
        for c in 0..CONNECTIONS {
            let mine: Vec<Value> = all.iter().skip(c).step_by(CONNECTIONS).cloned().collect();
            let (sync, barrier) = (sync.clone(), barrier.clone());
            tasks.push(tokio::spawn(async move {
                barrier.wait().await;
                for e in mine {
                    let p = deliver(&sync, &e).await;
                    assert_ne!(p.outcome, Outcome::Failed, "{:?}", p.error);
                }
            }));
        }
        for t in tasks {
            t.await.unwrap();
        }
        assert_eq!(mirror(&db.admin, &tag, tenant).await, reference, "round {round}");
    }
    sync.close().await;
    db.close().await.unwrap();
}
