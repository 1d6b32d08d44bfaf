//! The Prisma renderer: `schemas/<module>/schema.prisma`.
//!
//! One model per table (`@@map` to the table, `@@schema` to the module), fields named as the
//! SQL columns. A Prisma schema must hold both ends of every relation, so the tables of other
//! modules that a foreign key references are rendered in the file too, marked as such.

use super::{Catalog, CodegenError, Column, Constraint, Table, rls_note, singular};
use std::collections::BTreeSet;
use std::fmt::Write;

/// A Prisma string literal.
fn prisma_str(s: &str) -> String {
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

/// The Prisma type and native type attribute of a SQL type.
fn field_type(table: &Table, c: &Column) -> Result<(String, Option<String>), CodegenError> {
    let (base, array) = match c.sql_type.strip_suffix("[]") {
        Some(b) => (b, true),
        None => (c.sql_type.as_str(), false),
    };
    let (ty, native): (&str, Option<String>) = match base {
        "uuid" => ("String", Some("@db.Uuid".to_owned())),
        "text" => ("String", None),
        "character varying" => ("String", Some("@db.VarChar".to_owned())),
        "citext" => ("String", Some("@db.Citext".to_owned())),
        "bigint" => ("BigInt", None),
        "integer" => ("Int", None),
        "smallint" => ("Int", Some("@db.SmallInt".to_owned())),
        "boolean" => ("Boolean", None),
        "real" => ("Float", Some("@db.Real".to_owned())),
        "double precision" => ("Float", None),
        "timestamp with time zone" => ("DateTime", Some("@db.Timestamptz(6)".to_owned())),
        "timestamp without time zone" => ("DateTime", Some("@db.Timestamp(6)".to_owned())),
        "date" => ("DateTime", Some("@db.Date".to_owned())),
        "jsonb" => ("Json", None),
        "json" => ("Json", Some("@db.Json".to_owned())),
        "bytea" => ("Bytes", None),
        "xid8" => ("Unsupported(\"xid8\")", None),
        other => {
            if let Some(len) = other
                .strip_prefix("character varying(")
                .and_then(|r| r.strip_suffix(')'))
            {
                ("String", Some(format!("@db.VarChar({len})")))
            } else {
                return Err(CodegenError::UnsupportedType {
                    table: table.name.clone(),
                    column: c.column_name.clone(),
                    type_name: c.sql_type.clone(),
                    target: "Prisma",
                });
            }
        }
    };
    let ty = if array {
        // Prisma lists cannot be optional: a nullable array column is a list (as db pull says).
        format!("{ty}[]")
    } else if c.not_null {
        ty.to_owned()
    } else {
        format!("{ty}?")
    };
    Ok((ty, native))
}

fn action(code: &str) -> &'static str {
    match code {
        "r" => "Restrict",
        "c" => "Cascade",
        "n" => "SetNull",
        "d" => "SetDefault",
        _ => "NoAction",
    }
}

fn index_type(method: &str) -> Option<&'static str> {
    match method {
        "brin" => Some("Brin"),
        "gin" => Some("Gin"),
        "gist" => Some("Gist"),
        "hash" => Some("Hash"),
        "spgist" => Some("SpGist"),
        _ => None,
    }
}

/// A foreign key between two tables of the file, with its field names on both ends.
struct Relation<'a> {
    from: usize,
    to: usize,
    fk: &'a Constraint,
    forward: String,
    back: String,
}

/// `field` or, when taken, `field_ref`, `field_ref_ref`, ...
fn free_name(taken: &mut BTreeSet<String>, wanted: String) -> String {
    let mut name = wanted;
    while taken.contains(&name) {
        name.push_str("_ref");
    }
    taken.insert(name.clone());
    name
}

