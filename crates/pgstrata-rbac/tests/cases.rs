//! Named cases of the resolution rules, the escalation guard and tenant isolation, through
//! the Rust API as the unprivileged application role.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use chrono::{Duration, Utc};
use pgstrata_core::testing::TestDb;
use pgstrata_core::{TenantContext, TenantId, UserId};
use pgstrata_rbac::admin::{self, NewGrant};
use pgstrata_rbac::{Effect, Error, Principal, Resource, check, effective_permissions, explain, principals_with};
use pgstrata_tenancy::memberships;
use pgstrata_tenancy::tenants::{self, NewTenant};
use pgstrata_tenancy::users::{self, NewUser};
use sqlx::PgPool;

/// A tenant with an owner and a plain member, and the demo permission catalog.
struct Org {
    id: TenantId,
    owner: UserId,
    member: UserId,
}

impl Org {
    fn as_owner(&self) -> TenantContext {
        TenantContext::tenant(self.id).with_actor(self.owner)
    }
    fn as_member(&self) -> TenantContext {
        TenantContext::tenant(self.id).with_actor(self.member)
    }
}

async fn org(db: &TestDb, app: &PgPool, slug: &str) -> Org {
    let new_user = |who: &str| NewUser {
        email: format!("{who}@{slug}.example"),
        display_name: who.into(),
    };
    let mut conn = app.acquire().await.unwrap();
    let owner = users::register(&mut conn, &new_user("owner")).await.unwrap().id;
    let member = users::register(&mut conn, &new_user("member")).await.unwrap().id;
    let id = tenants::create_tenant(&mut conn, &NewTenant::new(slug, slug), Some(owner))
        .await
        .unwrap()
        .id;
    drop(conn);
    // Members other than the founder join by invitation; the fixture adds one directly.
    let mut tx = pgstrata_core::begin_tenant(&db.admin, &TenantContext::tenant(id).with_actor(member))
        .await
        .unwrap();
    memberships::add(&mut tx, member, "member").await.unwrap();
    tx.commit().await.unwrap();
    Org { id, owner, member }
}

async fn setup() -> (TestDb, PgPool) {
    let db = common::migrated_db().await;
    sqlx::raw_sql(
        "INSERT INTO rbac.permissions (key) VALUES
           ('invoice:read'), ('invoice:create'), ('invoice:delete'), ('project:read'), ('project:delete')",
    )
    .execute(&db.admin)
    .await
    .unwrap();
    let app = db.app_pool(4).await.unwrap();
    (db, app)
}

#[tokio::test]
async fn a_deny_on_an_inherited_role_beats_a_direct_allow() {
    let (db, app) = setup().await;
    let a = org(&db, &app, "acme").await;
    let user = Principal::user(a.member.0);
    let mut tx = pgstrata_core::begin_tenant(&app, &a.as_owner()).await.unwrap();
    admin::create_role(&mut tx, a.id, "restricted", "").await.unwrap();
    admin::add_role_permission(&mut tx, a.id, "restricted", "invoice:delete", Effect::Deny)
        .await
        .unwrap();
    admin::create_role(&mut tx, a.id, "auditor", "").await.unwrap();
    admin::add_role_parent(&mut tx, a.id, "auditor", "restricted")
        .await
        .unwrap();
    admin::grant(&mut tx, a.id, &NewGrant::allow(user, "invoice:delete"))
        .await
        .unwrap();
    assert!(
        check(&mut tx, &user, "invoice:delete", None).await.unwrap(),
        "the direct allow alone allows"
    );

    admin::grant(&mut tx, a.id, &NewGrant::role(user, "auditor"))
        .await
        .unwrap();
    assert!(
        !check(&mut tx, &user, "invoice:delete", None).await.unwrap(),
        "the inherited deny wins"
    );
    let why = explain(&mut tx, &user, "invoice:delete", None).await.unwrap();
    assert!(!why.allowed);
    assert_eq!(why.decided_by.len(), 1);
    assert_eq!(why.decided_by[0].effect, Effect::Deny);
    assert_eq!(
        why.decided_by[0].role_path.as_deref(),
        Some(&["auditor".to_string(), "restricted".to_string()][..])
    );
    assert!(
        !effective_permissions(&mut tx, &user, None)
            .await
            .unwrap()
            .contains(&"invoice:delete".to_string())
    );
    tx.rollback().await.unwrap();
    app.close().await;
    db.close().await.unwrap();
}

