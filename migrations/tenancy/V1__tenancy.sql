-- tenancy V1: the foundation every other module builds on.
--
-- Everything here is enforced by PostgreSQL itself, so a team that loads this file with psql
-- gets the same guarantees as the Rust crate: forced, fail-closed row-level security on every
-- tenant table, tenant-led composite keys (Citus-ready), guarded versioned updates.

CREATE SCHEMA IF NOT EXISTS tenancy;
COMMENT ON SCHEMA tenancy IS 'pgstrata tenancy: tenants, users, memberships, invitations and the tenant-context helpers';

-- The role the application connects as (through its own LOGIN role that is granted this one).
-- Roles are cluster-wide, so another database may have created it already; two migrators in
-- two databases may also race here, hence the exception handler instead of IF NOT EXISTS alone.
DO $$
BEGIN
    IF NOT EXISTS (SELECT 1 FROM pg_catalog.pg_roles WHERE rolname = 'pgstrata_app') THEN
        CREATE ROLE pgstrata_app NOLOGIN NOSUPERUSER NOBYPASSRLS;
    END IF;
EXCEPTION WHEN duplicate_object OR unique_violation THEN
    NULL;
END
$$;

GRANT USAGE ON SCHEMA tenancy TO pgstrata_app;

-- ---------------------------------------------------------------------------------------------
-- Context helpers
-- ---------------------------------------------------------------------------------------------

-- The tenant of the current transaction, or NULL when none is set. NULL makes every policy
-- below match nothing, so a forgotten context reads no rows and writes none (fail-closed).
-- nullif(.., '') because a setting once SET LOCAL in this session reads back as '' after its
-- transaction ends, not as NULL. PostgREST/Supabase put the JWT claims in request.jwt.claims.
CREATE FUNCTION tenancy.current_tenant_id() RETURNS uuid
    LANGUAGE sql STABLE PARALLEL SAFE
    AS $$
    SELECT coalesce(
        nullif(current_setting('app.tenant_id', true), ''),
        nullif(nullif(current_setting('request.jwt.claims', true), '')::jsonb ->> 'tenant_id', '')
    )::uuid
$$;
COMMENT ON FUNCTION tenancy.current_tenant_id() IS
    'Tenant of the current transaction (app.tenant_id, else request.jwt.claims ->> tenant_id); NULL when unset';

-- The acting user of the current transaction, or NULL. Same rules as current_tenant_id().
CREATE FUNCTION tenancy.current_actor_id() RETURNS uuid
    LANGUAGE sql STABLE PARALLEL SAFE
    AS $$
    SELECT coalesce(
        nullif(current_setting('app.actor_id', true), ''),
        nullif(nullif(current_setting('request.jwt.claims', true), '')::jsonb ->> 'sub', '')
    )::uuid
$$;
COMMENT ON FUNCTION tenancy.current_actor_id() IS
    'Acting user of the current transaction (app.actor_id, else request.jwt.claims ->> sub); NULL when unset';

-- Time-ordered UUIDs (RFC 9562 version 7) until PostgreSQL 18's uuidv7() is everywhere: new
-- rows land at the right edge of the primary key index instead of at random pages.
CREATE FUNCTION tenancy.uuid_v7() RETURNS uuid
    LANGUAGE sql VOLATILE PARALLEL SAFE
    AS $$
    SELECT encode(
        set_bit(set_bit(
            overlay(uuid_send(gen_random_uuid())
                    PLACING substring(int8send((extract(epoch FROM clock_timestamp()) * 1000)::bigint) FROM 3)
                    FROM 1 FOR 6),
            52, 1), 53, 1),
        'hex')::uuid
$$;

-- Optimistic concurrency for every versioned table. An UPDATE that sets version = <the version
-- it read> is refused when the row has moved on (SQLSTATE PS409, current version in DETAIL);
-- an UPDATE that leaves version alone is last-writer-wins. The check runs on the locked row,
-- so two writers holding the same version cannot both succeed.
CREATE FUNCTION tenancy.bump_version() RETURNS trigger
    LANGUAGE plpgsql
    AS $$
BEGIN
    IF NEW.version IS DISTINCT FROM OLD.version THEN
        RAISE EXCEPTION 'stale version for %.%: expected version %, current version is %',
                TG_TABLE_SCHEMA, TG_TABLE_NAME, NEW.version, OLD.version
            USING ERRCODE = 'PS409',
                  DETAIL = format('current_version=%s', OLD.version),
                  HINT = 'Reload the row and apply the change to its current version.';
    END IF;
    NEW.version := OLD.version + 1;
    NEW.updated_at := now();
    RETURN NEW;
END
$$;

GRANT EXECUTE ON FUNCTION tenancy.current_tenant_id(), tenancy.current_actor_id(), tenancy.uuid_v7()
    TO pgstrata_app;

-- ---------------------------------------------------------------------------------------------
-- Tenants: the root of isolation. A tenant sees only its own row.
-- ---------------------------------------------------------------------------------------------

