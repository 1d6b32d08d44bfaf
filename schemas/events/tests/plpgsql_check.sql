-- events: plpgsql_check over every PL/pgSQL function and trigger of the schema, with the
-- security, performance and extra warnings on (see ../../tenancy/tests/plpgsql_check.psql).
-- Findings that are not defects are listed below with the reason. One transaction, rolled back.
BEGIN;
CREATE EXTENSION IF NOT EXISTS pgtap;
SET LOCAL client_min_messages = warning;
\set schema events
-- events.create_partition is SQL since events V2 (tenancy.create_month_partition does the DDL):
-- nothing to suppress.
CREATE TEMP TABLE tap_suppressed (fn text, pattern text, reason text) ON COMMIT DROP;
\ir ../../tenancy/tests/plpgsql_check.psql
SELECT * FROM finish();
ROLLBACK;
