//! What the capture trigger records, what it never records, and who may touch the records.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::{code, fixture, invoice, tx};
use pgstrata_audit::{Cursor, Event, RecordFilter, RecordId, RecordOrigin, query};
use pgstrata_core::{Page, UserId};
use uuid::Uuid;

#[tokio::test]
async fn actor_tenant_request_and_txid_are_captured() {
    let f = fixture().await;
    let actor = UserId(Uuid::now_v7());
    let mut t = tx(&f.app, f.a, Some(actor), Some("req-7f3a")).await;
    let id: Uuid = sqlx::query_scalar(
        "INSERT INTO billing.invoices (tenant_id, number, amount) VALUES ($1, 'INV-1', 1200) RETURNING id",
    )
    .bind(f.a.0)
    .fetch_one(&mut *t)
    .await
    .unwrap();
    let txid: i64 = sqlx::query_scalar("SELECT pg_current_xact_id()::text::bigint")
        .fetch_one(&mut *t)
        .await
        .unwrap();
    let event = pgstrata_audit::capture::record(
        &mut t,
        &Event::new("invoice.sent", "invoice")
            .resource_id(id.to_string())
            .details(serde_json::json!({"to": "ap@example.com"})),
    )
    .await
    .unwrap();
    t.commit().await.unwrap();

    let mut t = tx(&f.app, f.a, None, None).await;
    let rows = query::list(
        &mut t,
        &RecordFilter::new().resource("billing.invoices", id.to_string()),
        &Page::default(),
    )
    .await
    .unwrap();
    assert_eq!(rows.len(), 1, "{rows:?}");
    let r = &rows[0];
    assert_eq!(r.tenant_id, f.a);
    assert_eq!(r.actor_id, Some(actor));
    assert_eq!(r.request_id.as_deref(), Some("req-7f3a"));
    assert_eq!(r.txid, txid);
    assert_eq!(r.action, "insert");
    assert_eq!(r.origin, Some(RecordOrigin::Capture));
    assert_eq!(r.new_values.as_ref().unwrap()["amount"], 1200);
    assert_eq!(r.old_values, None);
    assert_eq!((r.seq, &r.hash), (None, &None), "links live in audit.seals since V3");

    // The application event went through the same table, with the same context.
    let events = query::list(&mut t, &RecordFilter::new().action("invoice.sent"), &Page::default())
        .await
        .unwrap();
    assert_eq!(events.len(), 1);
    assert_eq!(events[0].id, event);
    assert_eq!(events[0].origin, Some(RecordOrigin::Event));
    assert_eq!((events[0].txid, events[0].actor_id), (txid, Some(actor)));
    assert_eq!(events[0].details.as_ref().unwrap()["to"], "ap@example.com");
    // And the actor's question finds both.
    let by_actor = query::list(&mut t, &RecordFilter::new().actor(actor), &Page::default())
        .await
        .unwrap();
    assert_eq!(by_actor.len(), 2);
    t.rollback().await.unwrap();

    // A bad event name is refused before the database sees it; no tenant in context is refused.
    let mut t = tx(&f.app, f.a, None, None).await;
    let bad = pgstrata_audit::capture::record(&mut t, &Event::new("Invoice Sent", "invoice")).await;
    assert!(
        matches!(bad, Err(pgstrata_audit::Error::InvalidField { field: "action", .. })),
        "{bad:?}"
    );
    t.rollback().await.unwrap();
    // The database has the last word: a transaction whose context was cleared after it was
    // opened records nothing.
    let mut t = tx(&f.app, f.a, None, None).await;
    pgstrata_core::context::clear_context(&mut t).await.unwrap();
    let none = pgstrata_audit::capture::record(&mut t, &Event::new("user.login", "user")).await;
    assert!(
        matches!(
            &none,
            Err(pgstrata_audit::Error::Db(pgstrata_core::DbError::Forbidden { .. }))
        ),
        "{none:?}"
    );
    drop(t);
    f.app.close().await;
    f.db.close().await.unwrap();
}

