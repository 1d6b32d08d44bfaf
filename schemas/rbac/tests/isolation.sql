-- rbac: every tenant table is isolated for the application role, and a check in one tenant
-- never sees another tenant's grants. One transaction, rolled back.
BEGIN;
CREATE EXTENSION IF NOT EXISTS pgtap;
SELECT plan(59);
\ir ../../tenancy/tests/fixtures.psql
\ir fixtures.psql

SELECT is(ARRAY(SELECT pg_temp.tenant_tables('rbac') ORDER BY 1),
          ARRAY['rbac.grants', 'rbac.group_members', 'rbac.role_graph_locks', 'rbac.role_parents',
                'rbac.role_permissions', 'rbac.roles'],
          'the tenant tables of rbac are the ones this suite covers');
SELECT * FROM pg_temp.isolation('rbac.roles');
SELECT * FROM pg_temp.isolation('rbac.role_permissions');
SELECT * FROM pg_temp.isolation('rbac.role_parents');
SELECT * FROM pg_temp.isolation('rbac.group_members');
SELECT * FROM pg_temp.isolation('rbac.grants');
SELECT * FROM pg_temp.isolation('rbac.role_graph_locks');

SET LOCAL ROLE pgstrata_app;
SELECT FROM pg_temp.ctx('a0000000-0000-4000-8000-000000000000', 'a1000000-0000-4000-8000-000000000000');
SELECT ok(rbac.check('user', 'a2000000-0000-4000-8000-000000000000', 'report:export'),
          'in A, Adam holds what A granted him');
SELECT FROM pg_temp.ctx('b0000000-0000-4000-8000-000000000000', 'b1000000-0000-4000-8000-000000000000');
SELECT ok(NOT rbac.check('user', 'a2000000-0000-4000-8000-000000000000', 'report:export'),
          'in B, A''s grants to Adam count for nothing');
SELECT ok(NOT rbac.check('user', 'a1000000-0000-4000-8000-000000000000', 'invoice:read'),
          'in B, A''s owner holds nothing');
SELECT FROM pg_temp.ctx(NULL, 'a1000000-0000-4000-8000-000000000000');
SELECT ok(NOT coalesce(rbac.check('user', 'a1000000-0000-4000-8000-000000000000', 'invoice:read'), false),
          'with no tenant, even an owner holds nothing');
RESET ROLE;

SELECT * FROM finish();
ROLLBACK;
