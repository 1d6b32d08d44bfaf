-- Reverts tenancy V6: V3's accept_invitation, a missing user raised as PS404 again.
CREATE OR REPLACE FUNCTION tenancy.accept_invitation(p_token text, p_user_id uuid) RETURNS uuid
    LANGUAGE plpgsql VOLATILE SECURITY DEFINER
    SET search_path = pg_catalog, pg_temp
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
    IF p_user_id IS NULL OR p_user_id IS DISTINCT FROM tenancy.current_actor_id() THEN
        RAISE EXCEPTION 'only the invited user accepts an invitation: set app.actor_id to user %', p_user_id
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
    IF NOT tenancy.current_tenant_active() THEN
        RAISE EXCEPTION 'tenant % is not active: it takes no new members', v_tenant
            USING ERRCODE = 'PS410', DETAIL = 'status=inactive';
    END IF;
    SELECT u.email INTO v_email FROM tenancy.users u WHERE u.id = p_user_id;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'user % does not exist', p_user_id USING ERRCODE = 'PS404';
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
