-- queue: every transition names the state and attempt it expects, so a stale worker changes
-- nothing; leases, claim sizes and retention are bounded even for the worker. One transaction,
-- rolled back.
BEGIN;
CREATE EXTENSION IF NOT EXISTS pgtap;
SELECT plan(16);
\ir ../../tenancy/tests/fixtures.psql
\ir fixtures.psql

SET LOCAL ROLE pgstrata_worker;
SELECT throws_ok($$SELECT * FROM queue.claim('pgtap', 1, 'w', interval '1000 years')$$, '22023', NULL,
                 'a lease of more than a day is refused, even to the worker');
SELECT throws_ok($$SELECT * FROM queue.claim('pgtap', 1, 'w', interval '0')$$, '22023', NULL, 'a zero lease is refused');
SELECT throws_ok($$SELECT * FROM queue.claim('pgtap', 1001, 'w')$$, '22023', NULL, 'a claim of more than 1000 jobs is refused');
SELECT throws_ok($$SELECT * FROM queue.claim('pgtap', 0, 'w')$$, '22023', NULL, 'a claim of no job is refused');
SELECT throws_ok($$SELECT queue.prune(interval '-1 day')$$, '22023', NULL, 'a negative retention is refused');

-- Claims: each available job once, attempt counted; the held job is not handed out again.
CREATE TEMP TABLE tap_claimed ON COMMIT DROP AS SELECT * FROM queue.claim('pgtap', 100, 'w1', interval '1 minute');
SELECT is((SELECT count(*) FROM tap_claimed), 4::bigint, 'a claim takes every available job of the queue, across tenants');
SELECT is((SELECT count(*) FROM queue.claim('pgtap', 100, 'w2', interval '1 minute')), 0::bigint,
          'a second claim finds nothing left to take');
SELECT ok((SELECT bool_and(state = 'running' AND attempt = 1 AND worker = 'w1') FROM tap_claimed),
          'claimed jobs are running, at attempt 1, held by the claimer');

-- Transitions name the attempt: a stale one changes nothing.
SELECT is(queue.complete(pg_temp.id('a'), 2), false, 'completing with a stale attempt changes nothing');
SELECT is(queue.complete(pg_temp.id('a'), 1), true, 'completing with the current attempt completes');
SELECT is(queue.complete(pg_temp.id('a'), 1), false, 'a completed job is not completed again');
SELECT is(queue.fail(pg_temp.id('a'), 1, 'late'), NULL, 'a completed job cannot fail afterwards');
SELECT is(queue.heartbeat(pg_temp.id('a'), 1, interval '1 minute'), false, 'a completed job takes no heartbeat');
SELECT is(queue.fail(pg_temp.id('b'), 1, 'boom'), 'retryable', 'a failure with attempts left is retryable');

-- Rescue: a job whose lease ran out goes back, its old attempt can no longer complete.
RESET ROLE;
UPDATE queue.jobs SET lease_expires_at = now() - interval '1 second' WHERE id = pg_temp.id('held');
SET LOCAL ROLE pgstrata_worker;
SELECT ok(queue.rescue() >= 1, 'rescue takes back a job whose lease ran out');
SELECT is(queue.complete(pg_temp.id('held'), 1), false, 'the dead worker''s attempt cannot complete the rescued job');

RESET ROLE;
SELECT * FROM finish();
ROLLBACK;
