//! The hash chain: sealing under concurrent writers, and verify locating tampering.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::{fixture, invoice, seal_all, tx};
use pgstrata_audit::chain;
use pgstrata_core::TenantId;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

/// Every record of `tenant` sealed, seq 1..n without gaps, and verify finds nothing.
async fn assert_chain_complete(db: &pgstrata_core::testing::TestDb, tenant: TenantId) -> i64 {
    let (n, sealed, max_seq, distinct): (i64, i64, Option<i64>, i64) = sqlx::query_as(
        "SELECT count(*), count(hash), max(seq), count(DISTINCT seq) FROM audit.records WHERE tenant_id = $1",
    )
    .bind(tenant.0)
    .fetch_one(&db.admin)
    .await
    .unwrap();
    assert_eq!((sealed, max_seq, distinct), (n, Some(n), n), "tenant {tenant:?}");
    n
}

#[tokio::test]
async fn superuser_tampering_is_located_by_verify() {
    let f = fixture().await;
    for i in 0..10 {
        invoice(&f.app, f.a, &format!("A-{i}"), i).await;
    }
    for i in 0..5 {
        invoice(&f.app, f.b, &format!("B-{i}"), i).await;
    }
    seal_all(&f.db).await;
    let mut admin = f.db.admin_conn().await.unwrap();
    assert_eq!(chain::verify(&mut admin, None).await.unwrap(), vec![]);

    // A superuser edits A's 5th record past the triggers.
    let (victim, victim_seq): (i64, i64) =
        sqlx::query_as("SELECT id, seq FROM audit.records WHERE tenant_id = $1 AND seq = 5")
            .bind(f.a.0)
            .fetch_one(&mut admin)
            .await
            .unwrap();
    sqlx::raw_sql("SET session_replication_role = replica")
        .execute(&mut admin)
        .await
        .unwrap();
    sqlx::query("UPDATE audit.records SET new_values = jsonb_set(new_values, '{amount}', '1000000') WHERE id = $1")
        .bind(victim)
        .execute(&mut admin)
        .await
        .unwrap();
    // ...and deletes B's 3rd.
    sqlx::query("DELETE FROM audit.records WHERE tenant_id = $1 AND seq = 3")
        .bind(f.b.0)
        .execute(&mut admin)
        .await
        .unwrap();
    sqlx::raw_sql("RESET session_replication_role")
        .execute(&mut admin)
        .await
        .unwrap();

    let broken = chain::verify(&mut admin, Some(f.a)).await.unwrap();
    assert_eq!(broken.len(), 1, "{broken:?}");
    assert_eq!(
        (broken[0].tenant_id, broken[0].id, broken[0].seq),
        (f.a, Some(victim), victim_seq)
    );
    assert_eq!(broken[0].problem, "content does not match its hash");

    let all = chain::verify(&mut admin, None).await.unwrap();
    assert_eq!(all.len(), 2, "{all:?}");
    let of_b = all.iter().find(|b| b.tenant_id == f.b).unwrap();
    assert_eq!(of_b.seq, 4, "the link after the gap: {of_b:?}");
    assert_eq!(of_b.problem, "records 3 to 3 are missing");

    // A record re-hashed to match its new content breaks the next link instead.
    sqlx::raw_sql("SET session_replication_role = replica")
        .execute(&mut admin)
        .await
        .unwrap();
    sqlx::query(
        "UPDATE audit.records l SET hash = audit.link_hash(l.prev_hash, l.seq,
             audit.content(l.tenant_id, l.id, l.occurred_at, l.txid, l.actor_id, l.request_id, l.action,
                           l.resource_type, l.resource_id, l.old_values, l.new_values, l.details, l.origin))
          WHERE l.id = $1",
    )
    .bind(victim)
    .execute(&mut admin)
    .await
    .unwrap();
    sqlx::raw_sql("RESET session_replication_role")
        .execute(&mut admin)
        .await
        .unwrap();
    let broken = chain::verify(&mut admin, Some(f.a)).await.unwrap();
    assert_eq!(broken.len(), 1, "{broken:?}");
    assert_eq!(broken[0].seq, victim_seq + 1);
    assert_eq!(broken[0].problem, "prev_hash is not the previous record's hash");
    drop(admin);
    f.app.close().await;
    f.db.close().await.unwrap();
}

