-- events: the catalog rules: forced RLS and tenant-led keys on every tenant table, no DEFAULT
-- partition, a partition for this month and the months ahead, UPDATE and TRUNCATE refused on
-- the table and every partition, the BRIN and tenant-led indexes, every function pinned,
-- definers closed to PUBLIC, no advisory locks. One transaction, rolled back.
BEGIN;
CREATE EXTENSION IF NOT EXISTS pgtap;
\ir ../../tenancy/tests/fixtures.psql
SELECT plan(10 + 6 * (SELECT count(*) FROM pg_temp.tenant_tables('events'))::int);

SELECT r FROM pg_temp.tenant_tables('events') t, LATERAL pg_temp.tenant_table_rules(t::regclass) r;
SELECT * FROM pg_temp.definer_rules('events');
SELECT is(pg_temp.unpinned('events'), '{}'::text[], 'every events function pins search_path');
SELECT is(ARRAY(SELECT p.oid::regprocedure::text FROM pg_proc p
                 WHERE p.pronamespace = 'events'::regnamespace AND p.prosrc ~* 'pg_(try_)?advisory'),
          '{}'::text[], 'events takes no advisory lock');
SELECT is((SELECT pt.partdefid FROM pg_partitioned_table pt WHERE pt.partrelid = 'events.events'::regclass),
          0::oid, 'events.events has no DEFAULT partition');
SELECT ok(EXISTS (SELECT 1 FROM events.partitions() p WHERE p.lower_bound <= now() AND p.upper_bound > now())
          AND (SELECT count(*) FROM events.partitions() p WHERE p.lower_bound > now()) >= 2,
          'partitions hold this month and at least two ahead (writes fail without one: schedule events.maintain)');
SELECT ok(EXISTS (SELECT 1 FROM events.partitions() p
                   WHERE p.lower_bound <= now() - make_interval(days => (SELECT s.accept_late_days FROM events.settings s))),
          'a partition holds the oldest late event still accepted');
SELECT is(ARRAY(SELECT c.oid::regclass::text FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid
                 WHERE i.inhparent = 'events.events'::regclass
                   AND NOT EXISTS (SELECT 1 FROM pg_trigger g WHERE g.tgrelid = c.oid AND NOT g.tgisinternal
                                      AND (g.tgtype & 32) = 32)
                 ORDER BY 1),
          '{}'::text[], 'every partition refuses TRUNCATE (a partition can be truncated on its own)');
SELECT is((SELECT am.amname::text FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid JOIN pg_am am ON am.oid = c.relam
            WHERE c.oid = 'events.events_occurred_brin'::regclass), 'brin',
          'scans across tenants by time have a BRIN index');
SELECT ok(has_function_privilege('pgstrata_app', 'events.erase_actor(text)', 'EXECUTE')
          AND NOT has_function_privilege('pgstrata_app', 'events.purge(integer, timestamptz)', 'EXECUTE')
          AND NOT has_function_privilege('pgstrata_app', 'events.maintain(integer, integer, timestamptz)', 'EXECUTE')
          AND NOT has_function_privilege('pgstrata_app', 'events.after_insert()', 'EXECUTE'),
          'the application erases its actors; retention and maintenance belong to the worker');

SELECT * FROM finish();
ROLLBACK;
