//! Property test: for random role graphs, grants, wildcards, scopes, groups, memberships and
//! denies, the SQL check, explain, effective permissions and principals-with all agree with
//! the reference model in `model/`. Every case is a fresh tenant of one database, queried as
//! the unprivileged application role.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;
mod model;

use model::{GrantSpec, P, Role, Stmt, Target, World};
use pgstrata_rbac::{Effect, Error, Principal};
use proptest::prelude::*;
use proptest::test_runner::{Config, TestCaseError, TestRunner};
use sqlx::{PgPool, Row};
use uuid::Uuid;

const RESOURCES: [&str; 2] = ["invoice", "project"];
const ACTIONS: [&str; 3] = ["read", "create", "delete"];
const PATTERNS: [&str; 12] = [
    "invoice:read",
    "invoice:create",
    "invoice:delete",
    "project:read",
    "project:create",
    "project:delete",
    "invoice:*",
    "project:*",
    "*:read",
    "*:create",
    "*:delete",
    "*",
];
const SYSTEM: [&str; 4] = ["viewer", "member", "admin", "owner"];
/// Principals: three users, an API key and a group.
const PRINCIPALS: [P; 5] = [("user", 0), ("user", 1), ("user", 2), ("api_key", 0), ("group", 0)];
const SCOPES: [Option<(&str, &str)>; 3] = [None, Some(("invoice", "1")), Some(("invoice", "2"))];

fn catalog() -> Vec<String> {
    RESOURCES
        .iter()
        .flat_map(|r| ACTIONS.iter().map(move |a| format!("{r}:{a}")))
        .collect()
}

fn scope(i: usize) -> Option<(String, String)> {
    SCOPES[i].map(|(t, id)| (t.to_string(), id.to_string()))
}

fn effect(deny: bool) -> Effect {
    if deny { Effect::Deny } else { Effect::Allow }
}

fn world() -> impl Strategy<Value = World> {
    let roles = prop::collection::vec(
        (
            prop::collection::vec((0..PATTERNS.len(), prop::bool::weighted(0.25)), 0..3),
            any::<u8>(),
            0..6usize,
        ),
        0..4,
    );
    let grants = prop::collection::vec(
        (
            0..PRINCIPALS.len(),
            0..3usize,
            0..8usize,
            0..PATTERNS.len(),
            prop::bool::weighted(0.3),
            0..3usize,
            prop::bool::weighted(0.15),
        ),
        0..8,
    );
    let groups = prop::collection::vec(0..4usize, 0..3);
    let memberships = prop::collection::vec(0..10usize, 3);
    (roles, grants, groups, memberships).prop_map(|(roles, grants, groups, memberships)| {
        let mut w = World::default();
        let n = roles.len();
        for (i, (perms, parent_bits, system)) in roles.into_iter().enumerate() {
            // Parents only among earlier custom roles (a DAG), plus maybe one system role.
            let mut parents: Vec<String> = (0..i)
                .filter(|j| parent_bits & (1 << j) != 0)
                .map(|j| format!("c{j}"))
                .collect();
            if system < SYSTEM.len() {
                parents.push(SYSTEM[system].to_string());
            }
            let mut permissions: Vec<(String, Effect)> = perms
                .into_iter()
                .map(|(p, deny)| (PATTERNS[p].to_string(), effect(deny)))
                .collect();
            permissions.sort();
            permissions.dedup();
            w.custom_roles.insert(format!("c{i}"), Role { permissions, parents });
        }
        let role_keys: Vec<String> = SYSTEM
            .iter()
            .map(|s| s.to_string())
            .chain((0..n).map(|i| format!("c{i}")))
            .collect();
        for (p, kind, role, pattern, deny, sc, expired) in grants {
            let target = if kind == 0 && !role_keys.is_empty() {
                Target::Role(role_keys[role % role_keys.len()].clone())
            } else {
                Target::Permission(PATTERNS[pattern].to_string(), effect(deny))
            };
            w.grants.push(GrantSpec {
                principal: PRINCIPALS[p],
                target,
                resource: scope(sc),
                expired,
                until: None,
            });
        }
        let mut members: Vec<usize> = groups;
        members.sort();
        members.dedup();
        w.group_members = members.into_iter().map(|m| (0, PRINCIPALS[m])).collect();
        for (u, r) in memberships.into_iter().enumerate() {
            if r < role_keys.len() {
                w.memberships.push((u, role_keys[r].clone()));
            }
        }
        w
    })
}