#[tokio::test]
async fn update_records_only_changed_fields() {
    let f = fixture().await;
    let id = invoice(&f.app, f.a, "INV-2", 500).await;

    let mut t = tx(&f.app, f.a, None, None).await;
    sqlx::query(
        "UPDATE billing.invoices SET amount = 750, status = 'sent', updated_at = now() + interval '1 s' WHERE id = $1",
    )
    .bind(id)
    .execute(&mut *t)
    .await
    .unwrap();
    // Only an ignored column changes: nothing is recorded.
    sqlx::query("UPDATE billing.invoices SET updated_at = now() + interval '2 s' WHERE id = $1")
        .bind(id)
        .execute(&mut *t)
        .await
        .unwrap();
    // A no-op update records nothing either.
    sqlx::query("UPDATE billing.invoices SET amount = amount WHERE id = $1")
        .bind(id)
        .execute(&mut *t)
        .await
        .unwrap();
    sqlx::query("DELETE FROM billing.invoices WHERE id = $1")
        .bind(id)
        .execute(&mut *t)
        .await
        .unwrap();
    t.commit().await.unwrap();

    let mut t = tx(&f.app, f.a, None, None).await;
    let rows = query::list(
        &mut t,
        &RecordFilter::new().resource("billing.invoices", id.to_string()),
        &Page::default(),
    )
    .await
    .unwrap();
    let actions: Vec<&str> = rows.iter().map(|r| r.action.as_str()).collect();
    assert_eq!(actions, ["delete", "update", "insert"], "newest first");
    let update = &rows[1];
    assert_eq!(
        update.old_values,
        Some(serde_json::json!({"amount": 500, "status": "draft"}))
    );
    assert_eq!(
        update.new_values,
        Some(serde_json::json!({"amount": 750, "status": "sent"}))
    );
    // The ignored column is left out of the insert and delete images too.
    assert!(rows[2].new_values.as_ref().unwrap().get("updated_at").is_none());
    assert!(rows[0].old_values.as_ref().unwrap().get("updated_at").is_none());
    assert_eq!(rows[0].old_values.as_ref().unwrap()["amount"], 750);
    assert_eq!(rows[0].new_values, None);
    t.rollback().await.unwrap();
    f.app.close().await;
    f.db.close().await.unwrap();
}

#[tokio::test]
async fn redacted_columns_are_never_stored() {
    let f = fixture().await;
    let secret_1 = b"first-payment-token-secret".to_vec();
    let secret_2 = b"second-payment-token-secret".to_vec();
    let mut t = tx(&f.app, f.a, None, None).await;
    let id: Uuid = sqlx::query_scalar(
        "INSERT INTO billing.invoices (tenant_id, number, amount, pay_token_hash) VALUES ($1, 'INV-3', 10, sha256($2)) RETURNING id",
    )
    .bind(f.a.0)
    .bind(&secret_1)
    .fetch_one(&mut *t)
    .await
    .unwrap();
    sqlx::query("UPDATE billing.invoices SET pay_token_hash = sha256($2) WHERE id = $1")
        .bind(id)
        .bind(&secret_2)
        .execute(&mut *t)
        .await
        .unwrap();
    sqlx::query("DELETE FROM billing.invoices WHERE id = $1")
        .bind(id)
        .execute(&mut *t)
        .await
        .unwrap();
    t.commit().await.unwrap();

    // Not in any column of any record, in any encoding jsonb would use.
    let leaks: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM audit.records r
          WHERE r::text LIKE '%' || encode(sha256($1), 'hex') || '%'
             OR r::text LIKE '%' || encode(sha256($2), 'hex') || '%'",
    )
    .bind(&secret_1)
    .bind(&secret_2)
    .fetch_one(&f.db.admin)
    .await
    .unwrap();
    assert_eq!(leaks, 0);
    let images: Vec<(String, Option<serde_json::Value>, Option<serde_json::Value>)> = sqlx::query_as(
        "SELECT action, old_values -> 'pay_token_hash', new_values -> 'pay_token_hash'
           FROM audit.records WHERE resource_id = $1::text ORDER BY id",
    )
    .bind(id)
    .fetch_all(&f.db.admin)
    .await
    .unwrap();
    let redacted = Some(serde_json::json!("[redacted]"));
    assert_eq!(
        images,
        vec![
            ("insert".into(), None, redacted.clone()),
            ("update".into(), redacted.clone(), redacted.clone()),
            ("delete".into(), redacted, None),
        ],
        "the change of a redacted column is recorded, its value is not"
    );
    f.app.close().await;
    f.db.close().await.unwrap();
}