CREATE TABLE tenancy.tenants (
    id          uuid        NOT NULL DEFAULT tenancy.uuid_v7(),
    slug        text        NOT NULL,
    name        text        NOT NULL,
    status      text        NOT NULL DEFAULT 'active',
    settings    jsonb       NOT NULL DEFAULT '{}'::jsonb,
    version     bigint      NOT NULL DEFAULT 1,
    created_at  timestamptz NOT NULL DEFAULT now(),
    updated_at  timestamptz NOT NULL DEFAULT now(),
    deleted_at  timestamptz,
    CONSTRAINT tenants_pkey PRIMARY KEY (id),
    CONSTRAINT tenants_slug_format CHECK (slug ~ '^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$'),
    CONSTRAINT tenants_name_length CHECK (length(name) BETWEEN 1 AND 200),
    CONSTRAINT tenants_status_valid CHECK (status IN ('active', 'suspended')),
    CONSTRAINT tenants_settings_object CHECK (jsonb_typeof(settings) = 'object')
);
COMMENT ON TABLE tenancy.tenants IS 'One row per customer organisation; soft-deleted rows keep their slug reserved only until deletion';

-- Slugs are unique among live tenants only, so a deleted tenant's slug can be taken again.
CREATE UNIQUE INDEX tenants_slug_live_key ON tenancy.tenants (slug) WHERE deleted_at IS NULL;

CREATE TRIGGER tenants_bump_version BEFORE UPDATE ON tenancy.tenants
    FOR EACH ROW EXECUTE FUNCTION tenancy.bump_version();

ALTER TABLE tenancy.tenants ENABLE ROW LEVEL SECURITY;
ALTER TABLE tenancy.tenants FORCE ROW LEVEL SECURITY;
CREATE POLICY tenant_isolation ON tenancy.tenants
    USING (id = (SELECT tenancy.current_tenant_id()))
    WITH CHECK (id = (SELECT tenancy.current_tenant_id()));

-- No DELETE: tenants are soft-deleted.
GRANT SELECT, INSERT, UPDATE ON tenancy.tenants TO pgstrata_app;

-- ---------------------------------------------------------------------------------------------
-- Users: global identities (no tenant_id). A user is visible to itself and to the tenants it
-- belongs to; it can only be created and edited by itself (app.actor_id).
-- ---------------------------------------------------------------------------------------------

CREATE TABLE tenancy.users (
    id            uuid        NOT NULL DEFAULT tenancy.uuid_v7(),
    email         text        NOT NULL,
    display_name  text        NOT NULL DEFAULT '',
    version       bigint      NOT NULL DEFAULT 1,
    created_at    timestamptz NOT NULL DEFAULT now(),
    updated_at    timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT users_pkey PRIMARY KEY (id),
    CONSTRAINT users_email_format CHECK (length(email) <= 254 AND email ~ '^[^@[:space:]]+@[^@[:space:]]+$'),
    CONSTRAINT users_display_name_length CHECK (length(display_name) <= 200)
);
COMMENT ON TABLE tenancy.users IS 'Global user identities; email is unique case-insensitively';

CREATE UNIQUE INDEX users_email_key ON tenancy.users (lower(email));

CREATE TRIGGER users_bump_version BEFORE UPDATE ON tenancy.users
    FOR EACH ROW EXECUTE FUNCTION tenancy.bump_version();

-- ---------------------------------------------------------------------------------------------
-- Memberships: a user in a tenant, with a role name (the rbac module gives roles meaning).
-- ---------------------------------------------------------------------------------------------

CREATE TABLE tenancy.memberships (
    tenant_id   uuid        NOT NULL,
    id          uuid        NOT NULL DEFAULT tenancy.uuid_v7(),
    user_id     uuid        NOT NULL,
    role        text        NOT NULL DEFAULT 'member',
    version     bigint      NOT NULL DEFAULT 1,
    created_at  timestamptz NOT NULL DEFAULT now(),
    updated_at  timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT memberships_pkey PRIMARY KEY (tenant_id, id),
    CONSTRAINT memberships_tenant_user_key UNIQUE (tenant_id, user_id),
    CONSTRAINT memberships_tenant_fkey FOREIGN KEY (tenant_id) REFERENCES tenancy.tenants (id),
    CONSTRAINT memberships_user_fkey FOREIGN KEY (user_id) REFERENCES tenancy.users (id),
    CONSTRAINT memberships_role_format CHECK (role ~ '^[a-z][a-z0-9_]{0,62}$')
);

CREATE TRIGGER memberships_bump_version BEFORE UPDATE ON tenancy.memberships
    FOR EACH ROW EXECUTE FUNCTION tenancy.bump_version();

ALTER TABLE tenancy.memberships ENABLE ROW LEVEL SECURITY;
ALTER TABLE tenancy.memberships FORCE ROW LEVEL SECURITY;
CREATE POLICY tenant_isolation ON tenancy.memberships
    USING (tenant_id = (SELECT tenancy.current_tenant_id()))
    WITH CHECK (tenant_id = (SELECT tenancy.current_tenant_id()));

