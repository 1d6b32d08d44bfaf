-- Demo data for the tenancy module: two tenants, four users, their memberships and one pending
-- invitation. Idempotent (fixed ids, ON CONFLICT DO NOTHING), so it can be loaded again.
-- Every write runs in the context the row-level policies demand, exactly as an application
-- would: a user creates itself (app.actor_id), a tenant writes its own rows (app.tenant_id).
-- Load inside one transaction: psql -v ON_ERROR_STOP=1 --single-transaction -f seed.sql

-- Users, each acting as itself.
SELECT set_config('app.actor_id', '01900000-0000-7000-8000-00000000a11c', true);
INSERT INTO tenancy.users (id, email, display_name)
VALUES ('01900000-0000-7000-8000-00000000a11c', 'alice@acme.example', 'Alice (Acme owner)')
ON CONFLICT DO NOTHING;
SELECT set_config('app.actor_id', '01900000-0000-7000-8000-000000000b0b', true);
INSERT INTO tenancy.users (id, email, display_name)
VALUES ('01900000-0000-7000-8000-000000000b0b', 'bob@acme.example', 'Bob (Acme member)')
ON CONFLICT DO NOTHING;
SELECT set_config('app.actor_id', '01900000-0000-7000-8000-00000000ca01', true);
INSERT INTO tenancy.users (id, email, display_name)
VALUES ('01900000-0000-7000-8000-00000000ca01', 'carol@globex.example', 'Carol (Globex owner)')
ON CONFLICT DO NOTHING;
SELECT set_config('app.actor_id', '01900000-0000-7000-8000-00000000da7e', true);
INSERT INTO tenancy.users (id, email, display_name)
VALUES ('01900000-0000-7000-8000-00000000da7e', 'dave@globex.example', 'Dave (member of both)')
ON CONFLICT DO NOTHING;
SELECT set_config('app.actor_id', '', true);

-- Tenant "acme".
SELECT set_config('app.tenant_id', '01900000-0000-7000-8000-00000000ac4e', true);
INSERT INTO tenancy.tenants (id, slug, name, settings)
VALUES ('01900000-0000-7000-8000-00000000ac4e', 'acme', 'Acme Corporation', '{"plan": "pro", "seats": 25}')
ON CONFLICT DO NOTHING;
INSERT INTO tenancy.memberships (tenant_id, id, user_id, role) VALUES
    ('01900000-0000-7000-8000-00000000ac4e', '01900000-0000-7000-8000-0000000a0001', '01900000-0000-7000-8000-00000000a11c', 'owner'),
    ('01900000-0000-7000-8000-00000000ac4e', '01900000-0000-7000-8000-0000000a0002', '01900000-0000-7000-8000-000000000b0b', 'member'),
    ('01900000-0000-7000-8000-00000000ac4e', '01900000-0000-7000-8000-0000000a0003', '01900000-0000-7000-8000-00000000da7e', 'viewer')
ON CONFLICT DO NOTHING;
-- Pending invitation for erin; its token (shown here only because this is demo data) is
-- 0190000000007000800000000000ac4e.00000000000000000000000000000000000000000000000000000000000e4141
INSERT INTO tenancy.invitations (tenant_id, id, email, role, token_hash, expires_at, invited_by)
VALUES ('01900000-0000-7000-8000-00000000ac4e', '01900000-0000-7000-8000-0000000a1001', 'erin@example.com', 'member',
        sha256(convert_to('0190000000007000800000000000ac4e.00000000000000000000000000000000000000000000000000000000000e4141', 'UTF8')),
        now() + interval '30 days', '01900000-0000-7000-8000-00000000a11c')
ON CONFLICT DO NOTHING;

-- Tenant "globex".
SELECT set_config('app.tenant_id', '01900000-0000-7000-8000-00000000610b', true);
INSERT INTO tenancy.tenants (id, slug, name, settings)
VALUES ('01900000-0000-7000-8000-00000000610b', 'globex', 'Globex', '{"plan": "starter", "seats": 5}')
ON CONFLICT DO NOTHING;
INSERT INTO tenancy.memberships (tenant_id, id, user_id, role) VALUES
    ('01900000-0000-7000-8000-00000000610b', '01900000-0000-7000-8000-0000000b0001', '01900000-0000-7000-8000-00000000ca01', 'owner'),
    ('01900000-0000-7000-8000-00000000610b', '01900000-0000-7000-8000-0000000b0002', '01900000-0000-7000-8000-00000000da7e', 'member')
ON CONFLICT DO NOTHING;

SELECT set_config('app.tenant_id', '', true);
