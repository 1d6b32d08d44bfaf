-- rbac V2: hardening (SECURITY.md, rbac section).
--
-- 1. Every change of authorization data by a role that is not the owner is guarded: roles,
--    role_permissions, role_parents, group_members, grants, and tenancy's memberships and
--    invitations (their `role`). The acting user (app.actor_id) must hold, tenant-wide and with
--    no deny of any scope overlapping it, every allow the change makes reachable; what it
--    confers may not outlive the actor's own grant of it; removing a deny (a deny grant or deny
--    role permission, or a role, edge, group membership or membership that carried one) needs
--    holding what the deny restricts. Checks read the actor's holdings before the row changes.
-- 2. Resolution visits each role once per granted role (breadth-first, one shortest path kept
--    for explain) instead of following every path: a 20-level diamond no longer takes seconds.
--    A tenant's role graph is bounded (depth, roles, edges); past a bound writes and checks
--    fail with SQLSTATE PS413.
-- 3. Every function that runs queries pins search_path = pg_catalog, pg_temp (pg_temp last: an
--    empty search_path still resolves relation and type names in the caller's temporary schema
--    first), and nothing is executable by PUBLIC. is_pattern, covers and overlaps name no
--    relation or type (operators and functions are never looked up in pg_temp), so they stay
--    inlinable.
-- 4. The role graph's edits are serialised by a row lock on rbac.role_graph_locks (a row per
--    tenant, behind the tenant policy) instead of an advisory lock key any role could take.

REVOKE EXECUTE ON ALL FUNCTIONS IN SCHEMA rbac FROM PUBLIC;

-- ---------------------------------------------------------------------------------------------
-- Limits of a tenant's role graph (D-055). Constants, so a check reads no settings.
-- ---------------------------------------------------------------------------------------------

CREATE FUNCTION rbac.max_role_depth() RETURNS integer
    LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$ SELECT 32 $$;
CREATE FUNCTION rbac.max_roles() RETURNS integer
    LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$ SELECT 1000 $$;
CREATE FUNCTION rbac.max_role_edges() RETURNS integer
    LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$ SELECT 4000 $$;
COMMENT ON FUNCTION rbac.max_role_depth() IS 'Longest chain of inheritance edges a tenant''s role graph may hold';
COMMENT ON FUNCTION rbac.max_roles() IS 'Custom roles a tenant may define';
COMMENT ON FUNCTION rbac.max_role_edges() IS 'Inheritance edges a tenant''s custom roles may hold';

-- Raises the limit error; returns boolean so that a query can call it in a CASE branch.
-- VOLATILE, so that the planner never folds a call with constant arguments (and raises).
CREATE FUNCTION rbac.role_graph_limit(p_what text, p_limit integer) RETURNS boolean
    LANGUAGE plpgsql VOLATILE
    SET search_path = pg_catalog, pg_temp
    AS $$
BEGIN
    RAISE EXCEPTION 'role graph limit: %, at most %', p_what, p_limit
        USING ERRCODE = 'PS413', DETAIL = format('limit=%s', p_limit),
              HINT = 'flatten the role hierarchy or remove unused roles';
END
$$;

-- Whether two patterns share a permission (`invoice:*` and `*:delete` share invoice:delete).
CREATE FUNCTION rbac.overlaps(a text, b text) RETURNS boolean
    LANGUAGE sql IMMUTABLE PARALLEL SAFE
    AS $$
    SELECT a IN ('*', '*:*') OR b IN ('*', '*:*')
        OR (split_part(a, ':', 1) IN ('*', split_part(b, ':', 1)) OR split_part(b, ':', 1) = '*')
           AND (split_part(a, ':', 2) IN ('*', split_part(b, ':', 2)) OR split_part(b, ':', 2) = '*')
$$;

-- Whether the current role may change the table unguarded: a superuser, or a member of the
-- table's owner (migrations, seeds, and SECURITY DEFINER functions owned by the owner).
CREATE FUNCTION rbac.acts_as_owner(p_table oid) RETURNS boolean
    LANGUAGE sql STABLE
    SET search_path = pg_catalog, pg_temp
    AS $$
    SELECT coalesce((SELECT r.rolsuper FROM pg_catalog.pg_roles r WHERE r.rolname = current_user), false)
        OR coalesce((SELECT pg_catalog.pg_has_role(current_user, c.relowner, 'USAGE')
                       FROM pg_catalog.pg_class c WHERE c.oid = p_table), false)
$$;

-- ---------------------------------------------------------------------------------------------
-- The graph lock: one row per tenant, locked FOR UPDATE by every edit of the role graph.
-- ---------------------------------------------------------------------------------------------

CREATE TABLE rbac.role_graph_locks (
    tenant_id  uuid NOT NULL,
    CONSTRAINT role_graph_locks_pkey PRIMARY KEY (tenant_id),
    CONSTRAINT role_graph_locks_tenant_fkey FOREIGN KEY (tenant_id) REFERENCES tenancy.tenants (id)
);
COMMENT ON TABLE rbac.role_graph_locks IS
    'citus: distributed. One row per tenant, locked by edits of its role graph (cycle and size checks)';
ALTER TABLE rbac.role_graph_locks ENABLE ROW LEVEL SECURITY;
ALTER TABLE rbac.role_graph_locks FORCE ROW LEVEL SECURITY;
CREATE POLICY tenant_isolation ON rbac.role_graph_locks
    USING (tenant_id = (SELECT tenancy.current_tenant_id()))
    WITH CHECK (tenant_id = (SELECT tenancy.current_tenant_id()));
GRANT SELECT, INSERT ON rbac.role_graph_locks TO pgstrata_app;
-- FOR UPDATE needs UPDATE on a column; the policy keeps it inside the tenant.
GRANT UPDATE (tenant_id) ON rbac.role_graph_locks TO pgstrata_app;

