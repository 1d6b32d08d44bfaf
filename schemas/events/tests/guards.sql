-- events: the guarantees as the application role sees them: an event is stored once and
-- counted once, a retried batch is found, times outside the window and names outside an
-- enforced catalog are refused with the event named, events are never updated or truncated,
-- and erasing an actor corrects the rollups. One transaction, rolled back.
BEGIN;
CREATE EXTENSION IF NOT EXISTS pgtap;
SELECT plan(12);
\ir ../../tenancy/tests/fixtures.psql
\ir fixtures.psql

SET LOCAL ROLE pgstrata_app;
SELECT FROM pg_temp.ctx('a0000000-0000-4000-8000-000000000000', 'a1000000-0000-4000-8000-000000000000');

SELECT is(pg_temp.outcome($$INSERT INTO events.events (tenant_id, event_id, occurred_at, name, actor)
                            SELECT tenant_id, event_id, occurred_at, name, actor FROM events.events
                             WHERE event_id = 'ea000000-0000-4000-8000-000000000001'
                            ON CONFLICT DO NOTHING$$),
          '0 rows', 'an event sent again is not stored again');
SELECT is((SELECT sum(d.events) FROM events.daily_counts d WHERE d.name = 'signup'), 1::numeric,
          'and is counted once');
SELECT is((SELECT fresh FROM events.begin_batch('ba000000-0000-4000-8000-000000000000',
                                                ARRAY['a0000000-0000-4000-8000-000000000000']::uuid[], ARRAY[2])),
          false, 'a retried batch is found');
SELECT throws_ok($$INSERT INTO events.events (tenant_id, event_id, occurred_at, name, actor)
                   VALUES ('a0000000-0000-4000-8000-000000000000', 'ea000000-0000-4000-8000-0000000000ff',
                           now() - interval '400 days', 'signup', 'alice')$$,
                 '23514', NULL, 'an event older than every partition is refused');
SELECT throws_ok($$INSERT INTO events.events (tenant_id, event_id, occurred_at, name, actor)
                   VALUES ('a0000000-0000-4000-8000-000000000000', 'ea000000-0000-4000-8000-0000000000fe',
                           now() + interval '2 hours', 'signup', 'alice')$$,
                 '22023', NULL, 'an event from a clock running ahead is refused');
SELECT throws_ok($$INSERT INTO events.events (tenant_id, event_id, occurred_at, name, actor)
                   VALUES ('a0000000-0000-4000-8000-000000000000', 'ea000000-0000-4000-8000-0000000000fd',
                           now(), E'bad\nname', 'alice')$$,
                 '23514', NULL, 'a name with control characters is refused');
UPDATE events.tenant_settings SET enforce_catalog = true;
SELECT throws_ok($$INSERT INTO events.events (tenant_id, event_id, occurred_at, name, actor)
                   VALUES ('a0000000-0000-4000-8000-000000000000', 'ea000000-0000-4000-8000-0000000000fc',
                           now(), 'sigunp', 'alice')$$,
                 '22023', NULL, 'a name outside an enforced catalog is refused');
SELECT is(pg_temp.outcome($$INSERT INTO events.events (tenant_id, event_id, occurred_at, name, actor)
                            VALUES ('a0000000-0000-4000-8000-000000000000', 'ea000000-0000-4000-8000-0000000000fb',
                                    now(), 'signup', 'adam')$$),
          '1 rows', 'a name in the catalog is taken');
UPDATE events.tenant_settings SET enforce_catalog = false;
INSERT INTO events.events (tenant_id, event_id, occurred_at, name, actor)
VALUES ('a0000000-0000-4000-8000-000000000000', 'ea000000-0000-4000-8000-0000000000fa', now(), 'signup', 'adam');
SELECT is(pg_temp.outcome($$UPDATE events.events SET name = 'renamed'$$), '42501', 'events are never updated');
SELECT is(pg_temp.outcome($$TRUNCATE events.events$$), '42501', 'the application cannot truncate events');
SELECT is(events.erase_actor('alice'), 2::bigint, 'erasing an actor removes each of its events');
SELECT is(ARRAY(SELECT d.name || '=' || d.events FROM events.daily_counts d ORDER BY 1)
          || ARRAY(SELECT 'actors=' || u.actors FROM events.daily_uniques u),
          ARRAY['signup=1', 'actors=1'], 'and takes them out of the rollups (adam''s signup is left)');

SELECT FROM pg_temp.ctx(NULL, NULL);
RESET ROLE;
SELECT * FROM finish();
ROLLBACK;
