-- outbox: messages are isolated per tenant for the application role, which writes them only
-- through outbox.publish; the heads and the relay's tables are closed to it; the worker reads
-- every tenant's messages and writes none. One transaction, rolled back.
BEGIN;
CREATE EXTENSION IF NOT EXISTS pgtap;
SELECT plan(1 + 9 + 10);
\ir ../../tenancy/tests/fixtures.psql
\ir fixtures.psql

SELECT is(ARRAY(SELECT pg_temp.tenant_tables('outbox') ORDER BY 1),
          ARRAY['outbox.heads', 'outbox.messages'],
          'the tenant tables of outbox are the ones this suite covers');
SELECT * FROM pg_temp.isolation('outbox.messages');

SET LOCAL ROLE pgstrata_app;
SELECT FROM pg_temp.ctx('a0000000-0000-4000-8000-000000000000', 'a1000000-0000-4000-8000-000000000000');
SELECT is(pg_temp.outcome($$INSERT INTO outbox.messages (tenant_id, partition, aggregate_type, aggregate_id, event_type, payload)
                            VALUES ('a0000000-0000-4000-8000-000000000000', 0, 'order', 'o-1', 'Forged', '{}')$$),
          '42501', 'the application writes messages only through outbox.publish (no forged txid or partition)');
SELECT is(pg_temp.outcome('SELECT * FROM outbox.heads'), '42501', 'the application cannot read the heads');
SELECT is(pg_temp.outcome($$UPDATE outbox.heads SET last_txid = '99999999'$$), '42501',
          'the application cannot move a head (and so block or reorder an aggregate)');
SELECT is(pg_temp.outcome('SELECT * FROM outbox.checkpoints'), '42501', 'the application cannot read checkpoints');
SELECT is(pg_temp.outcome($$SELECT * FROM outbox.claim('search', 32, 100)$$), '42501',
          'the application cannot claim partitions (and hold a relay back)');
SELECT is(pg_temp.outcome($$SELECT outbox.publish('order', 'o-2', 'OrderPlaced', '{}')$$), '1 rows',
          'the application publishes in its tenant');
SELECT FROM pg_temp.ctx('50000000-0000-4000-8000-000000000000', '51000000-0000-4000-8000-000000000000');
SELECT is(pg_temp.outcome($$SELECT outbox.publish('order', 'o-2', 'OrderPlaced', '{}')$$), '42501',
          'a suspended tenant publishes nothing');
SELECT FROM pg_temp.ctx(NULL, NULL);
RESET ROLE;

SET LOCAL ROLE pgstrata_worker;
SELECT is(pg_temp.outcome('SELECT * FROM outbox.messages'), '3 rows', 'the worker reads every tenant''s messages');
SELECT is(pg_temp.outcome($$UPDATE outbox.messages SET payload = '{}'$$), '42501', 'the worker rewrites no message');
SELECT is(pg_temp.outcome($$SELECT * FROM outbox.claim('search', 32, 100)$$), '0 rows',
          'a relay sees no message of a running transaction');
RESET ROLE;

SELECT * FROM finish();
ROLLBACK;
