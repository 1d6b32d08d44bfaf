-- events: every table of the module is isolated per tenant for the application role; the
-- worker may insert (the collector) and read nothing. One transaction, rolled back.
BEGIN;
CREATE EXTENSION IF NOT EXISTS pgtap;
SELECT plan(1 + 9 * 7 + 5);
\ir ../../tenancy/tests/fixtures.psql
\ir fixtures.psql

SELECT is(ARRAY(SELECT pg_temp.tenant_tables('events') ORDER BY 1),
          ARRAY['events.batches', 'events.daily_actors', 'events.daily_counts', 'events.daily_uniques',
                'events.events', 'events.names', 'events.tenant_settings'],
          'the tenant tables of events are the ones this suite covers');
SELECT * FROM pg_temp.isolation('events.events');
SELECT * FROM pg_temp.isolation('events.batches');
SELECT * FROM pg_temp.isolation('events.daily_counts');
SELECT * FROM pg_temp.isolation('events.daily_actors');
SELECT * FROM pg_temp.isolation('events.daily_uniques');
SELECT * FROM pg_temp.isolation('events.names');
SELECT * FROM pg_temp.isolation('events.tenant_settings');

-- Partitions are reached through the partitioned table only (where RLS applies).
SELECT is(ARRAY(SELECT c.oid::regclass::text FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid
                 WHERE i.inhparent = 'events.events'::regclass
                   AND (has_table_privilege('pgstrata_app', c.oid, 'SELECT')
                        OR has_table_privilege('pgstrata_app', c.oid, 'INSERT')
                        OR has_table_privilege('pgstrata_worker', c.oid, 'INSERT'))),
          '{}'::text[], 'no pgstrata role may read or write a partition directly');
SET LOCAL ROLE pgstrata_worker;
SELECT is(pg_temp.outcome('SELECT count(*) FROM events.events'), '42501', 'the worker cannot read events');
SELECT is(pg_temp.outcome($$INSERT INTO events.events (tenant_id, event_id, occurred_at, name, actor)
                            VALUES ('b0000000-0000-4000-8000-000000000000', gen_random_uuid(), now(), 'collected', 'bob')$$),
          '1 rows', 'the worker inserts any tenant''s events (the collector)');
RESET ROLE;
SET LOCAL ROLE pgstrata_app;
SELECT FROM pg_temp.ctx('a0000000-0000-4000-8000-000000000000', 'a1000000-0000-4000-8000-000000000000');
SELECT is(pg_temp.outcome($$UPDATE events.tenant_settings SET retention_days = 1$$), '42501',
          'a tenant cannot change its own retention (the operator''s field)');
SELECT is(pg_temp.outcome($$INSERT INTO events.daily_counts (tenant_id, day, name, events)
                            VALUES ('a0000000-0000-4000-8000-000000000000', current_date, 'forged', 1000000)$$),
          '42501', 'a tenant cannot write its rollups');
SELECT FROM pg_temp.ctx(NULL, NULL);
RESET ROLE;

SELECT * FROM finish();
ROLLBACK;
