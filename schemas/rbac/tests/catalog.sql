-- rbac: the catalog rules (D-056): tenant tables with forced RLS and tenant-led keys; global
-- catalogs read-only for the application; no SECURITY DEFINER but rbac.check (D-146), nothing executable by PUBLIC,
-- every function that runs queries pinned. One transaction, rolled back.
BEGIN;
CREATE EXTENSION IF NOT EXISTS pgtap;
\ir ../../tenancy/tests/fixtures.psql
-- Six rules per tenant table, whichever tables rbac has.
SELECT plan(11 + 6 * (SELECT count(*) FROM pg_temp.tenant_tables('rbac'))::int);

SELECT r FROM pg_temp.tenant_tables('rbac') t, LATERAL pg_temp.tenant_table_rules(t::regclass) r;

SELECT ok(has_table_privilege('pgstrata_app', t, 'SELECT')
          AND NOT has_table_privilege('pgstrata_app', t, 'INSERT')
          AND NOT has_table_privilege('pgstrata_app', t, 'UPDATE')
          AND NOT has_table_privilege('pgstrata_app', t, 'DELETE'),
          format('%s: global catalog, read-only for the application', t))
  FROM unnest(ARRAY['rbac.permissions', 'rbac.system_roles', 'rbac.system_role_permissions',
                    'rbac.system_role_parents']) t;
SELECT is(ARRAY(SELECT k.conname::text FROM pg_constraint k
                 WHERE k.contype = 'f' AND k.connamespace = 'rbac'::regnamespace
                   AND k.conrelid::regclass::text IN ('rbac.permissions', 'rbac.system_roles',
                                                      'rbac.system_role_permissions', 'rbac.system_role_parents')
                   AND k.confrelid::regclass::text NOT IN ('rbac.permissions', 'rbac.system_roles')),
          '{}'::text[], 'global catalogs reference no tenant table');

SELECT is(ARRAY(SELECT p.oid::regprocedure::text FROM pg_proc p
                 WHERE p.pronamespace = 'rbac'::regnamespace AND p.prosecdef),
          ARRAY['rbac."check"(text,uuid,text,text,text)'],
          'rbac.check alone is SECURITY DEFINER (it reads the caller''s tenant as the owner)');
SELECT is(ARRAY(SELECT p.oid::regprocedure::text FROM pg_proc p
                 WHERE p.pronamespace = 'rbac'::regnamespace
                   AND EXISTS (SELECT 1 FROM aclexplode(coalesce(p.proacl, acldefault('f', p.proowner))) x
                                WHERE x.grantee = 0 AND x.privilege_type = 'EXECUTE')
                 ORDER BY 1),
          '{}'::text[], 'no rbac function is executable by PUBLIC');
SELECT is(pg_temp.unpinned('rbac'), '{}'::text[], 'every rbac function that runs queries pins search_path');
SELECT is(ARRAY(SELECT t.tgrelid::regclass::text || ' ' || t.tgname FROM pg_trigger t
                 WHERE t.tgfoid IN (SELECT p.oid FROM pg_proc p WHERE p.pronamespace = 'rbac'::regnamespace
                                     AND p.proname LIKE '%guard')
                   AND (t.tgtype & 2) = 0 ORDER BY 1),
          '{}'::text[], 'every rbac guard runs BEFORE the row changes');
SELECT is(ARRAY(SELECT c.relname::text FROM pg_class c
                 WHERE c.relnamespace = 'rbac'::regnamespace AND c.relkind = 'r'
                   AND c.relname IN ('roles', 'role_permissions', 'role_parents', 'group_members', 'grants')
                   AND NOT EXISTS (SELECT 1 FROM pg_trigger t JOIN pg_proc p ON p.oid = t.tgfoid
                                    WHERE t.tgrelid = c.oid AND p.proname LIKE '%guard' AND NOT t.tgisinternal)
                 ORDER BY 1),
          '{}'::text[], 'every authorization table has a guard');
SELECT ok(EXISTS (SELECT 1 FROM pg_trigger t JOIN pg_proc p ON p.oid = t.tgfoid
                   WHERE t.tgrelid = 'tenancy.memberships'::regclass AND p.pronamespace = 'rbac'::regnamespace),
          'tenancy.memberships is guarded by rbac');

SELECT * FROM finish();
ROLLBACK;
