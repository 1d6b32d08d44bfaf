//! The escalations reproduced against rbac (issue 10, class 2) and the diamond-shaped role
//! graph (class 3), each run as the unprivileged application login role by a plain member of
//! a tenant that also has an owner, against a superuser-owned and a non-superuser-owned install.
//! Each test fails if the attack works: the change is refused with a typed error and the member
//! still lacks what it was after.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use chrono::{Duration, Utc};
use pgstrata_core::testing::{Owner, TestDb};
use pgstrata_core::{TenantContext, TenantId, TenantTx, UserId};
use pgstrata_rbac::admin::{self, NewGrant};
use pgstrata_rbac::{ApiKeyId, Effect, Error, GroupId, Principal, Resource, check, explain};
use sqlx::{PgConnection, PgPool};
use uuid::Uuid;

/// A tenant with an owner (membership role `owner`) and a plain member (role `member`:
/// `*:read`, `*:create`, `*:update`).
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
    fn member(&self) -> Principal {
        Principal::user(self.member)
    }
}

struct Env {
    db: TestDb,
    app: PgPool,
    org: Org,
}

impl Env {
    async fn new(owner: Owner) -> Self {
        let db = TestDb::migrated_by(&common::migrator(), owner).await.unwrap();
        sqlx::raw_sql(
            "INSERT INTO rbac.permissions (key) VALUES
               ('invoice:read'), ('invoice:create'), ('invoice:delete'), ('project:read'), ('project:delete')",
        )
        .execute(&db.admin)
        .await
        .unwrap();
        let app = db.app_pool(2).await.unwrap();
        let owner_id = common::user(&app, "owner@acme.example").await;
        let member = common::user(&app, "member@acme.example").await;
        // The founder becomes the owner through the application role (the bootstrap rule).
        let id = common::tenant(&app, "acme", owner_id).await;
        // Other members join by invitation; the fixture adds one directly.
        common::add_member(&db, id, member, "member").await;
        Env {
            db,
            app,
            org: Org {
                id,
                owner: owner_id,
                member,
            },
        }
    }

    async fn as_owner(&self) -> TenantTx<'static> {
        pgstrata_core::begin_tenant(&self.app, &self.org.as_owner())
            .await
            .unwrap()
    }

    async fn as_member(&self) -> TenantTx<'static> {
        pgstrata_core::begin_tenant(&self.app, &self.org.as_member())
            .await
            .unwrap()
    }

    /// Whether the member may do `permission`, asked in a fresh transaction.
    async fn member_may(&self, permission: &str) -> bool {
        let mut tx = self.as_member().await;
        let allowed = check(&mut tx, &self.org.member(), permission, None).await.unwrap();
        tx.rollback().await.unwrap();
        allowed
    }

    async fn close(self) {
        self.app.close().await;
        self.db.close().await.unwrap();
    }
}

fn refused_escalation(err: &Error) -> bool {
    matches!(err, Error::EscalationRefused { .. })
}

async fn exec(conn: &mut PgConnection, sql: &'static str, binds: &[Uuid]) -> Result<u64, Error> {
    let mut q = sqlx::query(sql);
    for b in binds {
        q = q.bind(*b);
    }
    q.execute(conn).await.map(|r| r.rows_affected()).map_err(Error::from)
}

#[tokio::test]
async fn an_empty_role_granted_to_oneself_cannot_then_receive_star() {
    for owner in Owner::BOTH {
        let env = Env::new(owner).await;
        let a = &env.org;
        let mut tx = env.as_member().await;
        admin::create_role(&mut tx, "mine", "").await.unwrap();
        admin::grant(&mut tx, &NewGrant::role(a.member(), "mine"))
            .await
            .unwrap();
        let err = admin::add_role_permission(&mut tx, "mine", "*", Effect::Allow)
            .await
            .unwrap_err();
        assert!(refused_escalation(&err), "{owner:?}: {err}");
        tx.rollback().await.unwrap();

        // Committed step by step, the last step is still refused.
        let mut tx = env.as_member().await;
        admin::create_role(&mut tx, "mine", "").await.unwrap();
        admin::grant(&mut tx, &NewGrant::role(a.member(), "mine"))
            .await
            .unwrap();
        tx.commit().await.unwrap();
        let mut tx = env.as_member().await;
        let err = admin::add_role_permission(&mut tx, "mine", "invoice:delete", Effect::Allow)
            .await
            .unwrap_err();
        assert!(refused_escalation(&err), "{owner:?}: {err}");
        tx.rollback().await.unwrap();
        assert!(!env.member_may("invoice:delete").await, "{owner:?}");
        env.close().await;
    }
}

