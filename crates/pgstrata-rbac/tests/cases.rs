//! Named cases of the resolution rules, the escalation guard and tenant isolation, through
//! the Rust API as the unprivileged application role.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use chrono::{Duration, Utc};
use pgstrata_core::testing::TestDb;
use pgstrata_core::{DbError, TenantContext, TenantId, UserId};
use pgstrata_rbac::admin::{self, NewGrant};
use pgstrata_rbac::{
    ApiKeyId, Effect, Error, GroupId, Principal, Resource, check, effective_permissions, explain, principals_with,
};
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
    let owner = common::user(app, &format!("owner@{slug}.example")).await;
    let member = common::user(app, &format!("member@{slug}.example")).await;
    let id = common::tenant(app, slug, owner).await;
    // Members other than the founder join by invitation; the fixture adds one directly.
    common::add_member(db, id, member, "member").await;
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
    let user = Principal::user(a.member);
    let mut tx = pgstrata_core::begin_tenant(&app, &a.as_owner()).await.unwrap();
    admin::create_role(&mut tx, "restricted", "").await.unwrap();
    admin::add_role_permission(&mut tx, "restricted", "invoice:delete", Effect::Deny)
        .await
        .unwrap();
    admin::create_role(&mut tx, "auditor", "").await.unwrap();
    admin::add_role_parent(&mut tx, "auditor", "restricted").await.unwrap();
    admin::grant(&mut tx, &NewGrant::allow(user, "invoice:delete"))
        .await
        .unwrap();
    assert!(
        check(&mut tx, &user, "invoice:delete", None).await.unwrap(),
        "the direct allow alone allows"
    );

    admin::grant(&mut tx, &NewGrant::role(user, "auditor")).await.unwrap();
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
    let key = Principal::api_key(ApiKeyId::new());
    let mut tx = pgstrata_core::begin_tenant(&app, &a.as_owner()).await.unwrap();
    admin::grant(&mut tx, &NewGrant::allow(key, "invoice:*")).await.unwrap();
    admin::grant(
        &mut tx,
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
    let temp = Principal::api_key(ApiKeyId::new());
    let mut tx = pgstrata_core::begin_tenant(&app, &a.as_owner()).await.unwrap();
    admin::grant(
        &mut tx,
        &NewGrant::allow(temp, "project:read").until(Utc::now() - Duration::seconds(1)),
    )
    .await
    .unwrap();
    admin::grant(
        &mut tx,
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
        admin::create_role(&mut tx, key, "").await.unwrap();
    }
    admin::add_role_parent(&mut tx, "a", "b").await.unwrap();
    admin::add_role_parent(&mut tx, "b", "c").await.unwrap();
    admin::add_role_parent(&mut tx, "a", "viewer").await.unwrap();
    tx.commit().await.unwrap();

    let mut tx = pgstrata_core::begin_tenant(&app, &a.as_owner()).await.unwrap();
    let err = admin::add_role_parent(&mut tx, "c", "a").await.unwrap_err();
    assert!(
        matches!(&err, Error::Cycle { cycle } if cycle == "c -> a -> b -> c"),
        "{err}"
    );
    tx.rollback().await.unwrap();

    let mut tx = pgstrata_core::begin_tenant(&app, &a.as_owner()).await.unwrap();
    let err = admin::add_role_parent(&mut tx, "a", "nope").await.unwrap_err();
    assert!(matches!(&err, Error::UnknownRole { key } if key == "nope"), "{err}");
    tx.rollback().await.unwrap();
    let mut tx = pgstrata_core::begin_tenant(&app, &a.as_owner()).await.unwrap();
    let err = admin::create_role(&mut tx, "admin", "").await.unwrap_err();
    assert!(matches!(&err, Error::RoleExists { .. }), "{err}");
    tx.rollback().await.unwrap();
    app.close().await;
    db.close().await.unwrap();
}