#[tokio::test]
async fn app_role_update_delete_and_truncate_are_refused() {
    let f = fixture().await;
    invoice(&f.app, f.a, "INV-4", 10).await;
    let partition: String =
        sqlx::query_scalar("SELECT name FROM audit.partitions() WHERE lower_bound <= now() AND now() < upper_bound")
            .fetch_one(&f.db.admin)
            .await
            .unwrap();
    for statement in [
        "UPDATE audit.records SET action = 'forged'".to_owned(),
        "UPDATE audit.records SET hash = '\\x00', seq = 1, prev_hash = '\\x00'".to_owned(),
        "DELETE FROM audit.records".to_owned(),
        "TRUNCATE audit.records".to_owned(),
        format!("TRUNCATE audit.{partition}"),
        format!("DELETE FROM audit.{partition}"),
        // Appending is allowed, but not writing who, when or the chain columns.
        "INSERT INTO audit.records (tenant_id, action, resource_type, actor_id) VALUES (tenancy.current_tenant_id(), 'x', 'y', gen_random_uuid())".to_owned(),
        "INSERT INTO audit.records (tenant_id, action, resource_type, occurred_at) VALUES (tenancy.current_tenant_id(), 'x', 'y', now() - interval '1 year')".to_owned(),
        "INSERT INTO audit.records (tenant_id, action, resource_type, hash) VALUES (tenancy.current_tenant_id(), 'x', 'y', '\\x00')".to_owned(),
        "UPDATE audit.chain_heads SET seq = 1".to_owned(),
        // The chain's links: no role but the sealer writes them.
        "INSERT INTO audit.seals (tenant_id, first_seq, month, prev_hash, record_ids, hashes) VALUES (tenancy.current_tenant_id(), 1, now(), '\\x00', '{1}', '{\\x00}')".to_owned(),
        "UPDATE audit.seals SET hashes = '{}'".to_owned(),
        "DELETE FROM audit.seals".to_owned(),
        "TRUNCATE audit.seals".to_owned(),
    ] {
        let mut t = tx(&f.app, f.a, None, None).await;
        let result = pgstrata_core::sql::trusted(statement.clone()).execute(&mut *t).await;
        assert_eq!(code(result), "42501", "{statement}");
        t.rollback().await.unwrap();
    }

    // The owner (here a superuser) is held to the same rule by the triggers.
    let mut admin = f.db.admin_conn().await.unwrap();
    for statement in [
        "UPDATE audit.records SET action = 'forged'".to_owned(),
        "DELETE FROM audit.records".to_owned(),
        "TRUNCATE audit.records".to_owned(),
        format!("TRUNCATE audit.{partition}"),
    ] {
        let result = pgstrata_core::sql::trusted(statement.clone()).execute(&mut admin).await;
        assert_eq!(code(result), "42501", "{statement}");
    }
    // ...the seals likewise, while their month exists...
    common::seal_all(&f.db).await;
    for statement in [
        "UPDATE audit.seals SET hashes = hashes",
        "DELETE FROM audit.seals",
        "TRUNCATE audit.seals",
    ] {
        let result = sqlx::raw_sql(statement).execute(&mut admin).await;
        assert_eq!(code(result), "42501", "{statement}");
    }
    // ...and the chain columns of the records may be set once, never changed again.
    let result = sqlx::query("UPDATE audit.records SET hash = sha256('x')")
        .execute(&mut admin)
        .await;
    assert_eq!(code(result), "42501");
    let count: i64 = sqlx::query_scalar("SELECT count(*) FROM audit.records WHERE action = 'insert'")
        .fetch_one(&mut admin)
        .await
        .unwrap();
    assert_eq!(count, 3, "two tenants and one invoice");
    drop(admin);
    f.app.close().await;
    f.db.close().await.unwrap();
}

