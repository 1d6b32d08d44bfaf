//! A reference model of the resolution rules in plain Rust, written from the rules as stated
//! (not from the SQL): collect the statements that apply, any matching deny wins, else any
//! matching allow, else denied.
#![allow(dead_code)]

use pgstrata_rbac::{Effect, covers};
use std::collections::{BTreeMap, BTreeSet};

/// The system roles the migration installs, as the model sees them.
pub fn system_roles() -> BTreeMap<String, Role> {
    let role = |perms: &[&str], parents: &[&str]| Role {
        permissions: perms.iter().map(|p| (p.to_string(), Effect::Allow)).collect(),
        parents: parents.iter().map(|p| p.to_string()).collect(),
    };
    BTreeMap::from([
        ("viewer".to_string(), role(&["*:read"], &[])),
        ("member".to_string(), role(&["*:create", "*:update"], &["viewer"])),
        (
            "admin".to_string(),
            role(&["*:delete", "member:*", "role:*"], &["member"]),
        ),
        ("owner".to_string(), role(&["*"], &[])),
    ])
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Role {
    pub permissions: Vec<(String, Effect)>,
    pub parents: Vec<String>,
}

/// A principal as (type, index into the world's principals).
pub type P = (&'static str, usize);

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    Role(String),
    Permission(String, Effect),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GrantSpec {
    pub principal: P,
    pub target: Target,
    pub resource: Option<(String, String)>,
    pub expired: bool,
    /// Minutes from now until it expires; `None`: until revoked.
    pub until: Option<u32>,
}

impl GrantSpec {
    /// The columns of the grants' uniqueness constraint.
    pub fn key(&self) -> (P, Target, Option<(String, String)>) {
        (self.principal, self.target.clone(), self.resource.clone())
    }
}

#[derive(Debug, Clone, Default)]
pub struct World {
    pub custom_roles: BTreeMap<String, Role>,
    pub grants: Vec<GrantSpec>,
    /// (group index, member)
    pub group_members: Vec<(usize, P)>,
    /// (user index, role key)
    pub memberships: Vec<(usize, String)>,
}

/// One statement and where it came from.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Stmt {
    pub role_path: Option<Vec<String>>,
    pub pattern: String,
    pub effect: Effect,
}

impl World {
    fn role(&self, key: &str) -> Option<Role> {
        system_roles()
            .get(key)
            .cloned()
            .or_else(|| self.custom_roles.get(key).cloned())
    }

    /// The roles reachable from `root` (itself included), each visited once, breadth-first,
    /// each with one shortest path: among the paths of the level before, the smallest one
    /// (compared as `a>b>c`, bytewise). Every role's statements carry that path.
    fn expand(&self, root: &str, out: &mut Vec<Stmt>) {
        let mut seen: BTreeSet<String> = BTreeSet::from([root.to_string()]);
        let mut frontier: Vec<(String, String)> = vec![(root.to_string(), root.to_string())];
        while !frontier.is_empty() {
            let mut next: BTreeMap<String, String> = BTreeMap::new();
            for (key, path) in &frontier {
                let Some(role) = self.role(key) else { continue };
                for (pattern, effect) in &role.permissions {
                    out.push(Stmt {
                        role_path: Some(path.split('>').map(str::to_string).collect()),
                        pattern: pattern.clone(),
                        effect: *effect,
                    });
                }
                for parent in &role.parents {
                    if seen.contains(parent) {
                        continue;
                    }
                    next.entry(parent.clone())
                        .and_modify(|p| {
                            if path < p {
                                *p = path.clone();
                            }
                        })
                        .or_insert_with(|| path.clone());
                }
            }
            seen.extend(next.keys().cloned());
            frontier = next.into_iter().map(|(k, p)| (k.clone(), format!("{p}>{k}"))).collect();
        }
    }

    /// The grants that count: duplicates (same uniqueness key) are stored once, the first wins.
    pub fn stored_grants(&self) -> Vec<GrantSpec> {
        let mut seen = BTreeSet::new();
        self.grants
            .iter()
            .filter(|g| seen.insert(format!("{:?}", g.key())))
            .cloned()
            .collect()
    }

    /// The statements that apply to `p` on `resource` (None: tenant-wide).
    pub fn statements(&self, p: P, resource: Option<&(String, String)>) -> Vec<Stmt> {
        self.statements_at(p, resource, 0)
    }

    /// The statements that apply `minutes` from now.
    pub fn statements_at(&self, p: P, resource: Option<&(String, String)>, minutes: u32) -> Vec<Stmt> {
        let mut holders = vec![p];
        for (group, member) in &self.group_members {
            if *member == p {
                holders.push(("group", *group));
            }
        }
        let mut out = Vec::new();
        for g in self.stored_grants() {
            let in_scope = match &g.resource {
                None => true,
                Some(r) => Some(r) == resource,
            };
            let lapsed = g.expired || g.until.is_some_and(|u| u <= minutes);
            if !holders.contains(&g.principal) || lapsed || !in_scope {
                continue;
            }
            match &g.target {
                Target::Permission(pattern, effect) => out.push(Stmt {
                    role_path: None,
                    pattern: pattern.clone(),
                    effect: *effect,
                }),
                Target::Role(key) => self.expand(key, &mut out),
            }
        }
        if p.0 == "user" {
            for (user, role) in &self.memberships {
                if *user == p.1 {
                    self.expand(role, &mut out);
                }
            }
        }
        out
    }

    pub fn check(&self, p: P, permission: &str, resource: Option<&(String, String)>) -> bool {
        self.check_at(p, permission, resource, 0)
    }

    /// The check `minutes` from now (grants that expire before then no longer count).
    pub fn check_at(&self, p: P, permission: &str, resource: Option<&(String, String)>, minutes: u32) -> bool {
        let matching: Vec<Stmt> = self
            .statements_at(p, resource, minutes)
            .into_iter()
            .filter(|s| covers(&s.pattern, permission))
            .collect();
        !matching.iter().any(|s| s.effect == Effect::Deny) && matching.iter().any(|s| s.effect == Effect::Allow)
    }

    /// The statements that decide: the matching denies if any, else the matching allows.
    pub fn explain(&self, p: P, permission: &str, resource: Option<&(String, String)>) -> (bool, Vec<Stmt>) {
        let allowed = self.check(p, permission, resource);
        let deciding = if allowed { Effect::Allow } else { Effect::Deny };
        let mut stmts: Vec<Stmt> = self
            .statements(p, resource)
            .into_iter()
            .filter(|s| covers(&s.pattern, permission) && s.effect == deciding)
            .collect();
        stmts.sort();
        (allowed, stmts)
    }

    pub fn effective(&self, p: P, resource: Option<&(String, String)>, catalog: &[String]) -> Vec<String> {
        catalog.iter().filter(|c| self.check(p, c, resource)).cloned().collect()
    }

    /// Principals known to the tenant (grant holders other than groups, group members,
    /// members) that hold the permission.
    pub fn principals_with(&self, permission: &str, resource: Option<&(String, String)>) -> BTreeSet<P> {
        let mut candidates: BTreeSet<P> = BTreeSet::new();
        for g in self.stored_grants() {
            if g.principal.0 != "group" {
                candidates.insert(g.principal);
            }
        }
        for (_, m) in &self.group_members {
            candidates.insert(*m);
        }
        for (u, _) in &self.memberships {
            candidates.insert(("user", *u));
        }
        candidates
            .into_iter()
            .filter(|p| self.check(*p, permission, resource))
            .collect()
    }
}
