-- tenancy: the guards the application role meets: stale versions, operator fields, consent to
-- membership, who gives roles, invitations and their one-way states, the lookups before a
-- tenant is chosen. Holds with and without rbac installed. One transaction, rolled back.
BEGIN;
CREATE EXTENSION IF NOT EXISTS pgtap;
SELECT plan(28);
\ir fixtures.psql

SET LOCAL ROLE pgstrata_app;
SELECT FROM pg_temp.ctx('a0000000-0000-4000-8000-000000000000', 'a1000000-0000-4000-8000-000000000000');

-- Versioned rows: an update that names a stale version is refused; the current one bumps it.
SELECT throws_ok($$UPDATE tenancy.memberships SET version = version - 1
                    WHERE user_id = 'a2000000-0000-4000-8000-000000000000'$$,
                 'PS409', NULL, 'an update naming a stale version is refused (PS409)');
SELECT is((SELECT version FROM tenancy.memberships WHERE user_id = 'a2000000-0000-4000-8000-000000000000'), 1::bigint,
          'the refused update left the version alone');
UPDATE tenancy.memberships SET version = 1 WHERE user_id = 'a2000000-0000-4000-8000-000000000000';
SELECT is((SELECT version FROM tenancy.memberships WHERE user_id = 'a2000000-0000-4000-8000-000000000000'), 2::bigint,
          'an update naming the current version succeeds and bumps it');
SELECT throws_ok($$UPDATE tenancy.tenants SET name = 'Renamed', version = 7 WHERE id = 'a0000000-0000-4000-8000-000000000000'$$,
                 'PS409', NULL, 'tenants are versioned too');

-- Operator fields: the request path cannot change its tenant's status, settings, domain or deletion.
SELECT is(pg_temp.outcome($$UPDATE tenancy.tenants SET status = 'active'$$), '42501', 'the application cannot change status');
SELECT is(pg_temp.outcome($$UPDATE tenancy.tenants SET settings = '{"plan": "enterprise"}'$$), '42501', 'the application cannot change settings');
SELECT is(pg_temp.outcome($$UPDATE tenancy.tenants SET domain = 'evil.example.com'$$), '42501', 'the application cannot change domain');
SELECT is(pg_temp.outcome($$UPDATE tenancy.tenants SET deleted_at = NULL$$), '42501', 'the application cannot change deleted_at');
SELECT is(pg_temp.outcome($$UPDATE tenancy.tenants SET name = 'Acme'$$), '1 rows', 'the application renames its tenant');

-- Memberships: only with the user's consent; roles given by those allowed to.
SELECT is(pg_temp.outcome($$INSERT INTO tenancy.memberships (tenant_id, user_id, role)
                            VALUES ('a0000000-0000-4000-8000-000000000000', 'c1000000-0000-4000-8000-000000000000', 'member')$$),
          '42501', 'a member cannot enrol another user, not even as an owner');
SELECT is(pg_temp.outcome($$UPDATE tenancy.memberships SET user_id = 'c1000000-0000-4000-8000-000000000000'
                            WHERE user_id = 'a2000000-0000-4000-8000-000000000000'$$),
          '42501', 'a membership never moves to another user');
SELECT FROM pg_temp.ctx('a0000000-0000-4000-8000-000000000000', 'a2000000-0000-4000-8000-000000000000');
SELECT ok(pg_temp.outcome($$UPDATE tenancy.memberships SET role = 'owner' WHERE user_id = 'a2000000-0000-4000-8000-000000000000'$$)
              IN ('42501', 'PS403'),
          'a member cannot make itself owner');
SELECT ok(pg_temp.outcome($$DELETE FROM tenancy.memberships WHERE user_id = 'a1000000-0000-4000-8000-000000000000'$$)
              IN ('42501', 'PS403'),
          'a member cannot remove the owner');
SELECT is(pg_temp.outcome($$DELETE FROM tenancy.memberships WHERE user_id = 'a2000000-0000-4000-8000-000000000000'$$),
          '1 rows', 'a member may leave');
SELECT FROM pg_temp.ctx('a0000000-0000-4000-8000-000000000000', NULL);
SELECT is(pg_temp.outcome($$UPDATE tenancy.memberships SET role = 'member'$$), '42501',
          'changing memberships needs an acting user');

