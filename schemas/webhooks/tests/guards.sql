-- webhooks: the guards of the request path's functions (a tenant in context, the fields, the
-- idempotency key), of the dispatcher's (arguments in range, a report for an attempt that is
-- no longer the delivery's changes nothing) and of the endpoints' checks. One transaction,
-- rolled back.
BEGIN;
CREATE EXTENSION IF NOT EXISTS pgtap;
SELECT plan(31);
\ir ../../tenancy/tests/fixtures.psql
\ir fixtures.psql

SET LOCAL ROLE pgstrata_app;
SELECT is(pg_temp.outcome($$SELECT webhooks.send('a', convert_to('{}', 'UTF8'))$$), '42501', 'no tenant in context: send refuses');
SELECT is(pg_temp.outcome($$SELECT webhooks.rotate_secret('ea000000-0000-4000-8000-000000000000')$$), '42501',
          'no tenant in context: rotate_secret refuses');
SELECT is(pg_temp.outcome($$SELECT webhooks.replay_failed(now())$$), '42501', 'no tenant in context: replay_failed refuses');
SELECT is(pg_temp.outcome($$SELECT webhooks.erase()$$), '42501', 'no tenant in context: erase refuses');
SELECT FROM pg_temp.ctx('a0000000-0000-4000-8000-000000000000', 'a1000000-0000-4000-8000-000000000000');
SELECT is(pg_temp.outcome($$SELECT webhooks.send('a', NULL)$$), '22023', 'a NULL payload is refused');
SELECT is(pg_temp.outcome($$SELECT webhooks.send('a', convert_to('not json', 'UTF8'))$$), '22P02',
          'a payload that is not JSON is refused');
SELECT is(pg_temp.outcome($$SELECT webhooks.send('bad type!', convert_to('{}', 'UTF8'))$$), '22023',
          'a malformed event type is refused');
SELECT is(pg_temp.outcome($$SELECT webhooks.send('a', convert_to(repeat('x', 262145), 'UTF8'))$$), 'PS413',
          'a payload over settings.max_payload_bytes is refused');
SELECT FROM webhooks.send('order.placed', convert_to('{"id": 1}', 'UTF8'), 'key-1');
SELECT is(pg_temp.outcome($$SELECT webhooks.send('order.placed', convert_to('{"id": 2}', 'UTF8'), 'key-1')$$), 'PS422',
          'an idempotency key reused for another payload is refused');
SELECT is((SELECT count(*) FROM webhooks.messages WHERE idempotency_key = 'key-1'), 1::bigint,
          'and the first message is the only one under the key');
SELECT is(pg_temp.outcome($$SELECT webhooks.rotate_secret('ea000000-0000-4000-8000-000000000000', interval '-1 hour')$$),
          '22023', 'a negative grace is refused');
SELECT is(pg_temp.outcome($$SELECT webhooks.rotate_secret('eb000000-0000-4000-8000-000000000000')$$), 'PS404',
          'another tenant''s endpoint is not found');
SELECT is(pg_temp.outcome($$SELECT webhooks.replay('00000000-0000-4000-8000-000000000000')$$), 'PS404',
          'replaying a message that does not exist is refused');
SELECT is(pg_temp.outcome($$SELECT webhooks.replay_failed(NULL)$$), '22023', 'replay_failed refuses a NULL since');
SELECT is(pg_temp.outcome($$INSERT INTO webhooks.endpoints (tenant_id, url)
                            VALUES ('a0000000-0000-4000-8000-000000000000', 'https://user:pw@a.example/')$$), '23514',
          'an endpoint URL with credentials is refused');
SELECT is(pg_temp.outcome($$INSERT INTO webhooks.endpoints (tenant_id, url)
                            VALUES ('a0000000-0000-4000-8000-000000000000', 'file:///etc/passwd')$$), '23514',
          'an endpoint URL that is not http or https is refused');
SELECT is(pg_temp.outcome($$INSERT INTO webhooks.endpoints (tenant_id, url, headers)
                            VALUES ('a0000000-0000-4000-8000-000000000000', 'https://a.example/', '{"webhook-id": "x"}')$$),
          '23514', 'a custom header the dispatcher sets is refused');
SELECT FROM pg_temp.ctx(NULL, NULL);
RESET ROLE;