#[tokio::test]
async fn granting_what_one_does_not_hold_is_refused() {
    let (db, app) = setup().await;
    let a = org(&db, &app, "acme").await;
    let someone = Principal::api_key(ApiKeyId::new());

    // The member (member -> viewer: *:read, *:create, *:update) may pass on what it holds...
    let mut tx = pgstrata_core::begin_tenant(&app, &a.as_member()).await.unwrap();
    let g = admin::grant(&mut tx, &NewGrant::allow(someone, "invoice:read"))
        .await
        .unwrap();
    assert_eq!(g.granted_by, Some(a.member), "the database records who granted");
    admin::grant(&mut tx, &NewGrant::allow(someone, "*:read"))
        .await
        .unwrap();
    admin::grant(&mut tx, &NewGrant::role(someone, "viewer")).await.unwrap();
    tx.commit().await.unwrap();

    // ...but not more.
    let refused = [
        NewGrant::allow(someone, "invoice:delete"),
        NewGrant::allow(someone, "invoice:*"),
        NewGrant::role(someone, "admin"),
        NewGrant::role(Principal::user(a.member), "owner"),
        NewGrant::deny(someone, "project:delete"),
    ];
    for grant in refused {
        let mut tx = pgstrata_core::begin_tenant(&app, &a.as_member()).await.unwrap();
        let err = admin::grant(&mut tx, &grant).await.unwrap_err();
        assert!(matches!(err, Error::EscalationRefused { .. }), "{grant:?}: {err}");
        tx.rollback().await.unwrap();
    }
    // Without an acting user nothing can be granted.
    let mut tx = pgstrata_core::begin_tenant(&app, &TenantContext::tenant(a.id))
        .await
        .unwrap();
    let err = admin::grant(&mut tx, &NewGrant::allow(someone, "invoice:read"))
        .await
        .unwrap_err();
    assert!(matches!(&err, Error::Db(DbError::Forbidden { .. })), "{err}");
    tx.rollback().await.unwrap();
    // The owner may grant anything.
    let mut tx = pgstrata_core::begin_tenant(&app, &a.as_owner()).await.unwrap();
    admin::grant(&mut tx, &NewGrant::role(Principal::user(a.member), "admin"))
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
    let group = GroupId::new();
    let key = Principal::api_key(ApiKeyId::new());
    let mut tx = pgstrata_core::begin_tenant(&app, &a.as_owner()).await.unwrap();
    admin::grant(&mut tx, &NewGrant::allow(Principal::group(group), "project:delete"))
        .await
        .unwrap();
    assert!(!check(&mut tx, &key, "project:delete", None).await.unwrap());
    admin::add_group_member(&mut tx, group, &key).await.unwrap();
    assert!(check(&mut tx, &key, "project:delete", None).await.unwrap());
    admin::remove_group_member(&mut tx, group, &key).await.unwrap();
    assert!(!check(&mut tx, &key, "project:delete", None).await.unwrap());
    let err = admin::remove_group_member(&mut tx, group, &key).await.unwrap_err();
    assert!(
        matches!(
            &err,
            Error::NotFound {
                entity: "group member",
                ..
            }
        ),
        "{err}"
    );
    tx.rollback().await.unwrap();
    app.close().await;
    db.close().await.unwrap();
}

