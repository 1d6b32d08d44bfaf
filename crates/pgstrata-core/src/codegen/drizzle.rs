//! The Drizzle renderer: `schemas/<module>/drizzle.ts`.
//!
//! One `pgSchema` per module and one exported table per SQL table, keyed by the SQL column
//! names. Tables of other modules that a foreign key references are imported from their own
//! module's file (`import * as tenancy from "../tenancy/drizzle"`).

use super::{Catalog, CodegenError, Column, Constraint, Table, camel, rls_note};
use std::collections::BTreeSet;
use std::fmt::Write;

/// The exported constant of a table: `role_graph_locks` -> `roleGraphLocks`.
fn table_const(table: &str) -> String {
    let c = camel(table);
    let mut chars = c.chars();
    chars
        .next()
        .map(|f| f.to_ascii_lowercase().to_string() + chars.as_str())
        .unwrap_or_default()
}

/// A JavaScript string literal.
fn js_str(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for ch in s.chars() {
        match ch {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            _ => out.push(ch),
        }
    }
    out.push('"');
    out
}

/// SQL text inside a `sql` tagged template: backslashes, backticks and `${` escaped, so the
/// template's cooked string is the SQL itself.
fn sql_template(expr: &str) -> String {
    let body = expr.replace('\\', "\\\\").replace('`', "\\`").replace("${", "\\${");
    format!("sql`{body}`")
}

/// A comment line cannot end the block comment it sits in.
fn doc_line(s: &str) -> String {
    s.replace("*/", "*\\/")
}

/// The column builder of a SQL type, and the pg-core imports and custom types it needs.
fn column_builder(
    table: &Table,
    c: &Column,
    imports: &mut BTreeSet<&'static str>,
    customs: &mut BTreeSet<&'static str>,
) -> Result<String, CodegenError> {
    let (base, array) = match c.sql_type.strip_suffix("[]") {
        Some(b) => (b, true),
        None => (c.sql_type.as_str(), false),
    };
    let name = js_str(&c.column_name);
    let builder = match base {
        "uuid" | "text" | "integer" | "smallint" | "boolean" | "real" | "date" | "jsonb" | "json" => {
            let f: &'static str = match base {
                "uuid" => "uuid",
                "text" => "text",
                "integer" => "integer",
                "smallint" => "smallint",
                "boolean" => "boolean",
                "real" => "real",
                "date" => "date",
                "jsonb" => "jsonb",
                _ => "json",
            };
            imports.insert(f);
            format!("{f}({name})")
        }
        "double precision" => {
            imports.insert("doublePrecision");
            format!("doublePrecision({name})")
        }
        "bigint" => {
            imports.insert("bigint");
            format!("bigint({name}, {{ mode: \"bigint\" }})")
        }
        "timestamp with time zone" => {
            imports.insert("timestamp");
            format!("timestamp({name}, {{ withTimezone: true }})")
        }
        "timestamp without time zone" => {
            imports.insert("timestamp");
            format!("timestamp({name})")
        }
        "character varying" => {
            imports.insert("varchar");
            format!("varchar({name})")
        }
        "bytea" | "xid8" => {
            imports.insert("customType");
            let f: &'static str = if base == "bytea" { "bytea" } else { "xid8" };
            customs.insert(f);
            format!("{f}({name})")
        }
        other => {
            if let Some(len) = other
                .strip_prefix("character varying(")
                .and_then(|r| r.strip_suffix(')'))
            {
                imports.insert("varchar");
                format!("varchar({name}, {{ length: {len} }})")
            } else {
                return Err(CodegenError::UnsupportedType {
                    table: table.name.clone(),
                    column: c.column_name.clone(),
                    type_name: c.sql_type.clone(),
                    target: "Drizzle",
                });
            }
        }
    };
    Ok(if array { format!("{builder}.array()") } else { builder })
}

fn action(code: &str) -> &'static str {
    match code {
        "r" => "restrict",
        "c" => "cascade",
        "n" => "set null",
        "d" => "set default",
        _ => "no action",
    }
}