CREATE FUNCTION rbac.lock_role_graph(p_tenant uuid) RETURNS void
    LANGUAGE plpgsql
    SET search_path = pg_catalog, pg_temp
    AS $$
BEGIN
    INSERT INTO rbac.role_graph_locks AS l (tenant_id) VALUES (p_tenant) ON CONFLICT DO NOTHING;
    PERFORM 1 FROM rbac.role_graph_locks l WHERE l.tenant_id = p_tenant FOR UPDATE;
END
$$;

-- ---------------------------------------------------------------------------------------------
-- Resolution, visiting each role once
-- ---------------------------------------------------------------------------------------------

-- The roles reachable from each root (itself included), breadth-first: a role is expanded the
-- first time it is reached, so the cost is linear in the graph, and the one path kept is a
-- shortest one (ties: the smallest path, compared bytewise as `a>b>c`). Past the depth or size
-- limits it raises PS413 (a graph loaded past the write checks).
CREATE FUNCTION rbac.role_closure(p_tenant uuid, p_roots text[])
RETURNS TABLE (root text, key text, role_path text[])
    LANGUAGE plpgsql STABLE
    SET search_path = pg_catalog, pg_temp
    SET plan_cache_mode = force_generic_plan
    AS $$
#variable_conflict use_column
BEGIN
    RETURN QUERY
    WITH RECURSIVE
    edges AS (
        SELECT rp.role_key, rp.parent_key FROM rbac.role_parents rp WHERE rp.tenant_id = p_tenant
        UNION ALL
        SELECT sp.role_key, sp.parent_key FROM rbac.system_role_parents sp
    ),
    bfs(root, depth, keys, paths, seen) AS (
        SELECT r.k, 0, ARRAY[r.k], ARRAY[r.k], ARRAY[r.k]
          FROM (SELECT DISTINCT x.k FROM pg_catalog.unnest(p_roots) x(k) WHERE x.k IS NOT NULL) r
        UNION ALL
        SELECT b.root, b.depth + 1, n.keys, n.paths, b.seen || n.keys
          FROM bfs b
         CROSS JOIN LATERAL (
                SELECT pg_catalog.array_agg(x.k ORDER BY x.k) AS keys, pg_catalog.array_agg(x.p ORDER BY x.k) AS paths
                  FROM (SELECT DISTINCT ON (e.parent_key) e.parent_key AS k, f.p || '>' || e.parent_key AS p
                          FROM unnest(b.keys, b.paths) f(k, p)
                          JOIN edges e ON e.role_key = f.k
                         WHERE NOT e.parent_key = ANY (b.seen)
                         ORDER BY e.parent_key, f.p COLLATE "C") x) n
         WHERE CASE
                   WHEN n.keys IS NULL THEN false
                   WHEN b.depth >= rbac.max_role_depth()
                       THEN rbac.role_graph_limit('inheritance deeper than the limit', rbac.max_role_depth())
                   -- custom roles, plus room for the system roles
                   WHEN pg_catalog.cardinality(b.seen) + pg_catalog.cardinality(n.keys) > rbac.max_roles() + 100
                       THEN rbac.role_graph_limit('more roles reachable than the limit', rbac.max_roles())
                   ELSE true
               END
    )
    SELECT b.root, u.k, pg_catalog.string_to_array(u.p, '>')
      FROM bfs b, unnest(b.keys, b.paths) u(k, p);
END
$$;

-- Every statement that applies to a principal in a tenant, with where it came from and until
-- when. p_all_scopes takes the grants of every scope (the guards ask what an actor holds
-- anywhere); otherwise tenant-wide ones and those on the given resource. p_paths: explain's
-- role paths (rbac.role_closure); without them (check, the guards) the same breadth-first walk
-- runs inline and carries only the roles, one index probe of role_parents_pkey per level.
CREATE FUNCTION rbac.resolve(
    p_tenant uuid,
    p_principal_type text,
    p_principal_id uuid,
    p_resource_type text,
    p_resource_id text,
    p_all_scopes boolean,
    p_paths boolean
) RETURNS TABLE (grant_id uuid, role_path text[], permission text, effect text, resource_type text,
                 resource_id text, expires_at timestamptz)
    LANGUAGE plpgsql STABLE
    SET search_path = pg_catalog, pg_temp
    SET plan_cache_mode = force_generic_plan
    AS $$