/// A row of principals_with: permission, resource type and id, principal type and id.
type Holder = (String, Option<String>, Option<String>, String, Uuid);

/// Ids of one case's principals.
struct Ids {
    tenant: Uuid,
    users: [Uuid; 3],
    api_key: Uuid,
    group: Uuid,
}

impl Ids {
    fn of(&self, p: P) -> (String, Uuid) {
        let id = match p.0 {
            "user" => self.users[p.1],
            "api_key" => self.api_key,
            _ => self.group,
        };
        (p.0.to_string(), id)
    }
}

async fn load(admin: &PgPool, w: &World) -> Ids {
    let ids = Ids {
        tenant: Uuid::now_v7(),
        users: [Uuid::now_v7(), Uuid::now_v7(), Uuid::now_v7()],
        api_key: Uuid::now_v7(),
        group: Uuid::now_v7(),
    };
    let mut tx = admin.begin().await.unwrap();
    sqlx::query("INSERT INTO tenancy.tenants (id, slug, name) VALUES ($1, 't-' || replace($1::text, '-', ''), 'T')")
        .bind(ids.tenant)
        .execute(&mut *tx)
        .await
        .unwrap();
    for u in ids.users {
        sqlx::query("INSERT INTO tenancy.users (id, email) VALUES ($1, $1::text || '@example.com')")
            .bind(u)
            .execute(&mut *tx)
            .await
            .unwrap();
    }
    for (key, role) in &w.custom_roles {
        sqlx::query("INSERT INTO rbac.roles (tenant_id, key) VALUES ($1, $2)")
            .bind(ids.tenant)
            .bind(key)
            .execute(&mut *tx)
            .await
            .unwrap();
        for (pattern, effect) in &role.permissions {
            sqlx::query(
                "INSERT INTO rbac.role_permissions (tenant_id, role_key, permission, effect) VALUES ($1, $2, $3, $4)",
            )
            .bind(ids.tenant)
            .bind(key)
            .bind(pattern)
            .bind(effect.as_str())
            .execute(&mut *tx)
            .await
            .unwrap();
        }
    }
    for (key, role) in &w.custom_roles {
        for parent in &role.parents {
            sqlx::query("INSERT INTO rbac.role_parents (tenant_id, role_key, parent_key) VALUES ($1, $2, $3)")
                .bind(ids.tenant)
                .bind(key)
                .bind(parent)
                .execute(&mut *tx)
                .await
                .unwrap();
        }
    }
    for g in &w.grants {
        let (ptype, pid) = ids.of(g.principal);
        let (role, permission, effect) = match &g.target {
            Target::Role(k) => (Some(k.clone()), None, Effect::Allow),
            Target::Permission(p, e) => (None, Some(p.clone()), *e),
        };
        sqlx::query(
            "INSERT INTO rbac.grants (tenant_id, principal_type, principal_id, role_key, permission, effect,
                                      resource_type, resource_id, expires_at)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, CASE WHEN $9 THEN now() - interval '1 hour' END)
             ON CONFLICT DO NOTHING",
        )
        .bind(ids.tenant)
        .bind(ptype)
        .bind(pid)
        .bind(role)
        .bind(permission)
        .bind(effect.as_str())
        .bind(g.resource.as_ref().map(|r| r.0.clone()))
        .bind(g.resource.as_ref().map(|r| r.1.clone()))
        .bind(g.expired)
        .execute(&mut *tx)
        .await
        .unwrap();
    }
    for (_, member) in &w.group_members {
        let (ptype, pid) = ids.of(*member);
        sqlx::query("INSERT INTO rbac.group_members (tenant_id, group_id, principal_type, principal_id) VALUES ($1, $2, $3, $4)")
            .bind(ids.tenant)
            .bind(ids.group)
            .bind(ptype)
            .bind(pid)
            .execute(&mut *tx)
            .await
            .unwrap();
    }
    for (u, role) in &w.memberships {
        sqlx::query("INSERT INTO tenancy.memberships (tenant_id, user_id, role) VALUES ($1, $2, $3)")
            .bind(ids.tenant)
            .bind(ids.users[*u])
            .bind(role)
            .execute(&mut *tx)
            .await
            .unwrap();
    }
    tx.commit().await.unwrap();
    ids
}