/// The expression that names a column of a referenced table, from inside `table`'s callback.
fn column_ref(catalog: &Catalog, fk: &Constraint, column: &str) -> String {
    let target = table_const(fk.ref_table.as_deref().unwrap_or_default());
    match fk.ref_schema.as_deref() {
        Some(s) if s != catalog.schema => format!("{s}.{target}.{column}"),
        _ => format!("{target}.{column}"),
    }
}

pub(super) fn render(catalog: &Catalog) -> Result<String, CodegenError> {
    let schema = &catalog.schema;
    let mut imports: BTreeSet<&'static str> = BTreeSet::new();
    let mut customs: BTreeSet<&'static str> = BTreeSet::new();
    let mut uses_sql = false;
    let mut body = String::new();
    imports.insert("pgSchema");
    let schema_const = format!("{}Schema", table_const(schema));

    for t in &catalog.tables {
        let mut docs: Vec<String> = Vec::new();
        docs.push(format!("`{}.{}`.", t.schema, t.name));
        if let Some(c) = &t.comment {
            docs.extend(c.lines().map(str::to_owned));
        }
        docs.extend(rls_note(t));
        let mut extras: Vec<String> = Vec::new();
        let mut notes: Vec<String> = Vec::new();

        let pk = t.primary_key();
        let single_pk = pk.filter(|k| k.columns.len() == 1).map(|k| k.columns[0].as_str());
        let _ = writeln!(body);
        let _ = writeln!(body, "/**");
        for d in &docs {
            let _ = writeln!(body, " * {}", doc_line(d));
        }
        let _ = writeln!(body, " */");
        let _ = writeln!(
            body,
            "export const {} = {schema_const}.table({}, {{",
            table_const(&t.name),
            js_str(&t.name)
        );
        for c in &t.columns {
            let mut b = column_builder(t, c, &mut imports, &mut customs)?;
            if single_pk == Some(c.column_name.as_str()) {
                b.push_str(".primaryKey()");
            }
            if c.not_null {
                b.push_str(".notNull()");
            }
            match (c.identity.as_str(), c.generated.as_str(), &c.default_expr) {
                ("a", _, _) => b.push_str(".generatedAlwaysAsIdentity()"),
                ("d", _, _) => b.push_str(".generatedByDefaultAsIdentity()"),
                (_, "s", Some(e)) => {
                    uses_sql = true;
                    let _ = write!(b, ".generatedAlwaysAs({})", sql_template(e));
                }
                (_, _, Some(e)) => {
                    uses_sql = true;
                    let _ = write!(b, ".default({})", sql_template(e));
                }
                _ => {}
            }
            if let Some(comment) = &c.comment {
                let _ = writeln!(body, "  /** {} */", doc_line(&comment.replace('\n', " ")));
            }
            let _ = writeln!(body, "  {}: {b},", c.column_name);
        }

        if let Some(k) = pk.filter(|k| k.columns.len() > 1) {
            imports.insert("primaryKey");
            extras.push(format!(
                "primaryKey({{ name: {}, columns: [{}] }})",
                js_str(&k.name),
                cols(&k.columns)
            ));
        }
        for k in t.of_kind("u") {
            imports.insert("unique");
            let mut e = format!("unique({}).on({})", js_str(&k.name), cols(&k.columns));
            if k.nulls_not_distinct {
                e.push_str(".nullsNotDistinct()");
            }
            extras.push(e);
        }
        for fk in t.of_kind("f") {
            imports.insert("foreignKey");
            let foreign: Vec<String> = fk.ref_columns.iter().map(|c| column_ref(catalog, fk, c)).collect();
            extras.push(format!(
                "foreignKey({{ name: {}, columns: [{}], foreignColumns: [{}] }}).onDelete({}).onUpdate({})",
                js_str(&fk.name),
                cols(&fk.columns),
                foreign.join(", "),
                js_str(action(&fk.on_delete)),
                js_str(action(&fk.on_update))
            ));
        }
        for i in &t.indexes {
            if !i.plain {
                return Err(CodegenError::UnsupportedIndex {
                    table: format!("{}.{}", t.schema, t.name),
                    index: i.name.clone(),
                });
            }
            let f = if i.is_unique { "uniqueIndex" } else { "index" };
            imports.insert(f);
            let mut e = format!(
                "{f}({}).using({}, {})",
                js_str(&i.name),
                js_str(&i.method),
                cols(&i.columns)
            );
            if let Some(p) = &i.predicate {
                uses_sql = true;
                let _ = write!(e, ".where({})", sql_template(p));
            }
            if !i.include.is_empty() {
                notes.push(format!(
                    "Index {} also has INCLUDE ({}), which Drizzle cannot express.",
                    i.name,
                    i.include.join(", ")
                ));
            }
            if i.nulls_not_distinct {
                notes.push(format!("Index {} is NULLS NOT DISTINCT.", i.name));
            }
            extras.push(e);
        }
        for k in t.of_kind("c") {
            imports.insert("check");
            uses_sql = true;
            extras.push(format!("check({}, {})", js_str(&k.name), sql_template(k.check_expr())));
        }
        for k in t.of_kind("x") {
            notes.push(format!("{}: {} (not expressible in Drizzle).", k.name, k.definition));
        }

        if extras.is_empty() && notes.is_empty() {
            let _ = write!(body, "}})");
        } else {
            let _ = writeln!(body, "}}, (t) => [");
            for n in &notes {
                let _ = writeln!(body, "  // {n}");
            }
            for e in &extras {
                let _ = writeln!(body, "  {e},");
            }
            let _ = write!(body, "])");
        }
        if t.rls {
            let _ = write!(body, ".enableRLS()");
        }
        let _ = writeln!(body, ";");
    }

    let mut out = String::new();
    let _ = writeln!(
        out,
        "// @generated by `pgstrata codegen` from the `{schema}` schema. Do not edit by hand:"
    );
    let _ = writeln!(
        out,
        "// change the migration, then run `cargo run -p pgstrata-cli -- codegen`."
    );
    let _ = writeln!(out, "//");
    let _ = writeln!(
        out,
        "// Drizzle ORM tables of the `{schema}` schema. The database holds the contract (constraints,"
    );
    let _ = writeln!(
        out,
        "// row-level security, triggers, functions): create it from schemas/{schema}/schema.sql or"
    );
    let _ = writeln!(out, "// pgstrata's migrations, not with drizzle-kit push or generate.");
    if uses_sql {
        let _ = writeln!(out, "import {{ sql }} from \"drizzle-orm\";");
    }
    let _ = writeln!(
        out,
        "import {{ {} }} from \"drizzle-orm/pg-core\";",
        imports.iter().copied().collect::<Vec<_>>().join(", ")
    );
    let mut foreign_schemas: Vec<&str> = catalog.foreign.iter().map(|t| t.schema.as_str()).collect();
    foreign_schemas.dedup();
    for s in foreign_schemas {
        let _ = writeln!(out, "import * as {s} from \"../{s}/drizzle\";");
    }
    for c in &customs {
        let _ = writeln!(out);
        match *c {
            "bytea" => {
                let _ = writeln!(out, "/** `bytea`, as a Node.js Buffer. */");
                let _ = writeln!(
                    out,
                    "const bytea = customType<{{ data: Buffer; driverData: Buffer }}>({{ dataType: () => \"bytea\" }});"
                );
            }
            _ => {
                let _ = writeln!(
                    out,
                    "/** `xid8`, a 64-bit transaction id, as its decimal text (beyond Number's safe range). */"
                );
                let _ = writeln!(
                    out,
                    "const xid8 = customType<{{ data: string; driverData: string }}>({{ dataType: () => \"xid8\" }});"
                );
            }
        }
    }
    let _ = writeln!(out);
    let _ = writeln!(out, "/** The `{schema}` Postgres schema. */");
    let _ = writeln!(out, "export const {schema_const} = pgSchema({});", js_str(schema));
    out.push_str(&body);
    Ok(out)
}

fn cols(columns: &[String]) -> String {
    columns.iter().map(|c| format!("t.{c}")).collect::<Vec<_>>().join(", ")
}
