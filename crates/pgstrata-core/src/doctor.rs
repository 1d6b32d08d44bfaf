//! `pgstrata doctor`: checks that every table of every enabled module follows the tenancy
//! rules of design.md, read from the live catalog (so a hand-edited database is caught too).
//!
//! A **tenant table** has a `tenant_id NOT NULL` column; it must have RLS enabled and forced, a policy
//! for all commands whose USING and WITH CHECK compare `tenant_id` to
//! `tenancy.current_tenant_id()`, no permissive policy for the request path (`PUBLIC` or
//! `pgstrata_app`) that skips that test (policies for other roles, such as the worker's, are
//! each module's explicit grants across tenants), a primary key and
//! unique indexes led by `tenant_id`, and foreign keys to other tenant tables that carry
//! `tenant_id`. The **tenant root** is checked the same way on `id`, against the raw context
//! (the row a new tenant inserts does not exist yet). Core knows no module: the module that owns
//! tenants describes its root and its context functions as a [`TenantRoot`] (tenancy's is
//! `pgstrata_tenancy::TENANT_ROOT`), and every check takes it.
//! A **global** table has no `tenant_id` (or an optional one, as the job queue's, which
//! workers read across tenants) and must not reference a tenant table.
//!
//! [`partition_warnings`] adds a warning (not a failure) for time-partitioned tables that are
//! about to run out of partitions.

use sqlx::PgConnection;
use std::fmt;

pub use crate::context::TenantRoot;

/// A policy as `(command, permissive, USING, WITH CHECK, roles)`.
type PolicyFacts = (String, bool, Option<String>, Option<String>, Vec<String>);

/// Catalog facts about one table.
#[derive(Debug, Clone, sqlx::FromRow)]
struct TableFacts {
    schema: String,
    table: String,
    has_tenant_id: bool,
    rls: bool,
    forced: bool,
    policies: sqlx::types::Json<Vec<PolicyFacts>>,
    /// First key column of the primary key.
    pk_first: Option<String>,
    /// Unique indexes whose first key column is not tenant_id (or that lead with an expression).
    unique_not_led: Vec<String>,
    /// Foreign keys to tenant tables that do not map tenant_id to tenant_id.
    fk_without_tenant: Vec<String>,
    /// Foreign keys from this table to tenant tables (a problem for global tables).
    fk_to_tenant_tables: Vec<String>,
}

const FACTS_SQL: &str = r#"
SELECT n.nspname AS schema, c.relname AS table,
       EXISTS (SELECT 1 FROM pg_attribute a WHERE a.attrelid = c.oid AND a.attname = 'tenant_id'
                  AND a.attnotnull AND NOT a.attisdropped) AS has_tenant_id,
       c.relrowsecurity AS rls, c.relforcerowsecurity AS forced,
       coalesce((SELECT jsonb_agg(jsonb_build_array(p.cmd, p.permissive = 'PERMISSIVE', p.qual, p.with_check, p.roles))
                   FROM pg_policies p WHERE p.schemaname = n.nspname AND p.tablename = c.relname),
                '[]'::jsonb) AS policies,
       (SELECT a.attname::text FROM pg_index i JOIN pg_attribute a
               ON a.attrelid = i.indrelid AND a.attnum = i.indkey[0]
         WHERE i.indrelid = c.oid AND i.indisprimary) AS pk_first,
       ARRAY(SELECT ic.relname::text FROM pg_index i JOIN pg_class ic ON ic.oid = i.indexrelid
              WHERE i.indrelid = c.oid AND i.indisunique
                AND i.indkey[0] IS DISTINCT FROM
                    (SELECT a.attnum FROM pg_attribute a WHERE a.attrelid = c.oid AND a.attname = 'tenant_id')
              ORDER BY 1) AS unique_not_led,
       ARRAY(SELECT k.conname::text FROM pg_constraint k
              WHERE k.conrelid = c.oid AND k.contype = 'f'
                AND EXISTS (SELECT 1 FROM pg_attribute fa WHERE fa.attrelid = k.confrelid
                               AND fa.attname = 'tenant_id' AND NOT fa.attisdropped)
                AND NOT EXISTS (
                    SELECT 1 FROM unnest(k.conkey, k.confkey) AS m(src, dst)
                      JOIN pg_attribute sa ON sa.attrelid = k.conrelid AND sa.attnum = m.src
                      JOIN pg_attribute da ON da.attrelid = k.confrelid AND da.attnum = m.dst
                     WHERE sa.attname = 'tenant_id' AND da.attname = 'tenant_id')
              ORDER BY 1) AS fk_without_tenant,
       ARRAY(SELECT k.conname::text FROM pg_constraint k
              WHERE k.conrelid = c.oid AND k.contype = 'f'
                AND (EXISTS (SELECT 1 FROM pg_attribute fa WHERE fa.attrelid = k.confrelid
                                AND fa.attname = 'tenant_id' AND NOT fa.attisdropped)
                     OR k.confrelid = to_regclass($2))
              ORDER BY 1) AS fk_to_tenant_tables
  FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
 WHERE n.nspname = ANY($1) AND c.relkind IN ('r', 'p') AND NOT c.relispartition
 ORDER BY 1, 2
