DO $$
DECLARE t text; p text;
BEGIN
    FOREACH t IN ARRAY ARRAY['roles', 'role_permissions', 'role_parents', 'group_members', 'grants'] LOOP
        FOREACH p IN ARRAY ARRAY['tenant_active_insert', 'tenant_active_update', 'tenant_active_delete'] LOOP
            EXECUTE format('DROP POLICY %I ON rbac.%I', p, t);
        END LOOP;
    END LOOP;
END
$$;
-- Reverts rbac V2: the V1 guard (INSERT into rbac.grants only), resolution and cycle check,
-- no search_path pinned, EXECUTE for PUBLIC as V1 left it.
DROP TRIGGER IF EXISTS rbac_role_guard ON tenancy.invitations;
DROP TRIGGER IF EXISTS rbac_role_guard ON tenancy.memberships;
DROP TRIGGER group_members_guard ON rbac.group_members;
DROP TRIGGER roles_guard ON rbac.roles;
DROP TRIGGER role_parents_guard ON rbac.role_parents;
DROP TRIGGER role_permissions_guard ON rbac.role_permissions;
DROP TRIGGER grants_guard ON rbac.grants;
DROP FUNCTION rbac.invitations_guard();
DROP FUNCTION rbac.memberships_guard();
DROP FUNCTION rbac.group_members_guard();
DROP FUNCTION rbac.roles_guard();
DROP FUNCTION rbac.role_parents_guard();
DROP FUNCTION rbac.role_permissions_guard();

CREATE OR REPLACE FUNCTION rbac.role_parents_check() RETURNS trigger
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

CREATE OR REPLACE FUNCTION rbac.grants_guard() RETURNS trigger
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

CREATE OR REPLACE FUNCTION rbac.statements(
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

CREATE OR REPLACE FUNCTION rbac.check(
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

DROP FUNCTION rbac.authorize_change(uuid, text[], timestamptz[], text[], text[]);
DROP FUNCTION rbac.closure_patterns(uuid, text[], text);
DROP FUNCTION rbac.resolve(uuid, text, uuid, text, text, boolean, boolean);
DROP FUNCTION rbac.role_closure(uuid, text[]);
DROP FUNCTION rbac.lock_role_graph(uuid);
DROP TABLE rbac.role_graph_locks;
DROP FUNCTION rbac.acts_as_owner(oid);
DROP FUNCTION rbac.overlaps(text, text);
DROP FUNCTION rbac.role_graph_limit(text, integer);
DROP FUNCTION rbac.max_role_edges();
DROP FUNCTION rbac.max_roles();
DROP FUNCTION rbac.max_role_depth();

ALTER FUNCTION rbac.explain(text, uuid, text, text, text) RESET search_path;
ALTER FUNCTION rbac.effective_permissions(text, uuid, text, text) RESET search_path;
ALTER FUNCTION rbac.principals_with(text, text, text) RESET search_path;
ALTER FUNCTION rbac.holds(text, uuid, text, text, text) RESET search_path;
ALTER FUNCTION rbac.role_exists(uuid, text) RESET search_path;
ALTER FUNCTION rbac.roles_check_key() RESET search_path;
ALTER FUNCTION rbac.roles_cascade() RESET search_path;
GRANT EXECUTE ON ALL FUNCTIONS IN SCHEMA rbac TO PUBLIC;