#[tokio::test]
async fn a_scoped_deny_does_not_deny_other_resources() {
    let (db, app) = setup().await;
    let a = org(&db, &app, "acme").await;
    let key = Principal::api_key(uuid::Uuid::now_v7());
    let mut tx = pgstrata_core::begin_tenant(&app, &a.as_owner()).await.unwrap();
    admin::grant(&mut tx, a.id, &NewGrant::allow(key, "invoice:*"))
        .await
        .unwrap();
    admin::grant(
        &mut tx,
        a.id,
        &NewGrant::deny(key, "invoice:read").on(Resource::new("invoice", "42")),
    )
    .await
    .unwrap();
    let on = |id: &str| Resource::new("invoice", id);
    assert!(!check(&mut tx, &key, "invoice:read", Some(&on("42"))).await.unwrap());
    assert!(check(&mut tx, &key, "invoice:read", Some(&on("43"))).await.unwrap());
    assert!(
        check(&mut tx, &key, "invoice:read", None).await.unwrap(),
        "tenant-wide, the scoped deny does not apply"
    );
    assert!(
        check(&mut tx, &key, "invoice:delete", Some(&on("42"))).await.unwrap(),
        "only invoice:read is denied"
    );
    let holders = principals_with(&mut tx, "invoice:read", Some(&on("42"))).await.unwrap();
    assert!(!holders.contains(&key));
    assert!(
        principals_with(&mut tx, "invoice:read", Some(&on("43")))
            .await
            .unwrap()
            .contains(&key)
    );
    tx.rollback().await.unwrap();
    app.close().await;
    db.close().await.unwrap();
}

#[tokio::test]
async fn expired_grants_do_not_count() {
    let (db, app) = setup().await;
    let a = org(&db, &app, "acme").await;
    let temp = Principal::api_key(uuid::Uuid::now_v7());
    let mut tx = pgstrata_core::begin_tenant(&app, &a.as_owner()).await.unwrap();
    admin::grant(
        &mut tx,
        a.id,
        &NewGrant::allow(temp, "project:read").until(Utc::now() - Duration::seconds(1)),
    )
    .await
    .unwrap();
    admin::grant(
        &mut tx,
        a.id,
        &NewGrant::allow(temp, "invoice:read").until(Utc::now() + Duration::hours(1)),
    )
    .await
    .unwrap();
    assert!(!check(&mut tx, &temp, "project:read", None).await.unwrap());
    assert!(check(&mut tx, &temp, "invoice:read", None).await.unwrap());
    assert_eq!(
        effective_permissions(&mut tx, &temp, None).await.unwrap(),
        ["invoice:read"]
    );
    tx.rollback().await.unwrap();
    app.close().await;
    db.close().await.unwrap();
}

#[tokio::test]
async fn a_cycle_in_role_inheritance_is_rejected() {
    let (db, app) = setup().await;
    let a = org(&db, &app, "acme").await;
    let mut tx = pgstrata_core::begin_tenant(&app, &a.as_owner()).await.unwrap();
    for key in ["a", "b", "c"] {
        admin::create_role(&mut tx, a.id, key, "").await.unwrap();
    }
    admin::add_role_parent(&mut tx, a.id, "a", "b").await.unwrap();
    admin::add_role_parent(&mut tx, a.id, "b", "c").await.unwrap();
    admin::add_role_parent(&mut tx, a.id, "a", "viewer").await.unwrap();
    tx.commit().await.unwrap();

    let mut tx = pgstrata_core::begin_tenant(&app, &a.as_owner()).await.unwrap();
    let err = admin::add_role_parent(&mut tx, a.id, "c", "a").await.unwrap_err();
    assert!(
        matches!(&err, Error::Cycle { cycle } if cycle == "c -> a -> b -> c"),
        "{err}"
    );
    tx.rollback().await.unwrap();

    let mut tx = pgstrata_core::begin_tenant(&app, &a.as_owner()).await.unwrap();
    let err = admin::add_role_parent(&mut tx, a.id, "a", "nope").await.unwrap_err();
    assert!(matches!(&err, Error::UnknownRole { key } if key == "nope"), "{err}");
    tx.rollback().await.unwrap();
    let mut tx = pgstrata_core::begin_tenant(&app, &a.as_owner()).await.unwrap();
    let err = admin::create_role(&mut tx, a.id, "admin", "").await.unwrap_err();
    assert!(matches!(&err, Error::RoleExists { .. }), "{err}");
    tx.rollback().await.unwrap();
    app.close().await;
    db.close().await.unwrap();
}

