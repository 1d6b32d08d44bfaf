//! The queue's state machine through the client operations, as the worker role: guarded
//! transitions, backoff, discard, manual retry, cancel, unique keys, rescue, pruning, stats.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use pgstrata_core::migrate::Migrator;
use pgstrata_core::testing::{TestDb, WORKER_LOGIN_ROLE};
use pgstrata_queue::client::{self, NewJob};
use pgstrata_queue::{Error, JobId, JobState};
use sqlx::{PgConnection, PgPool};
use std::time::Duration;

async fn setup() -> (TestDb, PgPool) {
    let migrator = Migrator::new([&pgstrata_tenancy::MODULE, &pgstrata_queue::MODULE]).unwrap();
    let db = TestDb::migrated(&migrator).await.unwrap();
    let workers = db.pool_as(WORKER_LOGIN_ROLE, 4).await.unwrap();
    (db, workers)
}

async fn state(conn: &mut PgConnection, id: JobId) -> (JobState, i32) {
    let job = client::get(conn, id).await.unwrap().unwrap();
    (job.state, job.attempt)
}

const SECOND: Duration = Duration::from_secs(1);

#[tokio::test]
async fn a_stale_worker_changes_nothing_after_a_rescue() {
    let (db, workers) = setup().await;
    let mut conn = workers.acquire().await.unwrap();
    let id = client::enqueue_system(&mut conn, &NewJob::new("work", serde_json::json!({})))
        .await
        .unwrap();

    // Worker A claims with a short lease and goes silent.
    let a = client::claim(&mut conn, "default", 10, "a", Duration::from_millis(200))
        .await
        .unwrap();
    assert_eq!((a.len(), a[0].attempt), (1, 1));
    tokio::time::sleep(Duration::from_millis(400)).await;
    assert_eq!(client::rescue(&mut conn).await.unwrap(), 1);
    assert_eq!(state(&mut conn, id).await, (JobState::Retryable, 1));
    client::promote_due(&mut conn).await.unwrap();

    // Worker B takes it over in attempt 2.
    let b = client::claim(&mut conn, "default", 10, "b", 60 * SECOND).await.unwrap();
    assert_eq!(b[0].attempt, 2);
    // A wakes up: its complete, fail and heartbeat all name attempt 1 and change nothing.
    assert!(!client::complete(&mut conn, id, 1).await.unwrap());
    assert_eq!(client::fail(&mut conn, id, 1, "late").await.unwrap(), None);
    assert!(!client::heartbeat(&mut conn, id, 1, SECOND).await.unwrap());
    assert_eq!(state(&mut conn, id).await, (JobState::Running, 2));
    // A rescue now does not touch it either: its lease is alive.
    assert_eq!(client::rescue(&mut conn).await.unwrap(), 0);
    assert!(client::complete(&mut conn, id, 2).await.unwrap());
    assert_eq!(state(&mut conn, id).await, (JobState::Completed, 2));
    // Completed is final: a rescue or a second complete does not reopen it.
    assert_eq!(client::rescue(&mut conn).await.unwrap(), 0);
    assert!(!client::complete(&mut conn, id, 2).await.unwrap());
    drop(conn);
    workers.close().await;
    db.close().await.unwrap();
}

#[tokio::test]
async fn failures_back_off_exponentially_then_discard_and_a_manual_retry_revives() {
    let (db, workers) = setup().await;
    let mut conn = workers.acquire().await.unwrap();
    let id = client::enqueue_system(&mut conn, &NewJob::new("flaky", serde_json::json!({})).max_attempts(4))
        .await
        .unwrap();
    for attempt in 1..=4 {
        sqlx::query("UPDATE queue.jobs SET run_at = now(), state = 'available' WHERE id = $1 AND state = 'retryable'")
            .bind(id.0)
            .execute(&mut *conn)
            .await
            .unwrap();
        let claimed = client::claim(&mut conn, "default", 1, "w", 60 * SECOND).await.unwrap();
        assert_eq!(claimed[0].attempt, attempt);
        let new_state = client::fail(&mut conn, id, attempt, &format!("boom {attempt}"))
            .await
            .unwrap();
        if attempt < 4 {
            assert_eq!(new_state, Some(JobState::Retryable));
            let delay: f64 =
                sqlx::query_scalar("SELECT extract(epoch FROM run_at - now())::float8 FROM queue.jobs WHERE id = $1")
                    .bind(id.0)
                    .fetch_one(&mut *conn)
                    .await
                    .unwrap();
            let base = 2f64.powi(attempt);
            assert!(
                delay >= base * 0.75 - 0.5 && delay <= base * 1.25 + 0.5,
                "attempt {attempt}: {delay}s"
            );
        } else {
            assert_eq!(new_state, Some(JobState::Discarded));
        }
    }
    let job = client::get(&mut conn, id).await.unwrap().unwrap();
    assert!(job.finalized_at.is_some());
    assert_eq!(job.errors.as_array().unwrap().len(), 4, "every attempt's error is kept");
    // Discarded jobs are kept for inspection, and can be retried by hand.
    client::retry(&mut conn, id).await.unwrap();
    let claimed = client::claim(&mut conn, "default", 1, "w", 60 * SECOND).await.unwrap();
    assert_eq!(claimed[0].attempt, 5);
    assert!(client::complete(&mut conn, id, 5).await.unwrap());
    drop(conn);
    workers.close().await;
    db.close().await.unwrap();
}

