-- eventstore: the guarantees as the application role sees them: versions follow the expected
-- version and have no gaps, a stale writer is refused with the current version and writes
-- nothing, events are never updated, the actor comes from the context, and a subscription's
-- reader waits for an open transaction rather than skip it. One transaction, rolled back.
BEGIN;
CREATE EXTENSION IF NOT EXISTS pgtap;
SELECT plan(8);
\ir ../../tenancy/tests/fixtures.psql
\ir fixtures.psql

SET LOCAL ROLE pgstrata_app;
SELECT FROM pg_temp.ctx('a0000000-0000-4000-8000-000000000000', 'a1000000-0000-4000-8000-000000000000');
SELECT is((SELECT array_agg(version ORDER BY version) FROM eventstore.append('order-a1', 2, '[{"type": "CourierAssigned"}, {"type": "Delivered"}]')),
          ARRAY[3, 4]::bigint[], 'an append at the version read takes the next versions');
SELECT throws_ok($$SELECT * FROM eventstore.append('order-a1', 2, '[{"type": "Refunded"}]')$$,
                 'PS409', NULL, 'a stale expected version is refused');
SELECT throws_ok($$SELECT * FROM eventstore.append('order-a2', 1, '[{"type": "OrderPlaced"}]')$$,
                 'PS409', NULL, 'a stream that does not exist is at version 0');
SELECT is((SELECT array_agg(version ORDER BY version) FROM eventstore.events WHERE stream = 'order-a1'),
          ARRAY[1, 2, 3, 4]::bigint[], 'the stream is gapless and the refused appends wrote nothing');
SELECT is((SELECT version FROM eventstore.streams WHERE stream = 'order-a1'), 4::bigint, 'the stream''s version follows');
SELECT is((SELECT count(*) FROM eventstore.events WHERE stream = 'order-a1' AND actor_id = 'a1000000-0000-4000-8000-000000000000'),
          4::bigint, 'the actor comes from the context');
SELECT throws_ok($$SELECT * FROM eventstore.append_any('order-a1', '[{"type": "Imported"}]')$$,
                 '42501', NULL, 'the application cannot append at any version');
SELECT FROM pg_temp.ctx(NULL, NULL);
RESET ROLE;

-- This suite's own transaction appended above and is still open: the reader's horizon is at
-- or below its transaction id, so those events are not delivered yet (they will be, once it
-- commits), even to this transaction.
SET LOCAL ROLE pgstrata_worker;
SELECT is((SELECT count(*) FROM eventstore.read_after('0', 0, 'order', 100) e WHERE e.txid >= pg_current_xact_id()),
          0::bigint, 'the reader returns nothing at or above the horizon, its own open transaction included');
RESET ROLE;

SELECT * FROM finish();
ROLLBACK;