#[tokio::test]
async fn tenant_b_never_reads_tenant_a_audit() {
    let f = fixture().await;
    let id = invoice(&f.app, f.a, "INV-A", 99).await;
    invoice(&f.app, f.b, "INV-B", 1).await;
    common::seal_all(&f.db).await;

    let mut t = tx(&f.app, f.b, None, None).await;
    let of_a: i64 = sqlx::query_scalar("SELECT count(*) FROM audit.records WHERE tenant_id = $1")
        .bind(f.a.0)
        .fetch_one(&mut *t)
        .await
        .unwrap();
    assert_eq!(of_a, 0);
    let all: Vec<uuid::Uuid> = sqlx::query_scalar("SELECT DISTINCT tenant_id FROM audit.records")
        .fetch_all(&mut *t)
        .await
        .unwrap();
    assert_eq!(all, vec![f.b.0], "B sees exactly its own records");
    // Listing in B's transaction lists B's records: A's invoice has no history there, and
    // every record listed is B's.
    let asked = query::list(
        &mut t,
        &RecordFilter::new().resource("billing.invoices", id.to_string()),
        &Page::default(),
    )
    .await
    .unwrap();
    assert!(asked.is_empty());
    let listed = query::list(&mut t, &RecordFilter::new(), &Page::default())
        .await
        .unwrap();
    assert!(!listed.is_empty());
    assert!(listed.iter().all(|r| r.tenant_id == f.b), "{listed:?}");
    let heads: Vec<uuid::Uuid> = sqlx::query_scalar("SELECT tenant_id FROM audit.chain_heads")
        .fetch_all(&mut *t)
        .await
        .unwrap();
    assert_eq!(heads, vec![f.b.0]);
    for chain_table in ["audit.seals", "audit.links"] {
        let tenants: Vec<uuid::Uuid> =
            pgstrata_core::sql::trusted(format!("SELECT DISTINCT tenant_id FROM {chain_table}"))
                .fetch_all(&mut *t)
                .await
                .unwrap()
                .iter()
                .map(|r| sqlx::Row::get(r, 0))
                .collect();
        assert_eq!(tenants, vec![f.b.0], "{chain_table}");
    }
    // B cannot write into A's log either.
    let forged =
        sqlx::query("INSERT INTO audit.records (tenant_id, action, resource_type) VALUES ($1, 'user.login', 'user')")
            .bind(f.a.0)
            .execute(&mut *t)
            .await;
    assert_eq!(code(forged), "42501");
    t.rollback().await.unwrap();

    // Without a tenant in context: nothing at all.
    let mut conn = f.app.acquire().await.unwrap();
    let visible: i64 = sqlx::query_scalar("SELECT count(*) FROM audit.records")
        .fetch_one(&mut *conn)
        .await
        .unwrap();
    assert_eq!(visible, 0);
    // Nor may the application role seal or verify across tenants.
    let seal = pgstrata_audit::chain::seal(&mut conn, 10).await;
    assert!(
        matches!(
            &seal,
            Err(pgstrata_audit::Error::Db(pgstrata_core::DbError::Forbidden { .. }))
        ),
        "{seal:?}"
    );
    drop(conn);
    f.app.close().await;
    f.db.close().await.unwrap();
}

