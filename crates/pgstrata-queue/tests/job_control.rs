//! Job control: handler outcomes besides success and failure (snooze, cancel, retry at), the
//! enqueuer's context carried into the handler, and unique keys through `enqueue_many`.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use pgstrata_core::migrate::Migrator;
use pgstrata_core::testing::{TestDb, WORKER_LOGIN_ROLE};
use pgstrata_core::{TenantContext, TenantId, UserId, begin_tenant};
use pgstrata_queue::client::{self, NewJob};
use pgstrata_queue::worker::{Control, HandlerError};
use pgstrata_queue::{Handler, JobKind, JobMeta, JobState, Worker, WorkerConfig};
use serde::{Deserialize, Serialize};
use sqlx::{ConnectOptions, PgConnection};
use std::time::Duration;

#[derive(Debug, Serialize, Deserialize)]
struct Step {
    action: String,
}

impl JobKind for Step {
    const KIND: &'static str = "step";
}

/// Writes a row (rolled back unless the job completes), then does what the job says.
struct Act;

impl Handler<Step> for Act {
    async fn handle(&self, tx: &mut PgConnection, job: Step, meta: &JobMeta) -> Result<(), HandlerError> {
        sqlx::query(
            "INSERT INTO public.seen (job_id, action, tenant, actor, request, meta_actor, meta_request)
                 VALUES ($1, $2, current_setting('app.tenant_id', true), current_setting('app.actor_id', true),
                         current_setting('app.request_id', true), $3, $4)",
        )
        .bind(meta.id.0)
        .bind(&job.action)
        .bind(meta.actor_id.map(|a| a.0.to_string()))
        .bind(meta.request_id.clone())
        .execute(&mut *tx)
        .await?;
        match job.action.as_str() {
            "follow_up" => {
                // A follow-up for the job's tenant, in a savepoint of the job's transaction.
                let ctx = meta.context().ok_or("a follow-up needs a tenant job")?;
                let mut tenant_tx = begin_tenant(&mut *tx, &ctx).await?;
                let next = NewJob::of(&Step {
                    action: "complete".into(),
                })?;
                client::enqueue(&mut tenant_tx, &next).await?;
                tenant_tx.commit().await?;
                Ok(())
            }
            "snooze" => Err(Control::Snooze(Duration::from_secs(3600)).into()),
            "cancel" => Err(Control::Cancel("no longer wanted".into()).into()),
            "retry_at" => Err(Control::RetryAt(
                chrono::Utc::now() + chrono::Duration::hours(2),
                "upstream asked for later".into(),
            )
            .into()),
            _ => Ok(()),
        }
    }
}

/// A migrated database with one tenant and `public.seen`, where handlers write what they saw.
async fn with_seen_table() -> (TestDb, TenantId) {
    let migrator = Migrator::new([&pgstrata_tenancy::MODULE, &pgstrata_queue::MODULE]).unwrap();
    let db = TestDb::migrated(&migrator).await.unwrap();
    sqlx::raw_sql(
        "CREATE TABLE public.seen (job_id bigint, action text, tenant text, actor text, request text,
                                   meta_actor text, meta_request text);
         GRANT SELECT, INSERT ON public.seen TO pgstrata_worker;",
    )
    .execute(&db.admin)
    .await
    .unwrap();
    let tenant = TenantId::new();
    let mut admin = db.admin_conn().await.unwrap();
    pgstrata_tenancy::fixtures::insert_tenants(&mut admin, &[tenant])
        .await
        .unwrap();
    (db, tenant)
}

