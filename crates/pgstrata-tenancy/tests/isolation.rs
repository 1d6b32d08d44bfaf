//! Tenant isolation, always as the unprivileged application role (a LOGIN role granted
//! `pgstrata_app`: not superuser, not owner, no BYPASSRLS).

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::{Org, migrated_db, org};
use pgstrata_core::{TenantContext, TenantId};
use sqlx::{Connection, PgConnection, Row};

/// The tenant tables and the column that holds their tenant.
const TENANT_TABLES: [(&str, &str); 3] = [
    ("tenancy.tenants", "id"),
    ("tenancy.memberships", "tenant_id"),
    ("tenancy.invitations", "tenant_id"),
];

fn is_forbidden(e: &sqlx::Error) -> bool {
    e.as_database_error().and_then(|d| d.code()).as_deref() == Some("42501")
}

async fn count(conn: &mut PgConnection, table: &str, key: &str, tenant: Option<TenantId>) -> i64 {
    let sql = match tenant {
        Some(_) => format!("SELECT count(*) FROM {table} WHERE {key} = $1"),
        None => format!("SELECT count(*) FROM {table}"),
    };
    let mut q = sqlx::query_scalar(sqlx::AssertSqlSafe(sql));
    if let Some(t) = tenant {
        q = q.bind(t.0);
    }
    q.fetch_one(conn).await.unwrap()
}

async fn check_role_is_unprivileged(conn: &mut PgConnection) {
    let row = sqlx::query(
        "SELECT rolsuper, rolbypassrls,
                EXISTS (SELECT 1 FROM pg_tables WHERE schemaname = 'tenancy' AND tableowner = current_user) AS owns
           FROM pg_roles WHERE rolname = current_user",
    )
    .fetch_one(conn)
    .await
    .unwrap();
    assert!(!row.get::<bool, _>("rolsuper") && !row.get::<bool, _>("rolbypassrls") && !row.get::<bool, _>("owns"));
}

#[tokio::test]
async fn every_tenant_table_and_every_verb_is_isolated() {
    let db = migrated_db().await;
    let app = db.app_pool(4).await.unwrap();
    let a = org(&app, "alpha").await;
    let b = org(&app, "bravo").await;
    let mut conn = app.acquire().await.unwrap();
    check_role_is_unprivileged(&mut conn).await;

    for (table, key) in TENANT_TABLES {
        // SELECT: only A's rows, none of B's.
        let mut tx = conn.begin().await.unwrap();
        pgstrata_core::set_tenant_context(&mut tx, &a.ctx()).await.unwrap();
        assert!(
            count(&mut tx, table, key, Some(a.id)).await > 0,
            "{table}: A sees its rows"
        );
        assert_eq!(
            count(&mut tx, table, key, Some(b.id)).await,
            0,
            "{table}: A must not see B's rows"
        );
        assert_eq!(
            count(&mut tx, table, key, None).await,
            count(&mut tx, table, key, Some(a.id)).await
        );

        // UPDATE of B's rows changes nothing; moving A's rows to B is refused.
        let sql = format!("UPDATE {table} SET version = version WHERE {key} = $1");
        let done = sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(b.id.0)
            .execute(&mut *tx)
            .await
            .unwrap();
        assert_eq!(done.rows_affected(), 0, "{table}: A updated B's rows");
        let sql = format!("UPDATE {table} SET {key} = $1 WHERE {key} = $2");
        let err = sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(b.id.0)
            .bind(a.id.0)
            .execute(&mut *tx)
            .await
            .unwrap_err();
        assert!(
            is_forbidden(&err),
            "{table}: moving a row to B must be refused, got {err}"
        );
        tx.rollback().await.unwrap();

        // DELETE of B's rows removes nothing (or is not granted at all).
        let mut tx = conn.begin().await.unwrap();
        pgstrata_core::set_tenant_context(&mut tx, &a.ctx()).await.unwrap();
        let sql = format!("DELETE FROM {table} WHERE {key} = $1");
        match sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(b.id.0)
            .execute(&mut *tx)
            .await
        {
            Ok(done) => assert_eq!(done.rows_affected(), 0, "{table}: A deleted B's rows"),
            Err(e) => assert!(is_forbidden(&e), "{table}: {e}"),
        }
        tx.rollback().await.unwrap();
    }

    // INSERT of a row for B while in A's context is refused by WITH CHECK, table by table.
    let mut tx = conn.begin().await.unwrap();
    pgstrata_core::set_tenant_context(&mut tx, &a.ctx()).await.unwrap();
    let inserts = [
        sqlx::query("INSERT INTO tenancy.tenants (id, slug, name) VALUES ($1, 'planted', 'Planted')").bind(b.id.0),
        sqlx::query("INSERT INTO tenancy.memberships (tenant_id, user_id) VALUES ($1, $2)")
            .bind(b.id.0)
            .bind(a.owner.0),
        sqlx::query(
            "INSERT INTO tenancy.invitations (tenant_id, email, token_hash, expires_at)
             VALUES ($1, 'x@y.z', sha256('x'), now() + interval '1 day')",
        )
        .bind(b.id.0),
    ];
    for insert in inserts {
        let mut sp = tx.begin().await.unwrap();
        let err = insert.execute(&mut *sp).await.unwrap_err();
        assert!(is_forbidden(&err), "insert into B must be refused: {err}");
        sp.rollback().await.unwrap();
    }
    tx.rollback().await.unwrap();

    // B's data is intact (checked as admin).
    let b_members: i64 = sqlx::query_scalar("SELECT count(*) FROM tenancy.memberships WHERE tenant_id = $1")
        .bind(b.id.0)
        .fetch_one(&db.admin)
        .await
        .unwrap();
    assert_eq!(b_members, 2);
    drop(conn);
    app.close().await;
    db.close().await.unwrap();
}

