//! The queue attacked as the request path: a login role holding only `pgstrata_app`, in tenant
//! B's context, against a superuser-owned and a non-superuser-owned install. Every attack must
//! fail, and the legitimate paths (enqueue for one's own tenant; a worker claims and runs the
//! job in its tenant's context) must keep working.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use pgstrata_core::migrate::Migrator;
use pgstrata_core::testing::{Owner, TestDb, WORKER_LOGIN_ROLE};
use pgstrata_core::{CancellationToken, DbError, TenantContext, TenantId, begin_tenant};
use pgstrata_queue::client::{self, NewJob};
use pgstrata_queue::worker::HandlerError;
use pgstrata_queue::{Error, Handler, JobId, JobKind, JobMeta, JobState, Periodic, Worker, WorkerConfig, periodic};
use serde::{Deserialize, Serialize};
use sqlx::{PgConnection, PgPool};
use std::time::Duration;

/// A database with tenants A and B, the application's pool and the worker's.
struct Setup {
    db: TestDb,
    app: PgPool,
    worker: PgPool,
    a: TenantId,
    b: TenantId,
}

async fn setup(owner: Owner) -> Setup {
    let migrator = Migrator::new([&pgstrata_tenancy::MODULE, &pgstrata_queue::MODULE]).unwrap();
    let db = TestDb::migrated_by(&migrator, owner).await.unwrap();
    let app = db.app_pool(4).await.unwrap();
    let worker = db.pool_as(WORKER_LOGIN_ROLE, 4).await.unwrap();
    let (a, b) = (TenantId::new(), TenantId::new());
    let mut admin = db.admin_conn().await.unwrap();
    pgstrata_tenancy::fixtures::insert_tenants(&mut admin, &[a, b])
        .await
        .unwrap();
    drop(admin);
    Setup { db, app, worker, a, b }
}

impl Setup {
    async fn tenant(&self, tenant: TenantId) -> pgstrata_core::TenantTx<'static> {
        begin_tenant(&self.app, &TenantContext::tenant(tenant)).await.unwrap()
    }

    /// A job of tenant A with a secret payload, enqueued by A's request path.
    async fn a_job(&self, kind: &str) -> JobId {
        let mut tx = self.tenant(self.a).await;
        let id = client::enqueue(&mut tx, &NewJob::new(kind, serde_json::json!({"secret": "of A"})))
            .await
            .unwrap();
        tx.commit().await.unwrap();
        id
    }

    /// A job as the superuser sees it: (tenant, state, attempt, payload).
    async fn seen_by_admin(&self, id: JobId) -> Option<(Option<uuid::Uuid>, String, i32, serde_json::Value)> {
        sqlx::query_as("SELECT tenant_id, state, attempt, payload FROM queue.jobs WHERE id = $1")
            .bind(id.0)
            .fetch_optional(&self.db.admin)
            .await
            .unwrap()
    }

    async fn close(self) {
        self.app.close().await;
        self.worker.close().await;
        self.db.close().await.unwrap();
    }
}

/// The SQLSTATE a statement failed with (panics when it succeeded).
async fn sqlstate(conn: &mut PgConnection, sql: &'static str) -> String {
    match sqlx::raw_sql(sql).execute(conn).await {
        Ok(done) => panic!("{sql}: succeeded ({} rows)", done.rows_affected()),
        Err(e) => e
            .as_database_error()
            .and_then(|d| d.code().map(|c| c.into_owned()))
            .unwrap_or_else(|| panic!("{sql}: {e}")),
    }
}

/// Runs `sql` in its own savepoint-free transaction of tenant B and returns its SQLSTATE.
async fn refused_in_b(s: &Setup, sql: &'static str) -> String {
    let mut tx = s.tenant(s.b).await;
    let code = sqlstate(&mut tx, sql).await;
    tx.rollback().await.unwrap();
    code
}

fn forbidden<T: std::fmt::Debug>(what: &str, r: Result<T, Error>) {
    match r {
        Err(Error::Db(DbError::Forbidden { .. })) => {}
        other => panic!("{what}: expected forbidden, got {other:?}"),
    }
}

