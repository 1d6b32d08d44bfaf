//! Listing jobs: a tenant's own through its `TenantTx` under row-level security, every tenant's
//! for a worker or operator, filtered by state, kind, queue and tenant, in keyset pages.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use pgstrata_core::migrate::Migrator;
use pgstrata_core::testing::{TestDb, WORKER_LOGIN_ROLE};
use pgstrata_core::{Page, TenantContext, TenantId, begin_tenant};
use pgstrata_queue::client::{self, NewJob};
use pgstrata_queue::inspect::{self, JobFilter};
use pgstrata_queue::{Error, Job, JobId, JobState};
use sqlx::ConnectOptions;

fn ids(jobs: &[Job]) -> Vec<JobId> {
    jobs.iter().map(|j| j.id).collect()
}

#[tokio::test]
async fn listings_filter_page_and_stay_inside_the_tenant() {
    let migrator = Migrator::new([&pgstrata_tenancy::MODULE, &pgstrata_queue::MODULE]).unwrap();
    let db = TestDb::migrated(&migrator).await.unwrap();
    let (a, b) = (TenantId::new(), TenantId::new());
    let mut admin = db.admin_conn().await.unwrap();
    pgstrata_tenancy::fixtures::insert_tenants(&mut admin, &[a, b])
        .await
        .unwrap();
    let app = db.app_pool(2).await.unwrap();

    // Tenant A: 7 mails and 3 reports on "slow"; tenant B: 2 mails; 2 system jobs.
    let mut tx = begin_tenant(&app, &TenantContext::tenant(a)).await.unwrap();
    let mut a_jobs = Vec::new();
    for i in 0..10 {
        let job = if i % 3 == 2 {
            NewJob::new("report", serde_json::json!({ "i": i })).queue("slow")
        } else {
            NewJob::new("mail", serde_json::json!({ "i": i }))
        };
        a_jobs.push(client::enqueue(&mut tx, &job).await.unwrap());
    }
    tx.commit().await.unwrap();
    let mut tx = begin_tenant(&app, &TenantContext::tenant(b)).await.unwrap();
    let b_jobs = client::enqueue_many(
        &mut tx,
        &[
            NewJob::new("mail", serde_json::json!({})),
            NewJob::new("mail", serde_json::json!({})),
        ],
    )
    .await
    .unwrap();
    tx.commit().await.unwrap();
    let mut worker = db.login_options(WORKER_LOGIN_ROLE).connect().await.unwrap();
    let system = client::enqueue_system_many(
        &mut worker,
        &[
            NewJob::new("cleanup", serde_json::json!({})),
            NewJob::new("cleanup", serde_json::json!({})),
        ],
    )
    .await
    .unwrap();
    // Two of A's jobs are cancelled, one of B's too.
    for id in [a_jobs[1], a_jobs[4], b_jobs[0]] {
        client::cancel(&mut worker, id).await.unwrap();
    }

    // The request path: newest first, pages of 3, every one of its jobs exactly once.
    let mut tx = begin_tenant(&app, &TenantContext::tenant(a)).await.unwrap();
    let mut seen = Vec::new();
    let mut page = Page::first(3);
    loop {
        let rows = inspect::list(&mut tx, &JobFilter::new(), &page).await.unwrap();
        assert!(rows.len() <= 3);
        assert!(rows.iter().all(|j| j.tenant_id == Some(a)));
        seen.extend(ids(&rows));
        match page.next(&rows, |j| j.id) {
            Some(next) => page = next,
            None => break,
        }
    }
    let mut newest_first = a_jobs.clone();
    newest_first.reverse();
    assert_eq!(
        seen, newest_first,
        "every job of A once, newest first, none of B's or the system's"
    );

    // Filters combine.
    let cancelled = inspect::list(&mut tx, &JobFilter::new().state(JobState::Cancelled), &Page::first(50))
        .await
        .unwrap();
    assert_eq!(ids(&cancelled), [a_jobs[4], a_jobs[1]]);
    let slow_reports = inspect::list(
        &mut tx,
        &JobFilter::new().kind("report").queue("slow").state(JobState::Available),
        &Page::first(50),
    )
    .await
    .unwrap();
    assert_eq!(ids(&slow_reports), [a_jobs[8], a_jobs[5], a_jobs[2]]);
    let two_states = inspect::list(
        &mut tx,
        &JobFilter::new()
            .states([JobState::Cancelled, JobState::Available])
            .kind("mail"),
        &Page::after(a_jobs[4], 50),
    )
    .await
    .unwrap();
    assert_eq!(
        ids(&two_states),
        [a_jobs[3], a_jobs[1], a_jobs[0]],
        "two states, after a key"
    );

    // The request path cannot name a tenant: the transaction's is the one.
    let named = inspect::list(&mut tx, &JobFilter::new().tenant(b), &Page::first(50)).await;
    assert!(
        matches!(named, Err(Error::InvalidField { field: "tenant", .. })),
        "{named:?}"
    );
    // Nor list across tenants: its policy keeps it in its tenant.
    let everything = inspect::list_all(&mut tx, &JobFilter::new().tenant(b), &Page::first(50))
        .await
        .unwrap();
    assert!(everything.is_empty(), "B's jobs through list_all: {everything:?}");
    let bad_page = inspect::list(&mut tx, &JobFilter::new(), &Page::first(1001)).await;
    assert!(matches!(bad_page, Err(Error::InvalidPage(_))), "{bad_page:?}");
    let bad_queue = inspect::list(&mut tx, &JobFilter::new().queue("Not A Queue"), &Page::first(5)).await;
    assert!(matches!(bad_queue, Err(Error::InvalidQueue(_))), "{bad_queue:?}");
    tx.rollback().await.unwrap();

    // A worker (or operator) lists across tenants, or one tenant, or the system jobs.
    let all = inspect::list_all(&mut worker, &JobFilter::new(), &Page::first(100))
        .await
        .unwrap();
    assert_eq!(all.len(), 14);
    assert!(all.windows(2).all(|w| w[0].id > w[1].id), "newest first");
    let of_b = inspect::list_all(&mut worker, &JobFilter::new().tenant(b), &Page::first(100))
        .await
        .unwrap();
    assert_eq!(ids(&of_b), [b_jobs[1], b_jobs[0]]);
    let of_system = inspect::list_all(&mut worker, &JobFilter::new().system(), &Page::first(100))
        .await
        .unwrap();
    assert_eq!(ids(&of_system), [system[1], system[0]]);
    let cancelled_everywhere = inspect::list_all(
        &mut worker,
        &JobFilter::new().state(JobState::Cancelled),
        &Page::first(2),
    )
    .await
    .unwrap();
    assert_eq!(ids(&cancelled_everywhere), [b_jobs[0], a_jobs[4]], "page of 2");

    app.close().await;
    drop(worker);
    drop(admin);
    db.close().await.unwrap();
}

