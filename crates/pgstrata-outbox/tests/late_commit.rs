//! The horizon rule: a relay delivers a message only once every transaction older than it has
//! ended, so a transaction that commits late is never skipped and an aborted one never seen.
//! On this binary's own server: another test's open transaction would hold the relay back.
//!
//! Expected failure modes, each of which one of these tests catches: a cursor on the id alone
//! delivers B before A commits and then skips A (A's id is below the cursor); reading above
//! the horizon delivers messages of transactions that later abort; claiming messages with SKIP
//! LOCKED instead of partitions reorders one aggregate's messages.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::{OwnDb, Rng, own_db, seed, tx};
use pgstrata_core::{CancellationToken, TenantId};
use pgstrata_outbox::{Error, Message, Relay, Sink, SinkError, health, publish};
use serde_json::json;
use sqlx::PgConnection;
use std::collections::BTreeMap;
use std::time::Duration;

/// An in-process handler: records each message in `delivered`, in the relay's transaction.
struct Recorder;

impl Sink for Recorder {
    fn name(&self) -> &str {
        "recorder"
    }

    async fn deliver(&self, conn: &mut PgConnection, batch: &[Message]) -> Result<(), SinkError> {
        for m in batch {
            sqlx::query(
                "INSERT INTO public.delivered (message_id, aggregate_id, event_type, n) VALUES ($1, $2, $3, $4)",
            )
            .bind(m.id.0)
            .bind(&m.aggregate_id)
            .bind(&m.event_type)
            .bind(m.payload["n"].as_i64())
            .execute(&mut *conn)
            .await?;
        }
        Ok(())
    }
}

/// The tests of this binary share its server, and each holds the horizon with its own
/// transactions: they run one at a time.
static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

async fn prepare(name: &str) -> OwnDb {
    let db = own_db(name, &common::migrator()).await;
    sqlx::raw_sql(
        "CREATE TABLE public.delivered (seq bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY, message_id bigint NOT NULL,
                                        aggregate_id text NOT NULL, event_type text NOT NULL, n bigint);
         GRANT SELECT, INSERT ON public.delivered TO pgstrata_worker;
         -- The business rows the writers change with each message: one counter per aggregate.
         CREATE TABLE public.counters (tenant_id uuid NOT NULL, id text NOT NULL, n bigint NOT NULL DEFAULT 0,
                                       PRIMARY KEY (tenant_id, id));
         GRANT SELECT, INSERT, UPDATE ON public.counters TO pgstrata_app;",
    )
    .execute(&db.admin)
    .await
    .unwrap();
    db
}

/// What was delivered, sorted: messages of different aggregates have no order between them.
async fn delivered(db: &OwnDb) -> Vec<String> {
    sqlx::query_scalar("SELECT event_type FROM public.delivered ORDER BY event_type")
        .fetch_all(&db.admin)
        .await
        .unwrap()
}

#[tokio::test]
async fn a_late_commit_is_delivered_after_it_commits_and_an_abort_is_never_seen() {
    let _serial = SERIAL.lock().await;
    let db = prepare("late_commit_single").await;
    let relay = Relay::new(db.worker.clone(), Recorder);
    relay.prepare().await.unwrap();

    // A begins and publishes (so it has its transaction id), then B publishes and commits.
    let mut a = tx(&db.app, db.a).await;
    publish::publish(&mut a, "order", "o-a", "A", &json!({})).await.unwrap();
    let a_xid: i64 = sqlx::query_scalar("SELECT pg_current_xact_id()::text::bigint")
        .fetch_one(&mut *a)
        .await
        .unwrap();
    let a_pid: i32 = sqlx::query_scalar("SELECT pg_backend_pid()")
        .fetch_one(&mut *a)
        .await
        .unwrap();
    let mut b = tx(&db.app, db.b).await;
    publish::publish(&mut b, "order", "o-b", "B", &json!({})).await.unwrap();
    b.commit().await.unwrap();

    // B is committed but A may still commit below it: nothing is delivered yet.
    assert_eq!(relay.run_until_idle().await.unwrap(), 0);
    assert!(delivered(&db).await.is_empty());
    // The metric names A's transaction and its backend.
    let mut w = db.worker.acquire().await.unwrap();
    let held = health::held_back(&mut w).await.unwrap().expect("held back");
    assert_eq!((held.xid, held.pid, held.messages), (a_xid, Some(a_pid), 1));
    assert!(
        held.to_string()
            .starts_with(&format!("relay held back by xid {a_xid} for ")),
        "{held}"
    );

    // A commits late: both are delivered, A never skipped.
    a.commit().await.unwrap();
    assert_eq!(relay.run_until_idle().await.unwrap(), 2);
    assert_eq!(delivered(&db).await, ["A", "B"]);
    assert!(health::held_back(&mut w).await.unwrap().is_none());

    // C begins and publishes, D commits, C aborts: D alone, and only after C ended.
    let mut c = tx(&db.app, db.a).await;
    publish::publish(&mut c, "order", "o-c", "C", &json!({})).await.unwrap();
    let mut d = tx(&db.app, db.a).await;
    publish::publish(&mut d, "order", "o-d", "D", &json!({})).await.unwrap();
    d.commit().await.unwrap();
    assert_eq!(relay.run_until_idle().await.unwrap(), 0);
    c.rollback().await.unwrap();
    assert_eq!(relay.run_until_idle().await.unwrap(), 1);
    assert_eq!(delivered(&db).await, ["A", "B", "D"]);
    // Nothing twice: another sweep delivers nothing.
    assert_eq!(relay.run_until_idle().await.unwrap(), 0);
    let stats = health::sink_stats(&mut w).await.unwrap();
    assert_eq!((stats[0].sink.as_str(), stats[0].delivered), ("recorder", 3));
}

