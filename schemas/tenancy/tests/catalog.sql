-- tenancy: the catalog rules behind the isolation (design invariants): forced RLS and
-- tenant-led keys on every tenant table, pinned SECURITY DEFINER functions no one else may call,
-- roles without privileges that would bypass RLS, operator fields out of the request path's
-- reach. One transaction, rolled back.
BEGIN;
CREATE EXTENSION IF NOT EXISTS pgtap;
SELECT plan(26);
\ir fixtures.psql

SELECT * FROM pg_temp.tenant_table_rules('tenancy.memberships');
SELECT * FROM pg_temp.tenant_table_rules('tenancy.invitations');

-- The root and the global identities: RLS on and forced as well.
SELECT ok(relrowsecurity AND relforcerowsecurity, 'tenancy.tenants: row-level security enabled and forced')
  FROM pg_class WHERE oid = 'tenancy.tenants'::regclass;
SELECT ok(relrowsecurity AND relforcerowsecurity, 'tenancy.users: row-level security enabled and forced')
  FROM pg_class WHERE oid = 'tenancy.users'::regclass;
SELECT is(ARRAY(SELECT c.oid::regclass::text FROM pg_class c
                 WHERE c.relnamespace = 'tenancy'::regnamespace AND c.relkind IN ('r', 'p')
                   AND NOT (c.relrowsecurity AND c.relforcerowsecurity) ORDER BY 1),
          '{}'::text[], 'every tenancy table has forced row-level security');

SELECT * FROM pg_temp.definer_rules('tenancy');

-- The shared roles cannot bypass RLS and own nothing.
SELECT is(ARRAY(SELECT rolname::text FROM pg_roles
                 WHERE rolname IN ('pgstrata_app', 'pgstrata_worker', 'pgstrata_operator')
                   AND (rolsuper OR rolbypassrls OR rolcreaterole OR rolcreatedb) ORDER BY 1),
          '{}'::text[], 'pgstrata_app, pgstrata_worker and pgstrata_operator are not superusers and do not bypass RLS');
SELECT is(ARRAY(SELECT c.oid::regclass::text FROM pg_class c
                 WHERE c.relnamespace = 'tenancy'::regnamespace
                   AND pg_get_userbyid(c.relowner) IN ('pgstrata_app', 'pgstrata_worker', 'pgstrata_operator')),
          '{}'::text[], 'no pgstrata role owns a tenancy relation (owners bypass unforced RLS)');

-- Operator fields: only pgstrata_operator changes them.
SELECT is(ARRAY(SELECT a.attname::text FROM pg_attribute a
                 WHERE a.attrelid = 'tenancy.tenants'::regclass AND a.attnum > 0 AND NOT a.attisdropped
                   AND col_description(a.attrelid, a.attnum) LIKE 'operator field%'
                   AND has_column_privilege('pgstrata_app', a.attrelid, a.attnum, 'UPDATE')),
          '{}'::text[], 'pgstrata_app may update no operator field');
SELECT ok((SELECT count(*) FROM pg_attribute a
            WHERE a.attrelid = 'tenancy.tenants'::regclass AND col_description(a.attrelid, a.attnum) LIKE 'operator field%') >= 4,
          'status, settings, domain and deleted_at are marked operator fields');
SELECT ok(NOT has_table_privilege('pgstrata_app', 'tenancy.tenants', 'DELETE')
          AND NOT has_table_privilege('pgstrata_app', 'tenancy.users', 'DELETE'),
          'the application deletes neither tenants nor users');
SELECT ok(NOT has_table_privilege('pgstrata_operator', 'tenancy.memberships', 'SELECT'),
          'the operator sees nothing inside a tenant');

-- The context helpers every policy reads are callable by every pgstrata role.
SELECT ok(has_function_privilege(r, 'tenancy.current_tenant_id()', 'EXECUTE')
          AND has_function_privilege(r, 'tenancy.current_actor_id()', 'EXECUTE'),
          format('%s may call current_tenant_id() and current_actor_id()', r))
  FROM unnest(ARRAY['pgstrata_app', 'pgstrata_worker', 'pgstrata_operator']) r;

SELECT * FROM finish();
ROLLBACK;