#[tokio::test]
async fn without_a_tenant_nothing_is_read_or_written() {
    let db = migrated_db().await;
    let app = db.app_pool(2).await.unwrap();
    let a = org(&app, "alpha").await;
    let mut conn = app.acquire().await.unwrap();

    // No context at all, inside and outside a transaction.
    for (table, key) in TENANT_TABLES {
        assert_eq!(count(&mut conn, table, key, None).await, 0, "{table} without tenant");
    }
    let err = sqlx::query("INSERT INTO tenancy.memberships (tenant_id, user_id) VALUES ($1, $2)")
        .bind(a.id.0)
        .bind(a.owner.0)
        .execute(&mut *conn)
        .await
        .unwrap_err();
    assert!(is_forbidden(&err));

    // A tenant set with SET LOCAL in an earlier transaction reads back as '' afterwards.
    let mut tx = conn.begin().await.unwrap();
    pgstrata_core::set_tenant_context(&mut tx, &a.ctx()).await.unwrap();
    assert!(count(&mut tx, "tenancy.memberships", "tenant_id", None).await > 0);
    tx.commit().await.unwrap();
    let leftover: Option<String> = sqlx::query_scalar("SELECT current_setting('app.tenant_id', true)")
        .fetch_one(&mut *conn)
        .await
        .unwrap();
    assert_eq!(
        leftover.as_deref(),
        Some(""),
        "PostgreSQL leaves '' behind, the helper must treat it as unset"
    );
    for (table, key) in TENANT_TABLES {
        assert_eq!(
            count(&mut conn, table, key, None).await,
            0,
            "{table} after SET LOCAL ended"
        );
    }
    // And explicitly emptied inside a transaction.
    let mut tx = conn.begin().await.unwrap();
    pgstrata_core::set_tenant_context(&mut tx, &a.ctx()).await.unwrap();
    pgstrata_core::context::clear_context(&mut tx).await.unwrap();
    assert_eq!(count(&mut tx, "tenancy.memberships", "tenant_id", None).await, 0);
    tx.rollback().await.unwrap();
    drop(conn);
    app.close().await;
    db.close().await.unwrap();
}

