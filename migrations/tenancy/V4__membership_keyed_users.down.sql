-- Reverts tenancy V4: V1's array policy and the lower(email) indexes come back.
DROP INDEX tenancy.invitations_pending_email_key;
ALTER TABLE tenancy.invitations DROP COLUMN email_key;
CREATE UNIQUE INDEX invitations_pending_email_key ON tenancy.invitations (tenant_id, lower(email))
    WHERE status = 'pending';

-- V3's create_invitation, as it was.
CREATE OR REPLACE FUNCTION tenancy.create_invitation(
    p_email text,
    p_role text DEFAULT 'member',
    p_ttl interval DEFAULT interval '7 days',
    p_invited_by uuid DEFAULT NULL
) RETURNS TABLE (invitation_id uuid, token text)
    LANGUAGE plpgsql VOLATILE
    SET search_path = pg_catalog, pg_temp
    AS $$
DECLARE
    v_tenant uuid := tenancy.current_tenant_id();
    v_actor uuid := tenancy.current_actor_id();
    v_token text;
BEGIN
    IF v_tenant IS NULL THEN
        RAISE EXCEPTION 'no tenant in context: set app.tenant_id in this transaction first'
            USING ERRCODE = '42501';
    END IF;
    IF v_actor IS NULL THEN
        RAISE EXCEPTION 'inviting needs an acting user: set app.actor_id in this transaction first'
            USING ERRCODE = '42501';
    END IF;
    IF p_invited_by IS NOT NULL AND p_invited_by <> v_actor THEN
        RAISE EXCEPTION 'an invitation is sent by the acting user, not by %', p_invited_by
            USING ERRCODE = '42501';
    END IF;
    IF p_ttl IS NULL OR p_ttl <= interval '0' OR p_ttl > interval '90 days' THEN
        RAISE EXCEPTION 'invitation ttl must be positive and at most 90 days, got %', p_ttl
            USING ERRCODE = '22023';
    END IF;
    UPDATE tenancy.invitations i SET status = 'expired'
     WHERE i.tenant_id = v_tenant AND lower(i.email) = lower(p_email)
       AND i.status = 'pending' AND i.expires_at <= now();
    v_token := replace(v_tenant::text, '-', '') || '.'
            || replace(gen_random_uuid()::text || gen_random_uuid()::text, '-', '');
    RETURN QUERY
    INSERT INTO tenancy.invitations AS i (tenant_id, email, role, token_hash, expires_at, invited_by)
    VALUES (v_tenant, p_email, p_role, sha256(convert_to(v_token, 'UTF8')), now() + p_ttl, v_actor)
    RETURNING i.id, v_token;
END
$$;

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