#[tokio::test]
async fn cancel_unique_keys_scheduled_jobs_and_pruning() {
    let (db, workers) = setup().await;
    let mut conn = workers.acquire().await.unwrap();

    let first = client::enqueue_system(
        &mut conn,
        &NewJob::new("report", serde_json::json!({"n": 1})).unique_key("daily"),
    )
    .await
    .unwrap();
    let again = client::enqueue_system(
        &mut conn,
        &NewJob::new("report", serde_json::json!({"n": 2})).unique_key("daily"),
    )
    .await
    .unwrap();
    assert_eq!(first, again, "an unfinished job with the key exists");
    let other_queue = client::enqueue_system(
        &mut conn,
        &NewJob::new("report", serde_json::json!({}))
            .queue("other")
            .unique_key("daily"),
    )
    .await
    .unwrap();
    assert_ne!(first, other_queue, "keys are per queue");

    client::cancel(&mut conn, first).await.unwrap();
    match client::cancel(&mut conn, first).await {
        Err(Error::Gone {
            id,
            state: JobState::Cancelled,
            operation: "cancel",
            ..
        }) if id == first => {}
        other => panic!("cancelling a cancelled job: {other:?}"),
    }
    match client::retry(&mut conn, other_queue).await {
        Err(
            e @ Error::Gone {
                state: JobState::Available,
                ..
            },
        ) => assert_eq!(
            e.to_string(),
            format!("job {other_queue} is available: retry takes a job that is discarded or cancelled")
        ),
        other => panic!("retrying an available job: {other:?}"),
    }
    let missing = JobId(i64::MAX);
    match client::cancel(&mut conn, missing).await {
        Err(Error::NotFound { id }) if id == missing => {}
        other => panic!("cancelling a job that does not exist: {other:?}"),
    }
    match client::retry(&mut conn, missing).await {
        Err(Error::NotFound { id }) if id == missing => {}
        other => panic!("retrying a job that does not exist: {other:?}"),
    }
    assert_eq!(state(&mut conn, first).await.0, JobState::Cancelled);
    let fresh = client::enqueue_system(
        &mut conn,
        &NewJob::new("report", serde_json::json!({})).unique_key("daily"),
    )
    .await
    .unwrap();
    assert_ne!(fresh, first, "a finished job frees its key");

    let later = chrono::Utc::now() + chrono::Duration::hours(1);
    let scheduled = client::enqueue_system(&mut conn, &NewJob::new("later", serde_json::json!({})).run_at(later))
        .await
        .unwrap();
    assert_eq!(state(&mut conn, scheduled).await.0, JobState::Scheduled);
    let claimed = client::claim(&mut conn, "default", 10, "w", 60 * SECOND).await.unwrap();
    assert_eq!(
        claimed.iter().map(|j| j.id).collect::<Vec<_>>(),
        [fresh],
        "the scheduled job waits"
    );

    // Cancelling a running job: the worker's complete then fails.
    client::cancel(&mut conn, fresh).await.unwrap();
    assert!(!client::complete(&mut conn, fresh, 1).await.unwrap());

    let stats = client::stats(&mut conn).await.unwrap();
    let count = |q: &str, s: JobState| {
        stats
            .iter()
            .find(|r| r.queue == q && r.state == s)
            .map_or(0, |r| r.jobs)
    };
    assert_eq!(
        (
            count("default", JobState::Cancelled),
            count("default", JobState::Scheduled),
            count("other", JobState::Available)
        ),
        (2, 1, 1)
    );

    sqlx::query("UPDATE queue.jobs SET finalized_at = now() - interval '2 days' WHERE id = $1")
        .bind(first.0)
        .execute(&mut *conn)
        .await
        .unwrap();
    // Finished jobs are counted over a window: one day by default, longer when asked.
    let cancelled = |stats: &[client::QueueStats]| {
        stats
            .iter()
            .find(|r| r.queue == "default" && r.state == JobState::Cancelled)
            .map_or(0, |r| r.jobs)
    };
    assert_eq!(cancelled(&client::stats(&mut conn).await.unwrap()), 1);
    let three_days = client::stats_within(&mut conn, Duration::from_secs(3 * 86_400))
        .await
        .unwrap();
    assert_eq!(cancelled(&three_days), 2);
    assert_eq!(
        three_days
            .iter()
            .find(|r| r.queue == "default" && r.state == JobState::Scheduled)
            .map(|r| r.jobs),
        Some(1),
        "unfinished jobs are counted whatever the window"
    );
    assert_eq!(client::prune(&mut conn, Duration::from_secs(86_400)).await.unwrap(), 1);
    assert!(client::get(&mut conn, first).await.unwrap().is_none());
    assert!(
        client::get(&mut conn, fresh).await.unwrap().is_some(),
        "recent finished jobs stay"
    );

    let err = client::enqueue_system(&mut conn, &NewJob::new("x", serde_json::json!({})).queue("Bad Queue"))
        .await
        .unwrap_err();
    assert!(matches!(err, pgstrata_queue::Error::InvalidQueue(_)), "{err}");
    drop(conn);
    workers.close().await;
    db.close().await.unwrap();
}

