-- outbox: the catalog rules: forced RLS and tenant-led keys on every tenant table, the relay's
-- index, every function pinned, definers closed to PUBLIC, no advisory locks, and the grants
-- that keep the relay's functions from the request path. One transaction, rolled back.
BEGIN;
CREATE EXTENSION IF NOT EXISTS pgtap;
\ir ../../tenancy/tests/fixtures.psql
SELECT plan(5 + 6 * (SELECT count(*) FROM pg_temp.tenant_tables('outbox'))::int);

SELECT r FROM pg_temp.tenant_tables('outbox') t, LATERAL pg_temp.tenant_table_rules(t::regclass) r;
SELECT * FROM pg_temp.definer_rules('outbox');
SELECT is(pg_temp.unpinned('outbox'), '{}'::text[], 'every outbox function pins search_path');
SELECT is(ARRAY(SELECT p.oid::regprocedure::text FROM pg_proc p
                 WHERE p.pronamespace = 'outbox'::regnamespace AND p.prosrc ~* 'pg_(try_)?advisory'),
          '{}'::text[], 'outbox takes no advisory lock (relays hold partitions by checkpoint rows)');
SELECT is((SELECT string_agg(a.attname, ',' ORDER BY k.n)
             FROM pg_index i CROSS JOIN LATERAL unnest(i.indkey) WITH ORDINALITY k(attnum, n)
             JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = k.attnum
            WHERE i.indexrelid = 'outbox.messages_relay_idx'::regclass),
          'partition,txid,id', 'the relay reads one partition in (txid, id) order from its index');
SELECT * FROM finish();
ROLLBACK;
