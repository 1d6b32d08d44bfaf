-- billing: plpgsql_check over every PL/pgSQL function and trigger of the schema, with the security,
-- performance and extra warnings on (see ../../tenancy/tests/plpgsql_check.psql). Findings that
-- are not defects are listed below with the reason; landed migrations are never edited, so the
-- list lives here rather than as comments in the functions. One transaction, rolled back.
BEGIN;
CREATE EXTENSION IF NOT EXISTS pgtap;
SET LOCAL client_min_messages = warning;
\set schema billing
CREATE TEMP TABLE tap_suppressed (fn text, pattern text, reason text) ON COMMIT DROP;
INSERT INTO tap_suppressed (fn, pattern, reason) VALUES
    ('billing.link_customer(text)',
     'performance: routine is marked as VOLATILE, should be IMMUTABLE',
     'V1''s signature, kept only to refuse the application role with 42501; as IMMUTABLE the planner could fold it, raising at plan time; never on a hot path'),
    ('billing.apply_payload(text,text,timestamp with time zone,jsonb,text,text,jsonb,text)',
     'warning extra: never read variable "v_set"',
     'set_config''s result is assigned so that it runs as a PL/pgSQL expression, not as a query (PERFORM): V6, D-204');
\ir ../../tenancy/tests/plpgsql_check.psql
SELECT * FROM finish();
ROLLBACK;
