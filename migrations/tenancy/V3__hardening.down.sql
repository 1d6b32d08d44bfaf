-- Reverts tenancy V3: the V1 rules come back (the app role may again change status and
-- settings, enrol other users and name any sender).
DROP FUNCTION tenancy.resolve_tenant(text);
DROP FUNCTION tenancy.actor_tenants();
DROP POLICY owner_lookup ON tenancy.tenants;
DROP POLICY actor_lookup ON tenancy.memberships;

DROP TRIGGER invitations_guard ON tenancy.invitations;
DROP FUNCTION tenancy.invitations_guard();
DROP POLICY sent_by_actor ON tenancy.invitations;
REVOKE UPDATE (status, version) ON tenancy.invitations FROM pgstrata_app;
GRANT UPDATE ON tenancy.invitations TO pgstrata_app;

DROP TRIGGER memberships_guard ON tenancy.memberships;
DROP FUNCTION tenancy.memberships_guard();
DROP FUNCTION tenancy.actor_has_role(text);
DROP FUNCTION tenancy.is_owner_of(regclass);
DROP POLICY own_membership_only ON tenancy.memberships;
REVOKE UPDATE (role, version) ON tenancy.memberships FROM pgstrata_app;
GRANT UPDATE ON tenancy.memberships TO pgstrata_app;

DO $$
DECLARE t text; p text;
BEGIN
    FOREACH t IN ARRAY ARRAY['tenancy.memberships', 'tenancy.invitations'] LOOP
        FOREACH p IN ARRAY ARRAY['tenant_active_insert', 'tenant_active_update', 'tenant_active_delete'] LOOP
            EXECUTE format('DROP POLICY %I ON %s', p, t);
        END LOOP;
    END LOOP;
END
$$;
DROP POLICY tenant_live ON tenancy.tenants;
DROP POLICY tenant_active_update ON tenancy.tenants;
DROP POLICY tenant_isolation ON tenancy.tenants;
CREATE POLICY tenant_isolation ON tenancy.tenants
    USING (id = (SELECT tenancy.current_tenant_id()))
    WITH CHECK (id = (SELECT tenancy.current_tenant_id()));
DROP FUNCTION tenancy.enforce_tenant_status(regclass);
DROP FUNCTION tenancy.current_tenant_active();
-- V1's current_tenant_id(), as it was.
CREATE OR REPLACE FUNCTION tenancy.current_tenant_id() RETURNS uuid
    LANGUAGE sql STABLE PARALLEL SAFE
    AS $$
    SELECT coalesce(
        nullif(current_setting('app.tenant_id', true), ''),
        nullif(nullif(current_setting('request.jwt.claims', true), '')::jsonb ->> 'tenant_id', '')
    )::uuid
$$;
COMMENT ON FUNCTION tenancy.current_tenant_id() IS
    'Tenant of the current transaction (app.tenant_id, else request.jwt.claims ->> tenant_id); NULL when unset';
GRANT EXECUTE ON FUNCTION tenancy.current_tenant_id() TO PUBLIC;
DROP FUNCTION tenancy.context_tenant_id();

REVOKE SELECT ON tenancy.tenants FROM pgstrata_worker;
DROP POLICY operator_all ON tenancy.tenants;
REVOKE SELECT, UPDATE (status, settings, domain, deleted_at, version) ON tenancy.tenants FROM pgstrata_operator;
REVOKE UPDATE (name, version) ON tenancy.tenants FROM pgstrata_app;
REVOKE INSERT (id, slug, name) ON tenancy.tenants FROM pgstrata_app;
GRANT INSERT, UPDATE ON tenancy.tenants TO pgstrata_app;

DROP INDEX tenancy.tenants_domain_live_key;
ALTER TABLE tenancy.tenants DROP COLUMN domain;

-- V1's invitation functions, as they were.
CREATE OR REPLACE FUNCTION tenancy.create_invitation(
    p_email text,
    p_role text DEFAULT 'member',
    p_ttl interval DEFAULT interval '7 days',
    p_invited_by uuid DEFAULT NULL
) RETURNS TABLE (invitation_id uuid, token text)
    LANGUAGE plpgsql VOLATILE
    SET search_path = ''
    AS $$
DECLARE
    v_tenant uuid := tenancy.current_tenant_id();
    v_token text;