#[tokio::test]
async fn a_permission_cannot_be_added_to_a_role_one_holds() {
    for owner in Owner::BOTH {
        let env = Env::new(owner).await;
        let a = &env.org;
        let mut tx = env.as_owner().await;
        admin::create_role(&mut tx, "helper", "").await.unwrap();
        admin::add_role_permission(&mut tx, "helper", "project:read", Effect::Allow)
            .await
            .unwrap();
        admin::grant(&mut tx, &NewGrant::role(a.member(), "helper"))
            .await
            .unwrap();
        tx.commit().await.unwrap();

        for pattern in ["invoice:delete", "project:*", "*"] {
            let mut tx = env.as_member().await;
            let err = admin::add_role_permission(&mut tx, "helper", pattern, Effect::Allow)
                .await
                .unwrap_err();
            assert!(refused_escalation(&err), "{owner:?} {pattern}: {err}");
            tx.rollback().await.unwrap();
        }
        // What the member holds, it may put in the role.
        let mut tx = env.as_member().await;
        admin::add_role_permission(&mut tx, "helper", "invoice:read", Effect::Allow)
            .await
            .unwrap();
        tx.commit().await.unwrap();
        assert!(!env.member_may("invoice:delete").await, "{owner:?}");
        assert!(!env.member_may("project:delete").await, "{owner:?}");
        env.close().await;
    }
}

#[tokio::test]
async fn a_parent_edge_to_owner_or_admin_is_refused() {
    for owner in Owner::BOTH {
        let env = Env::new(owner).await;
        let a = &env.org;
        let mut tx = env.as_member().await;
        admin::create_role(&mut tx, "mine", "").await.unwrap();
        admin::grant(&mut tx, &NewGrant::role(a.member(), "mine"))
            .await
            .unwrap();
        tx.commit().await.unwrap();
        for parent in ["owner", "admin"] {
            let mut tx = env.as_member().await;
            let err = admin::add_role_parent(&mut tx, "mine", parent).await.unwrap_err();
            assert!(refused_escalation(&err), "{owner:?} {parent}: {err}");
            tx.rollback().await.unwrap();
        }
        // Inheriting what it already has is fine.
        let mut tx = env.as_member().await;
        admin::add_role_parent(&mut tx, "mine", "viewer").await.unwrap();
        tx.commit().await.unwrap();
        assert!(!env.member_may("invoice:delete").await, "{owner:?}");
        env.close().await;
    }
}

#[tokio::test]
async fn joining_a_group_that_holds_admin_is_refused() {
    for owner in Owner::BOTH {
        let env = Env::new(owner).await;
        let a = &env.org;
        let group = GroupId::new();
        let mut tx = env.as_owner().await;
        admin::grant(&mut tx, &NewGrant::role(Principal::group(group), "admin"))
            .await
            .unwrap();
        tx.commit().await.unwrap();

        let mut tx = env.as_member().await;
        let err = admin::add_group_member(&mut tx, group, &a.member()).await.unwrap_err();
        assert!(refused_escalation(&err), "{owner:?}: {err}");
        tx.rollback().await.unwrap();
        // Nor for an API key it controls.
        let mut tx = env.as_member().await;
        let key = Principal::api_key(ApiKeyId::new());
        let err = admin::add_group_member(&mut tx, group, &key).await.unwrap_err();
        assert!(refused_escalation(&err), "{owner:?}: {err}");
        tx.rollback().await.unwrap();
        assert!(!env.member_may("invoice:delete").await, "{owner:?}");
        env.close().await;
    }
}

