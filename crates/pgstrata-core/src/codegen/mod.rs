//! Code generated from the live catalog.
//!
//! `pgstrata codegen` migrates a scratch database, reads each module's schema from the catalog
//! once ([`Catalog::read`]) and hands it to three renderers:
//!
//! - [`rust`]: `crates/pgstrata-<module>/src/generated.rs`, a `serde` + `sqlx::FromRow` struct and
//!   a sea-query `Iden` enum per table. Columns get the Rust type of their SQL type, except keys
//!   and states, which get the typed ids and enums the module lists in
//!   [`Module::column_types`].
//! - [`drizzle`]: `schemas/<module>/drizzle.ts`, a Drizzle ORM schema (`pgSchema(...).table`).
//! - [`prisma`]: `schemas/<module>/schema.prisma`, a Prisma schema (multiSchema, `@@schema`).
//!
//! Each module's schema test renders all three again and fails when a checked-in copy differs,
//! so SQL and its typed fronts cannot drift apart. The TypeScript-side files are also checked by
//! the tools themselves (`crates/pgstrata/tests/typescript_schemas.rs`).

mod drizzle;
mod prisma;
mod rust;

use crate::migrate::Module;
use sqlx::PgConnection;

/// Why a schema cannot be rendered.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CodegenError {
    #[error(
        "{table}.{column} has type {type_name}, which codegen does not map to {target} yet; add it to the {target} renderer"
    )]
    UnsupportedType {
        table: String,
        column: String,
        type_name: String,
        target: &'static str,
    },
    #[error(
        "index {index} on {table} uses an expression, a non-default operator class or a sort order, which codegen does not render yet"
    )]
    UnsupportedIndex { table: String, index: String },
    #[error("module {module} types the column {column}, which its schema does not have")]
    UnknownColumn { module: String, column: String },
    #[error(transparent)]
    Db(#[from] sqlx::Error),
}

/// Every file codegen renders for one module, from one catalog read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rendered {
    /// `crates/pgstrata-<module>/src/generated.rs`.
    pub rust: String,
    /// `schemas/<module>/drizzle.ts`.
    pub drizzle: String,
    /// `schemas/<module>/schema.prisma`.
    pub prisma: String,
}

/// Renders the Rust file of one module (`generated.rs`).
pub async fn render_module(conn: &mut PgConnection, module: &Module) -> Result<String, CodegenError> {
    let catalog = Catalog::read(conn, module.name).await?;
    rust::render(&catalog, module)
}

/// Renders every generated file of one module.
pub async fn render_all(conn: &mut PgConnection, module: &Module) -> Result<Rendered, CodegenError> {
    let catalog = Catalog::read(conn, module.name).await?;
    Ok(Rendered {
        rust: rust::render(&catalog, module)?,
        drizzle: drizzle::render(&catalog)?,
        prisma: prisma::render(&catalog)?,
    })
}

/// A module's schema as the catalog describes it: its own tables, and the tables of other
/// modules its foreign keys reference (rendered beside them where a tool needs the target).
#[derive(Debug, Clone)]
pub(crate) struct Catalog {
    pub schema: String,
    /// The module's tables (partitions excluded), by name.
    pub tables: Vec<Table>,
    /// Tables of other schemas that `tables` reference, by schema and name.
    pub foreign: Vec<Table>,
}

#[derive(Debug, Clone)]
pub(crate) struct Table {
    pub schema: String,
    pub name: String,
    pub comment: Option<String>,
    pub rls: bool,
    pub rls_forced: bool,
    pub partitioned: bool,
    pub columns: Vec<Column>,
    /// Constraints, by name.
    pub constraints: Vec<Constraint>,
    /// Indexes that back no constraint, by name.
    pub indexes: Vec<Index>,
}

impl Table {
    pub fn primary_key(&self) -> Option<&Constraint> {
        self.constraints.iter().find(|c| c.kind == "p")
    }