BEGIN
    IF v_tenant IS NULL THEN
        RAISE EXCEPTION 'no tenant in context: set app.tenant_id in this transaction first'
            USING ERRCODE = '42501';
    END IF;
    IF p_ttl IS NULL OR p_ttl <= interval '0' THEN
        RAISE EXCEPTION 'invitation ttl must be positive, got %', p_ttl USING ERRCODE = '22023';
    END IF;
    UPDATE tenancy.invitations i SET status = 'expired'
     WHERE i.tenant_id = v_tenant AND lower(i.email) = lower(p_email)
       AND i.status = 'pending' AND i.expires_at <= now();
    v_token := replace(v_tenant::text, '-', '') || '.'
            || replace(gen_random_uuid()::text || gen_random_uuid()::text, '-', '');
    RETURN QUERY
    INSERT INTO tenancy.invitations AS i (tenant_id, email, role, token_hash, expires_at, invited_by)
    VALUES (v_tenant, p_email, p_role, sha256(convert_to(v_token, 'UTF8')), now() + p_ttl, p_invited_by)
    RETURNING i.id, v_token;
END
$$;

-- Accepts an invitation for p_user_id inside the current tenant and returns the membership id.
-- The row lock serialises concurrent accepts; accepting again with the same user returns the
-- same membership, so the flow creates the membership exactly once.
CREATE OR REPLACE FUNCTION tenancy.accept_invitation(p_token text, p_user_id uuid) RETURNS uuid
    LANGUAGE plpgsql VOLATILE
    SET search_path = ''
    AS $$
DECLARE
    v_tenant uuid := tenancy.current_tenant_id();
    v_inv tenancy.invitations%ROWTYPE;
    v_email text;
    v_membership uuid;
BEGIN
    IF v_tenant IS NULL THEN
        RAISE EXCEPTION 'no tenant in context: set app.tenant_id in this transaction first'
            USING ERRCODE = '42501';
    END IF;
    SELECT * INTO v_inv FROM tenancy.invitations i
     WHERE i.tenant_id = v_tenant AND i.token_hash = sha256(convert_to(p_token, 'UTF8'))
       FOR UPDATE;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'invitation token is not valid for this tenant' USING ERRCODE = 'PS404';
    END IF;
    IF v_inv.status = 'accepted' AND v_inv.accepted_by = p_user_id THEN
        SELECT m.id INTO v_membership FROM tenancy.memberships m
         WHERE m.tenant_id = v_tenant AND m.user_id = p_user_id;
        IF FOUND THEN
            RETURN v_membership;
        END IF;
    END IF;
    IF v_inv.status <> 'pending' THEN
        RAISE EXCEPTION 'invitation is %, not pending', v_inv.status
            USING ERRCODE = 'PS410', DETAIL = format('status=%s', v_inv.status);
    END IF;
    IF v_inv.expires_at <= now() THEN
        RAISE EXCEPTION 'invitation expired at %', v_inv.expires_at
            USING ERRCODE = 'PS410', DETAIL = 'status=expired';
    END IF;
    SELECT u.email INTO v_email FROM tenancy.users u WHERE u.id = p_user_id;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'user % is not visible: set app.actor_id to the accepting user', p_user_id
            USING ERRCODE = 'PS404';
    END IF;
    IF lower(v_email) <> lower(v_inv.email) THEN
        RAISE EXCEPTION 'invitation was sent to another email address' USING ERRCODE = 'PS403';
    END IF;
    INSERT INTO tenancy.memberships AS m (tenant_id, user_id, role)
    VALUES (v_tenant, p_user_id, v_inv.role)
    ON CONFLICT (tenant_id, user_id) DO NOTHING
    RETURNING m.id INTO v_membership;
    IF v_membership IS NULL THEN
        SELECT m.id INTO v_membership FROM tenancy.memberships m
         WHERE m.tenant_id = v_tenant AND m.user_id = p_user_id;
    END IF;
    UPDATE tenancy.invitations i
       SET status = 'accepted', accepted_by = p_user_id, accepted_at = now()
     WHERE i.tenant_id = v_tenant AND i.id = v_inv.id;
    RETURN v_membership;
END
$$;

ALTER FUNCTION tenancy.accept_invitation(text, uuid) SECURITY INVOKER;
GRANT EXECUTE ON FUNCTION tenancy.accept_invitation(text, uuid) TO PUBLIC;
COMMENT ON COLUMN tenancy.tenants.status IS NULL;
COMMENT ON COLUMN tenancy.tenants.settings IS NULL;
COMMENT ON COLUMN tenancy.tenants.deleted_at IS NULL;
