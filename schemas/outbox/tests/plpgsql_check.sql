-- outbox: plpgsql_check over every PL/pgSQL function of the schema, with the security,
-- performance and extra warnings on (see ../../tenancy/tests/plpgsql_check.psql). One
-- transaction, rolled back.
BEGIN;
CREATE EXTENSION IF NOT EXISTS pgtap;
SET LOCAL client_min_messages = warning;
\set schema outbox
CREATE TEMP TABLE tap_suppressed (fn text, pattern text, reason text) ON COMMIT DROP;
INSERT INTO tap_suppressed (fn, pattern, reason)
VALUES ('outbox.send_webhooks(text[],bytea[],text[])',
        'performance: routine is marked as VOLATILE, should be STABLE',
        'it calls webhooks.send (which inserts) through EXECUTE, so the module need not be installed; the checker cannot see its volatility (it says so); STABLE would be wrong');
\ir ../../tenancy/tests/plpgsql_check.psql
SELECT * FROM finish();
ROLLBACK;
