//! Delivery end to end, with real receivers on loopback: signatures over the exact bytes,
//! rotation, retries and Retry-After, 410 and auto-disable with their notice, redirects, slow
//! endpoints and the concurrency cap, a dispatcher killed mid-request, replay, FIFO, the SSRF
//! guard, and https receivers (real TLS, a test root).

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::{Fixture, Receiver, Reply, fixture, tx};
use pgstrata_core::Page;
use pgstrata_webhooks::dispatch::{AddressPolicy, DispatcherConfig};
use pgstrata_webhooks::history::{self, AttemptFilter};
use pgstrata_webhooks::{AttemptState, AttemptTrigger, Endpoint, NewEndpoint, Secret, Verifier, endpoints, send};
use std::time::Duration;

async fn endpoint(f: &Fixture, new: NewEndpoint) -> (Endpoint, Secret) {
    let mut t = tx(&f.app, f.a).await;
    let e = endpoints::create(&mut t, &new).await.unwrap();
    let secret = endpoints::secrets(&mut t, e.id).await.unwrap().remove(0).secret;
    t.commit().await.unwrap();
    (e, secret)
}

async fn send_one(f: &Fixture, event_type: &str, payload: &[u8]) -> pgstrata_webhooks::MessageId {
    let mut t = tx(&f.app, f.a).await;
    let id = send(&mut t, event_type, payload).await.unwrap();
    t.commit().await.unwrap();
    id
}

async fn attempts_of(f: &Fixture, e: &Endpoint) -> Vec<pgstrata_webhooks::Attempt> {
    let mut t = tx(&f.app, f.a).await;
    let mut a = history::attempts(
        &mut t,
        &AttemptFilter {
            endpoint: Some(e.id),
            message: None,
        },
        &Page::first(1000),
    )
    .await
    .unwrap();
    a.reverse();
    a
}

#[tokio::test]
async fn signatures_verify_over_the_exact_stored_bytes() {
    let f = fixture().await;
    let receiver = Receiver::ok().await;
    let (e, secret) = endpoint(&f, NewEndpoint::new(&receiver.url).header("x-tenant-key", "k-42")).await;
    // Key order, spacing, escapes and non-ASCII text that a re-serialiser would all change.
    let payload = "{\"z\": 1,   \"a\": \"caf\u{e9} \u{1f600}\",\n \"esc\": \"\\u00e9\", \"n\": 1.50}".as_bytes();
    let id = send_one(&f, "invoice.paid", payload).await;
    let d = f.dispatcher("d1", |c| c).await;
    f.dispatch_until(&d, || async { receiver.count() == 1 }).await;

    let got = &receiver.received()[0];
    assert_eq!(got.body, payload, "the receiver got the bytes as sent");
    assert_eq!(got.header("webhook-id"), id.to_string());
    assert_eq!(got.header("content-type"), "application/json");
    assert_eq!(got.header("x-tenant-key"), "k-42");
    let verifier = Verifier::new(vec![secret.clone()]);
    verifier.verify_headers(&got.headers, &got.body).unwrap();
    // The same JSON re-serialised does not verify: receivers must check the raw body.
    let reserialised = serde_json::to_vec(&serde_json::from_slice::<serde_json::Value>(payload).unwrap()).unwrap();
    assert!(verifier.verify_headers(&got.headers, &reserialised).is_err());
    // And the stored message is those bytes.
    let mut t = tx(&f.app, f.a).await;
    assert_eq!(history::message(&mut t, id).await.unwrap().unwrap().payload, payload);
    drop(t);
    let attempts = attempts_of(&f, &e).await;
    assert_eq!(attempts.len(), 1);
    assert_eq!(attempts[0].state, AttemptState::Succeeded);
    assert_eq!(attempts[0].status_code, Some(200));
    assert_eq!(attempts[0].response_body.as_deref(), Some("receiver says hi"));
    assert_eq!(attempts[0].trigger, AttemptTrigger::Scheduled);
    f.close().await;
}