fn not_found(what: &str, id: JobId, r: Result<(), Error>) {
    match r {
        Err(Error::NotFound { id: seen }) if seen == id => {}
        other => panic!("{what}: expected job {id} not found, got {other:?}"),
    }
}

/// The SQLSTATE a statement naming `tenant` as `$1` failed with (panics when it succeeded).
async fn sqlstate_naming(conn: &mut PgConnection, sql: &'static str, tenant: TenantId) -> String {
    match sqlx::query(sql).bind(tenant.0).execute(conn).await {
        Ok(done) => panic!("{sql}: succeeded ({} rows)", done.rows_affected()),
        Err(e) => e
            .as_database_error()
            .and_then(|d| d.code().map(|c| c.into_owned()))
            .unwrap_or_else(|| panic!("{sql}: {e}")),
    }
}

fn invalid<T: std::fmt::Debug>(what: &str, r: Result<T, Error>) {
    match r {
        Err(Error::Db(DbError::InvalidInput {
            ref code, ref message, ..
        })) if code == "22023" => {
            assert!(message.contains("out of range"), "{what}: {message}");
        }
        other => panic!("{what}: expected invalid input 22023, got {other:?}"),
    }
}

const SECOND: Duration = Duration::from_secs(1);

#[tokio::test]
async fn tenant_b_cannot_read_change_cancel_retry_or_delete_tenant_a_jobs() {
    for owner in Owner::BOTH {
        let s = setup(owner).await;
        let a = s.a_job("export").await;
        let a_discarded = s.a_job("import").await;
        sqlx::query("UPDATE queue.jobs SET state = 'discarded', finalized_at = now() WHERE id = $1")
            .bind(a_discarded.0)
            .execute(&s.db.admin)
            .await
            .unwrap();
        let before = (s.seen_by_admin(a).await, s.seen_by_admin(a_discarded).await);

        let mut tx = s.tenant(s.b).await;
        // Read: nothing of A's, by id, by scan or in the counts.
        assert!(client::get(&mut tx, a).await.unwrap().is_none(), "{owner:?}");
        let payloads: Vec<serde_json::Value> = sqlx::query_scalar("SELECT payload FROM queue.jobs")
            .fetch_all(&mut *tx)
            .await
            .unwrap();
        assert!(payloads.is_empty(), "{owner:?}: B read {payloads:?}");
        assert!(client::stats(&mut tx).await.unwrap().is_empty(), "{owner:?}");
        // Cancel and retry name A's ids, change nothing and find nothing.
        not_found(&format!("{owner:?}: cancel"), a, client::cancel(&mut tx, a).await);
        not_found(
            &format!("{owner:?}: retry"),
            a_discarded,
            client::retry(&mut tx, a_discarded).await,
        );
        let moved = sqlx::query("UPDATE queue.jobs SET state = 'cancelled', finalized_at = now() WHERE id = ANY($1)")
            .bind(vec![a.0, a_discarded.0])
            .execute(&mut *tx)
            .await
            .unwrap();
        assert_eq!(moved.rows_affected(), 0, "{owner:?}");
        tx.commit().await.unwrap();

        // Rewriting a payload, deleting, or moving a job to another tenant: no privilege.
        for sql in [
            "UPDATE queue.jobs SET payload = '{\"owned\": true}'",
            "DELETE FROM queue.jobs",
            "TRUNCATE queue.jobs",
            "UPDATE queue.jobs SET tenant_id = NULL",
            "UPDATE queue.jobs SET attempt = 0, worker = 'me'",
        ] {
            assert_eq!(refused_in_b(&s, sql).await, "42501", "{owner:?}: {sql}");
        }
        // Not even its own job can be given to another tenant.
        let mut tx = s.tenant(s.b).await;
        let own = client::enqueue(&mut tx, &NewJob::new("mine", serde_json::json!({})))
            .await
            .unwrap();
        let err = sqlx::query("UPDATE queue.jobs SET tenant_id = $1 WHERE id = $2")
            .bind(s.a.0)
            .bind(own.0)
            .execute(&mut *tx)
            .await
            .unwrap_err();
        assert_eq!(err.as_database_error().unwrap().code().unwrap(), "42501", "{owner:?}");
        drop(tx);

        assert_eq!(
            (s.seen_by_admin(a).await, s.seen_by_admin(a_discarded).await),
            before,
            "{owner:?}: A's jobs are untouched"
        );
        s.close().await;
    }
}