async fn compare(app: &PgPool, admin: &PgPool, w: &World) -> Result<(), TestCaseError> {
    let ids = load(admin, w).await;
    let mut tx = app.begin().await.unwrap();
    sqlx::query("SELECT set_config('app.tenant_id', $1, true)")
        .bind(ids.tenant.to_string())
        .execute(&mut *tx)
        .await
        .unwrap();
    let catalog = catalog();

    for &p in &PRINCIPALS {
        let (ptype, pid) = ids.of(p);
        for sc in 0..SCOPES.len() {
            let resource = scope(sc);
            let (rt, rid) = (
                resource.as_ref().map(|r| r.0.clone()),
                resource.as_ref().map(|r| r.1.clone()),
            );
            // Every catalog permission in one round trip: check and the explain's verdict.
            let rows = sqlx::query(
                "SELECT c.key, rbac.check($1, $2, c.key, $3, $4) AS allowed, e.explained, e.deciding
                   FROM rbac.permissions c
                  CROSS JOIN LATERAL (
                        SELECT bool_and(x.allowed) AS explained,
                               coalesce(array_agg(coalesce(array_to_string(x.role_path, '>'), '') || '|' || x.pattern
                                                  || '|' || x.effect) FILTER (WHERE x.pattern IS NOT NULL), '{}') AS deciding
                          FROM rbac.explain($1, $2, c.key, $3, $4) x) e
                  WHERE c.key = ANY($5) ORDER BY c.key",
            )
            .bind(&ptype)
            .bind(pid)
            .bind(&rt)
            .bind(&rid)
            .bind(&catalog)
            .fetch_all(&mut *tx)
            .await
            .unwrap();
            prop_assert_eq!(rows.len(), catalog.len());
            for row in rows {
                let key: String = row.get("key");
                let (allowed, stmts) = w.explain(p, &key, resource.as_ref());
                let sql_allowed: bool = row.get("allowed");
                prop_assert_eq!(sql_allowed, allowed, "check {:?} {} {:?}\n{:#?}", p, key, resource, w);
                prop_assert_eq!(
                    row.get::<bool, _>("explained"),
                    allowed,
                    "explain verdict {:?} {}",
                    p,
                    key
                );
                let mut sql_stmts: Vec<String> = row.get("deciding");
                sql_stmts.sort();
                let mut model_stmts: Vec<String> = stmts.iter().map(render).collect();
                model_stmts.sort();
                prop_assert_eq!(
                    sql_stmts,
                    model_stmts,
                    "explain statements {:?} {} {:?}\n{:#?}",
                    p,
                    key,
                    resource,
                    w
                );
            }
            let effective: Vec<String> =
                sqlx::query_scalar("SELECT e FROM rbac.effective_permissions($1, $2, $3, $4) e WHERE e = ANY($5)")
                    .bind(&ptype)
                    .bind(pid)
                    .bind(&rt)
                    .bind(&rid)
                    .bind(&catalog)
                    .fetch_all(&mut *tx)
                    .await
                    .unwrap();
            let mut expected = w.effective(p, resource.as_ref(), &catalog);
            expected.sort();
            prop_assert_eq!(effective, expected, "list {:?} {:?}", p, resource);
        }
    }
    // principals_with for every permission and scope in one round trip.
    let holders: Vec<Holder> = sqlx::query_as(
        "SELECT c.key, s.rt, s.rid, w.principal_type, w.principal_id
           FROM unnest($1::text[]) c(key)
          CROSS JOIN (VALUES (NULL::text, NULL::text), ('invoice', '1'), ('invoice', '2')) s(rt, rid)
          CROSS JOIN LATERAL rbac.principals_with(c.key, s.rt, s.rid) w",
    )
    .bind(&catalog)
    .fetch_all(&mut *tx)
    .await
    .unwrap();
    for sc in 0..SCOPES.len() {
        let resource = scope(sc);
        for key in &catalog {
            let mut got: Vec<(String, Uuid)> = holders
                .iter()
                .filter(|h| {
                    &h.0 == key
                        && h.1 == resource.as_ref().map(|r| r.0.clone())
                        && h.2 == resource.as_ref().map(|r| r.1.clone())
                })
                .map(|h| (h.3.clone(), h.4))
                .collect();
            got.sort();
            let mut expected: Vec<(String, Uuid)> = w
                .principals_with(key, resource.as_ref())
                .into_iter()
                .map(|p| ids.of(p))
                .collect();
            expected.sort();
            prop_assert_eq!(got, expected, "principals_with {} {:?}\n{:#?}", key, resource, w);
        }
    }
    tx.rollback().await.unwrap();
    Ok(())
}

