//! Publishing: the message is the transaction's, in its tenant; bad input is a typed error
//! that writes nothing; a transaction older than one that already published for the same
//! aggregate and committed is refused as retryable, so per-aggregate txid order is commit order.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::{fixture, tx};
use pgstrata_core::DbError;
use pgstrata_outbox::{Error, publish};
use serde_json::json;

async fn count(f: &common::Fixture) -> i64 {
    sqlx::query_scalar("SELECT count(*) FROM outbox.messages")
        .fetch_one(&f.db.admin)
        .await
        .unwrap()
}

#[tokio::test]
async fn a_message_exists_exactly_when_its_transaction_commits() {
    let f = fixture().await;
    let mut t = tx(&f.app, f.a).await;
    let id = publish::publish(&mut t, "order", "o-1", "OrderPlaced", &json!({"total": 12}))
        .await
        .unwrap();
    t.rollback().await.unwrap();
    assert_eq!(count(&f).await, 0, "a rolled back publish left a message");

    let mut t = tx(&f.app, f.a).await;
    let id2 = publish::publish(&mut t, "order", "o-1", "OrderPlaced", &json!({"total": 12}))
        .await
        .unwrap();
    t.commit().await.unwrap();
    assert!(id2 > id);
    let (tenant, partition, expected): (uuid::Uuid, i16, i16) = sqlx::query_as(
        "SELECT tenant_id, partition, outbox.partition_of(tenant_id, aggregate_type, aggregate_id)
           FROM outbox.messages WHERE id = $1",
    )
    .bind(id2)
    .fetch_one(&f.db.admin)
    .await
    .unwrap();
    assert_eq!((tenant, partition), (f.a.0, expected));
    // Tenant B sees none of A's messages.
    let mut t = tx(&f.app, f.b).await;
    let seen: i64 = sqlx::query_scalar("SELECT count(*) FROM outbox.messages")
        .fetch_one(&mut *t)
        .await
        .unwrap();
    assert_eq!(seen, 0);
    drop(t);
    f.close().await;
}

#[tokio::test]
async fn bad_messages_are_typed_errors_that_write_nothing() {
    let f = fixture().await;
    let long = "x".repeat(256);
    let big = json!({"blob": "y".repeat(130 * 1024)});
    let cases: [(&str, &str, &str, &serde_json::Value, &str); 6] = [
        ("", "o-1", "OrderPlaced", &json!({}), "aggregate_type"),
        ("order", &long, "OrderPlaced", &json!({}), "aggregate_id"),
        ("order", "o-1", "", &json!({}), "event_type"),
        ("order", "o-1", "Order\nPlaced", &json!({}), "event_type"),
        ("order", "o-1", "OrderPlaced", &big, "payload"),
        ("order\u{7}", "o-1", "OrderPlaced", &json!({}), "aggregate_type"),
    ];
    for (aggregate_type, aggregate_id, event_type, payload, field) in cases {
        let mut t = tx(&f.app, f.a).await;
        let e = publish::publish(&mut t, aggregate_type, aggregate_id, event_type, payload)
            .await
            .unwrap_err();
        assert!(
            matches!(e, Error::InvalidMessage { field: got, .. } if got == field),
            "{field}: {e:?}"
        );
    }
    // The same refusals from the database, for a SQL client that skips the Rust checks.
    for (sql, field) in [
        ("SELECT outbox.publish('', 'o', 'e', '{}')", "aggregate_type"),
        (
            "SELECT outbox.publish('t', repeat('x', 256), 'e', '{}')",
            "aggregate_id",
        ),
        ("SELECT outbox.publish('t', 'o', E'e\\n', '{}')", "event_type"),
        (
            "SELECT outbox.publish('t', 'o', 'e', jsonb_build_object('b', (SELECT string_agg(md5(i::text), '') FROM generate_series(1, 40000) i)))",
            "payload",
        ),
        ("SELECT outbox.publish('t', 'o', 'e', NULL)", "payload"),
    ] {
        let mut t = tx(&f.app, f.a).await;
        let e: Error = pgstrata_core::sql::trusted(sql.to_owned())
            .execute(&mut *t)
            .await
            .map_err(Error::from)
            .unwrap_err();
        assert!(
            matches!(e, Error::InvalidMessage { field: got, .. } if got == field),
            "{sql}: {e:?}"
        );
    }
    // No tenant: forbidden.
    let mut conn = f.app.acquire().await.unwrap();
    let e: Error = sqlx::query("SELECT outbox.publish('t', 'o', 'e', '{}')")
        .execute(&mut *conn)
        .await
        .map_err(Error::from)
        .unwrap_err();
    assert!(matches!(e, Error::Db(DbError::Forbidden { .. })), "{e:?}");
    assert_eq!(count(&f).await, 0);
    drop(conn);
    f.close().await;
}