#[tokio::test]
async fn tenant_b_cannot_enqueue_a_job_that_runs_in_tenant_a_or_in_no_tenant() {
    for owner in Owner::BOTH {
        let s = setup(owner).await;
        let job = NewJob::new("charge", serde_json::json!({}));
        // The Rust API has no way to name another tenant; the functions refuse it from SQL.
        for sql in [
            "SELECT queue.enqueue('charge', p_tenant_id => $1)",
            "SELECT queue.enqueue_many(ARRAY['ok', 'charge'], ARRAY['{}', '{}']::jsonb[], ARRAY['default', 'default'],
                                       ARRAY[0, 0]::smallint[], ARRAY[NULL, NULL]::timestamptz[], ARRAY[20, 20],
                                       ARRAY[NULL, $1]::uuid[])",
        ] {
            let mut tx = s.tenant(s.b).await;
            assert_eq!(sqlstate_naming(&mut tx, sql, s.a).await, "42501", "{owner:?}: {sql}");
            drop(tx);
        }
        // B's transaction whose context was moved to A afterwards: the job is still B's, which
        // the context no longer is.
        let mut tx = s.tenant(s.b).await;
        sqlx::query("SELECT set_config('app.tenant_id', $1, true)")
            .bind(s.a.0.to_string())
            .execute(&mut *tx)
            .await
            .unwrap();
        forbidden("enqueue as B in A's context", client::enqueue(&mut tx, &job).await);
        drop(tx);
        let mut tx = s.tenant(s.b).await;
        sqlx::query("SELECT set_config('app.tenant_id', $1, true)")
            .bind(s.a.0.to_string())
            .execute(&mut *tx)
            .await
            .unwrap();
        forbidden(
            "enqueue_many as B in A's context",
            client::enqueue_many(&mut tx, std::slice::from_ref(&job)).await,
        );
        drop(tx);
        // Straight into the table: A's tenant, no tenant, or a job that looks claimed or done.
        for sql in [
            "INSERT INTO queue.jobs (kind, tenant_id) SELECT 'x', id FROM (VALUES ('00000000-0000-7000-8000-00000000000a'::uuid)) t(id)",
            "INSERT INTO queue.jobs (kind, tenant_id) VALUES ('x', NULL)",
            "INSERT INTO queue.jobs (kind, tenant_id, state, finalized_at) VALUES ('x', tenancy.current_tenant_id(), 'completed', now())",
            "INSERT INTO queue.jobs (kind, tenant_id, state, lease_expires_at) VALUES ('x', tenancy.current_tenant_id(), 'running', 'infinity')",
            "INSERT INTO queue.jobs (kind, tenant_id, attempt) VALUES ('x', tenancy.current_tenant_id(), 99)",
        ] {
            assert_eq!(refused_in_b(&s, sql).await, "42501", "{owner:?}: {sql}");
        }
        // Without a tenant in context the request path enqueues nothing, named tenant or not.
        let mut conn = s.app.acquire().await.unwrap();
        assert_eq!(
            sqlstate_naming(&mut conn, "SELECT queue.enqueue('charge', p_tenant_id => $1)", s.a).await,
            "42501",
            "{owner:?}: enqueue for A without context"
        );
        forbidden(
            "enqueue without a tenant",
            client::enqueue_system(&mut conn, &NewJob::new("system", serde_json::json!({}))).await,
        );
        forbidden(
            "enqueue many without a tenant",
            client::enqueue_system_many(&mut conn, &[NewJob::new("system", serde_json::json!({}))]).await,
        );
        drop(conn);

        let jobs: i64 = sqlx::query_scalar("SELECT count(*) FROM queue.jobs")
            .fetch_one(&s.db.admin)
            .await
            .unwrap();
        assert_eq!(jobs, 0, "{owner:?}: nothing was written");
        s.close().await;
    }
}

