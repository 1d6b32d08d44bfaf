-- Demo data for the rbac module, on top of the tenancy seed: a permission catalog, a custom
-- role in acme with an explicit deny, a scoped deny, and a temporary grant to an API key.
-- Idempotent. Load inside one transaction, after schemas/tenancy/seed.sql.

INSERT INTO rbac.permissions (key, description) VALUES
    ('invoice:read', 'See invoices'),
    ('invoice:create', 'Draft invoices'),
    ('invoice:update', 'Edit draft invoices'),
    ('invoice:delete', 'Delete invoices'),
    ('invoice:refund', 'Refund paid invoices'),
    ('project:read', 'See projects'),
    ('project:create', 'Create projects'),
    ('project:update', 'Edit projects'),
    ('project:delete', 'Delete projects'),
    ('member:invite', 'Invite people'),
    ('member:remove', 'Remove members'),
    ('role:grant', 'Grant roles and permissions'),
    ('settings:read', 'See tenant settings'),
    ('settings:update', 'Change tenant settings')
ON CONFLICT DO NOTHING;

SELECT set_config('app.tenant_id', '01900000-0000-7000-8000-00000000ac4e', true);

-- billing_manager: everything on invoices except deleting them, plus what a viewer has.
INSERT INTO rbac.roles (tenant_id, key, description)
VALUES ('01900000-0000-7000-8000-00000000ac4e', 'billing_manager', 'Runs invoicing; cannot delete invoices')
ON CONFLICT DO NOTHING;
INSERT INTO rbac.role_permissions (tenant_id, role_key, permission, effect) VALUES
    ('01900000-0000-7000-8000-00000000ac4e', 'billing_manager', 'invoice:*', 'allow'),
    ('01900000-0000-7000-8000-00000000ac4e', 'billing_manager', 'invoice:delete', 'deny')
ON CONFLICT DO NOTHING;
INSERT INTO rbac.role_parents (tenant_id, role_key, parent_key)
VALUES ('01900000-0000-7000-8000-00000000ac4e', 'billing_manager', 'viewer')
ON CONFLICT DO NOTHING;

INSERT INTO rbac.grants (tenant_id, id, principal_type, principal_id, role_key, permission, effect,
                         resource_type, resource_id, expires_at, granted_by) VALUES
    -- Bob (member) also manages billing.
    ('01900000-0000-7000-8000-00000000ac4e', '01900000-0000-7000-8000-0000000c0001', 'user',
     '01900000-0000-7000-8000-000000000b0b', 'billing_manager', NULL, 'allow', NULL, NULL, NULL,
     '01900000-0000-7000-8000-00000000a11c'),
    -- Dave (viewer) may not even read the confidential project 7.
    ('01900000-0000-7000-8000-00000000ac4e', '01900000-0000-7000-8000-0000000c0002', 'user',
     '01900000-0000-7000-8000-00000000da7e', NULL, 'project:read', 'deny', 'project', '7', NULL,
     '01900000-0000-7000-8000-00000000a11c'),
    -- An API key that reads invoices for 90 days.
    ('01900000-0000-7000-8000-00000000ac4e', '01900000-0000-7000-8000-0000000c0003', 'api_key',
     '01900000-0000-7000-8000-0000000a9100', NULL, 'invoice:read', 'allow', NULL, NULL,
     now() + interval '90 days', '01900000-0000-7000-8000-00000000a11c')
ON CONFLICT DO NOTHING;

SELECT set_config('app.tenant_id', '', true);
