-- tenancy V4: a user row costs one membership probe, never the whole tenant.
--
-- V1's users policy compared id to an array of every member of the current tenant, built once
-- per statement (tenancy.visible_user_ids()): a page of 20 members joined to their users built
-- and searched an array of 100,000 ids in a tenant that size. The policy is now an EXISTS keyed
-- by (tenant_id, user_id), which memberships_tenant_user_key answers with one probe per user row
-- the statement reads, whatever the size of the tenant (D-070).

DROP POLICY self_or_same_tenant ON tenancy.users;
CREATE POLICY self_or_same_tenant ON tenancy.users FOR SELECT
    USING (id = (SELECT tenancy.current_actor_id())
           OR EXISTS (SELECT 1 FROM tenancy.memberships m
                       WHERE m.tenant_id = (SELECT tenancy.current_tenant_id()) AND m.user_id = users.id));

DROP FUNCTION tenancy.visible_user_ids();

-- A lookup by email has to find the row before the policy is asked about it, so the lookup must
-- be an index condition. lower(email) = .. cannot be one: lower() is not leakproof, so under RLS
-- it runs only on rows the policy already passed (V1 sidestepped this with the array). The key
-- is stored, and email_key = lower($1) compares two texts with a leakproof operator, which the
-- planner may use as an index condition ahead of the policy. Adding the column rewrites the
-- table once.
ALTER TABLE tenancy.users ADD COLUMN email_key text GENERATED ALWAYS AS (lower(email)) STORED;
COMMENT ON COLUMN tenancy.users.email_key IS
    'lower(email): look users up with email_key = lower($1), an index condition under RLS';
DROP INDEX tenancy.users_email_key;
CREATE UNIQUE INDEX users_email_key ON tenancy.users (email_key);

-- current_tenant_id() checks that the context's tenant exists and is not deleted (V3, D-059):
-- one primary-key probe through SPI, about as much as the statement it guards when that is a
-- page of 20 rows, and rbac.check runs seven statements that each ask. The answer is now kept
-- for the rest of the transaction in pgstrata.live_tenant_id (transaction-local, like the
-- context itself), keyed by the tenant, so a changed context is checked again (D-071). Caching
-- takes set_config, which PostgreSQL refuses during a parallel operation, hence PARALLEL
-- UNSAFE: tenant-scoped statements run without parallel workers. Definer functions call it
-- under their pinned search_path but reuse the body PL/pgSQL compiled in the caller's session,
-- so every type name in it is schema-qualified: a caller's pg_temp.uuid domain must not be
-- what the owner runs.
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

-- Invitations follow the same rule: the open invitation of an address is found by a stored key.
-- create_invitation expires the address's stale pending invitation first; with lower(email) that
-- statement (as the application role, under RLS) read every pending invitation of the tenant.
ALTER TABLE tenancy.invitations ADD COLUMN email_key text GENERATED ALWAYS AS (lower(email)) STORED;
COMMENT ON COLUMN tenancy.invitations.email_key IS
    'lower(email): look invitations up with email_key = lower($1), an index condition under RLS';
DROP INDEX tenancy.invitations_pending_email_key;
CREATE UNIQUE INDEX invitations_pending_email_key ON tenancy.invitations (tenant_id, email_key)
    WHERE status = 'pending';

-- V3's create_invitation, the stale invitation found by email_key.
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
     WHERE i.tenant_id = v_tenant AND i.email_key = pg_catalog.lower(p_email)
       AND i.status = 'pending' AND i.expires_at <= now();
    v_token := replace(v_tenant::text, '-', '') || '.'
            || replace(gen_random_uuid()::text || gen_random_uuid()::text, '-', '');
    RETURN QUERY
    INSERT INTO tenancy.invitations AS i (tenant_id, email, role, token_hash, expires_at, invited_by)
    VALUES (v_tenant, p_email, p_role, sha256(convert_to(v_token, 'UTF8')), now() + p_ttl, v_actor)
    RETURNING i.id, v_token;
END
$$;