#[tokio::test]
async fn an_older_transaction_cannot_publish_behind_a_newer_commit_of_the_same_aggregate() {
    let f = fixture().await;
    // Old takes its transaction id first (a business write), then New publishes and commits.
    let mut old = tx(&f.app, f.a).await;
    publish::publish(&mut old, "order", "other", "Touched", &json!({}))
        .await
        .unwrap();
    let mut new = tx(&f.app, f.a).await;
    publish::publish(&mut new, "order", "o-1", "OrderPaid", &json!({"n": 1}))
        .await
        .unwrap();
    new.commit().await.unwrap();
    // In txid order Old would come first though New committed first: refused, retryable.
    let e = publish::publish(&mut old, "order", "o-1", "OrderShipped", &json!({"n": 2}))
        .await
        .unwrap_err();
    assert!(matches!(e, Error::Db(DbError::Retryable { .. })), "{e:?}");
    drop(old);
    // Run again, it gets a newer transaction id and goes through; another aggregate of the
    // same tenant or the same aggregate id in tenant B was never in the way.
    let mut again = tx(&f.app, f.a).await;
    publish::publish(&mut again, "order", "o-1", "OrderShipped", &json!({"n": 2}))
        .await
        .unwrap();
    again.commit().await.unwrap();
    let order: Vec<String> =
        sqlx::query_scalar("SELECT event_type FROM outbox.messages WHERE aggregate_id = 'o-1' ORDER BY txid, id")
            .fetch_all(&f.db.admin)
            .await
            .unwrap();
    assert_eq!(order, ["OrderPaid", "OrderShipped"]);

    // A writer of the same aggregate waits for the head's holder rather than racing it.
    let mut first = tx(&f.app, f.b).await;
    publish::publish(&mut first, "order", "o-9", "A", &json!({}))
        .await
        .unwrap();
    let app = f.app.clone();
    let b = f.b;
    let second = tokio::spawn(async move {
        let mut t = tx(&app, b).await;
        publish::publish(&mut t, "order", "o-9", "B", &json!({})).await.unwrap();
        t.commit().await.unwrap();
    });
    tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    assert!(!second.is_finished(), "the second writer did not wait for the first");
    first.commit().await.unwrap();
    second.await.unwrap();
    f.close().await;
}

/// Runs `outbox.publish` as a SQL client would (no Rust checks first) with one field replaced;
/// the SQLSTATE and constraint of the refusal, or None when it published.
async fn publish_sql(f: &common::Fixture, field: usize, value: &str) -> Option<(String, Option<String>, Error)> {
    let mut args = ["order", "o-1", "OrderPlaced"];
    args[field] = value;
    let mut t = tx(&f.app, f.a).await;
    let outcome = sqlx::query("SELECT outbox.publish($1, $2, $3, '{}')")
        .bind(args[0])
        .bind(args[1])
        .bind(args[2])
        .execute(&mut *t)
        .await;
    t.rollback().await.unwrap();
    match outcome {
        Ok(_) => None,
        Err(e) => {
            let db = e.as_database_error().expect("a database error");
            let code = db.code().unwrap_or_default().into_owned();
            let constraint = db.constraint().map(str::to_owned);
            Some((code, constraint, Error::from(e)))
        }
    }
}