fn render(s: &Stmt) -> String {
    format!(
        "{}|{}|{}",
        s.role_path.as_ref().map(|p| p.join(">")).unwrap_or_default(),
        s.pattern,
        s.effect.as_str()
    )
}

#[test]
fn sql_check_explain_and_lists_agree_with_the_model() {
    let cases: u32 = std::env::var("PGSTRATA_PROPTEST_CASES")
        .ok()
        .and_then(|c| c.parse().ok())
        .unwrap_or(1000);
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let db = rt.block_on(common::migrated_db());
    let app = rt.block_on(db.app_pool(1)).unwrap();
    rt.block_on(async {
        let values: Vec<String> = catalog().iter().map(|c| format!("('{c}')")).collect();
        sqlx::raw_sql(sqlx::AssertSqlSafe(format!(
            "INSERT INTO rbac.permissions (key) VALUES {}",
            values.join(", ")
        )))
        .execute(&db.admin)
        .await
        .unwrap();
    });
    let mut runner = TestRunner::new(Config {
        cases,
        failure_persistence: None,
        ..Config::default()
    });
    let result = runner.run(&world(), |w| rt.block_on(compare(&app, &db.admin, &w)));
    rt.block_on(async {
        app.close().await;
        db.close().await.unwrap();
    });
    if let Err(e) = result {
        panic!("{e}");
    }
}

// ---------------------------------------------------------------------------------------------
// Administrative sequences: random operations by random actors, as the application role. After
// every accepted operation no principal holds (per the model, now, in 90 minutes and for good) a
// permission the acting user lacked at that time, and the SQL check agrees with the model; a
// refused operation changes nothing.
// ---------------------------------------------------------------------------------------------

const CUSTOM: [&str; 3] = ["c0", "c1", "c2"];
/// Memberships of the three users: an owner, an admin and a member.
const MEMBERSHIPS: [&str; 3] = ["owner", "admin", "member"];
/// Expiries a grant may have, in minutes (`None`: for good).
const UNTIL: [Option<u32>; 3] = [None, Some(60), Some(120)];
/// Times the invariant is evaluated at, in minutes from now.
const TIMES: [u32; 3] = [0, 90, 100_000];

#[derive(Debug, Clone)]
enum Op {
    CreateRole(usize),
    AddPermission(usize, usize, bool),
    RemovePermission(usize, usize, bool),
    AddParent(usize, usize),
    RemoveParent(usize, usize),
    JoinGroup(usize),
    LeaveGroup(usize),
    Grant(usize, Target, Option<u32>),
    Revoke(usize),
    SetMembership(usize, usize),
}

fn op() -> impl Strategy<Value = Op> {
    let role_keys = SYSTEM.len() + CUSTOM.len();
    let target = prop_oneof![
        (0..role_keys).prop_map(move |r| Target::Role(
            SYSTEM
                .iter()
                .chain(CUSTOM.iter())
                .nth(r)
                .unwrap_or(&"viewer")
                .to_string()
        )),
        (0..PATTERNS.len(), prop::bool::weighted(0.3))
            .prop_map(|(p, deny)| Target::Permission(PATTERNS[p].to_string(), effect(deny))),
    ];
    prop_oneof![
        (0..CUSTOM.len()).prop_map(Op::CreateRole),
        (0..CUSTOM.len(), 0..PATTERNS.len(), prop::bool::weighted(0.3))
            .prop_map(|(r, p, d)| Op::AddPermission(r, p, d)),
        (0..CUSTOM.len(), 0..PATTERNS.len(), prop::bool::weighted(0.5))
            .prop_map(|(r, p, d)| Op::RemovePermission(r, p, d)),
        (0..CUSTOM.len(), 0..role_keys).prop_map(|(r, p)| Op::AddParent(r, p)),
        (0..CUSTOM.len(), 0..role_keys).prop_map(|(r, p)| Op::RemoveParent(r, p)),
        (0..4usize).prop_map(Op::JoinGroup),
        (0..4usize).prop_map(Op::LeaveGroup),
        (0..PRINCIPALS.len(), target, 0..UNTIL.len()).prop_map(|(p, t, u)| Op::Grant(p, t, UNTIL[u])),
        (0..16usize).prop_map(Op::Revoke),
        (0..3usize, 0..role_keys).prop_map(|(u, r)| Op::SetMembership(u, r)),
    ]
}