    pub fn of_kind<'a>(&'a self, kind: &'a str) -> impl Iterator<Item = &'a Constraint> + 'a {
        self.constraints.iter().filter(move |c| c.kind == kind)
    }

    pub fn column(&self, name: &str) -> Option<&Column> {
        self.columns.iter().find(|c| c.column_name == name)
    }

    /// A tenant table: it has `tenant_id` and row-level security.
    pub fn is_tenant_table(&self) -> bool {
        self.rls && self.column("tenant_id").is_some()
    }

    /// Whether `columns` (in any order) are exactly the columns of the primary key, a unique
    /// constraint or a unique index without a predicate.
    pub fn is_unique_set(&self, columns: &[String]) -> bool {
        let same = |other: &[String]| other.len() == columns.len() && columns.iter().all(|c| other.contains(c));
        self.constraints
            .iter()
            .any(|k| (k.kind == "p" || k.kind == "u") && same(&k.columns))
            || self
                .indexes
                .iter()
                .any(|i| i.is_unique && i.predicate.is_none() && i.include.is_empty() && same(&i.columns))
    }
}

#[derive(Debug, Clone, sqlx::FromRow)]
pub(crate) struct Column {
    pub schema_name: String,
    pub table_name: String,
    pub column_name: String,
    /// `format_type` without the modifier, as the Rust renderer maps it.
    pub type_name: String,
    /// `format_type` with the modifier (`character varying(40)`).
    pub sql_type: String,
    pub not_null: bool,
    pub comment: Option<String>,
    /// The default expression (`pg_get_expr`), or the generation expression of a generated
    /// column.
    pub default_expr: Option<String>,
    /// `a` (ALWAYS), `d` (BY DEFAULT) or empty.
    pub identity: String,
    /// `s` (STORED) or empty.
    pub generated: String,
}

#[derive(Debug, Clone, sqlx::FromRow)]
pub(crate) struct Constraint {
    pub schema_name: String,
    pub table_name: String,
    pub name: String,
    /// `p`, `u`, `f`, `c` or `x`.
    pub kind: String,
    pub columns: Vec<String>,
    pub ref_schema: Option<String>,
    pub ref_table: Option<String>,
    pub ref_columns: Vec<String>,
    /// `a` (no action), `r`, `c`, `n`, `d`; a space for constraints other than foreign keys.
    pub on_delete: String,
    pub on_update: String,
    /// `pg_get_constraintdef`.
    pub definition: String,
    pub nulls_not_distinct: bool,
}

impl Constraint {
    /// The expression of a CHECK constraint, without `CHECK (...)`, `NOT VALID` and the
    /// parentheses `pg_get_constraintdef` puts around it (as drizzle-kit's introspection gives it).
    pub fn check_expr(&self) -> &str {
        let d = self.definition.trim_end_matches(" NOT VALID");
        let d = d.strip_prefix("CHECK (").and_then(|d| d.strip_suffix(')')).unwrap_or(d);
        strip_outer_parens(d)
    }

    pub fn references(&self, table: &Table) -> bool {
        self.ref_schema.as_deref() == Some(table.schema.as_str())
            && self.ref_table.as_deref() == Some(table.name.as_str())
    }
}

#[derive(Debug, Clone, sqlx::FromRow)]
pub(crate) struct Index {
    pub schema_name: String,
    pub table_name: String,
    pub name: String,
    pub is_unique: bool,
    pub nulls_not_distinct: bool,
    /// `btree`, `brin`, `gin`, ...
    pub method: String,
    /// Key columns, in order.
    pub columns: Vec<String>,
    /// `INCLUDE` columns.
    pub include: Vec<String>,
    pub predicate: Option<String>,
    /// Plain columns, default operator classes, ascending: what the renderers express.
    pub plain: bool,
}

const TABLES_SQL: &str = r#"
SELECT n.nspname::text AS schema_name, c.relname::text AS table_name,
       obj_description(c.oid, 'pg_class') AS comment,
       c.relrowsecurity AS rls, c.relforcerowsecurity AS rls_forced,
       c.relkind = 'p' AS partitioned
  FROM pg_catalog.pg_class c
  JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
 WHERE n.nspname = ANY($1) AND c.relkind IN ('r', 'p') AND NOT c.relispartition
 ORDER BY n.nspname, c.relname