#[tokio::test]
async fn the_request_path_cannot_enqueue_as_another_actor_or_request() {
    for owner in Owner::BOTH {
        let s = setup(owner).await;
        let actor = pgstrata_core::UserId::new();
        let ctx = TenantContext::tenant(s.b).with_actor(actor).with_request_id("req-1");
        // The legitimate path: the job takes the context's actor and request id.
        let mut tx = begin_tenant(&s.app, &ctx).await.unwrap();
        let id = client::enqueue(&mut tx, &NewJob::new("mail", serde_json::json!({})))
            .await
            .unwrap();
        tx.commit().await.unwrap();
        let (job_actor, job_request): (Option<uuid::Uuid>, Option<String>) =
            sqlx::query_as("SELECT actor_id, request_id FROM queue.jobs WHERE id = $1")
                .bind(id.0)
                .fetch_one(&s.db.admin)
                .await
                .unwrap();
        assert_eq!(
            (job_actor, job_request.as_deref()),
            (Some(actor.0), Some("req-1")),
            "{owner:?}"
        );
        // The generated row carries the typed actor.
        let mut tx = begin_tenant(&s.app, &ctx).await.unwrap();
        let job = client::get(&mut tx, id).await.unwrap().unwrap();
        assert_eq!(
            (job.actor_id, job.state),
            (Some(actor), JobState::Available),
            "{owner:?}"
        );
        drop(tx);
        // Straight into the table, naming someone else (or no one) as the cause.
        for sql in [
            "INSERT INTO queue.jobs (kind, tenant_id, actor_id, request_id)
             VALUES ('x', tenancy.current_tenant_id(), '00000000-0000-7000-8000-0000000000ff', 'req-1')",
            "INSERT INTO queue.jobs (kind, tenant_id, actor_id, request_id)
             VALUES ('x', tenancy.current_tenant_id(), tenancy.current_actor_id(), 'forged')",
            "INSERT INTO queue.jobs (kind, tenant_id, actor_id, request_id)
             VALUES ('x', tenancy.current_tenant_id(), NULL, 'req-1')",
        ] {
            let mut tx = begin_tenant(&s.app, &ctx).await.unwrap();
            assert_eq!(sqlstate(&mut tx, sql).await, "42501", "{owner:?}: {sql}");
            tx.rollback().await.unwrap();
        }
        s.close().await;
    }
}

#[tokio::test]
async fn the_request_path_cannot_claim_run_rescue_prune_or_run_cron() {
    for owner in Owner::BOTH {
        let s = setup(owner).await;
        let a = s.a_job("export").await;
        // The worker functions are not executable by the application role at all.
        for sql in [
            "SELECT * FROM queue.claim('default', 1000, 'thief', interval '1000 years')",
            "SELECT * FROM queue.claim('default', 10, 'thief', interval '1 minute')",
            "SELECT queue.complete(1, 1)",
            "SELECT queue.complete_many(ARRAY[1]::bigint[], ARRAY[1])",
            "SELECT queue.fail(1, 1, 'x')",
            "SELECT queue.heartbeat(1, 1, interval '1000 years')",
            "SELECT queue.heartbeat_many(ARRAY[1]::bigint[], ARRAY[1], interval '1 minute')",
            "SELECT queue.release(1, 1)",
            "SELECT queue.rescue()",
            "SELECT queue.promote_due()",
            "SELECT queue.prune(interval '-100 years')",
            "SELECT queue.prune()",
            "SELECT queue.enqueue_periodic('nightly', now(), 'x')",
            "SELECT queue.backoff(1)",
            "SELECT queue.check_lease('x', interval '1 minute')",
        ] {
            assert_eq!(refused_in_b(&s, sql).await, "42501", "{owner:?}: {sql}");
        }
        // Its own running job is the worker's: the request path can neither cancel it nor
        // hand it back to the queue while a worker holds it.
        let mut tx = s.tenant(s.b).await;
        let own = client::enqueue(&mut tx, &NewJob::new("mine", serde_json::json!({})))
            .await
            .unwrap();
        tx.commit().await.unwrap();
        let mut w = s.worker.acquire().await.unwrap();
        let claimed = client::claim(&mut w, "default", 10, "w", 60 * SECOND).await.unwrap();
        assert_eq!(claimed.len(), 2, "{owner:?}");
        let mut tx = s.tenant(s.b).await;
        match client::cancel(&mut tx, own).await {
            Err(Error::Gone {
                id,
                state: JobState::Running,
                ..
            }) if id == own => {}
            other => panic!("{owner:?}: cancelling a held job: {other:?}"),
        }
        let moved = sqlx::query("UPDATE queue.jobs SET state = 'available', lease_expires_at = NULL WHERE id = $1")
            .bind(own.0)
            .execute(&mut *tx)
            .await
            .unwrap();
        assert_eq!(moved.rows_affected(), 0, "{owner:?}");
        drop(tx);
        assert!(client::complete(&mut w, own, 1).await.unwrap(), "{owner:?}");
        assert!(client::complete(&mut w, a, 1).await.unwrap(), "{owner:?}");
        drop(w);
        s.close().await;
    }
}