/// One writer transaction: for 1 to 3 aggregates in random order, bump the aggregate's counter
/// (the business write, which locks it) and publish its new value; sleep at random between
/// steps; commit, or abort one time in five. Returns the (aggregate, n) it committed, or none.
async fn write_once(db: &OwnDb, tenant: TenantId, rng: &mut Rng) -> Result<Vec<(String, i64)>, Error> {
    let mut t = tx(&db.app, tenant).await;
    let mut written = Vec::new();
    let keys = 1 + rng.below(3);
    for _ in 0..keys {
        let id = format!("agg-{}", rng.below(10));
        if written.iter().any(|(k, _)| *k == id) {
            continue;
        }
        tokio::time::sleep(Duration::from_millis(rng.below(8))).await;
        let n: i64 = sqlx::query_scalar(
            "INSERT INTO public.counters AS c (tenant_id, id, n) VALUES ($1, $2, 1)
             ON CONFLICT (tenant_id, id) DO UPDATE SET n = c.n + 1 RETURNING n",
        )
        .bind(tenant.0)
        .bind(&id)
        .fetch_one(&mut *t)
        .await
        .map_err(Error::from)?;
        publish::publish(&mut t, "counter", &id, "Bumped", &json!({ "n": n })).await?;
        written.push((id, n));
    }
    tokio::time::sleep(Duration::from_millis(rng.below(15))).await;
    if rng.below(5) == 0 {
        t.rollback().await.map_err(Error::Db)?;
        return Ok(Vec::new());
    }
    t.commit().await.map_err(Error::Db)?;
    Ok(written)
}

#[tokio::test]
async fn eight_writers_with_random_delays_and_aborts_are_delivered_once_each_in_order() {
    let _serial = SERIAL.lock().await;
    let db = prepare("late_commit_eight").await;
    let relay = std::sync::Arc::new(Relay::new(db.worker.clone(), Recorder));
    let token = CancellationToken::new();
    let running = {
        let (relay, token) = (relay.clone(), token.clone());
        tokio::spawn(async move { relay.run(token).await })
    };
    let seed = seed();
    let db = std::sync::Arc::new(db);
    let mut writers = Vec::new();
    for w in 0..8u64 {
        let db = db.clone();
        writers.push(tokio::spawn(async move {
            let mut rng = Rng::new(seed.wrapping_add(w * 7919));
            let tenant = if w % 2 == 0 { db.a } else { db.b };
            let (mut committed, mut retried) = (Vec::new(), 0);
            for _ in 0..60 {
                loop {
                    match write_once(&db, tenant, &mut rng).await {
                        Ok(written) => {
                            committed.extend(written.into_iter().map(|(k, n)| (tenant, k, n)));
                            break;
                        }
                        // Refused as older than a committed publisher of the same aggregate,
                        // or a deadlock between two writers' aggregates: run it again.
                        Err(Error::Db(e)) if e.is_retryable() => retried += 1,
                        Err(e) => panic!("writer {w}: {e}"),
                    }
                }
            }
            (committed, retried)
        }));
    }
    let mut committed = Vec::new();
    let mut retried = 0;
    for w in writers {
        let (c, r) = w.await.unwrap();
        committed.extend(c);
        retried += r;
    }
    eprintln!(
        "{} messages committed, {retried} transactions run again",
        committed.len()
    );

    // Wait until the relay has delivered everything committed.
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    loop {
        let n: i64 = sqlx::query_scalar("SELECT count(*) FROM public.delivered")
            .fetch_one(&db.admin)
            .await
            .unwrap();
        if n as usize >= committed.len() || std::time::Instant::now() > deadline {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    token.cancel();
    running.await.unwrap().unwrap();

    // Every committed message delivered, none twice, none of an aborted transaction.
    let rows: Vec<(i64, uuid::Uuid, String, i64)> = sqlx::query_as(
        "SELECT d.message_id, m.tenant_id, d.aggregate_id, d.n FROM public.delivered d
           JOIN outbox.messages m ON m.id = d.message_id ORDER BY d.seq",
    )
    .fetch_all(&db.admin)
    .await
    .unwrap();
    let all: i64 = sqlx::query_scalar("SELECT count(*) FROM public.delivered")
        .fetch_one(&db.admin)
        .await
        .unwrap();
    assert_eq!(all as usize, rows.len(), "a delivered message is not in the outbox");
    let mut ids: Vec<i64> = rows.iter().map(|r| r.0).collect();
    ids.sort_unstable();
    ids.dedup();
    assert_eq!(ids.len(), rows.len(), "a message was delivered twice");
    let mut expected: Vec<(uuid::Uuid, String, i64)> = committed.iter().map(|(t, k, n)| (t.0, k.clone(), *n)).collect();
    expected.sort();
    let mut got: Vec<(uuid::Uuid, String, i64)> = rows.iter().map(|r| (r.1, r.2.clone(), r.3)).collect();
    got.sort();
    assert_eq!(got, expected, "delivered differs from committed");

    // Per aggregate, in the order the counter moved (commit order): 1, 2, 3, ... with no gap,
    // since an aborted transaction's value is taken again by the next commit.
    let mut per_key: BTreeMap<(uuid::Uuid, String), Vec<i64>> = BTreeMap::new();
    for (_, tenant, key, n) in rows {
        per_key.entry((tenant, key)).or_default().push(n);
    }
    for (key, ns) in per_key {
        let want: Vec<i64> = (1..=ns.len() as i64).collect();
        assert_eq!(ns, want, "aggregate {key:?} delivered out of commit order");
    }
}