#[tokio::test]
async fn during_a_rotation_both_keys_sign_and_after_it_only_the_new_one() {
    let f = fixture().await;
    let receiver = Receiver::ok().await;
    let (e, old) = endpoint(&f, NewEndpoint::new(&receiver.url)).await;
    let mut t = tx(&f.app, f.a).await;
    let new = endpoints::rotate_secret(&mut t, e.id, Duration::from_secs(2), None)
        .await
        .unwrap();
    assert!(new.expires_at.is_none());
    let live = endpoints::secrets(&mut t, e.id).await.unwrap();
    assert_eq!(live.len(), 2);
    assert_eq!(live[0].secret, new.secret, "the current key comes first");
    t.commit().await.unwrap();

    let d = f.dispatcher("d1", |c| c).await;
    send_one(&f, "a.b", b"{}").await;
    f.dispatch_until(&d, || async { receiver.count() == 1 }).await;
    let during = receiver.received().remove(0);
    assert_eq!(during.header("webhook-signature").split(' ').count(), 2);
    Verifier::new(vec![old.clone()])
        .verify_headers(&during.headers, &during.body)
        .unwrap();
    Verifier::new(vec![new.secret.clone()])
        .verify_headers(&during.headers, &during.body)
        .unwrap();

    tokio::time::sleep(Duration::from_millis(2200)).await;
    send_one(&f, "a.b", b"{}").await;
    f.dispatch_until(&d, || async { receiver.count() == 2 }).await;
    let after = receiver.received().remove(1);
    assert_eq!(after.header("webhook-signature").split(' ').count(), 1);
    assert!(
        Verifier::new(vec![old])
            .verify_headers(&after.headers, &after.body)
            .is_err()
    );
    Verifier::new(vec![new.secret])
        .verify_headers(&after.headers, &after.body)
        .unwrap();
    f.close().await;
}