#[tokio::test]
async fn leases_and_retention_are_bounded_even_for_the_worker() {
    for owner in Owner::BOTH {
        let s = setup(owner).await;
        let a = s.a_job("export").await;
        sqlx::query(
            "INSERT INTO queue.jobs (kind, state, attempt, finalized_at) VALUES ('old', 'completed', 1, now())",
        )
        .execute(&s.db.admin)
        .await
        .unwrap();
        let mut w = s.worker.acquire().await.unwrap();
        let millennium = Duration::from_secs(1000 * 365 * 86_400);
        invalid(
            "a 1000-year lease",
            client::claim(&mut w, "default", 10, "w", millennium).await,
        );
        invalid(
            "a zero lease",
            client::claim(&mut w, "default", 10, "w", Duration::ZERO).await,
        );
        invalid("claim 0 jobs", client::claim(&mut w, "default", 0, "w", SECOND).await);
        invalid(
            "claim 1001 jobs",
            client::claim(&mut w, "default", 1001, "w", SECOND).await,
        );
        let claimed = client::claim(&mut w, "default", 10, "w", 60 * SECOND).await.unwrap();
        assert_eq!(claimed.len(), 1, "{owner:?}");
        invalid(
            "a two-day heartbeat",
            client::heartbeat(&mut w, a, 1, 2 * 86_400 * SECOND).await,
        );
        invalid(
            "a two-day batch heartbeat",
            client::heartbeat_many(&mut w, &[(a, 1)], 2 * 86_400 * SECOND).await,
        );
        invalid("prune at age 0", client::prune(&mut w, Duration::ZERO).await);
        let code = sqlstate(&mut w, "SELECT queue.prune(interval '-1 day')").await;
        assert_eq!(code, "22023", "{owner:?}: a negative age");
        let code = sqlstate(&mut w, "SELECT queue.prune(interval '1 day', 0)").await;
        assert_eq!(code, "22023", "{owner:?}: a zero batch");
        let (running, finished): (i64, i64) = sqlx::query_as(
            "SELECT count(*) FILTER (WHERE state = 'running' AND lease_expires_at < now() + interval '61 seconds'),
                    count(*) FILTER (WHERE state = 'completed')
               FROM queue.jobs",
        )
        .fetch_one(&s.db.admin)
        .await
        .unwrap();
        assert_eq!(
            (running, finished),
            (1, 1),
            "{owner:?}: no lease grew, nothing was pruned"
        );
        drop(w);
        s.close().await;
    }
}

#[tokio::test]
async fn unique_keys_are_per_tenant_and_never_reveal_another_tenants_job() {
    for owner in Owner::BOTH {
        let s = setup(owner).await;
        let keyed = NewJob::new("report", serde_json::json!({})).unique_key("daily");
        let mut tx = s.tenant(s.a).await;
        let a = client::enqueue(&mut tx, &keyed).await.unwrap();
        tx.commit().await.unwrap();

        let mut tx = s.tenant(s.b).await;
        let b = client::enqueue(&mut tx, &keyed).await.unwrap();
        assert_ne!(a, b, "{owner:?}: B got A's job id through the key");
        assert_eq!(client::enqueue(&mut tx, &keyed).await.unwrap(), b, "{owner:?}");
        tx.commit().await.unwrap();
        // A system job with the same key is a third one, also invisible to both tenants.
        let mut w = s.worker.acquire().await.unwrap();
        let system = client::enqueue_system(&mut w, &keyed).await.unwrap();
        assert!(system != a && system != b, "{owner:?}");
        drop(w);
        let mut tx = s.tenant(s.a).await;
        assert_eq!(client::enqueue(&mut tx, &keyed).await.unwrap(), a, "{owner:?}");
        drop(tx);
        s.close().await;
    }
}

