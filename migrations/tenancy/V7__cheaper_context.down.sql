-- Reverts tenancy V7: no member directory view, V4's current_tenant_id().
DROP POLICY owner_lookup ON tenancy.users;
DROP VIEW tenancy.member_directory;

CREATE OR REPLACE FUNCTION tenancy.current_tenant_id() RETURNS uuid
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
DROP FUNCTION tenancy.checked_context_tenant_id();