#[tokio::test]
async fn tenant_a_grants_never_answer_for_tenant_b() {
    let (db, app) = setup().await;
    let a = org(&db, &app, "acme").await;
    let b = org(&db, &app, "bravo").await;
    let key = Principal::api_key(ApiKeyId::new());
    let mut tx = pgstrata_core::begin_tenant(&app, &a.as_owner()).await.unwrap();
    admin::grant(&mut tx, &NewGrant::allow(key, "*")).await.unwrap();
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
    let listed = admin::list_grants(&mut tx, &key, &Default::default()).await.unwrap();
    assert!(listed.is_empty(), "A's grants are not B's");
    // Named by A's tenant id, A's grants are still invisible from B (row-level security).
    let in_a = pgstrata_core::sql::query_as::<pgstrata_rbac::generated::Grant>(
        admin::list_grants_stmt(a.id, &key, &Default::default()).unwrap(),
    )
    .fetch_all(&mut *tx)
    .await
    .unwrap();
    assert!(in_a.is_empty(), "A's grants are invisible from B");
    // A's owner is no one in B.
    assert!(
        !check(&mut tx, &Principal::user(a.owner), "invoice:read", None)
            .await
            .unwrap()
    );
    tx.rollback().await.unwrap();

    // The operations take the tenant from the transaction, so no call can name B from A's
    // context; the same insert naming B, run from A's context, is refused by row-level security.
    let mut tx = pgstrata_core::begin_tenant(&app, &a.as_owner()).await.unwrap();
    let into_b = admin::grant_stmt(b.id, &NewGrant::allow(key, "invoice:read")).unwrap();
    let err = pgstrata_core::sql::query(into_b)
        .execute(&mut *tx)
        .await
        .map_err(Error::from)
        .unwrap_err();
    assert!(matches!(&err, Error::Db(DbError::Forbidden { .. })), "{err}");
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
        .bind(a.id)
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
    admin::grant(&mut tx, &NewGrant::deny(Principal::user(a.member), "invoice:read"))
        .await
        .unwrap();
    tx.commit().await.unwrap();
    assert_eq!(count(a.as_member()).await, 0, "the deny hides every row");
    assert_eq!(count(a.as_owner()).await, 2);
    app.close().await;
    db.close().await.unwrap();
}