#variable_conflict use_column
BEGIN
    IF p_paths THEN
    RETURN QUERY
    WITH applied AS MATERIALIZED (
        SELECT g.id, g.role_key, g.permission, g.effect, g.resource_type, g.resource_id, g.expires_at
          FROM rbac.grants g
         WHERE g.tenant_id = p_tenant AND g.principal_type = p_principal_type AND g.principal_id = p_principal_id
           AND (g.expires_at IS NULL OR g.expires_at > pg_catalog.now())
           AND (g.resource_type IS NULL OR p_all_scopes
                OR (g.resource_type = p_resource_type AND g.resource_id = p_resource_id))
        UNION ALL
        SELECT g.id, g.role_key, g.permission, g.effect, g.resource_type, g.resource_id, g.expires_at
          FROM rbac.group_members gm
          JOIN rbac.grants g ON g.tenant_id = p_tenant AND g.principal_type = 'group' AND g.principal_id = gm.group_id
         WHERE gm.tenant_id = p_tenant AND gm.principal_type = p_principal_type AND gm.principal_id = p_principal_id
           AND (g.expires_at IS NULL OR g.expires_at > pg_catalog.now())
           AND (g.resource_type IS NULL OR p_all_scopes
                OR (g.resource_type = p_resource_type AND g.resource_id = p_resource_id))
        UNION ALL
        SELECT NULL::pg_catalog.uuid, m.role, NULL::pg_catalog.text, 'allow'::pg_catalog.text,
               NULL::pg_catalog.text, NULL::pg_catalog.text, NULL::pg_catalog.timestamptz
          FROM tenancy.memberships m
         WHERE p_principal_type = 'user' AND m.tenant_id = p_tenant AND m.user_id = p_principal_id
    ),
    closure AS (
        SELECT c.root, c.key, c.role_path
          FROM rbac.role_closure(p_tenant, ARRAY(SELECT a.role_key FROM applied a WHERE a.role_key IS NOT NULL)) c
    )
    SELECT a.id, NULL::pg_catalog.text[], a.permission, a.effect, a.resource_type, a.resource_id, a.expires_at
      FROM applied a WHERE a.permission IS NOT NULL
    UNION ALL
    SELECT a.id, c.role_path, rp.permission, rp.effect, a.resource_type, a.resource_id, a.expires_at
      FROM applied a
      JOIN closure c ON c.root = a.role_key
      JOIN (SELECT x.role_key, x.permission, x.effect FROM rbac.role_permissions x WHERE x.tenant_id = p_tenant
            UNION ALL
            SELECT s.role_key, s.permission, s.effect FROM rbac.system_role_permissions s) rp ON rp.role_key = c.key;
    ELSE
        RETURN QUERY
        WITH RECURSIVE
    applied AS MATERIALIZED (
        SELECT g.id, g.role_key, g.permission, g.effect, g.resource_type, g.resource_id, g.expires_at
          FROM rbac.grants g
         WHERE g.tenant_id = p_tenant AND g.principal_type = p_principal_type AND g.principal_id = p_principal_id
           AND (g.expires_at IS NULL OR g.expires_at > pg_catalog.now())
           AND (g.resource_type IS NULL OR p_all_scopes
                OR (g.resource_type = p_resource_type AND g.resource_id = p_resource_id))
        UNION ALL
        SELECT g.id, g.role_key, g.permission, g.effect, g.resource_type, g.resource_id, g.expires_at
          FROM rbac.group_members gm
          JOIN rbac.grants g ON g.tenant_id = p_tenant AND g.principal_type = 'group' AND g.principal_id = gm.group_id
         WHERE gm.tenant_id = p_tenant AND gm.principal_type = p_principal_type AND gm.principal_id = p_principal_id
           AND (g.expires_at IS NULL OR g.expires_at > pg_catalog.now())
           AND (g.resource_type IS NULL OR p_all_scopes
                OR (g.resource_type = p_resource_type AND g.resource_id = p_resource_id))
        UNION ALL
        SELECT NULL::pg_catalog.uuid, m.role, NULL::pg_catalog.text, 'allow'::pg_catalog.text,
               NULL::pg_catalog.text, NULL::pg_catalog.text, NULL::pg_catalog.timestamptz
          FROM tenancy.memberships m
         WHERE p_principal_type = 'user' AND m.tenant_id = p_tenant AND m.user_id = p_principal_id
    ),
    bfs(root, depth, keys, seen) AS (
        SELECT r.k, 0, ARRAY[r.k], ARRAY[r.k]
          FROM (SELECT DISTINCT a.role_key AS k FROM applied a WHERE a.role_key IS NOT NULL) r
        UNION ALL
        SELECT b.root, b.depth + 1, n.keys, b.seen || n.keys
          FROM bfs b
         CROSS JOIN LATERAL (
                SELECT ARRAY(
                    SELECT DISTINCT e.parent_key
                      FROM (SELECT rp.parent_key FROM rbac.role_parents rp
                             WHERE rp.tenant_id = p_tenant AND rp.role_key = ANY (b.keys)
                            UNION ALL
                            SELECT sp.parent_key FROM rbac.system_role_parents sp
                             WHERE sp.role_key = ANY (b.keys)) e
                     WHERE NOT e.parent_key = ANY (b.seen)) AS keys
                -- OFFSET 0 keeps the level's probe a subquery run once per level (pulled up,
                -- it would run once for the CASE below and once for the output).
                OFFSET 0) n
         WHERE CASE
                   WHEN pg_catalog.cardinality(n.keys) = 0 THEN false
                   WHEN b.depth >= rbac.max_role_depth()
                       THEN rbac.role_graph_limit('inheritance deeper than the limit', rbac.max_role_depth())
                   WHEN pg_catalog.cardinality(b.seen) + pg_catalog.cardinality(n.keys) > rbac.max_roles() + 100
                       THEN rbac.role_graph_limit('more roles reachable than the limit', rbac.max_roles())
                   ELSE true
               END
    ),
    closure AS (
        SELECT b.root, u.k AS key, NULL::pg_catalog.text[] AS role_path FROM bfs b, unnest(b.keys) u(k)
    )
    SELECT a.id, NULL::pg_catalog.text[], a.permission, a.effect, a.resource_type, a.resource_id, a.expires_at
      FROM applied a WHERE a.permission IS NOT NULL
    UNION ALL
    SELECT a.id, c.role_path, rp.permission, rp.effect, a.resource_type, a.resource_id, a.expires_at
      FROM applied a
      JOIN closure c ON c.root = a.role_key
      JOIN (SELECT x.role_key, x.permission, x.effect FROM rbac.role_permissions x WHERE x.tenant_id = p_tenant
            UNION ALL
            SELECT s.role_key, s.permission, s.effect FROM rbac.system_role_permissions s) rp ON rp.role_key = c.key;
    END IF;
END
$$;