#[tokio::test]
async fn outcomes_context_and_unique_keys_in_enqueue_many() {
    let (db, tenant) = with_seen_table().await;
    let app = db.app_pool(2).await.unwrap();
    let actor = UserId::new();
    let ctx = TenantContext::tenant(tenant)
        .with_actor(actor)
        .with_request_id("req-42");
    let step = |action: &str| NewJob::of(&Step { action: action.into() }).unwrap();

    // The request path enqueues in its context; two jobs of one call share a unique key.
    let mut tx = begin_tenant(&app, &ctx).await.unwrap();
    let ids = client::enqueue_many(
        &mut tx,
        &[
            step("snooze"),
            step("cancel"),
            step("retry_at"),
            step("complete").unique_key("once"),
            step("complete").unique_key("once"),
        ],
    )
    .await
    .unwrap();
    tx.commit().await.unwrap();
    assert_eq!(ids[3], ids[4], "a key repeated within one call returns the first job");
    let again = {
        let mut tx = begin_tenant(&app, &ctx).await.unwrap();
        let id = client::enqueue(&mut tx, &step("complete").unique_key("once"))
            .await
            .unwrap();
        tx.commit().await.unwrap();
        id
    };
    assert_eq!(again, ids[3], "enqueue finds the unfinished job holding the key");

    let token = pgstrata_core::CancellationToken::new();
    let mut config = WorkerConfig::new("default");
    config.poll_interval = Duration::from_millis(50);
    let worker = Worker::new(db.pool_as(WORKER_LOGIN_ROLE, 5).await.unwrap(), config)
        .unwrap()
        .register::<Step, _>(Act);
    let handle = tokio::spawn(worker.run(token.clone()));
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        let running: i64 =
            sqlx::query_scalar("SELECT count(*) FROM queue.jobs WHERE state IN ('available', 'running')")
                .fetch_one(&db.admin)
                .await
                .unwrap();
        if running == 0 {
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "the jobs were not run");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    token.cancel();
    handle.await.unwrap().unwrap();

    let rows: Vec<(i64, String, i32, bool, String)> = sqlx::query_as(
        "SELECT id, state, attempt, run_at > now() + interval '50 minutes', coalesce(errors->-1->>'error', '')
           FROM queue.jobs ORDER BY id",
    )
    .fetch_all(&db.admin)
    .await
    .unwrap();
    assert_eq!(
        rows,
        [
            (ids[0].0, "scheduled".into(), 0, true, String::new()),
            (
                ids[1].0,
                "cancelled".into(),
                1,
                false,
                "cancelled: no longer wanted".into()
            ),
            (ids[2].0, "retryable".into(), 1, true, "upstream asked for later".into()),
            (ids[3].0, "completed".into(), 1, false, String::new()),
        ],
        "snooze gives the attempt back; cancel and retry-at record why"
    );
    // Only the completed job's writes committed, in the enqueuer's context.
    let seen: Vec<(String, String, String, String, String, String)> =
        sqlx::query_as("SELECT action, tenant, actor, request, meta_actor, meta_request FROM public.seen")
            .fetch_all(&db.admin)
            .await
            .unwrap();
    let (t, a) = (tenant.0.to_string(), actor.0.to_string());
    assert_eq!(
        seen,
        [("complete".into(), t, a.clone(), "req-42".into(), a, "req-42".into())]
    );
    app.close().await;
    db.close().await.unwrap();
}