fn role_key(i: usize) -> String {
    SYSTEM
        .iter()
        .chain(CUSTOM.iter())
        .nth(i)
        .unwrap_or(&"viewer")
        .to_string()
}

/// A digest of the tenant's authorization data, read as the superuser.
async fn digest(admin: &PgPool, tenant: Uuid) -> String {
    sqlx::query_scalar(
        "SELECT md5(concat_ws('|',
            (SELECT string_agg(x::text, ',' ORDER BY x::text) FROM rbac.roles x WHERE x.tenant_id = $1),
            (SELECT string_agg(x::text, ',' ORDER BY x::text) FROM rbac.role_permissions x WHERE x.tenant_id = $1),
            (SELECT string_agg(x::text, ',' ORDER BY x::text) FROM rbac.role_parents x WHERE x.tenant_id = $1),
            (SELECT string_agg(x::text, ',' ORDER BY x::text) FROM rbac.group_members x WHERE x.tenant_id = $1),
            (SELECT string_agg(x::text, ',' ORDER BY x::text) FROM rbac.grants x WHERE x.tenant_id = $1),
            (SELECT string_agg(x::text, ',' ORDER BY x::text) FROM tenancy.memberships x WHERE x.tenant_id = $1)))",
    )
    .bind(tenant)
    .fetch_one(admin)
    .await
    .unwrap()
}

/// Runs one operation as `actor`; Ok(true) when applied, Ok(false) when refused by a rule.
async fn run_op(app: &PgPool, ids: &Ids, actor: usize, op: &Op, grant_ids: &[Uuid]) -> Result<Option<Uuid>, Error> {
    use pgstrata_core::{TenantContext, TenantId, UserId};
    use pgstrata_rbac::{ApiKeyId, GrantId, GroupId, admin};
    let ctx = TenantContext::tenant(TenantId(ids.tenant)).with_actor(UserId(ids.users[actor]));
    let group = GroupId(ids.group);
    let mut tx = pgstrata_core::begin_tenant(app, &ctx).await.unwrap();
    let principal = |p: P| {
        let (kind, id) = ids.of(p);
        match kind.as_str() {
            "user" => Principal::user(UserId(id)),
            "api_key" => Principal::api_key(ApiKeyId(id)),
            _ => Principal::group(GroupId(id)),
        }
    };
    let mut new_id = None;
    let result: Result<(), Error> = async {
        match op {
            Op::CreateRole(r) => admin::create_role(&mut tx, CUSTOM[*r], "").await,
            Op::AddPermission(r, p, d) => {
                admin::add_role_permission(&mut tx, CUSTOM[*r], PATTERNS[*p], effect(*d)).await
            }
            Op::RemovePermission(r, p, d) => {
                admin::remove_role_permission(&mut tx, CUSTOM[*r], PATTERNS[*p], effect(*d)).await
            }
            Op::AddParent(r, p) => admin::add_role_parent(&mut tx, CUSTOM[*r], &role_key(*p)).await,
            Op::RemoveParent(r, p) => admin::remove_role_parent(&mut tx, CUSTOM[*r], &role_key(*p)).await,
            Op::JoinGroup(m) => admin::add_group_member(&mut tx, group, &principal(PRINCIPALS[*m])).await,
            Op::LeaveGroup(m) => admin::remove_group_member(&mut tx, group, &principal(PRINCIPALS[*m])).await,
            Op::Grant(p, target, until) => {
                let mut grant = match target {
                    Target::Role(k) => admin::NewGrant::role(principal(PRINCIPALS[*p]), k.clone()),
                    Target::Permission(pattern, Effect::Allow) => {
                        admin::NewGrant::allow(principal(PRINCIPALS[*p]), pattern.clone())
                    }
                    Target::Permission(pattern, Effect::Deny) => {
                        admin::NewGrant::deny(principal(PRINCIPALS[*p]), pattern.clone())
                    }
                };
                if let Some(minutes) = until {
                    grant = grant.until(chrono::Utc::now() + chrono::Duration::minutes(i64::from(*minutes)));
                }
                let made = admin::grant(&mut tx, &grant).await?;
                new_id = Some(made.id.0);
                Ok(())
            }
            Op::Revoke(i) => match grant_ids.get(*i % grant_ids.len().max(1)) {
                Some(id) => admin::revoke(&mut tx, GrantId(*id)).await,
                None => Ok(()),
            },
            Op::SetMembership(u, r) => sqlx::query("UPDATE tenancy.memberships SET role = $1 WHERE user_id = $2")
                .bind(role_key(*r))
                .bind(ids.users[*u])
                .execute(&mut *tx)
                .await
                .map(drop)
                .map_err(Error::from),
        }
    }
    .await;
    match result {
        Ok(()) => {
            tx.commit().await.unwrap();
            Ok(new_id)
        }
        Err(e) => {
            tx.rollback().await.unwrap();
            Err(e)
        }
    }
}