-- Same signature and meaning as V1, over rbac.resolve.
CREATE OR REPLACE FUNCTION rbac.statements(
    p_principal_type text,
    p_principal_id uuid,
    p_resource_type text DEFAULT NULL,
    p_resource_id text DEFAULT NULL
) RETURNS TABLE (grant_id uuid, role_path text[], permission text, effect text, resource_type text, resource_id text)
    LANGUAGE plpgsql STABLE
    SET search_path = pg_catalog, pg_temp
    AS $$
#variable_conflict use_column
BEGIN
    RETURN QUERY
    SELECT s.grant_id, s.role_path, s.permission, s.effect, s.resource_type, s.resource_id
      FROM rbac.resolve(tenancy.current_tenant_id(), p_principal_type, p_principal_id,
                        p_resource_type, p_resource_id, false, true) s;
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
    SET search_path = pg_catalog, pg_temp
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
      FROM rbac.resolve(tenancy.current_tenant_id(), p_principal_type, p_principal_id,
                        p_resource_type, p_resource_id, false, false) s
     WHERE rbac.covers(s.permission, p_permission);
    RETURN v_allow AND NOT v_deny;
END
$$;

ALTER FUNCTION rbac.explain(text, uuid, text, text, text) SET search_path = pg_catalog, pg_temp;
ALTER FUNCTION rbac.effective_permissions(text, uuid, text, text) SET search_path = pg_catalog, pg_temp;
ALTER FUNCTION rbac.principals_with(text, text, text) SET search_path = pg_catalog, pg_temp;
ALTER FUNCTION rbac.holds(text, uuid, text, text, text) SET search_path = pg_catalog, pg_temp;
ALTER FUNCTION rbac.role_exists(uuid, text) SET search_path = pg_catalog, pg_temp;
ALTER FUNCTION rbac.roles_check_key() SET search_path = pg_catalog, pg_temp;
ALTER FUNCTION rbac.roles_cascade() SET search_path = pg_catalog, pg_temp;

-- ---------------------------------------------------------------------------------------------
-- The escalation rule, in one place
-- ---------------------------------------------------------------------------------------------

-- The allow (or deny) patterns of the roles reachable from p_roots.
CREATE FUNCTION rbac.closure_patterns(p_tenant uuid, p_roots text[], p_effect text) RETURNS text[]
    LANGUAGE sql STABLE
    SET search_path = pg_catalog, pg_temp
    AS $$
    SELECT coalesce(pg_catalog.array_agg(DISTINCT rp.permission), '{}')
      FROM rbac.role_closure(p_tenant, p_roots) c
      JOIN (SELECT x.role_key, x.permission, x.effect FROM rbac.role_permissions x WHERE x.tenant_id = p_tenant
            UNION ALL
            SELECT s.role_key, s.permission, s.effect FROM rbac.system_role_permissions s) rp ON rp.role_key = c.key
     WHERE rp.effect = p_effect
$$;

-- Raises unless the acting user may make a change that
--   confers the allow patterns p_confer, each until the matching p_until (NULL: for good),
--   adds the deny patterns p_deny (a deny may only be placed by one who holds what it denies),
--   removes the deny patterns p_lift.
-- Held means: a tenant-wide, unexpired allow of the actor covers the pattern, and no deny of the
-- actor, of any scope, overlaps it. Conferring also needs one such allow that lasts as long.
CREATE FUNCTION rbac.authorize_change(
    p_tenant uuid,
    p_confer text[],
    p_until timestamptz[],
    p_deny text[],
    p_lift text[]
) RETURNS void
    LANGUAGE plpgsql STABLE
    SET search_path = pg_catalog, pg_temp
    AS $$
DECLARE
    v_actor uuid := tenancy.current_actor_id();
    v_bad record;
BEGIN
    IF coalesce(cardinality(p_confer), 0) + coalesce(cardinality(p_deny), 0) + coalesce(cardinality(p_lift), 0) = 0 THEN
        RETURN;
    END IF;
    IF v_actor IS NULL THEN
        RAISE EXCEPTION 'changing authorization data needs an acting user: set app.actor_id in this transaction'
            USING ERRCODE = 'PS403';
    END IF;
    WITH s AS MATERIALIZED (
        SELECT r.permission, r.effect, r.resource_type, r.expires_at
          FROM rbac.resolve(p_tenant, 'user', v_actor, NULL, NULL, true, false) r
    ),
    wanted(kind, pattern, until) AS (
        SELECT 'confer', w.p, w.u FROM unnest(p_confer, p_until) w(p, u) WHERE w.p IS NOT NULL
        UNION ALL
        SELECT 'deny', d.p, NULL::timestamptz FROM unnest(p_deny) d(p) WHERE d.p IS NOT NULL
        UNION ALL
        SELECT 'lift', l.p, NULL::timestamptz FROM unnest(p_lift) l(p) WHERE l.p IS NOT NULL
    ),
    judged AS (
        SELECT w.kind, w.pattern, w.until,
               EXISTS (SELECT 1 FROM s WHERE s.effect = 'allow' AND s.resource_type IS NULL
                          AND rbac.covers(s.permission, w.pattern))
               AND NOT EXISTS (SELECT 1 FROM s WHERE s.effect = 'deny' AND rbac.overlaps(s.permission, w.pattern))
                   AS held,
               (SELECT max(coalesce(s.expires_at, 'infinity')) FROM s
                 WHERE s.effect = 'allow' AND s.resource_type IS NULL AND rbac.covers(s.permission, w.pattern))
                   AS held_until
          FROM wanted w
    )
    SELECT j.kind, j.pattern, j.until, j.held, j.held_until INTO v_bad
      FROM judged j
     WHERE NOT j.held OR (j.kind = 'confer' AND j.held_until < coalesce(j.until, 'infinity'))
     ORDER BY j.held, j.kind, j.pattern
     LIMIT 1;
    IF NOT FOUND THEN
        RETURN;
    END IF;
    IF v_bad.kind = 'lift' THEN
        RAISE EXCEPTION 'deny removal refused: user % does not hold %, so it cannot lift a deny on it', v_actor, v_bad.pattern
            USING ERRCODE = 'PS403', DETAIL = format('missing=%s', v_bad.pattern);
    ELSIF v_bad.held THEN
        RAISE EXCEPTION 'escalation refused: user % holds % only until %, so it cannot grant it for longer', v_actor,
                v_bad.pattern, v_bad.held_until
            USING ERRCODE = 'PS403', DETAIL = format('missing=%s', v_bad.pattern);
    ELSE
        RAISE EXCEPTION 'escalation refused: user % does not hold %, so it cannot grant it', v_actor, v_bad.pattern
            USING ERRCODE = 'PS403', DETAIL = format('missing=%s', v_bad.pattern);
    END IF;