pub(super) fn render(catalog: &Catalog) -> Result<String, CodegenError> {
    let schema = &catalog.schema;
    let tables: Vec<&Table> = catalog.all_tables().collect();
    let own = catalog.tables.len();

    // Model names: the singular row type, prefixed with the schema on a clash.
    let mut models: Vec<String> = Vec::new();
    for t in &tables {
        let mut m = singular(&t.name);
        if models.contains(&m) {
            m = format!("{}{m}", super::camel(&t.schema));
        }
        models.push(m);
    }

    let mut taken: Vec<BTreeSet<String>> = tables
        .iter()
        .map(|t| t.columns.iter().map(|c| c.column_name.clone()).collect())
        .collect();
    let mut relations: Vec<Relation> = Vec::new();
    for (from, t) in tables.iter().enumerate() {
        for fk in t.of_kind("f") {
            let Some(to) = tables.iter().position(|target| fk.references(target)) else {
                continue;
            };
            // `invitations_invited_by_fkey` -> `invited_by`.
            let unprefixed = fk.name.strip_prefix(&format!("{}_", t.name)).unwrap_or(&fk.name);
            let stem = unprefixed.strip_suffix("_fkey").unwrap_or(unprefixed).to_owned();
            let forward = free_name(&mut taken[from], stem);
            relations.push(Relation {
                from,
                to,
                fk,
                forward,
                back: String::new(),
            });
        }
    }
    for i in 0..relations.len() {
        let (from, to) = (relations[i].from, relations[i].to);
        let several = relations.iter().filter(|r| r.from == from && r.to == to).count() > 1;
        let stem = relations[i].forward.clone();
        let wanted = if several {
            format!("{}_{stem}", tables[from].name)
        } else {
            tables[from].name.clone()
        };
        relations[i].back = free_name(&mut taken[to], wanted);
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
        "// Prisma models of the `{schema}` schema. The database holds the contract (constraints,"
    );
    let _ = writeln!(
        out,
        "// row-level security, triggers, functions): create it from schemas/{schema}/schema.sql or"
    );
    let _ = writeln!(
        out,
        "// pgstrata's migrations, not with prisma migrate or db push. CHECK constraints, INCLUDE"
    );
    let _ = writeln!(
        out,
        "// columns and row-level security, which Prisma cannot express, are `///` comments."
    );
    let _ = writeln!(out);
    let _ = writeln!(out, "generator client {{");
    let _ = writeln!(out, "  provider        = \"prisma-client\"");
    let _ = writeln!(out, "  output          = \"./generated\"");
    let _ = writeln!(out, "  previewFeatures = [\"partialIndexes\"]");
    let _ = writeln!(out, "}}");
    let _ = writeln!(out);
    let mut schemas: Vec<&str> = tables.iter().map(|t| t.schema.as_str()).collect();
    schemas.sort_unstable();
    schemas.dedup();
    let _ = writeln!(out, "datasource db {{");
    let _ = writeln!(out, "  provider = \"postgresql\"");
    let _ = writeln!(
        out,
        "  schemas  = [{}]",
        schemas.iter().map(|s| prisma_str(s)).collect::<Vec<_>>().join(", ")
    );
    let _ = writeln!(out, "}}");

    for (idx, t) in tables.iter().enumerate() {
        let mut docs: Vec<String> = Vec::new();
        if idx >= own {
            docs.push(format!(
                "`{}.{}` of the {} module (its own file is schemas/{}/schema.prisma), here because this module's foreign keys reference it.",
                t.schema, t.name, t.schema, t.schema
            ));
        }
        if let Some(c) = &t.comment {
            docs.extend(c.lines().map(str::to_owned));
        }
        docs.extend(rls_note(t));
        for k in t.of_kind("c") {
            docs.push(format!("{}: {}", k.name, k.definition));
        }
        for k in t.of_kind("x") {
            docs.push(format!("{}: {}", k.name, k.definition));
        }
        for k in t.of_kind("u").filter(|k| k.nulls_not_distinct) {
            docs.push(format!("{} is UNIQUE NULLS NOT DISTINCT.", k.name));
        }
        for i in &t.indexes {
            if !i.plain {
                return Err(CodegenError::UnsupportedIndex {
                    table: format!("{}.{}", t.schema, t.name),
                    index: i.name.clone(),
                });
            }
            if !i.include.is_empty() {
                docs.push(format!("Index {} also has INCLUDE ({}).", i.name, i.include.join(", ")));
            }
            if i.nulls_not_distinct {
                docs.push(format!("Index {} is NULLS NOT DISTINCT.", i.name));
            }
        }
        for fk in t.of_kind("f") {
            if !tables.iter().any(|target| fk.references(target)) {
                docs.push(format!("{}: {}", fk.name, fk.definition));
            }
        }

        let _ = writeln!(out);
        for d in &docs {
            let _ = writeln!(out, "/// {}", d.replace('\n', " "));
        }
        let _ = writeln!(out, "model {} {{", models[idx]);
        let pk = t.primary_key();
        let single_pk = pk.filter(|k| k.columns.len() == 1);
        for c in &t.columns {
            let (ty, native) = field_type(t, c)?;
            let mut attrs: Vec<String> = Vec::new();
            if let Some(k) = single_pk.filter(|k| k.columns[0] == c.column_name) {
                attrs.push(format!("@id(map: {})", prisma_str(&k.name)));
            }
            if !c.identity.is_empty() {
                attrs.push("@default(autoincrement())".to_owned());
            } else if let Some(e) = &c.default_expr {
                attrs.push(format!("@default(dbgenerated({}))", prisma_str(e)));
            }
            if let Some(n) = native {
                attrs.push(n);
            }
            let mut doc = String::new();
            if let Some(comment) = &c.comment {
                doc = comment.replace('\n', " ");
            }
            if c.generated == "s" {
                if !doc.is_empty() {
                    doc.push_str(". ");
                }
                let _ = write!(
                    doc,
                    "GENERATED ALWAYS AS ({}) STORED: never written.",
                    c.default_expr.as_deref().unwrap_or_default()
                );
            }
            if !doc.is_empty() {
                let _ = writeln!(out, "  /// {doc}");
            }
            let attrs = attrs.join(" ");
            let _ = writeln!(
                out,
                "  {} {ty}{}{attrs}",
                c.column_name,
                if attrs.is_empty() { "" } else { " " }
            );
        }
        for r in relations.iter().filter(|r| r.from == idx) {
            let optional = r.fk.columns.iter().any(|c| t.column(c).is_some_and(|c| !c.not_null));
            let _ = writeln!(
                out,
                "  {} {}{} @relation({}, fields: [{}], references: [{}], onDelete: {}, onUpdate: {}, map: {})",
                r.forward,
                models[r.to],
                if optional { "?" } else { "" },
                prisma_str(&r.fk.name),
                r.fk.columns.join(", "),
                r.fk.ref_columns.join(", "),
                action(&r.fk.on_delete),
                action(&r.fk.on_update),
                prisma_str(&r.fk.name)
            );
        }
        for r in relations.iter().filter(|r| r.to == idx) {
            let from = tables[r.from];
            let one = from.is_unique_set(&r.fk.columns);
            let _ = writeln!(
                out,
                "  {} {}{} @relation({})",
                r.back,
                models[r.from],
                if one { "?" } else { "[]" },
                prisma_str(&r.fk.name)
            );
        }
        let _ = writeln!(out);
        if let Some(k) = pk.filter(|k| k.columns.len() > 1) {
            let _ = writeln!(out, "  @@id([{}], map: {})", k.columns.join(", "), prisma_str(&k.name));
        }
        for k in t.of_kind("u") {
            let _ = writeln!(
                out,
                "  @@unique([{}], map: {})",
                k.columns.join(", "),
                prisma_str(&k.name)
            );
        }
        for i in &t.indexes {
            let mut args = format!("[{}], map: {}", i.columns.join(", "), prisma_str(&i.name));
            if let Some(ty) = index_type(&i.method) {
                let _ = write!(args, ", type: {ty}");
            }
            if let Some(p) = &i.predicate {
                let _ = write!(args, ", where: raw({})", prisma_str(p));
            }
            let _ = writeln!(out, "  @@{}({args})", if i.is_unique { "unique" } else { "index" });
        }
        let _ = writeln!(out, "  @@map({})", prisma_str(&t.name));
        let _ = writeln!(out, "  @@schema({})", prisma_str(&t.schema));
        let _ = writeln!(out, "}}");
    }
    Ok(out)
}