"#;

/// What a table is, for the tenancy rules.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TableKind {
    Tenant,
    TenantRoot,
    Global,
}

impl fmt::Display for TableKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            TableKind::Tenant => "tenant",
            TableKind::TenantRoot => "tenant root",
            TableKind::Global => "global",
        })
    }
}

/// One check on one table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Check {
    pub name: &'static str,
    pub ok: bool,
    /// Why it failed (empty when it passed).
    pub detail: String,
}

/// The checks of one table.
#[derive(Debug, Clone)]
pub struct TableReport {
    pub table: String,
    pub kind: TableKind,
    pub checks: Vec<Check>,
}

impl TableReport {
    pub fn ok(&self) -> bool {
        self.checks.iter().all(|c| c.ok)
    }
}

/// Names of the checks, in display order.
pub const CHECK_NAMES: [&str; 6] = ["rls", "forced", "policy", "pk", "unique", "fk"];

/// Checks every table of `schemas` against the tenancy rules of `root`.
pub async fn check_tables(
    conn: &mut PgConnection,
    root: &TenantRoot,
    schemas: &[&str],
) -> Result<Vec<TableReport>, sqlx::Error> {
    let facts: Vec<TableFacts> = sqlx::query_as(FACTS_SQL)
        .bind(schemas)
        .bind(root.table)
        .fetch_all(conn)
        .await?;
    Ok(facts.iter().map(|t| evaluate(t, root)).collect())
}

fn check(name: &'static str, ok: bool, detail: impl FnOnce() -> String) -> Check {
    Check {
        name,
        ok,
        detail: if ok { String::new() } else { detail() },
    }
}

