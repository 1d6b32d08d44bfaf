-- The example application's own tables, migrated with the pgstrata modules at startup
-- (`backend::schema::MODULE`, history in pgstrata.app_history). They follow the same rules as
-- the modules' tenant tables: tenant_id-led keys, a composite foreign key to the tenant, RLS
-- enabled and forced with one policy on tenancy.current_tenant_id(), writes refused while the
-- tenant is suspended, and grants to pgstrata's roles only.

CREATE SCHEMA app;
COMMENT ON SCHEMA app IS 'The example backend''s tables (projects, sent e-mails)';
GRANT USAGE ON SCHEMA app TO pgstrata_app, pgstrata_worker;

-- The permissions the application checks; the system roles cover them by pattern (viewer
-- `*:read`, member `*:create` and `*:update`, admin `*:delete`, `member:*` and `role:*`, owner
-- `*`). `role:manage` and `role:grant` are deliberately outside `*:create` and `*:update`, so
-- a member can neither define roles nor hand them out.
INSERT INTO rbac.permissions (key, description) VALUES
    ('project:read', 'See projects and their history'),
    ('project:create', 'Create projects'),
    ('project:update', 'Edit projects'),
    ('project:delete', 'Delete projects'),
    ('member:read', 'See members and invitations'),
    ('member:invite', 'Invite people and revoke invitations'),
    ('member:remove', 'Remove members'),
    ('role:read', 'See roles and grants'),
    ('role:manage', 'Define and delete custom roles'),
    ('role:grant', 'Grant and revoke roles and permissions, change a member''s role')
ON CONFLICT (key) DO NOTHING;

-- A versioned resource edited over HTTP with ETag / If-Match: an UPDATE names the version it
-- read (tenancy.bump_version refuses a stale one with PS409, the API answers 412).
CREATE TABLE app.projects (
    tenant_id    uuid        NOT NULL,
    id           uuid        NOT NULL DEFAULT tenancy.uuid_v7(),
    name         text        NOT NULL,
    description  text        NOT NULL DEFAULT '',
    version      bigint      NOT NULL DEFAULT 1,
    created_at   timestamptz NOT NULL DEFAULT now(),
    updated_at   timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT projects_pkey PRIMARY KEY (tenant_id, id),
    CONSTRAINT projects_tenant_fkey FOREIGN KEY (tenant_id) REFERENCES tenancy.tenants (id),
    CONSTRAINT projects_tenant_name_key UNIQUE (tenant_id, name),
    CONSTRAINT projects_name_length CHECK (length(name) BETWEEN 1 AND 200),
    CONSTRAINT projects_description_length CHECK (length(description) <= 10000)
);
COMMENT ON TABLE app.projects IS 'A tenant''s projects, versioned for optimistic concurrency. citus: distributed';

CREATE TRIGGER projects_bump_version BEFORE UPDATE ON app.projects
    FOR EACH ROW EXECUTE FUNCTION tenancy.bump_version();

ALTER TABLE app.projects ENABLE ROW LEVEL SECURITY;
ALTER TABLE app.projects FORCE ROW LEVEL SECURITY;
CREATE POLICY tenant_isolation ON app.projects
    USING (tenant_id = (SELECT tenancy.current_tenant_id()))
    WITH CHECK (tenant_id = (SELECT tenancy.current_tenant_id()));
GRANT SELECT, INSERT, DELETE ON app.projects TO pgstrata_app;
-- version is written only as the version the writer read (the trigger bumps it).
GRANT UPDATE (name, description, version) ON app.projects TO pgstrata_app;
SELECT tenancy.enforce_tenant_status('app.projects');

-- Every change is recorded in audit.records (resource_type 'app.projects', resource_id the
-- project id) with the actor and request id of its transaction. updated_at and version change
-- with every update and say nothing of their own (as for tenancy's tables).
SELECT audit.enable('app.projects', ARRAY['updated_at', 'version'], '{}');

-- What the in-process worker's e-mail job did: one row per job, written in the job's
-- transaction, so a job that is run again after a crash does not send twice.
CREATE TABLE app.sent_emails (
    tenant_id  uuid        NOT NULL,
    id         uuid        NOT NULL DEFAULT tenancy.uuid_v7(),
    job_id     bigint      NOT NULL,
    template   text        NOT NULL,
    to_email   text        NOT NULL,
    request_id text,
    sent_at    timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT sent_emails_pkey PRIMARY KEY (tenant_id, id),
    CONSTRAINT sent_emails_tenant_fkey FOREIGN KEY (tenant_id) REFERENCES tenancy.tenants (id),
    CONSTRAINT sent_emails_tenant_job_key UNIQUE (tenant_id, job_id)
);
COMMENT ON TABLE app.sent_emails IS 'E-mails sent by the worker, one per job. citus: distributed';

ALTER TABLE app.sent_emails ENABLE ROW LEVEL SECURITY;
ALTER TABLE app.sent_emails FORCE ROW LEVEL SECURITY;
-- The worker runs each handler in its job's tenant context, so one policy serves both roles:
-- the worker writes only into the tenant of the job it runs.
CREATE POLICY tenant_isolation ON app.sent_emails
    USING (tenant_id = (SELECT tenancy.current_tenant_id()))
    WITH CHECK (tenant_id = (SELECT tenancy.current_tenant_id()));
GRANT SELECT ON app.sent_emails TO pgstrata_app;
GRANT SELECT, INSERT ON app.sent_emails TO pgstrata_worker;
