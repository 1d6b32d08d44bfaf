-- rbac: nobody grants what they do not hold (SECURITY.md, rbac). Each known escalation, tried
-- by a plain member (Adam) as the application role, is refused; the owner's legitimate changes
-- pass; deny wins. One transaction, rolled back.
BEGIN;
CREATE EXTENSION IF NOT EXISTS pgtap;
SELECT plan(20);
\ir ../../tenancy/tests/fixtures.psql
\ir fixtures.psql

-- Set up past the guards: a group holding admin, a deny on Adam, and Carol, a second member
-- of A, holding admin until tomorrow.
INSERT INTO tenancy.memberships (tenant_id, user_id, role) VALUES
    ('a0000000-0000-4000-8000-000000000000', 'c1000000-0000-4000-8000-000000000000', 'member');
INSERT INTO rbac.grants (tenant_id, principal_type, principal_id, role_key) VALUES
    ('a0000000-0000-4000-8000-000000000000', 'group', 'a8000000-0000-4000-8000-000000000000', 'admin');
INSERT INTO rbac.grants (tenant_id, principal_type, principal_id, permission, effect) VALUES
    ('a0000000-0000-4000-8000-000000000000', 'user', 'a2000000-0000-4000-8000-000000000000', 'invoice:update', 'deny');
INSERT INTO rbac.grants (tenant_id, principal_type, principal_id, role_key, expires_at) VALUES
    ('a0000000-0000-4000-8000-000000000000', 'user', 'c1000000-0000-4000-8000-000000000000', 'admin', now() + interval '1 day');

SET LOCAL ROLE pgstrata_app;
SELECT FROM pg_temp.ctx('a0000000-0000-4000-8000-000000000000', 'a2000000-0000-4000-8000-000000000000');

-- An empty role granted to oneself is harmless; putting more in it is not.
SELECT lives_ok($$INSERT INTO rbac.roles (tenant_id, key) VALUES ('a0000000-0000-4000-8000-000000000000', 'tap_empty')$$,
                'a member may create an empty role');
SELECT lives_ok($$INSERT INTO rbac.grants (tenant_id, principal_type, principal_id, role_key)
                  VALUES ('a0000000-0000-4000-8000-000000000000', 'user', 'a2000000-0000-4000-8000-000000000000', 'tap_empty')$$,
                'and grant it to itself');
SELECT throws_ok($$INSERT INTO rbac.role_permissions (tenant_id, role_key, permission)
                   VALUES ('a0000000-0000-4000-8000-000000000000', 'tap_empty', '*')$$,
                 'PS403', NULL, 'but cannot then add * to it');
SELECT throws_ok($$INSERT INTO rbac.role_permissions (tenant_id, role_key, permission)
                   VALUES ('a0000000-0000-4000-8000-000000000000', 'tap_reporter', 'invoice:delete')$$,
                 'PS403', NULL, 'a permission the actor lacks cannot be added to a role it holds');
SELECT throws_ok($$INSERT INTO rbac.role_parents (tenant_id, role_key, parent_key)
                   VALUES ('a0000000-0000-4000-8000-000000000000', 'tap_empty', 'owner')$$,
                 'PS403', NULL, 'a parent edge to owner is refused');
SELECT throws_ok($$INSERT INTO rbac.role_parents (tenant_id, role_key, parent_key)
                   VALUES ('a0000000-0000-4000-8000-000000000000', 'tap_empty', 'admin')$$,
                 'PS403', NULL, 'a parent edge to admin is refused');
SELECT throws_ok($$INSERT INTO rbac.grants (tenant_id, principal_type, principal_id, role_key)
                   VALUES ('a0000000-0000-4000-8000-000000000000', 'user', 'a2000000-0000-4000-8000-000000000000', 'admin')$$,
                 'PS403', NULL, 'a member cannot grant itself admin');
SELECT throws_ok($$INSERT INTO rbac.group_members (tenant_id, group_id, principal_type, principal_id)
                   VALUES ('a0000000-0000-4000-8000-000000000000', 'a8000000-0000-4000-8000-000000000000', 'user',
                           'a2000000-0000-4000-8000-000000000000')$$,
                 'PS403', NULL, 'a member cannot join a group that holds admin');