#[tokio::test]
async fn postgrest_jwt_claims_select_the_tenant_when_app_tenant_id_is_unset() {
    let db = migrated_db().await;
    let app = db.app_pool(2).await.unwrap();
    let a = org(&app, "alpha").await;
    let _b = org(&app, "bravo").await;
    let mut tx = app.begin().await.unwrap();
    sqlx::query("SELECT set_config('request.jwt.claims', $1, true)")
        .bind(format!(r#"{{"sub": "{}", "tenant_id": "{}"}}"#, a.owner.0, a.id.0))
        .execute(&mut *tx)
        .await
        .unwrap();
    let tenants: Vec<uuid::Uuid> = sqlx::query_scalar("SELECT id FROM tenancy.tenants")
        .fetch_all(&mut *tx)
        .await
        .unwrap();
    assert_eq!(tenants, [a.id.0]);
    let actor: Option<uuid::Uuid> = sqlx::query_scalar("SELECT tenancy.current_actor_id()")
        .fetch_one(&mut *tx)
        .await
        .unwrap();
    assert_eq!(actor, Some(a.owner.0));
    tx.rollback().await.unwrap();
    app.close().await;
    db.close().await.unwrap();
}

#[tokio::test]
async fn users_are_visible_to_themselves_and_their_tenants_only() {
    let db = migrated_db().await;
    let app = db.app_pool(2).await.unwrap();
    let a = org(&app, "alpha").await;
    let b = org(&app, "bravo").await;
    let mut tx = pgstrata_core::begin_tenant(&app, &a.ctx()).await.unwrap();
    let visible: Vec<uuid::Uuid> = sqlx::query_scalar("SELECT id FROM tenancy.users ORDER BY id")
        .fetch_all(&mut *tx)
        .await
        .unwrap();
    let mut expected = vec![a.owner.0, a.member.0];
    expected.sort();
    assert_eq!(visible, expected, "A sees its own members, not B's");
    assert_eq!(pgstrata_tenancy::users::get(&mut tx, b.owner).await.unwrap(), None);
    assert_eq!(
        pgstrata_tenancy::users::get(&mut tx, a.member)
            .await
            .unwrap()
            .map(|u| u.id),
        Some(a.member)
    );
    let err = pgstrata_tenancy::users::rename(&mut tx, b.owner, 1, "hijacked")
        .await
        .unwrap_err();
    assert!(
        matches!(err, pgstrata_tenancy::Error::NotFound { entity: "user", .. }),
        "{err}"
    );
    tx.rollback().await.unwrap();
    app.close().await;
    db.close().await.unwrap();
}

/// 1,000 transactions over a pool of 2 connections, alternating between two tenants and no
/// tenant at all, from 4 concurrent tasks: every read is checked against its own context.
#[tokio::test]
async fn a_thousand_alternating_tenant_transactions_over_two_connections_never_leak() {
    let db = migrated_db().await;
    let app = db.app_pool(2).await.unwrap();
    let orgs: [Org; 2] = [org(&app, "alpha").await, org(&app, "bravo").await];
    let mut tasks = Vec::new();
    for worker in 0..4usize {
        let app = app.clone();
        let orgs = orgs.clone();
        tasks.push(tokio::spawn(async move {
            let mut checked = 0;
            for i in 0..250usize {
                let n = worker * 250 + i;
                let mut tx = app.begin().await.unwrap();
                let expected: Option<&Org> = match n % 3 {
                    0 => Some(&orgs[0]),
                    1 => Some(&orgs[1]),
                    _ => None,
                };
                if let Some(o) = expected {
                    pgstrata_core::set_tenant_context(&mut tx, &TenantContext::tenant(o.id))
                        .await
                        .unwrap();
                }
                let rows: Vec<uuid::Uuid> = sqlx::query_scalar("SELECT tenant_id FROM tenancy.memberships")
                    .fetch_all(&mut *tx)
                    .await
                    .unwrap();
                let tenants: Vec<uuid::Uuid> = sqlx::query_scalar("SELECT id FROM tenancy.tenants")
                    .fetch_all(&mut *tx)
                    .await
                    .unwrap();
                match expected {
                    Some(o) => {
                        assert_eq!(rows.len(), 2, "transaction {n}");
                        assert!(
                            rows.iter().all(|t| *t == o.id.0),
                            "transaction {n} saw another tenant's rows"
                        );
                        assert_eq!(tenants, [o.id.0], "transaction {n}");
                    }
                    None => assert!(
                        rows.is_empty() && tenants.is_empty(),
                        "transaction {n} without tenant saw rows"
                    ),
                }
                if n % 2 == 0 {
                    tx.commit().await.unwrap()
                } else {
                    tx.rollback().await.unwrap()
                }
                checked += 1;
            }
            checked
        }));
    }
    let mut total = 0;
    for t in tasks {
        total += t.await.unwrap();
    }
    assert_eq!(total, 1000);
    app.close().await;
    db.close().await.unwrap();
}

/// `current_tenant_id()` keeps its check of the tenant for the rest of the transaction (D-071):
/// keyed by the tenant, so a context switched to a deleted tenant in the same transaction sees
/// nothing and one switched back sees its rows; and it stays out of parallel plans, where
/// PostgreSQL refuses the `set_config` that keeps the answer.
#[tokio::test]
async fn the_live_tenant_check_follows_the_context_within_a_transaction() {
    let db = migrated_db().await;
    let app = db.app_pool(2).await.unwrap();
    let a = org(&app, "alpha").await;
    let b = org(&app, "bravo").await;
    sqlx::query("UPDATE tenancy.tenants SET deleted_at = now() WHERE id = $1")
        .bind(b.id.0)
        .execute(&db.admin)
        .await
        .unwrap();
    let mut conn = app.acquire().await.unwrap();

    let mut tx = conn.begin().await.unwrap();
    for (ctx, expected) in [(&a, 2), (&b, 0), (&a, 2), (&b, 0)] {
        pgstrata_core::set_tenant_context(&mut tx, &ctx.ctx()).await.unwrap();
        assert_eq!(
            count(&mut tx, "tenancy.memberships", "tenant_id", None).await,
            expected,
            "{}",
            ctx.slug
        );
        let current: Option<uuid::Uuid> = sqlx::query_scalar("SELECT tenancy.current_tenant_id()")
            .fetch_one(&mut *tx)
            .await
            .unwrap();
        assert_eq!(current, (expected > 0).then_some(ctx.id.0), "{}", ctx.slug);
    }
    tx.rollback().await.unwrap();

    // The first statement of a transaction makes the check, here under a parallel plan.
    let mut tx = conn.begin().await.unwrap();
    pgstrata_core::set_tenant_context(&mut tx, &a.ctx()).await.unwrap();
    sqlx::query("SET LOCAL force_parallel_mode = on")
        .execute(&mut *tx)
        .await
        .unwrap();
    assert_eq!(count(&mut tx, "tenancy.memberships", "tenant_id", None).await, 2);
    tx.rollback().await.unwrap();

    drop(conn);
    app.close().await;
    db.close().await.unwrap();
}