GRANT SELECT, INSERT, UPDATE, DELETE ON tenancy.memberships TO pgstrata_app;

-- The users policy needs memberships, so it comes after that table. The visible ids are
-- computed once per statement as an array: a policy written as `id = actor OR id IN (SELECT
-- ...)` cannot use an index, and because a caller's `lower(email) = ...` is not leakproof it
-- runs after the policy, so every lookup would scan the whole table.
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

ALTER TABLE tenancy.users ENABLE ROW LEVEL SECURITY;
ALTER TABLE tenancy.users FORCE ROW LEVEL SECURITY;
CREATE POLICY self_or_same_tenant ON tenancy.users FOR SELECT
    USING (id = ANY ((SELECT tenancy.visible_user_ids())::uuid[]));
CREATE POLICY self_insert ON tenancy.users FOR INSERT
    WITH CHECK (id = (SELECT tenancy.current_actor_id()));
CREATE POLICY self_update ON tenancy.users FOR UPDATE
    USING (id = (SELECT tenancy.current_actor_id()))
    WITH CHECK (id = (SELECT tenancy.current_actor_id()));

-- No DELETE: identities outlive memberships.
GRANT SELECT, INSERT, UPDATE ON tenancy.users TO pgstrata_app;

-- ---------------------------------------------------------------------------------------------
-- Invitations: the token is shown once and stored as its SHA-256; it only needs verifying.
-- ---------------------------------------------------------------------------------------------

CREATE TABLE tenancy.invitations (
    tenant_id    uuid        NOT NULL,
    id           uuid        NOT NULL DEFAULT tenancy.uuid_v7(),
    email        text        NOT NULL,
    role         text        NOT NULL DEFAULT 'member',
    token_hash   bytea       NOT NULL,
    status       text        NOT NULL DEFAULT 'pending',
    expires_at   timestamptz NOT NULL,
    invited_by   uuid,
    accepted_by  uuid,
    accepted_at  timestamptz,
    version      bigint      NOT NULL DEFAULT 1,
    created_at   timestamptz NOT NULL DEFAULT now(),
    updated_at   timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT invitations_pkey PRIMARY KEY (tenant_id, id),
    CONSTRAINT invitations_tenant_fkey FOREIGN KEY (tenant_id) REFERENCES tenancy.tenants (id),
    CONSTRAINT invitations_invited_by_fkey FOREIGN KEY (invited_by) REFERENCES tenancy.users (id),
    CONSTRAINT invitations_accepted_by_fkey FOREIGN KEY (accepted_by) REFERENCES tenancy.users (id),
    CONSTRAINT invitations_email_format CHECK (length(email) <= 254 AND email ~ '^[^@[:space:]]+@[^@[:space:]]+$'),
    CONSTRAINT invitations_role_format CHECK (role ~ '^[a-z][a-z0-9_]{0,62}$'),
    CONSTRAINT invitations_token_hash_length CHECK (length(token_hash) = 32),
    CONSTRAINT invitations_status_valid CHECK (status IN ('pending', 'accepted', 'revoked', 'expired')),
    CONSTRAINT invitations_accepted_consistent CHECK ((status = 'accepted') = (accepted_at IS NOT NULL AND accepted_by IS NOT NULL))
);

CREATE UNIQUE INDEX invitations_token_hash_key ON tenancy.invitations (tenant_id, token_hash);
-- At most one open invitation per address per tenant.
CREATE UNIQUE INDEX invitations_pending_email_key ON tenancy.invitations (tenant_id, lower(email))
    WHERE status = 'pending';

CREATE TRIGGER invitations_bump_version BEFORE UPDATE ON tenancy.invitations
    FOR EACH ROW EXECUTE FUNCTION tenancy.bump_version();

ALTER TABLE tenancy.invitations ENABLE ROW LEVEL SECURITY;
ALTER TABLE tenancy.invitations FORCE ROW LEVEL SECURITY;
CREATE POLICY tenant_isolation ON tenancy.invitations
    USING (tenant_id = (SELECT tenancy.current_tenant_id()))
    WITH CHECK (tenant_id = (SELECT tenancy.current_tenant_id()));

GRANT SELECT, INSERT, UPDATE, DELETE ON tenancy.invitations TO pgstrata_app;

-- Creates a pending invitation in the current tenant and returns its token, once. The token
-- starts with the tenant id so that accepting can open that tenant's context first; the secret
-- part carries 244 random bits from two version-4 UUIDs. An expired pending invitation for the
-- same address is marked expired so it no longer blocks a new one.
CREATE FUNCTION tenancy.create_invitation(
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
CREATE FUNCTION tenancy.accept_invitation(p_token text, p_user_id uuid) RETURNS uuid
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

GRANT EXECUTE ON FUNCTION tenancy.create_invitation(text, text, interval, uuid),
                          tenancy.accept_invitation(text, uuid)
    TO pgstrata_app;
