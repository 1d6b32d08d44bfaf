-- queue: plpgsql_check over every PL/pgSQL function and trigger of the schema, with the security,
-- performance and extra warnings on (see ../../tenancy/tests/plpgsql_check.psql). Findings that
-- are not defects are listed below with the reason; landed migrations are never edited, so the
-- list lives here rather than as comments in the functions. One transaction, rolled back.
BEGIN;
CREATE EXTENSION IF NOT EXISTS pgtap;
SET LOCAL client_min_messages = warning;
\set schema queue
CREATE TEMP TABLE tap_suppressed (fn text, pattern text, reason text) ON COMMIT DROP;
-- Nothing suppressed: every function is clean.
\ir ../../tenancy/tests/plpgsql_check.psql
SELECT * FROM finish();
ROLLBACK;