END
$$;

-- ---------------------------------------------------------------------------------------------
-- The guards. Each is BEFORE ROW, so it reads the actor's holdings before this row changes; a
-- row from another tenant is left to the tenant policy (which refuses it).
-- ---------------------------------------------------------------------------------------------

-- rbac.grants: replaces V1's insert-only guard.
CREATE OR REPLACE FUNCTION rbac.grants_guard() RETURNS trigger
    LANGUAGE plpgsql
    SET search_path = pg_catalog, pg_temp
    AS $$
DECLARE
    v_actor uuid := tenancy.current_actor_id();
    v_confer text[] := '{}';
    v_until timestamptz;
    v_deny text[] := '{}';
    v_lift text[] := '{}';
    v_tenant uuid;
BEGIN
    IF TG_OP <> 'DELETE' AND NEW.role_key IS NOT NULL AND NOT rbac.role_exists(NEW.tenant_id, NEW.role_key) THEN
        RAISE EXCEPTION 'role % does not exist', NEW.role_key
            USING ERRCODE = '23503', CONSTRAINT = 'grants_role_exists';
    END IF;
    IF rbac.acts_as_owner(TG_RELID) THEN
        RETURN CASE WHEN TG_OP = 'DELETE' THEN OLD ELSE NEW END;
    END IF;
    v_tenant := CASE WHEN TG_OP = 'DELETE' THEN OLD.tenant_id ELSE NEW.tenant_id END;
    IF v_tenant IS DISTINCT FROM tenancy.current_tenant_id() THEN
        RETURN CASE WHEN TG_OP = 'DELETE' THEN OLD ELSE NEW END;
    END IF;
    IF TG_OP <> 'INSERT' AND (OLD.expires_at IS NULL OR OLD.expires_at > now()) THEN
        IF OLD.effect = 'deny' THEN
            v_lift := ARRAY[OLD.permission];
        ELSIF OLD.role_key IS NOT NULL THEN
            v_lift := rbac.closure_patterns(OLD.tenant_id, ARRAY[OLD.role_key], 'deny');
        END IF;
    END IF;
    IF TG_OP <> 'DELETE' THEN
        IF v_actor IS NULL THEN
            RAISE EXCEPTION 'granting needs an acting user: set app.actor_id in this transaction'
                USING ERRCODE = 'PS403';
        END IF;
        NEW.granted_by := v_actor;
        v_until := NEW.expires_at;
        IF NEW.expires_at IS NULL OR NEW.expires_at > now() THEN
            IF NEW.effect = 'deny' THEN
                v_deny := ARRAY[NEW.permission];
            ELSIF NEW.permission IS NOT NULL THEN
                v_confer := ARRAY[NEW.permission];
            ELSE
                v_confer := rbac.closure_patterns(NEW.tenant_id, ARRAY[NEW.role_key], 'allow');
            END IF;
        END IF;
    END IF;
    PERFORM rbac.authorize_change(v_tenant, v_confer, array_fill(v_until, ARRAY[cardinality(v_confer)]),
                                  v_deny, v_lift);
    RETURN CASE WHEN TG_OP = 'DELETE' THEN OLD ELSE NEW END;
END
$$;
DROP TRIGGER grants_guard ON rbac.grants;
CREATE TRIGGER grants_guard BEFORE INSERT OR UPDATE OR DELETE ON rbac.grants
    FOR EACH ROW EXECUTE FUNCTION rbac.grants_guard();

-- rbac.role_permissions: an allow put in a role is conferred for good (roles do not expire).
CREATE FUNCTION rbac.role_permissions_guard() RETURNS trigger
    LANGUAGE plpgsql
    SET search_path = pg_catalog, pg_temp
    AS $$
DECLARE
    v_confer text[] := '{}';
    v_deny text[] := '{}';
    v_lift text[] := '{}';
    v_tenant uuid := CASE WHEN TG_OP = 'DELETE' THEN OLD.tenant_id ELSE NEW.tenant_id END;
BEGIN
    IF rbac.acts_as_owner(TG_RELID) OR v_tenant IS DISTINCT FROM tenancy.current_tenant_id() THEN
        RETURN CASE WHEN TG_OP = 'DELETE' THEN OLD ELSE NEW END;
    END IF;
    IF TG_OP <> 'INSERT' AND OLD.effect = 'deny' THEN
        v_lift := ARRAY[OLD.permission];
    END IF;
    IF TG_OP <> 'DELETE' THEN
        IF NEW.effect = 'deny' THEN
            v_deny := ARRAY[NEW.permission];
        ELSE
            v_confer := ARRAY[NEW.permission];
        END IF;
    END IF;
    PERFORM rbac.authorize_change(v_tenant, v_confer, array_fill(NULL::timestamptz, ARRAY[cardinality(v_confer)]),
                                  v_deny, v_lift);
    RETURN CASE WHEN TG_OP = 'DELETE' THEN OLD ELSE NEW END;