"#;

const COLUMNS_SQL: &str = r#"
SELECT n.nspname::text AS schema_name, c.relname::text AS table_name, a.attname::text AS column_name,
       format_type(a.atttypid, NULL) AS type_name,
       format_type(a.atttypid, a.atttypmod) AS sql_type,
       a.attnotnull AS not_null,
       col_description(c.oid, a.attnum) AS comment,
       pg_get_expr(d.adbin, d.adrelid) AS default_expr,
       a.attidentity::text AS identity, a.attgenerated::text AS generated
  FROM pg_catalog.pg_class c
  JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
  JOIN pg_catalog.pg_attribute a ON a.attrelid = c.oid
  LEFT JOIN pg_catalog.pg_attrdef d ON d.adrelid = a.attrelid AND d.adnum = a.attnum
 WHERE n.nspname = ANY($1) AND c.relkind IN ('r', 'p') AND NOT c.relispartition
   AND a.attnum > 0 AND NOT a.attisdropped
 ORDER BY n.nspname, c.relname, a.attnum
"#;

const CONSTRAINTS_SQL: &str = r#"
SELECT n.nspname::text AS schema_name, c.relname::text AS table_name, k.conname::text AS name,
       k.contype::text AS kind,
       ARRAY(SELECT a.attname::text
               FROM unnest(k.conkey) WITH ORDINALITY AS u(attnum, ord)
               JOIN pg_catalog.pg_attribute a ON a.attrelid = k.conrelid AND a.attnum = u.attnum
              ORDER BY u.ord) AS columns,
       fn.nspname::text AS ref_schema, fc.relname::text AS ref_table,
       ARRAY(SELECT a.attname::text
               FROM unnest(k.confkey) WITH ORDINALITY AS u(attnum, ord)
               JOIN pg_catalog.pg_attribute a ON a.attrelid = k.confrelid AND a.attnum = u.attnum
              ORDER BY u.ord) AS ref_columns,
       k.confdeltype::text AS on_delete, k.confupdtype::text AS on_update,
       pg_get_constraintdef(k.oid) AS definition,
       COALESCE(i.indnullsnotdistinct, false) AS nulls_not_distinct
  FROM pg_catalog.pg_constraint k
  JOIN pg_catalog.pg_class c ON c.oid = k.conrelid
  JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
  LEFT JOIN pg_catalog.pg_class fc ON fc.oid = k.confrelid
  LEFT JOIN pg_catalog.pg_namespace fn ON fn.oid = fc.relnamespace
  LEFT JOIN pg_catalog.pg_index i ON i.indexrelid = k.conindid AND k.contype IN ('p', 'u')
 WHERE n.nspname = ANY($1) AND c.relkind IN ('r', 'p') AND NOT c.relispartition
   AND k.contype IN ('p', 'u', 'f', 'c', 'x') AND k.conparentid = 0
 ORDER BY n.nspname, c.relname, k.conname
"#;

