//! Claim lanes (webhooks V3, D-237): one endpoint's claims run in parallel, each in a lane with
//! its share of `max_in_flight`. Many real worker connections claim at once; the cap holds
//! across the lanes, no delivery is claimed twice, lowering the cap counts what still runs in
//! lanes no longer used, and FIFO and rate-limited endpoints (one lane) stay exact.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::{Fixture, Receiver, Reply, fixture, tx};
use pgstrata_webhooks::dispatch::{Answer, Claimed, claim, complete_many};
use pgstrata_webhooks::{Endpoint, NewEndpoint, endpoints, send};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

async fn endpoint(f: &Fixture, new: NewEndpoint) -> Endpoint {
    let mut t = tx(&f.app, f.a).await;
    let e = endpoints::create(&mut t, &new).await.unwrap();
    t.commit().await.unwrap();
    e
}

/// `n` messages of event type `a`, 100 per transaction, in send order.
async fn send_many(f: &Fixture, n: usize) {
    for chunk in (0..n).collect::<Vec<_>>().chunks(100) {
        let mut t = tx(&f.app, f.a).await;
        for i in chunk {
            send(&mut t, "a", format!("{{\"i\": {i}}}").as_bytes()).await.unwrap();
        }
        t.commit().await.unwrap();
    }
}

fn ok() -> Answer {
    Answer {
        status: Some(200),
        body: String::new(),
        retry_after_s: None,
        duration: Duration::from_millis(1),
        error: None,
    }
}

async fn report_ok(conn: &mut sqlx::PgConnection, claimed: &[Claimed]) {
    let answer = ok();
    let outcomes: Vec<(&Claimed, &Answer)> = claimed.iter().map(|c| (c, &answer)).collect();
    let states = complete_many(conn, &outcomes).await.unwrap();
    assert_eq!(
        states.len(),
        claimed.len(),
        "every claimed delivery was still running in its attempt"
    );
}

