-- events: plpgsql_check over every PL/pgSQL function and trigger of the schema, with the
-- security, performance and extra warnings on (see ../../tenancy/tests/plpgsql_check.psql).
-- Findings that are not defects are listed below with the reason. One transaction, rolled back.
BEGIN;
CREATE EXTENSION IF NOT EXISTS pgtap;
SET LOCAL client_min_messages = warning;
\set schema events
CREATE TEMP TABLE tap_suppressed (fn text, pattern text, reason text) ON COMMIT DROP;
INSERT INTO tap_suppressed (fn, pattern, reason) VALUES
    ('events.create_partition(date)',
     'performance: routine is marked as VOLATILE, should be STABLE',
     'it creates a partition through dynamic DDL, which plpgsql_check cannot see (it says so); STABLE would be wrong');
\ir ../../tenancy/tests/plpgsql_check.psql
SELECT * FROM finish();
ROLLBACK;