/// Applies an accepted operation to the model.
fn apply(w: &mut World, op: &Op, grant_ids: &mut Vec<Uuid>, new_id: Option<Uuid>) {
    match op {
        Op::CreateRole(r) => {
            w.custom_roles.insert(
                CUSTOM[*r].to_string(),
                Role {
                    permissions: vec![],
                    parents: vec![],
                },
            );
        }
        Op::AddPermission(r, p, d) => {
            if let Some(role) = w.custom_roles.get_mut(CUSTOM[*r]) {
                role.permissions.push((PATTERNS[*p].to_string(), effect(*d)));
            }
        }
        Op::RemovePermission(r, p, d) => {
            if let Some(role) = w.custom_roles.get_mut(CUSTOM[*r]) {
                role.permissions
                    .retain(|x| *x != (PATTERNS[*p].to_string(), effect(*d)));
            }
        }
        Op::AddParent(r, p) => {
            if let Some(role) = w.custom_roles.get_mut(CUSTOM[*r]) {
                role.parents.push(role_key(*p));
            }
        }
        Op::RemoveParent(r, p) => {
            if let Some(role) = w.custom_roles.get_mut(CUSTOM[*r]) {
                role.parents.retain(|x| *x != role_key(*p));
            }
        }
        Op::JoinGroup(m) => {
            if !w.group_members.contains(&(0, PRINCIPALS[*m])) {
                w.group_members.push((0, PRINCIPALS[*m]));
            }
        }
        Op::LeaveGroup(m) => w.group_members.retain(|x| *x != (0, PRINCIPALS[*m])),
        Op::Grant(p, target, until) => {
            if let Some(id) = new_id {
                w.grants.push(GrantSpec {
                    principal: PRINCIPALS[*p],
                    target: target.clone(),
                    resource: None,
                    expired: false,
                    until: *until,
                });
                grant_ids.push(id);
            }
        }
        Op::Revoke(i) => {
            if !grant_ids.is_empty() {
                let at = *i % grant_ids.len();
                grant_ids.remove(at);
                w.grants.remove(at);
            }
        }
        Op::SetMembership(u, r) => {
            for m in w.memberships.iter_mut() {
                if m.0 == *u {
                    m.1 = role_key(*r);
                }
            }
        }
    }
}