END
$$;
CREATE TRIGGER role_permissions_guard BEFORE INSERT OR UPDATE OR DELETE ON rbac.role_permissions
    FOR EACH ROW EXECUTE FUNCTION rbac.role_permissions_guard();

-- rbac.role_parents: V1's check (parent exists, no cycle) under the graph row lock, plus the
-- size and depth limits, which hold for every role including the owner.
CREATE OR REPLACE FUNCTION rbac.role_parents_check() RETURNS trigger
    LANGUAGE plpgsql
    SET search_path = pg_catalog, pg_temp
    AS $$
DECLARE
    v_cycle text[];
    v_up integer;
    v_down integer;
BEGIN
    PERFORM rbac.lock_role_graph(NEW.tenant_id);
    IF NOT rbac.role_exists(NEW.tenant_id, NEW.parent_key) THEN
        RAISE EXCEPTION 'parent role % does not exist', NEW.parent_key
            USING ERRCODE = '23503', CONSTRAINT = 'role_parents_parent_exists';
    END IF;
    -- A path from the parent back to the role closes a cycle (the closure visits each role once
    -- and keeps a shortest path).
    SELECT ARRAY[NEW.role_key] || c.role_path INTO v_cycle
      FROM rbac.role_closure(NEW.tenant_id, ARRAY[NEW.parent_key]) c
     WHERE c.key = NEW.role_key;
    IF v_cycle IS NOT NULL THEN
        RAISE EXCEPTION 'role inheritance would form a cycle: %', array_to_string(v_cycle, ' -> ')
            USING ERRCODE = 'PS422', DETAIL = format('cycle=%s', array_to_string(v_cycle, '>'));
    END IF;
    IF (SELECT count(*) FROM rbac.role_parents p WHERE p.tenant_id = NEW.tenant_id) >= rbac.max_role_edges() THEN
        PERFORM rbac.role_graph_limit('too many inheritance edges in this tenant', rbac.max_role_edges());
    END IF;
    -- The longest chain through the new edge: longest below the role + 1 + longest above the
    -- parent. (key, length) pairs are distinct, so this is bounded by roles x depth limit.
    WITH RECURSIVE e AS (
        SELECT p.role_key, p.parent_key FROM rbac.role_parents p WHERE p.tenant_id = NEW.tenant_id
        UNION ALL
        SELECT s.role_key, s.parent_key FROM rbac.system_role_parents s
    ), above(key, len) AS (
        SELECT NEW.parent_key, 0
        UNION
        SELECT e.parent_key, a.len + 1 FROM above a JOIN e ON e.role_key = a.key
         WHERE a.len <= rbac.max_role_depth()
    ), below(key, len) AS (
        SELECT NEW.role_key, 0
        UNION
        SELECT e.role_key, b.len + 1 FROM below b JOIN e ON e.parent_key = b.key
         WHERE b.len <= rbac.max_role_depth()
    )
    SELECT (SELECT max(len) FROM above), (SELECT max(len) FROM below) INTO v_up, v_down;
    IF v_up + v_down + 1 > rbac.max_role_depth() THEN
        PERFORM rbac.role_graph_limit(format('inheritance %s -> %s would be %s levels deep', NEW.role_key,
                                             NEW.parent_key, v_up + v_down + 1), rbac.max_role_depth());
    END IF;
    RETURN NEW;
END
$$;

CREATE FUNCTION rbac.role_parents_guard() RETURNS trigger
    LANGUAGE plpgsql
    SET search_path = pg_catalog, pg_temp
    AS $$
DECLARE
    v_confer text[] := '{}';
    v_lift text[] := '{}';
    v_tenant uuid := CASE WHEN TG_OP = 'DELETE' THEN OLD.tenant_id ELSE NEW.tenant_id END;
BEGIN
    IF rbac.acts_as_owner(TG_RELID) OR v_tenant IS DISTINCT FROM tenancy.current_tenant_id() THEN
        RETURN CASE WHEN TG_OP = 'DELETE' THEN OLD ELSE NEW END;
    END IF;
    IF TG_OP = 'UPDATE' THEN
        RAISE EXCEPTION 'inheritance edges are not updated: delete the edge and add another'
            USING ERRCODE = '42501';
    END IF;
    IF TG_OP = 'DELETE' THEN
        v_lift := rbac.closure_patterns(OLD.tenant_id, ARRAY[OLD.parent_key], 'deny');
    ELSE
        v_confer := rbac.closure_patterns(NEW.tenant_id, ARRAY[NEW.parent_key], 'allow');
    END IF;
    PERFORM rbac.authorize_change(v_tenant, v_confer, array_fill(NULL::timestamptz, ARRAY[cardinality(v_confer)]),
                                  '{}', v_lift);
    RETURN CASE WHEN TG_OP = 'DELETE' THEN OLD ELSE NEW END;
END
$$;
CREATE TRIGGER role_parents_guard BEFORE INSERT OR UPDATE OR DELETE ON rbac.role_parents
    FOR EACH ROW EXECUTE FUNCTION rbac.role_parents_guard();

-- rbac.roles: creating counts against the limit; a key never changes (for anyone but the
-- owner); deleting a role lifts the denies it carried.
CREATE FUNCTION rbac.roles_guard() RETURNS trigger
    LANGUAGE plpgsql
    SET search_path = pg_catalog, pg_temp
    AS $$
DECLARE
    v_tenant uuid := CASE WHEN TG_OP = 'DELETE' THEN OLD.tenant_id ELSE NEW.tenant_id END;
