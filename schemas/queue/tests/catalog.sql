-- queue: the catalog rules (D-040 to D-043): forced RLS with a policy per role, no SECURITY
-- DEFINER, nothing executable by PUBLIC, every function pinned, no advisory locks, the worker's
-- operations closed to the request path. One transaction, rolled back.
BEGIN;
CREATE EXTENSION IF NOT EXISTS pgtap;
SELECT plan(12);
\ir ../../tenancy/tests/fixtures.psql

SELECT ok(relrowsecurity AND relforcerowsecurity, 'queue.jobs: row-level security enabled and forced')
  FROM pg_class WHERE oid = 'queue.jobs'::regclass;
SELECT ok(obj_description('queue.jobs'::regclass, 'pg_class') LIKE 'citus: local%',
          'queue.jobs states its Citus kind (local: claimed across tenants)');
SELECT ok(EXISTS (SELECT 1 FROM pg_policies WHERE schemaname = 'queue' AND tablename = 'jobs'
                     AND roles = '{pgstrata_app}' AND cmd = 'SELECT' AND qual ~ 'tenant_id' AND qual ~ 'tenancy\.'),
          'queue.jobs: the application reads by the tenant context');
SELECT is(ARRAY(SELECT policyname::text FROM pg_policies WHERE schemaname = 'queue' AND tablename = 'jobs'
                   AND permissive = 'PERMISSIVE' AND 'public' = ANY (roles)),
          '{}'::text[], 'queue.jobs: no permissive policy for PUBLIC (one per role)');
SELECT ok(NOT has_table_privilege('pgstrata_app', 'queue.periodic_runs', 'SELECT'), 'the application cannot see cron runs');
SELECT ok(NOT has_table_privilege('pgstrata_app', 'queue.jobs', 'DELETE'), 'the application cannot delete jobs');

SELECT is(ARRAY(SELECT p.oid::regprocedure::text FROM pg_proc p
                 WHERE p.pronamespace = 'queue'::regnamespace AND p.prosecdef),
          '{}'::text[], 'no queue function is SECURITY DEFINER');
SELECT is(ARRAY(SELECT p.oid::regprocedure::text FROM pg_proc p
                 WHERE p.pronamespace = 'queue'::regnamespace
                   AND EXISTS (SELECT 1 FROM aclexplode(coalesce(p.proacl, acldefault('f', p.proowner))) x
                                WHERE x.grantee = 0 AND x.privilege_type = 'EXECUTE')
                 ORDER BY 1),
          '{}'::text[], 'no queue function is executable by PUBLIC');
SELECT is(pg_temp.unpinned('queue'), '{}'::text[], 'every queue function pins search_path');
SELECT is(ARRAY(SELECT p.oid::regprocedure::text FROM pg_proc p
                 WHERE p.pronamespace = 'queue'::regnamespace AND p.prosrc ~* 'pg_(try_)?advisory'),
          '{}'::text[], 'the queue takes no advisory lock (any role could take the same key)');
SELECT is(ARRAY(SELECT p.proname::text FROM pg_proc p
                 WHERE p.pronamespace = 'queue'::regnamespace
                   AND p.proname IN ('claim', 'complete', 'complete_many', 'fail', 'heartbeat', 'heartbeat_many',
                                     'release', 'rescue', 'promote_due', 'prune', 'enqueue_periodic')
                   AND has_function_privilege('pgstrata_app', p.oid, 'EXECUTE')
                 ORDER BY 1),
          '{}'::text[], 'the request path may run none of the worker''s operations');
SELECT ok(has_function_privilege('pgstrata_worker', 'queue.claim(text, integer, text, interval)', 'EXECUTE'),
          'the worker may claim');

SELECT * FROM finish();
ROLLBACK;
