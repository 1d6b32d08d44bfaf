//! Asking questions: check, explain, effective permissions, principals with a permission.
//! Each runs in the current tenant context of the connection's transaction.

use crate::error::{Error, Result};
use crate::{Effect, Principal, PrincipalType, Resource, is_permission};
use serde::{Deserialize, Serialize};
use sqlx::{PgConnection, Row};
use uuid::Uuid;

fn scope(resource: Option<&Resource>) -> Result<(Option<&str>, Option<&str>)> {
    match resource {
        None => Ok((None, None)),
        Some(r) => {
            r.validate()?;
            Ok((Some(r.kind.as_str()), Some(r.id.as_str())))
        }
    }
}

fn permission(p: &str) -> Result<()> {
    if is_permission(p) {
        Ok(())
    } else {
        Err(Error::InvalidPermission {
            permission: p.chars().take(80).collect(),
        })
    }
}

/// May `principal` do `permission` (on `resource`, or tenant-wide) in the current tenant?
pub async fn check(
    conn: &mut PgConnection,
    principal: &Principal,
    permission_key: &str,
    resource: Option<&Resource>,
) -> Result<bool> {
    permission(permission_key)?;
    let (rt, rid) = scope(resource)?;
    Ok(sqlx::query_scalar("SELECT rbac.check($1, $2, $3, $4, $5)")
        .bind(principal.kind.as_str())
        .bind(principal.id)
        .bind(permission_key)
        .bind(rt)
        .bind(rid)
        .fetch_one(conn)
        .await?)
}

/// One statement that took part in a decision.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Statement {
    /// The grant it came from; `None` when it came from the tenant membership's role.
    pub grant_id: Option<Uuid>,
    /// The roles it came through, from the granted role to the one holding the pattern;
    /// `None` for a permission granted directly.
    pub role_path: Option<Vec<String>>,
    pub pattern: String,
    pub effect: Effect,
    /// The resource the grant is scoped to, `None` when tenant-wide.
    pub resource: Option<Resource>,
}

/// A decision and what made it: the matching denies when denied by one, else the allows.
/// `decided_by` is empty when nothing matched (denied by default).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Explanation {
    pub allowed: bool,
    pub decided_by: Vec<Statement>,
}

/// Why `check` answers what it answers.
pub async fn explain(
    conn: &mut PgConnection,
    principal: &Principal,
    permission_key: &str,
    resource: Option<&Resource>,
) -> Result<Explanation> {
    permission(permission_key)?;
    let (rt, rid) = scope(resource)?;
    let rows = sqlx::query(
        "SELECT allowed, grant_id, role_path, pattern, effect, resource_type, resource_id
           FROM rbac.explain($1, $2, $3, $4, $5)",
    )
    .bind(principal.kind.as_str())
    .bind(principal.id)
    .bind(permission_key)
    .bind(rt)
    .bind(rid)
    .fetch_all(conn)
    .await?;
    let allowed = rows
        .first()
        .map(|r| r.try_get::<bool, _>("allowed"))
        .transpose()?
        .unwrap_or(false);
    let mut decided_by = Vec::new();
    for row in &rows {
        let Some(pattern) = row.try_get::<Option<String>, _>("pattern")? else {
            continue;
        };
        let effect = if row.try_get::<String, _>("effect")? == "deny" {
            Effect::Deny
        } else {
            Effect::Allow
        };
        let resource = match (
            row.try_get::<Option<String>, _>("resource_type")?,
            row.try_get::<Option<String>, _>("resource_id")?,
        ) {
            (Some(kind), Some(id)) => Some(Resource { kind, id }),
            _ => None,
        };
        decided_by.push(Statement {
            grant_id: row.try_get("grant_id")?,
            role_path: row.try_get("role_path")?,
            pattern,
            effect,
            resource,
        });
    }
    Ok(Explanation { allowed, decided_by })
}

/// The catalog permissions `principal` holds (on `resource`, or tenant-wide), sorted.
pub async fn effective_permissions(
    conn: &mut PgConnection,
    principal: &Principal,
    resource: Option<&Resource>,
) -> Result<Vec<String>> {
    let (rt, rid) = scope(resource)?;
    Ok(sqlx::query_scalar("SELECT rbac.effective_permissions($1, $2, $3, $4)")
        .bind(principal.kind.as_str())
        .bind(principal.id)
        .bind(rt)
        .bind(rid)
        .fetch_all(conn)
        .await?)
}

/// The principals of the current tenant that hold `permission` (on `resource`, or
/// tenant-wide), sorted by type and id.
pub async fn principals_with(
    conn: &mut PgConnection,
    permission_key: &str,
    resource: Option<&Resource>,
) -> Result<Vec<Principal>> {
    permission(permission_key)?;
    let (rt, rid) = scope(resource)?;
    let rows: Vec<(String, Uuid)> =
        sqlx::query_as("SELECT principal_type, principal_id FROM rbac.principals_with($1, $2, $3)")
            .bind(permission_key)
            .bind(rt)
            .bind(rid)
            .fetch_all(conn)
            .await?;
    Ok(rows
        .into_iter()
        .filter_map(|(kind, id)| {
            Some(Principal {
                kind: PrincipalType::parse(&kind)?,
                id,
            })
        })
        .collect())
}