BEGIN
    IF TG_OP = 'INSERT' THEN
        PERFORM rbac.lock_role_graph(NEW.tenant_id);
        IF (SELECT count(*) FROM rbac.roles r WHERE r.tenant_id = NEW.tenant_id) >= rbac.max_roles() THEN
            PERFORM rbac.role_graph_limit('too many custom roles in this tenant', rbac.max_roles());
        END IF;
    END IF;
    IF rbac.acts_as_owner(TG_RELID) OR v_tenant IS DISTINCT FROM tenancy.current_tenant_id() THEN
        RETURN CASE WHEN TG_OP = 'DELETE' THEN OLD ELSE NEW END;
    END IF;
    IF TG_OP = 'UPDATE' AND (NEW.tenant_id, NEW.key) IS DISTINCT FROM (OLD.tenant_id, OLD.key) THEN
        RAISE EXCEPTION 'role keys are not renamed: create a new role'
            USING ERRCODE = '42501';
    END IF;
    IF TG_OP = 'DELETE' THEN
        PERFORM rbac.authorize_change(v_tenant, '{}', '{}', '{}',
                                      rbac.closure_patterns(OLD.tenant_id, ARRAY[OLD.key], 'deny'));
    END IF;
    RETURN CASE WHEN TG_OP = 'DELETE' THEN OLD ELSE NEW END;
END
$$;
CREATE TRIGGER roles_guard BEFORE INSERT OR UPDATE OR DELETE ON rbac.roles
    FOR EACH ROW EXECUTE FUNCTION rbac.roles_guard();

-- rbac.group_members: joining confers the group's unexpired allows (each until its grant's
-- expiry); leaving lifts the group's denies.
CREATE FUNCTION rbac.group_members_guard() RETURNS trigger
    LANGUAGE plpgsql
    SET search_path = pg_catalog, pg_temp
    AS $$
DECLARE
    v_confer text[] := '{}';
    v_until timestamptz[] := '{}';
    v_lift text[] := '{}';
    v_tenant uuid := CASE WHEN TG_OP = 'DELETE' THEN OLD.tenant_id ELSE NEW.tenant_id END;
BEGIN
    IF rbac.acts_as_owner(TG_RELID) OR v_tenant IS DISTINCT FROM tenancy.current_tenant_id() THEN
        RETURN CASE WHEN TG_OP = 'DELETE' THEN OLD ELSE NEW END;
    END IF;
    IF TG_OP <> 'INSERT' THEN
        SELECT coalesce(array_agg(x.p), '{}') INTO v_lift FROM (
            SELECT g.permission AS p FROM rbac.grants g
             WHERE g.tenant_id = OLD.tenant_id AND g.principal_type = 'group' AND g.principal_id = OLD.group_id
               AND g.effect = 'deny' AND (g.expires_at IS NULL OR g.expires_at > now())
            UNION
            SELECT unnest(rbac.closure_patterns(OLD.tenant_id, ARRAY(
                       SELECT g.role_key FROM rbac.grants g
                        WHERE g.tenant_id = OLD.tenant_id AND g.principal_type = 'group'
                          AND g.principal_id = OLD.group_id AND g.role_key IS NOT NULL
                          AND (g.expires_at IS NULL OR g.expires_at > now())), 'deny'))) x;
    END IF;
    IF TG_OP <> 'DELETE' THEN
        SELECT coalesce(array_agg(x.p), '{}'), coalesce(array_agg(x.u), '{}') INTO v_confer, v_until FROM (
            SELECT g.permission AS p, g.expires_at AS u FROM rbac.grants g
             WHERE g.tenant_id = NEW.tenant_id AND g.principal_type = 'group' AND g.principal_id = NEW.group_id
               AND g.effect = 'allow' AND g.permission IS NOT NULL
               AND (g.expires_at IS NULL OR g.expires_at > now())
            UNION ALL
            SELECT unnest(rbac.closure_patterns(g.tenant_id, ARRAY[g.role_key], 'allow')), g.expires_at
              FROM rbac.grants g
             WHERE g.tenant_id = NEW.tenant_id AND g.principal_type = 'group' AND g.principal_id = NEW.group_id
               AND g.role_key IS NOT NULL AND (g.expires_at IS NULL OR g.expires_at > now())) x;
    END IF;
    PERFORM rbac.authorize_change(v_tenant, v_confer, v_until, '{}', v_lift);
    RETURN CASE WHEN TG_OP = 'DELETE' THEN OLD ELSE NEW END;
END
$$;
CREATE TRIGGER group_members_guard BEFORE INSERT OR UPDATE OR DELETE ON rbac.group_members
    FOR EACH ROW EXECUTE FUNCTION rbac.group_members_guard();

-- tenancy.memberships: the membership's role is conferred for good. Exempt besides the owner:
-- the founder bootstrap (the actor becomes the first member of a tenant that has none).
CREATE FUNCTION rbac.memberships_guard() RETURNS trigger
    LANGUAGE plpgsql
    SET search_path = pg_catalog, pg_temp
    AS $$
DECLARE
    v_tenant uuid := CASE WHEN TG_OP = 'DELETE' THEN OLD.tenant_id ELSE NEW.tenant_id END;
    v_confer text[] := '{}';
    v_lift text[] := '{}';