#[tokio::test]
async fn keyset_pages_walk_a_history_without_gaps_or_repeats() {
    let f = fixture().await;
    let actor = UserId(Uuid::now_v7());
    // Two transactions: within each, every record has the same occurred_at, so only the id
    // tells the records apart and the cursor must carry both.
    for round in 0..2 {
        let mut t = tx(&f.app, f.a, Some(actor), None).await;
        for i in 0..60 {
            pgstrata_audit::capture::record(
                &mut t,
                &Event::new("doc.viewed", "doc").resource_id(format!("{round}-{i}")),
            )
            .await
            .unwrap();
        }
        t.commit().await.unwrap();
    }
    let mut t = tx(&f.app, f.a, None, None).await;
    let filter = RecordFilter::new().actor(actor);
    let mut page = Some(Page::<Cursor>::first(50));
    let mut seen: Vec<(chrono::DateTime<chrono::Utc>, RecordId)> = Vec::new();
    let mut pages = Vec::new();
    while let Some(p) = page {
        let rows = query::list(&mut t, &filter, &p).await.unwrap();
        pages.push(rows.len());
        seen.extend(rows.iter().map(|r| (r.occurred_at, r.id)));
        page = p.next(&rows, Cursor::of);
    }
    assert_eq!(pages, [50, 50, 20]);
    let mut sorted = seen.clone();
    sorted.sort_by(|a, b| b.cmp(a));
    sorted.dedup();
    assert_eq!(seen, sorted, "newest first, each record once");

    // A page size out of range and an empty time range are refused before any SQL runs.
    for size in [0, 5000] {
        let refused = query::list(&mut t, &filter, &Page::first(size)).await;
        assert!(
            matches!(refused, Err(pgstrata_audit::Error::InvalidPage(ref p)) if p.limit == size),
            "{refused:?}"
        );
    }
    let now = chrono::Utc::now();
    let empty = query::list(
        &mut t,
        &RecordFilter::new().between(Some(now), Some(now)),
        &Page::default(),
    )
    .await;
    assert!(
        matches!(
            empty,
            Err(pgstrata_audit::Error::InvalidField {
                field: "time range",
                ..
            })
        ),
        "{empty:?}"
    );
    t.rollback().await.unwrap();
    f.app.close().await;
    f.db.close().await.unwrap();
}

/// The update diff compares the columns audit.enable listed without a query; a column added
/// later, and every column of a trigger attached before that list existed, still take part.
#[tokio::test]
async fn columns_the_trigger_was_not_told_about_are_still_compared() {
    let f = fixture().await;
    let id = invoice(&f.app, f.a, "INV-5", 100).await;
    sqlx::raw_sql(
        "ALTER TABLE billing.invoices ADD COLUMN due_on date;
         UPDATE billing.invoices SET due_on = '2027-01-31'",
    )
    .execute(&f.db.admin)
    .await
    .unwrap();
    let mut t = tx(&f.app, f.a, None, None).await;
    sqlx::query("UPDATE billing.invoices SET due_on = '2027-02-28', amount = 120 WHERE id = $1")
        .bind(id)
        .execute(&mut *t)
        .await
        .unwrap();
    t.commit().await.unwrap();

    // A trigger as audit V2 attached it: four arguments, no column list.
    sqlx::raw_sql(
        "DROP TRIGGER audit_capture ON billing.invoices;
         CREATE TRIGGER audit_capture AFTER INSERT OR UPDATE OR DELETE ON billing.invoices
             FOR EACH ROW EXECUTE FUNCTION audit.capture('column', '{id}', '{updated_at}', '{pay_token_hash}')",
    )
    .execute(&f.db.admin)
    .await
    .unwrap();
    let mut t = tx(&f.app, f.a, None, None).await;
    sqlx::query(
        "UPDATE billing.invoices SET status = 'sent', pay_token_hash = '\\x01', updated_at = now() WHERE id = $1",
    )
    .bind(id)
    .execute(&mut *t)
    .await
    .unwrap();
    t.commit().await.unwrap();

    let images: Vec<(Option<serde_json::Value>, Option<serde_json::Value>)> = sqlx::query_as(
        "SELECT old_values, new_values FROM audit.records
          WHERE resource_id = $1::text AND action = 'update' ORDER BY id",
    )
    .bind(id)
    .fetch_all(&f.db.admin)
    .await
    .unwrap();
    assert_eq!(
        images,
        vec![
            // The owner's backfill of the new column is a change like any other.
            (
                Some(serde_json::json!({"due_on": null})),
                Some(serde_json::json!({"due_on": "2027-01-31"}))
            ),
            (
                Some(serde_json::json!({"amount": 100, "due_on": "2027-01-31"})),
                Some(serde_json::json!({"amount": 120, "due_on": "2027-02-28"}))
            ),
            (
                Some(serde_json::json!({"status": "draft", "pay_token_hash": "[redacted]"})),
                Some(serde_json::json!({"status": "sent", "pay_token_hash": "[redacted]"}))
            ),
        ]
    );
    f.app.close().await;
    f.db.close().await.unwrap();
}