-- Invitations: sent by the actor, bounded, closed only towards revoked or expired, accepted
-- only by the invitee.
SELECT is(pg_temp.outcome($$SELECT tenancy.create_invitation('x@pgtap.invalid')$$), '42501', 'inviting needs an acting user');
SELECT FROM pg_temp.ctx('a0000000-0000-4000-8000-000000000000', 'a1000000-0000-4000-8000-000000000000');
SELECT is(pg_temp.outcome($$SELECT tenancy.create_invitation('x@pgtap.invalid', 'member', interval '1 day',
                                                             'b1000000-0000-4000-8000-000000000000')$$),
          '42501', 'an invitation cannot name another sender');
SELECT is(pg_temp.outcome($$SELECT tenancy.create_invitation('x@pgtap.invalid', 'member', interval '1 year')$$),
          '22023', 'an invitation lasts at most 90 days');
CREATE TEMP TABLE tap_invite ON COMMIT DROP AS
SELECT * FROM tenancy.create_invitation('carol@pgtap.invalid', 'member', interval '1 day');
RESET ROLE;
GRANT SELECT ON tap_invite TO PUBLIC;
SET LOCAL ROLE pgstrata_app;
SELECT is(pg_temp.outcome($$UPDATE tenancy.invitations SET status = 'accepted' WHERE id = (SELECT invitation_id FROM tap_invite)$$),
          '42501', 'the application cannot mark an invitation accepted');
SELECT is(pg_temp.outcome($$UPDATE tenancy.invitations SET status = 'revoked' WHERE id = (SELECT invitation_id FROM tap_invite)$$),
          '1 rows', 'the application may revoke a pending invitation');
SELECT FROM pg_temp.ctx('a0000000-0000-4000-8000-000000000000', 'a2000000-0000-4000-8000-000000000000');
SELECT is(pg_temp.outcome($$SELECT tenancy.accept_invitation((SELECT token FROM tap_invite), 'c1000000-0000-4000-8000-000000000000')$$),
          '42501', 'nobody accepts an invitation for someone else');
SELECT FROM pg_temp.ctx('a0000000-0000-4000-8000-000000000000', 'c1000000-0000-4000-8000-000000000000');
SELECT is(pg_temp.outcome($$SELECT tenancy.accept_invitation('a0000000000040008000000000000000.wrong', 'c1000000-0000-4000-8000-000000000000')$$),
          'PS404', 'a wrong token is not found');
SELECT FROM pg_temp.ctx('a0000000-0000-4000-8000-000000000000', 'f9000000-0000-4000-8000-000000000000');
SELECT is(pg_temp.outcome($$SELECT tenancy.accept_invitation((SELECT token FROM tap_invite), 'f9000000-0000-4000-8000-000000000000')$$),
          '23503', 'an actor with no user row is a missing reference (memberships_user_fkey), not a wrong token');
SELECT FROM pg_temp.ctx('a0000000-0000-4000-8000-000000000000', 'c1000000-0000-4000-8000-000000000000');
CREATE TEMP TABLE tap_accepted ON COMMIT DROP AS
SELECT tenancy.accept_invitation((SELECT token FROM tap_invite), 'c1000000-0000-4000-8000-000000000000') AS id;
SELECT is((SELECT id FROM tap_accepted),
          (SELECT id FROM tenancy.memberships WHERE user_id = 'c1000000-0000-4000-8000-000000000000' AND role = 'member'),
          'the invitee accepts and becomes a member with the invitation''s role');
SELECT is(tenancy.accept_invitation((SELECT token FROM tap_invite), 'c1000000-0000-4000-8000-000000000000'),
          (SELECT id FROM tap_accepted), 'accepting again returns the same membership (exactly once)');

-- Before a tenant is chosen: only the actor's own tenants.
SELECT FROM pg_temp.ctx(NULL, 'b1000000-0000-4000-8000-000000000000');
SELECT is(ARRAY(SELECT tenant_id FROM tenancy.actor_tenants()), ARRAY['b0000000-0000-4000-8000-000000000000'::uuid],
          'actor_tenants() lists the actor''s tenants only');
SELECT is_empty(format('SELECT * FROM tenancy.resolve_tenant(%L)', 'pgtap-a-' || txid_current()),
                'resolve_tenant() does not reveal a tenant the actor does not belong to');
SELECT is(ARRAY(SELECT tenant_id FROM tenancy.resolve_tenant('pgtap-b-' || txid_current())),
          ARRAY['b0000000-0000-4000-8000-000000000000'::uuid], 'resolve_tenant() finds the actor''s own tenant');

RESET ROLE;
SELECT * FROM finish();
ROLLBACK;