#[tokio::test]
async fn granting_what_one_does_not_hold_is_refused() {
    let (db, app) = setup().await;
    let a = org(&db, &app, "acme").await;
    let someone = Principal::api_key(uuid::Uuid::now_v7());

    // The member (member -> viewer: *:read, *:create, *:update) may pass on what it holds...
    let mut tx = pgstrata_core::begin_tenant(&app, &a.as_member()).await.unwrap();
    let g = admin::grant(&mut tx, a.id, &NewGrant::allow(someone, "invoice:read"))
        .await
        .unwrap();
    assert_eq!(g.granted_by, Some(a.member.0), "the database records who granted");
    admin::grant(&mut tx, a.id, &NewGrant::allow(someone, "*:read"))
        .await
        .unwrap();
    admin::grant(&mut tx, a.id, &NewGrant::role(someone, "viewer"))
        .await
        .unwrap();
    tx.commit().await.unwrap();

    // ...but not more.
    let refused = [
        NewGrant::allow(someone, "invoice:delete"),
        NewGrant::allow(someone, "invoice:*"),
        NewGrant::role(someone, "admin"),
        NewGrant::role(Principal::user(a.member.0), "owner"),
        NewGrant::deny(someone, "project:delete"),
    ];
    for grant in refused {
        let mut tx = pgstrata_core::begin_tenant(&app, &a.as_member()).await.unwrap();
        let err = admin::grant(&mut tx, a.id, &grant).await.unwrap_err();
        assert!(matches!(err, Error::EscalationRefused { .. }), "{grant:?}: {err}");
        tx.rollback().await.unwrap();
    }
    // Without an acting user nothing can be granted.
    let mut tx = pgstrata_core::begin_tenant(&app, &TenantContext::tenant(a.id))
        .await
        .unwrap();
    let err = admin::grant(&mut tx, a.id, &NewGrant::allow(someone, "invoice:read"))
        .await
        .unwrap_err();
    assert!(
        matches!(&err, Error::Db(pgstrata_core::DbError::Forbidden { .. })),
        "{err}"
    );
    tx.rollback().await.unwrap();
    // The owner may grant anything.
    let mut tx = pgstrata_core::begin_tenant(&app, &a.as_owner()).await.unwrap();
    admin::grant(&mut tx, a.id, &NewGrant::role(Principal::user(a.member.0), "admin"))
        .await
        .unwrap();
    tx.commit().await.unwrap();
    app.close().await;
    db.close().await.unwrap();
}

#[tokio::test]
async fn group_grants_reach_members_only_while_they_are_members() {
    let (db, app) = setup().await;
    let a = org(&db, &app, "acme").await;
    let group = uuid::Uuid::now_v7();
    let key = Principal::api_key(uuid::Uuid::now_v7());
    let mut tx = pgstrata_core::begin_tenant(&app, &a.as_owner()).await.unwrap();
    admin::grant(
        &mut tx,
        a.id,
        &NewGrant::allow(Principal::group(group), "project:delete"),
    )
    .await
    .unwrap();
    assert!(!check(&mut tx, &key, "project:delete", None).await.unwrap());
    admin::add_group_member(&mut tx, a.id, group, &key).await.unwrap();
    assert!(check(&mut tx, &key, "project:delete", None).await.unwrap());
    assert!(admin::remove_group_member(&mut tx, a.id, group, &key).await.unwrap());
    assert!(!check(&mut tx, &key, "project:delete", None).await.unwrap());
    tx.rollback().await.unwrap();
    app.close().await;
    db.close().await.unwrap();
}