#[tokio::test]
async fn metrics_count_the_backlog_by_state_and_the_recent_throughput() {
    let migrator = Migrator::new([&pgstrata_tenancy::MODULE, &pgstrata_queue::MODULE]).unwrap();
    let db = TestDb::migrated(&migrator).await.unwrap();
    let mut worker = db.login_options(WORKER_LOGIN_ROLE).connect().await.unwrap();
    let job = |queue: &str| NewJob::new("k", serde_json::json!({})).queue(queue);
    // "mail": 5 jobs, of which 2 are claimed and 1 of those completed; one scheduled for later;
    // "slow": one job that fails (retryable) and one cancelled.
    let later = chrono::Utc::now() + chrono::Duration::hours(1);
    client::enqueue_system_many(
        &mut worker,
        &[
            job("mail"),
            job("mail"),
            job("mail"),
            job("mail"),
            job("mail"),
            job("mail").run_at(later),
        ],
    )
    .await
    .unwrap();
    let slow = client::enqueue_system_many(&mut worker, &[job("slow"), job("slow")])
        .await
        .unwrap();
    let claimed = client::claim(&mut worker, "mail", 2, "w", std::time::Duration::from_secs(60))
        .await
        .unwrap();
    assert!(client::complete(&mut worker, claimed[0].id, 1).await.unwrap());
    let failing = client::claim(&mut worker, "slow", 1, "w", std::time::Duration::from_secs(60))
        .await
        .unwrap();
    client::fail(&mut worker, failing[0].id, 1, "boom").await.unwrap();
    client::cancel(&mut worker, slow[1]).await.unwrap();

    let m = inspect::metrics(&mut worker, std::time::Duration::from_secs(60))
        .await
        .unwrap();
    let rows: Vec<(&str, [i64; 7])> = m
        .iter()
        .map(|r| {
            (
                r.queue.as_str(),
                [
                    r.available,
                    r.scheduled,
                    r.running,
                    r.retryable,
                    r.completed,
                    r.discarded,
                    r.cancelled,
                ],
            )
        })
        .collect();
    assert_eq!(rows, [("mail", [3, 1, 1, 0, 1, 0, 0]), ("slow", [0, 0, 0, 1, 0, 0, 1])]);
    assert!(m[0].oldest_available_secs.is_some_and(|s| s >= 0.0));
    assert_eq!(m[1].oldest_available_secs, None);

    // The window bounds what counts as recent: a job finished long ago is history.
    sqlx::query("UPDATE queue.jobs SET finalized_at = now() - interval '2 minutes' WHERE id = $1")
        .bind(claimed[0].id)
        .execute(&db.admin)
        .await
        .unwrap();
    let m = inspect::metrics(&mut worker, std::time::Duration::from_secs(60))
        .await
        .unwrap();
    assert_eq!(m[0].completed, 0);
    assert!(matches!(
        inspect::metrics(&mut worker, std::time::Duration::from_secs(7200)).await,
        Err(Error::InvalidField { field: "window", .. })
    ));
    // The request path does not read the queue's metrics.
    let mut app = db.app_options().connect().await.unwrap();
    let refused = inspect::metrics(&mut app, std::time::Duration::from_secs(60)).await;
    assert!(
        matches!(refused, Err(Error::Db(pgstrata_core::DbError::Forbidden { .. }))),
        "{refused:?}"
    );
    drop((worker, app));
    db.close().await.unwrap();
}
