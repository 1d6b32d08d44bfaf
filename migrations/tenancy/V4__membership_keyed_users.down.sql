-- Reverts tenancy V4: V1's array policy and the lower(email) index come back.
DROP INDEX tenancy.users_email_key;
ALTER TABLE tenancy.users DROP COLUMN email_key;
CREATE UNIQUE INDEX users_email_key ON tenancy.users (lower(email));

CREATE FUNCTION tenancy.visible_user_ids() RETURNS uuid[]
    LANGUAGE sql STABLE PARALLEL SAFE
    AS $$
    SELECT array_append(coalesce(array_agg(m.user_id), '{}'::uuid[]), tenancy.current_actor_id())
      FROM tenancy.memberships m
     WHERE m.tenant_id = tenancy.current_tenant_id()
$$;
COMMENT ON FUNCTION tenancy.visible_user_ids() IS
    'Users the current context may see: the members of the current tenant and the actor itself';
GRANT EXECUTE ON FUNCTION tenancy.visible_user_ids() TO pgstrata_app;

DROP POLICY self_or_same_tenant ON tenancy.users;
CREATE POLICY self_or_same_tenant ON tenancy.users FOR SELECT
    USING (id = ANY ((SELECT tenancy.visible_user_ids())::uuid[]));

-- V3's current_tenant_id(), as it was.
CREATE OR REPLACE FUNCTION tenancy.current_tenant_id() RETURNS uuid
    LANGUAGE plpgsql STABLE PARALLEL SAFE
    AS $$
BEGIN
    RETURN (SELECT t.id FROM tenancy.tenants t
             WHERE t.id = tenancy.context_tenant_id() AND t.deleted_at IS NULL);
END
$$;
