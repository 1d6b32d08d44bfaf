//! The request path's API: fan-out by pattern and filter in the sending transaction,
//! idempotency keys, bad input refused with a typed error and nothing written, erasure and
//! retention.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::{Fixture, fixture, tx};
use pgstrata_core::Page;
use pgstrata_webhooks::history;
use pgstrata_webhooks::{Error, NewEndpoint, NewMessage, endpoints, send, send_message};

async fn counts(f: &Fixture) -> (i64, i64, i64, i64) {
    sqlx::query_as(
        "SELECT (SELECT count(*) FROM webhooks.endpoints), (SELECT count(*) FROM webhooks.secrets),
                (SELECT count(*) FROM webhooks.messages), (SELECT count(*) FROM webhooks.deliveries)",
    )
    .fetch_one(&f.db.admin)
    .await
    .unwrap()
}

#[tokio::test]
async fn send_fans_out_by_pattern_and_filter_and_only_if_the_transaction_commits() {
    let f = fixture().await;
    let mut t = tx(&f.app, f.a).await;
    let all = endpoints::create(&mut t, &NewEndpoint::new("https://a.example/all"))
        .await
        .unwrap();
    let invoices = endpoints::create(
        &mut t,
        &NewEndpoint::new("https://a.example/inv").event_types(["invoice.*"]),
    )
    .await
    .unwrap();
    let created = endpoints::create(
        &mut t,
        &NewEndpoint::new("https://a.example/c").event_types(["*.created"]),
    )
    .await
    .unwrap();
    let pro = endpoints::create(
        &mut t,
        &NewEndpoint::new("https://a.example/pro")
            .event_types(["user.created"])
            .payload_filter(serde_json::json!({"plan": "pro"})),
    )
    .await
    .unwrap();
    let off = endpoints::create(&mut t, &NewEndpoint::new("https://a.example/off").enabled(false))
        .await
        .unwrap();
    assert_eq!(off.disabled_reason.as_deref(), Some("disabled by the tenant"));
    t.commit().await.unwrap();

    let cases: [(&str, &str, Vec<_>); 4] = [
        ("invoice.paid", r#"{"plan": "pro"}"#, vec![all.id, invoices.id]),
        ("invoice.payment.failed", "{}", vec![all.id, invoices.id]),
        (
            "user.created",
            r#"{"plan": "pro", "n": 1}"#,
            vec![all.id, created.id, pro.id],
        ),
        ("user.created", r#"{"plan": "free"}"#, vec![all.id, created.id]),
    ];
    for (event_type, payload, mut expected) in cases {
        let mut t = tx(&f.app, f.a).await;
        let id = send(&mut t, event_type, payload.as_bytes()).await.unwrap();
        let mut got: Vec<_> = history::deliveries(&mut t, id)
            .await
            .unwrap()
            .iter()
            .map(|d| d.endpoint_id)
            .collect();
        got.sort();
        expected.sort();
        assert_eq!(got, expected, "{event_type} {payload}");
        t.commit().await.unwrap();
    }
    // Rolled back with the business write: no message, no delivery.
    let before = counts(&f).await;
    let mut t = tx(&f.app, f.a).await;
    send(&mut t, "invoice.paid", b"{}").await.unwrap();
    t.rollback().await.unwrap();
    assert_eq!(counts(&f).await, before);
    // Tenant B's sends reach none of A's endpoints.
    let mut t = tx(&f.app, f.b).await;
    let id = send(&mut t, "invoice.paid", b"{}").await.unwrap();
    assert!(history::deliveries(&mut t, id).await.unwrap().is_empty());
    t.commit().await.unwrap();
    f.close().await;
}

#[tokio::test]
async fn an_idempotency_key_returns_the_first_message_and_refuses_other_content() {
    let f = fixture().await;
    let mut t = tx(&f.app, f.a).await;
    endpoints::create(&mut t, &NewEndpoint::new("https://a.example/"))
        .await
        .unwrap();
    let m = NewMessage::json("order.created", &serde_json::json!({"order": 1}))
        .unwrap()
        .idempotency_key("order-1");
    let first = send_message(&mut t, &m).await.unwrap();
    let again = send_message(&mut t, &m).await.unwrap();
    assert_eq!(first, again);
    let other = NewMessage::raw("order.created", br#"{"order": 2}"#.to_vec()).idempotency_key("order-1");
    match send_message(&mut t, &other).await {
        Err(Error::IdempotencyConflict { existing }) => assert_eq!(existing, Some(first)),
        other => panic!("expected IdempotencyConflict, got {other:?}"),
    }
    drop(t);
    // Another tenant may use the same key.
    let mut t = tx(&f.app, f.b).await;
    assert_ne!(send_message(&mut t, &m).await.unwrap(), first);
    t.commit().await.unwrap();
    f.close().await;
}

#[tokio::test]
async fn bad_input_gets_a_typed_error_naming_the_field_and_writes_nothing() {
    let f = fixture().await;
    f.settings("max_payload_bytes = 1024").await;
    let mut t = tx(&f.app, f.a).await;
    let ok = endpoints::create(&mut t, &NewEndpoint::new("https://a.example/"))
        .await
        .unwrap();
    t.commit().await.unwrap();
    let before = counts(&f).await;

    let bad_endpoints = [
        (NewEndpoint::new("not a url"), "url"),
        (NewEndpoint::new("ftp://a.example/"), "url"),
        (NewEndpoint::new("https://user:pw@a.example/"), "url"),
        (NewEndpoint::new("https://"), "url"),
        (
            NewEndpoint::new("https://a.example/").event_types(["invoice..paid"]),
            "event_types",
        ),
        (
            NewEndpoint::new("https://a.example/").event_types(["invoice.pa*d"]),
            "event_types",
        ),
        (
            NewEndpoint::new("https://a.example/").event_types(Vec::<String>::new()),
            "event_types",
        ),
        (
            NewEndpoint::new("https://a.example/").payload_filter(serde_json::json!([1])),
            "payload_filter",
        ),
        (
            NewEndpoint::new("https://a.example/").header("webhook-signature", "forged"),
            "headers",
        ),
        (
            NewEndpoint::new("https://a.example/").header("Host", "internal"),
            "headers",
        ),
        (
            NewEndpoint::new("https://a.example/").header("x-a", "line\r\nbreak"),
            "headers",
        ),
        (NewEndpoint::new("https://a.example/").max_in_flight(0), "max_in_flight"),
        (NewEndpoint::new("https://a.example/").rate_limit(0), "rate_limit"),
    ];
    for (endpoint, field) in bad_endpoints {
        let mut t = tx(&f.app, f.a).await;
        match endpoints::create(&mut t, &endpoint).await {
            Err(Error::InvalidInput { field: got, .. }) => assert_eq!(got, field, "{endpoint:?}"),
            other => panic!("{endpoint:?}: expected InvalidInput {field}, got {other:?}"),
        }
    }
    let big = format!("{{\"x\": \"{}\"}}", "a".repeat(2000));
    let bad_messages = [
        (NewMessage::raw("invoice paid", b"{}".to_vec()), "event_type"),
        (NewMessage::raw("", b"{}".to_vec()), "event_type"),
        (NewMessage::raw("a", b"{not json".to_vec()), "payload"),
        (NewMessage::raw("a", vec![0xff, 0xfe]), "payload"),
        (
            NewMessage::raw("a", b"{}".to_vec()).idempotency_key(""),
            "idempotency_key",
        ),
    ];
    for (message, field) in bad_messages {
        let mut t = tx(&f.app, f.a).await;
        match send_message(&mut t, &message).await {
            Err(Error::InvalidInput { field: got, .. }) => assert_eq!(got, field, "{message:?}"),
            other => panic!("{message:?}: expected InvalidInput {field}, got {other:?}"),
        }
    }
    let mut t = tx(&f.app, f.a).await;
    match send(&mut t, "a", big.as_bytes()).await {
        Err(Error::TooLarge { field, limit, .. }) => assert_eq!((field, limit), ("payload", Some(1024))),
        other => panic!("expected TooLarge, got {other:?}"),
    }
    drop(t);
    // The same refusals from SQL, past the Rust checks.
    let mut t = tx(&f.app, f.a).await;
    let sql_refusals = [
        "INSERT INTO webhooks.endpoints (tenant_id, url) VALUES (tenancy.current_tenant_id(), 'javascript:alert(1)')",
        "INSERT INTO webhooks.endpoints (tenant_id, url, event_types) VALUES (tenancy.current_tenant_id(), 'https://x/', '{a..b}')",
        "SELECT webhooks.send('a b', '{}'::bytea)",
        "SELECT webhooks.send('a', 'not json'::bytea)",
    ];
    for sql in sql_refusals {
        let mut sp = sqlx::Connection::begin(&mut *t).await.unwrap();
        let e = pgstrata_core::sql::trusted(sql.to_owned())
            .execute(&mut *sp)
            .await
            .unwrap_err();
        let e = Error::from(e);
        assert!(matches!(e, Error::InvalidInput { .. }), "{sql}: {e:?}");
    }
    drop(t);
    // Updating to bad values and rotating with a bad grace change nothing either.
    let mut t = tx(&f.app, f.a).await;
    assert!(matches!(
        endpoints::update(&mut t, ok.id, &NewEndpoint::new("gopher://x/")).await,
        Err(Error::InvalidInput { field: "url", .. })
    ));
    assert!(matches!(
        endpoints::rotate_secret(&mut t, ok.id, std::time::Duration::from_secs(90 * 86_400), None).await,
        Err(Error::InvalidInput { field: "grace", .. })
    ));
    assert!(matches!(
        endpoints::update(
            &mut t,
            pgstrata_webhooks::EndpointId::new(),
            &NewEndpoint::new("https://x/")
        )
        .await,
        Err(Error::NotFound { .. })
    ));
    drop(t);
    assert_eq!(counts(&f).await, before);
    f.close().await;
}

#[tokio::test]
async fn limits_per_tenant_and_endpoint_hold() {
    let f = fixture().await;
    f.settings("max_endpoints = 3, max_secrets = 2").await;
    let mut t = tx(&f.app, f.a).await;
    let mut first = None;
    for i in 0..3 {
        let e = endpoints::create(&mut t, &NewEndpoint::new(format!("https://a.example/{i}")))
            .await
            .unwrap();
        first.get_or_insert(e.id);
    }
    t.commit().await.unwrap();
    let mut t = tx(&f.app, f.a).await;
    match endpoints::create(&mut t, &NewEndpoint::new("https://a.example/4")).await {
        Err(Error::TooLarge { field, limit, .. }) => assert_eq!((field, limit), ("endpoints", Some(3))),
        other => panic!("expected TooLarge endpoints, got {other:?}"),
    }
    drop(t);
    let mut t = tx(&f.app, f.a).await;
    let e = first.unwrap();
    endpoints::rotate_secret(&mut t, e, std::time::Duration::from_secs(60), None)
        .await
        .unwrap();
    t.commit().await.unwrap();
    let mut t = tx(&f.app, f.a).await;
    match endpoints::rotate_secret(&mut t, e, std::time::Duration::from_secs(60), None).await {
        Err(Error::TooLarge { field, limit, .. }) => assert_eq!((field, limit), ("secrets", Some(2))),
        other => panic!("expected TooLarge secrets, got {other:?}"),
    }
    drop(t);
    // A rotation without grace ends the old key at once, and expired keys are cleared.
    let mut t = tx(&f.app, f.a).await;
    for _ in 0..5 {
        endpoints::rotate_secret(&mut t, e, std::time::Duration::ZERO, None)
            .await
            .unwrap();
    }
    // The newest key, and the first one still in its 60 s grace; none of the grace-0 ones.
    assert_eq!(endpoints::secrets(&mut t, e).await.unwrap().len(), 2);
    t.commit().await.unwrap();
    f.close().await;
}

#[tokio::test]
async fn deleting_an_endpoint_or_erasing_removes_payloads_and_retention_prunes() {
    let f = fixture().await;
    let mut t = tx(&f.app, f.a).await;
    let one = endpoints::create(
        &mut t,
        &NewEndpoint::new("https://a.example/1").event_types(["only.one"]),
    )
    .await
    .unwrap();
    endpoints::create(
        &mut t,
        &NewEndpoint::new("https://a.example/2").event_types(["shared.*"]),
    )
    .await
    .unwrap();
    let both = endpoints::create(
        &mut t,
        &NewEndpoint::new("https://a.example/3").event_types(["shared.*", "only.one"]),
    )
    .await
    .unwrap();
    let only = send(&mut t, "only.one", b"{}").await.unwrap();
    let shared = send(&mut t, "shared.x", b"{}").await.unwrap();
    t.commit().await.unwrap();
    let mut t = tx(&f.app, f.b).await;
    let b_message = send(&mut t, "x", b"{}").await.unwrap();
    t.commit().await.unwrap();

    // Deleting `one` keeps `only` (still owed to `both`); deleting `both` then erases it.
    let mut t = tx(&f.app, f.a).await;
    endpoints::delete(&mut t, one.id).await.unwrap();
    assert!(history::message(&mut t, only).await.unwrap().is_some());
    endpoints::delete(&mut t, both.id).await.unwrap();
    assert!(
        history::message(&mut t, only).await.unwrap().is_none(),
        "no endpoint needs it any more"
    );
    assert!(history::message(&mut t, shared).await.unwrap().is_some());
    assert!(matches!(
        endpoints::delete(&mut t, both.id).await,
        Err(Error::NotFound { .. })
    ));
    // The tenant's erasure: every message goes, endpoints stay.
    assert_eq!(history::erase(&mut t).await.unwrap(), 1);
    assert!(history::message(&mut t, shared).await.unwrap().is_none());
    assert_eq!(endpoints::list(&mut t, &Page::first(10)).await.unwrap().len(), 1);
    t.commit().await.unwrap();
    let mut t = tx(&f.app, f.b).await;
    assert!(
        history::message(&mut t, b_message).await.unwrap().is_some(),
        "B's messages untouched"
    );
    t.commit().await.unwrap();

    // Retention: B's plan keeps 1 day; a message 2 days old is pruned by the worker, a fresh
    // one stays.
    sqlx::query("INSERT INTO webhooks.tenant_settings (tenant_id, retention_days) VALUES ($1, 1)")
        .bind(f.b.0)
        .execute(&f.db.admin)
        .await
        .unwrap();
    let mut t = tx(&f.app, f.b).await;
    let fresh = send(&mut t, "x", b"{}").await.unwrap();
    let m = history::message(&mut t, fresh).await.unwrap().unwrap();
    assert!(m.expires_at - m.created_at == chrono::Duration::days(1));
    t.commit().await.unwrap();
    sqlx::query("UPDATE webhooks.messages SET expires_at = now() - interval '1 day' WHERE id = $1")
        .bind(b_message.0)
        .execute(&f.db.admin)
        .await
        .unwrap();
    let mut w = f.worker.acquire().await.unwrap();
    assert_eq!(history::prune(&mut w, 1000).await.unwrap(), 1);
    assert_eq!(history::prune(&mut w, 1000).await.unwrap(), 0);
    drop(w);
    let mut t = tx(&f.app, f.b).await;
    assert!(history::message(&mut t, b_message).await.unwrap().is_none());
    assert!(history::message(&mut t, fresh).await.unwrap().is_some());
    drop(t);
    f.close().await;
}