#[tokio::test]
async fn a_handler_enqueues_a_follow_up_for_its_tenant_with_its_context() {
    let (db, tenant) = with_seen_table().await;
    let app = db.app_pool(1).await.unwrap();
    let actor = UserId::new();
    let ctx = TenantContext::tenant(tenant).with_actor(actor).with_request_id("req-7");
    let mut tx = begin_tenant(&app, &ctx).await.unwrap();
    let first = client::enqueue(
        &mut tx,
        &NewJob::of(&Step {
            action: "follow_up".into(),
        })
        .unwrap(),
    )
    .await
    .unwrap();
    tx.commit().await.unwrap();

    let token = pgstrata_core::CancellationToken::new();
    let mut config = WorkerConfig::new("default");
    config.poll_interval = Duration::from_millis(50);
    let worker = Worker::new(db.pool_as(WORKER_LOGIN_ROLE, 5).await.unwrap(), config)
        .unwrap()
        .register::<Step, _>(Act);
    let handle = tokio::spawn(worker.run(token.clone()));
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        let completed: i64 = sqlx::query_scalar("SELECT count(*) FROM queue.jobs WHERE state = 'completed'")
            .fetch_one(&db.admin)
            .await
            .unwrap();
        if completed == 2 {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{completed} of 2 jobs completed"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    token.cancel();
    handle.await.unwrap().unwrap();

    // The follow-up belongs to the job's tenant and carries the original actor and request.
    let next: pgstrata_queue::JobId = sqlx::query_scalar("SELECT id FROM queue.jobs WHERE id <> $1")
        .bind(first)
        .fetch_one(&db.admin)
        .await
        .unwrap();
    let mut tx = begin_tenant(&app, &ctx).await.unwrap();
    let follow_up = client::get(&mut tx, next)
        .await
        .unwrap()
        .expect("the follow-up is the tenant's");
    assert_eq!(
        (
            follow_up.tenant_id,
            follow_up.actor_id,
            follow_up.request_id.as_deref(),
            follow_up.state
        ),
        (Some(tenant), Some(actor), Some("req-7"), JobState::Completed)
    );
    drop(tx);
    let seen: Vec<(String, String)> = sqlx::query_as("SELECT action, tenant FROM public.seen ORDER BY job_id")
        .fetch_all(&db.admin)
        .await
        .unwrap();
    let t = tenant.0.to_string();
    assert_eq!(seen, [("follow_up".into(), t.clone()), ("complete".into(), t)]);
    app.close().await;
    db.close().await.unwrap();
}

#[tokio::test]
async fn a_unique_period_holds_its_key_after_the_job_finished_until_the_next_period() {
    let (db, tenant) = with_seen_table().await;
    let other = TenantId::new();
    let mut admin = db.admin_conn().await.unwrap();
    pgstrata_tenancy::fixtures::insert_tenants(&mut admin, &[other])
        .await
        .unwrap();
    let app = db.app_pool(2).await.unwrap();
    let daily = || NewJob::new("digest", serde_json::json!({})).unique_for("digest", Duration::from_secs(86_400));
    let enqueue_in = |t: TenantId, jobs: Vec<NewJob>| {
        let app = app.clone();
        async move {
            let mut tx = begin_tenant(&app, &TenantContext::tenant(t)).await.unwrap();
            let ids = client::enqueue_many(&mut tx, &jobs).await.unwrap();
            tx.commit().await.unwrap();
            ids
        }
    };

    let first = enqueue_in(tenant, vec![daily(), daily()]).await;
    assert_eq!(first[0], first[1], "one job per key and period within a call");
    // The job runs and completes; the key stays held for the rest of the day.
    let mut worker = db.login_options(WORKER_LOGIN_ROLE).connect().await.unwrap();
    let claimed = client::claim(&mut worker, "default", 10, "w", Duration::from_secs(60))
        .await
        .unwrap();
    assert_eq!(claimed.len(), 1);
    assert!(client::complete(&mut worker, claimed[0].id, 1).await.unwrap());
    let again = enqueue_in(tenant, vec![daily()]).await;
    assert_eq!(again, [first[0]], "the completed job still holds its period");
    // A plain key of the same name, and another tenant, are not held by it.
    let plain = enqueue_in(
        tenant,
        vec![NewJob::new("digest", serde_json::json!({})).unique_key("digest")],
    )
    .await;
    let elsewhere = enqueue_in(other, vec![daily()]).await;
    assert!(plain[0] != first[0] && elsewhere[0] != first[0] && plain[0] != elsewhere[0]);

    // The next period (here: the job's period moved a day back) takes a new job.
    sqlx::query("UPDATE queue.jobs SET unique_period = unique_period - interval '1 day' WHERE id = $1")
        .bind(first[0])
        .execute(&mut admin)
        .await
        .unwrap();
    let next_day = enqueue_in(tenant, vec![daily()]).await;
    assert_ne!(next_day, [first[0]]);
    let period: (bool,) = sqlx::query_as(
        "SELECT unique_period = date_bin('1 day', now(), '1970-01-01 00:00+00') FROM queue.jobs WHERE id = $1",
    )
    .bind(next_day[0])
    .fetch_one(&mut admin)
    .await
    .unwrap();
    assert!(period.0, "periods are aligned on the epoch");

    // Bad periods are refused before any SQL runs, and by the SQL for psql callers.
    let mut tx = begin_tenant(&app, &TenantContext::tenant(tenant)).await.unwrap();
    let mut no_key = daily();
    no_key.unique_key = None;
    for (job, reason) in [
        (no_key, "needs a unique key"),
        (daily().unique_for("digest", Duration::from_millis(10)), "not within"),
    ] {
        let refused = client::enqueue(&mut tx, &job).await;
        assert!(
            matches!(&refused, Err(pgstrata_queue::Error::InvalidField { field: "unique_period", reason: r }) if r.contains(reason)),
            "{refused:?}"
        );
    }
    for sql in [
        "SELECT queue.enqueue('digest', p_unique_key => 'k', p_unique_period => interval '1 month')",
        "SELECT queue.enqueue('digest', p_unique_period => interval '1 hour')",
    ] {
        let refused = sqlx::query(sql).execute(&mut *tx).await;
        assert!(
            matches!(&refused, Err(sqlx::Error::Database(e)) if e.code().as_deref() == Some("22023")),
            "{sql}: {refused:?}"
        );
        tx.rollback().await.unwrap();
        tx = begin_tenant(&app, &TenantContext::tenant(tenant)).await.unwrap();
    }
    drop(tx);
    app.close().await;
    drop((admin, worker));
    db.close().await.unwrap();
}
