//! Three relays on one sink share its partitions: no aggregate is delivered by two at once, and
//! a relay whose backend is terminated mid-batch (pg_terminate_backend) loses nothing: its round
//! rolls back with its checkpoints, another relay (or itself, reconnected) delivers the batch.
//! On this binary's own server, since the relays read below the server-wide horizon.
//!
//! Expected failure modes this test catches: leases by time (a paused relay's batch overlaps
//! its successor's), SKIP LOCKED on messages (one aggregate's messages split across relays and
//! reordered), a checkpoint moved outside the delivering transaction (a killed batch is lost).

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::{OwnDb, own_db, tx};
use pgstrata_core::CancellationToken;
use pgstrata_outbox::{Message, Relay, RelayConfig, Sink, SinkError, publish};
use serde_json::json;
use sqlx::PgConnection;
use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// Which relay is delivering each aggregate right now, and the overlaps seen.
#[derive(Default)]
struct Active {
    holders: Mutex<HashMap<String, usize>>,
    overlaps: Mutex<Vec<String>>,
}

/// An in-process handler that records each message in `delivered` in the relay's transaction,
/// marks its aggregates as held while it works, and tells the killer when it is mid-batch.
struct Projector {
    relay: usize,
    active: Arc<Active>,
    /// Set by the killer just before it terminates this relay's backend: the batch it cuts
    /// short may still hold its marks for a moment, which is not an overlap.
    dying: Arc<Vec<AtomicBool>>,
    in_batch: Arc<Vec<AtomicBool>>,
}

impl Projector {
    fn release(&self, keys: &[String]) {
        let mut holders = self.active.holders.lock().unwrap();
        for k in keys {
            if holders.get(k) == Some(&self.relay) {
                holders.remove(k);
            }
        }
    }
}

impl Sink for Projector {
    fn name(&self) -> &str {
        "projector"
    }

    async fn deliver(&self, conn: &mut PgConnection, batch: &[Message]) -> Result<(), SinkError> {
        // A new batch means the one a kill cut short has ended.
        self.dying[self.relay].store(false, Ordering::SeqCst);
        let mut keys: Vec<String> = batch.iter().map(|m| m.aggregate_id.clone()).collect();
        keys.dedup();
        {
            let mut holders = self.active.holders.lock().unwrap();
            for k in &keys {
                if let Some(&other) = holders.get(k)
                    && other != self.relay
                    && !self.dying[other].load(Ordering::SeqCst)
                {
                    self.active
                        .overlaps
                        .lock()
                        .unwrap()
                        .push(format!("{k}: relays {other} and {}", self.relay));
                }
                holders.insert(k.clone(), self.relay);
            }
        }
        self.in_batch[self.relay].store(true, Ordering::SeqCst);
        let mut result = Ok(());
        for (i, m) in batch.iter().enumerate() {
            if i % 10 == 0 {
                // Batches take a while, so kills land inside them.
                tokio::time::sleep(Duration::from_millis(3)).await;
            }
            let r = sqlx::query(
                "INSERT INTO public.delivered (message_id, aggregate_id, n, relay) VALUES ($1, $2, $3, $4)",
            )
            .bind(m.id.0)
            .bind(&m.aggregate_id)
            .bind(m.payload["n"].as_i64())
            .bind(self.relay as i32)
            .execute(&mut *conn)
            .await;
            if let Err(e) = r {
                result = Err(e.into());
                break;
            }
        }
        self.in_batch[self.relay].store(false, Ordering::SeqCst);
        self.release(&keys);
        result
    }
}

const MESSAGES: usize = 3000;
const AGGREGATES: usize = 60;

async fn publish_all(db: &OwnDb) {
    // Each aggregate's messages numbered 1, 2, 3, ... in publish (and commit) order.
    let mut next: Vec<i64> = vec![0; AGGREGATES];
    for chunk in 0..MESSAGES / 100 {
        let mut t = tx(&db.app, db.a).await;
        for i in 0..100 {
            let k = (chunk * 100 + i) * 7 % AGGREGATES;
            next[k] += 1;
            publish::publish(
                &mut t,
                "account",
                &format!("acc-{k}"),
                "Changed",
                &json!({ "n": next[k] }),
            )
            .await
            .unwrap();
        }
        t.commit().await.unwrap();
    }
}

