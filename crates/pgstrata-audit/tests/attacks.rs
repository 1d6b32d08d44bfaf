//! The audit log attacked as unprivileged login roles, against a superuser-owned and a
//! non-superuser-owned install: blocking the sealer, forging captured records, oversize values,
//! removing records behind the triggers (the superuser with triggers off: verify must say so),
//! and running one's own code as the owner through the definer functions.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::{Fixture, code, fixture_by, invoice, tx};
use pgstrata_audit::{Error, MaintainAction, chain};
use pgstrata_core::testing::{
    APP_LOGIN_ROLE, OPERATOR_LOGIN_ROLE, Owner, TestDb, WORKER_LOGIN_ROLE, ensure_login_role,
};
use pgstrata_core::{TenantId, UserId};
use sqlx::{ConnectOptions, Connection, PgConnection, PgPool};
use uuid::Uuid;

const NOBODY: &str = "pgstrata_test_nobody";

async fn login(db: &TestDb, role: &str) -> PgConnection {
    db.login_options(role).connect().await.unwrap()
}

async fn worker(db: &TestDb) -> PgConnection {
    login(db, WORKER_LOGIN_ROLE).await
}

/// Seals everything committed, as the worker role. A round seals only records of
/// transactions older than every running one in the cluster (other tests' come and go), so
/// it retries, bounded, until nothing is left.
async fn seal_as_worker(db: &TestDb) -> i64 {
    let mut conn = worker(db).await;
    let mut total = 0i64;
    for _ in 0..1000 {
        let n = chain::seal(&mut conn, 1000).await.unwrap();
        total += i64::from(n);
        if n < 1000 && unsealed(db).await == 0 {
            return total;
        }
        if n < 1000 {
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
    }
    panic!("records stayed unsealed for 10 s");
}

async fn unsealed(db: &TestDb) -> i64 {
    sqlx::query_scalar("SELECT unsealed FROM audit.unsealed()")
        .fetch_one(&db.admin)
        .await
        .unwrap()
}

/// Runs `round` until it has sealed `expected` records in all (bounded, as above).
async fn sealed_eventually<F, Fut>(expected: i64, mut round: F) -> i64
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = i64>,
{
    let mut total = 0;
    for _ in 0..1000 {
        total += round().await;
        if total >= expected {
            return total;
        }
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    total
}

async fn close(f: Fixture) {
    f.app.close().await;
    f.db.close().await.unwrap();
}

/// Class 6: the sealer's lock. Neither a role without privileges nor the application role can
/// take it; the advisory key V1 used no longer matters; a second real sealer is told, not
/// silently given 0.
#[tokio::test]
async fn no_other_role_can_hold_or_block_the_sealers_lock() {
    for owner in Owner::BOTH {
        let f = fixture_by(owner).await;
        ensure_login_role(&mut f.db.admin.acquire().await.unwrap(), NOBODY, "")
            .await
            .unwrap();
        invoice(&f.app, f.a, "A-1", 1).await;

        // Both attackers hold V1's advisory key for their whole session, and try the row lock
        // and a table lock inside an open transaction.
        let mut attackers = Vec::new();
        for role in [NOBODY, APP_LOGIN_ROLE] {
            let mut conn = login(&f.db, role).await;
            sqlx::query("SELECT pg_try_advisory_lock(hashtextextended('pgstrata.audit.seal', 0))")
                .execute(&mut conn)
                .await
                .unwrap();
            for statement in [
                "SELECT 1 FROM audit.seal_locks FOR UPDATE",
                "SELECT 1 FROM audit.seal_locks FOR KEY SHARE",
                "LOCK TABLE audit.seal_locks IN ACCESS SHARE MODE",
                "LOCK TABLE audit.records IN SHARE MODE",
                "SELECT 1 FROM audit.chain_heads FOR UPDATE",
                "SELECT audit.seal()",
            ] {
                let mut t = conn.begin().await.unwrap();
                let r = sqlx::raw_sql(statement).execute(&mut *t).await;
                assert_eq!(code(r), "42501", "{owner:?} {role}: {statement}");
                t.rollback().await.unwrap();
            }
            // Then each keeps a transaction open holding what it may: V1's key at transaction
            // level too, and (the application role) the log and the heads for reading.
            let hold = if role == APP_LOGIN_ROLE {
                "BEGIN; SELECT pg_try_advisory_xact_lock(hashtextextended('pgstrata.audit.seal', 0));
                 LOCK TABLE audit.records IN ACCESS SHARE MODE; LOCK TABLE audit.chain_heads IN ACCESS SHARE MODE;"
            } else {
                "BEGIN; SELECT pg_try_advisory_xact_lock(hashtextextended('pgstrata.audit.seal', 0));"
            };
            sqlx::raw_sql(hold).execute(&mut conn).await.unwrap();
            attackers.push(conn);
        }

        // The worker seals regardless, while both attackers still hold everything they could.
        let sealer = chain::Sealer::new(f.db.pool_as(WORKER_LOGIN_ROLE, 2).await.unwrap(), Default::default());
        let sealed = sealed_eventually(3, || async { sealer.round().await.unwrap() as i64 }).await;
        assert_eq!(
            sealed, 3,
            "{owner:?}: the two tenants' records and the invoice's are sealed"
        );
        assert_eq!(unsealed(&f.db).await, 0, "{owner:?}");
        drop(attackers);

        // A second sealer while one holds the lock: a typed error, not a silent 0.
        invoice(&f.app, f.b, "B-1", 1).await;
        let mut first = worker(&f.db).await;
        let mut holding = first.begin().await.unwrap();
        let mut first_round = 0;
        for _ in 0..1000 {
            first_round = chain::seal(&mut holding, 10).await.unwrap();
            if first_round > 0 {
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
        assert_eq!(first_round, 1);
        invoice(&f.app, f.b, "B-2", 2).await;
        let mut second = worker(&f.db).await;
        let busy = chain::seal(&mut second, 10).await;
        assert!(matches!(busy, Err(Error::SealerBusy { .. })), "{owner:?}: {busy:?}");
        // The background loop reports it through its stats and its error callback.
        let stop = pgstrata_core::CancellationToken::new();
        let looping = chain::Sealer::new(
            f.db.pool_as(WORKER_LOGIN_ROLE, 1).await.unwrap(),
            chain::SealerConfig {
                interval: std::time::Duration::from_millis(20),
                batch: 100,
            },
        );
        let seen = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0));
        let counted = seen.clone();
        let handle = tokio::spawn(looping.run_reporting(stop.clone(), move |e| {
            if matches!(e, Error::SealerBusy { .. }) {
                counted.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            }
        }));
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
        holding.commit().await.unwrap();
        for _ in 0..1000 {
            if unsealed(&f.db).await == 0 {
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
        stop.cancel();
        let stats = handle.await.unwrap();
        assert!(stats.blocked_rounds > 0, "{owner:?}: {stats:?}");
        assert_eq!(seen.load(std::sync::atomic::Ordering::Relaxed), stats.blocked_rounds);
        assert_eq!(
            stats.sealed, 1,
            "{owner:?}: once the lock was free, B-2 was sealed: {stats:?}"
        );
        assert_eq!(unsealed(&f.db).await, 0);
        let mut op = login(&f.db, OPERATOR_LOGIN_ROLE).await;
        assert_eq!(chain::verify(&mut op, None).await.unwrap(), vec![], "{owner:?}");
        drop((first, second, op));
        close(f).await;
    }
}

/// Class 8: only the capture trigger writes captured records and only audit.record writes
/// events; the application role can neither insert records nor attach the trigger to a table
/// of its own, and what audit.record writes is marked as an event with the real actor.
#[tokio::test]
async fn the_app_role_cannot_forge_a_captured_record() {
    for owner in Owner::BOTH {
        let f = fixture_by(owner).await;
        let actor = UserId(Uuid::now_v7());
        let spoofed = Uuid::now_v7();
        let grant = serde_json::json!({"tenant_id": f.a.0, "user_id": spoofed, "role_id": "owner"});

        let mut t = tx(&f.app, f.a, Some(actor), None).await;
        for statement in [
            // Straight into the log, with made-up rbac.grants values and a spoofed actor.
            format!(
                "INSERT INTO audit.records (tenant_id, action, resource_type, resource_id, new_values, actor_id, origin)
                 VALUES ('{}', 'insert', 'rbac.grants', 'x', '{grant}', '{spoofed}', 'capture')",
                f.a.0
            ),
            format!(
                "INSERT INTO audit.records (tenant_id, action, resource_type, new_values) VALUES ('{}', 'insert', 'rbac.grants', '{grant}')",
                f.a.0
            ),
            // The capture trigger on a table of its own, named like the real one.
            "CREATE TEMP TABLE grants (tenant_id uuid, id uuid PRIMARY KEY, user_id uuid);
             CREATE TRIGGER audit_capture AFTER INSERT ON pg_temp.grants
                 FOR EACH ROW EXECUTE FUNCTION audit.capture('column', '{id}', '{}', '{}')"
                .to_owned(),
            // A trigger function of its own that writes the record.
            "CREATE FUNCTION pg_temp.forge() RETURNS trigger LANGUAGE plpgsql AS $f$
             BEGIN
                 INSERT INTO audit.records (tenant_id, action, resource_type, new_values)
                 VALUES (NEW.tenant_id, 'insert', 'rbac.grants', to_jsonb(NEW));
                 RETURN NULL;
             END $f$;
             CREATE TEMP TABLE grants2 (tenant_id uuid, id uuid PRIMARY KEY);
             CREATE TRIGGER forge AFTER INSERT ON pg_temp.grants2 FOR EACH ROW EXECUTE FUNCTION pg_temp.forge();
             INSERT INTO pg_temp.grants2 VALUES (tenancy.current_tenant_id(), gen_random_uuid());"
                .to_owned(),
        ] {
            let mut sp = t.begin().await.unwrap();
            let r = sqlx::raw_sql(sqlx::AssertSqlSafe(statement.clone()))
                .execute(&mut *sp)
                .await;
            assert_eq!(code(r.map(drop)), "42501", "{owner:?}: {statement}");
            sp.rollback().await.unwrap();
        }
        // What audit.record writes under a captured-looking name is an event, by the actor in
        // context, at the transaction's time.
        let id: pgstrata_audit::RecordId = sqlx::query_scalar("SELECT audit.record('insert', 'rbac.grants', 'x', $1)")
            .bind(&grant)
            .fetch_one(&mut *t)
            .await
            .unwrap();
        t.commit().await.unwrap();
        invoice(&f.app, f.a, "A-1", 1).await;

        let rows: Vec<(pgstrata_audit::RecordId, String, String, Option<Uuid>, bool)> = sqlx::query_as(
            "SELECT id, resource_type, origin, actor_id, occurred_at > now() - interval '1 minute'
               FROM audit.records WHERE tenant_id = $1 AND resource_type <> 'tenancy.tenants' ORDER BY id",
        )
        .bind(f.a.0)
        .fetch_all(&f.db.admin)
        .await
        .unwrap();
        assert_eq!(rows.len(), 2, "{owner:?}: nothing forged got in: {rows:?}");
        assert_eq!(
            (rows[0].0, rows[0].2.as_str(), rows[0].3, rows[0].4),
            (id, "event", Some(actor.0), true),
            "{owner:?}"
        );
        assert_eq!(
            (rows[1].1.as_str(), rows[1].2.as_str()),
            ("billing.invoices", "capture"),
            "{owner:?}"
        );

        // The origin is chained: flipping it behind the triggers is reported.
        seal_as_worker(&f.db).await;
        let mut admin = f.db.admin_conn().await.unwrap();
        sqlx::raw_sql(sqlx::AssertSqlSafe(format!(
            "SET session_replication_role = replica;
             UPDATE audit.records SET origin = 'capture' WHERE id = {id};
             RESET session_replication_role;"
        )))
        .execute(&mut admin)
        .await
        .unwrap();
        let mut w = worker(&f.db).await;
        let broken = chain::verify(&mut w, Some(f.a)).await.unwrap();
        assert_eq!(broken.len(), 1, "{owner:?}: {broken:?}");
        assert_eq!(
            (broken[0].id, broken[0].problem.as_str()),
            (Some(id), "content does not match its hash")
        );
        drop((admin, w));
        close(f).await;
    }
}

/// Class 8: values have a cap; a 60 MB details, an oversize captured row, and oversize names
/// are refused with the field named, and nothing is written.
#[tokio::test]
async fn oversize_values_are_refused_naming_the_field() {
    for owner in Owner::BOTH {
        let f = fixture_by(owner).await;
        let before: i64 = sqlx::query_scalar("SELECT count(*) FROM audit.records")
            .fetch_one(&f.db.admin)
            .await
            .unwrap();

        // Through the Rust API: refused before the database.
        let big = serde_json::json!({ "blob": "x".repeat(60 * 1024 * 1024) });
        let mut t = tx(&f.app, f.a, None, None).await;
        let r = pgstrata_audit::capture::record(
            &mut t,
            &pgstrata_audit::Event::new("file.uploaded", "file").details(big.clone()),
        )
        .await;
        assert!(
            matches!(r, Err(Error::InvalidField { field: "details", .. })),
            "{owner:?}: {r:?}"
        );
        // Straight to SQL, 60 MB over the wire: 22023 naming details.
        let r = sqlx::query("SELECT audit.record('file.uploaded', 'file', NULL, $1)")
            .bind(&big)
            .execute(&mut *t)
            .await;
        let e = Error::from(r.unwrap_err());
        assert!(
            matches!(&e, Error::InvalidField { field: "details", reason } if reason.contains("at most 65536")),
            "{owner:?}: {e:?}"
        );
        t.rollback().await.unwrap();
        for (call, field) in [
            (
                "SELECT audit.record('file.uploaded', repeat('x', 201), NULL, NULL)",
                "resource_type",
            ),
            (
                "SELECT audit.record('file.uploaded', 'file', repeat('x', 501), NULL)",
                "resource_id",
            ),
            ("SELECT audit.record('File Uploaded', 'file', NULL, NULL)", "action"),
        ] {
            let mut t = tx(&f.app, f.a, None, None).await;
            let e = Error::from(sqlx::query(call).execute(&mut *t).await.unwrap_err());
            match e {
                Error::InvalidField { field: got, .. } => assert_eq!(got, field, "{owner:?} {call}"),
                other => panic!("{owner:?} {call}: {other:?}"),
            }
            t.rollback().await.unwrap();
        }

        // A captured row over 1 MiB: the business write is refused with it, naming new_values.
        let mut t = tx(&f.app, f.a, None, None).await;
        let r = sqlx::query("INSERT INTO billing.invoices (tenant_id, number, amount) VALUES ($1, $2, 1)")
            .bind(f.a.0)
            .bind(random_text(1_100_000))
            .execute(&mut *t)
            .await;
        let e = Error::from(r.unwrap_err());
        assert!(
            matches!(
                &e,
                Error::InvalidField {
                    field: "new_values",
                    ..
                }
            ),
            "{owner:?}: {e:?}"
        );
        t.rollback().await.unwrap();

        let after: i64 = sqlx::query_scalar("SELECT count(*) FROM audit.records")
            .fetch_one(&f.db.admin)
            .await
            .unwrap();
        let invoices: i64 = sqlx::query_scalar("SELECT count(*) FROM billing.invoices")
            .fetch_one(&f.db.admin)
            .await
            .unwrap();
        assert_eq!((after, invoices), (before, 0), "{owner:?}: nothing half-written");
        close(f).await;
    }
}

/// Text that compresses badly (so the cap is on the value, not on what TOAST makes of it).
fn random_text(len: usize) -> String {
    let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            char::from(b'a' + (x % 26) as u8)
        })
        .collect()
}

/// `n` audited writes in `tenant` (plus the tenant's own creation record): seq 1..=n+1.
async fn records(pool: &PgPool, tenant: TenantId, n: usize) {
    for i in 0..n {
        invoice(pool, tenant, &format!("N-{i}"), i as i64).await;
    }
}

async fn delete_behind_the_triggers(db: &TestDb, filter: &str) {
    let mut admin = db.admin_conn().await.unwrap();
    sqlx::raw_sql(sqlx::AssertSqlSafe(format!(
        "SET session_replication_role = replica;
         DELETE FROM audit.records WHERE (tenant_id, id) IN (SELECT tenant_id, id FROM audit.links WHERE {filter});
         RESET session_replication_role;"
    )))
    .execute(&mut admin)
    .await
    .unwrap();
}

/// Class 7: the superuser with triggers off removes a tenant's oldest records, some in the
/// middle, its newest, or all of them; verify, run by the worker and by the operator, reports
/// each, and leaves the untouched tenant alone.
#[tokio::test]
async fn verify_reports_records_removed_anywhere_in_a_chain() {
    for owner in Owner::BOTH {
        let f = fixture_by(owner).await;
        let start = f.a;
        let middle = f.b;
        let end = f.db.tenant("tenant-end").await.unwrap();
        let all = f.db.tenant("tenant-all").await.unwrap();
        let clean = f.db.tenant("tenant-clean").await.unwrap();
        for t in [start, middle, end, all, clean] {
            records(&f.app, t, 5).await; // seq 1 (the tenant) to 6
        }
        seal_as_worker(&f.db).await;
        let mut w = worker(&f.db).await;
        assert_eq!(chain::verify(&mut w, None).await.unwrap(), vec![], "{owner:?}");

        delete_behind_the_triggers(&f.db, &format!("tenant_id = '{}' AND seq <= 2", start.0)).await;
        delete_behind_the_triggers(&f.db, &format!("tenant_id = '{}' AND seq IN (3, 4)", middle.0)).await;
        delete_behind_the_triggers(&f.db, &format!("tenant_id = '{}' AND seq >= 5", end.0)).await;
        delete_behind_the_triggers(&f.db, &format!("tenant_id = '{}'", all.0)).await;

        let mut op = login(&f.db, OPERATOR_LOGIN_ROLE).await;
        for conn in [&mut w, &mut op] {
            let broken = chain::verify(conn, None).await.unwrap();
            let of = |t: TenantId| {
                broken
                    .iter()
                    .find(|b| b.tenant_id == t)
                    .map(|b| (b.seq, b.problem.clone()))
            };
            assert_eq!(broken.len(), 4, "{owner:?}: {broken:?}");
            assert_eq!(
                of(start),
                Some((3, "records 1 to 2 are missing (the start of the chain)".into()))
            );
            assert_eq!(of(middle), Some((5, "records 3 to 4 are missing".into())));
            assert_eq!(
                of(end),
                Some((5, "records 5 to 6 are missing (the end of the chain)".into()))
            );
            assert_eq!(
                of(all),
                Some((1, "records 1 to 6 are missing (every record of the chain)".into()))
            );
            assert_eq!(of(clean), None);
        }
        // One tenant at a time says the same.
        let one = chain::verify(&mut w, Some(all)).await.unwrap();
        assert_eq!(one.len(), 1, "{one:?}");
        // Removing the head too leaves no trace of a chain when nothing anchors it elsewhere;
        // a tenant's records without a head are reported.
        let mut admin = f.db.admin_conn().await.unwrap();
        sqlx::query("DELETE FROM audit.chain_heads WHERE tenant_id = $1")
            .bind(clean.0)
            .execute(&mut admin)
            .await
            .unwrap();
        let broken = chain::verify(&mut w, Some(clean)).await.unwrap();
        assert_eq!(broken.len(), 1, "{broken:?}");
        assert_eq!(broken[0].problem, "the chain has no head");
        // The application role may not run verify at all.
        let mut app = login(&f.db, APP_LOGIN_ROLE).await;
        let r = chain::verify(&mut app, None).await;
        assert!(
            matches!(r, Err(Error::Db(pgstrata_core::DbError::Forbidden { .. }))),
            "{r:?}"
        );
        drop((w, op, admin, app));
        close(f).await;
    }
}

/// Class 7: retention is legitimate. Dropping an old month (by the worker) records a
/// checkpoint per tenant and verify stays clean; removing the first record that survived is
/// still reported; a month with unsealed records is kept, not dropped unsealed.
#[tokio::test]
async fn retention_moves_the_checkpoint_and_verify_stays_clean() {
    for owner in Owner::BOTH {
        let f = fixture_by(owner).await;
        let mut owner_conn = f.db.owner_options().connect().await.unwrap();
        for month in ["2024-04-01", "2024-05-01"] {
            sqlx::query("SELECT audit.create_partition($1::date)")
                .bind(month)
                .execute(&mut owner_conn)
                .await
                .unwrap();
        }
        // History in April 2024 (written by the superuser with explicit times), sealed; then
        // this month's writes, sealed after it.
        for (i, tenant) in [f.a, f.a, f.b].iter().enumerate() {
            sqlx::query(
                "INSERT INTO audit.records (tenant_id, occurred_at, action, resource_type, origin)
                 VALUES ($1, '2024-04-10'::timestamptz + $2 * interval '1 day', 'user.login', 'user', 'event')",
            )
            .bind(tenant.0)
            .bind(i as i32)
            .execute(&f.db.admin)
            .await
            .unwrap();
        }
        seal_as_worker(&f.db).await;
        records(&f.app, f.a, 2).await;
        seal_as_worker(&f.db).await;
        // May 2024 holds an unsealed record: retention keeps it, and what follows it.
        sqlx::query(
            "INSERT INTO audit.records (tenant_id, occurred_at, action, resource_type, origin)
             VALUES ($1, '2024-05-02', 'user.login', 'user', 'event')",
        )
        .bind(f.b.0)
        .execute(&f.db.admin)
        .await
        .unwrap();

        let mut w = worker(&f.db).await;
        assert_eq!(chain::verify(&mut w, None).await.unwrap(), vec![], "{owner:?}");
        // Where each chain must start once April is gone: after its last April link (a round
        // chains a tenant's records month by month, so April's may come before the tenant's
        // own creation record).
        let mut expected: Vec<(Uuid, i64)> = sqlx::query_as(
            "SELECT k.tenant_id, max(k.seq) + 1 FROM audit.links k JOIN audit.records r ON r.id = k.id
              WHERE r.occurred_at < '2024-05-01' GROUP BY k.tenant_id ORDER BY 2",
        )
        .fetch_all(&f.db.admin)
        .await
        .unwrap();
        expected.sort_by_key(|e| e.1);
        assert_eq!(expected.len(), 2, "{owner:?}: both tenants have April records");
        let steps = pgstrata_audit::partitions::maintain(&mut w, Some(1), Some(1))
            .await
            .unwrap();
        let dropped: Vec<MaintainAction> = steps
            .iter()
            .filter(|s| s.action != MaintainAction::Created)
            .map(|s| s.action)
            .collect();
        assert_eq!(
            dropped,
            vec![MaintainAction::Dropped, MaintainAction::KeptUnsealed],
            "{owner:?}: {steps:?}"
        );
        let checkpoints: Vec<(Uuid, i64)> =
            sqlx::query_as("SELECT tenant_id, first_seq FROM audit.checkpoints ORDER BY first_seq")
                .fetch_all(&f.db.admin)
                .await
                .unwrap();
        assert_eq!(checkpoints, expected, "{owner:?}");
        assert_eq!(chain::verify(&mut w, None).await.unwrap(), vec![], "{owner:?}");

        // Once sealed, May goes too: B's chain is then empty and still verifies.
        seal_as_worker(&f.db).await;
        let steps = pgstrata_audit::partitions::maintain(&mut w, Some(1), Some(1))
            .await
            .unwrap();
        assert!(
            steps
                .iter()
                .any(|s| s.action == MaintainAction::Dropped && s.partition == "records_p202405"),
            "{steps:?}"
        );
        assert_eq!(chain::verify(&mut w, None).await.unwrap(), vec![], "{owner:?}");

        // The first record after A's checkpoint removed behind the triggers: reported.
        let first = expected.iter().find(|e| e.0 == f.a.0).unwrap().1;
        delete_behind_the_triggers(&f.db, &format!("tenant_id = '{}' AND seq = {first}", f.a.0)).await;
        let broken = chain::verify(&mut w, None).await.unwrap();
        assert_eq!(broken.len(), 1, "{owner:?}: {broken:?}");
        assert_eq!(
            (broken[0].tenant_id, broken[0].seq, broken[0].problem.clone()),
            (
                f.a,
                first + 1,
                format!("records {first} to {first} are missing (the start of the chain)")
            )
        );
        // Only the worker runs retention.
        let mut app = login(&f.db, APP_LOGIN_ROLE).await;
        let r = pgstrata_audit::partitions::maintain(&mut app, Some(1), Some(1)).await;
        assert!(
            matches!(r, Err(Error::Db(pgstrata_core::DbError::Forbidden { .. }))),
            "{r:?}"
        );
        drop((w, app, owner_conn));
        close(f).await;
    }
}

/// Class 1: a caller's pg_temp types shadowing the names the definer functions use (uuid, text,
/// jsonb, bytea, ...) never run as the owner: every entry point is called with them in place.
#[tokio::test]
async fn pg_temp_types_do_not_run_as_the_owner() {
    const SHADOW: &str = "
        CREATE FUNCTION pg_temp.pwn(anyelement) RETURNS boolean LANGUAGE plpgsql AS $f$
        BEGIN
            -- Harmless as the caller itself; an error as anyone else (the owner).
            IF current_user::pg_catalog.text <> session_user::pg_catalog.text THEN
                RAISE EXCEPTION 'caller code ran as %', current_user;
            END IF;
            RETURN true;
        END $f$;
        DO $d$
        DECLARE t text;
        BEGIN
            FOREACH t IN ARRAY ARRAY['uuid', 'text', 'jsonb', 'bytea', 'int8', 'bigint', 'int4', 'integer',
                                     'timestamptz', 'date', 'boolean', 'xid8', 'name', 'regclass'] LOOP
                BEGIN
                    EXECUTE format('CREATE DOMAIN pg_temp.%I AS pg_catalog.%I CHECK (pg_temp.pwn(VALUE))', t, t);
                EXCEPTION WHEN others THEN NULL; -- bigint = int8, integer = int4
                END;
            END LOOP;
        END $d$;
        CREATE TEMP TABLE records (x int);
        CREATE TEMP TABLE chain_heads (x int);
        CREATE TEMP TABLE seal_locks (x int);
        CREATE TEMP TABLE checkpoints (x int);";
    for owner in Owner::BOTH {
        let f = fixture_by(owner).await;
        invoice(&f.app, f.a, "A-0", 0).await;
        // The application role: capture (through an audited write) and record.
        let mut t = tx(&f.app, f.a, Some(UserId(Uuid::now_v7())), Some("req")).await;
        sqlx::raw_sql(SHADOW).execute(&mut *t).await.unwrap();
        sqlx::query("INSERT INTO billing.invoices (tenant_id, number, amount) VALUES ($1, 'A-1', 1)")
            .bind(f.a.0)
            .execute(&mut *t)
            .await
            .unwrap();
        sqlx::query("UPDATE billing.invoices SET amount = 2 WHERE number = 'A-1'")
            .execute(&mut *t)
            .await
            .unwrap();
        sqlx::query("SELECT audit.record('user.login', 'user', 'u', '{\"a\": 1}')")
            .execute(&mut *t)
            .await
            .unwrap();
        t.commit().await.unwrap();
        // The worker and the operator: seal, verify, unsealed, maintain.
        for role in [WORKER_LOGIN_ROLE, OPERATOR_LOGIN_ROLE] {
            let mut conn = login(&f.db, role).await;
            sqlx::raw_sql(SHADOW).execute(&mut conn).await.unwrap();
            if role == WORKER_LOGIN_ROLE {
                assert!(chain::seal(&mut conn, 100).await.unwrap() > 0);
                pgstrata_audit::partitions::maintain(&mut conn, Some(2), Some(1))
                    .await
                    .unwrap();
            }
            assert_eq!(
                chain::verify(&mut conn, None).await.unwrap(),
                vec![],
                "{owner:?} {role}"
            );
            chain::unsealed(&mut conn).await.unwrap();
        }
        let forced: bool =
            sqlx::query_scalar("SELECT relforcerowsecurity FROM pg_class WHERE oid = 'audit.records'::regclass")
                .fetch_one(&f.db.admin)
                .await
                .unwrap();
        assert!(forced);
        close(f).await;
    }
}
