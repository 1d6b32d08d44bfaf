-- tenancy: every tenant table is isolated for the application role (pgstrata_app): another
-- tenant's rows cannot be read, changed, moved or written, and no tenant, an empty setting, an
-- unknown or a deleted tenant sees nothing. Safe on any database: one transaction, rolled back.
BEGIN;
CREATE EXTENSION IF NOT EXISTS pgtap;
SELECT plan(39);
\ir fixtures.psql

INSERT INTO tenancy.invitations (tenant_id, email, role, token_hash, expires_at, invited_by)
VALUES ('a0000000-0000-4000-8000-000000000000', 'invitee@pgtap.invalid', 'member',
        sha256('pgtap'::bytea), now() + interval '1 day', 'a1000000-0000-4000-8000-000000000000');

SELECT is(ARRAY(SELECT pg_temp.tenant_tables('tenancy') ORDER BY 1),
          ARRAY['tenancy.invitations', 'tenancy.memberships'],
          'the tenant tables of tenancy are the ones this suite covers');
SELECT * FROM pg_temp.isolation('tenancy.memberships');
SELECT * FROM pg_temp.isolation('tenancy.invitations');

SET LOCAL ROLE pgstrata_app;

-- The tenants table is keyed by id: a context sees its own row only.
SELECT FROM pg_temp.ctx('b0000000-0000-4000-8000-000000000000', 'b1000000-0000-4000-8000-000000000000');
SELECT is(ARRAY(SELECT id FROM tenancy.tenants), ARRAY['b0000000-0000-4000-8000-000000000000'::uuid],
          'tenants: B''s context sees its own tenant row only');
SELECT is(pg_temp.outcome($$UPDATE tenancy.tenants SET name = 'taken' WHERE id = 'a0000000-0000-4000-8000-000000000000'$$),
          '0 rows', 'tenants: B''s context cannot rename A');
SELECT is(pg_temp.outcome($$INSERT INTO tenancy.tenants (id, slug, name) VALUES ('e0000000-0000-4000-8000-000000000000', 'pgtap-e', 'E')$$),
          '42501', 'tenants: B''s context cannot create a tenant row other than its own');
SELECT is(pg_temp.outcome($$DELETE FROM tenancy.tenants WHERE id = 'b0000000-0000-4000-8000-000000000000'$$),
          '42501', 'tenants: the application cannot delete a tenant, not even its own');

-- Users: visible to themselves and to their tenants' members, written only by themselves.
SELECT is(ARRAY(SELECT id FROM tenancy.users ORDER BY id), ARRAY['b1000000-0000-4000-8000-000000000000'::uuid],
          'users: in B, Bob sees only B''s members');
SELECT is(pg_temp.outcome($$UPDATE tenancy.users SET display_name = 'x' WHERE id = 'a1000000-0000-4000-8000-000000000000'$$),
          '0 rows', 'users: Bob cannot change Alice');
SELECT is(pg_temp.outcome($$INSERT INTO tenancy.users (id, email) VALUES ('e1000000-0000-4000-8000-000000000000', 'e@pgtap.invalid')$$),
          '42501', 'users: a user row is created only by that user (id = the actor)');
SELECT FROM pg_temp.ctx('a0000000-0000-4000-8000-000000000000', 'a1000000-0000-4000-8000-000000000000');
SELECT is(ARRAY(SELECT id FROM tenancy.users ORDER BY id),
          ARRAY['a1000000-0000-4000-8000-000000000000', 'a2000000-0000-4000-8000-000000000000']::uuid[],
          'users: in A, Alice sees A''s members and not Bob');
SELECT FROM pg_temp.ctx(NULL, NULL);
SELECT is((SELECT count(*) FROM tenancy.users), 0::bigint, 'users: no context sees no user');
SELECT is((SELECT count(*) FROM tenancy.tenants), 0::bigint, 'tenants: no context sees no tenant');

-- A deleted or unknown tenant is no tenant; a suspended one reads and writes nothing.
SELECT FROM pg_temp.ctx('d0000000-0000-4000-8000-000000000000', 'd1000000-0000-4000-8000-000000000000');
SELECT is(tenancy.current_tenant_id(), NULL, 'a deleted tenant''s context is no tenant');
SELECT is((SELECT count(*) FROM tenancy.memberships), 0::bigint, 'a deleted tenant''s context sees none of its memberships');
SELECT FROM pg_temp.ctx('e0000000-0000-4000-8000-000000000000', NULL);
SELECT is(tenancy.current_tenant_id(), NULL, 'an unknown tenant''s context is no tenant');
SELECT FROM pg_temp.ctx('not-a-uuid', NULL);
SELECT throws_ok('SELECT tenancy.current_tenant_id()', '22P02', NULL, 'a malformed tenant setting is an error, not a tenant');
SELECT FROM pg_temp.ctx('50000000-0000-4000-8000-000000000000', '51000000-0000-4000-8000-000000000000');
SELECT is((SELECT count(*) FROM tenancy.memberships), 1::bigint, 'a suspended tenant reads its memberships');
SELECT is(pg_temp.outcome($$UPDATE tenancy.memberships SET role = role$$), '0 rows', 'a suspended tenant updates nothing');
SELECT is(pg_temp.outcome($$INSERT INTO tenancy.invitations (tenant_id, email, token_hash, expires_at, invited_by)
                            VALUES ('50000000-0000-4000-8000-000000000000', 'x@pgtap.invalid', sha256('s'::bytea),
                                    now() + interval '1 day', '51000000-0000-4000-8000-000000000000')$$),
          '42501', 'a suspended tenant inserts nothing');
SELECT is(pg_temp.outcome($$DELETE FROM tenancy.memberships$$), '0 rows', 'a suspended tenant deletes nothing');

-- PostgREST and Supabase: the tenant from the JWT claims, with the same isolation.
SELECT FROM pg_temp.ctx(NULL, NULL);
SELECT FROM set_config('request.jwt.claims', '{"tenant_id": "b0000000-0000-4000-8000-000000000000", "sub": "b1000000-0000-4000-8000-000000000000"}', true);
SELECT is(tenancy.current_tenant_id(), 'b0000000-0000-4000-8000-000000000000'::uuid, 'the JWT claims'' tenant_id is the tenant');
SELECT is(pg_temp.visible('tenancy.memberships', 'a0000000-0000-4000-8000-000000000000'), 0::bigint,
          'a JWT for B sees none of A''s memberships');
SELECT FROM set_config('request.jwt.claims', '', true);

RESET ROLE;
SELECT * FROM finish();
ROLLBACK;
