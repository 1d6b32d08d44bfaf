-- rbac V1: roles and permissions with deny-wins resolution, checkable from SQL, Rust and RLS.
--
-- Resolution (IAM semantics), for a principal, a permission `resource:action` and optionally
-- one resource: collect the statements (pattern, effect) of every grant that applies (the
-- principal's own grants, its groups' grants, its tenant membership's role), expanding roles
-- through their parents; any matching deny wins, else any matching allow, else denied.
-- A grant applies when it has not expired and is tenant-wide or scoped to that very resource.

CREATE SCHEMA IF NOT EXISTS rbac;
COMMENT ON SCHEMA rbac IS 'pgstrata rbac: permission catalog, system and tenant roles, grants, deny-wins checks';
GRANT USAGE ON SCHEMA rbac TO pgstrata_app;

-- A permission pattern: `resource:action`, where either part may be `*`, or `*` alone.
CREATE FUNCTION rbac.is_pattern(p text) RETURNS boolean
    LANGUAGE sql IMMUTABLE PARALLEL SAFE
    AS $$ SELECT p ~ '^(\*|([a-z][a-z0-9_]*|\*):([a-z][a-z0-9_]*|\*))$' $$;

-- Whether a pattern covers a permission (or a narrower pattern): `*` covers everything,
-- `invoice:*` every invoice action, `*:read` every resource's read.
CREATE FUNCTION rbac.covers(pattern text, permission text) RETURNS boolean
    LANGUAGE sql IMMUTABLE PARALLEL SAFE
    AS $$
    SELECT pattern IN ('*', '*:*') OR pattern = permission
        OR (split_part(pattern, ':', 1) IN ('*', split_part(permission, ':', 1))
            AND split_part(pattern, ':', 2) IN ('*', split_part(permission, ':', 2))
            AND permission <> '*')
$$;

-- ---------------------------------------------------------------------------------------------
-- Global catalogs (no tenant_id; future Citus reference tables). Read-only for the app.
-- ---------------------------------------------------------------------------------------------

CREATE TABLE rbac.permissions (
    key          text NOT NULL,
    description  text NOT NULL DEFAULT '',
    CONSTRAINT permissions_pkey PRIMARY KEY (key),
    CONSTRAINT permissions_key_format CHECK (key ~ '^[a-z][a-z0-9_]*:[a-z][a-z0-9_]*$')
);
COMMENT ON TABLE rbac.permissions IS 'Catalog of concrete permissions `resource:action`; grants may use wildcards over it';

CREATE TABLE rbac.system_roles (
    key          text NOT NULL,
    description  text NOT NULL DEFAULT '',
    CONSTRAINT system_roles_pkey PRIMARY KEY (key),
    CONSTRAINT system_roles_key_format CHECK (key ~ '^[a-z][a-z0-9_]{0,62}$')
);

CREATE TABLE rbac.system_role_permissions (
    role_key    text NOT NULL,
    permission  text NOT NULL,
    effect      text NOT NULL DEFAULT 'allow',
    CONSTRAINT system_role_permissions_pkey PRIMARY KEY (role_key, permission, effect),
    CONSTRAINT system_role_permissions_role_fkey FOREIGN KEY (role_key) REFERENCES rbac.system_roles (key) ON DELETE CASCADE,
    CONSTRAINT system_role_permissions_pattern CHECK (rbac.is_pattern(permission)),
    CONSTRAINT system_role_permissions_effect CHECK (effect IN ('allow', 'deny'))
);

CREATE TABLE rbac.system_role_parents (
    role_key    text NOT NULL,
    parent_key  text NOT NULL,
    CONSTRAINT system_role_parents_pkey PRIMARY KEY (role_key, parent_key),
    CONSTRAINT system_role_parents_role_fkey FOREIGN KEY (role_key) REFERENCES rbac.system_roles (key) ON DELETE CASCADE,
    CONSTRAINT system_role_parents_parent_fkey FOREIGN KEY (parent_key) REFERENCES rbac.system_roles (key) ON DELETE CASCADE,
    CONSTRAINT system_role_parents_not_self CHECK (role_key <> parent_key)
);

-- The roles every tenant has. Memberships name one of them (tenancy.memberships.role).
INSERT INTO rbac.system_roles (key, description) VALUES
    ('viewer', 'Reads everything'),
    ('member', 'Viewer, plus creates and updates'),
    ('admin',  'Member, plus deletes, manages members and roles'),
    ('owner',  'Everything');
INSERT INTO rbac.system_role_parents (role_key, parent_key) VALUES
    ('member', 'viewer'),
    ('admin', 'member');
INSERT INTO rbac.system_role_permissions (role_key, permission) VALUES
    ('viewer', '*:read'),
    ('member', '*:create'),
    ('member', '*:update'),
    ('admin', '*:delete'),
    ('admin', 'member:*'),
    ('admin', 'role:*'),
    ('owner', '*');

GRANT SELECT ON rbac.permissions, rbac.system_roles, rbac.system_role_permissions, rbac.system_role_parents
    TO pgstrata_app;

-- ---------------------------------------------------------------------------------------------
-- Tenant tables
-- ---------------------------------------------------------------------------------------------

-- Custom roles of a tenant. Keys share one namespace with the system roles (checked below).
CREATE TABLE rbac.roles (
    tenant_id    uuid        NOT NULL,
    key          text        NOT NULL,
    description  text        NOT NULL DEFAULT '',
    created_at   timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT roles_pkey PRIMARY KEY (tenant_id, key),
    CONSTRAINT roles_tenant_fkey FOREIGN KEY (tenant_id) REFERENCES tenancy.tenants (id),
    CONSTRAINT roles_key_format CHECK (key ~ '^[a-z][a-z0-9_]{0,62}$')
);

CREATE TABLE rbac.role_permissions (
    tenant_id   uuid NOT NULL,
    role_key    text NOT NULL,
    permission  text NOT NULL,
    effect      text NOT NULL DEFAULT 'allow',
    CONSTRAINT role_permissions_pkey PRIMARY KEY (tenant_id, role_key, permission, effect),
    CONSTRAINT role_permissions_role_fkey FOREIGN KEY (tenant_id, role_key)
        REFERENCES rbac.roles (tenant_id, key) ON DELETE CASCADE,
    CONSTRAINT role_permissions_pattern CHECK (rbac.is_pattern(permission)),
    CONSTRAINT role_permissions_effect CHECK (effect IN ('allow', 'deny'))
);

-- Inheritance: role_key gets everything parent_key has. The parent is a custom role of the
-- same tenant or a system role; the graph must stay acyclic (checked below).
CREATE TABLE rbac.role_parents (
    tenant_id   uuid NOT NULL,
    role_key    text NOT NULL,
    parent_key  text NOT NULL,
    CONSTRAINT role_parents_pkey PRIMARY KEY (tenant_id, role_key, parent_key),
    CONSTRAINT role_parents_role_fkey FOREIGN KEY (tenant_id, role_key)
        REFERENCES rbac.roles (tenant_id, key) ON DELETE CASCADE,
    CONSTRAINT role_parents_not_self CHECK (role_key <> parent_key)
);

-- Groups are principals too; a principal in a group receives the group's grants (one level).
CREATE TABLE rbac.group_members (
    tenant_id       uuid        NOT NULL,
    group_id        uuid        NOT NULL,
    principal_type  text        NOT NULL,
    principal_id    uuid        NOT NULL,
    created_at      timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT group_members_pkey PRIMARY KEY (tenant_id, principal_type, principal_id, group_id),
    CONSTRAINT group_members_tenant_fkey FOREIGN KEY (tenant_id) REFERENCES tenancy.tenants (id),
    CONSTRAINT group_members_principal_type CHECK (principal_type IN ('user', 'api_key', 'service'))
);

-- A grant gives a principal either a role (allow) or one permission pattern (allow or deny),
-- tenant-wide or on one resource, optionally until expires_at.
CREATE TABLE rbac.grants (
    tenant_id       uuid        NOT NULL,
    id              uuid        NOT NULL DEFAULT tenancy.uuid_v7(),
    principal_type  text        NOT NULL,
    principal_id    uuid        NOT NULL,
    role_key        text,
    permission      text,
    effect          text        NOT NULL DEFAULT 'allow',
    resource_type   text,
    resource_id     text,
    expires_at      timestamptz,
    granted_by      uuid,
    created_at      timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT grants_pkey PRIMARY KEY (tenant_id, id),
    CONSTRAINT grants_tenant_fkey FOREIGN KEY (tenant_id) REFERENCES tenancy.tenants (id),
    CONSTRAINT grants_unique UNIQUE NULLS NOT DISTINCT
        (tenant_id, principal_type, principal_id, role_key, permission, effect, resource_type, resource_id),
    CONSTRAINT grants_principal_type CHECK (principal_type IN ('user', 'api_key', 'group', 'service')),
    CONSTRAINT grants_role_or_permission CHECK ((role_key IS NULL) <> (permission IS NULL)),
    CONSTRAINT grants_pattern CHECK (permission IS NULL OR rbac.is_pattern(permission)),
    CONSTRAINT grants_effect CHECK (effect IN ('allow', 'deny')),
    CONSTRAINT grants_role_allows CHECK (role_key IS NULL OR effect = 'allow'),
    CONSTRAINT grants_scope_complete CHECK ((resource_type IS NULL) = (resource_id IS NULL))
);
COMMENT ON TABLE rbac.grants IS 'Roles and single permissions given to principals; revoke by deleting';

-- The check's access path: a principal's grants, with everything it reads in the index.
CREATE INDEX grants_principal_idx ON rbac.grants (tenant_id, principal_type, principal_id)
    INCLUDE (role_key, permission, effect, resource_type, resource_id, expires_at);
-- Who has access to a resource (principals_with).
CREATE INDEX grants_resource_idx ON rbac.grants (tenant_id, resource_type, resource_id);
-- Groups of a principal are found through group_members_pkey.

DO $$
DECLARE t text;
BEGIN
    FOREACH t IN ARRAY ARRAY['roles', 'role_permissions', 'role_parents', 'group_members', 'grants'] LOOP
        EXECUTE format('ALTER TABLE rbac.%I ENABLE ROW LEVEL SECURITY', t);
        EXECUTE format('ALTER TABLE rbac.%I FORCE ROW LEVEL SECURITY', t);
        EXECUTE format('CREATE POLICY tenant_isolation ON rbac.%I
                            USING (tenant_id = (SELECT tenancy.current_tenant_id()))
                            WITH CHECK (tenant_id = (SELECT tenancy.current_tenant_id()))', t);
    END LOOP;
END
$$;

GRANT SELECT, INSERT, DELETE ON rbac.roles, rbac.role_permissions, rbac.role_parents, rbac.group_members, rbac.grants
    TO pgstrata_app;
GRANT UPDATE (description) ON rbac.roles TO pgstrata_app;

-- ---------------------------------------------------------------------------------------------
-- Integrity of role references (they may point at system or custom roles, so no single FK)
-- ---------------------------------------------------------------------------------------------

CREATE FUNCTION rbac.role_exists(p_tenant uuid, p_key text) RETURNS boolean
    LANGUAGE sql STABLE
    AS $$
    SELECT EXISTS (SELECT 1 FROM rbac.system_roles s WHERE s.key = p_key)
        OR EXISTS (SELECT 1 FROM rbac.roles r WHERE r.tenant_id = p_tenant AND r.key = p_key)
$$;

CREATE FUNCTION rbac.roles_check_key() RETURNS trigger
    LANGUAGE plpgsql
    AS $$
BEGIN
    IF EXISTS (SELECT 1 FROM rbac.system_roles s WHERE s.key = NEW.key) THEN
        RAISE EXCEPTION 'role key % is a system role', NEW.key
            USING ERRCODE = '23505', CONSTRAINT = 'roles_key_not_system';
    END IF;
    RETURN NEW;
END
$$;
CREATE TRIGGER roles_check_key BEFORE INSERT ON rbac.roles
    FOR EACH ROW EXECUTE FUNCTION rbac.roles_check_key();

-- Deleting a custom role revokes its grants and the edges that name it as a parent.
CREATE FUNCTION rbac.roles_cascade() RETURNS trigger
    LANGUAGE plpgsql
    AS $$
BEGIN
    DELETE FROM rbac.grants g WHERE g.tenant_id = OLD.tenant_id AND g.role_key = OLD.key;
    DELETE FROM rbac.role_parents p WHERE p.tenant_id = OLD.tenant_id AND p.parent_key = OLD.key;
    RETURN OLD;
END
$$;
CREATE TRIGGER roles_cascade AFTER DELETE ON rbac.roles
    FOR EACH ROW EXECUTE FUNCTION rbac.roles_cascade();

-- A parent must exist, and the new edge must not close a cycle. Edits of one tenant's role
-- graph are serialised by a transaction lock, so two concurrent edges A->B and B->A cannot
-- both pass the check.
CREATE FUNCTION rbac.role_parents_check() RETURNS trigger
    LANGUAGE plpgsql
    AS $$
DECLARE
    v_cycle text[];
BEGIN
    PERFORM pg_advisory_xact_lock(hashtextextended('rbac.role_parents:' || NEW.tenant_id::text, 0));
    IF NOT rbac.role_exists(NEW.tenant_id, NEW.parent_key) THEN
        RAISE EXCEPTION 'parent role % does not exist', NEW.parent_key
            USING ERRCODE = '23503', CONSTRAINT = 'role_parents_parent_exists';
    END IF;
    WITH RECURSIVE up(key, path) AS (
        SELECT NEW.parent_key, ARRAY[NEW.role_key, NEW.parent_key]
        UNION ALL
        SELECT e.parent_key, up.path || e.parent_key
          FROM up
          JOIN (SELECT p.role_key, p.parent_key FROM rbac.role_parents p WHERE p.tenant_id = NEW.tenant_id
                UNION ALL
                SELECT s.role_key, s.parent_key FROM rbac.system_role_parents s) e ON e.role_key = up.key
         WHERE up.key <> NEW.role_key
    )
    SELECT path INTO v_cycle FROM up WHERE key = NEW.role_key LIMIT 1;
    IF v_cycle IS NOT NULL THEN
        RAISE EXCEPTION 'role inheritance would form a cycle: %', array_to_string(v_cycle, ' -> ')
            USING ERRCODE = 'PS422', DETAIL = format('cycle=%s', array_to_string(v_cycle, '>'));
    END IF;
    RETURN NEW;
END
$$;
CREATE TRIGGER role_parents_check BEFORE INSERT ON rbac.role_parents
    FOR EACH ROW EXECUTE FUNCTION rbac.role_parents_check();

-- ---------------------------------------------------------------------------------------------
-- Resolution
-- ---------------------------------------------------------------------------------------------

-- Every statement that applies to a principal in the current tenant, on the given resource
-- (or tenant-wide when none is given), with where it came from. check, explain and the lists
-- below all read this one function, so they cannot disagree. PL/pgSQL so that the plan is
-- prepared once per session, not once per call.
CREATE FUNCTION rbac.statements(
    p_principal_type text,
    p_principal_id uuid,
    p_resource_type text DEFAULT NULL,
    p_resource_id text DEFAULT NULL
) RETURNS TABLE (grant_id uuid, role_path text[], permission text, effect text, resource_type text, resource_id text)
    LANGUAGE plpgsql STABLE
    AS $$
#variable_conflict use_column
DECLARE
    v_tenant uuid := tenancy.current_tenant_id();
BEGIN
    RETURN QUERY
    WITH RECURSIVE
    applied AS (
        -- The principal's own grants: one probe of grants_principal_idx.
        SELECT g.id, g.role_key, g.permission, g.effect, g.resource_type, g.resource_id
          FROM rbac.grants g
         WHERE g.tenant_id = v_tenant AND g.principal_type = p_principal_type AND g.principal_id = p_principal_id
           AND (g.expires_at IS NULL OR g.expires_at > now())
           AND (g.resource_type IS NULL
                OR (g.resource_type = p_resource_type AND g.resource_id = p_resource_id))
        UNION ALL
        -- The grants of its groups.
        SELECT g.id, g.role_key, g.permission, g.effect, g.resource_type, g.resource_id
          FROM rbac.group_members gm
          JOIN rbac.grants g ON g.tenant_id = v_tenant AND g.principal_type = 'group' AND g.principal_id = gm.group_id
         WHERE gm.tenant_id = v_tenant AND gm.principal_type = p_principal_type AND gm.principal_id = p_principal_id
           AND (g.expires_at IS NULL OR g.expires_at > now())
           AND (g.resource_type IS NULL
                OR (g.resource_type = p_resource_type AND g.resource_id = p_resource_id))
        UNION ALL
        -- A tenant member holds the role named by its membership, tenant-wide.
        SELECT NULL::uuid, m.role, NULL::text, 'allow'::text, NULL::text, NULL::text
          FROM tenancy.memberships m
         WHERE p_principal_type = 'user' AND m.tenant_id = v_tenant AND m.user_id = p_principal_id
    ),
    held(grant_id, role_key, path, resource_type, resource_id) AS (
        SELECT a.id, a.role_key, ARRAY[a.role_key], a.resource_type, a.resource_id
          FROM applied a WHERE a.role_key IS NOT NULL
        UNION ALL
        SELECT h.grant_id, e.parent_key, h.path || e.parent_key, h.resource_type, h.resource_id
          FROM held h
          JOIN (SELECT rp.role_key, rp.parent_key FROM rbac.role_parents rp WHERE rp.tenant_id = v_tenant
                UNION ALL
                SELECT sp.role_key, sp.parent_key FROM rbac.system_role_parents sp) e ON e.role_key = h.role_key
         WHERE NOT e.parent_key = ANY (h.path)
    )
    SELECT a.id, NULL::text[], a.permission, a.effect, a.resource_type, a.resource_id
      FROM applied a WHERE a.permission IS NOT NULL
    UNION ALL
    SELECT h.grant_id, h.path, rp.permission, rp.effect, h.resource_type, h.resource_id
      FROM held h
      JOIN (SELECT x.role_key, x.permission, x.effect FROM rbac.role_permissions x WHERE x.tenant_id = v_tenant
            UNION ALL
            SELECT s.role_key, s.permission, s.effect FROM rbac.system_role_permissions s) rp ON rp.role_key = h.role_key;
END
$$;

-- May the principal do `permission` (on the resource, if given) in the current tenant?
-- In a policy, wrap it so it runs once per statement:
--   USING ((SELECT rbac.check('user', (SELECT tenancy.current_actor_id()), 'invoice:read')))
CREATE FUNCTION rbac.check(
    p_principal_type text,
    p_principal_id uuid,
    p_permission text,
    p_resource_type text DEFAULT NULL,
    p_resource_id text DEFAULT NULL
) RETURNS boolean
    LANGUAGE plpgsql STABLE
    -- Its one statement has the same shape for every call; without this PL/pgSQL re-plans it
    -- on each call (custom plans), which was two thirds of a check's server time.
    SET plan_cache_mode = force_generic_plan
    AS $$
DECLARE
    v_allow boolean;
    v_deny boolean;
BEGIN
    SELECT coalesce(bool_or(s.effect = 'allow'), false), coalesce(bool_or(s.effect = 'deny'), false)
      INTO v_allow, v_deny
      FROM rbac.statements(p_principal_type, p_principal_id, p_resource_type, p_resource_id) s
     WHERE rbac.covers(s.permission, p_permission);
    RETURN v_allow AND NOT v_deny;
END
$$;

-- The statements that decided a check: the matching denies when any, else the matching allows.
CREATE FUNCTION rbac.explain(
    p_principal_type text,
    p_principal_id uuid,
    p_permission text,
    p_resource_type text DEFAULT NULL,
    p_resource_id text DEFAULT NULL
) RETURNS TABLE (allowed boolean, grant_id uuid, role_path text[], pattern text, effect text,
                 resource_type text, resource_id text)
    LANGUAGE sql STABLE
    AS $$
    WITH matching AS (
        SELECT s.* FROM rbac.statements(p_principal_type, p_principal_id, p_resource_type, p_resource_id) s
         WHERE rbac.covers(s.permission, p_permission)
    ), decided AS (
        SELECT NOT EXISTS (SELECT 1 FROM matching WHERE matching.effect = 'deny')
               AND EXISTS (SELECT 1 FROM matching WHERE matching.effect = 'allow') AS allowed
    )
    SELECT d.allowed, m.grant_id, m.role_path, m.permission, m.effect, m.resource_type, m.resource_id
      FROM decided d
      LEFT JOIN matching m ON m.effect = CASE WHEN d.allowed THEN 'allow' ELSE 'deny' END
     ORDER BY m.effect, m.permission, m.grant_id
$$;

-- The catalog permissions the principal holds (on the resource, if given).
CREATE FUNCTION rbac.effective_permissions(
    p_principal_type text,
    p_principal_id uuid,
    p_resource_type text DEFAULT NULL,
    p_resource_id text DEFAULT NULL
) RETURNS SETOF text
    LANGUAGE sql STABLE
    AS $$
    WITH s AS MATERIALIZED (
        SELECT * FROM rbac.statements(p_principal_type, p_principal_id, p_resource_type, p_resource_id)
    )
    SELECT c.key FROM rbac.permissions c
     WHERE EXISTS (SELECT 1 FROM s WHERE s.effect = 'allow' AND rbac.covers(s.permission, c.key))
       AND NOT EXISTS (SELECT 1 FROM s WHERE s.effect = 'deny' AND rbac.covers(s.permission, c.key))
     ORDER BY c.key
$$;

-- The principals that hold `permission` on the resource (or tenant-wide): every principal
-- known to the tenant, filtered by check itself.
CREATE FUNCTION rbac.principals_with(
    p_permission text,
    p_resource_type text DEFAULT NULL,
    p_resource_id text DEFAULT NULL
) RETURNS TABLE (principal_type text, principal_id uuid)
    LANGUAGE sql STABLE
    AS $$
    WITH candidates AS (
        SELECT g.principal_type AS ptype, g.principal_id AS pid FROM rbac.grants g
         WHERE g.tenant_id = tenancy.current_tenant_id() AND g.principal_type <> 'group'
        UNION
        SELECT gm.principal_type, gm.principal_id FROM rbac.group_members gm
         WHERE gm.tenant_id = tenancy.current_tenant_id()
        UNION
        SELECT 'user', m.user_id FROM tenancy.memberships m
         WHERE m.tenant_id = tenancy.current_tenant_id()
    )
    SELECT c.ptype, c.pid FROM candidates c
     WHERE rbac.check(c.ptype, c.pid, p_permission, p_resource_type, p_resource_id)
     ORDER BY c.ptype, c.pid
$$;

-- ---------------------------------------------------------------------------------------------
-- Escalation guard: the application can only grant what the acting user holds.
-- ---------------------------------------------------------------------------------------------

-- Does the principal hold every permission a pattern stands for? Each catalog permission the
-- pattern covers must be allowed, and a wildcard must itself be covered by one of the
-- principal's allows (so holding every invoice action today does not let one grant
-- `invoice:*`, which would also cover tomorrow's).
CREATE FUNCTION rbac.holds(
    p_principal_type text,
    p_principal_id uuid,
    p_pattern text,
    p_resource_type text DEFAULT NULL,
    p_resource_id text DEFAULT NULL
) RETURNS boolean
    LANGUAGE sql STABLE
    AS $$
    WITH s AS MATERIALIZED (
        SELECT * FROM rbac.statements(p_principal_type, p_principal_id, p_resource_type, p_resource_id)
    )
    SELECT EXISTS (SELECT 1 FROM s WHERE s.effect = 'allow' AND rbac.covers(s.permission, p_pattern))
       AND NOT EXISTS (
           SELECT 1 FROM rbac.permissions c
            WHERE rbac.covers(p_pattern, c.key)
              AND (EXISTS (SELECT 1 FROM s WHERE s.effect = 'deny' AND rbac.covers(s.permission, c.key))
                   OR NOT EXISTS (SELECT 1 FROM s WHERE s.effect = 'allow' AND rbac.covers(s.permission, c.key))))
       AND NOT EXISTS (SELECT 1 FROM s WHERE s.effect = 'deny' AND rbac.covers(s.permission, p_pattern))
$$;

-- Runs for the application role (the schema owner and superusers seed and administer freely):
-- the grant is recorded as made by app.actor_id, who must hold everything it confers, with
-- the same scope.
CREATE FUNCTION rbac.grants_guard() RETURNS trigger
    LANGUAGE plpgsql
    AS $$
DECLARE
    v_actor uuid := tenancy.current_actor_id();
    v_pattern text;
BEGIN
    IF NEW.role_key IS NOT NULL AND NOT rbac.role_exists(NEW.tenant_id, NEW.role_key) THEN
        RAISE EXCEPTION 'role % does not exist', NEW.role_key
            USING ERRCODE = '23503', CONSTRAINT = 'grants_role_exists';
    END IF;
    IF (SELECT r.rolsuper FROM pg_catalog.pg_roles r WHERE r.rolname = current_user)
       OR pg_catalog.pg_has_role(current_user, (SELECT c.relowner FROM pg_catalog.pg_class c
                                                 WHERE c.oid = 'rbac.grants'::regclass), 'USAGE') THEN
        RETURN NEW;
    END IF;
    IF v_actor IS NULL THEN
        RAISE EXCEPTION 'granting needs an acting user: set app.actor_id in this transaction'
            USING ERRCODE = 'PS403';
    END IF;
    NEW.granted_by := v_actor;
    FOR v_pattern IN
        SELECT NEW.permission WHERE NEW.permission IS NOT NULL
        UNION
        SELECT rp.permission FROM (
            WITH RECURSIVE closure(key) AS (
                SELECT NEW.role_key WHERE NEW.role_key IS NOT NULL
                UNION
                SELECT e.parent_key FROM closure
                  JOIN (SELECT p.role_key, p.parent_key FROM rbac.role_parents p WHERE p.tenant_id = NEW.tenant_id
                        UNION ALL
                        SELECT s.role_key, s.parent_key FROM rbac.system_role_parents s) e ON e.role_key = closure.key
            )
            SELECT x.permission FROM closure
              JOIN (SELECT r.role_key, r.permission, r.effect FROM rbac.role_permissions r WHERE r.tenant_id = NEW.tenant_id
                    UNION ALL
                    SELECT s.role_key, s.permission, s.effect FROM rbac.system_role_permissions s) x
                ON x.role_key = closure.key
             WHERE x.effect = 'allow'
        ) rp
    LOOP
        IF NOT rbac.holds('user', v_actor, v_pattern, NEW.resource_type, NEW.resource_id) THEN
            RAISE EXCEPTION 'escalation refused: user % does not hold %, so cannot grant it', v_actor, v_pattern
                USING ERRCODE = 'PS403', DETAIL = format('missing=%s', v_pattern);
        END IF;
    END LOOP;
    RETURN NEW;
END
$$;
CREATE TRIGGER grants_guard BEFORE INSERT ON rbac.grants
    FOR EACH ROW EXECUTE FUNCTION rbac.grants_guard();

GRANT EXECUTE ON FUNCTION
    rbac.is_pattern(text), rbac.covers(text, text), rbac.role_exists(uuid, text),
    rbac.statements(text, uuid, text, text), rbac.check(text, uuid, text, text, text),
    rbac.explain(text, uuid, text, text, text), rbac.effective_permissions(text, uuid, text, text),
    rbac.principals_with(text, text, text), rbac.holds(text, uuid, text, text, text)
    TO pgstrata_app;