#[tokio::test]
async fn tenant_a_grants_never_answer_for_tenant_b() {
    let (db, app) = setup().await;
    let a = org(&db, &app, "acme").await;
    let b = org(&db, &app, "bravo").await;
    let key = Principal::api_key(uuid::Uuid::now_v7());
    let mut tx = pgstrata_core::begin_tenant(&app, &a.as_owner()).await.unwrap();
    admin::grant(&mut tx, a.id, &NewGrant::allow(key, "*")).await.unwrap();
    assert!(check(&mut tx, &key, "invoice:delete", None).await.unwrap());
    tx.commit().await.unwrap();

    let mut tx = pgstrata_core::begin_tenant(&app, &b.as_owner()).await.unwrap();
    assert!(!check(&mut tx, &key, "invoice:delete", None).await.unwrap());
    assert!(
        explain(&mut tx, &key, "invoice:delete", None)
            .await
            .unwrap()
            .decided_by
            .is_empty()
    );
    assert!(effective_permissions(&mut tx, &key, None).await.unwrap().is_empty());
    assert!(
        !principals_with(&mut tx, "invoice:delete", None)
            .await
            .unwrap()
            .contains(&key)
    );
    let listed = admin::list_grants(&mut tx, a.id, &key, &Default::default())
        .await
        .unwrap();
    assert!(listed.is_empty(), "A's grants are invisible from B");
    // A's owner is no one in B.
    assert!(
        !check(&mut tx, &Principal::user(a.owner.0), "invoice:read", None)
            .await
            .unwrap()
    );
    tx.rollback().await.unwrap();

    // Writing a grant into B from A's context is refused by row-level security.
    let mut tx = pgstrata_core::begin_tenant(&app, &a.as_owner()).await.unwrap();
    let err = admin::grant(&mut tx, b.id, &NewGrant::allow(key, "invoice:read"))
        .await
        .unwrap_err();
    assert!(
        matches!(&err, Error::Db(pgstrata_core::DbError::Forbidden { .. })),
        "{err}"
    );
    tx.rollback().await.unwrap();
    app.close().await;
    db.close().await.unwrap();
}

#[tokio::test]
async fn the_check_works_inside_a_row_level_policy() {
    let (db, app) = setup().await;
    let a = org(&db, &app, "acme").await;
    sqlx::raw_sql(
        "CREATE TABLE public.invoices (tenant_id uuid NOT NULL, id int NOT NULL, PRIMARY KEY (tenant_id, id));
         ALTER TABLE public.invoices ENABLE ROW LEVEL SECURITY, FORCE ROW LEVEL SECURITY;
         CREATE POLICY readers ON public.invoices FOR SELECT USING (
             tenant_id = (SELECT tenancy.current_tenant_id())
             AND (SELECT rbac.check('user', (SELECT tenancy.current_actor_id()), 'invoice:read')));
         GRANT SELECT ON public.invoices TO pgstrata_app;",
    )
    .execute(&db.admin)
    .await
    .unwrap();
    sqlx::query("INSERT INTO public.invoices VALUES ($1, 1), ($1, 2)")
        .bind(a.id.0)
        .execute(&db.admin)
        .await
        .unwrap();

    let count = |ctx: TenantContext| {
        let app = app.clone();
        async move {
            let mut tx = pgstrata_core::begin_tenant(&app, &ctx).await.unwrap();
            let n: i64 = sqlx::query_scalar("SELECT count(*) FROM public.invoices")
                .fetch_one(&mut *tx)
                .await
                .unwrap();
            tx.rollback().await.unwrap();
            n
        }
    };
    assert_eq!(count(a.as_member()).await, 2, "members read invoices (viewer: *:read)");
    let mut tx = pgstrata_core::begin_tenant(&app, &a.as_owner()).await.unwrap();
    admin::grant(
        &mut tx,
        a.id,
        &NewGrant::deny(Principal::user(a.member.0), "invoice:read"),
    )
    .await
    .unwrap();
    tx.commit().await.unwrap();
    assert_eq!(count(a.as_member()).await, 0, "the deny hides every row");
    assert_eq!(count(a.as_owner()).await, 2);
    app.close().await;
    db.close().await.unwrap();
}