/// outbox V3 checks the fields in `outbox.publish` instead of the table's CHECK constraints:
/// every name is accepted exactly when V1's CHECK expression accepts it (evaluated here by the
/// database, with its own notion of characters and control characters), and a refusal is the
/// same SQLSTATE naming the same constraint, for each of the three fields.
#[tokio::test]
async fn publish_refuses_exactly_what_the_dropped_constraints_refused() {
    let f = fixture().await;
    let values = [
        "a".to_owned(),
        String::new(),
        "x".repeat(255),
        "x".repeat(256),
        "é".repeat(255),
        "é".repeat(256),
        "a b".to_owned(),
        "a\tb".to_owned(),
        "a\u{1}".to_owned(),
        "a\u{7f}".to_owned(),
        "a\u{85}b".to_owned(),
        "a\u{200b}b".to_owned(),
        "Ünïcödé ✓".to_owned(),
        "\u{1b}[31m".to_owned(),
    ];
    let fields = ["aggregate_type", "aggregate_id", "event_type"];
    for value in &values {
        let v1_accepts: bool = sqlx::query_scalar("SELECT length($1) BETWEEN 1 AND 255 AND $1 !~ '[[:cntrl:]]'")
            .bind(value)
            .fetch_one(&f.db.admin)
            .await
            .unwrap();
        for (i, field) in fields.into_iter().enumerate() {
            match publish_sql(&f, i, value).await {
                None => assert!(v1_accepts, "{field} {value:?} was published; V1 refused it"),
                Some((code, constraint, e)) => {
                    assert!(!v1_accepts, "{field} {value:?} was refused; V1 took it: {e:?}");
                    assert_eq!(code, "23514", "{field} {value:?}");
                    assert_eq!(constraint.as_deref(), Some(format!("messages_{field}_format").as_str()));
                    assert!(
                        matches!(e, Error::InvalidMessage { field: got, .. } if got == field),
                        "{field} {value:?}: {e:?}"
                    );
                }
            }
        }
    }

    // The payload limit, at its edge: 262,144 bytes as pg_column_size counts them is taken,
    // one more is refused as messages_payload_size.
    let overhead: i32 = sqlx::query_scalar("SELECT pg_column_size(to_jsonb(repeat('x', 1000))) - 1000")
        .fetch_one(&f.db.admin)
        .await
        .unwrap();
    for (extra, accepted) in [(0, true), (1, false)] {
        let n = 262_144 - overhead + extra;
        let mut t = tx(&f.app, f.a).await;
        let outcome = sqlx::query("SELECT outbox.publish('order', 'o-1', 'Big', to_jsonb(repeat('x', $1)))")
            .bind(n)
            .execute(&mut *t)
            .await;
        t.rollback().await.unwrap();
        match outcome {
            Ok(_) => assert!(accepted, "a payload of {} bytes was published", n + overhead),
            Err(e) => {
                assert!(!accepted, "a payload of {} bytes was refused: {e}", n + overhead);
                let constraint = e.as_database_error().and_then(|d| d.constraint()).map(str::to_owned);
                assert_eq!(constraint.as_deref(), Some("messages_payload_size"));
                assert!(matches!(Error::from(e), Error::InvalidMessage { field: "payload", .. }));
            }
        }
    }

    // The rules hold for every row because publish is the table's only writer: no role of the
    // application, the worker or the operator may insert or update it.
    let writers: Vec<String> = sqlx::query_scalar(
        "SELECT r FROM unnest(ARRAY['pgstrata_app', 'pgstrata_worker', 'pgstrata_operator']) r
          WHERE has_table_privilege(r, 'outbox.messages', 'INSERT')
             OR has_table_privilege(r, 'outbox.messages', 'UPDATE')",
    )
    .fetch_all(&f.db.admin)
    .await
    .unwrap();
    assert!(writers.is_empty(), "{writers:?} may write outbox.messages directly");
    assert_eq!(count(&f).await, 0);
    f.close().await;
}

/// `outbox.partition_of` has no SET clause from V3 on, so PostgreSQL inlines it (into publish,
/// and into any query): the plan shows the hash, not a call. Its value is V1's formula.
#[tokio::test]
async fn the_partition_is_inlined_and_keeps_v1s_hash() {
    let f = fixture().await;
    let plan: Vec<String> = sqlx::query_scalar(
        "EXPLAIN (VERBOSE, COSTS OFF)
         SELECT outbox.partition_of(m.tenant_id, m.aggregate_type, m.aggregate_id) FROM outbox.messages m",
    )
    .fetch_all(&f.db.admin)
    .await
    .unwrap();
    let plan = plan.join("\n");
    assert!(
        plan.contains("hashtextextended") && !plan.contains("partition_of"),
        "partition_of was not inlined:\n{plan}"
    );
    let mut t = tx(&f.app, f.a).await;
    for i in 0..200 {
        publish::publish(&mut t, "order", &format!("o-{i}"), "OrderPlaced", &json!({}))
            .await
            .unwrap();
    }
    t.commit().await.unwrap();
    let (rows, wrong, used): (i64, i64, i64) = sqlx::query_as(
        "SELECT count(*),
                count(*) FILTER (WHERE partition <> (hashtextextended(tenant_id::text || '/' || aggregate_type || '/' || aggregate_id, 0) & 31)),
                count(DISTINCT partition)
           FROM outbox.messages",
    )
    .fetch_one(&f.db.admin)
    .await
    .unwrap();
    assert_eq!((rows, wrong), (200, 0));
    assert!(used > 16, "200 keys fell in {used} partitions");
    f.close().await;
}
