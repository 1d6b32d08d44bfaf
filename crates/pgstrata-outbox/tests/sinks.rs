//! The queue sink (one job per message, in the message's tenant, committed with the
//! checkpoint), a sink that fails (its partition rolled back and delivered again later, in
//! order, while the other partitions move on), and retention (only what every sink passed).
//! On this binary's own server, since relays read below the server-wide horizon.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::{OwnDb, own_db, tx};
use pgstrata_outbox::sink::QueueSink;
use pgstrata_outbox::{Error, Message, Relay, RelayConfig, Round, Sink, SinkError, health, publish};
use serde_json::json;
use sqlx::PgConnection;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

/// The tests of this binary share its server and hold the horizon: one at a time.
static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

async fn publish_some(db: &OwnDb) {
    for (tenant, n) in [(db.a, 5), (db.b, 3)] {
        let mut t = tx(&db.app, tenant).await;
        for i in 0..n {
            publish::publish(
                &mut t,
                "invoice",
                &format!("inv-{i}"),
                "InvoiceIssued",
                &json!({ "i": i }),
            )
            .await
            .unwrap();
        }
        t.commit().await.unwrap();
    }
}

#[tokio::test]
async fn the_queue_sink_enqueues_one_job_per_message_in_its_tenant() {
    let _serial = SERIAL.lock().await;
    let db = own_db("sinks_queue", &common::migrator_with(&pgstrata_queue::MODULE)).await;
    publish_some(&db).await;
    let relay = Relay::new(
        db.worker.clone(),
        QueueSink::new("jobs", "invoice.issued").queue("billing"),
    );
    assert_eq!(relay.run_until_idle().await.unwrap(), 8);
    assert_eq!(relay.run_until_idle().await.unwrap(), 0);
    let jobs: Vec<(uuid::Uuid, uuid::Uuid, String)> = sqlx::query_as(
        "SELECT j.tenant_id, m.tenant_id, j.kind FROM queue.jobs j
           JOIN outbox.messages m ON m.id = (j.payload ->> 'id')::bigint
          WHERE j.queue = 'billing' ORDER BY j.id",
    )
    .fetch_all(&db.admin)
    .await
    .unwrap();
    assert_eq!(jobs.len(), 8, "one job per message");
    assert!(
        jobs.iter()
            .all(|(job, message, kind)| job == message && kind == "invoice.issued")
    );
    // The application of A sees A's five jobs only.
    let mut t = tx(&db.app, db.a).await;
    let seen: i64 = sqlx::query_scalar("SELECT count(*) FROM queue.jobs")
        .fetch_one(&mut *t)
        .await
        .unwrap();
    assert_eq!(seen, 5);
}

/// Refuses every message while `fail` is set; records the rest in `delivered`.
struct Flaky {
    fail: AtomicBool,
}

impl Sink for Flaky {
    fn name(&self) -> &str {
        "flaky"
    }

    async fn deliver(&self, conn: &mut PgConnection, batch: &[Message]) -> Result<(), SinkError> {
        for m in batch {
            sqlx::query("INSERT INTO public.delivered (message_id) VALUES ($1)")
                .bind(m.id.0)
                .execute(&mut *conn)
                .await?;
            if self.fail.load(Ordering::SeqCst) && m.aggregate_id == "inv-0" {
                return Err("the downstream refused inv-0".into());
            }
        }
        Ok(())
    }
}