SET LOCAL ROLE pgstrata_worker;
SELECT is(pg_temp.outcome($$SELECT * FROM webhooks.claim(0, 'w')$$), '22023', 'claim refuses a limit of 0');
SELECT is(pg_temp.outcome($$SELECT * FROM webhooks.claim(10, '')$$), '22023', 'claim refuses an empty worker name');
SELECT is(pg_temp.outcome($$SELECT * FROM webhooks.claim(10, 'w', interval '0')$$), '22023', 'claim refuses a zero lease');
SELECT is(pg_temp.outcome($$SELECT webhooks.prune(0)$$), '22023', 'prune refuses a limit of 0');
SELECT is(pg_temp.outcome($$SELECT webhooks.send('a', convert_to('{}', 'UTF8'))$$), '42501', 'the worker cannot send');
-- A report for an attempt the delivery is no longer in (a stale dispatcher) changes nothing.
SELECT is((SELECT webhooks.complete(d.tenant_id, d.id, d.attempts + 1, 200, 'late', 5, NULL)
             FROM webhooks.deliveries d WHERE d.endpoint_id = 'ea000000-0000-4000-8000-000000000000' AND d.attempts = 1),
          NULL, 'a report for another attempt is refused (NULL)');
SELECT is((SELECT d.state FROM webhooks.deliveries d WHERE d.endpoint_id = 'ea000000-0000-4000-8000-000000000000' AND d.attempts = 1),
          'running', 'and the delivery is still running');
SELECT is((SELECT webhooks.complete(d.tenant_id, d.id, d.attempts, 200, 'ok', 5, NULL)
             FROM webhooks.deliveries d WHERE d.endpoint_id = 'ea000000-0000-4000-8000-000000000000' AND d.attempts = 1),
          'succeeded', 'the report for the running attempt succeeds the delivery');
-- complete_many: the same guard per outcome, bounded batches, parallel arrays.
SELECT is(pg_temp.outcome($$SELECT * FROM webhooks.complete_many('{}', '{1}', '{1}', '{200}', '{""}', '{1}', '{NULL}', '{NULL}')$$),
          '22023', 'complete_many refuses arrays of different lengths');
SELECT is(pg_temp.outcome($$SELECT * FROM webhooks.complete_many(
            array_fill('a0000000-0000-4000-8000-000000000000'::uuid, ARRAY[1001]), array_fill(1::bigint, ARRAY[1001]),
            array_fill(1, ARRAY[1001]), array_fill(200, ARRAY[1001]), array_fill(''::text, ARRAY[1001]),
            array_fill(1, ARRAY[1001]), array_fill(NULL::text, ARRAY[1001]), array_fill(NULL::int, ARRAY[1001]))$$),
          '22023', 'complete_many refuses more than 1000 outcomes');
SELECT is((SELECT count(*) FROM webhooks.deliveries d,
                  LATERAL webhooks.complete_many(ARRAY[d.tenant_id], ARRAY[d.id], ARRAY[d.attempts + 1], '{200}', '{late}',
                                                 '{5}', '{NULL}', '{NULL}') c
            WHERE d.endpoint_id = 'eb000000-0000-4000-8000-000000000000'),
          0::bigint, 'complete_many ignores a success for another attempt');
SELECT is((SELECT array_agg(c.state) FROM webhooks.deliveries d,
                  LATERAL webhooks.complete_many(ARRAY[d.tenant_id], ARRAY[d.id], ARRAY[d.attempts + 1], '{500}', '{late}',
                                                 '{5}', '{NULL}', '{NULL}') c
            WHERE d.endpoint_id = 'eb000000-0000-4000-8000-000000000000'),
          ARRAY[NULL::text], 'and returns a NULL state for a failure for another attempt');
SELECT is((SELECT array_agg(c.state) FROM webhooks.deliveries d,
                  LATERAL webhooks.complete_many(ARRAY[d.tenant_id], ARRAY[d.id], ARRAY[d.attempts], '{503}', '{busy}',
                                                 '{5}', '{NULL}', '{120}') c
            WHERE d.endpoint_id = 'eb000000-0000-4000-8000-000000000000'),
          ARRAY['pending'], 'a failure reported in a batch is scheduled for a retry');
SELECT ok((SELECT d.next_attempt_at >= now() + interval '119 seconds' FROM webhooks.deliveries d
            WHERE d.endpoint_id = 'eb000000-0000-4000-8000-000000000000'),
          'no sooner than its Retry-After');
RESET ROLE;

SELECT * FROM finish();
ROLLBACK;