#[tokio::test]
async fn three_relays_share_the_keys_and_a_killed_relay_loses_nothing() {
    let db = own_db("relay_kill", &common::migrator()).await;
    sqlx::raw_sql(
        "CREATE TABLE public.delivered (seq bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY, message_id bigint NOT NULL,
                                        aggregate_id text NOT NULL, n bigint NOT NULL, relay integer NOT NULL);
         GRANT SELECT, INSERT ON public.delivered TO pgstrata_worker;",
    )
    .execute(&db.admin)
    .await
    .unwrap();
    publish_all(&db).await;

    let active = Arc::new(Active::default());
    let dying: Arc<Vec<AtomicBool>> = Arc::new((0..3).map(|_| AtomicBool::new(false)).collect());
    let in_batch: Arc<Vec<AtomicBool>> = Arc::new((0..3).map(|_| AtomicBool::new(false)).collect());
    let token = CancellationToken::new();
    let mut relays = Vec::new();
    for r in 0..3 {
        // One connection per relay, named, so the killer finds its backend.
        let pool = db.worker_pool_named(&format!("relay-{r}"), 1).await;
        let sink = Projector {
            relay: r,
            active: active.clone(),
            dying: dying.clone(),
            in_batch: in_batch.clone(),
        };
        let relay = Relay::new(pool, sink).with_config(RelayConfig {
            partitions_per_round: 4,
            batch_size: 40,
            ..RelayConfig::default()
        });
        let token = token.clone();
        relays.push(tokio::spawn(async move { relay.run(token).await }));
    }

    // Terminate a relay's backend while its sink is mid-batch, six times, round robin.
    let kills = Arc::new(AtomicUsize::new(0));
    let killer = {
        let (admin, dying, in_batch, kills) = (db.admin.clone(), dying.clone(), in_batch.clone(), kills.clone());
        tokio::spawn(async move {
            let mut victim = 0;
            while kills.load(Ordering::SeqCst) < 6 {
                if !in_batch[victim].load(Ordering::SeqCst) {
                    tokio::time::sleep(Duration::from_millis(1)).await;
                    continue;
                }
                dying[victim].store(true, Ordering::SeqCst);
                let killed: Option<bool> = sqlx::query_scalar(
                    "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name = $1",
                )
                .bind(format!("relay-{victim}"))
                .fetch_optional(&admin)
                .await
                .unwrap();
                if killed == Some(true) {
                    kills.fetch_add(1, Ordering::SeqCst);
                    victim = (victim + 1) % 3;
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            }
        })
    };

    let deadline = std::time::Instant::now() + Duration::from_secs(120);
    loop {
        let n: i64 = sqlx::query_scalar("SELECT count(*) FROM public.delivered")
            .fetch_one(&db.admin)
            .await
            .unwrap();
        if n as usize >= MESSAGES || std::time::Instant::now() > deadline {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    killer.abort();
    token.cancel();
    for r in relays {
        r.await.unwrap().unwrap();
    }
    assert!(kills.load(Ordering::SeqCst) >= 1, "no relay was killed mid-batch");
    eprintln!("{} relay backends terminated mid-batch", kills.load(Ordering::SeqCst));

    let overlaps = active.overlaps.lock().unwrap().clone();
    assert!(
        overlaps.is_empty(),
        "aggregates delivered by two relays at once: {overlaps:?}"
    );

    // Every message exactly once, each aggregate's in order; the work was shared.
    let rows: Vec<(i64, String, i64, i32)> =
        sqlx::query_as("SELECT message_id, aggregate_id, n, relay FROM public.delivered ORDER BY seq")
            .fetch_all(&db.admin)
            .await
            .unwrap();
    assert_eq!(rows.len(), MESSAGES, "messages lost or delivered twice");
    let mut ids: Vec<i64> = rows.iter().map(|r| r.0).collect();
    ids.sort_unstable();
    ids.dedup();
    assert_eq!(ids.len(), MESSAGES, "a message was delivered twice");
    let mut per_key: BTreeMap<String, Vec<i64>> = BTreeMap::new();
    let mut per_relay = [0usize; 3];
    for (_, key, n, relay) in rows {
        per_key.entry(key).or_default().push(n);
        per_relay[relay as usize] += 1;
    }
    for (key, ns) in per_key {
        let want: Vec<i64> = (1..=ns.len() as i64).collect();
        assert_eq!(ns, want, "{key} delivered out of order");
    }
    assert!(
        per_relay.iter().all(|&n| n > 0),
        "a relay delivered nothing: {per_relay:?}"
    );
}