async fn run_sequence(app: &PgPool, admin: &PgPool, ops: &[(usize, Op)]) -> Result<(), TestCaseError> {
    let mut w = World::default();
    // c0 and c1 exist from the start (empty); c2 only if an operation creates it.
    for key in &CUSTOM[..2] {
        w.custom_roles.insert(
            key.to_string(),
            Role {
                permissions: vec![],
                parents: vec![],
            },
        );
    }
    for (u, role) in MEMBERSHIPS.iter().enumerate() {
        w.memberships.push((u, role.to_string()));
    }
    let ids = load(admin, &w).await;
    let catalog = catalog();
    let mut grant_ids: Vec<Uuid> = Vec::new();
    for (actor, op) in ops {
        let before = digest(admin, ids.tenant).await;
        match run_op(app, &ids, *actor, op, &grant_ids).await {
            Ok(new_id) => {
                let prior = w.clone();
                apply(&mut w, op, &mut grant_ids, new_id);
                let acting: P = ("user", *actor);
                for &p in &PRINCIPALS {
                    for key in &catalog {
                        for t in TIMES {
                            let gained = w.check_at(p, key, None, t) && !prior.check_at(p, key, None, t);
                            prop_assert!(
                                !gained || prior.check_at(acting, key, None, t),
                                "{:?} gained {} (at +{} min) through {:?} by user {} who lacked it\n{:#?}",
                                p,
                                key,
                                t,
                                op,
                                actor,
                                prior
                            );
                        }
                    }
                }
                let mut tx = app.begin().await.unwrap();
                sqlx::query("SELECT set_config('app.tenant_id', $1, true)")
                    .bind(ids.tenant.to_string())
                    .execute(&mut *tx)
                    .await
                    .unwrap();
                for &p in &PRINCIPALS {
                    let (ptype, pid) = ids.of(p);
                    let answers: Vec<(String, bool)> =
                        sqlx::query_as("SELECT c, rbac.check($1, $2, c) FROM unnest($3::text[]) c ORDER BY c")
                            .bind(&ptype)
                            .bind(pid)
                            .bind(&catalog)
                            .fetch_all(&mut *tx)
                            .await
                            .unwrap();
                    for (key, allowed) in answers {
                        prop_assert_eq!(
                            allowed,
                            w.check(p, &key, None),
                            "{:?} {} after {:?}\n{:#?}",
                            p,
                            key,
                            op,
                            w
                        );
                    }
                }
                tx.rollback().await.unwrap();
            }
            Err(e) => {
                prop_assert!(
                    matches!(
                        e,
                        Error::EscalationRefused { .. }
                            | Error::OutlivesActor { .. }
                            | Error::DenyRemovalRefused { .. }
                            | Error::Cycle { .. }
                            | Error::DuplicateGrant
                            | Error::RoleExists { .. }
                            | Error::UnknownRole { .. }
                            | Error::NotFound { .. }
                    ) || matches!(
                        &e,
                        Error::Db(
                            pgstrata_core::DbError::Conflict { .. } | pgstrata_core::DbError::MissingReference { .. }
                        )
                    ),
                    "unexpected refusal of {:?}: {}",
                    op,
                    e
                );
                prop_assert_eq!(digest(admin, ids.tenant).await, before, "refused {:?} changed data", op);
            }
        }
    }
    Ok(())
}

#[test]
fn administrative_sequences_never_confer_what_the_actor_lacks() {
    let cases: u32 = std::env::var("PGSTRATA_PROPTEST_CASES")
        .ok()
        .and_then(|c| c.parse::<u32>().ok())
        .map(|c| (c / 10).max(8))
        .unwrap_or(100);
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    for owner in pgstrata_core::testing::Owner::BOTH {
        let db = rt
            .block_on(pgstrata_core::testing::TestDb::migrated_by(&common::migrator(), owner))
            .unwrap();
        let app = rt.block_on(db.app_pool(1)).unwrap();
        rt.block_on(async {
            let values: Vec<String> = catalog().iter().map(|c| format!("('{c}')")).collect();
            sqlx::raw_sql(sqlx::AssertSqlSafe(format!(
                "INSERT INTO rbac.permissions (key) VALUES {}",
                values.join(", ")
            )))
            .execute(&db.admin)
            .await
            .unwrap();
        });
        let mut runner = TestRunner::new(Config {
            cases,
            failure_persistence: None,
            ..Config::default()
        });
        let ops = prop::collection::vec((0..3usize, op()), 1..14);
        let result = runner.run(&ops, |ops| rt.block_on(run_sequence(&app, &db.admin, &ops)));
        rt.block_on(async {
            app.close().await;
            db.close().await.unwrap();
        });
        if let Err(e) = result {
            panic!("{owner:?}: {e}");
        }
    }
}
