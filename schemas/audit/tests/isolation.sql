-- audit: the log and its chain are isolated per tenant for the application role; the worker and
-- the operator reach them only through their functions. One transaction, rolled back.
BEGIN;
CREATE EXTENSION IF NOT EXISTS pgtap;
SELECT plan(40);
\ir ../../tenancy/tests/fixtures.psql
\ir fixtures.psql

SELECT is(ARRAY(SELECT pg_temp.tenant_tables('audit') ORDER BY 1),
          ARRAY['audit.chain_heads', 'audit.checkpoints', 'audit.records', 'audit.seals'],
          'the tenant tables of audit are the ones this suite covers');
SELECT * FROM pg_temp.isolation('audit.records');
SELECT * FROM pg_temp.isolation('audit.seals');
SELECT * FROM pg_temp.isolation('audit.chain_heads');
SELECT * FROM pg_temp.isolation('audit.checkpoints');

-- Partitions are reached through the partitioned table only (where RLS applies).
SELECT is(ARRAY(SELECT c.oid::regclass::text FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid
                 WHERE i.inhparent = 'audit.records'::regclass
                   AND (has_table_privilege('pgstrata_app', c.oid, 'SELECT')
                        OR has_table_privilege('pgstrata_worker', c.oid, 'SELECT'))),
          '{}'::text[], 'no pgstrata role may read a partition directly');
SET LOCAL ROLE pgstrata_worker;
SELECT is(pg_temp.outcome('SELECT count(*) FROM audit.records'), '42501', 'the worker cannot read records directly');
SET LOCAL ROLE pgstrata_operator;
SELECT is(pg_temp.outcome('SELECT count(*) FROM audit.records'), '42501', 'the operator cannot read records');
RESET ROLE;

SELECT * FROM finish();
ROLLBACK;
