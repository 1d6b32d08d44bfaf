-- queue: the request path (pgstrata_app) sees, cancels and retries only its own tenant's jobs
-- that no worker holds; it cannot enqueue for another tenant or for none, and cannot run, rescue
-- or prune anything (SECURITY.md, queue). One transaction, rolled back.
BEGIN;
CREATE EXTENSION IF NOT EXISTS pgtap;
SELECT plan(30);
\ir ../../tenancy/tests/fixtures.psql
\ir fixtures.psql

SET LOCAL ROLE pgstrata_app;
SELECT FROM pg_temp.ctx('b0000000-0000-4000-8000-000000000000', 'b1000000-0000-4000-8000-000000000000');
SELECT is(ARRAY(SELECT kind FROM queue.jobs WHERE queue = 'pgtap'), ARRAY['tap.b'], 'B sees its own jobs only');
SELECT is((SELECT count(*) FROM queue.jobs WHERE tenant_id IS NULL), 0::bigint, 'B sees no system job');
SELECT is(queue.cancel(pg_temp.id('a')), false, 'B cannot cancel A''s job');
SELECT is(pg_temp.outcome(format('UPDATE queue.jobs SET run_at = now() WHERE id = %s', pg_temp.id('a'))), '0 rows',
          'B cannot update A''s job');
SELECT is(pg_temp.outcome(format('DELETE FROM queue.jobs WHERE id = %s', pg_temp.id('a'))), '42501', 'B cannot delete A''s job');
SELECT is(pg_temp.outcome('TRUNCATE queue.jobs'), '42501', 'B cannot truncate the jobs');
SELECT is(pg_temp.outcome($$SELECT queue.enqueue('tap.x', '{}', 'pgtap', 0::smallint, NULL, 20, NULL,
                                                 'a0000000-0000-4000-8000-000000000000')$$),
          '42501', 'B cannot enqueue a job that runs in A');
SELECT is(pg_temp.outcome($$INSERT INTO queue.jobs (queue, kind, tenant_id) VALUES ('pgtap', 'tap.x', 'a0000000-0000-4000-8000-000000000000')$$),
          '42501', 'B cannot insert a job for A');
SELECT is(pg_temp.outcome($$INSERT INTO queue.jobs (queue, kind, tenant_id) VALUES ('pgtap', 'tap.x', NULL)$$),
          '42501', 'B cannot insert a system job');
SELECT is(pg_temp.outcome($$INSERT INTO queue.jobs (queue, kind, tenant_id, state) VALUES ('pgtap', 'tap.x', 'b0000000-0000-4000-8000-000000000000', 'completed')$$),
          '42501', 'B cannot insert a finished job');
SELECT is(pg_temp.outcome($$INSERT INTO queue.jobs (queue, kind, tenant_id, state, lease_expires_at)
                            VALUES ('pgtap', 'tap.x', 'b0000000-0000-4000-8000-000000000000', 'running', now() + interval '1 hour')$$),
          '42501', 'B cannot insert a claimed job');
SELECT isnt(queue.enqueue('tap.b2', '{}', 'pgtap', 0::smallint, NULL, 20, 'nightly'), pg_temp.id('a_unique'),
            'a unique key is per tenant and never returns another tenant''s job');
SELECT is((SELECT tenant_id FROM queue.jobs WHERE kind = 'tap.b2'), 'b0000000-0000-4000-8000-000000000000'::uuid,
          'a job enqueued by B runs in B');

-- No tenant, or an empty one: nothing visible, nothing enqueued.
SELECT FROM pg_temp.ctx(NULL, NULL);
SELECT is((SELECT count(*) FROM queue.jobs), 0::bigint, 'no tenant in context sees no job');
SELECT is(pg_temp.outcome($$SELECT queue.enqueue('tap.x', '{}', 'pgtap')$$), '42501', 'no tenant in context enqueues nothing');
SELECT FROM set_config('app.tenant_id', '', true);
SELECT is((SELECT count(*) FROM queue.jobs), 0::bigint, 'an empty tenant setting sees no job');

-- A's own jobs: cancel and retry unheld ones; never a held one, never another tenant, never
-- a worker's columns.
SELECT FROM pg_temp.ctx('a0000000-0000-4000-8000-000000000000', 'a1000000-0000-4000-8000-000000000000');
SELECT is(queue.cancel(pg_temp.id('held')), false, 'A cannot cancel a job a worker holds');
SELECT is(pg_temp.outcome(format('UPDATE queue.jobs SET tenant_id = %L WHERE id = %s',
                                 'b0000000-0000-4000-8000-000000000000', pg_temp.id('a'))),
          '42501', 'A cannot move its job to B');
SELECT is(pg_temp.outcome(format('UPDATE queue.jobs SET payload = %L WHERE id = %s', '{}', pg_temp.id('a'))),
          '42501', 'A cannot rewrite a job''s payload');
SELECT is(pg_temp.outcome(format('UPDATE queue.jobs SET attempt = 0 WHERE id = %s', pg_temp.id('a'))),
          '42501', 'A cannot reset a job''s attempt');
SELECT is(queue.cancel(pg_temp.id('a')), true, 'A cancels its own unheld job');
SELECT is(queue.retry(pg_temp.id('a')), true, 'and retries it');

-- The worker's operations are not the request path's.
SELECT is(pg_temp.outcome(q), '42501', format('the application cannot %s', what))
  FROM (VALUES
      ('claim', $$SELECT * FROM queue.claim('pgtap', 10, 'x', interval '1000 years')$$),
      ('complete', format('SELECT queue.complete(%s, 1)', pg_temp.id('held'))),
      ('fail', format('SELECT queue.fail(%s, 1, %L)', pg_temp.id('held'), 'x')),
      ('heartbeat', format('SELECT queue.heartbeat(%s, 1, interval %L)', pg_temp.id('held'), '1 hour')),
      ('rescue', 'SELECT queue.rescue()'),
      ('promote', 'SELECT queue.promote_due()'),
      ('prune', $$SELECT queue.prune(interval '-1 day')$$),
      ('read periodic_runs (cron)', 'SELECT count(*) FROM queue.periodic_runs')) v(what, q);

RESET ROLE;
SELECT * FROM finish();
ROLLBACK;
