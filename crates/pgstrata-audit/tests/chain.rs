//! The hash chain: sealing under concurrent writers, and verify locating tampering.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::{fixture, invoice, seal_all, tx};
use pgstrata_audit::chain;
use pgstrata_core::TenantId;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

/// Every record of `tenant` sealed, seq 1..n without gaps.
async fn assert_chain_complete(db: &pgstrata_core::testing::TestDb, tenant: TenantId) -> i64 {
    let (n, sealed, max_seq, distinct): (i64, i64, Option<i64>, i64) = sqlx::query_as(
        "SELECT count(*), count(k.seq), max(k.seq), count(DISTINCT k.seq)
           FROM audit.records r LEFT JOIN audit.links k ON k.tenant_id = r.tenant_id AND k.id = r.id
          WHERE r.tenant_id = $1",
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
    let (victim, victim_seq): (pgstrata_audit::RecordId, i64) =
        sqlx::query_as("SELECT id, seq FROM audit.links WHERE tenant_id = $1 AND seq = 5")
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
    sqlx::query("DELETE FROM audit.records WHERE id = (SELECT id FROM audit.links WHERE tenant_id = $1 AND seq = 3)")
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

    // A link re-hashed in its seal to match the new content: the next link breaks instead.
    sqlx::raw_sql("SET session_replication_role = replica")
        .execute(&mut admin)
        .await
        .unwrap();
    sqlx::query(
        "UPDATE audit.seals s
            SET hashes[k.seq - s.first_seq + 1] = audit.link_hash(k.prev_hash, k.seq,
                    audit.content(l.tenant_id, l.id, l.occurred_at, l.txid, l.actor_id, l.request_id, l.action,
                                  l.resource_type, l.resource_id, l.old_values, l.new_values, l.details, l.origin))
           FROM audit.links k JOIN audit.records l ON l.tenant_id = k.tenant_id AND l.id = k.id
          WHERE l.id = $1 AND s.tenant_id = k.tenant_id
            AND k.seq BETWEEN s.first_seq AND s.first_seq + cardinality(s.record_ids) - 1",
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
    // Inside a seal the next link is computed from this one's hash, so the next link no
    // longer matches (across seals, its prev_hash would not).
    assert_eq!(broken[0].seq, victim_seq + 1);
    assert_eq!(broken[0].problem, "content does not match its hash");
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
    let slow_seq: i64 = sqlx::query_scalar(
        "SELECT k.seq FROM audit.links k JOIN audit.records r ON r.id = k.id WHERE r.request_id = 'slow'",
    )
    .fetch_one(&f.db.admin)
    .await
    .unwrap();
    assert!(slow_seq > 1);
    let mut admin = f.db.admin_conn().await.unwrap();
    assert_eq!(chain::verify(&mut admin, None).await.unwrap(), vec![]);
    // The heads are the last links.
    let heads: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM audit.chain_heads h JOIN audit.links k
            ON k.tenant_id = h.tenant_id AND k.seq = h.seq AND k.hash = h.hash",
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
    let stop = pgstrata_core::CancellationToken::new();
    let handle = tokio::spawn(sealer.run(stop.clone()));
    invoice(&f.app, f.a, "B", 2).await;
    // Wait (bounded) for the record to be sealed by the loop, not by the test.
    let mut unsealed = 1i64;
    for _ in 0..100 {
        unsealed = sqlx::query_scalar("SELECT unsealed FROM audit.unsealed()")
            .fetch_one(&f.db.admin)
            .await
            .unwrap();
        if unsealed == 0 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    assert_eq!(unsealed, 0);
    stop.cancel();
    let stats = handle.await.unwrap();
    assert_eq!(stats.sealed, 4, "two tenants and two invoices");
    assert_eq!((stats.blocked_rounds, stats.failed_rounds), (0, 0), "{stats:?}");
    f.app.close().await;
    f.db.close().await.unwrap();
}

/// A cancelled sealer seals once more before it returns: records committed since its last
/// round do not wait for the next sealer. Started with its token already cancelled, a sealer
/// runs exactly that last round (its interval, an hour, never elapses).
#[tokio::test]
async fn a_cancelled_sealer_runs_one_last_round() {
    let f = fixture().await;
    invoice(&f.app, f.a, "A", 1).await;
    let config = chain::SealerConfig {
        interval: std::time::Duration::from_secs(3600),
        batch: 100,
    };
    let cancelled = pgstrata_core::CancellationToken::new();
    cancelled.cancel();
    // A round seals the transactions older than every running one of this database; the
    // harness's own come and go, so a round may find nothing yet (bounded retries).
    let mut sealed = 0;
    for _ in 0..100 {
        let stats = tokio::time::timeout(
            std::time::Duration::from_secs(60),
            chain::Sealer::new(f.db.admin.clone(), config).run(cancelled.clone()),
        )
        .await
        .expect("a cancelled sealer returns after one round");
        assert_eq!((stats.blocked_rounds, stats.failed_rounds), (0, 0), "{stats:?}");
        sealed += stats.sealed;
        if sealed == 3 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    assert_eq!(sealed, 3, "two tenants and one invoice");
    let mut admin = f.db.admin_conn().await.unwrap();
    assert_eq!(chain::unsealed(&mut admin).await.unwrap().unsealed, 0);
    drop(admin);
    f.app.close().await;
    f.db.close().await.unwrap();
}

/// Sealing appends links beside the records: no record is rewritten (its tuple, xmin
/// included, is the one the writer inserted), and the records' own chain columns stay empty.
#[tokio::test]
async fn sealing_never_rewrites_a_record() {
    let f = fixture().await;
    for i in 0..5 {
        invoice(&f.app, f.a, &format!("A-{i}"), i).await;
    }
    let before: Vec<(i64, String)> =
        sqlx::query_as("SELECT id, xmin::text || '/' || ctid::text FROM audit.records ORDER BY id")
            .fetch_all(&f.db.admin)
            .await
            .unwrap();
    assert_eq!(seal_all(&f.db).await, before.len() as i64);
    let after: Vec<(i64, String)> =
        sqlx::query_as("SELECT id, xmin::text || '/' || ctid::text FROM audit.records ORDER BY id")
            .fetch_all(&f.db.admin)
            .await
            .unwrap();
    assert_eq!(before, after);
    let own_columns: i64 = sqlx::query_scalar("SELECT count(*) FROM audit.records WHERE hash IS NOT NULL")
        .fetch_one(&f.db.admin)
        .await
        .unwrap();
    assert_eq!(own_columns, 0);
    assert_chain_complete(&f.db, f.a).await;
    let mut admin = f.db.admin_conn().await.unwrap();
    assert_eq!(chain::verify(&mut admin, None).await.unwrap(), vec![]);
    drop(admin);
    f.app.close().await;
    f.db.close().await.unwrap();
}

/// An install sealed by audit V2 (chain columns on the records) moves to V3 with records
/// still unsealed: they are sealed into audit.seals, each chain goes on from its V2 head, and
/// verify walks both. Going back down writes the seals into the records again.
#[tokio::test]
async fn chains_sealed_before_v3_go_on_across_the_upgrade_and_back() {
    use pgstrata_core::testing::TestDb;
    let migrator = common::migrator();
    let db = TestDb::new().await.unwrap();
    let mut admin = db.admin_conn().await.unwrap();
    migrator.up_to(&mut admin, None, Some(2)).await.unwrap();
    migrator.up_to(&mut admin, Some("audit"), Some(2)).await.unwrap();
    let tenant = TenantId(uuid::Uuid::now_v7());
    sqlx::query("INSERT INTO tenancy.tenants (id, slug, name) VALUES ($1, 'upgrade', 'Upgrade')")
        .bind(tenant.0)
        .execute(&mut admin)
        .await
        .unwrap();
    event(&mut admin, tenant, "v2.sealed").await;
    chain::seal(&mut admin, 100).await.unwrap();
    event(&mut admin, tenant, "v2.unsealed").await;
    let v2_head: i64 = sqlx::query_scalar("SELECT seq FROM audit.chain_heads WHERE tenant_id = $1")
        .bind(tenant.0)
        .fetch_one(&mut admin)
        .await
        .unwrap();
    assert_eq!(v2_head, 2, "the tenant's creation and one event");

    migrator.up(&mut admin).await.unwrap();
    event(&mut admin, tenant, "v3.event").await;
    sqlx::raw_sql("RESET app.tenant_id").execute(&mut admin).await.unwrap();
    // A transaction of a test running beside this one can hold sealing back until it ends
    // (sealing waits, it never skips): seal until both records are in, for at most 10 s.
    let mut sealed = 0;
    for _ in 0..100 {
        sealed += chain::seal(&mut admin, 100).await.unwrap();
        if sealed >= 2 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    assert_eq!(sealed, 2);
    let links: Vec<(i64, String)> = sqlx::query_as(
        "SELECT k.seq, r.action FROM audit.links k JOIN audit.records r ON r.id = k.id
          WHERE k.tenant_id = $1 ORDER BY k.seq",
    )
    .bind(tenant.0)
    .fetch_all(&mut admin)
    .await
    .unwrap();
    assert_eq!(
        links,
        vec![
            (1, "insert".to_owned()),
            (2, "v2.sealed".to_owned()),
            (3, "v2.unsealed".to_owned()),
            (4, "v3.event".to_owned())
        ]
    );
    assert_eq!(chain::verify(&mut admin, None).await.unwrap(), vec![]);

    migrator.down(&mut admin, Some("audit"), 2).await.unwrap();
    let (sealed, max_seq): (i64, Option<i64>) =
        sqlx::query_as("SELECT count(hash), max(seq) FROM audit.records WHERE tenant_id = $1")
            .bind(tenant.0)
            .fetch_one(&mut admin)
            .await
            .unwrap();
    assert_eq!((sealed, max_seq), (4, Some(4)));
    assert_eq!(chain::verify(&mut admin, None).await.unwrap(), vec![]);
    drop(admin);
    db.close().await.unwrap();
}

/// An application event in `tenant`, recorded on a session-level context.
async fn event(admin: &mut sqlx::PgConnection, tenant: TenantId, action: &str) {
    sqlx::query("SELECT set_config('app.tenant_id', $1, false), audit.record($2, 'thing')")
        .bind(tenant.0.to_string())
        .bind(action)
        .execute(admin)
        .await
        .unwrap();
}

/// The sealer's horizon: a writing transaction still open in this database holds back every
/// record after it (sealing it later would put it behind the sealer's position), while one
/// open in another database of the same server does not.
#[tokio::test]
async fn an_open_transaction_holds_back_sealing_only_in_its_own_database() {
    use sqlx::Connection;
    let f = fixture().await;
    let elsewhere_url =
        pgstrata_core::testing::with_database(&pgstrata_core::testing::server_url().unwrap(), "postgres");
    let mut elsewhere = sqlx::PgConnection::connect(&elsewhere_url).await.unwrap();
    let mut other_db_tx = elsewhere.begin().await.unwrap();
    sqlx::query("SELECT pg_current_xact_id()")
        .execute(&mut *other_db_tx)
        .await
        .unwrap();
    seal_all(&f.db).await;
    invoice(&f.app, f.a, "after-other-db", 1).await;
    seal_all(&f.db).await; // would not return while the other database's transaction is open

    // Now one in this database: an invoice written, not committed.
    let mut open = tx(&f.app, f.a, None, Some("open")).await;
    sqlx::query("INSERT INTO billing.invoices (tenant_id, number, amount) VALUES ($1, 'open', 1)")
        .bind(f.a.0)
        .execute(&mut *open)
        .await
        .unwrap();
    invoice(&f.app, f.a, "committed-later", 2).await;
    let mut conn = f.db.admin.acquire().await.unwrap();
    assert_eq!(
        chain::seal(&mut conn, 100).await.unwrap(),
        0,
        "held back by the open transaction"
    );
    assert_eq!(chain::unsealed(&mut conn).await.unwrap().unsealed, 1);
    open.commit().await.unwrap();
    seal_all(&f.db).await;
    // Both sealed, the older transaction's record first.
    let numbers: Vec<serde_json::Value> = sqlx::query_scalar(
        "SELECT r.new_values -> 'number' FROM audit.links k JOIN audit.records r ON r.id = k.id
          WHERE r.tenant_id = $1 AND r.resource_type = 'billing.invoices' ORDER BY k.seq",
    )
    .bind(f.a.0)
    .fetch_all(&mut *conn)
    .await
    .unwrap();
    assert_eq!(
        numbers,
        vec![
            serde_json::json!("after-other-db"),
            serde_json::json!("open"),
            serde_json::json!("committed-later")
        ]
    );
    other_db_tx.rollback().await.unwrap();
    drop(conn);
    f.app.close().await;
    f.db.close().await.unwrap();
}

/// A sealer whose rounds fail (here: a database without the audit schema) says so in the log
/// even when nobody passed a callback, and keeps counting the failures.
#[tokio::test]
async fn a_sealer_logs_the_rounds_it_cannot_run() {
    use pgstrata_audit::{Sealer, SealerConfig};
    use pgstrata_core::CancellationToken;
    use pgstrata_core::testing::TestDb;
    use pgstrata_core::testing::logs::CapturedLogs;
    let db = TestDb::new().await.unwrap();
    let (logs, _guard) = CapturedLogs::start();
    let token = CancellationToken::new();
    let stop = token.clone();
    let config = SealerConfig {
        interval: std::time::Duration::from_millis(20),
        ..SealerConfig::default()
    };
    let sealer = Sealer::new(db.admin.clone(), config);
    let (stats, ()) = tokio::join!(sealer.run(token), async {
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
        stop.cancel();
    });
    assert!(stats.failed_rounds >= 2, "{stats:?}");
    let failures = logs.matching(&["WARN", "audit seal round failed"]);
    assert_eq!(failures.len() as u64, stats.failed_rounds, "{:#?}", logs.lines());
    db.close().await.unwrap();
}
