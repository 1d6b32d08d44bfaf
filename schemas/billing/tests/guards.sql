-- billing: the order rules of the mirror (each event once, newer states only, canceled never
-- revived, a stale writer refused), links that need proof and never move, and entry points
-- closed to the application role. One transaction, rolled back.
BEGIN;
CREATE EXTENSION IF NOT EXISTS pgtap;
SELECT plan(23);
\ir ../../tenancy/tests/fixtures.psql
\ir fixtures.psql

-- Outcome of one event delivered by the webhook's role.
CREATE FUNCTION pg_temp.deliver(p_event jsonb) RETURNS text
    LANGUAGE plpgsql AS $$
DECLARE
    v_outcome text;
BEGIN
    SET LOCAL ROLE pgstrata_billing_sync;
    SELECT e.outcome INTO v_outcome FROM billing.process_event(p_event) e;
    RESET ROLE;
    RETURN v_outcome;
END
$$;
CREATE FUNCTION pg_temp.status_of(p_subscription text) RETURNS text
    LANGUAGE sql AS $$ SELECT s.status FROM billing.subscriptions s WHERE s.id = p_subscription $$;

-- A customer whose own (signed) metadata names B is linked to B; the same event twice is one.
SELECT is(pg_temp.deliver(pg_temp.event('evt_tap_c1', 'customer.created', 1764547200,
              '{"id": "cus_tap_b", "object": "customer", "metadata": {"tenant_id": "b0000000-0000-4000-8000-000000000000"}}')),
          'applied', 'a customer naming its tenant in its metadata is applied');
SELECT is((SELECT tenant_id FROM billing.customers WHERE id = 'cus_tap_b'), 'b0000000-0000-4000-8000-000000000000'::uuid,
          'and mirrored into that tenant');
SELECT is(pg_temp.deliver(pg_temp.event('evt_tap_c1', 'customer.created', 1764547200,
              '{"id": "cus_tap_b", "object": "customer", "metadata": {"tenant_id": "b0000000-0000-4000-8000-000000000000"}}')),
          'duplicate', 'the same event delivered again is a duplicate');

-- Newer states only, whatever order the events arrive in.
SELECT is(pg_temp.deliver(pg_temp.event('evt_tap_s1', 'customer.subscription.created', 1764547300,
              pg_temp.subscription('sub_tap_b', 'cus_tap_b', 'active'))), 'applied', 'a subscription is applied');
SELECT is(pg_temp.deliver(pg_temp.event('evt_tap_s2', 'customer.subscription.updated', 1764547500,
              pg_temp.subscription('sub_tap_b', 'cus_tap_b', 'past_due'))), 'applied', 'a newer state is applied');
SELECT is(pg_temp.deliver(pg_temp.event('evt_tap_s3', 'customer.subscription.updated', 1764547400,
              pg_temp.subscription('sub_tap_b', 'cus_tap_b', 'active'))), 'stale', 'an older state arriving late is stale');
SELECT is(pg_temp.status_of('sub_tap_b'), 'past_due', 'and leaves the newer state in place');
SELECT is(pg_temp.deliver(pg_temp.event('evt_tap_s4', 'customer.subscription.deleted', 1764547600,
              pg_temp.subscription('sub_tap_b', 'cus_tap_b', 'canceled'))), 'applied', 'a cancellation is applied');
SELECT is(pg_temp.deliver(pg_temp.event('evt_tap_s5', 'customer.subscription.updated', 1764547700,
              pg_temp.subscription('sub_tap_b', 'cus_tap_b', 'active'))), 'stale', 'a later update does not revive it');
SELECT is(pg_temp.status_of('sub_tap_b'), 'canceled', 'a canceled subscription stays canceled');
SELECT throws_ok($$UPDATE billing.subscriptions SET last_event_created = '-infinity', last_event_id = '', status = 'active'
                    WHERE id = 'sub_tap_b'$$,
                 'PS409', NULL, 'any writer, the owner included, is refused an older state');

-- Links: proof or nothing, and never moved.
SELECT is(pg_temp.deliver(pg_temp.event('evt_tap_u1', 'customer.subscription.created', 1764547300,
              pg_temp.subscription('sub_tap_u', 'cus_tap_unlinked', 'active'))),
          'deferred', 'an event of a customer no proof links waits in the ledger');
SELECT is(pg_temp.deliver(pg_temp.event('evt_tap_c2', 'customer.updated', 1764547800,
              '{"id": "cus_tap_a", "object": "customer", "metadata": {"tenant_id": "b0000000-0000-4000-8000-000000000000"}}')),
          'failed', 'a customer linked to A that later names B stays with A');
SET LOCAL ROLE pgstrata_billing_sync;
SELECT throws_ok($$SELECT billing.link_customer('cus_tap_a', 'b0000000-0000-4000-8000-000000000000')$$,
                 'PS403', NULL, 'the sync role cannot move a linked customer');
SELECT throws_matching($$SELECT billing.link_customer('cus_tap_a', 'b0000000-0000-4000-8000-000000000000')$$,
                       '^((?!a0000000-0000-4000-8000-000000000000).)*$',
                       'the refusal does not name the tenant that holds the customer');
SELECT is(billing.link_customer('cus_tap_unlinked', 'b0000000-0000-4000-8000-000000000000'), 1,
          'the sync role links an unlinked customer');
RESET ROLE;
SELECT is((SELECT tenant_id FROM billing.subscriptions WHERE id = 'sub_tap_u'), 'b0000000-0000-4000-8000-000000000000'::uuid,
          'and the event that waited for the link is applied in that tenant');
SET LOCAL ROLE pgstrata_billing_sync;
SELECT throws_ok($$SELECT * FROM billing.process_event('{"type": "customer.created"}')$$, '22023', NULL,
                 'a malformed event is refused');
RESET ROLE;

-- The application role: no entry point, no link.
SET LOCAL ROLE pgstrata_app;
SELECT FROM pg_temp.ctx('b0000000-0000-4000-8000-000000000000', 'b1000000-0000-4000-8000-000000000000');
SELECT is(pg_temp.outcome($$SELECT * FROM billing.process_event(pg_temp.event('evt_tap_f', 'customer.created', 1764547900,
              '{"id": "cus_tap_f", "object": "customer", "metadata": {"tenant_id": "b0000000-0000-4000-8000-000000000000"}}'))$$),
          '42501', 'the application cannot deliver an event');
SELECT is(pg_temp.outcome($$SELECT billing.link_customer('cus_tap_x')$$), '42501',
          'the application cannot link a customer to its tenant');
SELECT is(pg_temp.outcome($$SELECT billing.link_customer('cus_tap_x', 'b0000000-0000-4000-8000-000000000000')$$), '42501',
          'nor through the sync role''s entry point');
SELECT is(pg_temp.outcome($$SELECT billing.retry_failed()$$), '42501', 'the application cannot replay failed events');
SELECT is(pg_temp.outcome($$UPDATE billing.subscriptions SET status = 'active'$$), '42501',
          'the application writes nothing in the mirror');
RESET ROLE;

SELECT * FROM finish();
ROLLBACK;
