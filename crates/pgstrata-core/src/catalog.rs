//! A canonical text rendering of what a set of schemas contains.
//!
//! Two databases hold the same schema exactly when their snapshots are equal. Tests use it to
//! prove that `schema.sql` loaded with psql equals the migrations, and that up/down/up leaves
//! nothing behind. Names are schema-qualified and lines are sorted, so the order in which
//! objects were created does not matter, but every definition does.

use sqlx::PgConnection;

/// One line per object: relations with their RLS flags and grants, columns, constraints,
/// indexes, policies, triggers, functions with their grants, views, sequences, types and
/// comments. `schemas` are matched by name.
pub const SNAPSHOT_SQL: &str = r#"
WITH ns AS (
    SELECT oid, nspname FROM pg_catalog.pg_namespace WHERE nspname = ANY($1)
)
SELECT line FROM (
    SELECT format('schema %s owner-acl=%s comment=%s', n.nspname, n.nspacl::text,
                  obj_description(n.oid, 'pg_namespace')) AS line
      FROM pg_catalog.pg_namespace n JOIN ns ON ns.oid = n.oid
    UNION ALL
    SELECT format('relation %s.%s kind=%s rls=%s force=%s options=%s acl=%s comment=%s',
                  ns.nspname, c.relname, c.relkind, c.relrowsecurity, c.relforcerowsecurity,
                  c.reloptions::text, c.relacl::text, obj_description(c.oid, 'pg_class'))
      FROM pg_catalog.pg_class c JOIN ns ON ns.oid = c.relnamespace
    UNION ALL
    SELECT format('column %s.%s #%s %s %s notnull=%s default=%s identity=%s generated=%s comment=%s',
                  ns.nspname, c.relname, a.attnum, a.attname, format_type(a.atttypid, a.atttypmod),
                  a.attnotnull, pg_get_expr(d.adbin, d.adrelid), a.attidentity, a.attgenerated,
                  col_description(c.oid, a.attnum))
      FROM pg_catalog.pg_attribute a
      JOIN pg_catalog.pg_class c ON c.oid = a.attrelid
      JOIN ns ON ns.oid = c.relnamespace
      LEFT JOIN pg_catalog.pg_attrdef d ON d.adrelid = a.attrelid AND d.adnum = a.attnum
     WHERE a.attnum > 0 AND NOT a.attisdropped AND c.relkind IN ('r', 'p', 'v', 'm', 'f')
    UNION ALL
    SELECT format('constraint %s.%s %s %s', ns.nspname, c.relname, k.conname, pg_get_constraintdef(k.oid))
      FROM pg_catalog.pg_constraint k
      JOIN pg_catalog.pg_class c ON c.oid = k.conrelid
      JOIN ns ON ns.oid = c.relnamespace
    UNION ALL
    SELECT format('index %s', pg_get_indexdef(i.indexrelid))
      FROM pg_catalog.pg_index i
      JOIN pg_catalog.pg_class c ON c.oid = i.indexrelid
      JOIN ns ON ns.oid = c.relnamespace
    UNION ALL
    SELECT format('policy %s.%s %s cmd=%s permissive=%s roles=%s using=%s check=%s',
                  p.schemaname, p.tablename, p.policyname, p.cmd, p.permissive, p.roles::text, p.qual, p.with_check)
      FROM pg_catalog.pg_policies p JOIN ns ON ns.nspname = p.schemaname
    UNION ALL
    SELECT format('trigger %s', pg_get_triggerdef(t.oid))
      FROM pg_catalog.pg_trigger t
      JOIN pg_catalog.pg_class c ON c.oid = t.tgrelid
      JOIN ns ON ns.oid = c.relnamespace
     WHERE NOT t.tgisinternal
    UNION ALL
    SELECT format('function %s acl=%s comment=%s def=%s', p.oid::regprocedure, p.proacl::text,
                  obj_description(p.oid, 'pg_proc'),
                  CASE WHEN p.prokind IN ('f', 'p', 'w') THEN pg_get_functiondef(p.oid) END)
      FROM pg_catalog.pg_proc p JOIN ns ON ns.oid = p.pronamespace
    UNION ALL
    SELECT format('view %s.%s %s', ns.nspname, c.relname, pg_get_viewdef(c.oid))
      FROM pg_catalog.pg_class c JOIN ns ON ns.oid = c.relnamespace
     WHERE c.relkind IN ('v', 'm')
    UNION ALL
    SELECT format('type %s.%s kind=%s labels=%s', ns.nspname, t.typname, t.typtype,
                  (SELECT string_agg(e.enumlabel, ',' ORDER BY e.enumsortorder)
                     FROM pg_catalog.pg_enum e WHERE e.enumtypid = t.oid))
      FROM pg_catalog.pg_type t JOIN ns ON ns.oid = t.typnamespace
     WHERE t.typtype IN ('e', 'd', 'c') AND NOT EXISTS (
           SELECT 1 FROM pg_catalog.pg_class c WHERE c.oid = t.typrelid AND c.relkind <> 'c')
) lines
ORDER BY line
"#;

/// The snapshot of `schemas`, one object per line. Empty when none of them exists.
pub async fn snapshot(conn: &mut PgConnection, schemas: &[&str]) -> Result<String, sqlx::Error> {
    let lines: Vec<String> = sqlx::query_scalar(SNAPSHOT_SQL).bind(schemas).fetch_all(conn).await?;
    Ok(lines.join("\n"))
}

/// Every user-visible object of the database outside the system schemas, by kind and name.
/// Used to prove that removing every module leaves nothing behind.
pub async fn user_objects(conn: &mut PgConnection) -> Result<Vec<String>, sqlx::Error> {
    sqlx::query_scalar(
        "SELECT 'schema ' || nspname FROM pg_catalog.pg_namespace
          WHERE nspname NOT IN ('pg_catalog', 'information_schema', 'public', 'pg_toast')
            AND nspname NOT LIKE 'pg\\_temp\\_%' AND nspname NOT LIKE 'pg\\_toast\\_temp\\_%'
         UNION ALL
         SELECT 'relation ' || c.oid::regclass::text FROM pg_catalog.pg_class c
          WHERE c.relnamespace NOT IN (SELECT oid FROM pg_catalog.pg_namespace
                                        WHERE nspname IN ('pg_catalog', 'information_schema', 'pg_toast'))
            AND c.relpersistence <> 't'
         UNION ALL
         SELECT 'function ' || p.oid::regprocedure::text FROM pg_catalog.pg_proc p
          WHERE p.pronamespace NOT IN (SELECT oid FROM pg_catalog.pg_namespace
                                        WHERE nspname IN ('pg_catalog', 'information_schema'))
         UNION ALL
         SELECT 'type ' || t.oid::regtype::text FROM pg_catalog.pg_type t
          WHERE t.typnamespace NOT IN (SELECT oid FROM pg_catalog.pg_namespace
                                        WHERE nspname IN ('pg_catalog', 'information_schema', 'pg_toast'))
         ORDER BY 1",
    )
    .fetch_all(conn)
    .await
}