SELECT throws_ok($$DELETE FROM rbac.grants WHERE principal_id = 'a2000000-0000-4000-8000-000000000000' AND effect = 'deny'$$,
                 'PS403', NULL, 'a member cannot delete a deny that restricts it');
SELECT ok(pg_temp.outcome($$UPDATE tenancy.memberships SET role = 'owner'
                            WHERE user_id = 'a2000000-0000-4000-8000-000000000000'$$) IN ('PS403', '42501'),
          'a member cannot update its membership to owner');
SELECT ok(pg_temp.outcome($$SELECT tenancy.create_invitation('new@pgtap.invalid', 'owner')$$) IN ('PS403', '42501'),
          'a member cannot invite an owner');
SELECT FROM pg_temp.ctx('a0000000-0000-4000-8000-000000000000', NULL);
SELECT throws_ok($$INSERT INTO rbac.grants (tenant_id, principal_type, principal_id, permission)
                   VALUES ('a0000000-0000-4000-8000-000000000000', 'user', 'a2000000-0000-4000-8000-000000000000', 'invoice:read')$$,
                 'PS403', NULL, 'granting needs an acting user');

-- An expiring admin grant does not mint permanent grants.
SELECT FROM pg_temp.ctx('a0000000-0000-4000-8000-000000000000', 'c1000000-0000-4000-8000-000000000000');
SELECT throws_ok($$INSERT INTO rbac.grants (tenant_id, principal_type, principal_id, permission)
                   VALUES ('a0000000-0000-4000-8000-000000000000', 'api_key', 'a7000000-0000-4000-8000-000000000000', 'invoice:delete')$$,
                 'PS403', NULL, 'an expiring admin cannot grant for good');
SELECT lives_ok($$INSERT INTO rbac.grants (tenant_id, principal_type, principal_id, permission, expires_at)
                  VALUES ('a0000000-0000-4000-8000-000000000000', 'api_key', 'a7000000-0000-4000-8000-000000000000',
                          'invoice:delete', now() + interval '1 hour')$$,
                'an expiring admin grants for no longer than it holds');

-- The owner's legitimate changes pass; deny wins over any allow; the graph stays acyclic.
SELECT FROM pg_temp.ctx('a0000000-0000-4000-8000-000000000000', 'a1000000-0000-4000-8000-000000000000');
SELECT lives_ok($$INSERT INTO rbac.grants (tenant_id, principal_type, principal_id, permission)
                  VALUES ('a0000000-0000-4000-8000-000000000000', 'user', 'a2000000-0000-4000-8000-000000000000', 'invoice:*')$$,
                'the owner grants what it holds');
SELECT ok(NOT rbac.check('user', 'a2000000-0000-4000-8000-000000000000', 'invoice:update'),
          'deny wins: invoice:* allowed, invoice:update denied');
SELECT ok(rbac.check('user', 'a2000000-0000-4000-8000-000000000000', 'invoice:delete'), 'and the rest of invoice:* is allowed');
SELECT lives_ok($$INSERT INTO rbac.role_parents (tenant_id, role_key, parent_key)
                  VALUES ('a0000000-0000-4000-8000-000000000000', 'tap_empty', 'tap_reporter')$$,
                'the owner adds an edge');
SELECT throws_ok($$INSERT INTO rbac.role_parents (tenant_id, role_key, parent_key)
                   VALUES ('a0000000-0000-4000-8000-000000000000', 'tap_reporter', 'tap_empty')$$,
                 'PS422', NULL, 'an edge that closes a cycle is refused');
SELECT throws_ok($$INSERT INTO rbac.roles (tenant_id, key) VALUES ('a0000000-0000-4000-8000-000000000000', 'admin')$$,
                 '23505', NULL, 'a custom role cannot take a system role''s key');

RESET ROLE;
SELECT * FROM finish();
ROLLBACK;