#[tokio::test]
async fn deleting_a_deny_grant_that_restricts_oneself_is_refused() {
    for owner in Owner::BOTH {
        let env = Env::new(owner).await;
        let a = &env.org;
        let mut tx = env.as_owner().await;
        let deny = admin::grant(&mut tx, &NewGrant::deny(a.member(), "invoice:read"))
            .await
            .unwrap();
        let scoped = admin::grant(
            &mut tx,
            &NewGrant::deny(a.member(), "project:read").on(Resource::new("project", "7")),
        )
        .await
        .unwrap();
        tx.commit().await.unwrap();
        assert!(!env.member_may("invoice:read").await);

        for id in [deny.id, scoped.id] {
            let mut tx = env.as_member().await;
            let err = admin::revoke(&mut tx, id).await.unwrap_err();
            assert!(matches!(&err, Error::DenyRemovalRefused { .. }), "{owner:?}: {err}");
            tx.rollback().await.unwrap();
        }
        // The same with plain SQL, in one statement for every deny it can see.
        let mut tx = env.as_member().await;
        let err = exec(
            &mut tx,
            "DELETE FROM rbac.grants WHERE principal_id = $1 AND effect = 'deny'",
            &[a.member.0],
        )
        .await
        .unwrap_err();
        assert!(matches!(&err, Error::DenyRemovalRefused { .. }), "{owner:?}: {err}");
        tx.rollback().await.unwrap();
        assert!(!env.member_may("invoice:read").await, "{owner:?}");

        // The owner, who holds invoice:read, may lift it.
        let mut tx = env.as_owner().await;
        admin::revoke(&mut tx, deny.id).await.unwrap();
        tx.commit().await.unwrap();
        assert!(env.member_may("invoice:read").await, "{owner:?}");
        env.close().await;
    }
}