BEGIN
    IF rbac.acts_as_owner(TG_RELID) OR v_tenant IS DISTINCT FROM tenancy.current_tenant_id() THEN
        RETURN CASE WHEN TG_OP = 'DELETE' THEN OLD ELSE NEW END;
    END IF;
    IF TG_OP = 'INSERT' AND NEW.user_id = tenancy.current_actor_id()
       AND NOT EXISTS (SELECT 1 FROM tenancy.memberships m WHERE m.tenant_id = NEW.tenant_id) THEN
        RETURN NEW;
    END IF;
    IF TG_OP = 'UPDATE' AND (NEW.tenant_id, NEW.user_id, NEW.role) IS NOT DISTINCT FROM (OLD.tenant_id, OLD.user_id, OLD.role) THEN
        RETURN NEW;
    END IF;
    -- A role that does not exist (yet) would be filled by whoever creates it later.
    IF TG_OP <> 'DELETE' AND NOT rbac.role_exists(NEW.tenant_id, NEW.role) THEN
        RAISE EXCEPTION 'role % does not exist', NEW.role
            USING ERRCODE = '23503', CONSTRAINT = 'memberships_role_exists';
    END IF;
    IF TG_OP <> 'INSERT' THEN
        v_lift := rbac.closure_patterns(OLD.tenant_id, ARRAY[OLD.role], 'deny');
    END IF;
    IF TG_OP <> 'DELETE' THEN
        v_confer := rbac.closure_patterns(NEW.tenant_id, ARRAY[NEW.role], 'allow');
    END IF;
    PERFORM rbac.authorize_change(v_tenant, v_confer, array_fill(NULL::timestamptz, ARRAY[cardinality(v_confer)]),
                                  '{}', v_lift);
    RETURN CASE WHEN TG_OP = 'DELETE' THEN OLD ELSE NEW END;
END
$$;
CREATE TRIGGER rbac_role_guard BEFORE INSERT OR UPDATE OR DELETE ON tenancy.memberships
    FOR EACH ROW EXECUTE FUNCTION rbac.memberships_guard();

-- tenancy.invitations: a pending invitation is a membership to be, so creating one, or changing
-- the role, address, token or expiry of one that stays or becomes pending, confers its role.
CREATE FUNCTION rbac.invitations_guard() RETURNS trigger
    LANGUAGE plpgsql
    SET search_path = pg_catalog, pg_temp
    AS $$
DECLARE
    v_confer text[];
BEGIN
    IF rbac.acts_as_owner(TG_RELID) OR NEW.tenant_id IS DISTINCT FROM tenancy.current_tenant_id()
       OR NEW.status <> 'pending' THEN
        RETURN NEW;
    END IF;
    IF TG_OP = 'UPDATE'
       AND (NEW.tenant_id, NEW.role, NEW.email, NEW.token_hash, NEW.expires_at, OLD.status)
           IS NOT DISTINCT FROM (OLD.tenant_id, OLD.role, OLD.email, OLD.token_hash, OLD.expires_at, 'pending') THEN
        RETURN NEW;
    END IF;
    IF NOT rbac.role_exists(NEW.tenant_id, NEW.role) THEN
        RAISE EXCEPTION 'role % does not exist', NEW.role
            USING ERRCODE = '23503', CONSTRAINT = 'invitations_role_exists';
    END IF;
    v_confer := rbac.closure_patterns(NEW.tenant_id, ARRAY[NEW.role], 'allow');
    PERFORM rbac.authorize_change(NEW.tenant_id, v_confer, array_fill(NULL::timestamptz, ARRAY[cardinality(v_confer)]),
                                  '{}', '{}');
    RETURN NEW;
END
$$;
CREATE TRIGGER rbac_role_guard BEFORE INSERT OR UPDATE ON tenancy.invitations
    FOR EACH ROW EXECUTE FUNCTION rbac.invitations_guard();

-- ---------------------------------------------------------------------------------------------
-- Privileges: nothing for PUBLIC; the app runs the checks and, through its triggers, the guards.
-- ---------------------------------------------------------------------------------------------

REVOKE EXECUTE ON ALL FUNCTIONS IN SCHEMA rbac FROM PUBLIC;
GRANT EXECUTE ON FUNCTION
    rbac.max_role_depth(), rbac.max_roles(), rbac.max_role_edges(), rbac.role_graph_limit(text, integer),
    rbac.overlaps(text, text), rbac.acts_as_owner(oid), rbac.lock_role_graph(uuid),
    rbac.role_closure(uuid, text[]), rbac.resolve(uuid, text, uuid, text, text, boolean, boolean),
    rbac.closure_patterns(uuid, text[], text), rbac.authorize_change(uuid, text[], timestamptz[], text[], text[])
    TO pgstrata_app;

-- A suspended tenant's request path changes no authorization data (tenancy V3).
DO $$
DECLARE t text;
BEGIN
    FOREACH t IN ARRAY ARRAY['roles', 'role_permissions', 'role_parents', 'group_members', 'grants'] LOOP
        PERFORM tenancy.enforce_tenant_status(format('rbac.%I', t)::regclass);
    END LOOP;
END
$$;

-- ---------------------------------------------------------------------------------------------
-- Existing rows past the new limits are reported, not changed.
-- ---------------------------------------------------------------------------------------------

DO $$
DECLARE
    v_roles bigint;
    v_edges bigint;
BEGIN
    SELECT count(*) INTO v_roles FROM (
        SELECT r.tenant_id FROM rbac.roles r GROUP BY r.tenant_id HAVING count(*) > rbac.max_roles()) t;
    SELECT count(*) INTO v_edges FROM (
        SELECT p.tenant_id FROM rbac.role_parents p GROUP BY p.tenant_id HAVING count(*) > rbac.max_role_edges()) t;
    IF v_roles > 0 OR v_edges > 0 THEN
        RAISE WARNING 'rbac: % tenant(s) hold more than % custom roles and % more than % inheritance edges; '
                      'their checks fail with PS413 until the graph is reduced',
            v_roles, rbac.max_roles(), v_edges, rbac.max_role_edges();
    END IF;
END
$$;