/// The limits the log's CHECK constraints held before audit V3 are the writers' now: a clear
/// 22023 naming the field, and nothing written.
#[tokio::test]
async fn the_writers_refuse_what_the_log_does_not_keep() {
    let f = fixture().await;
    let long_request = "r".repeat(201);
    let mut t = tx(&f.app, f.a, None, Some(&long_request)).await;
    let captured = sqlx::query("INSERT INTO billing.invoices (tenant_id, number, amount) VALUES ($1, 'INV-6', 1)")
        .bind(f.a.0)
        .execute(&mut *t)
        .await;
    let err = captured.expect_err("a 201-character request id is refused");
    let db = err.as_database_error().unwrap();
    assert_eq!(db.code().as_deref(), Some("22023"));
    assert!(db.message().contains("app.request_id"), "{}", db.message());
    t.rollback().await.unwrap();

    let mut t = tx(&f.app, f.a, None, Some(&long_request)).await;
    let event = pgstrata_audit::capture::record(&mut t, &Event::new("user.login", "user")).await;
    assert!(
        matches!(
            &event,
            Err(pgstrata_audit::Error::InvalidField {
                field: "request_id",
                ..
            })
        ),
        "{event:?}"
    );
    t.rollback().await.unwrap();

    // A table whose key is longer than a record may name.
    sqlx::raw_sql(
        "CREATE TABLE billing.notes (tenant_id uuid NOT NULL, code text NOT NULL, PRIMARY KEY (tenant_id, code));
         ALTER TABLE billing.notes ENABLE ROW LEVEL SECURITY;
         ALTER TABLE billing.notes FORCE ROW LEVEL SECURITY;
         CREATE POLICY tenant_isolation ON billing.notes USING (tenant_id = (SELECT tenancy.current_tenant_id()));
         GRANT SELECT, INSERT ON billing.notes TO pgstrata_app;
         SELECT audit.enable('billing.notes');",
    )
    .execute(&f.db.admin)
    .await
    .unwrap();
    let mut t = tx(&f.app, f.a, None, None).await;
    let long_key = sqlx::query("INSERT INTO billing.notes (tenant_id, code) VALUES ($1, repeat('k', 501))")
        .bind(f.a.0)
        .execute(&mut *t)
        .await;
    let err = long_key.expect_err("a 501-character key is refused");
    let db = err.as_database_error().unwrap();
    assert_eq!(
        (db.code().as_deref(), db.message().contains("key")),
        (Some("22023"), true)
    );
    t.rollback().await.unwrap();

    let written: i64 = sqlx::query_scalar("SELECT count(*) FROM audit.records WHERE tenant_id = $1")
        .bind(f.a.0)
        .fetch_one(&f.db.admin)
        .await
        .unwrap();
    assert_eq!(written, 1, "only the tenant's own creation is recorded");

    // The sealing update sets all three chain columns or none: half a link is refused.
    let mut admin = f.db.admin_conn().await.unwrap();
    let half = sqlx::query("UPDATE audit.records SET hash = sha256('x'), seq = 1")
        .execute(&mut admin)
        .await;
    assert_eq!(code(half), "42501");
    drop(admin);
    f.app.close().await;
    f.db.close().await.unwrap();
}

