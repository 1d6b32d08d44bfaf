-- tenancy: plpgsql_check over every PL/pgSQL function and trigger of the schema, with the security,
-- performance and extra warnings on (see ../../tenancy/tests/plpgsql_check.psql). Findings that
-- are not defects are listed below with the reason; landed migrations are never edited, so the
-- list lives here rather than as comments in the functions. One transaction, rolled back.
BEGIN;
CREATE EXTENSION IF NOT EXISTS pgtap;
SET LOCAL client_min_messages = warning;
\set schema tenancy
CREATE TEMP TABLE tap_suppressed (fn text, pattern text, reason text) ON COMMIT DROP;
-- Without rbac, the guard's dynamic call of rbac.check is checked against a schema that is
-- not there; the guard only runs it when rbac is installed.
INSERT INTO tap_suppressed (fn, pattern, reason)
SELECT 'tenancy.memberships_guard()', 'error: schema "rbac" does not exist',
       'EXECUTE of rbac.check, reached only when the rbac schema exists (checked just before)'
 WHERE to_regnamespace('rbac') IS NULL;
-- make_tenant_table changes the table it is given through EXECUTE (ALTER TABLE, CREATE POLICY),
-- which plpgsql_check cannot see into.
INSERT INTO tap_suppressed (fn, pattern, reason)
VALUES ('tenancy.make_tenant_table(regclass,boolean)', 'routine is marked as VOLATILE, should be STABLE',
        'its ALTER TABLE and CREATE POLICY run through EXECUTE, which the checker cannot classify');
INSERT INTO tap_suppressed (fn, pattern, reason)
VALUES ('tenancy.create_month_partition(regclass,date,regprocedure)',
        'performance: routine is marked as VOLATILE, should be STABLE',
        'it creates a partition through dynamic DDL, which plpgsql_check cannot see (it says so); STABLE would be wrong');
\ir ../../tenancy/tests/plpgsql_check.psql
SELECT * FROM finish();
ROLLBACK;
