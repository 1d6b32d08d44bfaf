-- Reverts rbac V4: V2's rbac.check, run as its caller, reading tenancy.current_tenant_id().
CREATE OR REPLACE FUNCTION rbac.check(
    p_principal_type text,
    p_principal_id uuid,
    p_permission text,
    p_resource_type text DEFAULT NULL,
    p_resource_id text DEFAULT NULL
) RETURNS boolean
    LANGUAGE plpgsql STABLE SECURITY INVOKER
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