const INDEXES_SQL: &str = r#"
SELECT n.nspname::text AS schema_name, c.relname::text AS table_name, ic.relname::text AS name,
       i.indisunique AS is_unique, i.indnullsnotdistinct AS nulls_not_distinct,
       am.amname::text AS method,
       ARRAY(SELECT a.attname::text
               FROM unnest(i.indkey::int2[]) WITH ORDINALITY AS u(attnum, ord)
               JOIN pg_catalog.pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = u.attnum
              WHERE u.ord <= i.indnkeyatts
              ORDER BY u.ord) AS columns,
       ARRAY(SELECT a.attname::text
               FROM unnest(i.indkey::int2[]) WITH ORDINALITY AS u(attnum, ord)
               JOIN pg_catalog.pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = u.attnum
              WHERE u.ord > i.indnkeyatts
              ORDER BY u.ord) AS include,
       pg_get_expr(i.indpred, i.indrelid) AS predicate,
       (i.indexprs IS NULL
        AND NOT EXISTS (SELECT FROM unnest(i.indoption::int2[]) AS o(flags) WHERE o.flags <> 0)
        AND NOT EXISTS (SELECT FROM unnest(i.indclass::oid[]) AS oc(oid)
                          JOIN pg_catalog.pg_opclass op ON op.oid = oc.oid
                         WHERE NOT op.opcdefault)) AS plain
  FROM pg_catalog.pg_index i
  JOIN pg_catalog.pg_class ic ON ic.oid = i.indexrelid
  JOIN pg_catalog.pg_am am ON am.oid = ic.relam
  JOIN pg_catalog.pg_class c ON c.oid = i.indrelid
  JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
 WHERE n.nspname = ANY($1) AND c.relkind IN ('r', 'p') AND NOT c.relispartition
   AND NOT EXISTS (SELECT FROM pg_catalog.pg_constraint k
                    WHERE k.conindid = i.indexrelid AND k.conrelid = i.indrelid
                      AND k.contype IN ('p', 'u', 'x'))
 ORDER BY n.nspname, c.relname, ic.relname
"#;

#[derive(sqlx::FromRow)]
struct TableRow {
    schema_name: String,
    table_name: String,
    comment: Option<String>,
    rls: bool,
    rls_forced: bool,
    partitioned: bool,
}

impl Catalog {
    /// Reads `schema`, then the tables of other schemas its foreign keys reference.
    pub async fn read(conn: &mut PgConnection, schema: &str) -> Result<Catalog, CodegenError> {
        let tables = read_tables(conn, &[schema.to_owned()]).await?;
        let mut targets: Vec<(String, String)> = Vec::new();
        for t in &tables {
            for fk in t.of_kind("f") {
                if let (Some(s), Some(n)) = (&fk.ref_schema, &fk.ref_table)
                    && s != schema
                    && !targets.contains(&(s.clone(), n.clone()))
                {
                    targets.push((s.clone(), n.clone()));
                }
            }
        }
        let mut foreign_schemas: Vec<String> = targets.iter().map(|(s, _)| s.clone()).collect();
        foreign_schemas.sort();
        foreign_schemas.dedup();
        let foreign = if foreign_schemas.is_empty() {
            Vec::new()
        } else {
            read_tables(conn, &foreign_schemas)
                .await?
                .into_iter()
                .filter(|t| targets.contains(&(t.schema.clone(), t.name.clone())))
                .collect()
        };
        Ok(Catalog {
            schema: schema.to_owned(),
            tables,
            foreign,
        })
    }

    /// Every table a renderer may name: the module's, then the foreign ones.
    pub fn all_tables(&self) -> impl Iterator<Item = &Table> {
        self.tables.iter().chain(self.foreign.iter())
    }
}

async fn read_tables(conn: &mut PgConnection, schemas: &[String]) -> Result<Vec<Table>, CodegenError> {
    let rows: Vec<TableRow> = sqlx::query_as(TABLES_SQL).bind(schemas).fetch_all(&mut *conn).await?;
    let columns: Vec<Column> = sqlx::query_as(COLUMNS_SQL).bind(schemas).fetch_all(&mut *conn).await?;
    let constraints: Vec<Constraint> = sqlx::query_as(CONSTRAINTS_SQL)
        .bind(schemas)
        .fetch_all(&mut *conn)
        .await?;
    let indexes: Vec<Index> = sqlx::query_as(INDEXES_SQL).bind(schemas).fetch_all(&mut *conn).await?;
    let mut tables = Vec::with_capacity(rows.len());
    for r in rows {
        let of = |s: &str, t: &str| s == r.schema_name && t == r.table_name;
        tables.push(Table {
            columns: columns
                .iter()
                .filter(|c| of(&c.schema_name, &c.table_name))
                .cloned()
                .collect(),
            constraints: constraints
                .iter()
                .filter(|c| of(&c.schema_name, &c.table_name))
                .cloned()
                .collect(),
            indexes: indexes
                .iter()
                .filter(|i| of(&i.schema_name, &i.table_name))
                .cloned()
                .collect(),
            schema: r.schema_name,
            name: r.table_name,
            comment: r.comment,
            rls: r.rls,
            rls_forced: r.rls_forced,
            partitioned: r.partitioned,
        });
    }
    Ok(tables)
}