/// The trigger's three tenant sources and two key shapes, each on the path a write takes: a
/// table without `tenant_id` is recorded under the context's tenant (and refused without one),
/// a composite key is named column by column, and a value over the size limit is refused with
/// the field named. Nothing is written by a refused write.
#[tokio::test]
async fn every_tenant_source_and_key_shape_is_recorded_and_every_limit_refused() {
    let f = fixture().await;
    sqlx::raw_sql(
        "CREATE TABLE billing.rates (region text NOT NULL, tier int NOT NULL, price bigint NOT NULL,
                                     PRIMARY KEY (region, tier));
         GRANT SELECT, INSERT ON billing.rates TO pgstrata_app;
         SELECT audit.enable('billing.rates');
         CREATE TABLE billing.blobs (tenant_id uuid NOT NULL, id int NOT NULL, body text NOT NULL,
                                     PRIMARY KEY (tenant_id, id));
         ALTER TABLE billing.blobs ENABLE ROW LEVEL SECURITY;
         ALTER TABLE billing.blobs FORCE ROW LEVEL SECURITY;
         CREATE POLICY tenant_isolation ON billing.blobs USING (tenant_id = (SELECT tenancy.current_tenant_id()));
         GRANT SELECT, INSERT ON billing.blobs TO pgstrata_app;
         SELECT audit.enable('billing.blobs');",
    )
    .execute(&f.db.admin)
    .await
    .unwrap();
    let records = |resource_type: &'static str| {
        let admin = f.db.admin.clone();
        async move {
            sqlx::query_as::<_, (Uuid, Option<String>)>(
                "SELECT tenant_id, resource_id FROM audit.records WHERE resource_type = $1 ORDER BY id",
            )
            .bind(resource_type)
            .fetch_all(&admin)
            .await
            .unwrap()
        }
    };

    // Context source, composite key: the record takes the transaction's tenant.
    let mut t = tx(&f.app, f.b, None, None).await;
    sqlx::query("INSERT INTO billing.rates VALUES ('eu', 2, 100)")
        .execute(&mut *t)
        .await
        .unwrap();
    t.commit().await.unwrap();
    assert_eq!(records("billing.rates").await, vec![(f.b.0, Some("eu,2".to_owned()))]);

    // Context source without a tenant: refused, nothing written.
    let mut app = f.app.acquire().await.unwrap();
    let orphan = sqlx::query("INSERT INTO billing.rates VALUES ('us', 1, 100)")
        .execute(&mut *app)
        .await;
    let err = orphan.expect_err("a write with no tenant in its context is refused");
    let db = err.as_database_error().unwrap();
    assert_eq!(db.code().as_deref(), Some("42501"));
    assert!(db.message().contains("needs a tenant"), "{}", db.message());
    drop(app);
    let rates: i64 = sqlx::query_scalar("SELECT count(*) FROM billing.rates")
        .fetch_one(&f.db.admin)
        .await
        .unwrap();
    assert_eq!(rates, 1, "the refused row is not kept either");

    // Column source: a value over 1 MB is refused naming new_values; a small one is recorded.
    let mut t = tx(&f.app, f.a, None, None).await;
    let big = sqlx::query("INSERT INTO billing.blobs VALUES ($1, 1, repeat('x', 1100000))")
        .bind(f.a.0)
        .execute(&mut *t)
        .await;
    let err = big.expect_err("a 1.1 MB row is refused");
    let db = err.as_database_error().unwrap();
    assert_eq!(db.code().as_deref(), Some("22023"));
    assert!(db.message().contains("new_values"), "{}", db.message());
    t.rollback().await.unwrap();
    let mut t = tx(&f.app, f.a, None, None).await;
    sqlx::query("INSERT INTO billing.blobs VALUES ($1, 2, 'small')")
        .bind(f.a.0)
        .execute(&mut *t)
        .await
        .unwrap();
    t.commit().await.unwrap();
    assert_eq!(records("billing.blobs").await, vec![(f.a.0, Some("2".to_owned()))]);

    f.app.close().await;
    f.db.close().await.unwrap();
}