#[tokio::test]
async fn the_cap_holds_across_lanes_under_concurrent_claims_from_many_connections() {
    let f = fixture().await;
    // 40 in flight: five lanes of 8.
    endpoint(&f, NewEndpoint::new("https://receiver.example/hook").max_in_flight(40)).await;
    assert_eq!(f.scalar::<i32>("SELECT webhooks.lane_count(40, false, NULL)").await, 5);
    let messages = 600;
    send_many(&f, messages).await;

    // The deliveries held (claimed and not yet reported), as the claimers count them: each is
    // counted from after its claim committed until before its report, so this is never more than
    // what the database has running at that moment.
    let held = Arc::new(AtomicUsize::new(0));
    let most_held = Arc::new(AtomicUsize::new(0));
    let done = Arc::new(AtomicBool::new(false));
    // And what the database has running, sampled on its own connection.
    let sampler = {
        let (pool, done) = (f.db.admin.clone(), done.clone());
        tokio::spawn(async move {
            let mut most = 0i64;
            while !done.load(Ordering::SeqCst) {
                let running: i64 =
                    sqlx::query_scalar("SELECT count(*) FROM webhooks.deliveries WHERE state = 'running'")
                        .fetch_one(&pool)
                        .await
                        .unwrap();
                most = most.max(running);
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
            most
        })
    };
    let mut claimers = Vec::new();
    for w in 0..16usize {
        let (pool, held, most_held) = (f.worker.clone(), held.clone(), most_held.clone());
        claimers.push(tokio::spawn(async move {
            let mut conn = pool.acquire().await.unwrap();
            let start = Instant::now();
            let mut idle_rounds = 0;
            let mut claimed_here = 0;
            // Claims of 1 to 8, held 2 to 17 ms: together they ask for far more than the cap.
            for round in 0usize.. {
                assert!(start.elapsed() < Duration::from_secs(60), "the claims did not drain");
                let limit = 1 + (w + round) % 8;
                let claimed = claim(&mut conn, limit, &format!("w{w}"), Duration::from_secs(60))
                    .await
                    .unwrap();
                if claimed.is_empty() {
                    idle_rounds += 1;
                    if idle_rounds > 50 {
                        break;
                    }
                    tokio::time::sleep(Duration::from_millis(2)).await;
                    continue;
                }
                idle_rounds = 0;
                claimed_here += claimed.len();
                let now = held.fetch_add(claimed.len(), Ordering::SeqCst) + claimed.len();
                most_held.fetch_max(now, Ordering::SeqCst);
                tokio::time::sleep(Duration::from_millis(2 + ((w * 7 + round) % 16) as u64)).await;
                held.fetch_sub(claimed.len(), Ordering::SeqCst);
                report_ok(&mut conn, &claimed).await;
            }
            claimed_here
        }));
    }
    let mut total = 0;
    for c in claimers {
        total += c.await.unwrap();
    }
    done.store(true, Ordering::SeqCst);
    let most_running = sampler.await.unwrap();

    assert_eq!(total, messages, "every delivery was claimed once");
    let (succeeded, attempts, once): (i64, i64, bool) = sqlx::query_as(
        "SELECT (SELECT count(*) FROM webhooks.deliveries WHERE state = 'succeeded'),
                (SELECT count(*) FROM webhooks.attempts),
                (SELECT bool_and(attempts = 1) FROM webhooks.deliveries)",
    )
    .fetch_one(&f.db.admin)
    .await
    .unwrap();
    assert_eq!(
        (succeeded, attempts, once),
        (messages as i64, messages as i64, true),
        "no double claim"
    );
    let most_held = most_held.load(Ordering::SeqCst);
    assert!(
        most_held <= 40,
        "the claimers held {most_held} deliveries at once, over the cap of 40"
    );
    assert!(
        most_running <= 40,
        "the database had {most_running} running at once, over the cap of 40"
    );
    assert!(
        most_held > 8,
        "the lanes let more than one lane's share run at once (held at most {most_held})"
    );
    let lanes: Vec<i16> = sqlx::query_scalar("SELECT DISTINCT lane FROM webhooks.deliveries ORDER BY 1")
        .fetch_all(&f.db.admin)
        .await
        .unwrap();
    assert_eq!(lanes, vec![0, 1, 2, 3, 4], "the claims used every lane and no other");
    f.close().await;
}

#[tokio::test]
async fn lowering_the_cap_counts_what_still_runs_in_lanes_no_longer_used() {
    let f = fixture().await;
    let e = endpoint(&f, NewEndpoint::new("https://receiver.example/hook").max_in_flight(64)).await;
    send_many(&f, 100).await;
    let mut conn = f.worker.acquire().await.unwrap();
    let first = claim(&mut conn, 100, "w", Duration::from_secs(60)).await.unwrap();
    assert_eq!(first.len(), 64, "one claim fills every lane up to the cap");
    assert_eq!(
        f.scalar::<i64>("SELECT count(DISTINCT lane) FROM webhooks.deliveries WHERE state = 'running'")
            .await,
        8
    );
    assert!(
        claim(&mut conn, 10, "w", Duration::from_secs(60))
            .await
            .unwrap()
            .is_empty(),
        "the cap is full"
    );

    // Down to 8: one lane, which counts the 64 running in all eight.
    let mut t = tx(&f.app, f.a).await;
    endpoints::update(
        &mut t,
        e.id,
        &NewEndpoint::new("https://receiver.example/hook").max_in_flight(8),
    )
    .await
    .unwrap();
    t.commit().await.unwrap();
    report_ok(&mut conn, &first[..56]).await;
    assert!(
        claim(&mut conn, 10, "w", Duration::from_secs(60))
            .await
            .unwrap()
            .is_empty(),
        "8 still run (in lanes 0 to 7), the new cap"
    );
    report_ok(&mut conn, &first[56..57]).await;
    let next = claim(&mut conn, 10, "w", Duration::from_secs(60)).await.unwrap();
    assert_eq!(next.len(), 1, "7 run: one more may go");
    assert_eq!(
        f.scalar::<i64>("SELECT count(*) FROM webhooks.deliveries WHERE state = 'running'")
            .await,
        8
    );
    drop(conn);
    f.close().await;
}

#[tokio::test]
async fn a_fifo_endpoint_with_a_large_cap_stays_in_order_one_at_a_time_under_many_dispatchers() {
    let f = fixture().await;
    let receiver = Receiver::start(|_| Reply::status(200).after(Duration::from_millis(5))).await;
    endpoint(&f, NewEndpoint::new(&receiver.url).fifo(true).max_in_flight(64)).await;
    send_many(&f, 30).await;
    let token = pgstrata_core::CancellationToken::new();
    let mut runs = Vec::new();
    for w in 0..6 {
        let d = f
            .dispatcher(&format!("d{w}"), |c| {
                c.concurrency(8).batch(8).idle(Duration::from_millis(5))
            })
            .await;
        let token = token.clone();
        runs.push(tokio::spawn(async move { d.run(token).await }));
    }
    let start = Instant::now();
    while receiver.count() < 30 {
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "FIFO delivery did not finish"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    token.cancel();
    for r in runs {
        r.await.unwrap();
    }
    let order: Vec<String> = receiver
        .received()
        .iter()
        .map(|r| String::from_utf8(r.body.clone()).unwrap())
        .collect();
    let expected: Vec<String> = (0..30).map(|i| format!("{{\"i\": {i}}}")).collect();
    assert_eq!(order, expected, "in send order");
    assert_eq!(receiver.max_in_flight.load(Ordering::SeqCst), 1, "one at a time");
    f.close().await;
}

#[tokio::test]
async fn a_rate_limited_endpoint_with_a_large_cap_stays_within_its_rate_under_concurrent_claims() {
    let f = fixture().await;
    endpoint(
        &f,
        NewEndpoint::new("https://receiver.example/hook")
            .max_in_flight(64)
            .rate_limit(5),
    )
    .await;
    send_many(&f, 200).await;
    let mut claimers = Vec::new();
    for w in 0..8usize {
        let pool = f.worker.clone();
        claimers.push(tokio::spawn(async move {
            let mut conn = pool.acquire().await.unwrap();
            let start = Instant::now();
            let mut n = 0;
            while start.elapsed() < Duration::from_millis(2500) {
                let claimed = claim(&mut conn, 8, &format!("w{w}"), Duration::from_secs(60))
                    .await
                    .unwrap();
                n += claimed.len();
                if !claimed.is_empty() {
                    report_ok(&mut conn, &claimed).await;
                }
                tokio::time::sleep(Duration::from_millis(3)).await;
            }
            n
        }));
    }
    let mut total = 0;
    for c in claimers {
        total += c.await.unwrap();
    }
    assert!(total >= 5, "the endpoint got its rate ({total} in 2.5 s)");
    assert!(total <= 15, "{total} attempts in 2.5 s at 5 per second");
    // No second of attempt starts holds more than 5.
    let worst: i64 = f
        .scalar(
            "SELECT max((SELECT count(*) FROM webhooks.attempts b
                          WHERE b.started_at > a.started_at - interval '1 second' AND b.started_at <= a.started_at))
               FROM webhooks.attempts a",
        )
        .await;
    assert!(worst <= 5, "{worst} attempts started within one second");
    f.close().await;
}

