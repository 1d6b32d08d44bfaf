-- outbox: the guards of publish (a tenant in context, the fields) and of the relay's functions
-- (arguments in range, checkpoints that only move forward, cleanup that keeps what a sink has
-- not passed). One transaction, rolled back.
BEGIN;
CREATE EXTENSION IF NOT EXISTS pgtap;
SELECT plan(11);
\ir ../../tenancy/tests/fixtures.psql
\ir fixtures.psql

SET LOCAL ROLE pgstrata_app;
SELECT is(pg_temp.outcome($$SELECT outbox.publish('order', 'o-1', 'OrderPlaced', '{}')$$), '42501',
          'no tenant in context: publish refuses');
SELECT FROM pg_temp.ctx('a0000000-0000-4000-8000-000000000000', 'a1000000-0000-4000-8000-000000000000');
SELECT is(pg_temp.outcome($$SELECT outbox.publish('', 'o-1', 'OrderPlaced', '{}')$$), '23514', 'an empty aggregate type is refused');
SELECT is(pg_temp.outcome($$SELECT outbox.publish('order', repeat('x', 256), 'OrderPlaced', '{}')$$), '23514',
          'an aggregate id over 255 characters is refused');
SELECT is(pg_temp.outcome($$SELECT outbox.publish('order', 'o-1', E'Order\nPlaced', '{}')$$), '23514',
          'an event type with a control character is refused');
SELECT is(pg_temp.outcome($$SELECT outbox.publish('order', 'o-1', 'OrderPlaced', NULL)$$), '22023', 'a NULL payload is refused');
SELECT is(pg_temp.outcome($$SELECT outbox.publish('order', 'o-1', 'Big',
            jsonb_build_object('b', (SELECT string_agg(md5(i::text), '') FROM generate_series(1, 40000) i)))$$),
          '23514', 'a payload over 256 KiB is refused');
SELECT FROM pg_temp.ctx(NULL, NULL);
RESET ROLE;

SET LOCAL ROLE pgstrata_worker;
SELECT is(pg_temp.outcome($$SELECT * FROM outbox.claim('search', 0, 100)$$), '22023', 'claim refuses 0 partitions');
SELECT is(pg_temp.outcome($$SELECT * FROM outbox.claim('search', 32, 100000)$$), '22023', 'claim refuses a batch over 10,000');
SELECT is(pg_temp.outcome($$SELECT outbox.cleanup(interval '-1 day')$$), '22023', 'cleanup refuses a negative retention');
RESET ROLE;
-- A checkpoint moves forward only.
UPDATE outbox.checkpoints SET after_txid = '1000', after_id = 50 WHERE sink = 'search' AND partition = 3;
SET LOCAL ROLE pgstrata_worker;
SELECT is(outbox.ack('search', ARRAY[3]::smallint[], ARRAY[999]::bigint[], ARRAY[60]::bigint[], ARRAY[1]), 0,
          'a checkpoint never moves back');
-- Nothing every sink has not passed is deleted, however old.
SELECT is(outbox.cleanup(interval '0'), 0, 'cleanup keeps messages a sink has not passed');
RESET ROLE;

SELECT * FROM finish();
ROLLBACK;
