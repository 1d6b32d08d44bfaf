//! Classes 9 and 10 of the threat model, as attacks: the application role (`pgstrata_app`),
//! inside its own tenant and without changing the context, tries the self-service that it must
//! not have. Every attack runs against a superuser-owned and a non-superuser-owned install.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::{Org, migrator, org, register};
use pgstrata_core::testing::{OPERATOR_LOGIN_ROLE, Owner, TestDb};
use pgstrata_core::{TenantContext, TenantId, UserId};
use pgstrata_tenancy::tenants::{self, TenantChanges, TenantStatus};
use sqlx::{PgConnection, PgPool};

fn code(e: &sqlx::Error) -> String {
    e.as_database_error()
        .and_then(|d| d.code())
        .map(|c| c.into_owned())
        .unwrap_or_default()
}

/// Runs `sql` (binding the uuids) in `ctx` and returns the SQLSTATE it failed with, or the
/// number of rows it touched; always rolled back.
async fn attempt(app: &PgPool, ctx: &TenantContext, sql: &'static str, binds: &[uuid::Uuid]) -> Result<u64, String> {
    let mut tx = pgstrata_core::begin_tenant(app, ctx).await.unwrap();
    let mut q = sqlx::query(sql);
    for b in binds {
        q = q.bind(*b);
    }
    let out = q
        .execute(&mut *tx)
        .await
        .map(|r| r.rows_affected())
        .map_err(|e| code(&e));
    tx.rollback().await.unwrap();
    out
}

async fn stranger(app: &PgPool, name: &str) -> UserId {
    register(app, &format!("{name}@elsewhere.example"), name).await.unwrap()
}

async fn count_in(app: &PgPool, ctx: &TenantContext, sql: &'static str) -> i64 {
    let mut tx = pgstrata_core::begin_tenant(app, ctx).await.unwrap();
    let n: i64 = sqlx::query_scalar(sql).fetch_one(&mut *tx).await.unwrap();
    tx.rollback().await.unwrap();
    n
}

/// A transaction with an actor and no tenant, as before the user picks one.
async fn actor_only(app: &PgPool, user: UserId) -> sqlx::Transaction<'static, sqlx::Postgres> {
    let mut tx = app.begin().await.unwrap();
    sqlx::query("SELECT set_config('app.actor_id', $1::text, true)")
        .bind(user.0)
        .execute(&mut *tx)
        .await
        .unwrap();
    tx
}

async fn set_status(operator: &mut PgConnection, org: &Org, status: TenantStatus) {
    let version: i64 = sqlx::query_scalar("SELECT version FROM tenancy.tenants WHERE id = $1")
        .bind(org.id.0)
        .fetch_one(&mut *operator)
        .await
        .unwrap();
    let changes = TenantChanges {
        status: Some(status),
        ..Default::default()
    };
    tenants::update_tenant(operator, org.id, version, &changes)
        .await
        .unwrap();
}

#[tokio::test]
async fn the_request_path_cannot_change_operator_fields() {
    for owner in Owner::BOTH {
        let db = TestDb::migrated_by(&migrator(), owner).await.unwrap();
        let app = db.app_pool(2).await.unwrap();
        let a = org(&app, "acme").await;
        for sql in [
            "UPDATE tenancy.tenants SET status = 'active' WHERE id = $1",
            "UPDATE tenancy.tenants SET settings = '{\"plan\": \"enterprise\"}' WHERE id = $1",
            "UPDATE tenancy.tenants SET deleted_at = NULL WHERE id = $1",
            "UPDATE tenancy.tenants SET domain = 'evil.example' WHERE id = $1",
        ] {
            assert_eq!(
                attempt(&app, &a.ctx(), sql, &[a.id.0]).await,
                Err("42501".into()),
                "{owner:?}: {sql}"
            );
        }
        // Inserting a tenant with them set is refused too; the name stays the tenant's own.
        let planted = attempt(
            &app,
            &TenantContext::tenant(TenantId::new()),
            "INSERT INTO tenancy.tenants (id, slug, name, status, settings) VALUES (tenancy.context_tenant_id(), 'x', 'X', 'active', '{\"plan\": \"free-forever\"}')",
            &[],
        )
        .await;
        assert_eq!(planted, Err("42501".into()), "{owner:?}");
        assert_eq!(
            attempt(
                &app,
                &a.ctx(),
                "UPDATE tenancy.tenants SET name = 'Acme Inc' WHERE id = $1",
                &[a.id.0]
            )
            .await,
            Ok(1)
        );

        // The operator changes them, and a suspended tenant cannot un-suspend itself.
        let operator = db.pool_as(OPERATOR_LOGIN_ROLE, 1).await.unwrap();
        let mut op = operator.acquire().await.unwrap();
        set_status(&mut op, &a, TenantStatus::Suspended).await;
        let status: String = sqlx::query_scalar("SELECT status FROM tenancy.tenants WHERE id = $1")
            .bind(a.id.0)
            .fetch_one(&mut *op)
            .await
            .unwrap();
        assert_eq!(status, "suspended");
        // The operator sees tenants, nothing inside them.
        let err = sqlx::query("SELECT count(*) FROM tenancy.memberships")
            .execute(&mut *op)
            .await
            .unwrap_err();
        assert_eq!(code(&err), "42501");
        drop(op);
        operator.close().await;
        app.close().await;
        db.close().await.unwrap();
    }
}

