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

/// Waits until the backend `pid` waits for a lock.
async fn until_blocked(admin: &PgPool, pid: i32) {
    for _ in 0..500 {
        let waiting: bool = sqlx::query_scalar(
            "SELECT coalesce(bool_or(wait_event_type = 'Lock'), false) FROM pg_stat_activity WHERE pid = $1",
        )
        .bind(pid)
        .fetch_one(admin)
        .await
        .unwrap();
        if waiting {
            return;
        }
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    panic!("backend {pid} never waited for a lock");
}

/// Issue 18: a redelivery of a deferred event holds its ledger row and waits for the
/// customer's link row, while the call that links the customer (customer.created carrying
/// metadata.tenant_id, or the sync role's link_customer) holds the link row and replays the
/// deferred events. The replay used to wait for the redelivery's ledger row: a deadlock (one of
/// them failed with 40P01). Forced here in that exact order: the linker is held between its
/// link and its replay by a lock on the tenant row (its customer insert checks that key), the
/// redelivery starts, and the lock goes. Both must now finish without error, the event applied
/// once. Since V6 (D-202) the redelivery holds no ledger row while it waits for the link (it
/// meets the event's row only at its claim, after applying): the linker's replay applies the
/// event, and the redelivery, a no-op rolled back, reports a duplicate.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_redelivered_deferred_event_racing_the_link_does_not_deadlock() {
    let db = migrated_db().await;
    let sync = sync_pool(&db, 2).await;
    for (tag, by_call) in [("dl1", false), ("dl2", true)] {
        let tenant = tenant(&db).await;
        let mut events = lifecycle(tag, tenant);
        if by_call {
            for (_, e) in events.iter_mut() {
                if e["type"] == "customer.created" {
                    e["data"]["object"]["metadata"] = serde_json::json!({});
                }
            }
        }
        let customer = event(&events, "03")["data"]["object"]["id"]
            .as_str()
            .unwrap()
            .to_owned();
        let deferred = event(&events, "05");
        let mut setup = sync.acquire().await.unwrap();
        apply_expect(&mut setup, &deferred, Outcome::Deferred).await;
        drop(setup);

        let mut gate = db.admin.begin().await.unwrap();
        sqlx::query("SELECT 1 FROM tenancy.tenants WHERE id = $1 FOR UPDATE")
            .bind(tenant.0)
            .execute(&mut *gate)
            .await
            .unwrap();
        let mut linker_conn = sync.acquire().await.unwrap().detach();
        let mut redelivery_conn = sync.acquire().await.unwrap().detach();
        let pid = async |c: &mut sqlx::PgConnection| -> i32 {
            sqlx::query_scalar("SELECT pg_backend_pid()")
                .fetch_one(c)
                .await
                .unwrap()
        };
        let (linker_pid, redelivery_pid) = (pid(&mut linker_conn).await, pid(&mut redelivery_conn).await);

        let created = event(&events, "03");
        let linker = tokio::spawn(async move {
            let r = if by_call {
                pgstrata_billing::link_customer(&mut linker_conn, &customer, tenant)
                    .await
                    .map(|n| format!("linked, {n} replayed"))
            } else {
                pgstrata_billing::apply_event(&mut linker_conn, &created)
                    .await
                    .map(|p| format!("{:?} {:?}", p.outcome, p.error))
            };
            r.map_err(|e| e.to_string())
        });
        until_blocked(&db.admin, linker_pid).await;
        let redelivery = tokio::spawn(async move {
            pgstrata_billing::apply_event(&mut redelivery_conn, &deferred)
                .await
                .map(|p| (p.outcome, p.error))
                .map_err(|e| e.to_string())
        });
        until_blocked(&db.admin, redelivery_pid).await;
        gate.commit().await.unwrap();

        let linked = linker.await.unwrap();
        let redelivered = redelivery.await.unwrap();
        assert!(
            linked
                .as_ref()
                .is_ok_and(|s| s.starts_with("Applied None") || s.starts_with("linked")),
            "{tag}: {linked:?}"
        );
        assert_eq!(redelivered, Ok((Outcome::Duplicate, None)), "{tag}");
        let (status, attempts): (String, i32) =
            sqlx::query_as("SELECT status, attempts FROM billing.events WHERE id = $1")
                .bind(event(&events, "05")["id"].as_str().unwrap())
                .fetch_one(&db.admin)
                .await
                .unwrap();
        assert_eq!((status.as_str(), attempts), ("processed", 1), "{tag}");
    }
    sync.close().await;
    db.close().await.unwrap();
}

/// The deferred-replay race, hammered: 8 connections deliver 16 customers' lifecycles, every
/// event of them at least once and many twice, shuffled, so that customer.created (which links
/// the customer and replays its deferred events) keeps racing deliveries and redeliveries of
/// the events it replays. No delivery may fail, and the server counts no deadlock in the
/// database (its own counter, read after every connection has ended and reported it).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn eight_connections_racing_links_and_replays_never_deadlock() {
    const CUSTOMERS: usize = 16;
    const CONNECTIONS: usize = 8;
    let db = migrated_db().await;
    let deadlocks = async |db: &pgstrata_core::testing::TestDb| -> i64 {
        sqlx::query_scalar("SELECT deadlocks FROM pg_stat_database WHERE datname = current_database()")
            .fetch_one(&db.admin)
            .await
            .unwrap()
    };
    let before = deadlocks(&db).await;
    let mut deliveries = Vec::new();
    for c in 0..CUSTOMERS {
        let events = lifecycle(&format!("hx{c}"), tenant(&db).await);
        let mut rng = Rng(0x5EED ^ c as u64);
        for i in delivery_order(&mut rng, events.len()) {
            deliveries.push(events[i].1.clone());
        }
    }
    // Interleave the customers too.
    let mut rng = Rng(0xD1CE);
    for i in (1..deliveries.len()).rev() {
        deliveries.swap(i, rng.below(i + 1));
    }
    let total = deliveries.len();
    let queue = std::sync::Arc::new(std::sync::Mutex::new(deliveries));
    let sync = sync_pool(&db, CONNECTIONS as u32).await;
    let mut workers = Vec::new();
    for _ in 0..CONNECTIONS {
        let (queue, sync) = (queue.clone(), sync.clone());
        workers.push(tokio::spawn(async move {
            let mut conn = sync.acquire().await.unwrap();
            let mut failures = Vec::new();
            loop {
                let Some(event) = queue.lock().unwrap().pop() else {
                    return failures;
                };
                match pgstrata_billing::apply_event(&mut conn, &event).await {
                    Ok(p) if p.outcome == Outcome::Failed => failures.push(format!("{}: {:?}", p.event_id, p.error)),
                    Ok(_) => {}
                    Err(e) => failures.push(format!("{}: {e}", event["id"])),
                }
            }
        }));
    }
    let mut failures = Vec::new();
    for w in workers {
        failures.extend(w.await.unwrap());
    }
    assert!(
        failures.is_empty(),
        "{} of {total} deliveries failed: {failures:?}",
        failures.len()
    );
    // Ending the connections makes each report its statistics.
    sync.close().await;
    let unfinished: i64 =
        sqlx::query_scalar("SELECT count(*) FROM billing.events WHERE status NOT IN ('processed', 'ignored')")
            .fetch_one(&db.admin)
            .await
            .unwrap();
    assert_eq!(unfinished, 0);
    let mut after = deadlocks(&db).await;
    for _ in 0..50 {
        if after != before {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        after = deadlocks(&db).await;
    }
    assert_eq!(
        after - before,
        0,
        "deadlocks counted by the server during {total} deliveries"
    );
    db.close().await.unwrap();
}