#[tokio::test]
async fn a_terminated_workers_job_comes_back_after_its_lease_and_a_heartbeating_one_does_not() {
    let (db, workers) = setup().await;
    let mut conn = workers.acquire().await.unwrap();
    let dead = client::enqueue_system(&mut conn, &NewJob::new("dead", serde_json::json!({})))
        .await
        .unwrap();
    let slow = client::enqueue_system(&mut conn, &NewJob::new("slow", serde_json::json!({})))
        .await
        .unwrap();

    // The dying worker claims on its own connection, which is then terminated mid-job.
    let mut doomed = <PgConnection as sqlx::Connection>::connect_with(&db.login_options(WORKER_LOGIN_ROLE))
        .await
        .unwrap();
    let claimed = client::claim(&mut doomed, "default", 1, "doomed", Duration::from_millis(500))
        .await
        .unwrap();
    assert_eq!(claimed[0].id, dead);
    let pid: i32 = sqlx::query_scalar("SELECT pg_backend_pid()")
        .fetch_one(&mut doomed)
        .await
        .unwrap();
    sqlx::query("SELECT pg_terminate_backend($1)")
        .bind(pid)
        .execute(&db.admin)
        .await
        .unwrap();
    assert!(
        client::complete(&mut doomed, dead, 1).await.is_err(),
        "the connection is gone"
    );

    // The slow job keeps heartbeating its short lease.
    let slow_claim = client::claim(&mut conn, "default", 1, "slow", Duration::from_millis(500))
        .await
        .unwrap();
    assert_eq!(slow_claim[0].id, slow);
    for _ in 0..6 {
        tokio::time::sleep(Duration::from_millis(200)).await;
        assert!(
            client::heartbeat(&mut conn, slow, 1, Duration::from_millis(500))
                .await
                .unwrap()
        );
        client::rescue(&mut conn).await.unwrap();
        assert_eq!(
            state(&mut conn, slow).await,
            (JobState::Running, 1),
            "a heartbeating job is not stolen"
        );
    }
    assert_eq!(
        state(&mut conn, dead).await.0,
        JobState::Retryable,
        "the dead worker's job came back"
    );
    client::promote_due(&mut conn).await.unwrap();
    let again = client::claim(&mut conn, "default", 1, "survivor", 60 * SECOND)
        .await
        .unwrap();
    assert_eq!((again[0].id, again[0].attempt), (dead, 2));
    assert!(client::complete(&mut conn, dead, 2).await.unwrap());
    assert!(client::complete(&mut conn, slow, 1).await.unwrap());
    drop(conn);
    workers.close().await;
    db.close().await.unwrap();
}

#[tokio::test]
async fn enqueue_many_keeps_each_jobs_own_run_at_unique_key_and_time_limit() {
    let (db, workers) = setup().await;
    let mut conn = workers.acquire().await.unwrap();
    // Microseconds, as PostgreSQL keeps them.
    let later = chrono::DateTime::from_timestamp_micros(chrono::Utc::now().timestamp_micros() + 3_600_123_456).unwrap();
    let awkward = r#"say "hi"\now, {x,y} NULL"#;
    let job = |n: i64| NewJob::new("batch", serde_json::json!({ "n": n }));
    // With unique keys (one job at a time in SQL) and without (one set-based insert).
    for keyed in [true, false] {
        let key = |k: &str| keyed.then(|| k.to_owned());
        let mut jobs = vec![
            job(1),
            job(2).run_at(later),
            job(3).timeout(Duration::from_millis(1500)),
            job(4),
        ];
        if keyed {
            jobs[1] = jobs[1].clone().unique_key(awkward);
            jobs[3] = jobs[3].clone().unique_key("NULL");
        }
        let ids = client::enqueue_system_many(&mut conn, &jobs).await.unwrap();
        assert_eq!(ids.len(), 4);
        let mut seen = Vec::new();
        for id in &ids {
            let j = client::get(&mut conn, *id).await.unwrap().unwrap();
            seen.push((j.state, j.run_at == later, j.unique_key, j.timeout_ms));
        }
        assert_eq!(
            seen,
            [
                (JobState::Available, false, None, None),
                (JobState::Scheduled, true, key(awkward), None),
                (JobState::Available, false, None, Some(1500)),
                (JobState::Available, false, key("NULL"), None),
            ],
            "keyed: {keyed}"
        );
        if keyed {
            // The keys were stored exactly: enqueueing them again finds the same jobs.
            let again = client::enqueue_system_many(&mut conn, &[jobs[3].clone(), jobs[1].clone()])
                .await
                .unwrap();
            assert_eq!(again, [ids[3], ids[1]]);
        }
    }
    assert!(client::enqueue_system_many(&mut conn, &[]).await.unwrap().is_empty());
    drop(conn);
    workers.close().await;
    db.close().await.unwrap();
}