#[tokio::test]
async fn a_suspended_tenant_reads_but_writes_nothing_and_a_deleted_one_sees_nothing() {
    for owner in Owner::BOTH {
        let db = TestDb::migrated_by(&migrator(), owner).await.unwrap();
        let app = db.app_pool(2).await.unwrap();
        let a = org(&app, "acme").await;
        let operator = db.pool_as(OPERATOR_LOGIN_ROLE, 1).await.unwrap();
        let mut op = operator.acquire().await.unwrap();

        set_status(&mut op, &a, TenantStatus::Suspended).await;
        assert_eq!(
            count_in(&app, &a.ctx(), "SELECT count(*) FROM tenancy.memberships").await,
            2
        );
        assert_eq!(
            count_in(&app, &a.ctx(), "SELECT count(*) FROM tenancy.tenants").await,
            1
        );
        let writes: [(&'static str, Vec<uuid::Uuid>); 5] = [
            (
                "UPDATE tenancy.tenants SET name = 'Renamed' WHERE id = $1",
                vec![a.id.0],
            ),
            (
                "UPDATE tenancy.memberships SET role = 'viewer' WHERE user_id = $1",
                vec![a.member.0],
            ),
            ("DELETE FROM tenancy.memberships WHERE user_id = $1", vec![a.owner.0]),
            (
                "UPDATE tenancy.invitations SET status = 'revoked' WHERE id = $1",
                vec![a.invitation.0],
            ),
            ("DELETE FROM tenancy.invitations WHERE id = $1", vec![a.invitation.0]),
        ];
        for (sql, binds) in &writes {
            let out = attempt(&app, &a.ctx(), sql, binds).await;
            assert!(
                matches!(out, Ok(0)) || out == Err("42501".into()),
                "{owner:?}: {sql}: {out:?}"
            );
        }
        let joined = stranger(&app, "joiner").await;
        let out = attempt(
            &app,
            &TenantContext::tenant(a.id).with_actor(joined),
            "INSERT INTO tenancy.memberships (tenant_id, user_id) VALUES (tenancy.current_tenant_id(), $1)",
            &[joined.0],
        )
        .await;
        assert_eq!(out, Err("42501".into()), "{owner:?}: joining a suspended tenant");
        // Through the crate, the refusals say why: the tenant is suspended.
        let mut tx = pgstrata_core::begin_tenant(&app, &a.ctx()).await.unwrap();
        let err = pgstrata_tenancy::invitations::revoke(&mut tx, a.invitation, 1)
            .await
            .unwrap_err();
        assert!(
            matches!(err, pgstrata_tenancy::Error::TenantSuspended(t) if t == a.id),
            "{owner:?}: {err}"
        );
        tx.rollback().await.unwrap();
        let invitee = register(&app, "invitee@acme.example", "").await.unwrap();
        let mut conn = app.acquire().await.unwrap();
        let err = pgstrata_tenancy::invitations::accept(&mut conn, &a.token, invitee)
            .await
            .unwrap_err();
        assert!(
            matches!(err, pgstrata_tenancy::Error::TenantSuspended(t) if t == a.id),
            "{owner:?}: {err}"
        );
        drop(conn);

        // Deleted: the context is no tenant at all.
        let version: i64 = sqlx::query_scalar("SELECT version FROM tenancy.tenants WHERE id = $1")
            .bind(a.id.0)
            .fetch_one(&mut *op)
            .await
            .unwrap();
        tenants::soft_delete(&mut op, a.id, version).await.unwrap();
        for sql in [
            "SELECT count(*) FROM tenancy.memberships",
            "SELECT count(*) FROM tenancy.invitations",
            "SELECT count(*) FROM tenancy.tenants",
            "SELECT count(*) FROM tenancy.users WHERE id <> tenancy.current_actor_id()",
        ] {
            assert_eq!(count_in(&app, &a.ctx(), sql).await, 0, "{owner:?}: {sql}");
        }
        drop(op);
        operator.close().await;
        app.close().await;
        db.close().await.unwrap();
    }
}

#[tokio::test]
async fn nobody_is_enrolled_or_named_without_consent() {
    for owner in Owner::BOTH {
        let db = TestDb::migrated_by(&migrator(), owner).await.unwrap();
        let app = db.app_pool(2).await.unwrap();
        let a = org(&app, "acme").await;
        let victim = stranger(&app, "victim").await;

        // Enrolling an existing user, as the owner: refused, so its email stays hidden.
        let enrol = "INSERT INTO tenancy.memberships (tenant_id, user_id, role) VALUES (tenancy.current_tenant_id(), $1, 'member')";
        assert_eq!(
            attempt(&app, &a.ctx(), enrol, &[victim.0]).await,
            Err("42501".into()),
            "{owner:?}"
        );
        assert_eq!(
            count_in(
                &app,
                &a.ctx(),
                "SELECT count(*) FROM tenancy.users WHERE email LIKE 'victim@%'"
            )
            .await,
            0
        );
        // Moving a membership to another user: refused.
        let moved = "UPDATE tenancy.memberships SET user_id = $1 WHERE user_id = $2";
        assert_eq!(
            attempt(&app, &a.ctx(), moved, &[victim.0, a.member.0]).await,
            Err("42501".into()),
            "{owner:?}"
        );
        // Accepting an invitation for someone else: refused.
        let mut tx = pgstrata_core::begin_tenant(&app, &a.ctx()).await.unwrap();
        let err = sqlx::query("SELECT tenancy.accept_invitation($1, $2)")
            .bind(&a.token)
            .bind(victim.0)
            .execute(&mut *tx)
            .await
            .unwrap_err();
        assert_eq!(code(&err), "42501", "{owner:?}");
        tx.rollback().await.unwrap();

        // Naming another user as the sender, directly or through the function: refused.
        let forged = "INSERT INTO tenancy.invitations (tenant_id, email, token_hash, expires_at, invited_by)
                      VALUES (tenancy.current_tenant_id(), 'x@y.example', sha256('x'), now() + interval '1 day', $1)";
        assert_eq!(
            attempt(&app, &a.ctx(), forged, &[a.member.0]).await,
            Err("42501".into()),
            "{owner:?}"
        );
        let via_function = "SELECT * FROM tenancy.create_invitation('x@y.example', 'member', interval '1 day', $1)";
        assert_eq!(
            attempt(&app, &a.ctx(), via_function, &[a.member.0]).await,
            Err("42501".into()),
            "{owner:?}"
        );
        // Forging an invitation's outcome: inserted as accepted, or moved back to pending.
        let accepted = "INSERT INTO tenancy.invitations (tenant_id, email, token_hash, expires_at, invited_by, status, accepted_by, accepted_at)
                        VALUES (tenancy.current_tenant_id(), 'x@y.example', sha256('x'), now() + interval '1 day', tenancy.current_actor_id(), 'accepted', $1, now())";
        assert_eq!(
            attempt(&app, &a.ctx(), accepted, &[victim.0]).await,
            Err("42501".into()),
            "{owner:?}"
        );
        let mut tx = pgstrata_core::begin_tenant(&app, &a.ctx()).await.unwrap();
        sqlx::query("UPDATE tenancy.invitations SET status = 'revoked' WHERE id = $1")
            .bind(a.invitation)
            .execute(&mut *tx)
            .await
            .unwrap();
        let err = sqlx::query("UPDATE tenancy.invitations SET status = 'pending' WHERE id = $1")
            .bind(a.invitation)
            .execute(&mut *tx)
            .await
            .unwrap_err();
        assert_eq!(code(&err), "42501", "{owner:?}");
        tx.rollback().await.unwrap();

        // The legitimate path: the invitee accepts in its own context.
        let invitee = register(&app, "invitee@acme.example", "").await.unwrap();
        let mut conn = app.acquire().await.unwrap();
        pgstrata_tenancy::invitations::accept(&mut conn, &a.token, invitee)
            .await
            .unwrap();
        drop(conn);
        app.close().await;
        db.close().await.unwrap();
    }
}

#[tokio::test]
async fn without_rbac_only_an_owner_gives_roles() {
    for owner in Owner::BOTH {
        let db = TestDb::migrated_by(&migrator(), owner).await.unwrap();
        let app = db.app_pool(2).await.unwrap();
        let a = org(&app, "acme").await;
        let member = TenantContext::tenant(a.id).with_actor(a.member);
        let promote_self = "UPDATE tenancy.memberships SET role = 'owner' WHERE user_id = $1";
        assert_eq!(
            attempt(&app, &member, promote_self, &[a.member.0]).await,
            Err("42501".into()),
            "{owner:?}"
        );
        let invite_owner = "SELECT * FROM tenancy.create_invitation('boss@acme.example', 'owner')";
        assert_eq!(
            attempt(&app, &member, invite_owner, &[]).await,
            Err("42501".into()),
            "{owner:?}"
        );
        let remove_owner = "DELETE FROM tenancy.memberships WHERE user_id = $1";
        assert_eq!(
            attempt(&app, &member, remove_owner, &[a.owner.0]).await,
            Err("42501".into()),
            "{owner:?}"
        );
        // A stranger joins itself as a member, never as more.
        let joiner = stranger(&app, "joiner").await;
        let ctx = TenantContext::tenant(a.id).with_actor(joiner);
        let join = "INSERT INTO tenancy.memberships (tenant_id, user_id, role) VALUES (tenancy.current_tenant_id(), $1, 'owner')";
        assert_eq!(
            attempt(&app, &ctx, join, &[joiner.0]).await,
            Err("42501".into()),
            "{owner:?}"
        );
        // What stays allowed: the owner gives roles, a member leaves by itself.
        assert_eq!(attempt(&app, &a.ctx(), promote_self, &[a.member.0]).await, Ok(1));
        assert_eq!(attempt(&app, &member, remove_owner, &[a.member.0]).await, Ok(1));
        app.close().await;
        db.close().await.unwrap();
    }
}

#[tokio::test]
async fn lookups_before_a_tenant_is_chosen_show_only_the_actors_tenants() {
    for owner in Owner::BOTH {
        let db = TestDb::migrated_by(&migrator(), owner).await.unwrap();
        let app = db.app_pool(2).await.unwrap();
        let a = org(&app, "acme").await;
        let b = org(&app, "bravo").await;
        let operator = db.pool_as(OPERATOR_LOGIN_ROLE, 1).await.unwrap();
        sqlx::query("UPDATE tenancy.tenants SET domain = 'app.bravo.example' WHERE id = $1")
            .bind(b.id.0)
            .execute(&operator)
            .await
            .unwrap();

        let mut conn = app.acquire().await.unwrap();
        // No tenant in context: only the actor is set.
        let mut tx = actor_only(&app, a.owner).await;
        let mine = tenants::actor_tenants(&mut tx).await.unwrap();
        assert_eq!(
            mine.iter().map(|t| t.slug.as_str()).collect::<Vec<_>>(),
            ["acme"],
            "{owner:?}"
        );
        assert_eq!(mine[0].role, "owner");
        assert_eq!(
            tenants::resolve(&mut tx, "ACME").await.unwrap().map(|t| t.tenant_id),
            Some(a.id)
        );
        // Bravo exists, but to a non-member it looks like nothing, by slug or by domain.
        assert_eq!(tenants::resolve(&mut tx, "bravo").await.unwrap(), None, "{owner:?}");
        assert_eq!(tenants::resolve(&mut tx, "app.bravo.example").await.unwrap(), None);
        tx.rollback().await.unwrap();
        let mut tx = actor_only(&app, b.member).await;
        let found = tenants::resolve(&mut tx, "app.bravo.example").await.unwrap().unwrap();
        assert_eq!((found.tenant_id, found.role.as_str()), (b.id, "member"));
        tx.rollback().await.unwrap();
        // Without an actor: nothing.
        let rows: i64 = sqlx::query_scalar("SELECT count(*) FROM tenancy.actor_tenants()")
            .fetch_one(&mut *conn)
            .await
            .unwrap();
        assert_eq!(rows, 0);
        drop(conn);
        operator.close().await;
        app.close().await;
        db.close().await.unwrap();
    }
}

/// The member directory view reads users as its owner (D-145): it must show exactly the
/// tenant's members, page and filter by email, show nothing without a tenant, and never hand
/// another tenant's row to a caller's own function, even one that leaks what it is given.
#[tokio::test]
async fn the_member_directory_shows_the_tenants_members_and_nothing_else() {
    use pgstrata_core::Page;
    use pgstrata_tenancy::memberships;
    for owner in Owner::BOTH {
        let db = TestDb::migrated_by(&migrator(), owner).await.unwrap();
        let app = db.app_pool(2).await.unwrap();
        let a = org(&app, "acme").await;
        let b = org(&app, "bravo").await;

        let mut tx = pgstrata_core::begin_tenant(&app, &a.ctx()).await.unwrap();
        let all = memberships::directory(&mut tx, None, &Page::first(50)).await.unwrap();
        let mut users: Vec<UserId> = all.iter().map(|e| e.user_id).collect();
        users.sort();
        let mut expected = vec![a.owner, a.member];
        expected.sort();
        assert_eq!(users, expected, "{owner:?}: acme's directory lists acme's members");
        assert!(
            all.iter()
                .all(|e| e.tenant_id == a.id && e.email.ends_with("@acme.example"))
        );
        assert!(
            all.windows(2).all(|w| w[0].id < w[1].id),
            "the view's own order is the page order"
        );
        // Keyset paging: one row, then the other.
        let first = memberships::directory(&mut tx, None, &Page::first(1)).await.unwrap();
        let next = memberships::directory(&mut tx, None, &Page::after(first[0].id, 1))
            .await
            .unwrap();
        assert_eq!(first.len() + next.len(), 2);
        assert_ne!(first[0].id, next[0].id);
        // By email, in another case than stored; bravo's owner is nobody here.
        let found = memberships::directory(&mut tx, Some("OWNER@ACME.example"), &Page::first(5))
            .await
            .unwrap();
        assert_eq!(found.iter().map(|e| e.user_id).collect::<Vec<_>>(), [a.owner]);
        let bravo = memberships::directory(&mut tx, Some("owner@bravo.example"), &Page::first(5))
            .await
            .unwrap();
        assert!(bravo.is_empty(), "{owner:?}: bravo's owner is in acme's directory");
        // Naming bravo's tenant from acme's context finds nothing.
        let named: Vec<memberships::DirectoryEntry> =
            pgstrata_core::sql::query_as(memberships::directory_stmt(b.id, None, &Page::first(50)).unwrap())
                .fetch_all(&mut *tx)
                .await
                .unwrap();
        assert!(named.is_empty(), "{owner:?}: bravo's members through its tenant id");
        // A caller's function that records every email it is shown sees acme's only.
        sqlx::raw_sql(
            "CREATE TEMP TABLE seen (email text);
             CREATE FUNCTION pg_temp.leak(e text) RETURNS boolean LANGUAGE plpgsql COST 0.0001 AS
                 $$ BEGIN INSERT INTO pg_temp.seen VALUES (e); RETURN true; END $$;",
        )
        .execute(&mut *tx)
        .await
        .unwrap();
        let leaked: i64 = sqlx::query_scalar("SELECT count(*) FROM tenancy.member_directory WHERE pg_temp.leak(email)")
            .fetch_one(&mut *tx)
            .await
            .unwrap();
        assert_eq!(leaked, 2);
        let seen: Vec<String> = sqlx::query_scalar("SELECT email FROM pg_temp.seen")
            .fetch_all(&mut *tx)
            .await
            .unwrap();
        assert!(
            seen.iter().all(|e| e.ends_with("@acme.example")),
            "{owner:?}: a caller's function was shown {seen:?}"
        );
        tx.rollback().await.unwrap();

        // Without a tenant in context the directory is empty.
        let mut conn = app.acquire().await.unwrap();
        let rows: i64 = sqlx::query_scalar("SELECT count(*) FROM tenancy.member_directory")
            .fetch_one(&mut *conn)
            .await
            .unwrap();
        assert_eq!(rows, 0, "{owner:?}");
        drop(conn);
        app.close().await;
        db.close().await.unwrap();
    }
}
