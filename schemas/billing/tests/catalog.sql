-- billing: the catalog rules (D-025 to D-046): forced RLS and tenant-led keys on the mirror,
-- global tables that never reference tenant tables, SECURITY DEFINER entry points pinned and
-- executable by the sync role only, every other function pinned but the inlined one-expression
-- helpers, no advisory locks. One transaction, rolled back.
BEGIN;
CREATE EXTENSION IF NOT EXISTS pgtap;
\ir ../../tenancy/tests/fixtures.psql
-- Six rules per tenant table, whichever tables billing has.
SELECT plan(7 + 6 * (SELECT count(*) FROM pg_temp.tenant_tables('billing'))::int);

SELECT r FROM pg_temp.tenant_tables('billing') t, LATERAL pg_temp.tenant_table_rules(t::regclass) r;
SELECT * FROM pg_temp.definer_rules('billing');
SELECT is(ARRAY(SELECT p.oid::regprocedure::text FROM pg_proc p
                 WHERE p.pronamespace = 'billing'::regnamespace AND p.prosecdef
                   AND (has_function_privilege('pgstrata_app', p.oid, 'EXECUTE')
                        OR NOT has_function_privilege('pgstrata_billing_sync', p.oid, 'EXECUTE'))
                 ORDER BY 1),
          '{}'::text[], 'every billing SECURITY DEFINER function is the sync role''s, none the application''s');
SELECT is(pg_temp.unpinned('billing'), '{}'::text[], 'every billing function but the inlined helpers pins search_path');
SELECT is(ARRAY(SELECT p.oid::regprocedure::text FROM pg_proc p
                 WHERE p.pronamespace = 'billing'::regnamespace AND p.prosrc ~* 'pg_(try_)?advisory'),
          '{}'::text[], 'billing takes no advisory lock');
SELECT is(ARRAY(SELECT k.conname::text FROM pg_constraint k JOIN pg_class c ON c.oid = k.conrelid
                 WHERE k.contype = 'f' AND c.relnamespace = 'billing'::regnamespace
                   AND c.oid::regclass::text NOT IN (SELECT pg_temp.tenant_tables('billing'))
                   AND (k.confrelid::regclass::text IN (SELECT pg_temp.tenant_tables('billing'))
                        OR k.confrelid = 'tenancy.tenants'::regclass)
                 ORDER BY 1),
          '{}'::text[], 'global billing tables reference no tenant table');
SELECT is(ARRAY(SELECT c.oid::regclass::text FROM pg_class c
                 WHERE c.relnamespace = 'billing'::regnamespace AND c.relkind = 'r'
                   AND (has_table_privilege('pgstrata_app', c.oid, 'INSERT')
                        OR has_table_privilege('pgstrata_app', c.oid, 'UPDATE')
                        OR has_table_privilege('pgstrata_app', c.oid, 'DELETE'))
                 ORDER BY 1),
          '{}'::text[], 'the application may insert, update or delete no billing table');

SELECT * FROM finish();
ROLLBACK;
