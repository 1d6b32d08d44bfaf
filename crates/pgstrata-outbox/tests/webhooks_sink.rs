//! The webhooks sink: each message becomes one webhook of its tenant (`webhooks.send`) in the
//! relay's transaction, queued for the tenant's matching endpoints only, exactly once; a
//! refused message rolls its partition back with nothing sent; the entry point is the
//! worker's alone. On this binary's own server, since relays read below the server-wide
//! horizon.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::{OwnDb, own_db, tx};
use pgstrata_outbox::sink::WebhooksSink;
use pgstrata_outbox::{Relay, publish};
use pgstrata_webhooks::{NewEndpoint, NewMessage, endpoints};
use serde_json::json;

/// The tests of this binary share its server and hold the horizon: one at a time.
static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

async fn db(name: &str) -> OwnDb {
    own_db(name, &common::migrator_with(&pgstrata_webhooks::MODULE)).await
}

/// Publishes `n` messages `invoice.issued` / `invoice.paid` alternately in `tenant`.
async fn publish_invoices(db: &OwnDb, tenant: pgstrata_core::TenantId, n: usize) {
    let mut t = tx(&db.app, tenant).await;
    for i in 0..n {
        let event = if i % 2 == 0 { "invoice.issued" } else { "invoice.paid" };
        publish::publish(&mut t, "invoice", &format!("inv-{}", i / 2), event, &json!({ "i": i }))
            .await
            .unwrap();
    }
    t.commit().await.unwrap();
}

#[tokio::test]
async fn each_message_becomes_one_webhook_of_its_tenant_queued_for_its_endpoints() {
    let _serial = SERIAL.lock().await;
    let db = db("webhooks_sink").await;
    // A listens to paid invoices, B to everything.
    let mut t = tx(&db.app, db.a).await;
    endpoints::create(
        &mut t,
        &NewEndpoint::new("https://a.example/paid").event_types(["invoice.paid"]),
    )
    .await
    .unwrap();
    t.commit().await.unwrap();
    let mut t = tx(&db.app, db.b).await;
    endpoints::create(&mut t, &NewEndpoint::new("https://b.example/all"))
        .await
        .unwrap();
    t.commit().await.unwrap();
    publish_invoices(&db, db.a, 6).await;
    publish_invoices(&db, db.b, 4).await;

    let relay = Relay::new(db.worker.clone(), WebhooksSink::new("hooks"));
    assert_eq!(relay.run_until_idle().await.unwrap(), 10);
    assert_eq!(relay.run_until_idle().await.unwrap(), 0, "nothing is sent twice");

    // One webhook per message, in its own tenant, with the message's type, payload and key.
    let sent: Vec<(uuid::Uuid, uuid::Uuid, String, String, String)> = sqlx::query_as(
        "SELECT w.tenant_id, m.tenant_id, w.event_type, w.idempotency_key, convert_from(w.payload, 'UTF8')
           FROM webhooks.messages w
           JOIN outbox.messages m ON w.idempotency_key = 'outbox:' || m.id
          ORDER BY m.id",
    )
    .fetch_all(&db.admin)
    .await
    .unwrap();
    assert_eq!(sent.len(), 10, "one webhook per message");
    let outbox: Vec<(String, serde_json::Value)> =
        sqlx::query_as("SELECT event_type, payload FROM outbox.messages ORDER BY id")
            .fetch_all(&db.admin)
            .await
            .unwrap();
    for ((webhook_tenant, message_tenant, event_type, _, payload), (ty, body)) in sent.iter().zip(&outbox) {
        assert_eq!(webhook_tenant, message_tenant);
        assert_eq!(event_type, ty);
        assert_eq!(&serde_json::from_str::<serde_json::Value>(payload).unwrap(), body);
    }
    // Deliveries: A's endpoint gets A's three paid invoices, B's endpoint B's four messages.
    let deliveries: Vec<(uuid::Uuid, i64)> =
        sqlx::query_as("SELECT d.tenant_id, count(*) FROM webhooks.deliveries d GROUP BY 1 ORDER BY 2")
            .fetch_all(&db.admin)
            .await
            .unwrap();
    assert_eq!(deliveries, vec![(db.a.0, 3), (db.b.0, 4)]);
    // The application of A sees its own six webhooks only.
    let mut t = tx(&db.app, db.a).await;
    let seen: i64 = sqlx::query_scalar("SELECT count(*) FROM webhooks.messages")
        .fetch_one(&mut *t)
        .await
        .unwrap();
    assert_eq!(seen, 6);
}