#[tokio::test]
async fn chain_stays_valid_under_8_concurrent_writers() {
    const WRITERS: usize = 8;
    const TXS: usize = 40;
    let f = fixture().await;
    let ids = [invoice(&f.app, f.a, "A", 0).await, invoice(&f.app, f.b, "B", 0).await];

    // A sealer runs the whole time, as it would in production.
    let stop = Arc::new(AtomicBool::new(false));
    let sealer = {
        let pool = f.db.admin.clone();
        let stop = stop.clone();
        tokio::spawn(async move {
            let mut rounds = 0;
            while !stop.load(Ordering::Relaxed) {
                let mut conn = pool.acquire().await.unwrap();
                chain::seal(&mut conn, 50).await.unwrap();
                rounds += 1;
                tokio::time::sleep(std::time::Duration::from_millis(5)).await;
            }
            rounds
        })
    };
    let mut writers = Vec::new();
    for w in 0..WRITERS {
        let pool = f.app.clone();
        let (tenant, id) = if w % 2 == 0 { (f.a, ids[0]) } else { (f.b, ids[1]) };
        writers.push(tokio::spawn(async move {
            for i in 0..TXS {
                let mut t = tx(&pool, tenant, None, None).await;
                // Every writer updates the same row of its tenant (row-locked, one at a time)
                // and also inserts one of its own (not locked), so commits interleave.
                sqlx::query("UPDATE billing.invoices SET amount = amount + 1 WHERE id = $1")
                    .bind(id)
                    .execute(&mut *t)
                    .await
                    .unwrap();
                sqlx::query("INSERT INTO billing.invoices (tenant_id, number, amount) VALUES ($1, $2, $3)")
                    .bind(tenant.0)
                    .bind(format!("W{w}-{i}"))
                    .bind(i as i64)
                    .execute(&mut *t)
                    .await
                    .unwrap();
                if i % 10 == 9 {
                    t.rollback().await.unwrap(); // rolled-back records never enter a chain
                } else {
                    t.commit().await.unwrap();
                }
            }
        }));
    }
    // A transaction that stays open across several seal rounds: its record is invisible to
    // them and must be chained by a later round, not skipped.
    let mut slow = tx(&f.app, f.a, None, Some("slow")).await;
    sqlx::query("INSERT INTO billing.invoices (tenant_id, number, amount) VALUES ($1, 'slow', 1)")
        .bind(f.a.0)
        .execute(&mut *slow)
        .await
        .unwrap();
    for w in writers {
        w.await.unwrap();
    }
    slow.commit().await.unwrap();
    stop.store(true, Ordering::Relaxed);
    let rounds = sealer.await.unwrap();
    assert!(rounds > 1, "the sealer ran concurrently with the writers");
    seal_all(&f.db).await;

    let per_tenant = (WRITERS / 2) * (TXS - TXS / 10) * 2;
    // Tenant creation, the first invoice, then every committed update and insert (+ the slow one).
    assert_eq!(assert_chain_complete(&f.db, f.a).await, 2 + per_tenant as i64 + 1);
    assert_eq!(assert_chain_complete(&f.db, f.b).await, 2 + per_tenant as i64);
    let slow_seq: i64 = sqlx::query_scalar("SELECT seq FROM audit.records WHERE request_id = 'slow'")
        .fetch_one(&f.db.admin)
        .await
        .unwrap();
    assert!(slow_seq > 1);
    let mut admin = f.db.admin_conn().await.unwrap();
    assert_eq!(chain::verify(&mut admin, None).await.unwrap(), vec![]);
    // The heads are the last links.
    let heads: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM audit.chain_heads h JOIN audit.records r
            ON r.tenant_id = h.tenant_id AND r.seq = h.seq AND r.hash = h.hash",
    )
    .fetch_one(&mut admin)
    .await
    .unwrap();
    assert_eq!(heads, 2);
    drop(admin);
    f.app.close().await;
    f.db.close().await.unwrap();
}

#[tokio::test]
async fn sealer_loop_seals_within_its_interval() {
    let f = fixture().await;
    invoice(&f.app, f.a, "A", 1).await;
    let sealer = chain::Sealer::new(
        f.db.admin.clone(),
        chain::SealerConfig {
            interval: std::time::Duration::from_millis(50),
            batch: 100,
        },
    );
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let handle = tokio::spawn(sealer.run(async {
        let _ = stop_rx.await;
    }));
    invoice(&f.app, f.a, "B", 2).await;
    // Wait (bounded) for the record to be sealed by the loop, not by the test.
    let mut unsealed = 1i64;
    for _ in 0..100 {
        unsealed = sqlx::query_scalar("SELECT count(*) FROM audit.records WHERE hash IS NULL")
            .fetch_one(&f.db.admin)
            .await
            .unwrap();
        if unsealed == 0 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    assert_eq!(unsealed, 0);
    stop_tx.send(()).unwrap();
    let stats = handle.await.unwrap();
    assert_eq!(stats.sealed, 4, "two tenants and two invoices");
    assert_eq!((stats.blocked_rounds, stats.failed_rounds), (0, 0), "{stats:?}");
    f.app.close().await;
    f.db.close().await.unwrap();
}