#[tokio::test]
async fn cron_cannot_be_silenced_by_pre_inserting_runs_or_by_pruning() {
    for owner in Owner::BOTH {
        let s = setup(owner).await;
        for sql in [
            "INSERT INTO queue.periodic_runs (name, period_start) SELECT 'nightly', date_trunc('second', now()) + make_interval(secs => n) FROM generate_series(0, 3600) n",
            "SELECT count(*) FROM queue.periodic_runs",
            "DELETE FROM queue.periodic_runs",
        ] {
            assert_eq!(refused_in_b(&s, sql).await, "42501", "{owner:?}: {sql}");
        }
        let mut conn = s.app.acquire().await.unwrap();
        assert_eq!(
            sqlstate(
                &mut conn,
                "INSERT INTO queue.periodic_runs (name, period_start) VALUES ('nightly', now())"
            )
            .await,
            "42501",
            "{owner:?}: without a tenant either"
        );
        drop(conn);

        // The worker's scheduler enqueues the period once, and pruning keeps each schedule's
        // latest run, so an old period is never enqueued a second time.
        let schedule = [Periodic::new("hourly", "0 0 * * * *", NewJob::new("tick", serde_json::json!({}))).unwrap()];
        let two_hours_ago = chrono::Utc::now() - chrono::Duration::hours(2);
        let mut w = s.worker.acquire().await.unwrap();
        assert_eq!(
            periodic::enqueue_due(&mut w, &schedule, two_hours_ago)
                .await
                .unwrap()
                .len(),
            1
        );
        sqlx::query("UPDATE queue.jobs SET state = 'completed', finalized_at = now() - interval '2 hours'")
            .execute(&s.db.admin)
            .await
            .unwrap();
        assert_eq!(client::prune(&mut w, 60 * SECOND).await.unwrap(), 1, "{owner:?}");
        assert!(
            periodic::enqueue_due(&mut w, &schedule, two_hours_ago)
                .await
                .unwrap()
                .is_empty(),
            "{owner:?}: the pruned period came back"
        );
        drop(w);
        s.close().await;
    }
}

#[tokio::test]
async fn system_jobs_are_invisible_to_the_request_path() {
    for owner in Owner::BOTH {
        let s = setup(owner).await;
        let mut w = s.worker.acquire().await.unwrap();
        let system = client::enqueue_system(&mut w, &NewJob::new("vacuum", serde_json::json!({"secret": 1})))
            .await
            .unwrap();
        assert_eq!(client::get(&mut w, system).await.unwrap().unwrap().tenant_id, None);
        drop(w);
        let mut tx = s.tenant(s.b).await;
        assert!(client::get(&mut tx, system).await.unwrap().is_none(), "{owner:?}");
        not_found(
            &format!("{owner:?}: cancel a system job"),
            system,
            client::cancel(&mut tx, system).await,
        );
        assert!(client::stats(&mut tx).await.unwrap().is_empty(), "{owner:?}");
        drop(tx);
        let mut conn = s.app.acquire().await.unwrap();
        let seen: i64 = sqlx::query_scalar("SELECT count(*) FROM queue.jobs")
            .fetch_one(&mut *conn)
            .await
            .unwrap();
        assert_eq!(seen, 0, "{owner:?}: no context, nothing visible");
        drop(conn);
        assert_eq!(s.seen_by_admin(system).await.unwrap().1, "available");
        s.close().await;
    }
}

