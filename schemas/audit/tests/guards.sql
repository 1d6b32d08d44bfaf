-- audit: only the capture trigger and audit.record write records, with the transaction's time,
-- actor and request; records and seals are append-only for everyone, the owner included; values
-- are capped; sealing, verifying and maintenance belong to their roles. One transaction, rolled
-- back.
BEGIN;
CREATE EXTENSION IF NOT EXISTS pgtap;
SELECT plan(24);
\ir ../../tenancy/tests/fixtures.psql
\ir fixtures.psql
-- Whether tenancy's tenants table is audited (audit.enable_defaults does it when audit is
-- installed; an install may have disabled it).
CREATE TEMP TABLE tap_audited ON COMMIT DROP AS
SELECT EXISTS (SELECT 1 FROM audit.tables WHERE table_name = 'tenancy.tenants') AS tenants;
GRANT SELECT ON tap_audited TO PUBLIC;

SET LOCAL ROLE pgstrata_app;
SELECT FROM pg_temp.ctx('a0000000-0000-4000-8000-000000000000', 'a1000000-0000-4000-8000-000000000000');
SELECT FROM set_config('app.request_id', 'pgtap-42', true);

-- Events: the application records them; the database fills in who, when and which request.
CREATE TEMP TABLE tap_event ON COMMIT DROP AS SELECT audit.record('tap.login', 'user', 'alice', '{"method": "sso"}') AS id;
SELECT is((SELECT (origin, actor_id, request_id, tenant_id)::text FROM audit.records WHERE id = (SELECT id FROM tap_event)),
          ROW('event', 'a1000000-0000-4000-8000-000000000000'::uuid, 'pgtap-42', 'a0000000-0000-4000-8000-000000000000'::uuid)::text,
          'an event is recorded with origin, actor, request and tenant from the transaction');
SELECT throws_ok($$SELECT audit.record('tap.big', 'tap', '1', jsonb_build_object('x', repeat('x', 70000)))$$,
                 '22023', NULL, 'details over 64 KiB are refused');
SELECT throws_ok($$SELECT audit.record('tap.x', '', '1')$$, '22023', NULL, 'an empty resource type is refused');

-- Captures: an audited table's change is recorded by the trigger, as the actor.
SELECT lives_ok($$UPDATE tenancy.tenants SET name = 'Audited' WHERE id = 'a0000000-0000-4000-8000-000000000000'$$,
                'the application writes an audited table');
SELECT ok(NOT (SELECT tenants FROM tap_audited)
          OR EXISTS (SELECT 1 FROM audit.records WHERE origin = 'capture' AND resource_type = 'tenancy.tenants'
                        AND action = 'update' AND actor_id = 'a1000000-0000-4000-8000-000000000000'
                        AND new_values ->> 'name' = 'Audited'),
          'and the capture trigger records the change with its actor and new value');

-- Nobody writes records but the two writers.
SELECT is(pg_temp.outcome($$INSERT INTO audit.records (tenant_id, action, resource_type, origin)
                            VALUES ('a0000000-0000-4000-8000-000000000000', 'rbac.grant', 'rbac.grants', 'capture')$$),
          '42501', 'the application cannot insert a record (a forged capture)');
SELECT is(pg_temp.outcome($$UPDATE audit.records SET origin = 'capture' WHERE id = (SELECT id FROM tap_event)$$),
          '42501', 'the application cannot change a record');
SELECT is(pg_temp.outcome($$DELETE FROM audit.records$$), '42501', 'the application cannot delete records');
SELECT is(pg_temp.outcome($$CREATE TEMP TABLE tap_forge (tenant_id uuid, id int);
                            CREATE TRIGGER forge AFTER INSERT ON tap_forge FOR EACH ROW EXECUTE FUNCTION audit.capture()$$),
          '42501', 'the application cannot attach the capture trigger to a table of its own');
SELECT is(pg_temp.outcome($$SELECT audit.enable('tenancy.users')$$), '42501', 'the application cannot audit a table');
SELECT is(pg_temp.outcome($$SELECT audit.seal()$$), '42501', 'the application cannot seal');
SELECT is(pg_temp.outcome($$SELECT * FROM audit.verify()$$), '42501', 'the application cannot verify');
SELECT is(pg_temp.outcome($$SELECT * FROM audit.maintain()$$), '42501', 'the application cannot run maintenance');
SELECT is(pg_temp.outcome($$SELECT * FROM audit.seal_locks FOR UPDATE$$), '42501', 'the application cannot hold the sealer''s lock');
SELECT is(pg_temp.outcome($$LOCK TABLE audit.records IN EXCLUSIVE MODE$$), '42501', 'the application cannot lock the log');

-- A deleted tenant records nothing.
SELECT FROM pg_temp.ctx('d0000000-0000-4000-8000-000000000000', 'd1000000-0000-4000-8000-000000000000');
SELECT is(pg_temp.outcome($$SELECT audit.record('tap.x', 'tap', '1')$$), '42501', 'a deleted tenant''s context records nothing');
RESET ROLE;

-- Append-only for everyone, the owner (here a superuser) included.
SELECT throws_ok($$UPDATE audit.records SET action = 'tap.rewritten' WHERE tenant_id = 'a0000000-0000-4000-8000-000000000000'$$,
                 '42501', NULL, 'the owner cannot change a record');
SELECT throws_ok($$DELETE FROM audit.records WHERE tenant_id = 'a0000000-0000-4000-8000-000000000000'$$,
                 '42501', NULL, 'the owner cannot delete a record');
SELECT throws_ok($$TRUNCATE audit.records$$, '42501', NULL, 'the owner cannot truncate the log');
SELECT throws_ok($$UPDATE audit.seals SET hashes = hashes WHERE tenant_id = 'a0000000-0000-4000-8000-000000000000'$$,
                 '42501', NULL, 'the owner cannot change a seal');
SELECT throws_ok($$DELETE FROM audit.seals WHERE tenant_id = 'a0000000-0000-4000-8000-000000000000'$$,
                 '42501', NULL, 'the owner cannot delete a seal');

-- The worker seals (another sealer may hold the lock: 55P03), the operator only verifies.
SET LOCAL ROLE pgstrata_worker;
SELECT ok(pg_temp.outcome('SELECT audit.seal()') IN ('1 rows', '55P03'), 'the worker may seal');
SET LOCAL ROLE pgstrata_operator;
SELECT is(pg_temp.outcome('SELECT audit.seal()'), '42501', 'the operator cannot seal');
SELECT ok(pg_temp.outcome('SELECT * FROM audit.verify()') ~ '^\d+ rows$', 'the operator may verify');
RESET ROLE;

SELECT * FROM finish();
ROLLBACK;
