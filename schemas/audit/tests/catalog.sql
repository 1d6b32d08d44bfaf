-- audit: the catalog rules: forced RLS and tenant-led keys on the log and its chain, the
-- append-only triggers on the log and on every partition, a partition for this month, every
-- function pinned, definers closed to PUBLIC, no advisory locks. One transaction, rolled back.
BEGIN;
CREATE EXTENSION IF NOT EXISTS pgtap;
\ir ../../tenancy/tests/fixtures.psql
-- Six rules per tenant table, whichever tables audit has.
SELECT plan(8 + 6 * (SELECT count(*) FROM pg_temp.tenant_tables('audit'))::int);

SELECT r FROM pg_temp.tenant_tables('audit') t, LATERAL pg_temp.tenant_table_rules(t::regclass) r;
SELECT * FROM pg_temp.definer_rules('audit');
SELECT is(pg_temp.unpinned('audit'), '{}'::text[], 'every audit function pins search_path');
SELECT is(ARRAY(SELECT p.oid::regprocedure::text FROM pg_proc p
                 WHERE p.pronamespace = 'audit'::regnamespace AND p.prosrc ~* 'pg_(try_)?advisory'),
          '{}'::text[], 'audit takes no advisory lock');
SELECT is(ARRAY(SELECT t FROM unnest(ARRAY['audit.records', 'audit.seals']) t
                 WHERE NOT EXISTS (SELECT 1 FROM pg_trigger g WHERE g.tgrelid = t::regclass AND NOT g.tgisinternal
                                      AND (g.tgtype & 1) = 1 AND (g.tgtype & 2) = 2 AND (g.tgtype & 24) = 24)
                    OR NOT EXISTS (SELECT 1 FROM pg_trigger g WHERE g.tgrelid = t::regclass AND NOT g.tgisinternal
                                      AND (g.tgtype & 32) = 32)),
          '{}'::text[], 'records and seals refuse UPDATE, DELETE and TRUNCATE by trigger');
SELECT is(ARRAY(SELECT c.oid::regclass::text FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid
                 WHERE i.inhparent = 'audit.records'::regclass
                   AND NOT EXISTS (SELECT 1 FROM pg_trigger g WHERE g.tgrelid = c.oid AND NOT g.tgisinternal
                                      AND (g.tgtype & 32) = 32)
                 ORDER BY 1),
          '{}'::text[], 'every partition refuses TRUNCATE (a partition can be truncated on its own)');
SELECT ok(EXISTS (SELECT 1 FROM audit.partitions() p WHERE p.lower_bound <= now() AND p.upper_bound > now()),
          'a partition holds this month (writes fail without one: schedule audit.maintain)');
SELECT ok(has_function_privilege('pgstrata_app', 'audit.record(text, text, text, jsonb)', 'EXECUTE')
          AND NOT has_function_privilege('pgstrata_app', 'audit.capture()', 'EXECUTE'),
          'the application records events but cannot run the capture trigger itself');

SELECT * FROM finish();
ROLLBACK;