#[tokio::test]
async fn a_tenants_row_locks_do_not_hold_up_other_tenants_claims() {
    for owner in Owner::BOTH {
        let s = setup(owner).await;
        let a = s.a_job("export").await;
        let mut tx = s.tenant(s.b).await;
        let own = client::enqueue(&mut tx, &NewJob::new("mine", serde_json::json!({})))
            .await
            .unwrap();
        tx.commit().await.unwrap();
        // B locks every row it can, its own job, and keeps the transaction open.
        let mut holder = s.tenant(s.b).await;
        let locked: Vec<i64> = sqlx::query_scalar("SELECT id FROM queue.jobs FOR UPDATE")
            .fetch_all(&mut *holder)
            .await
            .unwrap();
        assert_eq!(locked, [own.0], "{owner:?}");
        let code = sqlstate(&mut holder, "LOCK TABLE queue.jobs IN EXCLUSIVE MODE").await;
        assert_eq!(code, "42501", "{owner:?}: B cannot lock the table");
        drop(holder);
        let mut holder = s.tenant(s.b).await;
        sqlx::query("SELECT id FROM queue.jobs FOR UPDATE")
            .execute(&mut *holder)
            .await
            .unwrap();
        let mut w = s.worker.acquire().await.unwrap();
        sqlx::query("SET statement_timeout = '5s'")
            .execute(&mut *w)
            .await
            .unwrap();
        let claimed = client::claim(&mut w, "default", 10, "w", 60 * SECOND).await.unwrap();
        assert_eq!(
            claimed.iter().map(|j| j.id).collect::<Vec<_>>(),
            [a],
            "{owner:?}: A's job is claimed without waiting; B's locked one is skipped"
        );
        holder.rollback().await.unwrap();
        drop(w);
        s.close().await;
    }
}

#[tokio::test]
async fn queue_functions_pin_search_path_run_as_invoker_and_are_not_public() {
    for owner in Owner::BOTH {
        let s = setup(owner).await;
        let bad: Vec<String> = sqlx::query_scalar(
            "SELECT p.oid::regprocedure::text FROM pg_proc p
              WHERE p.pronamespace = 'queue'::regnamespace
                AND (p.prosecdef
                     OR NOT coalesce(p.proconfig @> ARRAY['search_path=pg_catalog, pg_temp'], false)
                     OR has_function_privilege('public', p.oid, 'EXECUTE')
                     OR p.prosrc ILIKE '%advisory%')",
        )
        .fetch_all(&s.db.admin)
        .await
        .unwrap();
        assert!(bad.is_empty(), "{owner:?}: {bad:?}");

        // Types and tables shadowed in the caller's temporary schema are never used: the
        // domains' checks would record a call.
        let mut tx = s.tenant(s.b).await;
        sqlx::raw_sql(
            "CREATE TEMP TABLE hits (what text);
             CREATE FUNCTION pg_temp.hit(what text) RETURNS boolean LANGUAGE sql
                 AS $$ INSERT INTO pg_temp.hits VALUES (what) RETURNING true $$;
             CREATE DOMAIN pg_temp.text AS pg_catalog.text CHECK (pg_temp.hit('text'));
             CREATE DOMAIN pg_temp.uuid AS pg_catalog.uuid CHECK (pg_temp.hit('uuid'));
             CREATE DOMAIN pg_temp.jsonb AS pg_catalog.jsonb CHECK (pg_temp.hit('jsonb'));
             CREATE DOMAIN pg_temp.int4 AS pg_catalog.int4 CHECK (pg_temp.hit('int4'));
             CREATE DOMAIN pg_temp.interval AS pg_catalog.interval CHECK (pg_temp.hit('interval'));
             CREATE TEMP TABLE jobs (id bigint);",
        )
        .execute(&mut *tx)
        .await
        .unwrap();
        let id = client::enqueue(&mut tx, &NewJob::new("x", serde_json::json!({})).unique_key("k"))
            .await
            .unwrap();
        client::enqueue(&mut tx, &NewJob::new("x", serde_json::json!({})).unique_key("k"))
            .await
            .unwrap();
        client::enqueue_many(&mut tx, &[NewJob::new("y", serde_json::json!({}))])
            .await
            .unwrap();
        client::cancel(&mut tx, id).await.unwrap();
        client::retry(&mut tx, id).await.unwrap();
        client::stats(&mut tx).await.unwrap();
        let hits: Vec<String> = sqlx::query_scalar("SELECT what FROM pg_temp.hits")
            .fetch_all(&mut *tx)
            .await
            .unwrap();
        assert!(hits.is_empty(), "{owner:?}: the caller's code ran inside: {hits:?}");
        drop(tx);
        s.close().await;
    }
}