#[tokio::test]
async fn deleting_a_deny_role_permission_or_what_carries_it_is_refused() {
    for owner in Owner::BOTH {
        let env = Env::new(owner).await;
        let a = &env.org;
        let mut tx = env.as_owner().await;
        admin::create_role(&mut tx, "restricted", "").await.unwrap();
        admin::add_role_permission(&mut tx, "restricted", "invoice:read", Effect::Deny)
            .await
            .unwrap();
        admin::create_role(&mut tx, "wrapper", "").await.unwrap();
        admin::add_role_parent(&mut tx, "wrapper", "restricted").await.unwrap();
        admin::grant(&mut tx, &NewGrant::role(a.member(), "wrapper"))
            .await
            .unwrap();
        tx.commit().await.unwrap();
        assert!(!env.member_may("invoice:read").await);

        let attempts: [(&str, &'static str); 4] = [
            (
                "the deny role permission",
                "DELETE FROM rbac.role_permissions WHERE role_key = 'restricted' AND effect = 'deny'",
            ),
            (
                "the edge that carries it",
                "DELETE FROM rbac.role_parents WHERE role_key = 'wrapper'",
            ),
            ("the role grant", "DELETE FROM rbac.grants WHERE role_key = 'wrapper'"),
            ("the role itself", "DELETE FROM rbac.roles WHERE key = 'restricted'"),
        ];
        for (what, sql) in attempts {
            let mut tx = env.as_member().await;
            let err = exec(&mut tx, sql, &[]).await.unwrap_err();
            assert!(
                matches!(&err, Error::DenyRemovalRefused { pattern } if pattern == "invoice:read"),
                "{owner:?} {what}: {err}"
            );
            tx.rollback().await.unwrap();
        }
        assert!(!env.member_may("invoice:read").await, "{owner:?}");
        env.close().await;
    }
}

#[tokio::test]
async fn updating_ones_own_membership_or_an_invitation_to_owner_is_refused() {
    for owner in Owner::BOTH {
        let env = Env::new(owner).await;
        let a = &env.org;
        let mut tx = env.as_member().await;
        let err = exec(
            &mut tx,
            "UPDATE tenancy.memberships SET role = 'owner' WHERE user_id = $1",
            &[a.member.0],
        )
        .await
        .unwrap_err();
        assert!(refused_escalation(&err), "{owner:?}: {err}");
        tx.rollback().await.unwrap();

        // Nor to a role no one has defined yet (it would be filled by whoever creates it).
        let mut tx = env.as_member().await;
        let err = exec(
            &mut tx,
            "UPDATE tenancy.memberships SET role = 'billing_admin' WHERE user_id = $1",
            &[a.member.0],
        )
        .await
        .unwrap_err();
        assert!(
            matches!(&err, Error::Db(pgstrata_core::DbError::MissingReference { .. })),
            "{owner:?}: {err}"
        );
        tx.rollback().await.unwrap();

        // A new invitation to owner, through the function and directly.
        let mut tx = env.as_member().await;
        let err = sqlx::query("SELECT * FROM tenancy.create_invitation('mallory@evil.example', 'owner')")
            .execute(&mut *tx)
            .await
            .map_err(Error::from)
            .unwrap_err();
        assert!(refused_escalation(&err), "{owner:?}: {err}");
        tx.rollback().await.unwrap();

        // An invitation the owner made for a member, turned into an owner's, or redirected.
        let mut tx = env.as_owner().await;
        sqlx::query("SELECT * FROM tenancy.create_invitation('carol@acme.example', 'admin')")
            .execute(&mut *tx)
            .await
            .unwrap();
        sqlx::query("SELECT * FROM tenancy.create_invitation('dave@acme.example', 'member')")
            .execute(&mut *tx)
            .await
            .unwrap();
        tx.commit().await.unwrap();
        let attempts: [&'static str; 2] = [
            "UPDATE tenancy.invitations SET role = 'owner' WHERE email = 'dave@acme.example'",
            "UPDATE tenancy.invitations SET email = 'mallory@evil.example' WHERE email = 'carol@acme.example'",
        ];
        for sql in attempts {
            let mut tx = env.as_member().await;
            let err = exec(&mut tx, sql, &[]).await.unwrap_err();
            // Since tenancy V3 the request path may not update an invitation's role or address
            // at all (column privileges); rbac's guard refuses it for roles that may.
            let forbidden = matches!(&err, Error::Db(pgstrata_core::DbError::Forbidden { .. }));
            assert!(refused_escalation(&err) || forbidden, "{owner:?} {sql}: {err}");
            tx.rollback().await.unwrap();
        }
        // A member may invite a member (it holds everything `member` gives).
        let mut tx = env.as_member().await;
        sqlx::query("SELECT * FROM tenancy.create_invitation('erin@acme.example', 'member')")
            .execute(&mut *tx)
            .await
            .unwrap();
        tx.rollback().await.unwrap();
        assert!(!env.member_may("invoice:delete").await, "{owner:?}");
        env.close().await;
    }
}

#[tokio::test]
async fn an_expiring_admin_grant_cannot_mint_permanent_grants() {
    for owner in Owner::BOTH {
        let env = Env::new(owner).await;
        let a = &env.org;
        let until = Utc::now() + Duration::hours(1);
        let mut tx = env.as_owner().await;
        admin::grant(&mut tx, &NewGrant::role(a.member(), "admin").until(until))
            .await
            .unwrap();
        admin::create_role(&mut tx, "ops", "").await.unwrap();
        tx.commit().await.unwrap();
        assert!(env.member_may("invoice:delete").await);

        let someone = Principal::api_key(ApiKeyId::new());
        let refused = [
            NewGrant::allow(someone, "invoice:delete"),
            NewGrant::allow(someone, "invoice:delete").until(until + Duration::minutes(1)),
            NewGrant::role(someone, "admin"),
            NewGrant::role(a.member(), "admin"),
        ];
        for grant in refused {
            let mut tx = env.as_member().await;
            let err = admin::grant(&mut tx, &grant).await.unwrap_err();
            assert!(
                matches!(&err, Error::OutlivesActor { .. }),
                "{owner:?} {grant:?}: {err}"
            );
            tx.rollback().await.unwrap();
        }
        // Roles do not expire, so a temporary admin cannot put what it holds for now in one.
        let mut tx = env.as_member().await;
        let err = admin::add_role_permission(&mut tx, "ops", "invoice:delete", Effect::Allow)
            .await
            .unwrap_err();
        assert!(matches!(&err, Error::OutlivesActor { .. }), "{owner:?}: {err}");
        tx.rollback().await.unwrap();
        // Within its own time it may grant.
        let mut tx = env.as_member().await;
        admin::grant(&mut tx, &NewGrant::allow(someone, "invoice:delete").until(until))
            .await
            .unwrap();
        tx.rollback().await.unwrap();
        env.close().await;
    }
}

/// Class 3: `levels` levels of two roles each, every role of a level inheriting from both of the
/// next (2^levels paths from bottom to top); the top holds `invoice:delete`.
async fn diamond(tx: &mut TenantTx<'_>, levels: usize) -> Result<(), Error> {
    for level in 0..=levels {
        for side in ["x", "y"] {
            admin::create_role(tx, &format!("{side}{level}"), "").await?;
        }
    }
    admin::add_role_permission(tx, &format!("x{levels}"), "invoice:delete", Effect::Allow).await?;
    for level in (0..levels).rev() {
        for side in ["x", "y"] {
            for parent in ["x", "y"] {
                admin::add_role_parent(tx, &format!("{side}{level}"), &format!("{parent}{}", level + 1)).await?;
            }
        }
    }
    Ok(())
}

#[tokio::test]
async fn a_twenty_level_diamond_resolves_once_per_role_and_deeper_graphs_are_refused() {
    for owner in Owner::BOTH {
        let env = Env::new(owner).await;
        let a = &env.org;
        let mut tx = env.as_owner().await;
        diamond(&mut tx, 20).await.unwrap();
        admin::grant(&mut tx, &NewGrant::role(a.member(), "x0")).await.unwrap();
        tx.commit().await.unwrap();

        let mut tx = env.as_member().await;
        assert!(check(&mut tx, &a.member(), "invoice:delete", None).await.unwrap());
        assert!(!check(&mut tx, &a.member(), "project:delete", None).await.unwrap());
        let why = explain(&mut tx, &a.member(), "invoice:delete", None).await.unwrap();
        assert!(why.allowed);
        assert_eq!(why.decided_by.len(), 1, "one statement, not one per path: {why:?}");
        let path = why.decided_by[0].role_path.clone().unwrap();
        assert_eq!(path.len(), 21);
        assert_eq!(path.first().map(String::as_str), Some("x0"));
        assert_eq!(path.last().map(String::as_str), Some("x20"));
        tx.rollback().await.unwrap();

        // Past the depth limit, the edge that would make it deeper is refused with a typed error.
        let mut tx = env.as_owner().await;
        let mut err = None;
        for level in 0..=pgstrata_rbac::MAX_ROLE_DEPTH + 1 {
            admin::create_role(&mut tx, &format!("c{level}"), "").await.unwrap();
            if level == 0 {
                continue;
            }
            let edge = admin::add_role_parent(&mut tx, &format!("c{}", level - 1), &format!("c{level}")).await;
            if let Err(e) = edge {
                err = Some((level, e));
                break;
            }
        }
        let (level, err) = err.expect("a chain past the depth limit was accepted");
        assert_eq!(level, pgstrata_rbac::MAX_ROLE_DEPTH + 1, "{owner:?}");
        assert!(matches!(&err, Error::RoleGraphLimit { .. }), "{owner:?}: {err}");
        tx.rollback().await.unwrap();
        env.close().await;
    }
}

#[tokio::test]
async fn a_graph_loaded_past_the_limits_fails_checks_with_a_typed_error() {
    let env = Env::new(Owner::Superuser).await;
    let a = &env.org;
    // The superuser loads a chain deeper than the limit, past the write checks (as data
    // loaded before V2 might be): checks through it refuse rather than walk it.
    let depth = pgstrata_rbac::MAX_ROLE_DEPTH as i32 + 2;
    let mut admin = env.db.admin.begin().await.unwrap();
    sqlx::query("ALTER TABLE rbac.role_parents DISABLE TRIGGER role_parents_check")
        .execute(&mut *admin)
        .await
        .unwrap();
    sqlx::query("INSERT INTO rbac.roles (tenant_id, key) SELECT $1, 'c' || i FROM generate_series(0, $2) i")
        .bind(a.id)
        .bind(depth)
        .execute(&mut *admin)
        .await
        .unwrap();
    sqlx::query(
        "INSERT INTO rbac.role_parents (tenant_id, role_key, parent_key)
         SELECT $1, 'c' || i, 'c' || (i + 1) FROM generate_series(0, $2 - 1) i",
    )
    .bind(a.id)
    .bind(depth)
    .execute(&mut *admin)
    .await
    .unwrap();
    sqlx::query("ALTER TABLE rbac.role_parents ENABLE TRIGGER role_parents_check")
        .execute(&mut *admin)
        .await
        .unwrap();
    sqlx::query(
        "INSERT INTO rbac.grants (tenant_id, principal_type, principal_id, role_key) VALUES ($1, 'user', $2, 'c0')",
    )
    .bind(a.id)
    .bind(a.member)
    .execute(&mut *admin)
    .await
    .unwrap();
    admin.commit().await.unwrap();
    let mut tx = env.as_member().await;
    let err = check(&mut tx, &a.member(), "invoice:read", None).await.unwrap_err();
    assert!(matches!(&err, Error::RoleGraphLimit { .. }), "{err}");
    tx.rollback().await.unwrap();
    env.close().await;
}

/// `rbac.check` runs as its owner (D-146), which a superuser owner makes blind to the policies:
/// its answer must still come from the caller's tenant only. A second tenant whose only member
/// holds every permission there is asked about from the first tenant, by raw SQL naming that
/// member, and from no tenant at all; neither answers yes.
#[tokio::test]
async fn the_check_run_as_its_owner_answers_only_from_the_callers_tenant() {
    for owner in Owner::BOTH {
        let env = Env::new(owner).await;
        let other = common::user(&env.app, "owner@bravo.example").await;
        let other_tenant = common::tenant(&env.app, "bravo", other).await;
        let ask = "SELECT rbac.check('user', $1, 'invoice:delete')";
        // Bravo's owner holds invoice:delete in bravo.
        let mut tx = pgstrata_core::begin_tenant(&env.app, &TenantContext::tenant(other_tenant).with_actor(other))
            .await
            .unwrap();
        let in_bravo: bool = sqlx::query_scalar(ask).bind(other).fetch_one(&mut *tx).await.unwrap();
        assert!(
            in_bravo,
            "{owner:?}: the fixture's owner holds invoice:delete in its own tenant"
        );
        tx.rollback().await.unwrap();
        // From acme, bravo's owner holds nothing, and neither does acme's member.
        let mut tx = env.as_member().await;
        for principal in [other, env.org.member] {
            let from_acme: bool = sqlx::query_scalar(ask)
                .bind(principal)
                .fetch_one(&mut *tx)
                .await
                .unwrap();
            assert!(!from_acme, "{owner:?}: a check in acme answered from bravo's grants");
        }
        tx.rollback().await.unwrap();
        // Without a tenant context nobody holds anything.
        let mut conn = env.app.acquire().await.unwrap();
        let no_tenant: bool = sqlx::query_scalar(ask).bind(other).fetch_one(&mut *conn).await.unwrap();
        assert!(!no_tenant, "{owner:?}: a check without a tenant context answered yes");
        drop(conn);
        env.close().await;
    }
}

/// Class 1 for rbac: every function that runs a query pins `search_path = pg_catalog, pg_temp`,
/// none but `check` is SECURITY DEFINER (it reads the caller's tenant as the owner, D-146),
/// none is executable by PUBLIC.
#[tokio::test]
async fn rbac_functions_pin_search_path_and_are_not_executable_by_public() {
    for owner in Owner::BOTH {
        let env = Env::new(owner).await;
        let rows: Vec<(String, bool, Option<Vec<String>>, bool)> = sqlx::query_as(
            "SELECT p.proname::text, p.prosecdef, p.proconfig::text[],
                    EXISTS (SELECT 1 FROM aclexplode(coalesce(p.proacl, acldefault('f', p.proowner))) a
                             WHERE a.grantee = 0 AND a.privilege_type = 'EXECUTE')
               FROM pg_proc p WHERE p.pronamespace = 'rbac'::regnamespace ORDER BY 1",
        )
        .fetch_all(&env.app)
        .await
        .unwrap();
        assert!(rows.len() > 20, "{rows:?}");
        // Pure expressions over their arguments: no relation or type names to shadow.
        let pure = [
            "covers",
            "is_pattern",
            "overlaps",
            "max_role_depth",
            "max_roles",
            "max_role_edges",
        ];
        for (name, definer, config, public) in rows {
            assert!(!public, "{owner:?}: PUBLIC may execute rbac.{name}");
            assert_eq!(
                definer,
                name == "check",
                "{owner:?}: rbac.{name} SECURITY DEFINER is {definer}"
            );
            if !pure.contains(&name.as_str()) {
                let pinned = config
                    .unwrap_or_default()
                    .contains(&"search_path=pg_catalog, pg_temp".to_string());
                assert!(pinned, "{owner:?}: rbac.{name} does not pin search_path");
            }
        }
        env.close().await;
    }
}

/// The pg_temp trick against rbac's guards: the caller shadows `text`, `uuid` and `timestamptz`
/// with domains whose CHECK runs its own code (which refuses to go on if it ever runs as anyone
/// but the caller), and tables with rbac's names; the guards never run that code as another
/// role nor read those tables, and still refuse the escalation.
#[tokio::test]
async fn pg_temp_shadows_do_not_reach_the_guards() {
    for owner in Owner::BOTH {
        let env = Env::new(owner).await;
        let mut tx = env.as_member().await;
        sqlx::raw_sql(
            "CREATE FUNCTION pg_temp.pwn(v anyelement) RETURNS boolean LANGUAGE plpgsql AS
                 $$ BEGIN
                        IF current_user <> session_user THEN
                            RAISE EXCEPTION 'pwned: the caller''s code ran as %', current_user;
                        END IF;
                        RETURN true;
                    END $$;
             CREATE DOMAIN pg_temp.text AS pg_catalog.text CHECK (pg_temp.pwn(VALUE));
             CREATE DOMAIN pg_temp.uuid AS pg_catalog.uuid CHECK (pg_temp.pwn(VALUE));
             CREATE DOMAIN pg_temp.timestamptz AS pg_catalog.timestamptz CHECK (pg_temp.pwn(VALUE));
             CREATE TEMP TABLE grants (tenant_id pg_catalog.uuid, permission pg_catalog.text);
             CREATE TEMP TABLE memberships (tenant_id pg_catalog.uuid, user_id pg_catalog.uuid, role pg_catalog.text);",
        )
        .execute(&mut *tx)
        .await
        .unwrap();
        let someone = Principal::api_key(ApiKeyId::new());
        admin::grant(&mut tx, &NewGrant::allow(someone, "invoice:read"))
            .await
            .unwrap();
        admin::create_role(&mut tx, "mine", "").await.unwrap();
        let err = admin::add_role_permission(&mut tx, "mine", "*", Effect::Allow)
            .await
            .unwrap_err();
        assert!(refused_escalation(&err), "{owner:?}: {err}");
        tx.rollback().await.unwrap();
        env.close().await;
    }
}
