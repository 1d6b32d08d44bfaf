-- tenancy V7: the tenant context is an expression the planner inlines, and the member directory
-- is one join.
--
-- Every statement under a tenant policy evaluates current_tenant_id() once. Since V4 it was a
-- PL/pgSQL function, and PL/pgSQL caches the plans of its expressions together with the
-- search_path they were planned under. It runs under the application's search_path from the
-- policies of the application's own statements, and under `pg_catalog, pg_temp` from inside
-- every function that pins it (rbac.check, billing's access functions, the policies of the
-- tables they read). Each switch between the two invalidated those plans, so a statement whose
-- policy also called rbac.check planned six expressions again on every execution: a document
-- list guarded by rbac.check cost 1.8x the same list with an explicit WHERE (D-144).
--
-- current_tenant_id() is now a SQL expression the planner inlines into the statement that
-- calls it, so it has no plans of its own. Its common case is one comparison of two settings:
-- the context names the tenant this transaction already found live (D-071). Anything else
-- (first call, another tenant, the JWT claim, no context) calls checked_context_tenant_id(),
-- V4's function under a new name, which does what current_tenant_id() did.
CREATE FUNCTION tenancy.checked_context_tenant_id() RETURNS uuid
    LANGUAGE plpgsql STABLE PARALLEL UNSAFE
    AS $$
DECLARE
    v_context pg_catalog.uuid := tenancy.context_tenant_id();
BEGIN
    IF v_context IS NULL THEN
        RETURN NULL;
    END IF;
    IF pg_catalog.current_setting('pgstrata.live_tenant_id', true) = v_context::pg_catalog.text THEN
        RETURN v_context;
    END IF;
    IF EXISTS (SELECT 1 FROM tenancy.tenants t WHERE t.id = v_context AND t.deleted_at IS NULL) THEN
        PERFORM pg_catalog.set_config('pgstrata.live_tenant_id', v_context::pg_catalog.text, true);
        RETURN v_context;
    END IF;
    RETURN NULL;
END
$$;
COMMENT ON FUNCTION tenancy.checked_context_tenant_id() IS
    'The context''s tenant if it exists and is not deleted, remembered for the transaction; else NULL (current_tenant_id()''s slow path)';
GRANT EXECUTE ON FUNCTION tenancy.checked_context_tenant_id()
    TO pgstrata_app, pgstrata_worker, pgstrata_operator;

-- The fast path compares texts: '' (a setting reset at the end of an earlier transaction) never
-- matches, and a context written in another form than the remembered one takes the slow path.
CREATE OR REPLACE FUNCTION tenancy.current_tenant_id() RETURNS uuid
    LANGUAGE sql STABLE PARALLEL UNSAFE
    AS $$
    SELECT CASE WHEN NULLIF(pg_catalog.current_setting('pgstrata.live_tenant_id', true), '')
                         = pg_catalog.current_setting('app.tenant_id', true)
                THEN pg_catalog.current_setting('app.tenant_id', true)::pg_catalog.uuid
                ELSE tenancy.checked_context_tenant_id() END
$$;

-- The member directory: the current tenant's memberships with their users' email and name.
-- Read through tenancy.users, each user row pays the users policy, one membership probe per row
-- (V4). The view runs as its owner with the tenant written out, so the join is the plain join an
-- explicit WHERE gives. It shows exactly the users the users policy shows the tenant's members,
-- no more. security_barrier keeps the caller's conditions above the tenant filter unless they
-- are leakproof (uuid and text comparisons are), so a caller's function never sees another
-- tenant's row (D-145). The barrier also keeps the planner from pushing a caller's ORDER BY and
-- LIMIT into the view, so the view is ordered itself: a page is `WHERE id > $after LIMIT n`,
-- which walks memberships_pkey and stops after n rows; an ORDER BY of the caller's own would
-- sort the whole tenant first.
CREATE VIEW tenancy.member_directory WITH (security_barrier) AS
SELECT m.tenant_id, m.id, m.user_id, m.role, m.created_at, u.email, u.email_key, u.display_name
  FROM tenancy.memberships m
  JOIN tenancy.users u ON u.id = m.user_id
 WHERE m.tenant_id = (SELECT tenancy.current_tenant_id())
 ORDER BY m.tenant_id, m.id;
COMMENT ON VIEW tenancy.member_directory IS
    'The current tenant''s members with their users'' email and name, in (tenant_id, id) order: page with WHERE id > $after LIMIT n and no ORDER BY of your own';
GRANT SELECT ON tenancy.member_directory TO pgstrata_app;

-- With a non-superuser owner the forced users policy binds the view's owner too, and would
-- probe memberships per row again. The owner reads users unfiltered; the code it runs (this
-- view, the SECURITY DEFINER functions) names the users it reads. The policy names the role
-- that installs this migration, as V3's owner policies do.
DO $$
BEGIN
    EXECUTE format('CREATE POLICY owner_lookup ON tenancy.users FOR SELECT TO %I USING (true)', current_user);
END
$$;
