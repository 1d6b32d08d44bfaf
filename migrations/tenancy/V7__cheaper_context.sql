-- tenancy V7: the tenant context is one cached expression that no search_path change re-plans
-- twice a statement, and the member directory is one join.
--
-- Every statement under a tenant policy evaluates current_tenant_id() once. PL/pgSQL caches the
-- plans of a function's expressions together with the search_path they were planned under, and
-- current_tenant_id() runs both under the application's search_path (the policies of the
-- application's statements) and under `pg_catalog, pg_temp` (inside every function that pins it:
-- rbac.check, the audit trigger, the policies of the tables those read). Each switch between
-- the two planned its four expressions again: a page of documents under a policy that calls
-- rbac.check re-planned six expressions on every execution and cost 1.8x the explicit WHERE
-- (D-144).
--
-- current_tenant_id() is now one expression, so a switch re-plans one. Its common case is one
-- comparison of two settings as text: the context names the tenant this transaction already
-- found live (D-071). Anything else (first call, another tenant, the JWT claim, no context) calls
-- checked_context_tenant_id(), V4's body under a new name, with its search_path pinned: it runs
-- about once per transaction, and pinned it keeps its plans whoever calls it. Functions that pin
-- their search_path and need the tenant on a hot path call checked_context_tenant_id() directly
-- (rbac V4's check).
CREATE FUNCTION tenancy.checked_context_tenant_id() RETURNS uuid
    LANGUAGE plpgsql STABLE PARALLEL UNSAFE
    SET search_path = pg_catalog, pg_temp
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
    'The context''s tenant if it exists and is not deleted, remembered for the transaction; else NULL. current_tenant_id() without its fast path, for functions that pin their search_path';
GRANT EXECUTE ON FUNCTION tenancy.checked_context_tenant_id()
    TO pgstrata_app, pgstrata_worker, pgstrata_operator;

-- The fast path compares texts: '' (a setting reset at the end of an earlier transaction) never
-- matches, and a context written in another form than the remembered one takes the slow path.
-- (A LANGUAGE sql body, inlined into the caller, would have no plans of its own; but every
-- statement planned afresh, as unprepared statements are, then parses it again: measured
-- +127,000 instructions a statement, half the statement. D-144.)
CREATE OR REPLACE FUNCTION tenancy.current_tenant_id() RETURNS uuid
    LANGUAGE plpgsql STABLE PARALLEL UNSAFE
    AS $$
BEGIN
    RETURN CASE WHEN NULLIF(pg_catalog.current_setting('pgstrata.live_tenant_id', true), '')
                         = pg_catalog.current_setting('app.tenant_id', true)
                THEN pg_catalog.current_setting('app.tenant_id', true)::pg_catalog.uuid
                ELSE tenancy.checked_context_tenant_id() END;
END
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
