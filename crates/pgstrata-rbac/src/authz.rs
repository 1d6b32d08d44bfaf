//! Asking questions: check, explain, effective permissions, principals with a permission.
//!
//! Each takes the tenant transaction (`&mut TenantTx`) and answers for its tenant: the SQL
//! functions it calls (`rbac.check`, `rbac.explain`, `rbac.effective_permissions`,
//! `rbac.principals_with`) read the tenant from the transaction's context, so the answer can
//! never be about another tenant. Each one's SQL is the pure builder `<operation>_stmt`.

use crate::error::{Error, Result};
use crate::ids::{Effect, GrantId, PrincipalType};
use crate::{Principal, Resource, is_permission};
use pgstrata_core::TenantTx;
use pgstrata_core::sql::{self, Built, Rows};
use sea_query::{Asterisk, Expr, Func, FunctionCall, Query};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

pgstrata_core::sql_functions!(
    /// rbac's SQL functions, for sea-query calls.
    Function, "rbac" {
        Check = "check",
        Explain = "explain",
        EffectivePermissions = "effective_permissions",
        PrincipalsWith = "principals_with",
    }
);

fn scope(resource: Option<&Resource>) -> Result<[Expr; 2]> {
    let (kind, id) = match resource {
        None => (None, None),
        Some(r) => {
            r.validate()?;
            (Some(r.kind.clone()), Some(r.id.clone()))
        }
    };
    Ok([kind.into(), id.into()])
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

/// `f(principal_type, principal_id, [permission,] resource_type, resource_id)`.
fn call(
    function: Function,
    principal: &Principal,
    permission_key: Option<&str>,
    resource: Option<&Resource>,
) -> Result<FunctionCall> {
    let mut args: Vec<Expr> = vec![principal.kind.into(), principal.id.into()];
    if let Some(p) = permission_key {
        permission(p)?;
        args.push(p.into());
    }
    args.extend(scope(resource)?);
    Ok(Func::cust(function).args(args))
}

/// The SQL of [`check`].
///
/// ```
/// use pgstrata_rbac::{Principal, Resource};
/// let user = Principal::user("0190b6a0-0000-7000-8000-000000000002".parse().unwrap());
/// let (sql, _) = pgstrata_rbac::authz::check_stmt(&user, "invoice:delete", Some(&Resource::new("invoice", "42"))).unwrap();
/// assert_eq!(sql, "SELECT rbac.check($1, $2, $3, $4, $5)");
/// assert!(pgstrata_rbac::authz::check_stmt(&user, "invoice:*", None).is_err(), "a check names one permission");
/// ```
pub fn check_stmt(principal: &Principal, permission_key: &str, resource: Option<&Resource>) -> Result<Built> {
    let f = call(Function::Check, principal, Some(permission_key), resource)?;
    Ok(sql::build(Query::select().expr(f)))
}

/// May `principal` do `permission_key` (on `resource`, or tenant-wide) in the transaction's
/// tenant?
pub async fn check(
    tx: &mut TenantTx<'_>,
    principal: &Principal,
    permission_key: &str,
    resource: Option<&Resource>,
) -> Result<bool> {
    let built = check_stmt(principal, permission_key, resource)?;
    let (allowed,): (bool,) = sql::query_as(built).fetch_one(&mut **tx).await?;
    tracing::debug!(
        tenant_id = %tx.tenant_id(),
        principal = %format!("{}:{}", principal.kind.as_str(), principal.id),
        permission = permission_key,
        resource = resource.map(|r| format!("{}:{}", r.kind, r.id)),
        allowed,
        "rbac check"
    );
    Ok(allowed)
}

/// One statement that took part in a decision.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Statement {
    /// The grant it came from; `None` when it came from the tenant membership's role.
    pub grant_id: Option<GrantId>,
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

/// A row of `rbac.explain`: the decision, and one deciding statement (none when nothing
/// matched).
#[derive(Debug, sqlx::FromRow)]
struct ExplainRow {
    allowed: bool,
    grant_id: Option<GrantId>,
    role_path: Option<Vec<String>>,
    pattern: Option<String>,
    effect: Option<Effect>,
    resource_type: Option<String>,
    resource_id: Option<String>,
}

/// The SQL of [`explain`].
///
/// ```
/// use pgstrata_rbac::Principal;
/// let user = Principal::user("0190b6a0-0000-7000-8000-000000000002".parse().unwrap());
/// let (sql, _) = pgstrata_rbac::authz::explain_stmt(&user, "invoice:delete", None).unwrap();
/// assert_eq!(sql, r#"SELECT * FROM rbac.explain($1, $2, $3, $4, $5) AS "r""#);
/// ```
pub fn explain_stmt(principal: &Principal, permission_key: &str, resource: Option<&Resource>) -> Result<Built> {
    let f = call(Function::Explain, principal, Some(permission_key), resource)?;
    Ok(sql::build(Query::select().column(Asterisk).from_function(f, Rows)))
}

/// Why [`check`] answers what it answers.
pub async fn explain(
    tx: &mut TenantTx<'_>,
    principal: &Principal,
    permission_key: &str,
    resource: Option<&Resource>,
) -> Result<Explanation> {
    let built = explain_stmt(principal, permission_key, resource)?;
    let rows: Vec<ExplainRow> = sql::query_as(built).fetch_all(&mut **tx).await?;
    let allowed = rows.first().is_some_and(|r| r.allowed);
    let decided_by = rows
        .into_iter()
        .filter_map(|row| {
            let resource = match (row.resource_type, row.resource_id) {
                (Some(kind), Some(id)) => Some(Resource { kind, id }),
                _ => None,
            };
            Some(Statement {
                grant_id: row.grant_id,
                role_path: row.role_path,
                pattern: row.pattern?,
                effect: row.effect?,
                resource,
            })
        })
        .collect();
    Ok(Explanation { allowed, decided_by })
}

/// The SQL of [`effective_permissions`].
///
/// ```
/// use pgstrata_rbac::Principal;
/// let key = Principal::api_key("0190b6a0-0000-7000-8000-000000000005".parse().unwrap());
/// let (sql, _) = pgstrata_rbac::authz::effective_permissions_stmt(&key, None).unwrap();
/// assert_eq!(sql, r#"SELECT * FROM rbac.effective_permissions($1, $2, $3, $4) AS "r""#);
/// ```
pub fn effective_permissions_stmt(principal: &Principal, resource: Option<&Resource>) -> Result<Built> {
    let f = call(Function::EffectivePermissions, principal, None, resource)?;
    Ok(sql::build(Query::select().column(Asterisk).from_function(f, Rows)))
}

/// The catalog permissions `principal` holds (on `resource`, or tenant-wide), sorted.
pub async fn effective_permissions(
    tx: &mut TenantTx<'_>,
    principal: &Principal,
    resource: Option<&Resource>,
) -> Result<Vec<String>> {
    let built = effective_permissions_stmt(principal, resource)?;
    let rows: Vec<(String,)> = sql::query_as(built).fetch_all(&mut **tx).await?;
    Ok(rows.into_iter().map(|(p,)| p).collect())
}

/// The SQL of [`principals_with`].
///
/// ```
/// use pgstrata_rbac::Resource;
/// let (sql, _) = pgstrata_rbac::authz::principals_with_stmt("invoice:read", Some(&Resource::new("invoice", "42"))).unwrap();
/// assert_eq!(sql, r#"SELECT * FROM rbac.principals_with($1, $2, $3) AS "r""#);
/// ```
pub fn principals_with_stmt(permission_key: &str, resource: Option<&Resource>) -> Result<Built> {
    permission(permission_key)?;
    let mut args: Vec<Expr> = vec![permission_key.into()];
    args.extend(scope(resource)?);
    let f = Func::cust(Function::PrincipalsWith).args(args);
    Ok(sql::build(Query::select().column(Asterisk).from_function(f, Rows)))
}

/// The principals of the transaction's tenant that hold `permission_key` (on `resource`, or
/// tenant-wide), sorted by type and id.
pub async fn principals_with(
    tx: &mut TenantTx<'_>,
    permission_key: &str,
    resource: Option<&Resource>,
) -> Result<Vec<Principal>> {
    let built = principals_with_stmt(permission_key, resource)?;
    let rows: Vec<(PrincipalType, Uuid)> = sql::query_as(built).fetch_all(&mut **tx).await?;
    Ok(rows.into_iter().map(|(kind, id)| Principal { kind, id }).collect())
}