#[tokio::test]
async fn a_refused_webhook_rolls_its_partition_back_and_a_mapper_can_skip_or_rename() {
    let _serial = SERIAL.lock().await;
    let db = db("webhooks_sink_refused").await;
    let mut t = tx(&db.app, db.a).await;
    for (key, event) in [("k-1", "Invoice Issued"), ("k-2", "invoice.paid")] {
        publish::publish(&mut t, "invoice", key, event, &json!({}))
            .await
            .unwrap();
    }
    t.commit().await.unwrap();

    // "Invoice Issued" is no webhook event type: its partition fails and sends nothing; the
    // other message (another key) goes.
    let strict = Relay::new(db.worker.clone(), WebhooksSink::new("strict"));
    let delivered = strict.run_until_idle().await.unwrap();
    let sent: Vec<String> = sqlx::query_scalar("SELECT event_type FROM webhooks.messages ORDER BY event_type")
        .fetch_all(&db.admin)
        .await
        .unwrap();
    assert_eq!(sent.len(), delivered);
    assert!(!sent.iter().any(|e| e.contains(' ')), "{sent:?}");
    let behind: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM outbox.messages m JOIN outbox.checkpoints c ON c.partition = m.partition
          WHERE c.sink = 'strict' AND (m.txid, m.id) > (c.after_txid, c.after_id)",
    )
    .fetch_one(&db.admin)
    .await
    .unwrap();
    assert!(behind >= 1, "the refused message's checkpoint did not move");

    // A mapper renames what it can and skips what it will not send.
    let mapped = Relay::new(
        db.worker.clone(),
        WebhooksSink::new("mapped").map(|m| {
            (m.aggregate_id == "k-1").then(|| NewMessage::raw("invoice.issued", m.payload.to_string().into_bytes()))
        }),
    );
    assert_eq!(mapped.run_until_idle().await.unwrap(), 2);
    let keys: Vec<(String, String)> =
        sqlx::query_as("SELECT event_type, idempotency_key FROM webhooks.messages WHERE event_type = 'invoice.issued'")
            .fetch_all(&db.admin)
            .await
            .unwrap();
    assert_eq!(keys.len(), 1);
    assert!(keys[0].1.starts_with("outbox:"));
}

#[tokio::test]
async fn only_the_worker_hands_messages_to_webhooks_and_only_in_a_tenant() {
    let _serial = SERIAL.lock().await;
    let db = db("webhooks_sink_attacks").await;
    let call = "SELECT outbox.send_webhooks(ARRAY['invoice.paid'], ARRAY['{}'::bytea], ARRAY['k'])";
    let code = |r: Result<sqlx::postgres::PgQueryResult, sqlx::Error>| {
        r.err()
            .and_then(|e| e.as_database_error().and_then(|d| d.code().map(|c| c.into_owned())))
    };
    // The request path may not call it, in its tenant or not.
    let mut t = tx(&db.app, db.a).await;
    assert_eq!(code(sqlx::query(call).execute(&mut *t).await).as_deref(), Some("42501"));
    drop(t);
    // The worker needs a tenant in context, and arrays of one length.
    let mut w = db.worker.acquire().await.unwrap();
    assert_eq!(code(sqlx::query(call).execute(&mut *w).await).as_deref(), Some("42501"));
    let mut t = tx(&db.worker, db.a).await;
    assert_eq!(
        code(
            sqlx::query("SELECT outbox.send_webhooks(ARRAY['a', 'b'], ARRAY['{}'::bytea], ARRAY['k'])")
                .execute(&mut *t)
                .await
        )
        .as_deref(),
        Some("22023")
    );
    drop(t);
    // In A's context the webhook is A's, whatever the worker asked for.
    let mut t = tx(&db.worker, db.a).await;
    sqlx::query(call).execute(&mut *t).await.unwrap();
    t.commit().await.unwrap();
    let tenants: Vec<uuid::Uuid> = sqlx::query_scalar("SELECT tenant_id FROM webhooks.messages")
        .fetch_all(&db.admin)
        .await
        .unwrap();
    assert_eq!(tenants, vec![db.a.0]);
}

#[tokio::test]
async fn without_the_webhooks_module_the_sink_says_so() {
    let _serial = SERIAL.lock().await;
    let db = own_db("webhooks_sink_missing", &common::migrator()).await;
    let mut t = tx(&db.worker, db.a).await;
    let err = sqlx::query("SELECT outbox.send_webhooks(ARRAY['a'], ARRAY['{}'::bytea], ARRAY['k'])")
        .execute(&mut *t)
        .await
        .unwrap_err();
    let db_err = err.as_database_error().unwrap();
    assert_eq!(db_err.code().as_deref(), Some("42883"));
    assert!(
        db_err.message().contains("webhooks module is not installed"),
        "{db_err}"
    );
}