fn evaluate(t: &TableFacts, root: &TenantRoot) -> TableReport {
    let name = format!("{}.{}", t.schema, t.table);
    let is_root = name == root.table;
    let kind = if t.has_tenant_id {
        TableKind::Tenant
    } else if is_root {
        TableKind::TenantRoot
    } else {
        TableKind::Global
    };
    let key = if is_root { "id" } else { "tenant_id" };
    let mut checks = Vec::new();
    if kind == TableKind::Global {
        checks.push(check("fk", t.fk_to_tenant_tables.is_empty(), || {
            format!(
                "global table references tenant tables: {}",
                t.fk_to_tenant_tables.join(", ")
            )
        }));
        return TableReport {
            table: name,
            kind,
            checks,
        };
    }
    let helper = if is_root {
        root.context_tenant
    } else {
        root.current_tenant
    };
    let guards = |expr: &Option<String>| {
        expr.as_deref()
            .is_some_and(|e| e.contains(helper) && e.contains(&format!("{key} = ")))
    };
    let for_request_path = |roles: &Vec<String>| roles.iter().any(|r| r == "public" || r == "pgstrata_app");
    let policies = &t.policies.0;
    let has_all_policy = policies.iter().any(|(cmd, permissive, using, with_check, roles)| {
        cmd == "ALL" && *permissive && guards(using) && guards(with_check) && for_request_path(roles)
    });
    let unguarded: Vec<&str> = policies
        .iter()
        .filter(|(_, permissive, using, with_check, roles)| {
            *permissive
                && for_request_path(roles)
                && (!(guards(using) || using.is_none()) || !(guards(with_check) || with_check.is_none()))
        })
        .map(|(cmd, ..)| cmd.as_str())
        .collect();
    checks.push(check("rls", t.rls, || "ENABLE ROW LEVEL SECURITY is missing".into()));
    checks.push(check("forced", t.forced, || {
        "FORCE ROW LEVEL SECURITY is missing (the owner bypasses RLS)".into()
    }));
    checks.push(check("policy", has_all_policy && unguarded.is_empty(), || {
        if has_all_policy {
            format!(
                "permissive policies for {} do not test {key} against {helper}",
                unguarded.join(", ")
            )
        } else {
            format!("no policy FOR ALL with USING and WITH CHECK on {key} = (SELECT {helper})")
        }
    }));
    checks.push(check("pk", t.pk_first.as_deref() == Some(key), || match &t.pk_first {
        None => "no primary key".into(),
        Some(first) => format!("primary key leads with {first}, not {key}"),
    }));
    let unique_bad: Vec<&String> = if is_root {
        Vec::new()
    } else {
        t.unique_not_led.iter().collect()
    };
    checks.push(check("unique", unique_bad.is_empty(), || {
        format!("unique indexes not led by tenant_id: {}", t.unique_not_led.join(", "))
    }));
    checks.push(check("fk", t.fk_without_tenant.is_empty(), || {
        format!(
            "foreign keys to tenant tables without tenant_id: {}",
            t.fk_without_tenant.join(", ")
        )
    }));
    TableReport {
        table: name,
        kind,
        checks,
    }
}

/// Renders reports as a fixed-width table.
pub fn render(reports: &[TableReport]) -> String {
    let width = reports.iter().map(|r| r.table.len()).max().unwrap_or(5).max(5);
    let mut out = format!("{:<width$}  {:<11}", "table", "kind");
    for name in CHECK_NAMES {
        out.push_str(&format!("  {name:<6}"));
    }
    out.push_str("  result\n");
    let mut problems = Vec::new();
    for r in reports {
        out.push_str(&format!("{:<width$}  {:<11}", r.table, r.kind.to_string()));
        for name in CHECK_NAMES {
            let mark = match r.checks.iter().find(|c| c.name == name) {
                None => "-",
                Some(c) if c.ok => "ok",
                Some(c) => {
                    problems.push(format!("{}: {}: {}", r.table, c.name, c.detail));
                    "FAIL"
                }
            };
            out.push_str(&format!("  {mark:<6}"));
        }
        out.push_str(if r.ok() { "  ok\n" } else { "  FAIL\n" });
    }
    for p in problems {
        out.push_str(&format!("  - {p}\n"));
    }
    out
}

/// Fewer future partitions than this earns a warning.
pub const MIN_FUTURE_PARTITIONS: i64 = 2;

const PARTITIONS_SQL: &str = r#"
SELECT format('%I.%I', n.nspname, c.relname) AS table,
       count(*) FILTER (WHERE substring(pg_get_expr(pc.relpartbound, pc.oid) FROM 'FROM \(''([^'']+)''\)')::timestamptz > now())
           AS future
  FROM pg_class c
  JOIN pg_namespace n ON n.oid = c.relnamespace
  JOIN pg_partitioned_table pt ON pt.partrelid = c.oid AND pt.partstrat = 'r'
  LEFT JOIN pg_inherits i ON i.inhparent = c.oid
  LEFT JOIN pg_class pc ON pc.oid = i.inhrelid
 WHERE n.nspname = ANY($1) AND c.relkind = 'p' AND NOT c.relispartition
   AND (SELECT format_type(a.atttypid, NULL) FROM pg_attribute a
         WHERE a.attrelid = c.oid AND a.attnum = pt.partattrs[0]) = 'timestamp with time zone'
 GROUP BY 1
 ORDER BY 1