#[tokio::test]
async fn the_upgrade_gives_existing_endpoints_their_lanes_whoever_owns_the_install() {
    use pgstrata_core::testing::{OWNER_LOGIN_ROLE, Owner, TestDb};
    use sqlx::ConnectOptions;
    for owner in Owner::BOTH {
        let db = TestDb::new().await.unwrap();
        let options = match owner {
            Owner::Superuser => db.admin_options(),
            Owner::NonSuperuser => {
                pgstrata_core::sql::trusted(format!("ALTER DATABASE \"{}\" OWNER TO {OWNER_LOGIN_ROLE}", db.name()))
                    .execute(&db.admin)
                    .await
                    .unwrap();
                db.login_options(OWNER_LOGIN_ROLE)
            }
        };
        let migrator = common::migrator();
        let mut conn = options.connect().await.unwrap();
        migrator.up_to(&mut conn, Some("webhooks"), Some(2)).await.unwrap();
        let app = db.app_pool(2).await.unwrap();
        let tenant = pgstrata_core::TenantId(uuid::Uuid::now_v7());
        sqlx::query("INSERT INTO tenancy.tenants (id, slug, name) VALUES ($1, 't', 't')")
            .bind(tenant.0)
            .execute(&db.admin)
            .await
            .unwrap();
        for i in 0..2 {
            let mut t = tx(&app, tenant).await;
            endpoints::create(
                &mut t,
                &NewEndpoint::new(format!("https://r{i}.example/hook")).max_in_flight(16),
            )
            .await
            .unwrap();
            t.commit().await.unwrap();
        }
        migrator.up(&mut conn).await.unwrap();
        let lanes: i64 = sqlx::query_scalar("SELECT count(*) FROM webhooks.lanes")
            .fetch_one(&db.admin)
            .await
            .unwrap();
        assert_eq!(lanes, 16, "{owner:?}: eight lanes for each endpoint there was");
        let forced: bool =
            sqlx::query_scalar("SELECT relforcerowsecurity FROM pg_class WHERE oid = 'webhooks.endpoints'::regclass")
                .fetch_one(&db.admin)
                .await
                .unwrap();
        assert!(forced, "{owner:?}: the endpoints' RLS is forced again");
        let mut t = tx(&app, tenant).await;
        send(&mut t, "a", b"{}").await.unwrap();
        t.commit().await.unwrap();
        let worker = db.pool_as(pgstrata_core::testing::WORKER_LOGIN_ROLE, 1).await.unwrap();
        let mut w = worker.acquire().await.unwrap();
        let claimed = claim(&mut w, 10, "w", Duration::from_secs(60)).await.unwrap();
        assert_eq!(
            claimed.len(),
            2,
            "{owner:?}: the upgraded endpoints are claimed through their lanes"
        );
        drop(w);
        worker.close().await;
        app.close().await;
        sqlx::Connection::close(conn).await.unwrap();
        db.close().await.unwrap();
    }
}