/// `expr` without one pair of parentheses around all of it (`(a) AND (b)` keeps its own).
fn strip_outer_parens(expr: &str) -> &str {
    let Some(inner) = expr.strip_prefix('(').and_then(|e| e.strip_suffix(')')) else {
        return expr;
    };
    // The first parenthesis must close at the very end: count outside string literals.
    let mut depth = 1_i32;
    let mut quoted = false;
    for ch in inner.chars() {
        match ch {
            '\'' => quoted = !quoted,
            '(' if !quoted => depth += 1,
            ')' if !quoted => {
                depth -= 1;
                if depth == 0 {
                    return expr;
                }
            }
            _ => {}
        }
    }
    inner
}

pub(crate) fn camel(s: &str) -> String {
    s.split('_')
        .map(|w| {
            let mut c = w.chars();
            c.next()
                .map(|f| f.to_ascii_uppercase().to_string() + c.as_str())
                .unwrap_or_default()
        })
        .collect()
}

/// `memberships` -> `Membership`, `policies` -> `Policy`, `status` stays.
pub(crate) fn singular(table: &str) -> String {
    let s = if let Some(stem) = table.strip_suffix("ies") {
        format!("{stem}y")
    } else if let Some(stem) = table
        .strip_suffix("es")
        .filter(|s| s.ends_with("ss") || s.ends_with('x') || s.ends_with("ch") || s.ends_with("sh"))
    {
        stem.to_owned()
    } else if table.ends_with("ss") || table.ends_with("us") {
        table.to_owned()
    } else {
        table.strip_suffix('s').unwrap_or(table).to_owned()
    };
    camel(&s)
}

/// The lines every TypeScript-side file says about a table's row-level security.
pub(crate) fn rls_note(t: &Table) -> Vec<String> {
    let mut lines = Vec::new();
    if t.rls {
        lines.push(format!(
            "Row-level security is enabled{} on {}.{}: its policies (schemas/{}/schema.sql) decide which rows a role sees and writes.",
            if t.rls_forced { " and forced (the owner too)" } else { "" },
            t.schema,
            t.name,
            t.schema
        ));
    }
    if t.is_tenant_table() {
        lines.push(
            "Tenant table: only rows of the transaction's tenant are visible or writable; set it with \
             set_config('app.tenant_id', <id>, true) in the same transaction, never with a session SET."
                .to_owned(),
        );
    }
    if t.partitioned {
        lines.push("Partitioned: rows live in partitions the module creates and drops; query the parent.".to_owned());
    }
    lines
}

#[cfg(test)]
mod tests {
    use super::{singular, strip_outer_parens};

    #[test]
    fn check_expressions_lose_only_the_parentheses_around_all_of_them() {
        assert_eq!(strip_outer_parens("(a = 1)"), "a = 1");
        assert_eq!(strip_outer_parens("((a = 1) AND (b = 2))"), "(a = 1) AND (b = 2)");
        assert_eq!(strip_outer_parens("(a = 1) AND (b = 2)"), "(a = 1) AND (b = 2)");
        assert_eq!(strip_outer_parens("(x ~ '^(a)'::text)"), "x ~ '^(a)'::text");
        assert_eq!(
            strip_outer_parens("(x ~ '^a)'::text) OR (y)"),
            "(x ~ '^a)'::text) OR (y)"
        );
        assert_eq!(strip_outer_parens("a = 1"), "a = 1");
    }

    #[test]
    fn table_names_become_singular_row_types() {
        assert_eq!(singular("memberships"), "Membership");
        assert_eq!(singular("policies"), "Policy");
        assert_eq!(singular("status"), "Status");
        assert_eq!(singular("addresses"), "Address");
        assert_eq!(singular("role_inherits"), "RoleInherit");
    }
}