#[tokio::test]
async fn changing_what_is_not_there_is_not_found_and_names_it() {
    let (db, app) = setup().await;
    let a = org(&db, &app, "acme").await;
    let key = Principal::api_key(ApiKeyId::new());
    let mut tx = pgstrata_core::begin_tenant(&app, &a.as_owner()).await.unwrap();
    admin::create_role(&mut tx, "ops", "").await.unwrap();
    admin::add_role_permission(&mut tx, "ops", "invoice:read", Effect::Allow)
        .await
        .unwrap();
    admin::add_role_parent(&mut tx, "ops", "viewer").await.unwrap();
    let g = admin::grant(&mut tx, &NewGrant::role(key, "ops")).await.unwrap();
    assert_eq!(g.principal_type, pgstrata_rbac::PrincipalType::ApiKey);
    assert_eq!(g.effect, Effect::Allow);

    // Each removal works once, then is NotFound naming what was missing.
    admin::remove_role_permission(&mut tx, "ops", "invoice:read", Effect::Allow)
        .await
        .unwrap();
    let err = admin::remove_role_permission(&mut tx, "ops", "invoice:read", Effect::Allow)
        .await
        .unwrap_err();
    assert!(
        matches!(&err, Error::NotFound { entity: "role permission", id } if id == "allow invoice:read of ops"),
        "{err}"
    );
    admin::remove_role_parent(&mut tx, "ops", "viewer").await.unwrap();
    let err = admin::remove_role_parent(&mut tx, "ops", "viewer").await.unwrap_err();
    assert!(
        matches!(&err, Error::NotFound { entity: "role parent", id } if id == "ops -> viewer"),
        "{err}"
    );
    admin::revoke(&mut tx, g.id).await.unwrap();
    let err = admin::revoke(&mut tx, g.id).await.unwrap_err();
    assert!(
        matches!(&err, Error::NotFound { entity: "grant", id } if *id == g.id.to_string()),
        "{err}"
    );
    admin::delete_role(&mut tx, "ops").await.unwrap();
    let err = admin::delete_role(&mut tx, "ops").await.unwrap_err();
    assert!(matches!(&err, Error::NotFound { entity: "role", .. }), "{err}");
    // System roles are not the tenant's to delete.
    let err = admin::delete_role(&mut tx, "admin").await.unwrap_err();
    assert!(matches!(&err, Error::NotFound { entity: "role", .. }), "{err}");

    // Adding to a role that does not exist names the role. Each refusal by the database ends
    // its transaction, so each runs in a savepoint of the test's transaction.
    let ctx = a.as_owner();
    let mut sp = pgstrata_core::begin_tenant(&mut *tx, &ctx).await.unwrap();
    let err = admin::add_role_permission(&mut sp, "ghost", "invoice:read", Effect::Allow)
        .await
        .unwrap_err();
    assert!(matches!(&err, Error::UnknownRole { key } if key == "ghost"), "{err}");
    sp.rollback().await.unwrap();
    let mut sp = pgstrata_core::begin_tenant(&mut *tx, &ctx).await.unwrap();
    let err = admin::add_role_parent(&mut sp, "ghost", "viewer").await.unwrap_err();
    assert!(matches!(&err, Error::UnknownRole { key } if key == "ghost"), "{err}");
    sp.rollback().await.unwrap();
    let mut sp = pgstrata_core::begin_tenant(&mut *tx, &ctx).await.unwrap();
    let err = admin::grant(&mut sp, &NewGrant::role(key, "ghost")).await.unwrap_err();
    assert!(matches!(&err, Error::UnknownRole { key } if key == "ghost"), "{err}");
    sp.rollback().await.unwrap();
    // A duplicate grant, a group in a group, a bad key: typed, before or after SQL.
    admin::grant(&mut tx, &NewGrant::allow(key, "invoice:read"))
        .await
        .unwrap();
    let mut sp = pgstrata_core::begin_tenant(&mut *tx, &ctx).await.unwrap();
    let err = admin::grant(&mut sp, &NewGrant::allow(key, "invoice:read"))
        .await
        .unwrap_err();
    assert!(matches!(&err, Error::DuplicateGrant), "{err}");
    sp.rollback().await.unwrap();
    let group = GroupId::new();
    let err = admin::add_group_member(&mut tx, group, &Principal::group(GroupId::new()))
        .await
        .unwrap_err();
    assert!(matches!(&err, Error::InvalidMember { .. }), "{err}");
    let err = admin::create_role(&mut tx, "Ops!", "").await.unwrap_err();
    assert!(matches!(&err, Error::InvalidRoleKey { .. }), "{err}");
    tx.rollback().await.unwrap();
    app.close().await;
    db.close().await.unwrap();
}

#[tokio::test]
async fn grants_are_listed_page_by_page_with_typed_keys() {
    let (db, app) = setup().await;
    let a = org(&db, &app, "acme").await;
    let key = Principal::api_key(ApiKeyId::new());
    let mut tx = pgstrata_core::begin_tenant(&app, &a.as_owner()).await.unwrap();
    let mut made = Vec::new();
    for p in ["invoice:read", "invoice:create", "project:read"] {
        made.push(admin::grant(&mut tx, &NewGrant::allow(key, p)).await.unwrap().id);
    }
    made.sort();
    let page = pgstrata_core::Page::first(2);
    let first = admin::list_grants(&mut tx, &key, &page).await.unwrap();
    assert_eq!(first.iter().map(|g| g.id).collect::<Vec<_>>(), made[..2]);
    let next = page.next(&first, |g| g.id).expect("a second page");
    let second = admin::list_grants(&mut tx, &key, &next).await.unwrap();
    assert_eq!(second.iter().map(|g| g.id).collect::<Vec<_>>(), made[2..]);
    assert!(next.next(&second, |g| g.id).is_none());
    let err = admin::list_grants(&mut tx, &key, &pgstrata_core::Page::first(1001))
        .await
        .unwrap_err();
    assert!(matches!(&err, Error::InvalidPage(_)), "{err}");
    tx.rollback().await.unwrap();
    app.close().await;
    db.close().await.unwrap();
}
