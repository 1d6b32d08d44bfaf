-- eventstore: the catalog rules: forced RLS and tenant-led keys on every tenant table, every
-- function pinned, definers closed to PUBLIC, appends only through the definer functions, the
-- subscriptions' indexes, no advisory locks. One transaction, rolled back.
BEGIN;
CREATE EXTENSION IF NOT EXISTS pgtap;
\ir ../../tenancy/tests/fixtures.psql
SELECT plan(7 + 6 * (SELECT count(*) FROM pg_temp.tenant_tables('eventstore'))::int);

SELECT r FROM pg_temp.tenant_tables('eventstore') t, LATERAL pg_temp.tenant_table_rules(t::regclass) r;
SELECT * FROM pg_temp.definer_rules('eventstore');
SELECT is(pg_temp.unpinned('eventstore'), '{}'::text[], 'every eventstore function pins search_path');
SELECT is(ARRAY(SELECT p.oid::regprocedure::text FROM pg_proc p
                 WHERE p.pronamespace = 'eventstore'::regnamespace AND p.prosrc ~* 'pg_(try_)?advisory'),
          '{}'::text[], 'eventstore takes no advisory lock');
SELECT ok(NOT has_table_privilege('pgstrata_app', 'eventstore.events', 'INSERT')
          AND NOT has_table_privilege('pgstrata_app', 'eventstore.streams', 'INSERT')
          AND NOT has_table_privilege('pgstrata_app', 'eventstore.streams', 'UPDATE')
          AND has_function_privilege('pgstrata_app', 'eventstore.append(text, bigint, jsonb)', 'EXECUTE')
          AND NOT has_function_privilege('pgstrata_app', 'eventstore.append_any(text, jsonb)', 'EXECUTE')
          AND has_function_privilege('pgstrata_operator', 'eventstore.append_any(text, jsonb)', 'EXECUTE')
          AND NOT has_function_privilege('pgstrata_app', 'eventstore.append_checked(text, bigint, jsonb)', 'EXECUTE'),
          'the request path appends only through eventstore.append, with an expected version; any version is the operator''s');
SELECT is((SELECT string_agg(a.attname, ', ' ORDER BY k.n) FROM pg_index i
             CROSS JOIN LATERAL unnest(i.indkey) WITH ORDINALITY k(attnum, n)
             JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = k.attnum
            WHERE i.indexrelid = 'eventstore.events_txid_idx'::regclass),
          'txid, position', 'subscriptions read (txid, position) from an index');
SELECT is((SELECT string_agg(a.attname, ', ' ORDER BY k.n) FROM pg_index i
             CROSS JOIN LATERAL unnest(i.indkey) WITH ORDINALITY k(attnum, n)
             JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = k.attnum
            WHERE i.indexrelid = 'eventstore.events_stream_version_key'::regclass AND i.indisunique),
          'tenant_id, stream, version', 'a version is taken once per stream');

SELECT * FROM finish();
ROLLBACK;
