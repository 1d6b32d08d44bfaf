-- webhooks: plpgsql_check over every PL/pgSQL function of the schema, with the security,
-- performance and extra warnings on (see ../../tenancy/tests/plpgsql_check.psql). One
-- transaction, rolled back.
BEGIN;
CREATE EXTENSION IF NOT EXISTS pgtap;
SET LOCAL client_min_messages = warning;
\set schema webhooks
CREATE TEMP TABLE tap_suppressed (fn text, pattern text, reason text) ON COMMIT DROP;
INSERT INTO tap_suppressed VALUES
    ('webhooks.claim(integer,text,interval)', 'cast "numeric" value to "bigint" type.*v_take',
     'V1''s claim computes the share as numeric; least() then casts it once per endpoint visited');
\ir ../../tenancy/tests/plpgsql_check.psql
SELECT * FROM finish();
ROLLBACK;