#[tokio::test]
async fn failures_are_retried_on_the_schedule_and_retry_after_is_honoured() {
    let f = fixture().await;
    f.settings("retry_schedule = '{1,1,3,3}', jitter = 0").await;
    // Fails twice with 500, then asks for 3 s with 503 + Retry-After, then succeeds.
    let receiver = Receiver::start(|n| match n {
        0 | 1 => Reply::status(500),
        2 => Reply::status(503).header("retry-after", "3"),
        _ => Reply::status(204),
    })
    .await;
    let (e, _) = endpoint(&f, NewEndpoint::new(&receiver.url)).await;
    let id = send_one(&f, "order.created", br#"{"order": 7}"#).await;
    let d = f.dispatcher("d1", |c| c).await;
    f.dispatch_until(&d, || async { receiver.count() == 4 }).await;
    let got = receiver.received();
    let gaps: Vec<f64> = got.windows(2).map(|w| (w[1].at - w[0].at).as_secs_f64()).collect();
    assert!(gaps[0] >= 0.95 && gaps[1] >= 0.95, "schedule of 1 s: {gaps:?}");
    assert!(gaps[2] >= 2.9, "Retry-After: 3 over a schedule of 3 s: {gaps:?}");
    assert!(
        got.iter().all(|r| r.header("webhook-id") == id.to_string()),
        "the same webhook-id every time"
    );
    // Each attempt signed at its own time.
    assert!(got[0].header("webhook-timestamp") <= got[3].header("webhook-timestamp"));
    let attempts = attempts_of(&f, &e).await;
    let states: Vec<_> = attempts.iter().map(|a| (a.attempt, a.state, a.status_code)).collect();
    assert_eq!(
        states,
        vec![
            (1, AttemptState::Failed, Some(500)),
            (2, AttemptState::Failed, Some(500)),
            (3, AttemptState::Failed, Some(503)),
            (4, AttemptState::Succeeded, Some(204)),
        ]
    );
    // The failure run ended with the success.
    let failing: Option<chrono::DateTime<chrono::Utc>> =
        f.scalar("SELECT first_failure_at FROM webhooks.endpoints").await;
    assert_eq!(failing, None);
    f.close().await;
}

#[tokio::test]
async fn retries_stop_after_the_schedule_and_429_waits_at_least_the_throttle_delay() {
    let f = fixture().await;
    f.settings("retry_schedule = '{0}', jitter = 0, throttle_delay_s = 2")
        .await;
    let receiver = Receiver::start(|_| Reply::status(429)).await;
    let (e, _) = endpoint(&f, NewEndpoint::new(&receiver.url)).await;
    send_one(&f, "a", b"[]").await;
    let d = f.dispatcher("d1", |c| c).await;
    f.dispatch_until(&d, || async { receiver.count() == 2 }).await;
    let got = receiver.received();
    assert!(
        (got[1].at - got[0].at) >= Duration::from_millis(1900),
        "429 waits the throttle delay"
    );
    f.dispatch_until(&d, || async {
        f.scalar::<String>("SELECT state FROM webhooks.deliveries").await == "failed"
    })
    .await;
    assert_eq!(
        attempts_of(&f, &e).await.len(),
        2,
        "1 + the schedule's 1 retry, then failed"
    );
    f.close().await;
}

#[tokio::test]
async fn a_410_disables_the_endpoint_with_its_reason_and_a_notice() {
    let f = fixture().await;
    let receiver = Receiver::start(|_| Reply::status(410)).await;
    let (e, _) = endpoint(&f, NewEndpoint::new(&receiver.url)).await;
    let mut listener = sqlx::postgres::PgListener::connect_with(&f.db.admin).await.unwrap();
    listener
        .listen(pgstrata_webhooks::dispatch::NOTICE_CHANNEL)
        .await
        .unwrap();
    send_one(&f, "a", b"{}").await;
    let d = f.dispatcher("d1", |c| c).await;
    f.dispatch_until(&d, || async { receiver.count() == 1 }).await;
    let notified = tokio::time::timeout(Duration::from_secs(5), listener.recv())
        .await
        .unwrap()
        .unwrap();
    let body: serde_json::Value = serde_json::from_str(notified.payload()).unwrap();
    assert_eq!(body["kind"], "endpoint_disabled");
    assert_eq!(body["endpoint_id"], e.id.to_string());

    let mut t = tx(&f.app, f.a).await;
    let now = endpoints::get(&mut t, e.id).await.unwrap().unwrap();
    assert!(!now.enabled);
    assert_eq!(now.disabled_reason.as_deref(), Some("the endpoint answered 410 Gone"));
    let notices = history::notices(&mut t, &Page::first(10)).await.unwrap();
    assert_eq!(notices.len(), 1);
    assert_eq!(notices[0].endpoint_id, e.id);
    // While disabled, nothing new is queued for it and nothing is posted.
    let id = send(&mut t, "a", b"{}").await.unwrap();
    assert!(history::deliveries(&mut t, id).await.unwrap().is_empty());
    t.commit().await.unwrap();
    assert_eq!(d.run_once().await.unwrap(), 0);
    assert_eq!(receiver.count(), 1);
    drop(listener);
    f.close().await;
}

#[tokio::test]
async fn an_endpoint_failing_for_the_whole_window_is_disabled_and_replay_recovers_it() {
    let f = fixture().await;
    // Disabled at the first failure at least 2 s after the run's first one.
    f.settings("retry_schedule = '{1,1,1,1,1,1}', jitter = 0, disable_after_s = 2")
        .await;
    let healthy = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let h = healthy.clone();
    let receiver = Receiver::start(move |_| {
        if h.load(std::sync::atomic::Ordering::SeqCst) {
            Reply::status(200)
        } else {
            Reply::status(500)
        }
    })
    .await;
    let (e, _) = endpoint(&f, NewEndpoint::new(&receiver.url)).await;
    let since = chrono::Utc::now();
    let id = send_one(&f, "a", b"{}").await;
    let d = f.dispatcher("d1", |c| c).await;
    f.dispatch_until(&d, || async {
        !f.scalar::<bool>("SELECT enabled FROM webhooks.endpoints").await
    })
    .await;
    let attempts = attempts_of(&f, &e).await;
    assert!(
        (3..=4).contains(&attempts.len()),
        "failed at 0 s, 1 s and 2 s: disabled at the third ({})",
        attempts.len()
    );
    let mut t = tx(&f.app, f.a).await;
    let disabled = endpoints::get(&mut t, e.id).await.unwrap().unwrap();
    assert!(
        disabled
            .disabled_reason
            .unwrap()
            .starts_with("every attempt failed from")
    );
    assert_eq!(history::notices(&mut t, &Page::first(10)).await.unwrap().len(), 1);
    assert_eq!(
        history::replay_failed(&mut t, since, None).await.unwrap(),
        0,
        "a disabled endpoint is not replayed to"
    );
    // The tenant fixes its receiver, enables the endpoint and replays what failed since then.
    healthy.store(true, std::sync::atomic::Ordering::SeqCst);
    let enabled = endpoints::set_enabled(&mut t, e.id, true).await.unwrap();
    assert!(enabled.enabled && enabled.disabled_reason.is_none() && enabled.first_failure_at.is_none());
    assert_eq!(history::replay_failed(&mut t, since, None).await.unwrap(), 1);
    t.commit().await.unwrap();
    f.dispatch_until(&d, || async { receiver.count() == 4 }).await;
    assert_eq!(receiver.received()[3].header("webhook-id"), id.to_string());
    let last = attempts_of(&f, &e).await.pop().unwrap();
    assert_eq!(
        (last.state, last.trigger),
        (AttemptState::Succeeded, AttemptTrigger::Manual)
    );
    f.close().await;
}

#[tokio::test]
async fn redirects_are_failures_and_are_not_followed() {
    let f = fixture().await;
    f.settings("retry_schedule = '{}'").await;
    let target = Receiver::ok().await;
    let location = target.url.clone();
    let redirecting = Receiver::start(move |_| Reply::status(302).header("location", location.clone())).await;
    let (e, _) = endpoint(&f, NewEndpoint::new(&redirecting.url)).await;
    send_one(&f, "a", b"{}").await;
    let d = f.dispatcher("d1", |c| c).await;
    f.dispatch_until(&d, || async {
        f.scalar::<String>("SELECT state FROM webhooks.deliveries").await == "failed"
    })
    .await;
    assert_eq!(redirecting.count(), 1);
    assert_eq!(target.count(), 0, "the Location was not followed");
    assert_eq!(attempts_of(&f, &e).await[0].status_code, Some(302));
    f.close().await;
}

#[tokio::test]
async fn a_slow_endpoint_holds_at_most_its_cap_and_does_not_starve_the_others() {
    let f = fixture().await;
    f.settings("retry_schedule = '{1}', jitter = 0").await;
    let slow = Receiver::start(|_| Reply::status(200).after(Duration::from_millis(1500))).await;
    let fast = Receiver::ok().await;
    endpoint(&f, NewEndpoint::new(&slow.url).event_types(["slow.*"]).max_in_flight(2)).await;
    endpoint(&f, NewEndpoint::new(&fast.url).event_types(["fast.*"])).await;
    for i in 0..6 {
        send_one(&f, "slow.thing", format!("{{\"i\": {i}}}").as_bytes()).await;
    }
    for i in 0..20 {
        send_one(&f, "fast.thing", format!("{{\"i\": {i}}}").as_bytes()).await;
    }
    let d = f.dispatcher("d1", |c| c.concurrency(8).batch(8)).await;
    let token = pgstrata_core::CancellationToken::new();
    let run = {
        let (d, token) = (d.clone(), token.clone());
        tokio::spawn(async move { d.run(token).await })
    };
    let start = std::time::Instant::now();
    while fast.count() < 20 {
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "the fast endpoint was starved"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(
        slow.count() <= 4,
        "the fast endpoint finished while the slow one was still going"
    );
    while slow.count() < 6 {
        assert!(start.elapsed() < Duration::from_secs(20));
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    token.cancel();
    run.await.unwrap();
    assert_eq!(
        slow.max_in_flight.load(std::sync::atomic::Ordering::SeqCst),
        2,
        "the cap held"
    );
    f.close().await;
}

#[tokio::test]
async fn a_timeout_is_a_failed_attempt_and_the_retry_reaches_the_receiver() {
    let f = fixture().await;
    f.settings("retry_schedule = '{1}', jitter = 0").await;
    let receiver = Receiver::start(|n| {
        if n == 0 {
            Reply::status(200).after(Duration::from_secs(3))
        } else {
            Reply::status(200)
        }
    })
    .await;
    let (e, _) = endpoint(&f, NewEndpoint::new(&receiver.url)).await;
    send_one(&f, "a", b"{}").await;
    let d = f.dispatcher("d1", |c| c.timeout(Duration::from_millis(500))).await;
    f.dispatch_until(&d, || async {
        receiver.count() == 2 && f.scalar::<String>("SELECT state FROM webhooks.deliveries").await == "succeeded"
    })
    .await;
    let attempts = attempts_of(&f, &e).await;
    assert_eq!(attempts[0].state, AttemptState::Failed);
    assert!(
        attempts[0].error.as_deref().unwrap().contains("timed out"),
        "{:?}",
        attempts[0].error
    );
    assert_eq!(attempts[1].state, AttemptState::Succeeded);
    f.close().await;
}

#[tokio::test]
async fn a_dispatcher_killed_mid_request_is_rescued_and_the_receiver_sees_the_same_webhook_id() {
    let f = fixture().await;
    // The first request hangs (the dispatcher dies while waiting); the next one succeeds.
    let receiver = Receiver::start(|n| {
        if n == 0 {
            Reply::status(200).after(Duration::from_secs(60))
        } else {
            Reply::status(200)
        }
    })
    .await;
    let (e, _) = endpoint(&f, NewEndpoint::new(&receiver.url)).await;
    let id = send_one(&f, "a", b"{}").await;
    // Lease = 1 s timeout + 1 s margin.
    let doomed = f
        .dispatcher("doomed", |c| {
            c.timeout(Duration::from_secs(1)).lease_margin(Duration::from_secs(1))
        })
        .await;
    let task = tokio::spawn(async move { doomed.run_once().await });
    let start = std::time::Instant::now();
    while receiver.count() == 0 {
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "the first request never came"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    task.abort(); // killed mid-request: the claim is committed, no outcome ever reported
    let _ = task.await;
    let d = f.dispatcher("survivor", |c| c).await;
    f.dispatch_until(&d, || async { receiver.count() == 2 }).await;
    let got = receiver.received();
    assert_eq!(got[0].header("webhook-id"), id.to_string());
    assert_eq!(got[1].header("webhook-id"), id.to_string());
    let attempts = attempts_of(&f, &e).await;
    let states: Vec<_> = attempts.iter().map(|a| (a.attempt, a.state)).collect();
    assert_eq!(states, vec![(1, AttemptState::Lost), (2, AttemptState::Succeeded)]);
    assert!(attempts[0].error.as_deref().unwrap().contains("lease expired"));
    f.close().await;
}

#[tokio::test]
async fn replay_of_one_message_is_a_fresh_manual_attempt_with_the_same_id() {
    let f = fixture().await;
    let receiver = Receiver::ok().await;
    let late = Receiver::ok().await;
    let (e, _) = endpoint(&f, NewEndpoint::new(&receiver.url)).await;
    let id = send_one(&f, "a", br#"{"x": 1}"#).await;
    let d = f.dispatcher("d1", |c| c).await;
    f.dispatch_until(&d, || async { receiver.count() == 1 }).await;
    // A delivery still in flight is not replayed; a finished one is, each time asked.
    let mut t = tx(&f.app, f.a).await;
    assert_eq!(history::replay(&mut t, id, None).await.unwrap(), 1);
    assert_eq!(history::replay(&mut t, id, None).await.unwrap(), 0, "already queued");
    // An endpoint added later gets the message when asked by name.
    let added = endpoints::create(&mut t, &NewEndpoint::new(&late.url)).await.unwrap();
    assert_eq!(history::replay(&mut t, id, Some(added.id)).await.unwrap(), 1);
    t.commit().await.unwrap();
    let mut t = tx(&f.app, f.a).await;
    let missing = pgstrata_webhooks::MessageId::new();
    assert!(matches!(
        history::replay(&mut t, missing, None).await,
        Err(pgstrata_webhooks::Error::NotFound { .. })
    ));
    drop(t);
    f.dispatch_until(&d, || async { receiver.count() == 2 && late.count() == 1 })
        .await;
    assert_eq!(receiver.received()[1].header("webhook-id"), id.to_string());
    assert_eq!(late.received()[0].header("webhook-id"), id.to_string());
    let attempts = attempts_of(&f, &e).await;
    assert_eq!(attempts.len(), 2);
    assert_eq!(attempts[1].trigger, AttemptTrigger::Manual);
    // A second manual replay is another fresh attempt, never swallowed.
    let mut t = tx(&f.app, f.a).await;
    assert_eq!(history::replay(&mut t, id, Some(e.id)).await.unwrap(), 1);
    t.commit().await.unwrap();
    f.dispatch_until(&d, || async { receiver.count() == 3 }).await;
    assert_eq!(attempts_of(&f, &e).await.len(), 3);
    f.close().await;
}

#[tokio::test]
async fn a_fifo_endpoint_receives_in_send_order_one_at_a_time() {
    let f = fixture().await;
    f.settings("retry_schedule = '{1}', jitter = 0").await;
    // The first message fails once: the others wait behind it.
    let receiver = Receiver::start(|n| {
        if n == 0 {
            Reply::status(500)
        } else {
            Reply::status(200).after(Duration::from_millis(20))
        }
    })
    .await;
    endpoint(&f, NewEndpoint::new(&receiver.url).fifo(true)).await;
    for i in 0..8 {
        send_one(&f, "a", format!("{{\"i\": {i}}}").as_bytes()).await;
    }
    let d = f.dispatcher("d1", |c| c.concurrency(8).batch(8)).await;
    f.dispatch_until(&d, || async { receiver.count() == 9 }).await;
    let order: Vec<String> = receiver
        .received()
        .iter()
        .map(|r| String::from_utf8(r.body.clone()).unwrap())
        .collect();
    let expected: Vec<String> = std::iter::once("{\"i\": 0}".to_owned())
        .chain((0..8).map(|i| format!("{{\"i\": {i}}}")))
        .collect();
    assert_eq!(order, expected);
    assert_eq!(receiver.max_in_flight.load(std::sync::atomic::Ordering::SeqCst), 1);
    f.close().await;
}

#[tokio::test]
async fn the_ssrf_guard_refuses_every_private_address_class_unless_allow_listed() {
    let f = fixture().await;
    f.settings("retry_schedule = '{}'").await;
    let receiver = Receiver::ok().await;
    let port = receiver
        .url
        .split(':')
        .nth(2)
        .unwrap()
        .split('/')
        .next()
        .unwrap()
        .to_owned();
    let urls = [
        format!("http://127.0.0.1:{port}/hook"),
        format!("http://localhost:{port}/hook"), // a name resolving to loopback
        format!("http://[::ffff:127.0.0.1]:{port}/hook"),
        format!("http://[::1]:{port}/hook"),
        "http://169.254.169.254/latest/meta-data".to_owned(),
        "http://10.0.0.1/".to_owned(),
        "http://100.64.0.1/".to_owned(),
        "http://192.168.0.1/".to_owned(),
        "http://[fd00::1]/".to_owned(),
        "http://[64:ff9b::7f00:1]/".to_owned(),
        "http://224.0.0.1/".to_owned(),
        "http://0.0.0.0/".to_owned(),
    ];
    let mut t = tx(&f.app, f.a).await;
    for url in &urls {
        endpoints::create(&mut t, &NewEndpoint::new(url)).await.unwrap();
    }
    send(&mut t, "a", b"{}").await.unwrap();
    t.commit().await.unwrap();
    let guarded = pgstrata_webhooks::Dispatcher::new(
        f.worker.clone(),
        DispatcherConfig::new("guarded")
            .policy(AddressPolicy::public_only())
            .concurrency(16)
            .batch(16),
    )
    .await
    .unwrap();
    f.dispatch_until(&guarded, || async {
        f.scalar::<i64>("SELECT count(*) FROM webhooks.deliveries WHERE state = 'failed'")
            .await
            == urls.len() as i64
    })
    .await;
    assert_eq!(receiver.count(), 0, "nothing reached the loopback receiver");
    let errors: Vec<(String, Option<String>)> = sqlx::query_as("SELECT url, error FROM webhooks.attempts ORDER BY url")
        .fetch_all(&f.db.admin)
        .await
        .unwrap();
    assert_eq!(errors.len(), urls.len());
    for (url, error) in errors {
        let error = error.unwrap_or_default();
        assert!(error.contains("refused address"), "{url}: {error}");
    }
    // The same endpoints through a dispatcher that allow-lists 127.0.0.1 reach the receiver
    // for 127.0.0.1 and localhost (resolved to 127.0.0.1) only.
    let mut t = tx(&f.app, f.a).await;
    send(&mut t, "a", b"{}").await.unwrap();
    t.commit().await.unwrap();
    let d = f.dispatcher("allowing", |c| c.concurrency(16).batch(16)).await;
    f.dispatch_until(&d, || async {
        f.scalar::<i64>("SELECT count(*) FROM webhooks.deliveries WHERE state IN ('failed', 'succeeded')")
            .await
            == 2 * urls.len() as i64
    })
    .await;
    assert!((1..=2).contains(&receiver.count()), "{}", receiver.count());
    f.close().await;
}

#[tokio::test]
async fn https_receivers_get_signed_deliveries_over_tls_checked_against_the_roots() {
    let f = fixture().await;
    f.settings("retry_schedule = '{}'").await;
    let tls = pgstrata_webhooks::dispatch::TlsConnector::builder()
        .add_roots_pem(common::TEST_ROOT_PEM)
        .unwrap()
        .build()
        .unwrap();
    // By name (SNI localhost, resolved to 127.0.0.1) and by address (the certificate's IP SAN).
    let (by_name, _) = Receiver::start_https("localhost", |_| Reply::status(200)).await;
    let (by_ip, _) = Receiver::start_https("127.0.0.1", |_| Reply::status(200)).await;
    let (e1, secret) = endpoint(&f, NewEndpoint::new(&by_name.url)).await;
    let (e2, _) = endpoint(&f, NewEndpoint::new(&by_ip.url)).await;
    let payload = br#"{"over":"tls"}"#;
    let id = send_one(&f, "invoice.paid", payload).await;
    let d = f.dispatcher("tls", |c| c.tls(tls.clone())).await;
    f.dispatch_until(&d, || async { by_name.count() == 1 && by_ip.count() == 1 })
        .await;
    f.dispatch_until(&d, || async {
        f.scalar::<i64>("SELECT count(*) FROM webhooks.deliveries WHERE state = 'succeeded'")
            .await
            == 2
    })
    .await;
    let got = &by_name.received()[0];
    assert_eq!(got.body, payload);
    assert_eq!(got.header("webhook-id"), id.to_string());
    Verifier::new(vec![secret])
        .verify_headers(&got.headers, &got.body)
        .unwrap();
    for e in [&e1, &e2] {
        assert_eq!(attempts_of(&f, e).await[0].status_code, Some(200));
    }

    // A dispatcher with the webpki roots only: every handshake fails (the message goes to the
    // three endpoints), each attempt is a failure without a status that names TLS, and no
    // request got through.
    let (strict_receiver, failed_handshakes) = Receiver::start_https("localhost", |_| Reply::status(200)).await;
    let (e3, _) = endpoint(&f, NewEndpoint::new(&strict_receiver.url)).await;
    send_one(&f, "invoice.paid", b"{}").await;
    let strict = f.dispatcher("webpki-only", |c| c).await;
    f.dispatch_until(&strict, || async {
        f.scalar::<i64>("SELECT count(*) FROM webhooks.deliveries WHERE state = 'failed'")
            .await
            == 3
    })
    .await;
    let a = &attempts_of(&f, &e3).await[0];
    assert_eq!(a.status_code, None);
    let error = a.error.clone().unwrap_or_default();
    assert!(
        error.contains("TLS with localhost") && error.contains("UnknownIssuer"),
        "{error}"
    );
    assert_eq!(strict_receiver.count(), 0);
    assert_eq!((by_name.count(), by_ip.count()), (1, 1));
    assert!(failed_handshakes.load(std::sync::atomic::Ordering::SeqCst) >= 1);
    f.close().await;
}

#[tokio::test]
async fn complete_many_reports_a_mixed_batch_in_one_statement_and_ignores_stale_attempts() {
    use pgstrata_webhooks::dispatch::{Answer, claim, complete_many};
    let f = fixture().await;
    let (e, _) = endpoint(&f, NewEndpoint::new("https://receiver.example/hook")).await;
    for i in 0..3 {
        send_one(&f, "invoice.paid", format!(r#"{{"n": {i}}}"#).as_bytes()).await;
    }
    let mut conn = f.worker.acquire().await.unwrap();
    let claimed = claim(&mut conn, 10, "batch", Duration::from_secs(60)).await.unwrap();
    assert_eq!(claimed.len(), 3);
    let answer = |status: Option<u16>, error: Option<&str>| Answer {
        status,
        body: "hi".to_owned(),
        retry_after_s: Some(30),
        duration: Duration::from_millis(7),
        error: error.map(str::to_owned),
    };
    let ok = answer(Some(200), None);
    let down = answer(None, Some("connection refused"));
    let mut stale = claimed[2].clone();
    stale.attempt += 1;
    let outcomes = [(&claimed[0], &ok), (&claimed[1], &down), (&stale, &ok)];
    let states = complete_many(&mut conn, &outcomes).await.unwrap();
    assert_eq!(
        states,
        vec![
            (claimed[0].delivery_id, Some("succeeded".to_owned())),
            (claimed[1].delivery_id, Some("pending".to_owned())),
        ],
        "the stale success is not reported"
    );
    let attempts = attempts_of(&f, &e).await;
    let by_delivery = |d| attempts.iter().find(|a| a.delivery_id == d).unwrap();
    assert_eq!(by_delivery(claimed[0].delivery_id).state, AttemptState::Succeeded);
    assert_eq!(by_delivery(claimed[0].delivery_id).duration_ms, Some(7));
    assert_eq!(by_delivery(claimed[1].delivery_id).state, AttemptState::Failed);
    assert_eq!(
        by_delivery(claimed[1].delivery_id).error.as_deref(),
        Some("connection refused")
    );
    assert_eq!(
        by_delivery(claimed[2].delivery_id).state,
        AttemptState::Running,
        "a report for another attempt changes nothing"
    );
    let wait: f64 = f
        .scalar(&format!(
            "SELECT extract(epoch FROM next_attempt_at - now())::float8 FROM webhooks.deliveries WHERE id = {}",
            claimed[1].delivery_id
        ))
        .await;
    assert!(wait > 25.0, "the failure waits at least its Retry-After: {wait}");
    assert!(
        f.scalar::<Option<chrono::DateTime<chrono::Utc>>>("SELECT first_failure_at FROM webhooks.endpoints")
            .await
            .is_some(),
        "the failure opened the endpoint's failure run"
    );

    // Over 1000 outcomes: refused before any SQL, naming the field.
    let many: Vec<(&pgstrata_webhooks::dispatch::Claimed, &Answer)> = (0..1001).map(|_| (&claimed[2], &ok)).collect();
    let err = complete_many(&mut conn, &many).await.unwrap_err();
    assert!(
        matches!(err, pgstrata_webhooks::Error::InvalidInput { field: "outcomes", .. }),
        "{err:?}"
    );
    assert_eq!(
        f.scalar::<String>(&format!(
            "SELECT state FROM webhooks.deliveries WHERE id = {}",
            claimed[2].delivery_id
        ))
        .await,
        "running"
    );
    drop(conn);
    f.close().await;
}