"#;

/// Warnings for tables range-partitioned on a `timestamptz` that have fewer than
/// [`MIN_FUTURE_PARTITIONS`] partitions starting after now: once the last one fills, every
/// insert fails, so partitions must be created ahead. The hint names the schema's own
/// `maintain` command (audit and events have one) and the worker that runs every module's
/// maintenance.
pub async fn partition_warnings(conn: &mut PgConnection, schemas: &[&str]) -> Result<Vec<String>, sqlx::Error> {
    let rows: Vec<(String, i64)> = sqlx::query_as(PARTITIONS_SQL).bind(schemas).fetch_all(conn).await?;
    Ok(rows
        .into_iter()
        .filter(|(_, future)| *future < MIN_FUTURE_PARTITIONS)
        .map(|(table, future)| {
            let schema = table.split('.').next().unwrap_or_default();
            format!(
                "{table} has {future} partition(s) starting after now (want at least {MIN_FUTURE_PARTITIONS}); \
                 inserts fail once time runs past the last one: create partitions ahead \
                 (`pgstrata {schema} maintain`, or `pgstrata worker`, which runs every module's maintenance)"
            )
        })
        .collect())
}

/// The one `search_path` a SECURITY DEFINER function may run with: `pg_temp` explicitly last,
/// so that the caller's temporary schema cannot shadow a relation or type name the function
/// uses (an empty `search_path` still searches `pg_temp` first for those).
pub const DEFINER_SEARCH_PATH: &str = "search_path=pg_catalog, pg_temp";

const SECURITY_SQL: &str = r#"
SELECT format('%s: SECURITY DEFINER without SET search_path = pg_catalog, pg_temp (the caller''s pg_temp could shadow its names)',
              p.oid::regprocedure)
  FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace
 WHERE n.nspname = ANY($1) AND p.prosecdef
   AND NOT coalesce($2 = ANY (p.proconfig), false)
UNION ALL
SELECT format('%s: SECURITY DEFINER and executable by PUBLIC; grant EXECUTE to the roles that need it',
              p.oid::regprocedure)
  FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace
 WHERE n.nspname = ANY($1) AND p.prosecdef
   AND EXISTS (SELECT 1 FROM aclexplode(coalesce(p.proacl, acldefault('f', p.proowner))) a
                WHERE a.grantee = 0 AND a.privilege_type = 'EXECUTE')
UNION ALL
SELECT format('%I.%I.%I is an operator field, but pgstrata_app may UPDATE it', n.nspname, c.relname, a.attname)
  FROM pg_attribute a
  JOIN pg_class c ON c.oid = a.attrelid
  JOIN pg_namespace n ON n.oid = c.relnamespace
 WHERE n.nspname = ANY($1) AND a.attnum > 0 AND NOT a.attisdropped
   AND col_description(c.oid, a.attnum) LIKE 'operator field%'
   AND to_regrole('pgstrata_app') IS NOT NULL
   AND has_column_privilege('pgstrata_app', c.oid, a.attnum, 'UPDATE')
ORDER BY 1
"#;

/// Static security rules read from the catalog (design.md, Security): every SECURITY DEFINER
/// function pins [`DEFINER_SEARCH_PATH`] and is not executable by PUBLIC, and the application
/// role cannot UPDATE a column whose comment marks it as an operator field. Each problem is
/// one line naming the object.
pub async fn security_problems(conn: &mut PgConnection, schemas: &[&str]) -> Result<Vec<String>, sqlx::Error> {
    sqlx::query_scalar(SECURITY_SQL)
        .bind(schemas)
        .bind(DEFINER_SEARCH_PATH)
        .fetch_all(conn)
        .await
}
