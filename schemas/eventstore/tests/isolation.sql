-- eventstore: every tenant table of the module is isolated per tenant for the application role;
-- the worker reads every tenant's events and writes none. One transaction, rolled back.
BEGIN;
CREATE EXTENSION IF NOT EXISTS pgtap;
SELECT plan(1 + 9 * 3 + 4);
\ir ../../tenancy/tests/fixtures.psql
\ir fixtures.psql

SELECT is(ARRAY(SELECT pg_temp.tenant_tables('eventstore') ORDER BY 1),
          ARRAY['eventstore.events', 'eventstore.snapshots', 'eventstore.streams'],
          'the tenant tables of eventstore are the ones this suite covers');
SELECT * FROM pg_temp.isolation('eventstore.events');
SELECT * FROM pg_temp.isolation('eventstore.streams');
SELECT * FROM pg_temp.isolation('eventstore.snapshots');

SET LOCAL ROLE pgstrata_worker;
SELECT is((SELECT count(*) FROM eventstore.events), 3::bigint,
          'the worker reads every tenant''s events (subscriptions; read_after waits for this open transaction)');
SELECT is(pg_temp.outcome($$SELECT * FROM eventstore.append('order-b1', 1, '[{"type": "X"}]')$$), '42501',
          'the worker appends nothing');
RESET ROLE;
SET LOCAL ROLE pgstrata_app;
SELECT FROM pg_temp.ctx('a0000000-0000-4000-8000-000000000000', 'a1000000-0000-4000-8000-000000000000');
SELECT is(pg_temp.outcome($$SELECT * FROM eventstore.read_after('0', 0, NULL, 100)$$), '42501',
          'the application does not read across tenants through the subscriptions'' reader');
SELECT is(pg_temp.outcome($$SELECT * FROM eventstore.subscriptions FOR UPDATE$$), '42501',
          'the application cannot hold a subscription''s row (and stall its projection)');
SELECT FROM pg_temp.ctx(NULL, NULL);
RESET ROLE;

SELECT * FROM finish();
ROLLBACK;
