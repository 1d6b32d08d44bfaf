-- billing: every tenant table of the Stripe mirror is isolated for the application role; the
-- ledger and the links are not the application's to see; access answers for one tenant only.
-- One transaction, rolled back.
BEGIN;
CREATE EXTENSION IF NOT EXISTS pgtap;
SELECT plan(61);
\ir ../../tenancy/tests/fixtures.psql
\ir fixtures.psql

SELECT is(ARRAY(SELECT pg_temp.tenant_tables('billing') ORDER BY 1),
          ARRAY['billing.active_entitlements', 'billing.customers', 'billing.entitlement_summaries',
                'billing.invoices', 'billing.subscription_items', 'billing.subscriptions'],
          'the tenant tables of billing are the ones this suite covers');
SELECT * FROM pg_temp.isolation('billing.customers');
SELECT * FROM pg_temp.isolation('billing.subscriptions');
SELECT * FROM pg_temp.isolation('billing.subscription_items');
SELECT * FROM pg_temp.isolation('billing.invoices');
SELECT * FROM pg_temp.isolation('billing.entitlement_summaries');
SELECT * FROM pg_temp.isolation('billing.active_entitlements');

SET LOCAL ROLE pgstrata_app;
SELECT FROM pg_temp.ctx('a0000000-0000-4000-8000-000000000000', 'a1000000-0000-4000-8000-000000000000');
SELECT ok(billing.tenant_has_feature('a0000000-0000-4000-8000-000000000000', 'tap_seats'),
          'A has the feature its active subscription''s product grants');
SELECT is((SELECT product_id FROM billing.tenant_current_plan('a0000000-0000-4000-8000-000000000000')), 'prod_tap',
          'A''s current plan is its subscription''s product');
SELECT FROM pg_temp.ctx('b0000000-0000-4000-8000-000000000000', 'b1000000-0000-4000-8000-000000000000');
SELECT ok(NOT billing.tenant_has_feature('a0000000-0000-4000-8000-000000000000', 'tap_seats'),
          'B cannot learn A''s features by naming A');
SELECT is_empty($$SELECT * FROM billing.tenant_current_plan('a0000000-0000-4000-8000-000000000000')$$,
                'B cannot learn A''s plan by naming A');
SELECT is(pg_temp.outcome('SELECT count(*) FROM billing.events'), '42501', 'the application cannot read the event ledger');
SELECT is(pg_temp.outcome('SELECT count(*) FROM billing.customer_links'), '42501', 'the application cannot read the customer links');
RESET ROLE;

SELECT * FROM finish();
ROLLBACK;