#[tokio::test]
async fn a_failing_partition_is_delivered_again_later_and_retention_keeps_what_a_sink_has_not_passed() {
    let _serial = SERIAL.lock().await;
    let db = own_db("sinks_retention", &common::migrator()).await;
    sqlx::raw_sql(
        "CREATE TABLE public.delivered (message_id bigint NOT NULL);
         GRANT SELECT, INSERT ON public.delivered TO pgstrata_worker;",
    )
    .execute(&db.admin)
    .await
    .unwrap();
    publish_some(&db).await;
    let flaky = Relay::new(
        db.worker.clone(),
        Flaky {
            fail: AtomicBool::new(true),
        },
    );
    // inv-0 of A and of B fail: their partitions roll back, written rows included; the
    // others are delivered.
    let first = flaky.run_until_idle().await.unwrap();
    assert!((1..8).contains(&first), "{first}");
    let written: i64 = sqlx::query_scalar("SELECT count(*) FROM public.delivered")
        .fetch_one(&db.admin)
        .await
        .unwrap();
    assert_eq!(written as usize, first, "a failed partition left rows behind");

    // Retention: the sink has not passed everything, so cleanup keeps those; a second sink
    // registered later keeps everything until it has delivered too.
    let mut w = db.worker.acquire().await.unwrap();
    pgstrata_outbox::relay::register_sink(&mut w, "late").await.unwrap();
    assert_eq!(health::cleanup(&mut w, Duration::ZERO, 1000).await.unwrap(), 0);
    flaky.sink().fail.store(false, Ordering::SeqCst);
    assert_eq!(flaky.run_until_idle().await.unwrap(), 8 - first);
    assert_eq!(
        health::cleanup(&mut w, Duration::ZERO, 1000).await.unwrap(),
        0,
        "'late' has passed nothing"
    );
    // Once every sink passed them, old enough messages go, and so do the idle heads.
    sqlx::query(
        "UPDATE outbox.checkpoints c SET after_txid = f.after_txid, after_id = f.after_id
                   FROM outbox.checkpoints f WHERE c.sink = 'late' AND f.sink = 'flaky' AND f.partition = c.partition",
    )
    .execute(&db.admin)
    .await
    .unwrap();
    assert_eq!(
        health::cleanup(&mut w, Duration::from_secs(3600), 1000).await.unwrap(),
        0,
        "none is an hour old"
    );
    assert_eq!(health::cleanup(&mut w, Duration::ZERO, 1000).await.unwrap(), 8);
    let left: (i64, i64) =
        sqlx::query_as("SELECT (SELECT count(*) FROM outbox.messages), (SELECT count(*) FROM outbox.heads)")
            .fetch_one(&db.admin)
            .await
            .unwrap();
    assert_eq!(left, (0, 0));
    // Bad arguments are typed errors.
    assert!(matches!(
        health::cleanup(&mut w, Duration::ZERO, 0).await,
        Err(Error::InvalidField { field: "limit", .. })
    ));
    assert!(matches!(
        pgstrata_outbox::relay::register_sink(&mut w, "Bad Name").await,
        Err(Error::InvalidField { field: "sink", .. })
    ));
}

/// Writes a row per message; for `poison`, fails with a SQL error after writing its row, which
/// leaves the round's transaction aborted until the relay rolls the partition back.
struct Aborting {
    poison: String,
}

impl Sink for Aborting {
    fn name(&self) -> &str {
        "aborting"
    }

    async fn deliver(&self, conn: &mut PgConnection, batch: &[Message]) -> Result<(), SinkError> {
        for m in batch {
            sqlx::query("INSERT INTO public.delivered (message_id) VALUES ($1)")
                .bind(m.id.0)
                .execute(&mut *conn)
                .await?;
            if m.aggregate_id == self.poison {
                sqlx::query("SELECT 1 / 0").execute(&mut *conn).await?;
            }
        }
        Ok(())
    }
}

/// One round over every partition where the sink's SQL fails in an early partition: that
/// partition is rolled back to its start (its written row too), and the partitions after it
/// are delivered and checkpointed in the same round's transaction.
#[tokio::test]
async fn a_partition_whose_sql_fails_is_rolled_back_alone_and_the_round_goes_on() {
    let _serial = SERIAL.lock().await;
    let db = own_db("sinks_aborting", &common::migrator()).await;
    sqlx::raw_sql(
        "CREATE TABLE public.delivered (message_id bigint NOT NULL);
         GRANT SELECT, INSERT ON public.delivered TO pgstrata_worker;",
    )
    .execute(&db.admin)
    .await
    .unwrap();
    let mut t = tx(&db.app, db.a).await;
    for i in 0..40 {
        publish::publish(&mut t, "order", &format!("o-{i}"), "OrderPlaced", &json!({ "i": i }))
            .await
            .unwrap();
    }
    t.commit().await.unwrap();
    // The poison is a key of the lowest partition used, so the round has partitions after it.
    let (poison, poisoned, used): (String, i64, i64) = sqlx::query_as(
        "SELECT (SELECT aggregate_id FROM outbox.messages ORDER BY partition, id LIMIT 1),
                (SELECT count(*) FROM outbox.messages WHERE partition = (SELECT min(partition) FROM outbox.messages)),
                (SELECT count(DISTINCT partition) FROM outbox.messages)",
    )
    .fetch_one(&db.admin)
    .await
    .unwrap();
    assert!(used > 2, "40 keys in {used} partitions");
    let relay = Relay::new(db.worker.clone(), Aborting { poison }).with_config(RelayConfig {
        partitions_per_round: 32,
        ..RelayConfig::default()
    });
    relay.prepare().await.unwrap();
    let round = relay.round().await.unwrap();
    assert_eq!(
        round,
        Round {
            delivered: 40 - poisoned as usize,
            failed: 1
        }
    );
    let (written, checkpointed): (i64, i64) = sqlx::query_as(
        "SELECT (SELECT count(*) FROM public.delivered),
                (SELECT sum(delivered)::bigint FROM outbox.checkpoints WHERE sink = 'aborting')",
    )
    .fetch_one(&db.admin)
    .await
    .unwrap();
    assert_eq!((written, checkpointed), (40 - poisoned, 40 - poisoned));
    // The failed partition comes again, alone, and fails again: nothing else moves.
    assert_eq!(
        relay.round().await.unwrap(),
        Round {
            delivered: 0,
            failed: 1
        }
    );
}
