-- webhooks: the catalog rules: forced RLS and tenant-led keys on every tenant table, every
-- function pinned, definers closed to PUBLIC, no advisory locks, the dispatcher's functions
-- closed to the request path and the request path's to the dispatcher, and the claim's indexes.
-- One transaction, rolled back.
BEGIN;
CREATE EXTENSION IF NOT EXISTS pgtap;
\ir ../../tenancy/tests/fixtures.psql
SELECT plan(12 + 6 * (SELECT count(*) FROM pg_temp.tenant_tables('webhooks'))::int);

SELECT r FROM pg_temp.tenant_tables('webhooks') t, LATERAL pg_temp.tenant_table_rules(t::regclass) r;
SELECT * FROM pg_temp.definer_rules('webhooks');
SELECT is(pg_temp.unpinned('webhooks'), '{}'::text[], 'every webhooks function pins search_path');
SELECT is(ARRAY(SELECT p.oid::regprocedure::text FROM pg_proc p
                 WHERE p.pronamespace = 'webhooks'::regnamespace AND p.prosrc ~* 'pg_(try_)?advisory'),
          '{}'::text[], 'webhooks takes no advisory lock (claims lock rows with SKIP LOCKED)');
SELECT is(ARRAY(SELECT p.proname::text FROM pg_proc p
                 WHERE p.pronamespace = 'webhooks'::regnamespace AND p.proname ~ '^(claim|complete|prune)'
                   AND has_function_privilege('pgstrata_app', p.oid, 'EXECUTE') ORDER BY 1),
          '{}'::text[], 'the request path executes none of the dispatcher''s functions');
SELECT is(ARRAY(SELECT p.proname::text FROM pg_proc p
                 WHERE p.pronamespace = 'webhooks'::regnamespace
                   AND p.proname IN ('send', 'rotate_secret', 'replay', 'replay_failed', 'erase')
                   AND has_function_privilege('pgstrata_worker', p.oid, 'EXECUTE') ORDER BY 1),
          '{}'::text[], 'the dispatcher executes none of the request path''s functions');
SELECT is(ARRAY(SELECT p.proname::text FROM pg_proc p
                 WHERE p.pronamespace = 'webhooks'::regnamespace
                   AND EXISTS (SELECT 1 FROM aclexplode(coalesce(p.proacl, acldefault('f', p.proowner))) x
                                WHERE x.grantee = 0 AND x.privilege_type = 'EXECUTE') ORDER BY 1),
          '{}'::text[], 'no webhooks function is executable by PUBLIC');
SELECT is((SELECT string_agg(a.attname, ',' ORDER BY k.n)
             FROM pg_index i CROSS JOIN LATERAL unnest(i.indkey) WITH ORDINALITY k(attnum, n)
             JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = k.attnum
            WHERE i.indexrelid = 'webhooks.deliveries_due_idx'::regclass),
          'tenant_id,endpoint_id,next_attempt_at,id', 'the claim reads an endpoint''s due deliveries in time order');
SELECT ok((SELECT pg_get_expr(i.indpred, i.indrelid) FROM pg_index i
            WHERE i.indexrelid = 'webhooks.deliveries_running_idx'::regclass) ~ 'running',
          'the concurrency cap counts running deliveries from their own partial index');
SELECT is((SELECT string_agg(a.attname, ',' ORDER BY k.n)
             FROM pg_index i CROSS JOIN LATERAL unnest(i.indkey) WITH ORDINALITY k(attnum, n)
             JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = k.attnum
            WHERE i.indexrelid = 'webhooks.deliveries_running_idx'::regclass),
          'tenant_id,endpoint_id,lane', 'a lane''s running count reads the running index alone');
SELECT is(ARRAY(SELECT webhooks.lane_count(m, f, r) FROM (VALUES (8, false, NULL::integer), (64, false, NULL), (100, false, NULL),
                                                                 (1, false, NULL), (64, true, NULL), (64, false, 50)) v(m, f, r)),
          ARRAY[1, 8, 8, 1, 1, 1], 'lanes: one per 8 of the cap, at most 8; one for FIFO and rate-limited endpoints');
SELECT is((SELECT count(*)::int FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
            WHERE n.nspname = 'webhooks' AND c.relkind = 'r'
              AND coalesce(obj_description(c.oid, 'pg_class'), '') !~ '^citus: (distributed|reference|local)\.'),
          0, 'every webhooks table states its Citus kind');
SELECT * FROM finish();
ROLLBACK;