#[derive(Debug, Serialize, Deserialize)]
struct Export {
    n: i64,
}

impl JobKind for Export {
    const KIND: &'static str = "export";
}

struct Record;

impl Handler<Export> for Record {
    async fn handle(&self, tx: &mut PgConnection, job: Export, _meta: &JobMeta) -> Result<(), HandlerError> {
        sqlx::query("INSERT INTO public.ran (n, tenant) VALUES ($1, tenancy.current_tenant_id())")
            .bind(job.n)
            .execute(&mut *tx)
            .await?;
        Ok(())
    }
}

#[tokio::test]
async fn the_legitimate_paths_still_work() {
    for owner in Owner::BOTH {
        let s = setup(owner).await;
        sqlx::raw_sql(
            "CREATE TABLE public.ran (n bigint NOT NULL, tenant uuid);
             GRANT SELECT, INSERT ON public.ran TO pgstrata_worker;",
        )
        .execute(&s.db.admin)
        .await
        .unwrap();
        // The request path enqueues for its tenant (taken from the transaction), sees, cancels
        // and retries its own jobs.
        let mut tx = s.tenant(s.a).await;
        let first = client::enqueue(&mut tx, &NewJob::of(&Export { n: 1 }).unwrap())
            .await
            .unwrap();
        let named = client::enqueue(&mut tx, &NewJob::of(&Export { n: 2 }).unwrap())
            .await
            .unwrap();
        let batch = client::enqueue_many(&mut tx, &[NewJob::of(&Export { n: 3 }).unwrap()])
            .await
            .unwrap();
        assert_eq!(batch.len(), 1);
        let job = client::get(&mut tx, first).await.unwrap().unwrap();
        assert_eq!(
            job.tenant_id,
            Some(s.a),
            "{owner:?}: the tenant comes from the transaction"
        );
        client::cancel(&mut tx, named).await.unwrap();
        match client::cancel(&mut tx, named).await {
            Err(Error::Gone {
                state: JobState::Cancelled,
                ..
            }) => {}
            other => panic!("{owner:?}: cancelling twice: {other:?}"),
        }
        client::retry(&mut tx, named).await.unwrap();
        match client::retry(&mut tx, named).await {
            Err(Error::Gone {
                state: JobState::Available,
                ..
            }) => {}
            other => panic!("{owner:?}: retrying an available job: {other:?}"),
        }
        let stats = client::stats(&mut tx).await.unwrap();
        assert_eq!(stats.iter().map(|r| r.jobs).sum::<i64>(), 3, "{owner:?}: {stats:?}");
        tx.commit().await.unwrap();

        // A worker pool of the application role is refused up front.
        let token = CancellationToken::new();
        let refused = Worker::new(s.app.clone(), WorkerConfig::new("default"))
            .unwrap()
            .run(token.clone())
            .await;
        assert!(
            matches!(refused, Err(Error::NotWorker { .. })),
            "{owner:?}: {refused:?}"
        );

        // The worker runs each job in its tenant's context.
        let mut config = WorkerConfig::new("default");
        config.concurrency = 2;
        config.poll_interval = Duration::from_millis(50);
        let pool = s.db.pool_as(WORKER_LOGIN_ROLE, 5).await.unwrap();
        let worker = Worker::new(pool.clone(), config).unwrap().register::<Export, _>(Record);
        let handle = tokio::spawn(worker.run(token.clone()));
        let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
        loop {
            let done: i64 = sqlx::query_scalar("SELECT count(*) FROM queue.jobs WHERE state = 'completed'")
                .fetch_one(&s.db.admin)
                .await
                .unwrap();
            if done == 3 {
                break;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "{owner:?}: {done} of 3 completed"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        token.cancel();
        handle.await.unwrap().unwrap();
        pool.close().await;
        let ran: Vec<(i64, Option<uuid::Uuid>)> = sqlx::query_as("SELECT n, tenant FROM public.ran ORDER BY n")
            .fetch_all(&s.db.admin)
            .await
            .unwrap();
        assert_eq!(ran, [(1, Some(s.a.0)), (2, Some(s.a.0)), (3, Some(s.a.0))], "{owner:?}");
        s.close().await;
    }
}
