-- webhooks: every tenant table is isolated per tenant for the application role; the request
-- path cannot forge the dispatcher's state (attempts, leases, notices, the failure run) and
-- the dispatcher reads every tenant but rewrites no message, endpoint URL or key. One
-- transaction, rolled back.
BEGIN;
CREATE EXTENSION IF NOT EXISTS pgtap;
SELECT plan(1 + 8 * 9 + 16);
\ir ../../tenancy/tests/fixtures.psql
\ir fixtures.psql

SELECT is(ARRAY(SELECT pg_temp.tenant_tables('webhooks') ORDER BY 1),
          ARRAY['webhooks.attempts', 'webhooks.deliveries', 'webhooks.endpoints', 'webhooks.lanes',
                'webhooks.messages', 'webhooks.notices', 'webhooks.secrets', 'webhooks.tenant_settings'],
          'the tenant tables of webhooks are the ones this suite covers');
SELECT * FROM pg_temp.isolation('webhooks.endpoints');
SELECT * FROM pg_temp.isolation('webhooks.secrets');
SELECT * FROM pg_temp.isolation('webhooks.messages');
SELECT * FROM pg_temp.isolation('webhooks.deliveries');
SELECT * FROM pg_temp.isolation('webhooks.attempts');
SELECT * FROM pg_temp.isolation('webhooks.notices');
SELECT * FROM pg_temp.isolation('webhooks.tenant_settings');
SELECT * FROM pg_temp.isolation('webhooks.lanes');

SET LOCAL ROLE pgstrata_app;
SELECT FROM pg_temp.ctx('a0000000-0000-4000-8000-000000000000', 'a1000000-0000-4000-8000-000000000000');
SELECT is(pg_temp.outcome($$UPDATE webhooks.deliveries SET state = 'pending', next_attempt_at = now()$$), '0 rows',
          'the application cannot take back a running delivery (only finished ones are replayed)');
SELECT is(pg_temp.outcome($$UPDATE webhooks.deliveries SET lease_expires_at = NULL$$), '42501',
          'the application cannot touch a lease');
SELECT is(pg_temp.outcome($$INSERT INTO webhooks.deliveries (tenant_id, message_id, endpoint_id, state)
                            SELECT tenant_id, message_id, endpoint_id, 'succeeded' FROM webhooks.deliveries$$), '42501',
          'the application cannot insert a delivery in another state than pending');
SELECT is(pg_temp.outcome($$UPDATE webhooks.attempts SET status_code = 200$$), '42501',
          'the application cannot forge an attempt''s outcome');
SELECT is(pg_temp.outcome($$INSERT INTO webhooks.notices (tenant_id, kind, endpoint_id, reason)
                            VALUES ('a0000000-0000-4000-8000-000000000000', 'endpoint_disabled',
                                    'ea000000-0000-4000-8000-000000000000', 'forged')$$), '42501',
          'the application cannot write a notice');
SELECT is(pg_temp.outcome($$UPDATE webhooks.endpoints SET first_failure_at = now() - interval '10 days'$$), '42501',
          'the application cannot move the failure run (and so have its endpoint disabled or kept)');
SELECT is(pg_temp.outcome($$SELECT 1 FROM webhooks.lanes FOR KEY SHARE$$), '42501',
          'the application cannot lock its lanes (and so hold back the dispatcher''s claims)');
SELECT is(pg_temp.outcome($$DELETE FROM webhooks.lanes$$), '42501',
          'the application cannot remove its lanes');
SELECT is(pg_temp.outcome($$UPDATE webhooks.tenant_settings SET retention_days = 3660$$), '42501',
          'the application cannot change its retention (the operator''s)');
SELECT is(pg_temp.outcome($$SELECT * FROM webhooks.claim(10, 'app', interval '1 minute')$$), '42501',
          'the application cannot claim deliveries');
SELECT is(pg_temp.outcome($$SELECT webhooks.complete('a0000000-0000-4000-8000-000000000000', 1, 1, 200, '', 1, NULL)$$),
          '42501', 'the application cannot report an outcome');
SELECT FROM pg_temp.ctx('50000000-0000-4000-8000-000000000000', '51000000-0000-4000-8000-000000000000');
SELECT is(pg_temp.outcome($$SELECT webhooks.send('invoice.paid', convert_to('{}', 'UTF8'))$$), '42501',
          'a suspended tenant sends nothing');
SELECT FROM pg_temp.ctx(NULL, NULL);
RESET ROLE;

SET LOCAL ROLE pgstrata_worker;
SELECT is(pg_temp.outcome('SELECT * FROM webhooks.messages'), '2 rows', 'the worker reads every tenant''s messages');
SELECT is(pg_temp.outcome($$UPDATE webhooks.messages SET payload = '\x7b7d'$$), '42501', 'the worker rewrites no message');
SELECT is(pg_temp.outcome($$UPDATE webhooks.endpoints SET url = 'https://evil.example/'$$), '42501',
          'the worker redirects no endpoint');
SELECT is(pg_temp.outcome($$UPDATE webhooks.secrets SET key = '\x00'$$), '42501', 'the worker changes no key');
RESET ROLE;

SELECT * FROM finish();
ROLLBACK;
